#!/usr/bin/env bash
# A multi-node Ray cluster on this machine, for development:
#   cluster/local-cluster.sh start [WORKERS=2] [CPUS_PER_WORKER=1]   then
#   resnet-batch submit --address http://127.0.0.1:8265 --wait -- label examples/images --output /tmp/out --weights none
#   cluster/local-cluster.sh stop
# Each node is a separate raylet with its own object store, so node loss can be tried by
# killing one worker's process group (its pid is in $STATE_DIR/worker-N.pid).
set -euo pipefail
STATE_DIR=${STATE_DIR:-/tmp/resnet-batch-local-cluster}
export RAY_AUTH_MODE=token

start() {
  local workers=${1:-2} cpus=${2:-1}
  mkdir -p "$STATE_DIR"
  ray get-auth-token --generate >/dev/null 2>&1 || true
  setsid ray start --head --port=6380 --dashboard-host=127.0.0.1 --dashboard-port=8265 --num-cpus=0 \
    --block >"$STATE_DIR/head.log" 2>&1 &
  echo $! >"$STATE_DIR/head.pid"
  for _ in $(seq 60); do ray status --address=127.0.0.1:6380 >/dev/null 2>&1 && break; sleep 1; done
  for i in $(seq "$workers"); do
    setsid ray start --address=127.0.0.1:6380 --num-cpus="$cpus" --block >"$STATE_DIR/worker-$i.log" 2>&1 &
    echo $! >"$STATE_DIR/worker-$i.pid"
  done
  echo "head: 127.0.0.1:6380, dashboard and job server: http://127.0.0.1:8265"
}

stop() {
  # SIGTERM leaves raylet and GCS running in Ray 2.60: kill each node's process group.
  for pidfile in "$STATE_DIR"/*.pid; do
    [ -e "$pidfile" ] || continue
    kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  *) echo "usage: $0 start [WORKERS] [CPUS_PER_WORKER] | stop" >&2; exit 2 ;;
esac
