#!/usr/bin/env python3
"""The ODS and DWD layering of layers.md in PySpark 4 on local[N], on
tauc's raw layout.

    spark_layering.py RAW_ROOT OUT_DIR --env uat --region aps1 \
        --dates 2024-06-18..2024-06-19 --lateness-days 2 [--threads 2]

Writes, partitioned by dt and region (`partitionBy("dt", "region")`), under
OUT_DIR the same four tables as duckdb_layering.py.

Spark SQL over DataFrames: the binaryFile source over the day folders'
`messages-*.txt` globs, lines cut with split + posexplode, each line parsed
once by from_json into MAP<STRING, VARIANT> (Spark 4's semi-structured type,
which keeps each value's JSON type for the lenient typing rules), checked
with one CASE in the contract's order, ODS written (cached once for its two
tables), then DWD read back from those Parquet files, deduplicated with an
anti-join and derived with built-in functions. pandas_udf only where Spark
has no function (see common.py), each on a pre-filtered subset of rows
(Spark evaluates a Python UDF on every row of its input, whatever CASE
surrounds it): files that are not UTF-8 and lines a regex flags for a
strict-JSON re-check. User-Agents and coordinates are resolved once per
distinct value on the driver and broadcast-joined.
"""

import os
import shutil
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the clone
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402

I64_MAX, I64_MIN = c.I64_MAX, c.I64_MIN

# Spark's JSON reader (with the options below) rejects NaN, single quotes and
# trailing commas, but accepts data after the object, numbers overflowing a
# double, and repeated keys (both kept in the map); lines where any can
# occur, or that nest 128 levels or more, are re-checked by
# common.strict_object.
JSON_OPTS = "map('allowNonNumericNumbers', 'false', 'allowSingleQuotes', 'false', 'mode', 'PERMISSIVE')"
SUSPECT_RE = r"[}\]]\s*[^\s,}\]]|[:,\[]\s*-?[0-9]+(\.[0-9]+)?[eE]\+?[0-9]{3}|[:,\[]\s*-?[0-9]{309}"


