"""The freshness bench's reader: asks `tauc-job serve` over Arrow Flight SQL
(the ADBC driver, as a BI client would) every EVERY seconds which canary
events `dwd_trk_event_di` holds, and records when each first shows up.
Runs until SIGTERM, or until DONE exists and every acknowledged canary
has been seen.

Writes OUT/seen.csv (event_id,seen_unix,query_ms) and OUT/polls.csv
(poll_unix,query_ms,visible,error).

    .tools/py/bin/python poll.py --port P --user U --password-file F --run-id R --since 2026-12-06 --out DIR
"""

import argparse
import csv
import datetime
import os
import signal
import threading
import time

import adbc_driver_flightsql.dbapi as adbc

STOP = threading.Event()
# the canaries of this run, from the local dates from --since on (the table
# is partitioned by dt, so older partitions are not read)
SQL = "SELECT event_id FROM dwd_trk_event_di WHERE dt >= ? AND starts_with(event_id, ?)"


def acked(out):
    """The event ids of the canaries the collector acknowledged so far."""
    try:
        with open(os.path.join(out, "canaries.csv")) as f:
            return {r["event_id"] for r in csv.DictReader(f) if r["status"] == "204"}
    except FileNotFoundError:
        return set()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password-file", required=True)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--since", required=True, help="first local date (YYYY-MM-DD) to look in")
    ap.add_argument("--every", type=float, default=3.0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--done", help="a file whose existence says no more canaries come")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    password = open(a.password_file).read().strip()
    since = datetime.date.fromisoformat(a.since)
    prefix = f"canary-{a.run_id}-"
    seen = {}
    seen_f = open(os.path.join(a.out, "seen.csv"), "w", buffering=1)
    seen_f.write("event_id,seen_unix,query_ms\n")
    polls = open(os.path.join(a.out, "polls.csv"), "w", buffering=1)
    polls.write("poll_unix,query_ms,visible,error\n")
    conn = None
    while not STOP.is_set():
        t0 = time.time()
        err = ""
        try:
            if conn is None:
                conn = adbc.connect(f"grpc://127.0.0.1:{a.port}", db_kwargs={"username": a.user, "password": password})
            with conn.cursor() as cur:
                cur.execute(SQL, parameters=(since, prefix))
                ids = [r[0] for r in cur.fetchall()]
            t1 = time.time()
            for i in ids:
                if i not in seen:
                    seen[i] = t1
                    seen_f.write(f"{i},{t1:.3f},{1000 * (t1 - t0):.0f}\n")
        except Exception as e:  # noqa: BLE001 - a failed poll is recorded, the next one retries
            err = f"{type(e).__name__}: {e}".replace("\n", " ").replace(",", ";")[:300]
            try:
                conn and conn.close()
            except Exception:  # noqa: BLE001
                pass
            conn = None
        polls.write(f"{t0:.3f},{1000 * (time.time() - t0):.0f},{len(seen)},{err}\n")
        if a.done and os.path.exists(a.done) and acked(a.out) <= set(seen):
            break
        STOP.wait(max(0.0, t0 + a.every - time.time()))


if __name__ == "__main__":
    main()
