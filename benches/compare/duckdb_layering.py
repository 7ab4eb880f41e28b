#!/usr/bin/env python3
"""The ODS and DWD layering of layers.md in DuckDB, on tauc's raw layout.

    duckdb_layering.py RAW_ROOT OUT_DIR --env uat --region aps1 \
        --dates 2024-06-18..2024-06-19 --lateness-days 2 [--threads 2]

Writes, Hive-partitioned by dt and region, under OUT_DIR:
  ods/ods_fe_event_di, ods/ods_fe_quarantine_di   (the collection dates)
  dwd/dwd_trk_event_di, dwd/dwd_mon_cors_error_di (the DWD dates those
                                                   dates rebuild: C-1-L ..= C+1)

The work is SQL: read_blob over the day folders' `messages-*.txt` globs,
lines cut with string_split ... WITH ORDINALITY, each line parsed once into a
MAP(VARCHAR, JSON) and checked with one CASE in the contract's order, ODS
written with COPY ... PARTITION_BY, then DWD read back from those Parquet
files, deduplicated with an anti-join, derived with SQL macros and written
the same way. Python runs only on what DuckDB has no function for (see
common.py): files that are not UTF-8, over-long lines' cut raw_line, lines a
regex flags for a strict-JSON re-check, and each distinct User-Agent and
(lat, lon).
"""

import os
import shutil
import sys
import time

import duckdb
import pyarrow as pa

sys.dont_write_bytecode = True  # no __pycache__ in the clone
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402

LINE_STRUCT = "STRUCT(line_no BIGINT, line VARCHAR, n_bytes BIGINT, utf8 BOOLEAN, cut VARCHAR)[]"

# DuckDB's JSON reader accepts trailing commas, NaN/Infinity and numbers that
# overflow a double, which strict JSON (and tauc) reject: lines where any of
# them could occur, or that nest 128 levels or more, or whose top-level keys
# repeat (the MAP cast fails), are re-checked by common.strict_object.
SUSPECT_RE = r",\s*[\]}]|[:,\[]\s*[-+]?(?i:nan|inf)|[:,\[]\s*-?[0-9]+(\.[0-9]+)?[eE]\+?[0-9]{3}|[:,\[]\s*-?[0-9]{309}"