def sq(s):
    """A Spark SQL string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rx(s):
    """A Spark SQL raw literal for a regex."""
    assert "'" not in s
    return "r'" + s + "'"


def inlist(vals):
    return ", ".join(sq(v) for v in vals)


# ------------------------------------------------------- expression helpers
# Every JSON value of interest is a VARIANT column v; its type is computed
# once into T_v ('ABSENT' for missing or null, else schema_of_variant), its
# string into S_v and its lenient integer into I_v, so that the checks below
# are plain column comparisons (and Spark's generated code stays small).
def absent(v):
    return f"(T_{v} = 'ABSENT')"


def is_str(v):
    return f"(T_{v} = 'STRING')"


def is_obj(v):
    return f"startswith(T_{v}, 'OBJECT')"


def jstr(v):
    return f"S_{v}"


def jint(v):
    return f"I_{v}"


def type_col(v):
    return f"CASE WHEN {v} IS NULL OR is_variant_null({v}) THEN 'ABSENT' ELSE schema_of_variant({v}) END AS T_{v}"


def str_col(v):
    return f"CASE WHEN T_{v} = 'STRING' THEN variant_get({v}, '$', 'string') END AS S_{v}"


def int_col(v):
    return (f"CASE WHEN T_{v} = 'BIGINT' THEN variant_get({v}, '$', 'bigint') "
            f"WHEN T_{v} = 'STRING' AND S_{v} RLIKE {rx(c.INT_TEXT_RE)} THEN try_cast(S_{v} AS BIGINT) END AS I_{v}")


def ts_norm(x):
    return (f"(CASE WHEN {x} < {c.SECONDS_THRESHOLD} THEN CASE WHEN {x} >= -9223372036854775 "
            f"THEN {x} * 1000 END ELSE {x} END)")


def ok_str(v):
    return f"({absent(v)} OR {is_str(v)})"


def ok_obj(v):
    return f"({absent(v)} OR {is_obj(v)})"


def ok_int(v):
    return f"({absent(v)} OR {jint(v)} IS NOT NULL)"


def present_id(v):
    return f"(NOT {absent(v)} AND (NOT {is_str(v)} OR {jstr(v)} <> ''))"


def id_str(v):
    return f"nullif({jstr(v)}, '')"


EDGE_SPACE_RE = r"^[\s\x0B]+|[\s\x0B]+$"


def trimmed(s):
    return f"regexp_replace({s}, {rx(EDGE_SPACE_RE)}, '')"


def float_col(v):
    t = trimmed(f"S_{v}")
    x = (f"(CASE WHEN T_{v} = 'BIGINT' OR T_{v} = 'DOUBLE' OR startswith(T_{v}, 'DECIMAL') "
         f"THEN variant_get({v}, '$', 'double') "
         f"WHEN T_{v} = 'STRING' AND {t} RLIKE {rx(c.FLOAT_TEXT_RE)} THEN try_cast({t} AS DOUBLE) END)")
    return f"CASE WHEN isnan({x}) OR abs({x}) = double('inf') THEN NULL ELSE {x} END AS F_{v}"


def sat_sub(a, b):
    return f"coalesce(try_subtract({a}, {b}), CASE WHEN {a} > {b} THEN {I64_MAX}L ELSE (-{I64_MAX}L - 1L) END)"


def event_ts0(cl, se, co):
    return f"(CASE WHEN {se} IS NOT NULL AND {se} >= {cl} THEN {sat_sub(co, sat_sub(se, cl))} ELSE {cl} END)"


def event_ts(cl, se, co):
    return f"least({event_ts0(cl, se, co)}, {co})"


def lateness(ets, co, day0):
    return sat_sub(f"greatest({co}, {day0})", ets)


def ts_of(ms):
    return f"timestamp_millis({ms})"


def route_of(u):
    frag = f"substr({u}, instr({u}, '#') + 1)"
    return (f"(CASE WHEN instr({u}, '#') > 0 AND startswith({frag}, '/') THEN split_part({frag}, '?', 1) "
            f"ELSE regexp_replace(split_part(split_part({u}, '#', 1), '?', 1), {rx(c.AUTHORITY_RE + '[^/]*')}, '') END)")


def norm_path(u):
    return (f"(CASE WHEN {u} IS NULL OR {u} = '' THEN NULL ELSE concat('/', array_join(transform("
            f"filter(split({route_of(u)}, '/', -1), s -> s <> ''), "
            f"s -> CASE WHEN s RLIKE {rx(c.ID_SEGMENT_RE)} THEN '{{id}}' ELSE s END), '/')) END)")


def url_host(u):
    hp = f"regexp_replace(regexp_extract({u}, {rx(c.AUTHORITY_RE + '([^/?#]*)')}, 1), '^.*@', '')"
    return (f"(CASE WHEN {u} RLIKE {rx(c.AUTHORITY_RE)} THEN nullif(lower(CASE WHEN startswith({hp}, '[') "
            f"THEN split_part(substr({hp}, 2), ']', 1) ELSE regexp_replace({hp}, ':[0-9]*$', '') END), '') END)")


def err_class(error, status):
    return (f"(CASE WHEN lower({error}) LIKE '%timeout%' THEN 'timeout' "
            f"WHEN lower({error}) LIKE '%abort%' THEN 'aborted' "
            f"WHEN {status} IS NULL OR {status} = 0 THEN 'network_or_cors' "
            f"WHEN {status} BETWEEN 400 AND 499 THEN 'http_4xx' WHEN {status} BETWEEN 500 AND 599 THEN 'http_5xx' "
            f"ELSE 'other' END)")


def age_band(birth, on):
    born = f"try_to_date(trim({birth}), 'yyyy-M-d')"
    age = (f"(year({on}) - year({born}) - CASE WHEN month({on}) * 100 + day({on}) < month({born}) * 100 + day({born}) "
           f"THEN 1 ELSE 0 END)")
    return (f"(CASE WHEN {born} IS NULL OR {age} NOT BETWEEN 0 AND 120 THEN 'unknown' WHEN {age} < 18 THEN '<18' "
            f"WHEN {age} < 25 THEN '18-24' WHEN {age} < 35 THEN '25-34' WHEN {age} < 45 THEN '35-44' "
            f"WHEN {age} < 55 THEN '45-54' ELSE '55+' END)")


def reason_expr(lateness_days):
    evt, tgt = inlist(c.EVENT_TYPES), inlist(c.TARGET_TYPES)
    limit_ms = c.DAY_MS + 3_600_000
    late_ms = lateness_days * c.DAY_MS
    et = "et"
    w = [
        (f"n_bytes > {c.MAX_LINE_BYTES}", "line_too_long"),
        ("m IS NULL", "malformed_json"),
        (f"NOT {present_id('v_event_id')}", "missing_field:event_id"),
        (absent("v_event_type"), "missing_field:event_type"),
        (absent("v_client_ts"), "missing_field:client_ts"),
        (absent("v_collector_ts"), "missing_field:collector_ts"),
        (f"NOT {present_id('v_device_id')} AND NOT {present_id('v_user_id')}", "missing_field:device_id"),
        (f"{et} IN ('click', 'impression') AND {absent('v_target')}", "missing_field:target"),
        (f"{et} IN ('click', 'impression') AND {is_obj('v_target')} AND {absent('t_type')}", "missing_field:target.type"),
        (f"{et} IN ('click', 'impression') AND {is_obj('v_target')} AND NOT {present_id('t_id')}", "missing_field:target.id"),
        (f"{et} = 'cors_error' AND {absent('v_cors')}", "missing_field:cors"),
        (f"{et} = 'cors_error' AND {is_obj('v_cors')} AND {absent('k_url')}", "missing_field:cors.url"),
        (f"NOT {ok_str('v_event_id')}", "invalid_field:event_id"),
        (f"{et} IS NULL OR {et} NOT IN ({evt})", "invalid_field:event_type"),
        ("c_ts IS NULL", "invalid_field:client_ts"),
        (f"NOT {absent('v_sent_ts')} AND s_ts IS NULL", "invalid_field:sent_ts"),
        (f"r_ts IS NULL OR r_ts >= day0 + {limit_ms}", "invalid_field:collector_ts"),
    ]
    for f in ["device_id", "device_id_type", "user_id", "app_version", "ua"]:
        w.append((f"NOT {ok_str('v_' + f)}", f"invalid_field:{f}"))
    w.append((f"NOT {ok_obj('v_geo')}", "invalid_field:geo"))
    w.append((f"NOT {ok_obj('v_page')}", "invalid_field:page"))
    for f in ["url", "from_url", "to_url"]:
        w.append((f"NOT {ok_str('p_' + f)}", f"invalid_field:page.{f}"))
    w.append((f"NOT {ok_obj('v_target')}", "invalid_field:target"))
    w.append((f"NOT {absent('t_type')} AND coalesce({jstr('t_type')} NOT IN ({tgt}), true)", "invalid_field:target.type"))
    w.append((f"NOT {ok_str('t_id')}", "invalid_field:target.id"))
    w.append(("NOT " + f"({absent('v_page_enter_ts')} OR pe_ts IS NOT NULL)", "invalid_field:page_enter_ts"))
    w.append(("NOT " + f"({absent('v_page_leave_ts')} OR pl_ts IS NOT NULL)", "invalid_field:page_leave_ts"))
    w.append((f"NOT {ok_obj('v_cors')}", "invalid_field:cors"))
    for f in ["url", "method", "origin", "error"]:
        w.append((f"NOT {ok_str('k_' + f)}", f"invalid_field:cors.{f}"))
    for f in ["status", "duration_ms"]:
        w.append((f"NOT {ok_int('k_' + f)}", f"invalid_field:cors.{f}"))
    w.append((f"{lateness(event_ts('c_ts', 's_ts', 'r_ts'), 'r_ts', 'day0')} > {late_ms}", "late_beyond_window"))
    return "CASE " + " ".join(f"WHEN {cond} THEN '{r}'" for cond, r in w) + " END"


def run(a):
    t0 = time.time()
    import pandas as pd
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark import StorageLevel

    # the Python workers run this venv's interpreter and import common.py
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYTHONPATH"] = os.path.dirname(os.path.abspath(__file__)) + os.pathsep + os.environ.get("PYTHONPATH", "")
    spark = (SparkSession.builder.master(f"local[{a.threads}]").appName("tauc-compare-layering")
             .config("spark.driver.memory", a.memory or "4g")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.shuffle.partitions", str(4 * a.threads))
             .config("spark.sql.mapKeyDedupPolicy", "LAST_WIN")
             .config("spark.sql.variant.allowDuplicateKeys", "true")
             .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
             # many ~25 KB files: pack them into tasks by their real size
             .config("spark.sql.files.maxPartitionBytes", str(64 << 20))
             .config("spark.sql.files.openCostInBytes", str(64 << 10))
             .config("spark.sql.adaptive.enabled", "true")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    spark.sparkContext.addPyFile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "common.py"))
    out = os.path.abspath(a.out_dir)
    for t in ("ods/ods_fe_event_di", "ods/ods_fe_quarantine_di", "dwd/dwd_trk_event_di", "dwd/dwd_mon_cors_error_di"):
        shutil.rmtree(os.path.join(out, t), ignore_errors=True)

    @F.pandas_udf(T.StringType())
    def strict_object(line: pd.Series) -> pd.Series:
        return line.map(c.strict_object)

    counts = {}
    t_last = [time.time()]

    def step(what):
        now = time.time()
        print(f"spark: {what} {now - t_last[0]:.1f}s", file=sys.stderr)
        t_last[0] = now

    step("session started")
    # ---------------------------------------------------------------- ODS
    fs = c.folders(a.raw_root, a.env, a.region, a.dates)
    globs = c.message_globs(fs)
    if globs:
        folder_rows = [(f.lstrip("/") + "/", r, d, c.day_start_ms(d)) for r, d, f in fs]
        spark.createDataFrame(folder_rows, "prefix string, region string, dt date, day0 bigint") \
            .createOrReplaceTempView("folders")
        files = (spark.read.format("binaryFile").load(globs)
                 .selectExpr("regexp_replace(path, '^file:/+', '') AS src_file", "content",
                             "cast(content AS string) AS text"))
        files = files.withColumn("utf8", F.expr("is_valid_utf8(text)"))
        good = (files.where("utf8 AND text <> ''")
                .selectExpr("src_file", "posexplode(split(CASE WHEN endswith(text, '\\n') "
                            "THEN substr(text, 1, length(text) - 1) ELSE text END, '\\n', -1)) AS (pos, l0)")
                .selectExpr("src_file", "CAST(pos + 1 AS BIGINT) AS line_no",
                            "CASE WHEN endswith(l0, '\\r') THEN substr(l0, 1, length(l0) - 1) ELSE l0 END AS l1")
                .selectExpr("src_file", "line_no",
                            "CASE WHEN startswith(l1, '\\uFEFF') THEN substr(l1, 2) ELSE l1 END AS line")
                .selectExpr("src_file", "line_no", "line", "octet_length(line) AS n_bytes", "true AS utf8",
                            f"CASE WHEN octet_length(line) > {c.MAX_LINE_BYTES} THEN "
                            f"make_valid_utf8(cast(substr(encode(line, 'UTF-8'), 1, {c.KEPT_LINE_BYTES}) AS string)) END AS cut"))
        # Files with invalid UTF-8 (Spark's split works on decoded text): cut
        # into lines on the bytes, through hex with a comma after every byte
        # so that "0A," can only match a whole newline byte; each line's
        # bytes are checked with is_valid_utf8 and made text with
        # make_valid_utf8 (U+FFFD per maximal invalid subpart, as tauc).
        bad = (files.where("NOT utf8")
               .selectExpr("src_file", "regexp_replace(hex(content), '(..)', '$1,') AS hx")
               .selectExpr("src_file", "posexplode(split(CASE WHEN endswith(hx, '0A,') THEN substr(hx, 1, length(hx) - 3) "
                           "ELSE hx END, '0A,', -1)) AS (pos, h0)")
               .selectExpr("src_file", "CAST(pos + 1 AS BIGINT) AS line_no",
                           "CASE WHEN endswith(h0, '0D,') THEN substr(h0, 1, length(h0) - 3) ELSE h0 END AS h1")
               .selectExpr("src_file", "line_no",
                           "unhex(replace(CASE WHEN startswith(h1, 'EF,BB,BF,') THEN substr(h1, 10) ELSE h1 END, ',', '')) AS b")
               .selectExpr("src_file", "line_no", "make_valid_utf8(cast(b AS string)) AS line", "octet_length(b) AS n_bytes",
                           "is_valid_utf8(cast(b AS string)) AS utf8",
                           f"CASE WHEN octet_length(b) > {c.MAX_LINE_BYTES} THEN "
                           f"make_valid_utf8(cast(substr(b, 1, {c.KEPT_LINE_BYTES}) AS string)) END AS cut"))
        lines = (good.unionByName(bad).alias("l")
                 .join(spark.table("folders").alias("f"), F.expr("startswith(l.src_file, f.prefix)"))
                 .selectExpr("l.*", "f.region", "f.dt", "f.day0")
                 .where("trim(BOTH concat(' ', char(9), char(13), char(12), char(11)) FROM line) <> ''"))
        parsed0 = lines.withColumn(
            "m0", F.expr(f"CASE WHEN utf8 THEN from_json(line, 'map<string,variant>', {JSON_OPTS}) END"))
        suspect = (f"m0 IS NOT NULL AND (NOT endswith(trim(TRAILING concat(' ', char(9), char(13)) FROM line), '}}') "
                   f"OR line RLIKE {rx(SUSPECT_RE)} "
                   f"OR octet_length(line) - octet_length(translate(line, '{{[', '')) >= 128 "
                   f"OR size(map_keys(m0)) <> size(array_distinct(map_keys(m0))))")
        # parsed once, kept for the two branches (a Python UDF sees every row
        # of its input, so the few suspect lines are split off first)
        parsed0 = parsed0.withColumn("suspect", F.expr(suspect)).persist(StorageLevel.MEMORY_AND_DISK)
        plain = parsed0.where("NOT suspect").withColumnRenamed("m0", "m").drop("suspect")
        fixed = (parsed0.where("suspect").withColumn("fixed", strict_object("line"))
                 .withColumn("m", F.expr(f"from_json(fixed, 'map<string,variant>', {JSON_OPTS})"))
                 .drop("m0", "suspect", "fixed"))
        parsed = plain.unionByName(fixed)
        known = inlist(c.KNOWN_FIELDS)
        fields = parsed.selectExpr(
            "src_file", "line_no", "region", "dt", "day0", "n_bytes", "line", "cut", "m",
            *[f"m['{f}'] AS v_{f}" for f in c.KNOWN_FIELDS],
            f"map_filter(m, (k, v) -> NOT array_contains(array({known}), k) AND NOT is_variant_null(v)) AS extra_map")

        def sub(obj, key):
            return f"CASE WHEN {is_obj('v_' + obj)} THEN variant_get(v_{obj}, '$.{key}', 'variant') END"


        top = ["v_" + f for f in c.KNOWN_FIELDS]
        fields = fields.selectExpr("*", *[type_col(v) for v in top])
        fields = fields.selectExpr(
            "*", sub("geo", "lat") + " AS g_lat", sub("geo", "lon") + " AS g_lon",
            *[sub("page", k) + f" AS p_{k}" for k in ["url", "from_url", "to_url"]],
            sub("target", "type") + " AS t_type", sub("target", "id") + " AS t_id",
            *[sub("cors", k) + f" AS k_{k}" for k in ["url", "method", "origin", "error", "status", "duration_ms"]])
        nested = ["g_lat", "g_lon", "p_url", "p_from_url", "p_to_url", "t_type", "t_id",
                  "k_url", "k_method", "k_origin", "k_error", "k_status", "k_duration_ms"]
        fields = fields.selectExpr("*", *[type_col(v) for v in nested])
        fields = fields.selectExpr("*", *[str_col(v) for v in top + nested])
        ints = ["v_client_ts", "v_sent_ts", "v_collector_ts", "v_page_enter_ts", "v_page_leave_ts",
                "k_status", "k_duration_ms"]
        fields = fields.selectExpr("*", *[int_col(v) for v in ints], float_col("g_lat"), float_col("g_lon"))
        typed = fields.selectExpr(
            "*", f"{jstr('v_event_type')} AS et", f"{ts_norm(jint('v_client_ts'))} AS c_ts",
            f"{ts_norm(jint('v_sent_ts'))} AS s_ts", f"{ts_norm(jint('v_collector_ts'))} AS r_ts",
            f"{ts_norm(jint('v_page_enter_ts'))} AS pe_ts", f"{ts_norm(jint('v_page_leave_ts'))} AS pl_ts")
        checked = typed.withColumn("reason", F.expr(reason_expr(a.lateness_days)))
        geo_ok = "abs(lat) <= 90 AND abs(lon) <= 180 AND NOT (lat = 0 AND lon = 0)"
        ods = checked.selectExpr(
            "src_file", "line_no", "region", "date_format(dt, 'yyyy-MM-dd') AS dt", "reason",
            "CASE WHEN reason IS NOT NULL THEN coalesce(cut, line) END AS raw_line",
            f"CASE WHEN reason = 'malformed_json' THEN NULL ELSE {id_str('v_event_id')} END AS event_id",
            "et AS event_type", "c_ts", "s_ts", "r_ts",
            f"{id_str('v_device_id')} AS device_id", f"{jstr('v_device_id_type')} AS device_id_type",
            f"{id_str('v_user_id')} AS user_id", f"{jstr('v_app_version')} AS app_version", f"{jstr('v_ua')} AS ua",
            "F_g_lat AS lat", "F_g_lon AS lon",
            *[f"{jstr('p_' + k)} AS {n}" for k, n in [("url", "page_url"), ("from_url", "from_url"), ("to_url", "to_url")]],
            f"{jstr('t_type')} AS target_type", f"{id_str('t_id')} AS target_id", "pe_ts", "pl_ts",
            *[f"{jstr('k_' + k)} AS cors_{k}" for k in ["url", "method", "origin"]],
            f"{jint('k_status')} AS cors_status", f"{jstr('k_error')} AS cors_error",
            f"{jint('k_duration_ms')} AS cors_duration_ms",
            "CASE WHEN size(extra_map) > 0 THEN to_json(extra_map) END AS extra",
        ).persist(StorageLevel.MEMORY_AND_DISK)
        (ods.where("reason IS NULL").selectExpr(
            "event_id", "event_type", f"{ts_of('c_ts')} AS client_ts", f"{ts_of('s_ts')} AS sent_ts",
            f"{ts_of('r_ts')} AS collector_ts", "device_id", "device_id_type", "user_id", "app_version", "ua",
            f"CASE WHEN {geo_ok} THEN lat END AS geo_lat", f"CASE WHEN {geo_ok} THEN lon END AS geo_lon",
            "page_url", "from_url", "to_url", "target_type", "target_id", f"{ts_of('pe_ts')} AS page_enter_ts",
            f"{ts_of('pl_ts')} AS page_leave_ts", "cors_url", "cors_method", "cors_origin", "cors_status",
            "cors_error", "cors_duration_ms", "extra", "src_file", "line_no", "dt", "region")
         .write.partitionBy("dt", "region").mode("overwrite").parquet(os.path.join(out, "ods/ods_fe_event_di")))
        step("ods_fe_event_di written")
        parsed0.unpersist()
        (ods.where("reason IS NOT NULL").selectExpr(
            "src_file", "line_no", "reason", "raw_line", "event_id", "'spark' AS run_id",
            "current_timestamp() AS detected_at", "dt", "region")
         .write.partitionBy("dt", "region").mode("overwrite").parquet(os.path.join(out, "ods/ods_fe_quarantine_di")))
        step("ods_fe_quarantine_di written")
        for r in ods.groupBy(F.expr("reason IS NULL").alias("v")).count().collect():
            counts["ods valid" if r["v"] else "ods quarantined"] = r["count"]
        ods.unpersist()
    t_ods = time.time()

    # ---------------------------------------------------------------- DWD
    targets = c.dwd_dates(a.dates, a.lateness_days)
    ods_dir = os.path.join(out, "ods/ods_fe_event_di")
    if os.path.isdir(ods_dir) and any(f.endswith(".parquet") for _, _, fl in os.walk(ods_dir) for f in fl):
        spark.createDataFrame([(r, c.ZONES[r]) for r in a.region], "z_region string, tz string") \
            .createOrReplaceTempView("zones")
        spark.read.option("basePath", ods_dir).parquet(ods_dir).createOrReplaceTempView("ods_src")
        spark.read.option("header", "true").csv(os.path.join(a.dim_user, "*.csv")).createOrReplaceTempView("dim_user")
        dates_sql = ", ".join(f"DATE'{d}'" for d in a.dates)
        targets_sql = ", ".join(f"DATE'{d}'" for d in targets)
        after = 1 + a.lateness_days
        ets = event_ts("c_ms", "s_ms", "r_ms")
        rows = spark.sql(f"""
