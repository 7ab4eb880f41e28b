#!/usr/bin/env python3
"""Do tauc, DuckDB and Spark give the same ODS and DWD rows?

    check.py TAUC_WAREHOUSE DUCKDB_OUT SPARK_OUT [--strict] [--show N]

Each argument may be written NAME=PATH; without a name the three are called
tauc, duckdb and spark. The first is the reference; more may follow (run.sh
adds tauc's cluster run as tauc-cluster). Engines whose name starts with
`tauc` are read through their partitions' `_SUCCESS` manifests (exactly the listed files; a
partition without one does not exist); the others' are every *.parquet file
of a dt=/region= folder (a partition with no folder holds no rows).

For every table and every (dt, region) partition any engine wrote it
compares the row counts and the multiset of rows over the table's columns,
with types normalised: timestamps to epoch milliseconds, floats rounded to
9 decimals, `extra` parsed as JSON (key order and number spelling are the
writer's choice). Columns that come from reference data the engines ship in
different versions (city/country from the gazetteer, browser and OS from the
uap-core rules) are compared apart, row by row on the table's key, and
reported as a mismatch rate; they fail the check only with --strict. The
only columns not compared are `run_id` and `detected_at` of the quarantine
table, which name the run and its clock.

Prints a table of partitions and PASS or FAIL; exits 1 on a mismatch.
"""

import argparse
import collections
import datetime as dt
import json
import math
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

# table -> (core columns, reference-data columns, key columns)
TABLES = {
    "ods/ods_fe_event_di": (
        ["event_id", "event_type", "client_ts", "sent_ts", "collector_ts", "device_id", "device_id_type",
         "user_id", "app_version", "ua", "geo_lat", "geo_lon", "page_url", "from_url", "to_url",
         "target_type", "target_id", "page_enter_ts", "page_leave_ts", "cors_url", "cors_method",
         "cors_origin", "cors_status", "cors_error", "cors_duration_ms", "extra", "src_file", "line_no"],
        [], ["src_file", "line_no"]),
    "ods/ods_fe_quarantine_di": (
        ["src_file", "line_no", "reason", "raw_line", "event_id"], [], ["src_file", "line_no"]),
    "dwd/dwd_trk_event_di": (
        ["event_id", "event_type", "event_ts", "local_ts", "local_hour", "lateness_ms", "ts_clamped",
         "user_key", "user_id", "device_id", "device_id_type", "target_type", "target_id", "page_url",
         "page_path", "from_path", "to_path", "page_enter_ts", "page_leave_ts", "duration_ms", "geo_lat",
         "geo_lon", "gender", "age_band", "is_bot", "app_version", "extra"],
        ["city", "country", "browser_family", "browser_major", "os_family"], ["event_id"]),
    "dwd/dwd_mon_cors_error_di": (
        ["event_id", "event_ts", "local_ts", "user_key", "page_path", "req_host", "req_path_tpl",
         "req_method", "req_origin", "status", "err_class", "error", "duration_ms", "is_bot", "fingerprint"],
        ["browser_family", "browser_major", "os_family"], ["event_id"]),
}
NOT_COMPARED = {"ods/ods_fe_quarantine_di": ["run_id", "detected_at"]}