MACROS = rf"""
CREATE OR REPLACE MACRO absent(v) AS v IS NULL OR v = 'null';
CREATE OR REPLACE MACRO jkind(v) AS CASE WHEN absent(v) THEN 'absent'
    ELSE CASE left(v, 1) WHEN '"' THEN 'string' WHEN '{{' THEN 'object' WHEN '[' THEN 'array'
                         WHEN 't' THEN 'bool' WHEN 'f' THEN 'bool' ELSE 'number' END END;
CREATE OR REPLACE MACRO jstr(v) AS CASE WHEN left(v, 1) = '"' THEN json_extract_string(v, '$') END;
-- a lenient integer: a JSON integer or a string of digits with an optional '-'
CREATE OR REPLACE MACRO jint(v) AS CASE
    WHEN left(v, 1) = '"' THEN CASE WHEN regexp_full_match(jstr(v), '{c.INT_TEXT_RE[1:-1]}')
                                    THEN TRY_CAST(jstr(v) AS BIGINT) END
    WHEN regexp_full_match(v, '{c.INT_TEXT_RE[1:-1]}') THEN TRY_CAST(v AS BIGINT) END;
-- the seconds rule; NULL when multiplying by 1000 overflows
CREATE OR REPLACE MACRO ts_norm(x) AS CASE WHEN x < {c.SECONDS_THRESHOLD}
    THEN CASE WHEN x >= -9223372036854775 THEN x * 1000 END ELSE x END;
CREATE OR REPLACE MACRO jts(v) AS ts_norm(jint(v));
CREATE OR REPLACE MACRO ok_str(v) AS absent(v) OR left(v, 1) = '"';
CREATE OR REPLACE MACRO ok_obj(v) AS absent(v) OR left(v, 1) = '{{';
CREATE OR REPLACE MACRO ok_int(v) AS absent(v) OR jint(v) IS NOT NULL;
CREATE OR REPLACE MACRO ok_ts(v) AS absent(v) OR jts(v) IS NOT NULL;
CREATE OR REPLACE MACRO present_id(v) AS NOT absent(v) AND (left(v, 1) <> '"' OR jstr(v) <> '');
CREATE OR REPLACE MACRO id_str(v) AS NULLIF(jstr(v), '');
-- a lenient float for geo: a JSON number or a numeric string; finite only
CREATE OR REPLACE MACRO jfloat(v) AS (CASE
    WHEN jkind(v) = 'number' THEN TRY_CAST(v AS DOUBLE)
    WHEN left(v, 1) = '"' AND regexp_full_match(regexp_replace(jstr(v), '^[\s\x0B]+|[\s\x0B]+$', '', 'g'), '{c.FLOAT_TEXT_RE[1:-1]}')
        THEN TRY_CAST(regexp_replace(jstr(v), '^[\s\x0B]+|[\s\x0B]+$', '', 'g') AS DOUBLE) END);
CREATE OR REPLACE MACRO finite(x) AS CASE WHEN isfinite(x) THEN x END;
CREATE OR REPLACE MACRO sat(x) AS greatest(least(x, {c.I64_MAX}::HUGEINT), ({c.I64_MIN})::HUGEINT)::BIGINT;
-- events.md "Event time", saturating like tauc's i64 arithmetic
CREATE OR REPLACE MACRO event_ts0(cl, se, co) AS CASE WHEN se IS NOT NULL AND se >= cl
    THEN sat(co::HUGEINT - sat(se::HUGEINT - cl)) ELSE cl END;
CREATE OR REPLACE MACRO event_ts(cl, se, co) AS least(event_ts0(cl, se, co), co);
CREATE OR REPLACE MACRO lateness(ets, co, day0) AS sat(greatest(co, day0)::HUGEINT - ets);
CREATE OR REPLACE MACRO ts_of(ms) AS TRY(make_timestamptz(ms * 1000));
-- analyses.md "path normalisation"
CREATE OR REPLACE MACRO route_of(url) AS CASE
    WHEN strpos(url, '#') > 0 AND starts_with(substr(url, strpos(url, '#') + 1), '/')
        THEN split_part(substr(url, strpos(url, '#') + 1), '?', 1)
    ELSE regexp_replace(split_part(split_part(url, '#', 1), '?', 1), '{c.AUTHORITY_RE}[^/]*', '') END;
CREATE OR REPLACE MACRO norm_path(url) AS CASE WHEN url IS NULL OR url = '' THEN NULL ELSE
    '/' || array_to_string(list_transform(list_filter(string_split(route_of(url), '/'), lambda s: s <> ''),
        lambda s: CASE WHEN regexp_full_match(s, '{c.ID_SEGMENT_RE[1:-1]}') THEN '{{id}}' ELSE s END), '/') END;
CREATE OR REPLACE MACRO host_port(url) AS regexp_replace(
    regexp_extract(url, '{c.AUTHORITY_RE}([^/?#]*)', 1), '^.*@', '');
CREATE OR REPLACE MACRO url_host(url) AS CASE WHEN regexp_matches(url, '{c.AUTHORITY_RE}') THEN NULLIF(lower(
    CASE WHEN starts_with(host_port(url), '[') THEN split_part(substr(host_port(url), 2), ']', 1)
         ELSE regexp_replace(host_port(url), ':[0-9]*$', '') END), '') END;
CREATE OR REPLACE MACRO err_class(error, status) AS CASE
    WHEN contains(lower(error), 'timeout') THEN 'timeout'
    WHEN contains(lower(error), 'abort') THEN 'aborted'
    WHEN status IS NULL OR status = 0 THEN 'network_or_cors'
    WHEN status BETWEEN 400 AND 499 THEN 'http_4xx'
    WHEN status BETWEEN 500 AND 599 THEN 'http_5xx'
    ELSE 'other' END;
CREATE OR REPLACE MACRO age_years(born, on_day) AS
    year(on_day) - year(born) - CASE WHEN month(on_day) * 100 + day(on_day) < month(born) * 100 + day(born) THEN 1 ELSE 0 END;
CREATE OR REPLACE MACRO age_band(birth, on_day) AS CASE
    WHEN TRY_STRPTIME(trim(birth), '%Y-%m-%d') IS NULL THEN 'unknown'
    ELSE CASE WHEN age_years(TRY_STRPTIME(trim(birth), '%Y-%m-%d')::DATE, on_day) NOT BETWEEN 0 AND 120 THEN 'unknown'
              WHEN age_years(TRY_STRPTIME(trim(birth), '%Y-%m-%d')::DATE, on_day) < 18 THEN '<18'
              WHEN age_years(TRY_STRPTIME(trim(birth), '%Y-%m-%d')::DATE, on_day) < 25 THEN '18-24'
              WHEN age_years(TRY_STRPTIME(trim(birth), '%Y-%m-%d')::DATE, on_day) < 35 THEN '25-34'
              WHEN age_years(TRY_STRPTIME(trim(birth), '%Y-%m-%d')::DATE, on_day) < 45 THEN '35-44'
              WHEN age_years(TRY_STRPTIME(trim(birth), '%Y-%m-%d')::DATE, on_day) < 55 THEN '45-54'
              ELSE '55+' END END;
"""