WITH o AS (
    SELECT o.*, unix_millis(client_ts) AS c_ms, unix_millis(sent_ts) AS s_ms, unix_millis(collector_ts) AS r_ms, z.tz
    FROM ods_src o JOIN zones z ON o.region = z.z_region
    WHERE o.dt IN ({dates_sql}) AND o.region IN ({inlist(a.region)})
),
keyed AS (
    SELECT *, to_date(from_utc_timestamp(timestamp_millis(ets), tz)) AS ldt
    FROM (SELECT *, {ets} AS ets FROM o)
),
cand AS (
    SELECT * FROM keyed
    WHERE ldt IN ({targets_sql}) AND dt BETWEEN date_sub(ldt, 1) AND date_add(ldt, {after})
),
beaten AS (
    SELECT DISTINCT x.src_file, x.line_no
    FROM cand x JOIN keyed y ON x.region = y.region AND x.event_id = y.event_id
    WHERE y.dt BETWEEN date_sub(x.ldt, 1) AND date_add(x.ldt, {after})
      AND struct(y.r_ms, y.src_file, y.line_no) < struct(x.r_ms, x.src_file, x.line_no)
),
users AS (
    SELECT user_id AS u_user_id, min(gender) AS u_gender, min(birth_date) AS u_birth_date
    FROM dim_user WHERE user_id IS NOT NULL AND user_id <> '' GROUP BY user_id
)
SELECT k.*, u.u_gender, u.u_birth_date
FROM cand k LEFT ANTI JOIN beaten b ON k.src_file = b.src_file AND k.line_no = b.line_no
LEFT JOIN users u ON k.user_id = u.u_user_id
""").persist(StorageLevel.MEMORY_AND_DISK)
        rows.createOrReplaceTempView("dwd_rows")
        step("dwd planned")
        uas = [r[0] for r in spark.sql("SELECT DISTINCT ua FROM dwd_rows WHERE ua IS NOT NULL").collect()]
        spark.createDataFrame(c.parse_agents(uas), "a_ua string, browser_family string, browser_major string, os_family string") \
            .createOrReplaceTempView("agents")
        coords = [(r[0], r[1]) for r in spark.sql("SELECT DISTINCT geo_lat, geo_lon FROM dwd_rows WHERE geo_lat IS NOT NULL").collect()]
        spark.createDataFrame(c.nearest_places(coords), "p_lat double, p_lon double, city string, country string") \
            .createOrReplaceTempView("places")
        step("dwd deduplicated, agents and places resolved")
        dwd = spark.sql(f"""
