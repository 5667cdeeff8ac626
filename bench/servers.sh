# Sourced (after bench/lib.sh) by the benches that run servers on loopback ports.
#
#   port                          a free loopback port
#   wait_port PORT                waits (up to 10 s) until something listens on PORT, else exits
#   route_bench ADMIN BACKEND [ARGS...]
#                                 routes host bench.test of the stackpad-proxy whose admin
#                                 listens on ADMIN to 127.0.0.1:BACKEND (ARGS go to `routes set`,
#                                 e.g. --plain-http); uses the caller's $PROXY and $W/token

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "nothing on port $1" >&2; exit 1; }
route_bench() {
  local admin=$1 backend=$2; shift 2
  "$PROXY" routes set --admin 127.0.0.1:$admin --token-file "$W/token" --id bench --host bench.test --service bench "$@" >/dev/null
  "$PROXY" routes switch --admin 127.0.0.1:$admin --token-file "$W/token" --service bench --upstream 127.0.0.1:$backend --skip-health >/dev/null
}
