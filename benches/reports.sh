#!/usr/bin/env bash
# Reports job cost on sample data served by a local s3s-fs.
#
#   benches/reports.sh [events_per_day] [profile]
#
# Writes one region-day of sample data and runs the layering once (set-up,
# not timed). Then, in the same run, times (wall clock, process start to
# exit, 3 runs each, median):
#   baseline  `tauc-job sql` of one aggregate over the day's DWD events
#             (one scan of the same input, same engine start-up)
#   reports   `tauc-job submit reports` for that day: all seven ADS tables
#             (10 queries, submitted together) and 7 partition commits
# and prints both and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-20000}
profile=${2:-dev}
scripts/install-test-tools
target=${CARGO_TARGET_DIR:-target}
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
cargo build --profile "$profile" --bin tauc-job >&2
bin=$(realpath "$target/$dir/tauc-job")
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/s3/bench"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
.tools/bin/s3s-fs --host 127.0.0.1 --port "$port" --access-key bench --secret-key bench-secret "$work/s3" >"$work/s3s.log" 2>&1 &
server=$!
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 RUST_LOG=warn
flags=(--raw-root s3://bench/raw --warehouse s3://bench/wh --s3-endpoint "http://127.0.0.1:$port" --s3-allow-http)
cd "$work"
"$bin" sample --date 2024-06-18 --events-per-day "$events" --regions aps1 "${flags[@]}" >&2
"$bin" submit layering --date 2024-06-18 --region aps1 "${flags[@]}" >&2
rows=$("$bin" sql "SELECT count(*) AS n FROM dwd_trk_event_di WHERE dt = DATE '2024-06-18' AND region = 'aps1'" --format csv "${flags[@]}" | tail -1)
timed() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
scan=() rep=()
for _ in 1 2 3; do
  scan+=("$(timed "$bin" sql "SELECT event_type, count(*), count(DISTINCT user_key) FROM dwd_trk_event_di WHERE dt = DATE '2024-06-18' AND region = 'aps1' GROUP BY event_type" "${flags[@]}")")
  rep+=("$(timed "$bin" submit reports --date 2024-06-18 --region aps1 "${flags[@]}")")
done
python3 - "$rows" "$(median "${scan[@]}")" "$(median "${rep[@]}")" <<'PY'
import sys
rows, scan, rep = int(sys.argv[1]), float(sys.argv[2]) / 1000, float(sys.argv[3]) / 1000
print(f"dwd_trk_event_di rows for the day: {rows}")
print(f"baseline (one aggregate query)   {scan:7.2f} s")
print(f"reports (seven ADS tables)       {rep:7.2f} s")
print(f"ratio: reports = {rep/scan:.2f}x one aggregate query")
PY
