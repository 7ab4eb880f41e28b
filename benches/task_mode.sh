#!/usr/bin/env bash
# Pull against push: two clusters (a scheduler and two executors each, one
# in `--task-mode pull`, one in `--task-mode push`) on the same sample day on
# the local disk, and `submit layering` run on them in turn (A B A B …).
# Prints each run's wall time, then the medians and the median of the
# pair-by-pair ratios pull / push, and the median time of the DWD stage and
# of its check for doubled events (a cluster-only Ballista job) per mode.
#
#   benches/task_mode.sh [EVENTS] [PAIRS] [PROFILE]
#
# EVENTS of one region-day (default 20000), PAIRS (default 10), PROFILE the
# cargo profile (default fast). SKIP_BUILD=1 uses target/PROFILE as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
events=${1:-20000}
pairs=${2:-10}
profile=${3:-fast}
target=${CARGO_TARGET_DIR:-target}
tdir="$target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --profile "$profile" --bin tauc-job --bin tauc-scheduler --bin tauc-executor >&2
fi
tdir=$(realpath "$tdir")
work=$(mktemp -d -p /var/tmp tauc-task-mode.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

"$tdir/tauc-job" sample --date 2024-06-18 --days 1 --events-per-day "$events" --regions aps1 \
  --raw-root "$work/raw" --warehouse "$work/wh-pull" >&2
cp -r "$work/wh-pull" "$work/wh-push"

# start_cluster MODE: a scheduler and two executors; sets `port` to the
# scheduler's (not in a subshell: `pids` must keep the processes)
start_cluster() {
  local mode=$1 ports i
  port=$(free_port)
  "$tdir/tauc-scheduler" --bind "127.0.0.1:$port" --external-host 127.0.0.1 --task-mode "$mode" \
    >"$work/scheduler-$mode.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
  for i in 1 2; do
    ports=($(free_port) $(free_port) $(free_port))
    "$tdir/tauc-executor" --scheduler-host 127.0.0.1 --scheduler-port "$port" --bind-host 127.0.0.1 \
      --external-host 127.0.0.1 --port "${ports[0]}" --grpc-port "${ports[1]}" \
      --health-port "${ports[2]}" --vcores 2 --task-mode "$mode" --work-dir "$work" \
      >"$work/executor-$mode-$i.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:${ports[2]}/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  done
}
start_cluster pull
pull=$port
start_cluster push
push=$port

# run MODE PORT: one layering run; prints its wall seconds
run() {
  local start end
  start=$(date +%s.%N)
  "$tdir/tauc-job" submit layering --date 2024-06-18 --region aps1 --raw-root "$work/raw" \
    --warehouse "$work/wh-$1" --scheduler "df://127.0.0.1:$2" >"$work/job-$1.log" 2>&1 \
    || { echo "the $1 run failed:" >&2; tail -20 "$work/job-$1.log" >&2; exit 1; }
  end=$(date +%s.%N)
  grep -o 'dwd [0-9.]* s' "$work/job-$1.log" | awk '{print $2}' >>"$work/dwd-$1.txt"
  grep 'DWD output checked' "$work/job-$1.log" | grep -o 'secs=[0-9.]*' | cut -d= -f2 >>"$work/check-$1.txt"
  python3 -c "print(round($end - $start, 3))"
}
run pull "$pull" >/dev/null # warm-up
run push "$push" >/dev/null
rm -f "$work"/dwd-*.txt "$work"/check-*.txt
a=() b=()
for i in $(seq "$pairs"); do
  a+=($(run pull "$pull"))
  b+=($(run push "$push"))
  echo "pair $i: pull ${a[-1]} s, push ${b[-1]} s" >&2
done
python3 - "${a[*]}" "${b[*]}" <<'EOF'
import statistics as s, sys
a = [float(x) for x in sys.argv[1].split()]
b = [float(x) for x in sys.argv[2].split()]
print(f"pull median {s.median(a):.2f} s (min {min(a):.2f}, max {max(a):.2f})")
print(f"push median {s.median(b):.2f} s (min {min(b):.2f}, max {max(b):.2f})")
print(f"pull/push, median of the pairs' ratios: {s.median(x / y for x, y in zip(a, b)):.2f}")
EOF
for mode in pull push; do
  python3 - "$mode" "$work/dwd-$mode.txt" "$work/check-$mode.txt" <<'EOF'
import statistics as s, sys
mode, dwd, check = sys.argv[1], *(
    [float(x) for x in open(p).read().split()] for p in sys.argv[2:])
print(f"{mode}: DWD stage median {s.median(dwd):.2f} s, of which its check {s.median(check):.2f} s")
EOF
done
