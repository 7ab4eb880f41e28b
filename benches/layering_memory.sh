#!/usr/bin/env bash
# Wall time, CPU time and peak RSS of the layering job, in-process and on a
# scheduler + two executors, on the same sample data in one run.
#
#   benches/layering_memory.sh [SF] [DAYS] [PROFILE] [STORE]
#
# SF = millions of clean events per region and day (in ~50-line files, as
# the collectors write them; 0.1 = 100 000), DAYS collection days of one
# region (aps1), PROFILE a cargo profile (fast: dependencies optimised),
# STORE `s3` (a local s3s-fs) or `local` (the local disk). Each executor
# gets --memory-limit ${EXECUTOR_MEMORY:-2G}; tauc-job in-process gets
# ${INPROCESS_MEMORY:-4G}. LINES_PER_FILE (default 50) sets the file size:
# LINES_PER_FILE=1 with SF 0.2 makes a 200 000-object day folder. Prints one
# line per process (SKIP_INPROCESS=1: the cluster only):
#   mode process wall_s cpu_s peak_rss_mib
set -euo pipefail
cd "$(dirname "$0")/.."
sf=${1:-0.1}
days=${2:-1}
profile=${3:-fast}
store=${4:-s3}
source benches/lib.sh
bench_setup "$profile"
root=$OLDPWD
tdir=$(dirname "$bin")
(cd "$root" && cargo build --profile "$profile" --bin tauc-scheduler --bin tauc-executor >&2)
events=$(python3 -c "print(int($sf * 1000000))")
if [ "$store" = local ]; then
  flags=(--raw-root "$work/raw" --warehouse "$work/wh")
fi
date0=2024-06-18
last=$(python3 -c "import datetime as d; print(d.date(2024,6,18)+d.timedelta(days=$days-1))")
echo "# sf=$sf days=$days events/day=$events profile=$profile store=$store $(nproc) cores $(free -g | awk '/Mem/{print $2}') GiB" >&2
"$bin" sample --date "$date0" --days "$days" --events-per-day "$events" --regions aps1 --lines-per-file "${LINES_PER_FILE:-50}" "${flags[@]}" >&2

# RSS high-water mark and CPU seconds of a live process, from /proc.
proc_stats() {
  local pid=$1 hz
  hz=$(getconf CLK_TCK)
  awk -v hz="$hz" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$pid/stat"
  printf " "
  awk '/VmHWM/{printf "%.0f", $2 / 1024}' "/proc/$pid/status"
}

# tauc-job under /usr/bin/time: "wall cpu peak_mib"
timed_job() {
  /usr/bin/time -f '%e %U %S %M' -o "$work/time.txt" "$bin" "$@" >"$work/job.out" 2>"$work/job.err" || {
    cat "$work/job.err" >&2
    return 1
  }
  awk '{printf "%s %.1f %.0f\n", $1, $2 + $3, $4 / 1024}' "$work/time.txt"
}

wh_reset() {
  if [ "$store" = local ]; then rm -rf "$work/wh/ods" "$work/wh/dwd"; else rm -rf "$work/s3/bench/wh/ods" "$work/s3/bench/wh/dwd"; fi
}

job=(submit layering --date "$date0" --to "$last" --region aps1 "${flags[@]}")
if [ -z "${SKIP_INPROCESS:-}" ]; then
  echo "in-process tauc-job $(timed_job "${job[@]}" --memory-limit "${INPROCESS_MEMORY:-4G}")"
  grep -E "committed" "$work/job.out" >&2 || true
fi

wh_reset
if [ "$store" = s3 ]; then
  # the scheduler and executors take S3 settings from the environment only
  export TAUC_S3_ENDPOINT=${flags[5]} TAUC_S3_ALLOW_HTTP=true
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$tdir/tauc-scheduler" --bind "127.0.0.1:$port" --external-host 127.0.0.1 >"$work/scheduler.log" 2>&1 &
sched=$!
for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
execs=()
for i in 1 2; do
  ports=($(python3 -c 'import socket
for _ in range(3):
    s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'))
  "$tdir/tauc-executor" --scheduler-host 127.0.0.1 --scheduler-port "$port" --bind-host 127.0.0.1 \
    --external-host 127.0.0.1 --port "${ports[0]}" --grpc-port "${ports[1]}" --health-port "${ports[2]}" \
    --vcores 2 --memory-limit "${EXECUTOR_MEMORY:-2G}" --work-dir "$work" >"$work/executor-$i.log" 2>&1 &
  execs+=($!)
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:${ports[2]}/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done
trap 'kill $server $sched ${execs[*]} 2>/dev/null || true; rm -rf "$work"' EXIT
start=$(date +%s.%N)
echo "cluster tauc-job $(timed_job "${job[@]}" --scheduler "df://127.0.0.1:$port")"
wall=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
grep -E "committed" "$work/job.out" >&2 || true
echo "cluster scheduler $wall $(proc_stats "$sched")"
for i in 0 1; do echo "cluster executor-$((i + 1)) $wall $(proc_stats "${execs[$i]}")"; done
