#!/usr/bin/env bash
# The lookups benchmark, one command: DAYS days of EVENTS clean events a
# day of region aps1 in the business's shape (`tauc-job sample`'s default
# from 1 M events), layered once and kept between runs; then the lookup
# mix (benches/lookups/queries.py) through Flight SQL (ADBC) against a
# fresh `tauc-job serve` — cold (each query's first run) and warm (p50/p95
# of RUNS) — and the same SQL through DuckDB over the files the manifests
# list, one engine after the other on the same machine; prints the table.
#
#   benches/lookups.sh [DAYS] [EVENTS] [PROFILE]      (defaults 30 1000000 fast)
#
# Environment: SKIP_BUILD=1 (use target/PROFILE as it is), RUNS=20,
# THREADS=2 (DuckDB threads, serve's parallelism), RELAYER=1 (layer the
# kept raw data again, e.g. after a change of the file layout),
# LOOKUPS_DATA=DIR (default ~/.cache/tauc/bench/lookups-{DAYS}d-{EVENTS}).
# The warehouse is on the local disk for both engines (DuckDB reads no
# S3 without an extension from outside this project's registries).
set -euo pipefail
export RUST_LOG=${RUST_LOG:-warn}
cd "$(dirname "$0")/.."
days=${1:-30}
events=${2:-1000000}
profile=${3:-fast}
runs=${RUNS:-20}
threads=${THREADS:-2}
first=2024-05-01
source benches/lib.sh
export PYTHONDONTWRITEBYTECODE=1

scripts/install-test-tools >&2
duck_py=$(benches/compare/install)
adbc_py=$PWD/.tools/py/bin/python
target=${CARGO_TARGET_DIR:-target}
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --profile "$profile" --bin tauc-job >&2
fi
bin=$(realpath "$target/$([ "$profile" = dev ] && echo debug || echo "$profile")/tauc-job")
data=${LOOKUPS_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/tauc/bench/lookups-${days}d-${events}}
mkdir -p "$data"
say() { printf '+ %s\n' "$*" >&2; }
last=$(python3 -c "import datetime as d; print(d.date.fromisoformat('$first') + d.timedelta(days=$days - 1))")
store=(--raw-root "$data/raw" --warehouse "$data/wh")

if [ ! -f "$data/.sampled" ]; then
  rm -rf "$data/raw" "$data/wh"
  say "$bin" sample --date "$first" --days "$days" --events-per-day "$events" --regions aps1 "${store[@]}"
  /usr/bin/time -f "sample: %e s, %M KiB peak" "$bin" sample --date "$first" --days "$days" \
    --events-per-day "$events" --regions aps1 "${store[@]}" >&2
  touch "$data/.sampled"
fi
if [ ! -f "$data/.layered" ] || [ -n "${RELAYER:-}" ]; then
  rm -rf "$data/wh/ods" "$data/wh/dwd" "$data/wh/_tauc"
  # five days a run: a month in one run shuffles and spills ~30 GB
  start=$(date +%s)
  for ((d = 0; d < days; d += 5)); do
    from=$(python3 -c "import datetime as t; print(t.date.fromisoformat('$first') + t.timedelta(days=$d))")
    to=$(python3 -c "import datetime as t; print(min(t.date.fromisoformat('$last'), t.date.fromisoformat('$from') + t.timedelta(days=4)))")
    say "$bin" submit layering --date "$from" --to "$to" --region aps1 "${store[@]}"
    /usr/bin/time -f "layering $from..$to: %e s, %M KiB peak" "$bin" submit layering --date "$from" --to "$to" \
      --region aps1 "${store[@]}" >&2
  done
  echo "# layering: $(( $(date +%s) - start )) s" >&2
  touch "$data/.layered"
fi

work=$(mktemp -d)
serve_pid=
trap '[ -n "$serve_pid" ] && kill $serve_pid 2>/dev/null; rm -rf "$work"' EXIT
cat >"$work/spec.json" <<JSON
{"first": "$first", "days": $days, "runs": $runs, "threads": $threads, "warehouse": "$data/wh", "picks": {}}
JSON
say "picking the looked-up values (DuckDB, not timed)"
picks=$("$duck_py" benches/lookups/run_queries.py picks "$work/spec.json")
echo "# picks: $picks" >&2
python3 - "$work/spec.json" "$picks" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1])); spec["picks"] = json.loads(sys.argv[2])
json.dump(spec, open(sys.argv[1], "w"))
PY
python3 - "$data/wh" >"$work/sizes.json" <<'PY'
import glob, json, os, sys
out = {}
for t in ["dwd_trk_event_di", "dwd_mon_cors_error_di"]:
    total = 0
    for s in glob.glob(f"{sys.argv[1]}/dwd/{t}/dt=*/region=*/_SUCCESS"):
        d = os.path.dirname(s)
        total += sum(os.path.getsize(f"{d}/{f}") for f in json.load(open(s))["files"])
    out[t] = total
print(json.dumps(out))
PY
echo "# committed bytes: $(cat "$work/sizes.json")" >&2

# every engine starts from the same warm page cache
find "$data/wh/dwd" -type f -exec cat {} + >/dev/null
pw=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
echo "$pw" | "$bin" users add bench --users "$work/users.toml" >&2
port=$(free_port)
say "$bin" serve --bind "127.0.0.1:$port" --users "$work/users.toml" --parallelism "$threads" "${store[@]}"
"$bin" serve --bind "127.0.0.1:$port" --users "$work/users.toml" --parallelism "$threads" \
  "${store[@]}" >"$work/serve.log" 2>&1 &
serve_pid=$!
wait_port "$port"
say "tauc: the mix through ADBC, $runs warm runs each"
"$adbc_py" benches/lookups/run_queries.py tauc "$work/spec.json" "$port" bench "$pw" >"$work/tauc.json"
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; serve_pid=
say "DuckDB: the same SQL over the committed files, $threads threads"
"$duck_py" benches/lookups/run_queries.py duckdb "$work/spec.json" >"$work/duckdb.json"
echo "# $days days × $events events/day, aps1, $(nproc) cores; profile $profile; $(date -u +%FT%TZ)"
python3 benches/lookups/report.py "$work/tauc.json" "$work/duckdb.json" "$work/sizes.json"
if [ -n "${KEEP:-}" ]; then cp "$work"/*.json "$data/"; fi
