"""The freshness bench's load: realistic tracker events POSTed to the
collector at a fixed rate, in batches as the tracker sends them (at most
50 events a request), plus one canary event every CANARY seconds whose
collector 204 is timed (stdlib only).

Events follow `tauc-job sample`'s shape: 2 000 devices, a quarter of them
signed-in users u0..u39 (the sample's dim_user), page_enter / page_leave /
click / impression / cors_error over six portal pages. `client_ts` is the
sending time. Runs until SIGTERM or SIGINT, then writes its summary.

Writes, under OUT:
  canaries.csv  canary,event_id,sent_unix,acked_unix (acked = the 204 came back)
  feed.json     events sent and accepted, requests refused, achieved rate,
                POST latency p50/p99, this process's CPU seconds

    python3 feed.py --port 8080 --rate 1160 --out DIR --run-id RUN
"""

import argparse
import http.client
import json
import os
import queue
import random
import signal
import threading
import time

PAGES = [
    "https://portal.tauc.example/home",
    "https://portal.tauc.example/#/devices/1042?tab=info",
    "https://portal.tauc.example/#/devices/add",
    "https://portal.tauc.example/billing/invoices/2024000123",
    "https://portal.tauc.example/users/3f2b9c1e-7d4a-4e11-9a0b-5c6d7e8f9a01/profile",
    "https://portal.tauc.example/help?q=cors",
]
UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
]
TARGETS = [("button", "btn-add-device"), ("button", "btn-save"), ("banner", "banner-spring-sale"), ("page", "page-devices")]
PLACES = [(19.076, 72.8777), (12.9716, 77.5946), (40.7128, -74.006), (53.3498, -6.2603)]
DEVICES = 2000
BATCH = 50  # the tracker's largest batch (collection.md)
STOP = threading.Event()


def event(rng, run_id, n, now_ms):
    d = rng.randrange(DEVICES)
    kind = rng.randrange(100)
    event_type = (
        "page_enter" if kind < 35 else "page_leave" if kind < 55 else "click" if kind < 80 else "impression" if kind < 93 else "cors_error"
    )
    page = rng.choice(PAGES)
    e = {
        "event_id": f"{run_id}-{n}",
        "event_type": event_type,
        "client_ts": now_ms - rng.randrange(3000),
        "sent_ts": now_ms,
        "device_id": f"dev-{d}",
        "device_id_type": "browser",
        "app_version": "web-3.14.0",
        "ua": UAS[d % len(UAS)],
        "page": {"url": page, "from_url": PAGES[0]},
    }
    if d % 4 == 0:
        e["user_id"] = f"u{d % 40}"
    if d % 5:
        lat, lon = PLACES[d % len(PLACES)]
        e["geo"] = {"lat": lat, "lon": lon}
    if event_type == "page_leave":
        e["page"]["to_url"] = rng.choice(PAGES)
        e["page_leave_ts"] = e["client_ts"]
        e["page_enter_ts"] = e["client_ts"] - 1000 * rng.randrange(1, 600)
    elif event_type in ("click", "impression"):
        t, i = rng.choice(TARGETS)
        e["target"] = {"type": t, "id": i}
    elif event_type == "cors_error":
        e["cors"] = {
            "url": f"https://api.tauc.example/v1/devices/{rng.randrange(9000)}",
            "method": "GET",
            "origin": "https://portal.tauc.example",
            "status": rng.choice([0, 403, 502]),
            "error": "TypeError: Failed to fetch",
            "duration_ms": rng.randrange(30000),
        }
    return e


class Poster:
    """One keep-alive connection to the collector."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def post(self, events):
        body = json.dumps(events, separators=(",", ":")).encode()
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/json"})
                r = self.conn.getresponse()
                r.read()
                return r.status
            except (ConnectionError, http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    return 0
        return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True, help="events per second")
    ap.add_argument("--canary", type=float, default=10.0, help="seconds between canaries")
    ap.add_argument("--out", required=True)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--workers", type=int, default=4)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    signal.signal(signal.SIGINT, lambda *_: STOP.set())

    stats = {"sent": 0, "accepted": 0, "requests": 0, "refused": 0, "latency": []}
    lock = threading.Lock()
    jobs = queue.Queue(maxsize=256)

    def worker():
        p = Poster(a.port)
        while True:
            evs = jobs.get()
            if evs is None:
                return
            t = time.monotonic()
            status = p.post(evs)
            dt = time.monotonic() - t
            with lock:
                stats["sent"] += len(evs)
                stats["requests"] += 1
                stats["latency"].append(dt)
                if status == 204:
                    stats["accepted"] += len(evs)
                else:
                    stats["refused"] += 1

    canaries = open(os.path.join(a.out, "canaries.csv"), "w", buffering=1)
    canaries.write("canary,event_id,sent_unix,acked_unix,status\n")

    def canary():
        p = Poster(a.port)
        rng = random.Random(7)
        k = 0
        next_at = time.time()
        while not STOP.wait(max(0.0, next_at - time.time())):
            k += 1
            e = event(rng, f"canary-{a.run_id}", k, int(time.time() * 1000))
            e["event_type"] = "page_enter"  # a row of every DWD form; no target needed
            e.pop("target", None)
            e.pop("cors", None)
            sent = time.time()
            status = p.post([e])
            acked = time.time()
            canaries.write(f"{k},{e['event_id']},{sent:.3f},{acked:.3f},{status}\n")
            next_at += a.canary

    threads = [threading.Thread(target=worker) for _ in range(a.workers)]
    threads.append(threading.Thread(target=canary))
    for t in threads:
        t.start()

    rng = random.Random(1)
    interval = BATCH / a.rate
    start = time.monotonic()
    n = 0
    last_log = start
    while not STOP.is_set():
        now_ms = int(time.time() * 1000)
        jobs.put([event(rng, a.run_id, n + i, now_ms) for i in range(BATCH)])
        n += BATCH
        # paced against the start, so a slow request does not lower the rate
        STOP.wait(max(0.0, start + n / a.rate - time.monotonic()))
        if time.monotonic() - last_log >= 60:
            last_log = time.monotonic()
            with lock:
                print(f"feed: {stats['accepted']} accepted, {stats['refused']} refused requests, "
                      f"{stats['accepted'] / (last_log - start):.0f} events/s", flush=True)
    secs = time.monotonic() - start
    for _ in range(a.workers):
        jobs.put(None)
    for t in threads:
        t.join()
    lat = stats.pop("latency")
    stats.update(
        seconds=round(secs, 1),
        events_per_s=round(stats["accepted"] / secs, 1),
        post_p50_ms=round(1000 * pct(lat, 50), 2) if lat else None,
        post_p99_ms=round(1000 * pct(lat, 99), 2) if lat else None,
        target_rate=a.rate,
        cpu_s=round(os.times().user + os.times().system, 1),
    )
    with open(os.path.join(a.out, "feed.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print("feed:", json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
