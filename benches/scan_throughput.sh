#!/usr/bin/env bash
# Raw-scan throughput on sample data served by a local s3s-fs.
#
#   benches/scan_throughput.sh [events_per_day] [profile]
#
# Writes one region-day of sample data (events_per_day / 50 files), then
# loads it twice in the same run:
#   baseline  --ranges 1 --fetch-concurrency 1  (one request in flight, like
#             DataFusion's file scan per partition)
#   tauc      the defaults (4 ranges per folder, 32 requests per range)
# and prints files/s and MB/s of the ODS stage for both and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-100000}
profile=${2:-dev}
. benches/lib.sh
bench_setup "$profile"
"$bin" sample --date 2024-06-18 --events-per-day "$events" --regions aps1 "${flags[@]}" >&2
bytes=$(du -sb "$work/s3/bench/raw" | cut -f1)
files=$(find "$work/s3/bench/raw" -name 'messages-*.txt' | wc -l)
run() {
  local out secs
  out=$(RUST_LOG=warn "$bin" submit layering --date 2024-06-18 --region aps1 "${flags[@]}" "$@")
  secs=$(echo "$out" | sed -n 's/.*committed: ods \([0-9.]*\) s.*/\1/p')
  echo "$secs"
}
base=$(run --ranges 1 --fetch-concurrency 1)
tauc=$(run)
python3 - "$files" "$bytes" "$base" "$tauc" <<'PY'
import sys
files, size, base, tauc = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
mb = size / 1e6
for name, s in (("baseline (1 range, 1 request)", base), ("tauc defaults (4 ranges x 32)", tauc)):
    print(f"{name:32s} {s:7.2f} s  {files/s:9.0f} files/s  {mb/s:7.1f} MB/s")
print(f"speed-up: {base/tauc:.2f}x  ({files} files, {mb:.1f} MB)")
PY