SELECT /*+ BROADCAST(ag), BROADCAST(pl) */ d.*,
    coalesce(user_id, concat('d:', device_id)) AS user_key,
    {ts_of('ets')} AS event_ts,
    cast(from_utc_timestamp({ts_of('ets')}, tz) AS timestamp_ntz) AS local_ts,
    hour(from_utc_timestamp({ts_of('ets')}, tz)) AS local_hour,
    {lateness('ets', 'r_ms', 'unix_millis(cast(dt AS timestamp))')} AS lateness_ms,
    {event_ts0('c_ms', 's_ms', 'r_ms')} > r_ms AS ts_clamped,
    {norm_path('page_url')} AS page_path,
    CASE WHEN event_type = 'page_leave' AND unix_millis(page_leave_ts) >= unix_millis(page_enter_ts)
         THEN least(coalesce(try_subtract(unix_millis(page_leave_ts), unix_millis(page_enter_ts)), {I64_MAX}), 1800000)
    END AS trk_duration_ms,
    coalesce(lower(ua) RLIKE {rx(c.BOT_REGEX)}, false) AS is_bot,
    CASE WHEN u_gender IN ('M', 'F', 'other') THEN u_gender ELSE 'unknown' END AS gender,
    CASE WHEN user_id IS NULL THEN 'unknown' ELSE {age_band('u_birth_date', 'ldt')} END AS age_band,
    ag.browser_family, ag.browser_major, ag.os_family, pl.city, pl.country,
    date_format(ldt, 'yyyy-MM-dd') AS out_dt
