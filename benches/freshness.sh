#!/usr/bin/env bash
# Freshness at the business's rate: the whole chain on this machine —
# collector → tansu → uploader → s3s-fs — fed at EVENTS_PER_S for MINUTES
# with a follower beside it running incremental `submit daily` micro-batches
# for yesterday and today (UTC), and `tauc-job serve` answering an ADBC
# Flight SQL client. A canary event every 10 s is timed from the collector's
# 204 until `dwd_trk_event_di` shows it through serve. Then, with
# --compare-full N, N full re-runs of the whole day at the same cadence
# into a warehouse of their own: the baseline of the S3 request counts.
# S3 requests are counted by a proxy in front of s3s-fs, one port per
# client (benches/freshness/s3count.py).
#
#   benches/freshness.sh [--compare-full N] [MINUTES] [EVENTS_PER_S] [PROFILE]
#
# Defaults: 30 minutes, 1160 events/s (100 M a day), profile fast, no
# baseline. Environment: FOLLOW_EVERY (seconds between micro-batch starts,
# 30), POLL_EVERY (seconds between canary queries, 3), DRAIN (longest wait
# for the last canaries after the feed stops, 600 s), FOLLOWER (loop: a
# loop of `submit daily --incremental`; follow: `tauc-job follow`),
# SKIP_BUILD=1, KEEP=1 (keep the S3 data and logs in the temp dir).
# Raw results go to $TAUC_BENCH_DIR/freshness/RUN (default
# ~/.cache/tauc/bench/freshness/RUN), kept between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

full=0
if [ "${1:-}" = --compare-full ]; then
  full=${2:?--compare-full needs a number of batches}
  shift 2
fi
minutes=${1:-30}
rate=${2:-1160}
profile=${3:-fast}
every=${FOLLOW_EVERY:-30}
poll_every=${POLL_EVERY:-3}
drain=${DRAIN:-600}
follower=${FOLLOWER:-loop}
for n in "$minutes" "$rate" "$full" "$every" "$drain"; do
  [[ $n =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "freshness.sh: '$n' is not a number (usage: benches/freshness.sh [--compare-full N] [MINUTES] [EVENTS_PER_S] [PROFILE])" >&2; exit 2; }
done
case $follower in loop | follow) ;; *) echo "freshness.sh: FOLLOWER must be loop or follow, not '$follower'" >&2; exit 2 ;; esac

repo=$PWD
py=$repo/.tools/py/bin/python
here=$repo/benches/freshness

scripts/install-test-tools >&2
if [ "${SKIP_BUILD:-}" != 1 ]; then
  cargo build --profile "$profile" --bins >&2
fi
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
bins=$(realpath "${CARGO_TARGET_DIR:-target}/$dir")
for b in tauc-job tauc-collector tauc-uploader; do
  [ -x "$bins/$b" ] || { echo "freshness.sh: $bins/$b is missing (cargo build --profile $profile --bins)" >&2; exit 2; }
done
"$py" -c 'import adbc_driver_flightsql' 2>/dev/null ||
  { echo "freshness.sh: $py has no adbc_driver_flightsql (scripts/install-test-tools installs it)" >&2; exit 2; }
bench_netns
run_id=$(date -u +%Y%m%dT%H%M%SZ)
out=${TAUC_BENCH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tauc/bench}/freshness/$run_id
# not passed on: tauc-job refuses TAUC_* variables it does not know
unset TAUC_BENCH_DIR
mkdir -p "$out/batches"

