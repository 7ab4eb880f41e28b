"""Runs the lookup mix (queries.py) against one engine and prints one JSON
object: per query its cold time (the first run on a fresh server or
connection), its warm runs, the rows' count and digest (to check that both
engines agree) and, for tauc, the bytes its scans read (EXPLAIN ANALYZE's
bytes_scanned).

  python run_queries.py tauc   SPEC.json PORT USER PASSWORD
  python run_queries.py duckdb SPEC.json
  python run_queries.py picks  SPEC.json   (DuckDB: the values the mix
                                            looks up, from the data)

SPEC: {"first", "days", "picks", "runs", "warehouse", "threads"}."""

import datetime as dt
import decimal
import glob
import hashlib
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from queries import mix  # noqa: E402

TABLES = {"dwd_trk_event_di": "dwd", "dwd_mon_cors_error_di": "dwd"}


def norm(v):
    """One value as both engines' Python types agree on it."""
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.timezone.utc)
        return int(v.timestamp() * 1000)
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, float):
        return round(v, 9)
    if isinstance(v, decimal.Decimal):
        return str(v.normalize())
    return v


def digest(rows):
    text = "\n".join(sorted(json.dumps([norm(v) for v in r]) for r in rows))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def timed(run, sql, n):
    out = []
    rows = None
    for _ in range(n):
        t = time.perf_counter()
        rows = run(sql)
        out.append((time.perf_counter() - t) * 1000)
    return out, rows


def duckdb_engine(spec):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {spec['threads']}")
    con.execute("SET TimeZone = 'UTC'")
    for table, layer in TABLES.items():
        files = committed_files(spec["warehouse"], f"{layer}/{table}")
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet({files!r}, "
            "hive_partitioning = true, hive_types = {'dt': DATE, 'region': VARCHAR})"
        )
    return lambda sql: con.execute(sql).fetchall(), None


def committed_files(warehouse, table):
    """The files the tables' committed manifests list."""
    files = []
    for success in sorted(glob.glob(f"{warehouse}/{table}/dt=*/region=*/_SUCCESS")):
        folder = os.path.dirname(success)
        with open(success) as f:
            files += [f"{folder}/{name}" for name in json.load(f)["files"]]
    return files


def tauc_engine(port, user, password):
    import adbc_driver_flightsql.dbapi as adbc

    conn = adbc.connect(f"grpc://127.0.0.1:{port}", db_kwargs={"username": user, "password": password})
    cur = conn.cursor()

    def run(sql):
        cur.execute(sql)
        return cur.fetchall()

    def scanned(sql):
        text = "\n".join(str(r[-1]) for r in run("EXPLAIN ANALYZE " + sql))
        return sum(parse_size(m) for m in re.findall(r"bytes_scanned=([0-9.]+ ?[KMGT]?B?)", text))

    return run, scanned


def parse_size(s):
    m = re.match(r"([0-9.]+) ?([KMGT]?)", s)
    scale = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[m.group(2)]
    return int(float(m.group(1)) * scale)


def picks(spec):
    """Typical lookups, neither the heaviest nor empty: the user at the
    2nd percentile of the first day's activity ranking (1000th of 50 000),
    the target at the 2nd percentile of its clicks, the busiest city of the
    middle day, the fingerprint at the 5th percentile of the failures."""
    run, _ = duckdb_engine(spec)
    first = spec["first"]
    day = dt.date.fromisoformat(first) + dt.timedelta(days=spec["days"] // 2)

    def at(sql, share):
        rows = run(sql)
        return rows[int(len(rows) * share)]

    (user,) = at(f"SELECT user_id FROM dwd_trk_event_di WHERE dt = DATE '{first}' AND user_id IS NOT NULL "
                 "GROUP BY user_id ORDER BY count(*) DESC, user_id", 0.02)
    kind, target = at(f"SELECT target_type, target_id FROM dwd_trk_event_di WHERE dt = DATE '{first}' "
                      "AND event_type = 'click' GROUP BY ALL ORDER BY count(*) DESC, target_id", 0.02)
    (city,) = at(f"SELECT city FROM dwd_trk_event_di WHERE dt = DATE '{day}' AND city IS NOT NULL "
                 "GROUP BY city ORDER BY count(*) DESC, city", 0)
    (fingerprint,) = at("SELECT fingerprint FROM dwd_mon_cors_error_di GROUP BY fingerprint "
                        "ORDER BY count(*) DESC, fingerprint", 0.05)
    return {"user": user, "target_type": kind, "target": target, "city": city, "fingerprint": fingerprint}


def main():
    mode, spec = sys.argv[1], json.load(open(sys.argv[2]))
    if mode == "picks":
        print(json.dumps(picks(spec)))
        return
    if mode == "tauc":
        run, scanned = tauc_engine(*sys.argv[3:6])
    else:
        run, scanned = duckdb_engine(spec)
    out = {}
    queries = mix(spec["first"], spec["days"], spec["picks"])
    # cold: each query's first run on the fresh server (footers not cached)
    for name, _, sql in queries:
        (cold,), _ = timed(run, sql, 1)
        out[name] = {"cold_ms": cold}
    for name, kind, sql in queries:
        warm, rows = timed(run, sql, spec["runs"])
        out[name].update(kind=kind, warm_ms=warm, rows=len(rows), digest=digest(rows))
        if scanned:
            out[name]["bytes_scanned"] = scanned(sql)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
