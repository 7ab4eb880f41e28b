# Shared set-up of the scripted benches; sourced, not run.

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (10 s at most) until 127.0.0.1:PORT accepts connections.
wait_port() {
  for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done
  echo "port $1 never opened" >&2
  exit 1
}

#   bench_setup PROFILE
#
# Installs the test tools, builds `tauc-job` with PROFILE, starts s3s-fs on
# a free port over a temp dir (stopped and removed on exit) with a bucket
# `bench`, exports the credentials, and sets:
#   bin    the tauc-job binary
#   work   the temp dir (the working directory from here on)
#   flags  the store flags (--raw-root s3://bench/raw --warehouse s3://bench/wh …)
bench_setup() {
  local profile=$1 target dir port
  scripts/install-test-tools
  target=${CARGO_TARGET_DIR:-target}
  dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
  cargo build --profile "$profile" --bin tauc-job >&2
  bin=$(realpath "$target/$dir/tauc-job")
  work=$(mktemp -d)
  mkdir -p "$work/s3/bench"
  port=$(free_port)
  .tools/bin/s3s-fs --host 127.0.0.1 --port "$port" --access-key bench --secret-key bench-secret "$work/s3" >"$work/s3s.log" 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
  wait_port "$port"
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1
  flags=(--raw-root s3://bench/raw --warehouse s3://bench/wh --s3-endpoint "http://127.0.0.1:$port" --s3-allow-http)
  cd "$work"
}