work=$(mktemp -d)
names=() pids=()
cleanup() {
  local i
  [ -z "${follower_pid:-}" ] || kill -- -"$follower_pid" 2>/dev/null || true
  # newest first, each gone before the next is stopped: the uploader
  # flushes into a live S3 (with S3 gone it retries until it is killed)
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[$i]}" 2>/dev/null || continue
    for _ in $(seq 150); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.2; done
    kill -9 "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  cp "$work"/*.log "$out/" 2>/dev/null || true
  if [ "${KEEP:-}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# started NAME LOG: records the last background job as component NAME
started() { names+=("$1"); pids+=($!); logs+=("$2"); }
logs=()
# Exits naming the first component that died, with its log's tail.
check_alive() {
  local i
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "freshness.sh: ${names[$i]} exited early; the tail of ${logs[$i]}:" >&2
      tail -n 30 "${logs[$i]}" >&2
      exit 1
    fi
  done
}
wait_up() { # PORT NAME
  for _ in $(seq 600); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; check_alive; sleep 0.05; done
  echo "freshness.sh: $2 never opened port $1" >&2
  check_alive
  exit 1
}
counts() { curl -sf "http://127.0.0.1:$control/counts"; }

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1

# --- the store, counted per client -------------------------------------------
s3port=$(free_port)
mkdir -p "$work/s3/bench"
.tools/bin/s3s-fs --host 127.0.0.1 --port "$s3port" --access-key bench --secret-key bench-secret "$work/s3" >"$work/s3s.log" 2>&1 &
started s3s-fs "$work/s3s.log"
control=$(free_port)
declare -A port
listen=()
for c in uploader follower serve full; do
  port[$c]=$(free_port)
  listen+=(--listen "$c=${port[$c]}")
done
python3 "$here/s3count.py" --upstream "$s3port" --control "$control" "${listen[@]}" >"$work/s3count.log" 2>&1 &
started s3count "$work/s3count.log"
wait_up "$s3port" s3s-fs
wait_up "$control" s3count
store() { # CLIENT WAREHOUSE: the store flags of a client through its proxy port
  echo --raw-root s3://bench/raw --warehouse "s3://bench/$2" --s3-endpoint "http://127.0.0.1:${port[$1]}" --s3-allow-http
}

# DIM tables and funnels as `tauc-job sample` writes them (its raw day goes
# to a root of its own, outside the measured one); straight to s3s-fs
today=$(date -u +%F)
for wh in wh $([ "$full" != 0 ] && echo wh-full); do
  "$bins/tauc-job" sample --date "$today" --days 1 --events-per-day 10 --regions aps1 \
    --raw-root s3://bench/sample --warehouse "s3://bench/$wh" \
    --s3-endpoint "http://127.0.0.1:$s3port" --s3-allow-http >"$work/sample.log" 2>&1 ||
    { echo "freshness.sh: tauc-job sample failed:" >&2; tail -n 20 "$work/sample.log" >&2; exit 1; }
done

# --- the chain -----------------------------------------------------------------
kport=$(free_port)
.tools/bin/tansu broker --storage-engine memory://tansu/ \
  --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" >"$work/tansu.log" 2>&1 &
started tansu "$work/tansu.log"
wait_up "$kport" tansu
cport=$(free_port)
"$bins/tauc-collector" --bind "127.0.0.1:$cport" --env uat --region aps1 --spool-dir "$work/spool" \
  --kafka-brokers "127.0.0.1:$kport" >"$work/collector.log" 2>&1 &
started collector "$work/collector.log"
wait_up "$cport" collector
uport=$(free_port)
"$bins/tauc-uploader" --kafka-brokers "127.0.0.1:$kport" --env uat --region aps1 \
  --metrics-bind "127.0.0.1:$uport" --raw-root s3://bench/raw --s3-endpoint "http://127.0.0.1:${port[uploader]}" --s3-allow-http \
  >"$work/uploader.log" 2>&1 &
started uploader "$work/uploader.log"
wait_up "$uport" uploader

# --- the SQL surface, with one user ----------------------------------------------
head -c 24 /dev/urandom | base64 >"$work/password"
"$bins/tauc-job" users add bench --users "$work/users.toml" <"$work/password" >"$work/users.log" 2>&1 ||
  { echo "freshness.sh: tauc-job users add failed:" >&2; cat "$work/users.log" >&2; exit 1; }
sport=$(free_port)
# shellcheck disable=SC2046
"$bins/tauc-job" serve --bind "127.0.0.1:$sport" --users "$work/users.toml" $(store serve wh) >"$work/serve.log" 2>&1 &
started serve "$work/serve.log"
wait_up "$sport" serve

# --- the follower -------------------------------------------------------------------
# One micro-batch: PHASE N CLIENT WAREHOUSE [extra flags]. Records its
# wall time, CPU and peak RSS, the counters of the proxy before and after,
# and the run's --metrics-file, under $out/batches/PHASE-N.*
run_batch() {
  local phase=$1 n=$2 client=$3 wh=$4 f=$out/batches/$1-$2 rc=0
  shift 4
  counts >"$f.before.json"
  local start
  start=$(date +%s.%N)
  # shellcheck disable=SC2046
  /usr/bin/time -f '%e %U %S %M' -o "$f.time" "$bins/tauc-job" submit daily \
    --date "$(date -u -d yesterday +%F)" --to "$(date -u +%F)" --region aps1 $(store "$client" "$wh") \
    --metrics-file "$f.prom" "$@" >"$f.out" 2>"$f.log" || rc=$?
  counts >"$f.after.json"
  echo "$phase $n $start $(date +%s.%N) $rc" >>"$out/batches.txt"
  [ "$rc" = 0 ] || { echo "freshness.sh: micro-batch $phase-$n failed (exit $rc); the tail of $f.log:" >&2; tail -n 20 "$f.log" >&2; }
}

# Micro-batches at the cadence (a batch longer than it is followed at once)
# until the stop file exists: the stand-in for `tauc-job follow`.
follower_loop() {
  local n=0 next failed=0
  next=$(date +%s)
  while [ ! -e "$work/stop-follower" ]; do
    n=$((n + 1))
    run_batch inc "$n" follower wh --incremental
    # three failures in a row end the run (check_alive names the follower)
    if [ "$(tail -n 1 "$out/batches.txt" | cut -d' ' -f5)" = 0 ]; then failed=0; else failed=$((failed + 1)); fi
    [ "$failed" -lt 3 ] || exit 1
    next=$((next + every))
    while [ "$(date +%s)" -lt "$next" ] && [ ! -e "$work/stop-follower" ]; do sleep 0.5; done
    [ "$(date +%s)" -gt "$next" ] && next=$(date +%s)
  done
}

# `tauc-job follow` (issue 28) in place of the loop. Its /metrics is read
# every second; when a batch ends (tauc_follow_batches_total moves) the same
# files as the loop's are written: wall time and rows from its last_batch
# gauges, CPU from /proc (the service's CPU since the previous batch ended),
# the proxy's counters at the previous batch's end and at this one's.
follower_follow() {
  local mport fpid n=0 seen=0 tick cpu prev_cpu=0 m total ok ok_seen=0 f end wall
  mport=$(free_port)
  tick=$(getconf CLK_TCK)
  # shellcheck disable=SC2046
  "$bins/tauc-job" follow --every "${every}s" --region aps1 --metrics-bind "127.0.0.1:$mport" \
    $(store follower wh) >"$work/follow.log" 2>&1 &
  fpid=$!
  counts >"$out/batches/inc-1.before.json"
  metric() { awk -v m="$1" 'index($1, m) == 1 { s += $2 } END { print s + 0 }' <<<"$m"; }
  while kill -0 "$fpid" 2>/dev/null; do
    sleep 1
    m=$(curl -sf "http://127.0.0.1:$mport/metrics") || continue
    total=$(metric tauc_follow_batches_total)
    [ "${total%.*}" -gt "$seen" ] || continue
    seen=${total%.*} n=$((n + 1)) f=$out/batches/inc-$n end=$(date +%s.%N)
    counts >"$f.after.json"
    cp "$f.after.json" "$out/batches/inc-$((n + 1)).before.json"
    echo "$m" >"$f.metrics"
    cpu=$(awk '{ print $14 + $15 }' "/proc/$fpid/stat")
    wall=$(metric tauc_follow_last_batch_seconds)
    echo "$wall $(echo "($cpu - $prev_cpu) / $tick" | bc -l) 0 $(awk '/VmHWM/ { print $2 }' "/proc/$fpid/status")" >"$f.time"
    prev_cpu=$cpu
    echo "tauc_layering_last_run_valid_rows $(metric tauc_follow_last_batch_rows)" >"$f.prom"
    ok=$(metric 'tauc_follow_batches_total{outcome="ok"}')
    echo "inc $n $(echo "$end - $wall" | bc -l) $end $([ "${ok%.*}" -gt "$ok_seen" ] && echo 0 || echo 1)" >>"$out/batches.txt"
    ok_seen=${ok%.*}
  done
  echo "tauc-job follow exited; the tail of its log:" >&2
  tail -n 20 "$work/follow.log" >&2
  exit 1
}

# in a process group of its own (set -m), so that one kill ends the loop
# and the batch it is running
set -m
"follower_$follower" >"$work/follower.log" 2>&1 &
follower_pid=$!
set +m
started follower "$work/follower.log"

# --- the canaries' reader and the load ---------------------------------------------
"$py" "$here/poll.py" --port "$sport" --user bench --password-file "$work/password" --run-id "$run_id" \
  --since "$(date -u -d yesterday +%F)" --every "$poll_every" --out "$out" --done "$work/feed-done" >"$work/poll.log" 2>&1 &
poller=$!
started poller "$work/poll.log"
python3 "$here/feed.py" --port "$cport" --rate "$rate" --out "$out" --run-id "$run_id" >"$work/feed.log" 2>&1 &
feeder=$!
started feed "$work/feed.log"
feed_start=$(date +%s.%N)

echo "freshness: $run_id, $minutes min at $rate events/s, follower $follower every ${every}s, $profile build, $(nproc) cores; raw results in $out" >&2
end=$(($(date +%s) + ${minutes%.*} * 60))
while [ "$(date +%s)" -lt "$end" ]; do
  check_alive
  sleep 5
  if [ $((($(date +%s) - ${feed_start%.*}) % 60)) -lt 5 ]; then
    echo "  $(date -u +%T) batches $(cat "$out/batches.txt" 2>/dev/null | grep -c '^inc'), canaries seen $(($(wc -l <"$out/seen.csv") - 1))/$(($(wc -l <"$out/canaries.csv") - 1))" >&2
  fi
done
check_alive
kill -TERM "$feeder"
wait "$feeder" || { echo "freshness.sh: the feed failed:" >&2; tail -n 20 "$work/feed.log" >&2; exit 1; }
feed_end=$(date +%s.%N)
touch "$work/feed-done"
echo "  feed stopped; waiting up to ${drain}s for the last canaries" >&2
deadline=$(($(date +%s) + drain))
while kill -0 "$poller" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 1; done
kill "$poller" 2>/dev/null || true
touch "$work/stop-follower"
echo "  stopping the follower after its batch" >&2
# wait for the follower's current batch (a follow service is stopped at once)
if [ "$follower" = follow ]; then kill -- -"$follower_pid" 2>/dev/null || true; fi
for _ in $(seq 1200); do kill -0 "$follower_pid" 2>/dev/null || break; sleep 0.5; done
curl -sf "http://127.0.0.1:$uport/metrics" >"$out/uploader.prom" || true

# --- the baseline: the whole day again at the same cadence --------------------------
for ((n = 1; n <= full; n++)); do
  echo "  full re-run $n/$full" >&2
  t=$(date +%s)
  run_batch full "$n" full wh-full
  while [ "$(date +%s)" -lt $((t + every)) ] && [ "$n" -lt "$full" ]; do sleep 0.5; done
done
counts >"$out/counts.json"
# CPU seconds of each long-running component over the whole run
for i in "${!pids[@]}"; do
  t=$(ps -o times= -p "${pids[$i]}" 2>/dev/null | tr -d ' ') || true # gone: the feed, the reader
  [ -z "$t" ] || echo "${names[$i]} $t"
done >"$out/cpu.txt"
cat >"$out/run.json" <<JSON
{"run_id": "$run_id", "minutes": $minutes, "rate": $rate, "profile": "$profile", "follower": "$follower",
 "every": $every, "poll_every": $poll_every, "feed_start": $feed_start, "feed_end": $feed_end, "cores": $(nproc)}
JSON
python3 "$here/report.py" "$out" | tee "$out/report.txt"
