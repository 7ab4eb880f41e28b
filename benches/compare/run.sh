#!/usr/bin/env bash
# The side-by-side comparison, one command: the same raw files, in one run,
# through tauc in-process, tauc on a scheduler + two executors, DuckDB and
# PySpark local[2]; then check.py (same rows per table and partition) and
# one line per engine with wall time, CPU time, peak RSS and the ratios.
#
#   benches/compare/run.sh [SF] [DAYS] [PROFILE]
#
# SF = millions of clean events per day (aps1, ~50-line files; 0.01 = 10 000),
# DAYS collection days from 2024-06-18, PROFILE the cargo profile of the tauc
# binaries (default fast; dev = target/debug). Environment:
#   SKIP_BUILD=1        use the binaries in target/PROFILE as they are
#   THREADS=2           DuckDB threads, Spark local[N], tauc in-process slots
#   INPROCESS_MEMORY=4G tauc in-process --memory-limit; EXECUTOR_MEMORY=2G each
#   DUCKDB_MEMORY=4GB   DuckDB memory_limit; SPARK_MEMORY=4g driver memory
#   SHAPE=business      the sample's shape (`tauc-job sample --shape`; default
#                       toy below SF 1, business from SF 1)
#   ENGINES="tauc cluster duckdb spark"  which to run (tauc is always run:
#                       it is the reference)
#   WORK=DIR            work folder (default a new one under /var/tmp, removed
#                       at the end unless KEEP=1)
# Prints the exact commands it runs; the engines' logs stay in WORK with KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
sf=${1:-1}
days=${2:-4}
profile=${3:-fast}
threads=${THREADS:-2}
engines=" ${ENGINES:-tauc cluster duckdb spark} "
source benches/lib.sh
export PYTHONDONTWRITEBYTECODE=1

