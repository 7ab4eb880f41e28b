"""Prints the lookup benchmark's table from the two engines' JSON
(run_queries.py) and the tables' committed bytes: cold and warm
(p50/p95) milliseconds per query, DuckDB's p50 over tauc's, the share of
the 30 days' bytes tauc's scans read, and whether the rows agree.

  python report.py TAUC.json DUCKDB.json TABLE_BYTES.json"""

import json
import statistics
import sys


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, round(p / 100 * (len(v) - 1)))]


tauc, duck, sizes = (json.load(open(p)) for p in sys.argv[1:4])
print("| query | kind | tauc cold | tauc p50 | tauc p95 | DuckDB cold | DuckDB p50 | DuckDB p95 | DuckDB/tauc p50 | bytes read | rows | same rows |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for name, t in tauc.items():
    d = duck[name]
    table = "dwd_mon_cors_error_di" if name.startswith("fingerprint") else "dwd_trk_event_di"
    share = 100 * t.get("bytes_scanned", 0) / max(1, sizes[table])
    p50t, p50d = statistics.median(t["warm_ms"]), statistics.median(d["warm_ms"])
    print(
        f"| {name} | {t['kind']} | {t['cold_ms']:.0f} | {p50t:.0f} | {pct(t['warm_ms'], 95):.0f} | "
        f"{d['cold_ms']:.0f} | {p50d:.0f} | {pct(d['warm_ms'], 95):.0f} | {p50d / p50t:.2f}× | "
        f"{share:.2f} % | {t['rows']} | {'yes' if t['digest'] == d['digest'] else 'NO'} |"
    )