def q(values):
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


def ods_sql(globs, fs, lateness_days):
    folder_dates = " UNION ALL ".join(
        f"SELECT '{f.lstrip('/')}/' AS prefix, '{r}' AS region, DATE '{d}' AS dt, "
        f"{c.day_start_ms(d)}::BIGINT AS day0" for r, d, f in fs
    )
    evt = q(c.EVENT_TYPES)
    tgt = q(c.TARGET_TYPES)
    limit_ms = c.DAY_MS + 3_600_000
    late_ms = lateness_days * c.DAY_MS
    return rf"""
WITH files AS (
    SELECT ltrim(filename, '/') AS src_file, content, TRY(decode(content)) AS text
    FROM read_blob([{q(globs)}])
),
good_lines AS (   -- UTF-8 files: split in SQL
    -- generate_subscripts beside unnest numbers the lines: DuckDB 2.0's
    -- `unnest ... WITH ORDINALITY` lateral join took 34 s of a 1 M-line run
    -- where these two zipped set functions take 0.6 s
    SELECT src_file, generate_subscripts(ls, 1) AS line_no, unnest(ls) AS l0
    FROM (SELECT src_file,
                 string_split(CASE WHEN ends_with(text, chr(10)) THEN left(text, -1) ELSE text END, chr(10)) AS ls
          FROM files WHERE text IS NOT NULL AND text <> '')
),
good AS (
    SELECT src_file, line_no, l AS line, strlen(l) AS n_bytes, true AS utf8,
           CASE WHEN strlen(l) > {c.MAX_LINE_BYTES} THEN cut_lossy(l) END AS cut
    FROM (SELECT src_file, line_no,
                 CASE WHEN starts_with(l1, chr(65279)) THEN substr(l1, 2) ELSE l1 END AS l
          FROM (SELECT src_file, line_no,
                       CASE WHEN ends_with(l0, chr(13)) THEN left(l0, -1) ELSE l0 END AS l1
                FROM good_lines))
),
bad AS (          -- files with invalid UTF-8: split in Python
    SELECT src_file, b.line_no, b.line, b.n_bytes, b.utf8, b.cut
    FROM (SELECT src_file, unnest(split_bad_file(content)) AS b FROM files WHERE text IS NULL)
),
lines AS (
    SELECT l.*, fd.region, fd.dt, fd.day0
    FROM (SELECT * FROM good UNION ALL SELECT * FROM bad) l
    JOIN ({folder_dates}) fd ON starts_with(l.src_file, fd.prefix)
    WHERE trim(l.line, ' ' || chr(9) || chr(13) || chr(12) || chr(11)) <> ''   -- blank lines are not events
),
parsed0 AS (
    SELECT *, TRY_CAST(j AS MAP(VARCHAR, JSON)) AS m0
    FROM (SELECT *, CASE WHEN utf8 THEN TRY_CAST(line AS JSON) END AS j FROM lines)
),
parsed AS (
    SELECT * EXCLUDE (j, m0),
        CASE WHEN j IS NOT NULL AND (m0 IS NULL OR regexp_matches(line, '{SUSPECT_RE}')
                              OR strlen(line) - strlen(translate(line, '{{[', '')) >= 128)
             THEN TRY_CAST(TRY_CAST(strict_object(line) AS JSON) AS MAP(VARCHAR, JSON))
             ELSE m0 END AS m
    FROM parsed0
),
fields AS (
    SELECT src_file, line_no, region, dt, day0, n_bytes, line, cut, m IS NOT NULL AS is_object,
        m['event_id'] AS v_event_id, m['event_type'] AS v_event_type,
        m['client_ts'] AS v_client_ts, m['sent_ts'] AS v_sent_ts, m['collector_ts'] AS v_collector_ts,
        m['device_id'] AS v_device_id, m['device_id_type'] AS v_device_id_type, m['user_id'] AS v_user_id,
        m['app_version'] AS v_app_version, m['ua'] AS v_ua, m['geo'] AS v_geo, m['page'] AS v_page,
        m['target'] AS v_target, m['page_enter_ts'] AS v_page_enter_ts, m['page_leave_ts'] AS v_page_leave_ts,
        m['cors'] AS v_cors,
        CASE WHEN left(m['geo'], 1) = '{{' THEN json_extract(m['geo'], ['$.lat', '$.lon']) END AS g,
        CASE WHEN left(m['page'], 1) = '{{' THEN json_extract(m['page'], ['$.url', '$.from_url', '$.to_url']) END AS p,
        CASE WHEN left(m['target'], 1) = '{{' THEN json_extract(m['target'], ['$.type', '$.id']) END AS t,
        CASE WHEN left(m['cors'], 1) = '{{' THEN json_extract(m['cors'],
            ['$.url', '$.method', '$.origin', '$.error', '$.status', '$.duration_ms']) END AS k,
        map_from_entries(list_filter(map_entries(m),
            lambda e: NOT list_contains([{q(c.KNOWN_FIELDS)}], e.key) AND e.value <> 'null')) AS extra_map
    FROM parsed
),
typed AS (
    SELECT *, jstr(v_event_type) AS et, jts(v_client_ts) AS c_ts, jts(v_sent_ts) AS s_ts,
           jts(v_collector_ts) AS r_ts
    FROM fields
),
checked AS (
    SELECT *, CASE
        WHEN n_bytes > {c.MAX_LINE_BYTES} THEN 'line_too_long'
        WHEN NOT is_object THEN 'malformed_json'
        -- check 3: required fields, in the table's order
        WHEN NOT present_id(v_event_id) THEN 'missing_field:event_id'
        WHEN absent(v_event_type) THEN 'missing_field:event_type'
        WHEN absent(v_client_ts) THEN 'missing_field:client_ts'
        WHEN absent(v_collector_ts) THEN 'missing_field:collector_ts'
        WHEN NOT present_id(v_device_id) AND NOT present_id(v_user_id) THEN 'missing_field:device_id'
        WHEN et IN ('click', 'impression') AND absent(v_target) THEN 'missing_field:target'
        WHEN et IN ('click', 'impression') AND t IS NOT NULL AND absent(t[1]) THEN 'missing_field:target.type'
        WHEN et IN ('click', 'impression') AND t IS NOT NULL AND NOT present_id(t[2]) THEN 'missing_field:target.id'
        WHEN et = 'cors_error' AND absent(v_cors) THEN 'missing_field:cors'
        WHEN et = 'cors_error' AND k IS NOT NULL AND absent(k[1]) THEN 'missing_field:cors.url'
        -- check 4: types, each object's fields right after it
        WHEN NOT ok_str(v_event_id) THEN 'invalid_field:event_id'
        WHEN et IS NULL OR et NOT IN ({evt}) THEN 'invalid_field:event_type'
        WHEN c_ts IS NULL THEN 'invalid_field:client_ts'
        WHEN NOT ok_ts(v_sent_ts) THEN 'invalid_field:sent_ts'
        WHEN r_ts IS NULL OR r_ts >= day0 + {limit_ms} THEN 'invalid_field:collector_ts'
        WHEN NOT ok_str(v_device_id) THEN 'invalid_field:device_id'
        WHEN NOT ok_str(v_device_id_type) THEN 'invalid_field:device_id_type'
        WHEN NOT ok_str(v_user_id) THEN 'invalid_field:user_id'
        WHEN NOT ok_str(v_app_version) THEN 'invalid_field:app_version'
        WHEN NOT ok_str(v_ua) THEN 'invalid_field:ua'
        WHEN NOT ok_obj(v_geo) THEN 'invalid_field:geo'
        WHEN NOT ok_obj(v_page) THEN 'invalid_field:page'
        WHEN p IS NOT NULL AND NOT ok_str(p[1]) THEN 'invalid_field:page.url'
        WHEN p IS NOT NULL AND NOT ok_str(p[2]) THEN 'invalid_field:page.from_url'
        WHEN p IS NOT NULL AND NOT ok_str(p[3]) THEN 'invalid_field:page.to_url'
        WHEN NOT ok_obj(v_target) THEN 'invalid_field:target'
        WHEN t IS NOT NULL AND NOT absent(t[1]) AND coalesce(jstr(t[1]) NOT IN ({tgt}), true) THEN 'invalid_field:target.type'
        WHEN t IS NOT NULL AND NOT ok_str(t[2]) THEN 'invalid_field:target.id'
        WHEN NOT ok_ts(v_page_enter_ts) THEN 'invalid_field:page_enter_ts'
        WHEN NOT ok_ts(v_page_leave_ts) THEN 'invalid_field:page_leave_ts'
        WHEN NOT ok_obj(v_cors) THEN 'invalid_field:cors'
        WHEN k IS NOT NULL AND NOT ok_str(k[1]) THEN 'invalid_field:cors.url'
        WHEN k IS NOT NULL AND NOT ok_str(k[2]) THEN 'invalid_field:cors.method'
        WHEN k IS NOT NULL AND NOT ok_str(k[3]) THEN 'invalid_field:cors.origin'
        WHEN k IS NOT NULL AND NOT ok_str(k[4]) THEN 'invalid_field:cors.error'
        WHEN k IS NOT NULL AND NOT ok_int(k[5]) THEN 'invalid_field:cors.status'
        WHEN k IS NOT NULL AND NOT ok_int(k[6]) THEN 'invalid_field:cors.duration_ms'
        -- check 5: lateness
        WHEN lateness(event_ts(c_ts, s_ts, r_ts), r_ts, day0) > {late_ms} THEN 'late_beyond_window'
        END AS reason
    FROM typed
)
SELECT src_file, line_no, region, dt, reason,
    CASE WHEN reason IS NOT NULL THEN coalesce(cut, line) END AS raw_line,
    CASE WHEN reason = 'malformed_json' THEN NULL ELSE id_str(v_event_id) END AS event_id,
    et AS event_type, c_ts AS client_ts, s_ts AS sent_ts, r_ts AS collector_ts,
    id_str(v_device_id) AS device_id, jstr(v_device_id_type) AS device_id_type, id_str(v_user_id) AS user_id,
    jstr(v_app_version) AS app_version, jstr(v_ua) AS ua,
    finite(jfloat(g[1])) AS lat, finite(jfloat(g[2])) AS lon,
    jstr(p[1]) AS page_url, jstr(p[2]) AS from_url, jstr(p[3]) AS to_url,
    jstr(t[1]) AS target_type, id_str(t[2]) AS target_id,
    jts(v_page_enter_ts) AS page_enter_ts, jts(v_page_leave_ts) AS page_leave_ts,
    jstr(k[1]) AS cors_url, jstr(k[2]) AS cors_method, jstr(k[3]) AS cors_origin,
    jint(k[5]) AS cors_status, jstr(k[4]) AS cors_error, jint(k[6]) AS cors_duration_ms,
    CASE WHEN cardinality(extra_map) > 0 THEN to_json(extra_map)::VARCHAR END AS extra
FROM checked
"""