py=$(benches/compare/install)
target=${CARGO_TARGET_DIR:-target}
tdir="$target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --profile "$profile" --bin tauc-job --bin tauc-scheduler --bin tauc-executor >&2
fi
bin=$(realpath "$tdir/tauc-job")
tdir=$(dirname "$bin")
work=${WORK:-$(mktemp -d -p /var/tmp tauc-compare.XXXXXX)}
mkdir -p "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -z "${KEEP:-}" ] && [ -z "${WORK:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

events=$(python3 -c "print(int($sf * 1000000))")
date0=2024-06-18
last=$(python3 -c "import datetime as d; print(d.date(2024,6,18)+d.timedelta(days=$days-1))")
machine="$(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# sf=$sf days=$days events/day=$events profile=$profile threads=$threads work=$work" >&2
echo "# machine: $machine" >&2

say() { printf '+ %s\n' "$*" >&2; }
shape=(${SHAPE:+--shape "$SHAPE"})
say "$bin" sample --date "$date0" --days "$days" --events-per-day "$events" --regions aps1 --lines-per-file 50 "${shape[@]}" --raw-root "$work/raw" --warehouse "$work/wh-inprocess"
"$bin" sample --date "$date0" --days "$days" --events-per-day "$events" --regions aps1 --lines-per-file 50 "${shape[@]}" \
  --raw-root "$work/raw" --warehouse "$work/wh-inprocess" >&2
mkdir -p "$work/wh-cluster" "$work/out"
cp -r "$work/wh-inprocess/dim" "$work/wh-cluster/"
dim="$work/wh-inprocess/dim/dim_user"
# every engine starts from the same warm page cache
find "$work/raw" -type f -exec cat {} + >/dev/null

# Sums the RSS of a process tree every 0.2 s until its root exits; prints
# "peak_rss_mib cpu_s" (CPU: the last seen utime+stime of every process of
# the tree, a lower bound that also counts children nobody waited for).
cat >"$work/treemon.py" <<'EOF'
import os, sys, time
root = int(sys.argv[1]); page = os.sysconf("SC_PAGE_SIZE"); hz = os.sysconf("SC_CLK_TCK")
peak, cpu = 0, {}
while os.path.exists(f"/proc/{root}"):
    kids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    st = f.read().rsplit(")", 1)[1].split()
                kids.setdefault(int(st[1]), []).append((int(p), int(st[11]) + int(st[12])))
            except OSError:
                pass
    todo, tree = [root], []
    while todo:
        p = todo.pop()
        for c, t in kids.get(p, []):
            tree.append(c); todo.append(c); cpu[c] = t
    rss = 0
    for p in [root] + tree:
        try:
            with open(f"/proc/{p}/statm") as f:
                rss += int(f.read().split()[1]) * page
        except OSError:
            pass
    peak = max(peak, rss)
    time.sleep(0.2)
print(f"{peak / 2**20:.0f} {sum(cpu.values()) / hz:.1f}")
EOF

# timed NAME CMD...: runs CMD under /usr/bin/time; sets REPLY to
# "wall cpu peak_mib" (CPU and peak RSS: the larger of /usr/bin/time's,
# which counts the children it waited for, and the process tree's sampled).
timed() {
  local name=$1 t
  shift
  say "$@"
  /usr/bin/time -f '%e %U %S %M' -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  t=$!
  python3 "$work/treemon.py" "$t" >"$work/$name.tree" &
  local mon=$!
  if ! wait "$t"; then
    echo "$name failed:" >&2
    tail -40 "$work/$name.err" >&2
    return 1
  fi
  wait "$mon"
  REPLY=$(paste -d' ' "$work/$name.time" "$work/$name.tree" |
    awk '{cpu = $2 + $3; if ($6 > cpu) cpu = $6; rss = $4 / 1024; if ($5 > rss) rss = $5; printf "%s %.1f %.0f\n", $1, cpu, rss}')
}

declare -A result
job=(submit layering --date "$date0" --to "$last" --region aps1 --raw-root "$work/raw" --lateness-days 2)

timed tauc "$bin" "${job[@]}" --warehouse "$work/wh-inprocess" --parallelism "$threads" --memory-limit "${INPROCESS_MEMORY:-4G}"
result[tauc]=$REPLY
grep -E "committed" "$work/tauc.out" >&2 || true

if [[ $engines == *" cluster "* ]]; then
  # RSS high-water mark (MiB) and CPU seconds of a live process, from /proc.
  proc_stats() {
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$1/stat"
    printf " "
    awk '/VmHWM/{printf "%.0f", $2 / 1024}' "/proc/$1/status"
  }
  port=$(free_port)
  say "$tdir/tauc-scheduler" --bind "127.0.0.1:$port" --external-host 127.0.0.1
  "$tdir/tauc-scheduler" --bind "127.0.0.1:$port" --external-host 127.0.0.1 >"$work/scheduler.log" 2>&1 &
  sched=$!
  pids+=("$sched")
  wait_port "$port"
  execs=()
  for i in 1 2; do
    p1=$(free_port) p2=$(free_port) p3=$(free_port)
    say "$tdir/tauc-executor" --scheduler-host 127.0.0.1 --scheduler-port "$port" --bind-host 127.0.0.1 --external-host 127.0.0.1 \
      --port "$p1" --grpc-port "$p2" --health-port "$p3" --vcores 2 --memory-limit "${EXECUTOR_MEMORY:-2G}" --work-dir "$work"
    "$tdir/tauc-executor" --scheduler-host 127.0.0.1 --scheduler-port "$port" --bind-host 127.0.0.1 \
      --external-host 127.0.0.1 --port "$p1" --grpc-port "$p2" --health-port "$p3" \
      --vcores 2 --memory-limit "${EXECUTOR_MEMORY:-2G}" --work-dir "$work" >"$work/executor-$i.log" 2>&1 &
    execs+=($!)
    pids+=($!)
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$p3/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  done
  before=$(for p in "$sched" "${execs[@]}"; do proc_stats "$p"; echo; done | awk '{s += $1} END {print s}')
  timed cluster "$bin" "${job[@]}" --warehouse "$work/wh-cluster" --scheduler "df://127.0.0.1:$port"
  read -r wall cpu rss <<<"$REPLY"
  stats=$(for p in "$sched" "${execs[@]}"; do proc_stats "$p"; echo; done)
  echo "$stats" | sed 's/^/# cluster process (scheduler, executor-1, executor-2): cpu_s peak_rss_mib: /' >&2
  # the job's own numbers plus the scheduler's and executors' CPU during the
  # run and their RSS high-water marks
  ccpu=$(echo "$stats" | awk '{s += $1} END {print s}')
  crss=$(echo "$stats" | awk '{s += $2} END {print s}')
  result[cluster]=$(awk -v w="$wall" -v c="$cpu" -v r="$rss" -v cc="$ccpu" -v b="$before" -v cr="$crss" \
    'BEGIN {printf "%s %.1f %.0f\n", w, c + cc - b, r + cr}')
  grep -E "committed" "$work/cluster.out" >&2 || true
  for p in "$sched" "${execs[@]}"; do kill "$p" 2>/dev/null || true; done
fi

if [[ $engines == *" duckdb "* ]]; then
  timed duckdb "$py" benches/compare/duckdb_layering.py "$work/raw" "$work/out/duckdb" --env uat --region aps1 \
    --dates "$date0..$last" --lateness-days 2 --threads "$threads" --memory "${DUCKDB_MEMORY:-4GB}" --dim-user "$dim"
  result[duckdb]=$REPLY
  tail -1 "$work/duckdb.err" >&2
fi

if [[ $engines == *" spark "* ]]; then
  venv=$(dirname "$(dirname "$py")")
  export PYSPARK_PYTHON="$py" PYSPARK_DRIVER_PYTHON="$py"
  timed spark "$venv/bin/spark-submit" --master "local[$threads]" --driver-memory "${SPARK_MEMORY:-4g}" \
    --conf spark.ui.showConsoleProgress=false benches/compare/spark_layering.py "$work/raw" "$work/out/spark" \
    --env uat --region aps1 --dates "$date0..$last" --lateness-days 2 --threads "$threads" --dim-user "$dim"
  result[spark]=$REPLY
  grep -hE "^spark " "$work/spark.out" "$work/spark.err" >&2 || true
fi

check=("$py" benches/compare/check.py "tauc=$work/wh-inprocess")
[ -n "${result[cluster]:-}" ] && check+=("tauc-cluster=$work/wh-cluster")
[ -n "${result[duckdb]:-}" ] && check+=("duckdb=$work/out/duckdb")
[ -n "${result[spark]:-}" ] && check+=("spark=$work/out/spark")
say "${check[@]}"
status=0
"${check[@]}" >"$work/check.txt" 2>&1 || status=$?
cat "$work/check.txt"

echo
echo "# sf=$sf days=$days events/day=$events regions=aps1 profile=$profile threads=$threads; $machine"
printf '%-26s %8s %8s %13s %12s %12s\n' engine wall_s cpu_s peak_rss_mib "x tauc(in)" "x tauc(cl)"
tw=$(echo "${result[tauc]}" | cut -d' ' -f1)
cw=$(echo "${result[cluster]:-0 0 0}" | cut -d' ' -f1)
for e in tauc cluster duckdb spark; do
  [ -n "${result[$e]:-}" ] || continue
  case $e in
    tauc) label="tauc in-process" ;;
    cluster) label="tauc scheduler+2 executors" ;;
    duckdb) label="duckdb ($threads threads)" ;;
    spark) label="spark local[$threads]" ;;
  esac
  echo "${result[$e]}" | awk -v l="$label" -v tw="$tw" -v cw="$cw" \
    '{r1 = (tw > 0) ? sprintf("%.2f", $1 / tw) : "-"; r2 = (cw > 0) ? sprintf("%.2f", $1 / cw) : "-";
      printf "%-26s %8s %8s %13s %12s %12s\n", l, $1, $2, $3, r1, r2}'
done
echo "# x tauc(in), x tauc(cl): the engine's wall time over tauc's in-process / cluster wall time (above 1: tauc is faster)"
exit "$status"
