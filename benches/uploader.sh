#!/usr/bin/env bash
# Uploader throughput into the local S3 server (s3s-fs): records/s and MB/s
# draining a topic of 1 and of 8 partitions, filled beforehand through the
# collector. The time runs from the uploader's start to its last commit.
#
#   benches/uploader.sh [PROFILE] [FILL_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
profile=${1:-fast}
fill=${2:-10}
scripts/install-test-tools
command -v wrk >/dev/null || { echo "uploader.sh: wrk is missing (apt-get install wrk)" >&2; exit 2; }
cargo build --profile "$profile" -p tauc-collector --bins >&2
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
bins=$(realpath "${CARGO_TARGET_DIR:-target}/$dir")
work=$(mktemp -d)
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
pids=()
trap 'kill ${pids[*]} 2>/dev/null || true; rm -rf "$work"' EXIT

s3port=$(free_port); mkdir -p "$work/s3/bench"
.tools/bin/s3s-fs --host 127.0.0.1 --port "$s3port" --access-key bench --secret-key bench-secret "$work/s3" >"$work/s3s.log" 2>&1 &
pids+=($!)
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1
kport=$(free_port)
.tools/bin/tansu broker --storage-engine memory://tansu/ \
  --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" >"$work/tansu.log" 2>&1 &
pids+=($!)
wait_port "$s3port"; wait_port "$kport"

python3 - >"$work/body.json" <<'PY'
import json, time
now = int(time.time() * 1000)
print(json.dumps([{"event_id": f"e-{i}", "event_type": "impression", "client_ts": now, "device_id": f"dev-{i}",
                   "page": {"url": "https://portal.example.com/home"}, "target": {"type": "banner", "id": "summer"}}
                  for i in range(50)], separators=(",", ":")))
PY
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/body.json"); wrk.body = f:read("*a"); f:close()
LUA

echo "uploader bench: $profile build, topic filled for ${fill}s, $(nproc) cores"
for parts in 1 8; do
  env=p$parts
  cport=$(free_port)
  "$bins/tauc-collector" --bind "127.0.0.1:$cport" --env "$env" --region aps1 --spool-dir "$work/spool-$env" \
    --kafka-brokers "127.0.0.1:$kport" --topic-partitions "$parts" >"$work/collector-$env.log" 2>&1 &
  cpid=$!; pids+=($cpid)
  wait_port "$cport"
  wrk -t1 -c2 -d"${fill}s" -s "$work/post.lua" "http://127.0.0.1:$cport/v1/events" >/dev/null
  accepted=$(metric "$cport" 'tauc_collector_events_total{outcome="accepted"}')
  until [ "$(metric "$cport" tauc_collector_shipped_events_total)" = "$accepted" ]; do sleep 0.5; done
  kill $cpid
  mport=$(free_port)
  start=$(date +%s.%N)
  "$bins/tauc-uploader" --kafka-brokers "127.0.0.1:$kport" --env "$env" --region aps1 --raw-root s3://bench/raw \
    --s3-endpoint "http://127.0.0.1:$s3port" --s3-allow-http --max-wait 1s --metrics-bind "127.0.0.1:$mport" >"$work/uploader-$env.log" 2>&1 &
  upid=$!; pids+=($upid)
  wait_port "$mport"
  until [ "$(metric "$mport" tauc_uploader_records_total)" = "$accepted" ]; do sleep 0.2; done
  end=$(date +%s.%N)
  bytes=$(metric "$mport" tauc_uploader_bytes_total)
  objects=$(metric "$mport" tauc_uploader_objects_total)
  kill $upid
  secs=$(echo "$end - $start" | bc -l)
  printf "%d partition(s): %d records, %d objects, %.1f MB in %.1f s: %8.0f records/s  %6.2f MB/s\n" \
    "$parts" "$accepted" "$objects" "$(echo "$bytes / 1000000" | bc -l)" "$secs" \
    "$(echo "$accepted / $secs" | bc -l)" "$(echo "$bytes / 1000000 / $secs" | bc -l)"
done
