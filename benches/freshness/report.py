"""Summarises one run of benches/freshness.sh (stdlib only): canary lag,
the micro-batch table, first against last batches, S3 requests per batch
for the incremental follower and the full re-runs, and their extrapolation
to a day at 100 M events. Prints the tables and writes lags.csv,
batches.csv and results.json beside the raw files.

    python3 report.py RUN_DIR
"""

import csv
import json
import math
import os
import sys

# the columns of S3 requests: LIST, GET, HEAD, PUT (copies included),
# DELETE, POST (batch deletes, multipart uploads)
REQUEST_COLS = [("list", ["LIST"]), ("get", ["GET"]), ("head", ["HEAD"]), ("put", ["PUT", "COPY"]), ("delete", ["DELETE"]), ("post", ["POST"])]
DAY_EVENTS = 100_000_000


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def pct(xs, p):
    """Nearest-rank percentile."""
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)] if xs else None


def prom(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                if line and not line.startswith("#"):
                    name, _, value = line.rpartition(" ")
                    out[name.strip()] = float(value)
    except FileNotFoundError:
        pass
    return out


def delta(before, after, client):
    """Per kind: requests, bytes_out, keys over the batch, and the raw/wh split."""
    b, a = before.get(client, {}), after.get(client, {})
    d = {}
    for key, c in a.items():
        kind, area = key.split(" ", 1)
        p = b.get(key, {})
        for f in ("requests", "bytes_in", "bytes_out", "keys"):
            v = c[f] - p.get(f, 0)
            d[(kind, f)] = d.get((kind, f), 0) + v
            d[(kind, area, f)] = d.get((kind, area, f), 0) + v
    return d


def raw_objects(counts):
    """Raw objects the uploader has PUT so far (successful or not)."""
    return counts.get("uploader", {}).get("PUT raw", {}).get("requests", 0)


def batches(run_dir, run):
    rows = []
    try:
        lines = open(os.path.join(run_dir, "batches.txt")).read().split("\n")
    except FileNotFoundError:
        return rows
    for line in filter(None, lines):
        phase, n, start, end, rc = line.split()
        f = os.path.join(run_dir, "batches", f"{phase}-{n}")
        before, after = load_json(f + ".before.json", {}), load_json(f + ".after.json", {})
        client = "follower" if phase == "inc" else "full"
        d = delta(before, after, client)
        try:
            wall, user, sys_, rss = open(f + ".time").read().split()[-4:]
        except (FileNotFoundError, ValueError):
            wall, user, sys_, rss = float(end) - float(start), "nan", "nan", "0"
        m = prom(f + ".prom")
        row = {
            "phase": phase,
            "batch": int(n),
            "rc": int(rc),
            "start_s": round(float(start) - run["feed_start"], 1),
            "wall_s": float(wall),
            "cpu_s": round(float(user) + float(sys_), 2),
            "rss_mib": round(int(rss) / 1024),
            "raw_objects": raw_objects(before),
            "keys_listed": d.get(("LIST", "keys"), 0),
            "mb_read": round(d.get(("GET", "bytes_out"), 0) / 1e6, 2),
            "mb_written": round(sum(d.get((k, "bytes_in"), 0) for k in ("PUT", "POST")) / 1e6, 2),
            "ods_rows": int(m.get("tauc_layering_last_run_valid_rows", 0)),
            "ods_ms": int(m.get("tauc_layering_last_run_ods_milliseconds", 0)),
            "dwd_ms": int(m.get("tauc_layering_last_run_dwd_milliseconds", 0)),
        }
        # requests by kind, and the part of each that touched the raw layout
        # (the rest is the warehouse)
        for col, kinds in REQUEST_COLS:
            row[col] = sum(d.get((k, "requests"), 0) for k in kinds)
            row[f"raw_{col}"] = sum(d.get((k, "raw", "requests"), 0) for k in kinds)
        row["requests"] = sum(row[c] for c, _ in REQUEST_COLS)
        row["raw_requests"] = sum(row[f"raw_{c}"] for c, _ in REQUEST_COLS)
        rows.append(row)
    return rows


def table(rows, cols):
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r[c]).rjust(w) for c, w in zip(cols, widths)))


