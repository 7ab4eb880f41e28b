# Shared set-up of the scripted benches; sourced, not run.

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (10 s at most) until 127.0.0.1:PORT accepts connections.
wait_port() {
  for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done
  echo "port $1 never opened" >&2
  exit 1
}

# The scripts' arguments as they were called, for bench_netns.
bench_argv=("$@")

# s3s-fs, the benches' S3 server, does not set TCP_NODELAY on its
# connections: a response written in two segments holds the second until
# the client's delayed ACK, ~40 ms a request. A `submit reports` of one
# business-shaped day took 9.4 s against it, 2.2 s with loopback ACKs sent
# at once (and 0.9 s on the local disk; benches/RESULTS.md). A server
# that sets TCP_NODELAY does not stall like that (S3's own latency is
# another matter: the benches count requests for it), so a bench that
# talks to s3s-fs calls this after installing and building (which may
# need the network): it runs the script again in a network namespace of
# its own whose loopback routes ACK at once (`quickack 1`). Root only, as
# the tests' namespaces; elsewhere, or with BENCH_DELAYED_ACK=1, the
# host's loopback as it is.
bench_netns() {
  [ "${BENCH_IN_NETNS:-}" = 1 ] && return 0
  [ "${BENCH_DELAYED_ACK:-}" != 1 ] && [ "$(id -u)" = 0 ] || return 0
  echo "# in a network namespace whose loopback ACKs at once (BENCH_DELAYED_ACK=1: not)" >&2
  # shellcheck disable=SC2016
  exec unshare --net bash -c '
    set -e
    ip link set lo up
    for dst in 127.0.0.0/8 127.0.0.1; do
      ip route change local "$dst" dev lo table local proto kernel scope host src 127.0.0.1 quickack 1
    done
    BENCH_IN_NETNS=1 exec "$@"' bench "$PWD/benches/$(basename "$0")" "${bench_argv[@]}"
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
  bench_netns
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
