#!/usr/bin/env bash
# Reports job cost on sample data served by a local s3s-fs.
#
#   [SHAPE=toy|business] benches/reports.sh [events_per_day] [profile]
#
# Writes one region-day of sample data in SHAPE (`tauc-job sample
# --shape`; default: the sample's own choice for the event count) and runs
# the layering once (set-up, not timed). Then, in the same run, times (wall clock, process start to
# exit, 3 runs each, median):
#   baseline  `tauc-job sql` of one aggregate over the day's DWD events
#             (one scan of the same input, same engine start-up)
#   reports   `tauc-job submit reports` for that day: all seven ADS tables
#             (10 queries, submitted together) and 7 partition commits
# and prints both, their ratio, and the reports' time per DWD row (what
# compares one shape with another).
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-20000}
profile=${2:-dev}
. benches/lib.sh
bench_setup "$profile"
export RUST_LOG=warn
shape=(${SHAPE:+--shape "$SHAPE"})
"$bin" sample --date 2024-06-18 --events-per-day "$events" --regions aps1 "${shape[@]}" "${flags[@]}" >&2
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
print(f"reports per million DWD rows     {rep / rows * 1e6:7.2f} s")
PY