def fit(xs, ys):
    """Least-squares a + b·x; b = 0 when the xs do not vary."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def main():
    run_dir = sys.argv[1]
    run = load_json(os.path.join(run_dir, "run.json"))
    res = {"run": run}
    print(f"freshness run {run['run_id']}: {run['minutes']} min at {run['rate']} events/s, "
          f"{run['profile']} build, follower {run['follower']} every {run['every']} s, {run['cores']} cores")
    feed = load_json(os.path.join(run_dir, "feed.json"), {})
    res["feed"] = feed
    if feed:
        print(f"feed: {feed['accepted']} events accepted in {feed['seconds']} s = {feed['events_per_s']} events/s "
              f"(target {feed['target_rate']}), {feed['refused']} requests refused, "
              f"POST p50 {feed['post_p50_ms']} ms p99 {feed['post_p99_ms']} ms, feed CPU {feed.get('cpu_s')} s")

    try:
        cpu = [line.split() for line in open(os.path.join(run_dir, "cpu.txt")) if line.strip()]
        res["component_cpu_s"] = {n: int(t) for n, t in cpu}
        print("CPU seconds over the run: " + ", ".join(f"{n} {t}" for n, t in cpu))
    except FileNotFoundError:
        pass

    # --- canaries
    seen = {}
    if os.path.exists(os.path.join(run_dir, "seen.csv")):
        seen = {r["event_id"]: float(r["seen_unix"]) for r in csv.DictReader(open(os.path.join(run_dir, "seen.csv")))}
    lags = []
    with open(os.path.join(run_dir, "lags.csv"), "w") as out:
        out.write("canary,event_id,acked_unix,seen_unix,lag_s\n")
        for r in csv.DictReader(open(os.path.join(run_dir, "canaries.csv"))):
            if r["status"] != "204":
                continue
            s = seen.get(r["event_id"])
            lag = round(s - float(r["acked_unix"]), 1) if s else None
            lags.append(lag)
            out.write(f"{r['canary']},{r['event_id']},{r['acked_unix']},{s or ''},{'' if lag is None else lag}\n")
    got = [x for x in lags if x is not None]
    res["lag"] = {"canaries": len(lags), "seen": len(got), "p50_s": pct(got, 50), "p95_s": pct(got, 95), "max_s": max(got, default=None)}
    print(f"\ncanary lag (collector 204 → row in dwd_trk_event_di through serve): {len(got)} of {len(lags)} seen; "
          f"p50 {res['lag']['p50_s']} s, p95 {res['lag']['p95_s']} s, max {res['lag']['max_s']} s")

    # --- micro-batches
    rows = batches(run_dir, run)
    cols = ["phase", "batch", "rc", "start_s", "wall_s", "cpu_s", "rss_mib", "raw_objects", "list", "keys_listed",
            "get", "mb_read", "head", "put", "mb_written", "delete", "post", "ods_rows", "ods_ms", "dwd_ms"]
    if rows:
        with open(os.path.join(run_dir, "batches.csv"), "w") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print("\nmicro-batches (S3 columns: the batch's own requests, counted at the proxy):")
        table(rows, cols)
    res["batches"] = rows
    inc = [r for r in rows if r["phase"] == "inc" and r["rc"] == 0]
    full = [r for r in rows if r["phase"] == "full" and r["rc"] == 0]
    if feed and inc:
        # every acknowledged event is loaded exactly once (collection.md)
        canaries = len(lags)
        print(f"rows: {feed['accepted']} events + {canaries} canaries acknowledged; loaded by the incremental batches "
              f"{sum(r['ods_rows'] for r in inc)}" + (f", by the last full re-run {full[-1]['ods_rows']}" if full else ""))
    failed = [f"{r['phase']}-{r['batch']}" for r in rows if r["rc"] != 0]
    if failed:
        print(f"failed batches: {', '.join(failed)}")

    # the batches that loaded rows while the load ran: the first ones may
    # start before the first upload, the last ones after the feed stopped
    fed = [r for r in inc if r["ods_rows"] > 0 and r["start_s"] < run["feed_end"] - run["feed_start"]]
    if len(fed) >= 2:
        k = max(1, min(3, len(fed) // 4))
        first, last = fed[:k], fed[-k:]
        mean = lambda rs, c: sum(r[c] for r in rs) / len(rs)  # noqa: E731
        print(f"\nfirst {k} against last {k} incremental batches that loaded rows during the feed (means; "
              f"raw objects in today's folder {mean(first, 'raw_objects'):.0f} → {mean(last, 'raw_objects'):.0f}):")
        cmp = {}
        for c in ["wall_s", "cpu_s", "ods_rows", "mb_read", "keys_listed", "list", "get", "put", "requests"]:
            a, b = mean(first, c), mean(last, c)
            cmp[c] = {"first": round(a, 2), "last": round(b, 2), "ratio": round(b / a, 2) if a else None}
            print(f"  {c:12} {a:10.2f} → {b:10.2f}   ×{cmp[c]['ratio']}")
        res["first_vs_last"] = cmp
    if len(inc) >= 2:
        starts = [r["start_s"] for r in inc]
        cadence = (starts[-1] - starts[0]) / (len(starts) - 1)
        res["cadence_s"] = round(cadence, 1)
        extrapolate(res, run_dir, inc, full, cadence)
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1)


def extrapolate(res, run_dir, inc, full, cadence):
    """S3 requests per day at 100 M events, from the measured batches: the
    raw side by the rule it follows (a LIST per 1 000 keys of the folder;
    the incremental run GETs each object once, the full run every object of
    the day so far, as measured per object), the warehouse side as measured
    (the incremental one as a line against the batch's number, fitted over
    the run and carried on to the day's last batch: a rough figure, the run
    being a small part of a day)."""
    up = prom(os.path.join(run_dir, "uploader.prom"))
    records, objects = up.get("tauc_uploader_records_total", 0), up.get("tauc_uploader_objects_total", 0)
    per_object = records / objects if objects else 50
    O = DAY_EVENTS / per_object  # noqa: N806 - the objects of a day
    N = 86400 / cadence  # noqa: N806 - batches a day
    half = O * (N + 1) / 2  # Σ_k O·k/N: the folder's size summed over the day's batches
    pages = O / 1000 * (N + 1) / 2 + N / 2  # Σ_k ⌈O·k/(N·1000)⌉, about
    print(f"\nS3 requests a day at 100 M events: {per_object:.1f} events per raw object (uploader) → "
          f"O = {O:,.0f} objects a day; a batch every {cadence:.1f} s → N = 86400 / {cadence:.1f} = {N:,.0f} batches a day. "
          f"Batch k of N finds O·k/N objects in today's folder: Σ_k O·k/N = O·(N+1)/2 = {half:,.0f}; "
          f"LIST pages of the folder Σ_k ⌈O·k/N/1000⌉ ≈ O/1000·(N+1)/2 + N/2 = {pages:,.0f}.")
    out = {"events_per_object": round(per_object, 1), "objects_per_day": round(O), "batches_per_day": round(N)}
    loaded = max(1, inc[-1]["raw_objects"] if inc else 1)  # every object the run's batches could load

    def raw_day(rows, col, mode):
        """(per day, arithmetic) of the raw side of one kind of request."""
        mean = sum(r[f"raw_{col}"] for r in rows) / len(rows)
        if col == "list":
            # the LISTs beyond the folder's pages (other folders, the empty yesterday)
            extra = sum(r["raw_list"] - math.ceil(r["raw_objects"] / 1000) for r in rows) / len(rows)
            return N * extra + pages, f"N·{extra:.1f} + {pages:,.0f}"
        if col == "get" and mode == "incremental":
            g = sum(r["raw_get"] for r in rows) / loaded
            return g * O, f"{g:.3f}/object·O"
        if col == "get":
            g = sum(r["raw_get"] / max(1, r["raw_objects"]) for r in rows) / len(rows)
            return g * half, f"{g:.3f}/object·O·(N+1)/2"
        return N * mean, f"N·{mean:.1f}"

    def wh_day(rows, col, mode):
        ys = [r[col] - r[f"raw_{col}"] for r in rows]
        if mode == "full" or len(rows) < 3:
            a = sum(ys) / len(ys)
            return N * a, f"N·{a:.1f}"
        # what grows is the count of files appended so far, one set per
        # batch: a line against the batch's number (the run's first batch
        # is the day's first, its folder starts empty), summed over the day
        a, c = fit([r["batch"] for r in rows], ys)
        note = ""
        if c < 0:
            c, note, a = 0.0, " (slope below 0 taken as 0)", sum(ys) / len(ys)
        return N * a + c * N * (N + 1) / 2, f"N·{a:.1f} + {c:.3f}·N·(N+1)/2{note}"

    modes = [("incremental", inc)] + ([("full", full)] if full else [])
    print(f"\n{'':18}" + "".join(f"{m + ' per batch (first → last)':>34}{m + ' per day':>22}" for m, _ in modes))
    totals = {m: 0.0 for m, _ in modes}
    lines = []
    for col, _ in REQUEST_COLS:
        cells = ""
        for mode, rows in modes:
            r_day, r_how = raw_day(rows, col, mode)
            w_day, w_how = wh_day(rows, col, mode)
            totals[mode] += r_day + w_day
            out[f"{mode}_{col}"] = {"first": rows[0][col], "last": rows[-1][col], "raw_per_day": round(r_day), "wh_per_day": round(w_day)}
            cells += f"{f'{rows[0][col]} → {rows[-1][col]}':>34}{r_day + w_day:>22,.0f}"
            lines.append(f"  {mode:11} {col.upper():6} raw {r_how} = {r_day:,.0f}; warehouse {w_how} = {w_day:,.0f}")
        print(f"  {col.upper():16}" + cells)
    print(f"  {'all':16}" + "".join(f"{'':>34}{totals[m]:>22,.0f}" for m, _ in modes))
    for m, _ in modes:
        out[f"{m}_per_day"] = round(totals[m])
    if full:
        print(f"  full / incremental, requests a day: ×{totals['full'] / max(1.0, totals['incremental']):.1f}")
    print("how:")
    print("\n".join(lines))
    print("  (every batch covers yesterday too, whose folder is empty here; at 100 M a day listing it whole adds "
          f"⌈O/1000⌉ = {math.ceil(O / 1000):,} LISTs to every batch, {N * math.ceil(O / 1000):,.0f} a day, for both; "
          f"a full re-run of yesterday would also GET its O = {O:,.0f} objects every batch)")
    res["s3_per_day"] = out


if __name__ == "__main__":
    main()