def norm_value(v, col):
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:  # local wall clock: as if it were UTC
            v = v.replace(tzinfo=dt.timezone.utc)
        return int(round(v.timestamp() * 1000))
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 9)
    if col == "extra":
        try:
            return json.dumps(json.loads(v), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        except ValueError:
            return v
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return int(v)
    return v


def read_files(paths, cols):
    """Rows (dicts over `cols`) of the given Parquet files."""
    rows = []
    for p in paths:
        t = pq.read_table(p)
        # timestamps as exact epoch-ms integers (pyarrow's datetime loses nothing, but is slow)
        arrays = {}
        for c in cols:
            if c not in t.column_names:
                raise SystemExit(f"{p}: no column {c} (has {', '.join(t.column_names)})")
            a = t.column(c)
            if pa.types.is_timestamp(a.type):
                a = a.cast(pa.timestamp("ms", a.type.tz)).cast(pa.int64())
            arrays[c] = a.to_pylist()
        for i in range(t.num_rows):
            rows.append({c: norm_value(arrays[c][i], c) for c in cols})
    return rows


def partitions_of(root, table, manifests):
    """{(dt, region): [files]} of one engine's table."""
    base = os.path.join(root, table)
    out = {}
    if not os.path.isdir(base):
        return out
    for d in sorted(os.listdir(base)):
        if not d.startswith("dt="):
            continue
        for r in sorted(os.listdir(os.path.join(base, d))):
            if not r.startswith("region="):
                continue
            part = os.path.join(base, d, r)
            key = (d[3:], r[7:])
            if manifests:
                m = os.path.join(part, "_SUCCESS")
                if not os.path.exists(m):
                    continue
                with open(m) as f:
                    out[key] = [os.path.join(part, n) for n in json.load(f)["files"]]
            else:
                out[key] = sorted(os.path.join(part, n) for n in os.listdir(part)
                                  if n.endswith(".parquet") and not n.startswith((".", "_")))
    return out


def fmt_row(r, cols, width=60):
    parts = []
    for c in cols:
        v = r[c]
        s = "null" if v is None else str(v)
        if len(s) > width:
            s = s[:width] + f"…({len(s)})"
        parts.append(f"{c}={s}")
    return "{" + ", ".join(parts) + "}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outputs", nargs="+", help="tauc warehouse first, then the others' output folders (NAME=PATH)")
    p.add_argument("--strict", action="store_true", help="reference-data columns must match too")
    p.add_argument("--show", type=int, default=5, help="differing rows shown per partition and side")
    a = p.parse_args()
    default_names = ["tauc", "duckdb", "spark"]
    engines = []
    for i, o in enumerate(a.outputs):
        name, path = o.split("=", 1) if "=" in o and not os.path.exists(o) else (
            default_names[i] if i < len(default_names) else f"engine{i}", o)
        engines.append((name, os.path.abspath(path)))
    ref = engines[0][0]
    failed = False
    ref_stats = {}  # (table, engine, column) -> [mismatched, compared]
    lines = []
    header = f"{'table':<28} {'dt':<10} {'region':<6} " + " ".join(f"{n:>8}" for n, _ in engines) + "  result"
    print(header)
    print("-" * len(header))
    details = []
    for table, (core, refcols, key) in TABLES.items():
        parts = {n: partitions_of(path, table, n.startswith("tauc")) for n, path in engines}
        keys = sorted(set().union(*[set(v) for v in parts.values()]))
        if not keys:
            print(f"{table:<28} (no partition in any engine)")
            failed = True
            continue
        for pk in keys:
            data = {n: read_files(parts[n].get(pk, []), core + refcols + [k for k in key if k not in core])
                    for n, _ in engines}
            counts = [len(data[n]) for n, _ in engines]
            ok = True
            notes = []
            bags = {n: collections.Counter(tuple(r[c] for c in core) for r in data[n]) for n, _ in engines}
            for n, _ in engines[1:]:
                if bags[n] != bags[ref]:
                    ok = False
                    only_ref = list((bags[ref] - bags[n]).elements())[: a.show]
                    only_other = list((bags[n] - bags[ref]).elements())[: a.show]
                    d = [f"  {table} dt={pk[0]} region={pk[1]}: {ref} and {n} differ "
                         f"({sum((bags[ref] - bags[n]).values())} rows only in {ref}, "
                         f"{sum((bags[n] - bags[ref]).values())} only in {n})"]
                    for label, rows in ((f"only in {ref}", only_ref), (f"only in {n}", only_other)):
                        for r in rows:
                            d.append(f"    {label}: " + fmt_row(dict(zip(core, r)), core))
                    details.append("\n".join(d))
                # reference-data columns, row by row on the key
                if refcols:
                    by_key = {tuple(r[k] for k in key): r for r in data[ref]}
                    for r in data[n]:
                        other = by_key.get(tuple(r[k] for k in key))
                        if other is None:
                            continue
                        for col in refcols:
                            s = ref_stats.setdefault((table, n, col), [0, 0, []])
                            s[1] += 1
                            if other[col] != r[col]:
                                s[0] += 1
                                if len(s[2]) < 3:
                                    s[2].append((other.get("ua") or other.get("event_id"), other[col], r[col]))
            if not ok:
                failed = True
            print(f"{table:<28} {pk[0]:<10} {pk[1]:<6} " + " ".join(f"{x:>8}" for x in counts)
                  + ("  ok" if ok else "  DIFFERENT"))
    if details:
        print("\nFirst differing rows (over the compared columns):")
        print("\n".join(details))
    if ref_stats:
        print("\nReference-data columns (gazetteer, uap-core rules), compared row by row:")
        for (table, n, col), (bad, total, ex) in sorted(ref_stats.items()):
            rate = bad / total if total else 0.0
            print(f"  {table:<28} {col:<15} {n:<7} {bad}/{total} differ ({rate:.2%})"
                  + ("" if not ex else "; e.g. " + "; ".join(f"{e[0]!r}: {ref}={e[1]!r} {n}={e[2]!r}" for e in ex)))
            if bad and a.strict:
                failed = True
    print("\nNot compared: " + "; ".join(f"{t}: {', '.join(c)} (the run's id and clock)" for t, c in NOT_COMPARED.items()))
    print("PASS: the engines give the same rows per table and partition" if not failed
          else "FAIL: the engines differ (see above)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