def run(a):
    t0 = time.time()
    con = duckdb.connect(config={"threads": a.threads, "preserve_insertion_order": False})
    if a.memory:
        con.execute(f"SET memory_limit = '{a.memory}'")
    con.create_function("split_bad_file", c.split_bad_file, ["BLOB"], LINE_STRUCT, null_handling="special")
    con.create_function("cut_lossy", c.cut_lossy, ["VARCHAR"], "VARCHAR", null_handling="special")
    con.create_function("strict_object", c.strict_object, ["VARCHAR"], "VARCHAR", null_handling="special")
    con.execute(MACROS)
    out = os.path.abspath(a.out_dir)
    for t in ("ods/ods_fe_event_di", "ods/ods_fe_quarantine_di", "dwd/dwd_trk_event_di", "dwd/dwd_mon_cors_error_di"):
        shutil.rmtree(os.path.join(out, t), ignore_errors=True)
    for layer in ("ods", "dwd"):
        os.makedirs(os.path.join(out, layer), exist_ok=True)

    # ---------------------------------------------------------------- ODS
    fs = c.folders(a.raw_root, a.env, a.region, a.dates)
    globs = c.message_globs(fs)
    counts = {}
    if globs:
        con.execute(f"CREATE TEMP TABLE ods_lines AS {ods_sql(globs, fs, a.lateness_days)}")
        con.execute(f"""
COPY (SELECT event_id, event_type, ts_of(client_ts) AS client_ts, ts_of(sent_ts) AS sent_ts,
             ts_of(collector_ts) AS collector_ts, device_id, device_id_type, user_id, app_version, ua,
             CASE WHEN abs(lat) <= 90 AND abs(lon) <= 180 AND NOT (lat = 0 AND lon = 0) THEN lat END AS geo_lat,
             CASE WHEN abs(lat) <= 90 AND abs(lon) <= 180 AND NOT (lat = 0 AND lon = 0) THEN lon END AS geo_lon,
             page_url, from_url, to_url, target_type, target_id, ts_of(page_enter_ts) AS page_enter_ts,
             ts_of(page_leave_ts) AS page_leave_ts, cors_url, cors_method, cors_origin, cors_status, cors_error,
             cors_duration_ms, extra, src_file, line_no, strftime(dt, '%Y-%m-%d') AS dt, region
      FROM ods_lines WHERE reason IS NULL)
TO '{out}/ods/ods_fe_event_di' (FORMAT parquet, PARTITION_BY (dt, region), OVERWRITE_OR_IGNORE true)""")
        con.execute(f"""
COPY (SELECT src_file, line_no, reason, raw_line, event_id, 'duckdb' AS run_id, now() AS detected_at,
             strftime(dt, '%Y-%m-%d') AS dt, region
      FROM ods_lines WHERE reason IS NOT NULL)
TO '{out}/ods/ods_fe_quarantine_di' (FORMAT parquet, PARTITION_BY (dt, region), OVERWRITE_OR_IGNORE true)""")
        for (valid, n) in con.execute("SELECT reason IS NULL, count(*) FROM ods_lines GROUP BY ALL").fetchall():
            counts["ods valid" if valid else "ods quarantined"] = n
        con.execute("DROP TABLE ods_lines")
    t_ods = time.time()

    # ---------------------------------------------------------------- DWD
    targets = c.dwd_dates(a.dates, a.lateness_days)
    ods_files = os.path.join(out, "ods/ods_fe_event_di")
    have_ods = os.path.isdir(ods_files) and any(f.endswith(".parquet") for _, _, fl in os.walk(ods_files) for f in fl)
    if have_ods:
        zones = " UNION ALL ".join(f"SELECT '{r}' AS z_region, '{c.ZONES[r]}' AS tz" for r in a.region)
        dim = a.dim_user
        con.execute(f"""
CREATE TEMP TABLE dwd_rows AS
WITH o AS (
    SELECT o.*, epoch_ms(client_ts) AS c_ms, epoch_ms(sent_ts) AS s_ms, epoch_ms(collector_ts) AS r_ms, z.tz
    FROM read_parquet('{ods_files}/*/*/*.parquet', hive_partitioning = true, hive_types = {{'dt': DATE, 'region': VARCHAR}}) o
    JOIN ({zones}) z ON o.region = z.z_region
    WHERE o.dt IN ({", ".join(f"DATE '{d}'" for d in a.dates)}) AND o.region IN ({q(a.region)})
),
e AS (
    SELECT *, event_ts(c_ms, s_ms, r_ms) AS ets,
           timezone(tz, ts_of(event_ts(c_ms, s_ms, r_ms))) AS local_ts
    FROM o
),
keyed AS (SELECT *, CAST(local_ts AS DATE) AS ldt FROM e),
-- a row is kept for its own local date D when no copy in D's window
-- (ODS dates D-1 ..= D+1+L) comes first by (collector_ts, src_file, line_no)
cand AS (
    SELECT * FROM keyed
    WHERE ldt IN ({", ".join(f"DATE '{d}'" for d in targets)})
      AND dt BETWEEN ldt - 1 AND ldt + {1 + a.lateness_days}
),
beaten AS (
    SELECT DISTINCT x.src_file, x.line_no
    FROM cand x JOIN keyed y ON x.region = y.region AND x.event_id = y.event_id
    WHERE y.dt BETWEEN x.ldt - 1 AND x.ldt + {1 + a.lateness_days}
      AND (y.r_ms, y.src_file, y.line_no) < (x.r_ms, x.src_file, x.line_no)
),
users AS (
    SELECT user_id AS u_user_id, min(gender) AS u_gender, min(birth_date) AS u_birth_date
    FROM read_csv('{dim}/*.csv', header = true, all_varchar = true)
    WHERE user_id IS NOT NULL AND user_id <> '' GROUP BY user_id
)
SELECT k.*, u.u_gender, u.u_birth_date
FROM cand k ANTI JOIN beaten b ON k.src_file = b.src_file AND k.line_no = b.line_no
LEFT JOIN users u ON k.user_id = u.u_user_id
""")
        # The gazetteer and the UA rules, on each distinct value once.
        uas = [r[0] for r in con.execute("SELECT DISTINCT ua FROM dwd_rows WHERE ua IS NOT NULL").fetchall()]
        agents = pa.table(dict(zip(["a_ua", "browser_family", "browser_major", "os_family"],
                                   map(list, zip(*c.parse_agents(uas))) if uas else [[], [], [], []])),
                          schema=pa.schema([(n, pa.string()) for n in ["a_ua", "browser_family", "browser_major", "os_family"]]))
        coords = con.execute("SELECT DISTINCT geo_lat, geo_lon FROM dwd_rows WHERE geo_lat IS NOT NULL").fetchall()
        places = c.nearest_places(coords)
        places = pa.table({"p_lat": pa.array([p[0] for p in places], pa.float64()),
                           "p_lon": pa.array([p[1] for p in places], pa.float64()),
                           "city": pa.array([p[2] for p in places], pa.string()),
                           "country": pa.array([p[3] for p in places], pa.string())})
        con.register("agents", agents)
        con.register("places", places)
        con.execute(f"""
CREATE TEMP TABLE dwd_out AS
SELECT d.*,
    coalesce(user_id, 'd:' || device_id) AS user_key,
    ts_of(ets) AS event_ts,
    CAST(hour(local_ts) AS INTEGER) AS local_hour,
    lateness(ets, r_ms, epoch_ms(dt::TIMESTAMP)) AS lateness_ms,
    event_ts0(c_ms, s_ms, r_ms) > r_ms AS ts_clamped,
    norm_path(page_url) AS page_path,
    CASE WHEN event_type = 'page_leave' AND epoch_ms(page_leave_ts) >= epoch_ms(page_enter_ts)
         THEN least(epoch_ms(page_leave_ts)::HUGEINT - epoch_ms(page_enter_ts), 1800000)::BIGINT END AS trk_duration_ms,
    coalesce(regexp_matches(lower(ua), '{c.BOT_REGEX}'), false) AS is_bot,
    CASE WHEN u_gender IN ('M', 'F', 'other') THEN u_gender ELSE 'unknown' END AS gender,
    CASE WHEN user_id IS NULL THEN 'unknown' ELSE age_band(u_birth_date, ldt) END AS age_band,
    ag.browser_family, ag.browser_major, ag.os_family, pl.city, pl.country,
    strftime(ldt, '%Y-%m-%d') AS out_dt
FROM dwd_rows d
LEFT JOIN agents ag ON d.ua = ag.a_ua
LEFT JOIN places pl ON d.geo_lat = pl.p_lat AND d.geo_lon = pl.p_lon
""")
        con.execute(f"""
COPY (SELECT event_id, event_type, event_ts, local_ts, local_hour, lateness_ms, ts_clamped, user_key,
             user_id, device_id, device_id_type, target_type, target_id, page_url, page_path,
             norm_path(from_url) AS from_path, norm_path(to_url) AS to_path, page_enter_ts, page_leave_ts,
             trk_duration_ms AS duration_ms, geo_lat, geo_lon, city, country, gender, age_band,
             browser_family, browser_major, os_family, is_bot, app_version, extra,
             out_dt AS dt, region
      FROM dwd_out WHERE event_type <> 'cors_error')
TO '{out}/dwd/dwd_trk_event_di' (FORMAT parquet, PARTITION_BY (dt, region), OVERWRITE_OR_IGNORE true)""")
        con.execute(f"""
COPY (SELECT event_id, event_ts, local_ts, user_key, page_path, req_host, req_path_tpl, req_method, req_origin,
             status, err_class, error, duration_ms, browser_family, browser_major, os_family, is_bot,
             left(sha256(concat_ws('|', err_class, req_method, coalesce(req_host, ''),
                                   coalesce(req_path_tpl, ''), req_origin)), 16) AS fingerprint,
             dt, region
      FROM (SELECT * EXCLUDE (dt), url_host(cors_url) AS req_host, norm_path(cors_url) AS req_path_tpl,
                   coalesce(upper(cors_method), 'UNKNOWN') AS req_method,
                   coalesce(lower(cors_origin), '') AS req_origin, cors_status AS status,
                   err_class(cors_error, cors_status) AS err_class, cors_error AS error,
                   cors_duration_ms AS duration_ms, out_dt AS dt
            FROM dwd_out WHERE event_type = 'cors_error'))
TO '{out}/dwd/dwd_mon_cors_error_di' (FORMAT parquet, PARTITION_BY (dt, region), OVERWRITE_OR_IGNORE true)""")
        for (cors, n) in con.execute("SELECT event_type = 'cors_error', count(*) FROM dwd_out GROUP BY ALL").fetchall():
            counts["dwd cors" if cors else "dwd trk"] = n
    t_dwd = time.time()
    print(f"duckdb {duckdb.__version__}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
          + f"; ods {t_ods - t0:.1f}s, dwd {t_dwd - t_ods:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    run(c.parse_args("DuckDB"))
