#!/usr/bin/env bash
# A multi-node Ray cluster on this machine, for development:
#   cluster/local-cluster.sh start [WORKERS=2] [CPUS_PER_WORKER=1]
#   export RAY_AUTH_MODE=token      # Ray 2.60's clients need it for a `ray start` head
#   resnet-batch submit --address http://127.0.0.1:8265 --wait -- label examples/images --output /tmp/out --weights none
#   cluster/local-cluster.sh status
#   cluster/local-cluster.sh stop
# `submit` needs the job server: pip install -e ".[submit]".
# `start` returns only when every node has joined (or fails with the failing node's log);
# `stop` leaves nothing behind that a later job could join. Each node is a separate raylet
# with its own object store, so node loss can be tried by killing one worker's process
# group (its pid is in $STATE_DIR/worker-N.pid).
set -euo pipefail
STATE_DIR=${STATE_DIR:-/tmp/resnet-batch-local-cluster}
HEAD_PORT=${HEAD_PORT:-6380}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
JOIN_TIMEOUT_S=${JOIN_TIMEOUT_S:-90}
export RAY_AUTH_MODE=token

fail() {
  echo "local-cluster: $1" >&2
  if [ -n "${2:-}" ] && [ -e "$2" ]; then
    echo "--- last lines of $2:" >&2
    tail -n 15 "$2" >&2
  fi
  stop
  exit 1
}

agent_ports() {  # each node's agents need ports of their own on one machine
  python -c '
import socket
sockets = [socket.socket() for _ in range(4)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
a, b, c, d = (s.getsockname()[1] for s in sockets)
print(f"--dashboard-agent-listen-port={a} --dashboard-agent-grpc-port={b} --metrics-export-port={c} --runtime-env-agent-port={d}")'
}

job_server_answers() {  # any HTTP answer (401 without a token included) means it listens
  for _ in $(seq 20); do
    python -c '
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/version", timeout=2)
except urllib.error.HTTPError:
    pass' "$DASHBOARD_PORT" 2>/dev/null && return 0
    sleep 0.5
  done
  return 1
}

alive_nodes() {
  python - "$HEAD_PORT" <<'EOF'
import sys

import ray

ray.init(address=f"127.0.0.1:{sys.argv[1]}", logging_level="ERROR", log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]), int(ray.cluster_resources().get("CPU", 0)))
EOF
}

start() {
  local workers=${1:-2} cpus=${2:-1}
  if ls "$STATE_DIR"/*.pid >/dev/null 2>&1; then
    echo "local-cluster: already started ($STATE_DIR); run: $0 stop" >&2
    exit 2
  fi
  mkdir -p "$STATE_DIR"
  ray get-auth-token --generate >/dev/null 2>&1 || true
  setsid ray start --head --port="$HEAD_PORT" --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
    --num-cpus=0 $(agent_ports) --block >"$STATE_DIR/head.log" 2>&1 &
  echo $! >"$STATE_DIR/head.pid"
  local joined=""
  for _ in $(seq "$JOIN_TIMEOUT_S"); do
    kill -0 "$(cat "$STATE_DIR/head.pid")" 2>/dev/null || fail "the head stopped while starting" "$STATE_DIR/head.log"
    if joined=$(alive_nodes 2>/dev/null); then break; fi
    sleep 1
  done
  [ -n "$joined" ] || fail "the head did not start within ${JOIN_TIMEOUT_S}s" "$STATE_DIR/head.log"
  # One worker at a time: nodes started together on one machine race for the same free ports.
  local want=$((workers + 1)) nodes=1
  for i in $(seq "$workers"); do
    setsid ray start --address="127.0.0.1:$HEAD_PORT" --num-cpus="$cpus" $(agent_ports) --block \
      >"$STATE_DIR/worker-$i.log" 2>&1 &
    echo $! >"$STATE_DIR/worker-$i.pid"
    local joined_at=""
    for _ in $(seq "$JOIN_TIMEOUT_S"); do
      kill -0 "$(cat "$STATE_DIR/worker-$i.pid")" 2>/dev/null \
        || fail "worker $i stopped before joining" "$STATE_DIR/worker-$i.log"
      read -r nodes _ <<<"$(alive_nodes 2>/dev/null || echo "0 0")"
      if [ "$nodes" -ge $((i + 1)) ]; then joined_at=$i; break; fi
      sleep 1
    done
    [ -n "$joined_at" ] || fail "worker $i did not join within ${JOIN_TIMEOUT_S}s ($nodes of $want nodes up)" \
      "$STATE_DIR/worker-$i.log"
  done
  echo "up: $want nodes (head + $workers workers, $((workers * cpus)) CPUs); Ray address 127.0.0.1:$HEAD_PORT"
  if job_server_answers; then
    echo "job server: http://127.0.0.1:$DASHBOARD_PORT (export RAY_AUTH_MODE=token before resnet-batch submit)"
  else
    echo "job server: not answering at http://127.0.0.1:$DASHBOARD_PORT (install ray[default]: pip install -e '.[submit]')"
  fi
}

status() {
  if ! ls "$STATE_DIR"/*.pid >/dev/null 2>&1; then
    echo "not started"
    return 1
  fi
  local nodes cpus
  if read -r nodes cpus <<<"$(alive_nodes 2>/dev/null)" && [ -n "$nodes" ]; then
    echo "up: $nodes nodes alive, $cpus CPUs; Ray address 127.0.0.1:$HEAD_PORT"
  else
    echo "down: the head at 127.0.0.1:$HEAD_PORT does not answer (run: $0 stop)"
    return 1
  fi
  for pidfile in "$STATE_DIR"/*.pid; do
    local name pid
    name=$(basename "$pidfile" .pid)
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then echo "  $name: running (pid $pid)"; else echo "  $name: stopped"; fi
  done
}

stop() {
  # SIGTERM leaves raylet and GCS running in Ray 2.60: kill each node's process group,
  # workers first, then wait until none of their processes is left.
  for pidfile in $(ls "$STATE_DIR"/worker-*.pid 2>/dev/null) "$STATE_DIR/head.pid"; do
    [ -e "$pidfile" ] || continue
    kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null || true
  done
  for pidfile in "$STATE_DIR"/*.pid; do
    [ -e "$pidfile" ] || continue
    for _ in $(seq 20); do
      pgrep -g "$(cat "$pidfile")" >/dev/null 2>&1 || break
      sleep 0.25
    done
    rm -f "$pidfile"
  done
  # The head recorded itself as this machine's current cluster (what `--address auto` joins).
  local current="${TMPDIR:-/tmp}/ray/ray_current_cluster"
  if [ -e "$current" ] && grep -q ":$HEAD_PORT\$" "$current"; then rm -f "$current"; fi
  echo "stopped"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  status) status ;;
  stop) stop ;;
  *) echo "usage: $0 start [WORKERS] [CPUS_PER_WORKER] | status | stop" >&2; exit 2 ;;
esac
