#!/usr/bin/env python3
"""Writes one raw day folder of hand-made hostile lines (the JSON reader
leniencies each engine must close, the lenient typing, the check order,
event time edges, URL and CORS derivations, dedupe ties), for a quick
three-way check beyond what `tauc-job sample` generates:

    hostile.py RAW_ROOT          # writes RAW_ROOT/uat/aps1/2024/06/18/messages-1718668800000.txt

then run tauc, duckdb_layering.py and spark_layering.py with
--date/--dates 2024-06-18 on it (with a dim_user folder, e.g. one that
`tauc-job sample` wrote) and check.py. Known result: every partition
matches except line 30 (`"client_ts":-0`), which strict JSON, DuckDB and
Spark read as the integer 0 and tauc quarantines as invalid_field:client_ts.
"""
import json
import os
import sys

C0 = 1718668800000  # 2024-06-18 00:00 UTC
H = 3600000


def ev(i, **kw):
    e = {"event_id": f"adv-{i}", "event_type": "page_enter", "client_ts": C0 + H, "collector_ts": C0 + H, "device_id": "d1"}
    for k, v in kw.items():
        e[k] = v
    return json.dumps(e)


def raw(i, tail, extra=""):
    return ('{"event_id":"%s","event_type":"page_enter","client_ts":%d,"collector_ts":%d,"device_id":"d"%s}%s'
            % (i, C0 + H, C0 + H, extra, tail))


L = [
    raw("a1", "", ',"x":1,'),                              # 1 trailing comma: malformed
    raw("a2", "", ',"x":NaN'),                             # 2 NaN: malformed
    raw("a3", "", ',"x":1e999'),                           # 3 overflowing number: malformed
    raw("a4", " x"),                                       # 4 data after the object: malformed
    '{"event_id":"a5","event_type":"click","event_type":"page_enter","client_ts":%d,"collector_ts":%d,"device_id":"d"}'
    % (C0 + H, C0 + H),                                    # 5 repeated key: the last wins
    raw("a6", "", ',"deep":' + "[" * 126 + "]" * 126),    # 6 127 levels: valid
    raw("a7", "", ',"deep":' + "[" * 127 + "]" * 127),    # 7 128 levels: malformed
    ev(8, client_ts=str((C0 + H) // 1000)),                # 8 string seconds
    ev(9, client_ts=-5),                                   # 9 negative seconds: late
    ev(10, sent_ts="abc"),                                 # 10 invalid sent_ts
    ev(11, geo={"lat": " 12.5 ", "lon": "77"}),            # 11 numeric strings
    ev(12, geo={"lat": "1e1", "lon": "inf"}),              # 12 not finite: geo null
    ev(13, geo={"lat": 91, "lon": 0}),                     # 13 out of range: geo null
    ev(14, event_type="click", target={"type": "", "id": "x"}),      # 14 invalid target.type
    ev(15, event_type="click", target={"type": "button", "id": 5}),  # 15 invalid target.id
    ev(16, event_type="cors_error", cors={"url": "", "status": "404"}),
    ev(17, event_type="cors_error", cors={"url": "//CDN.x.com:8080/a/0123456789abcdef0/b?q#f", "method": "post",
                                          "error": "Net::ERR_ABORTED timeout"}),
    ev(18, event_type="cors_error", cors={"url": "http://[::1]:80/x", "status": 0}),
    ev(19, event_type="cors_error", cors={"url": "https://u:p@H.io/x/123e4567-E89B-12d3-a456-426614174000",
                                          "status": 302, "origin": None}),
    ev(20, device_id=None, user_id="u3"),                  # 20 user_id stands in for device_id
    ev(21, device_id="", user_id=7),                       # 21 invalid user_id
    ev(22, user_id=""),                                    # 22 empty id = absent
    ev(23, props={"k": [1, 2.50, "é"]}, zzz=None, new={"b": 1, "a": 2}),  # 23 extra
    ev(24, event_type="page_leave", page_enter_ts=C0, page_leave_ts=C0 + 3600000),  # 24 duration capped
    ev(25, event_type="page_leave", page_enter_ts=C0 + 10, page_leave_ts=C0),       # 25 leave < enter
    ev(26, page={"url": "https://h/#/Devices/7?tab=1", "from_url": "/a%20b//", "to_url": "1http://x/y"}),
    ev(27, sent_ts=C0 + 2 * H, client_ts=C0 + H, collector_ts=C0 + 30 * 60000),    # 27 clock offset cancels
    ev(28, client_ts=C0 + 20 * H),                         # 28 clamped
    ev(29, client_ts=0),                                   # 29 zero: late
    '{"event_id":"a30","event_type":"page_enter","client_ts":-0,"collector_ts":%d,"device_id":"d"}' % (C0 + H),
    ev(31, client_ts=1.0),                                 # 31 float: invalid
    ev(32, client_ts="0012"),                              # 32 digits with zeros: 12 s, late
    ev(33, collector_ts=C0 + 25 * H - 1, client_ts=C0 + 25 * H - 1),  # 33 last possible collector_ts
    ev(34, collector_ts=C0 - 2 * 24 * H, client_ts=C0 - 4 * 24 * H + 1),  # 34 late
    ev(35, collector_ts=C0 - 5000, client_ts=C0 - 2 * 24 * H),            # 35 exactly L late: valid
    ev(36, ua="Mozilla/5.0 (compatible; bingbot/2.0)"),    # 36 bot
    raw("a37", "", ',"ua":"x\\ud800"'),                    # 37 lone surrogate: malformed
    ev(38, geo={"lat": 0, "lon": 0.0}),                    # 38 (0, 0): geo null
    ev(39, event_id="a1"),                                 # 39 id of a malformed line
    ev(8),                                                 # 40 copy of line 8: dedupe keeps line 8
    "\x0c",                                                # 41 form feed only: blank
    "  " + raw("a40", "\t"),                               # 42 JSON whitespace around
    ev(41, target={"type": "button"}),                     # 43 target without id on a page_enter
    ev(42, event_type="impression", target=[]),            # 44 invalid target
    ev(43, event_type="cors_error", cors="x"),             # 45 invalid cors
    ev(44, app_version=3),                                 # 46 invalid app_version
]

if __name__ == "__main__":
    folder = os.path.join(sys.argv[1], "uat", "aps1", "2024", "06", "18")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "messages-1718668800000.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")
    print(f"{len(L)} lines in {folder}")
