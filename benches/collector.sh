#!/usr/bin/env bash
# Collector intake: accepted events/s and p50/p99 latency of POST /v1/events
# (batches of 10 and 50 events), fsync on, with the broker up and with it
# down (SIGSTOP: everything spools), against the same collector syncing
# once per request (--spool-sync request) as the baseline, all in one run.
# The collector is pinned to core 0; wrk and the broker share core 1.
#
#   benches/collector.sh [PROFILE] [SECONDS] [CONNECTIONS]
#
# Needs wrk (Debian) and the test tools (scripts/install-test-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
profile=${1:-fast}
secs=${2:-15}
conns=${3:-64}
scripts/install-test-tools
command -v wrk >/dev/null || { echo "collector.sh: wrk is missing (apt-get install wrk)" >&2; exit 2; }
cargo build --profile "$profile" -p tauc-collector --bins >&2
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
bin=$(realpath "${CARGO_TARGET_DIR:-target}/$dir/tauc-collector")
work=$(mktemp -d)
kport=$(free_port)
taskset -c 1 .tools/bin/tansu broker --storage-engine memory://tansu/ \
  --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" >"$work/tansu.log" 2>&1 &
broker=$!
collector=
trap 'kill -CONT $broker 2>/dev/null; kill $broker ${collector:-} 2>/dev/null || true; rm -rf "$work"' EXIT
wait_port "$kport"

# a request body: n events of ~250 bytes, one line each
body() {
  python3 - "$1" <<'PY'
import json, sys
n = int(sys.argv[1])
evs = [{"event_id": f"bench-{i}", "event_type": "click", "client_ts": 1718668800123 + i,
        "sent_ts": 1718668801000, "device_id": f"dev-{i % 97}", "device_id_type": "browser",
        "app_version": "web-2.3.1", "page": {"url": "https://portal.example.com/devices/123?tab=1"},
        "target": {"type": "button", "id": "buy-now"}} for i in range(n)]
print(json.dumps(evs, separators=(",", ":")))
PY
}

run() { # label sync batch broker(up|down)
  local label=$1 sync=$2 batch=$3 state=$4 port
  port=$(free_port)
  rm -rf "$work/spool"
  taskset -c 0 "$bin" --bind "127.0.0.1:$port" --region aps1 --spool-dir "$work/spool" \
    --kafka-brokers "127.0.0.1:$kport" --spool-sync "$sync" >"$work/collector.log" 2>&1 &
  collector=$!
  wait_port "$port"
  [ "$state" = down ] && kill -STOP $broker
  body "$batch" >"$work/body.json"
  cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/body.json"); wrk.body = f:read("*a"); f:close()
done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("RESULT %d %d %.3f %.3f %d\n", summary.requests, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, non2xx))
end
LUA
  local out
  out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/v1/events")
  [ "$state" = down ] && kill -CONT $broker
  kill $collector; wait $collector 2>/dev/null || true
  collector=
  read -r _ reqs dur p50 p99 bad <<<"$(grep '^RESULT' <<<"$out")"
  local ok=$((reqs - bad))
  printf "%-28s batch %2d broker %-4s  %8.0f events/s  p50 %6.2f ms  p99 %7.2f ms  (%d requests, %d not 204)\n" \
    "$label" "$batch" "$state" "$(echo "$ok * $batch / ($dur / 1000000)" | bc -l)" "$p50" "$p99" "$reqs" "$bad"
}

echo "collector bench: $profile build, ${secs}s per run, $conns connections, $(nproc) cores"
for batch in 10 50; do
  for state in up down; do
    run "baseline (sync per request)" request "$batch" "$state"
    run "tauc (group commit)" group "$batch" "$state"
  done
done