FROM dwd_rows d
LEFT JOIN agents ag ON d.ua = ag.a_ua
LEFT JOIN places pl ON d.geo_lat = pl.p_lat AND d.geo_lon = pl.p_lon
""")
        dwd.createOrReplaceTempView("dwd_out")
        (spark.sql(f"""
SELECT event_id, event_type, event_ts, local_ts, local_hour, lateness_ms, ts_clamped, user_key,
       user_id, device_id, device_id_type, target_type, target_id, page_url, page_path,
       {norm_path('from_url')} AS from_path, {norm_path('to_url')} AS to_path, page_enter_ts, page_leave_ts,
       trk_duration_ms AS duration_ms, geo_lat, geo_lon, city, country, gender, age_band,
       browser_family, browser_major, os_family, is_bot, app_version, extra, out_dt AS dt, region
FROM dwd_out WHERE event_type <> 'cors_error'""")
         .write.partitionBy("dt", "region").mode("overwrite").parquet(os.path.join(out, "dwd/dwd_trk_event_di")))
        (spark.sql(f"""
SELECT event_id, event_ts, local_ts, user_key, page_path, req_host, req_path_tpl, req_method, req_origin,
       status, err_class, error, duration_ms, browser_family, browser_major, os_family, is_bot,
       substr(sha2(concat_ws('|', err_class, req_method, coalesce(req_host, ''), coalesce(req_path_tpl, ''),
                             req_origin), 256), 1, 16) AS fingerprint,
       out_dt AS dt, region
FROM (SELECT *, {url_host('cors_url')} AS req_host, {norm_path('cors_url')} AS req_path_tpl,
             coalesce(upper(cors_method), 'UNKNOWN') AS req_method, coalesce(lower(cors_origin), '') AS req_origin,
             cors_status AS status, {err_class('cors_error', 'cors_status')} AS err_class, cors_error AS error,
             cors_duration_ms AS duration_ms
      FROM dwd_out WHERE event_type = 'cors_error')""")
         .write.partitionBy("dt", "region").mode("overwrite").parquet(os.path.join(out, "dwd/dwd_mon_cors_error_di")))
        step("dwd written")
        for r in spark.sql("SELECT event_type = 'cors_error' AS cors, count(*) AS n FROM dwd_rows GROUP BY 1").collect():
            counts["dwd cors" if r["cors"] else "dwd trk"] = r["n"]
        rows.unpersist()
    t_dwd = time.time()
    print(f"spark {spark.version}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
          + f"; ods {t_ods - t0:.1f}s, dwd {t_dwd - t_ods:.1f}s", file=sys.stderr)
    spark.stop()


if __name__ == "__main__":
    run(c.parse_args("Spark"))
