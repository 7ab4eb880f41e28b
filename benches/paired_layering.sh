#!/usr/bin/env bash
# The layering's wall time at this checkout beside an earlier revision,
# paired: one region-day of sample data (the business's shape from 1 M
# events), then RUNS pairs of full `submit layering` runs — this
# checkout's binary, then BASE's, each into a warehouse of its own, in
# turn — after one warm-up run each. Prints every pair, the medians and
# the median of the pairs' ratios (head / base): what a change costs the
# layering (e.g. the file layout: sorted files, Bloom filters, page index).
#
#   benches/paired_layering.sh BASE [EVENTS] [PROFILE]   (defaults 1000000 fast)
#
# BASE is built once in a git worktree under ~/.cache/tauc/bench/rev-BASE
# with the same target directory (only the workspace's crates build
# twice); its binary is kept beside the worktree for the next run.
# Environment: RUNS=5.
set -euo pipefail
export RUST_LOG=${RUST_LOG:-warn}
cd "$(dirname "$0")/.."
base=${1:?usage: benches/paired_layering.sh BASE [EVENTS] [PROFILE]}
events=${2:-1000000}
profile=${3:-fast}
runs=${RUNS:-5}
day=2024-06-18
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
rev=$(git rev-parse --short "$base")
tree=${XDG_CACHE_HOME:-$HOME/.cache}/tauc/bench/rev-$rev
base_bin=$tree.tauc-job-$profile
if [ ! -x "$base_bin" ]; then
  [ -d "$tree" ] || git worktree add --detach "$tree" "$rev" >&2
  (cd "$tree" && CARGO_TARGET_DIR=$target cargo build --profile "$profile" --bin tauc-job >&2)
  cp "$target/$dir/tauc-job" "$base_bin"
fi
. benches/lib.sh
bench_setup "$profile"
at() { # WAREHOUSE COMMAND...: runs COMMAND with the store flags, the warehouse s3://bench/WAREHOUSE
  local wh=$1
  shift
  "$@" "${flags[@]/s3:\/\/bench\/wh/s3://bench/$wh}"
}
# the same raw objects for both; each warehouse gets the sample's dims
for wh in head base; do
  at "$wh" "$bin" sample --date "$day" --events-per-day "$events" --regions aps1 >&2
done

layering() { # BINARY WAREHOUSE: milliseconds of one full layering run
  local t0 t1
  t0=$(date +%s%N)
  at "$2" "$1" submit layering --date "$day" --region aps1 >/dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
layering "$bin" head >/dev/null
layering "$base_bin" base >/dev/null
pairs=()
for _ in $(seq "$runs"); do
  pairs+=("$(layering "$bin" head) $(layering "$base_bin" base)")
done
python3 - "$rev" "$events" "${pairs[@]}" <<'PY'
import statistics, sys
rev, events, pairs = sys.argv[1], sys.argv[2], [tuple(map(int, p.split())) for p in sys.argv[3:]]
print(f"layering of one region-day, {events} events: this checkout (head) beside {rev} (base)")
for h, b in pairs:
    print(f"  head {h / 1000:7.2f} s   base {b / 1000:7.2f} s   ratio {h / b:5.3f}")
med = lambda xs: statistics.median(xs)
print(f"median: head {med([h for h, _ in pairs]) / 1000:.2f} s, base {med([b for _, b in pairs]) / 1000:.2f} s, "
      f"ratio of pairs {med([h / b for h, b in pairs]):.3f}")
PY
