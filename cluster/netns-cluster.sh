#!/usr/bin/env bash
# A Ray cluster of separate hosts on this machine (root only): each host has a network
# namespace of its own (a veth on one bridge, an address in 198.18.0.0/24, no route out)
# a mount namespace with a private /tmp and /dev/shm, a process table and a hostname of its own
# (Ray finds a driver's node among the raylets it can see). The hosts are a Ray head, N
# workers, an S3-protocol server (moto) that is the only storage they share, and a
# "laptop" that runs no Ray node: a driver's view of a cluster it is not part of.
#   cluster/netns-cluster.sh start [WORKERS=2] [CPUS_PER_WORKER=1]
#   cluster/netns-cluster.sh run laptop resnet-batch submit --address http://198.18.0.2:8265 --wait -- label s3://...
#   cluster/netns-cluster.sh status | stop
# Faults, by host (head, worker-N, s3, laptop):
#   kill HOST            SIGKILL every process of the host (its Ray node, its object store)
#   link-down HOST       a partition: the host's link to the bridge goes down; link-up HOST heals it
#   pause HOST           SIGSTOP every process of the host; resume HOST sends SIGCONT
#   restart HOST         a killed host starts again, as after a reboot: a worker rejoins, the S3 server starts
# `start` returns when every host has joined; `stop` leaves no namespace, link, mount or process.
# Each host's /tmp is $STATE_DIR/hosts/HOST/tmp here (what its Ray and its jobs wrote).
set -euo pipefail
STATE_DIR=${STATE_DIR:-/tmp/resnet-batch-netns-cluster}
PREFIX=${NETNS_PREFIX:-rbc}
SUBNET=198.18.0
BRIDGE="${PREFIX}-br0"
HEAD_PORT=6379
DASHBOARD_PORT=8265
S3_PORT=5000
JOIN_TIMEOUT_S=${JOIN_TIMEOUT_S:-120}
export RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0

fail() {
  echo "netns-cluster: $1" >&2
  if [ -n "${2:-}" ] && [ -e "$2" ]; then
    echo "--- last lines of $2:" >&2
    tail -n 15 "$2" >&2
  fi
  exit 1
}

address_of() {
  case "$1" in
    head) echo "$SUBNET.2" ;;
    s3) echo "$SUBNET.3" ;;
    laptop) echo "$SUBNET.4" ;;
    worker-*) echo "$SUBNET.$((10 + ${1#worker-}))" ;;
    *) fail "no host named $1 (valid: head, worker-N, s3, laptop)" ;;
  esac
}

hosts() { cat "$STATE_DIR/hosts.txt" 2>/dev/null || true; }

known() { hosts | grep -qx "$1" || fail "no host named $1 in this cluster (valid: $(hosts | tr '\n' ' '))"; }

# The environment every host's processes see: the shared store is the S3 host.
storage_env() {
  echo "AWS_ENDPOINT_URL=http://$(address_of s3):$S3_PORT AWS_ACCESS_KEY_ID=netns-cluster" \
    "AWS_SECRET_ACCESS_KEY=netns-cluster-secret AWS_DEFAULT_REGION=us-east-1"
}

# A command on a host: its network, its /tmp, its processes, the storage environment; run from this folder.
on_host() {
  local host=$1 exe init
  exe=$(command -v "$2" || echo "$2")  # found here: the host sees the same files
  shift 2
  init=$(cat "$STATE_DIR/ns/$host.init" 2>/dev/null) && [ -e "/proc/$init/ns/pid_for_children" ] ||
    fail "$host is down (killed); run: $0 restart $host"
  # shellcheck disable=SC2046
  nsenter --net="/var/run/netns/$PREFIX-$host" --mount="/proc/$init/ns/mnt" --uts="$STATE_DIR/ns/$host.uts" \
    --pid="/proc/$init/ns/pid_for_children" --wd="$PWD" \
    env $(storage_env) "$exe" "$@"
}

# The host's first process: a process table of its own (with /proc to match) whose PID 1
# reaps orphans; killing every process of the host ends it, and a reboot starts another.
boot_host() {
  local host=$1
  nsenter --net="/var/run/netns/$PREFIX-$host" --mount="$STATE_DIR/ns/$host" --uts="$STATE_DIR/ns/$host.uts" \
    unshare --pid --fork --mount-proc "$(command -v python)" -c '
import os, signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
while True:
    signal.sigwait({signal.SIGCHLD})
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
' </dev/null >/dev/null 2>&1 &
  echo $! >"$STATE_DIR/ns/$host.init"  # unshare itself: its children are the host's processes
  for _ in $(seq 40); do
    [ -e "/proc/$!/ns/pid_for_children" ] && [ "$(readlink "/proc/$!/ns/pid_for_children")" != "$(readlink /proc/self/ns/pid)" ] && return 0
    sleep 0.05
  done
  fail "$host did not boot"
}

add_host() {
  local host=$1 ns="$PREFIX-$1" veth
  veth="${PREFIX}v-${host/worker-/w}"
  mkdir -p "$STATE_DIR/hosts/$host/tmp"
  chmod 1777 "$STATE_DIR/hosts/$host/tmp"
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$BRIDGE" up
  ip -n "$ns" addr add "$(address_of "$host")/24" dev eth0
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default dev eth0  # where Ray looks for the node's address; leads nowhere
  touch "$STATE_DIR/ns/$host" "$STATE_DIR/ns/$host.uts"
  unshare --mount="$STATE_DIR/ns/$host" --uts="$STATE_DIR/ns/$host.uts" --propagation private -- sh -c \
    "hostname $PREFIX-$host && mount --bind '$STATE_DIR/hosts/$host/tmp' /tmp && mount -t tmpfs -o size=4g shm /dev/shm"
  echo "$host" >>"$STATE_DIR/hosts.txt"
  boot_host "$host"
}

start_storage() {
  on_host s3 setsid "$(command -v python)" -m moto.server -H "$(address_of s3)" -p "$S3_PORT" \
    >"$STATE_DIR/hosts/s3/tmp/moto.log" 2>&1 </dev/null &
  for _ in $(seq 60); do
    on_host s3 python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "http://$(address_of s3):$S3_PORT/moto-api/" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  fail "the S3 server did not start" "$STATE_DIR/hosts/s3/tmp/moto.log"
}

start_node() {
  local host=$1 log
  log="$STATE_DIR/hosts/$host/tmp/ray-start.log"
  if [ "$host" = head ]; then
    on_host head setsid "$(command -v ray)" start --head --node-ip-address="$(address_of head)" --port="$HEAD_PORT" \
      --dashboard-host=0.0.0.0 --dashboard-port="$DASHBOARD_PORT" --num-cpus=0 --block >"$log" 2>&1 </dev/null &
  else
    on_host "$host" setsid "$(command -v ray)" start --address="$(address_of head):$HEAD_PORT" \
      --node-ip-address="$(address_of "$host")" --num-cpus="$(cat "$STATE_DIR/cpus")" --block \
      >"$log" 2>&1 </dev/null &
  fi
}

alive_nodes() {
  on_host head python - "$(address_of head):$HEAD_PORT" <<'EOF'
import sys

import ray

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(" ".join(sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])))
EOF
}

wait_for_nodes() {  # until every host named has a live Ray node
  local host alive missing
  for _ in $(seq "$JOIN_TIMEOUT_S"); do
    alive=" $(alive_nodes 2>/dev/null || true) "
    missing=""
    for host in "$@"; do
      [[ "$alive" == *" $(address_of "$host") "* ]] || missing="$host"
    done
    [ -z "$missing" ] && return 0
    sleep 1
  done
  fail "$missing did not join within ${JOIN_TIMEOUT_S}s" "$STATE_DIR/hosts/$missing/tmp/ray-start.log"
}

start() {
  local workers=${1:-2} cpus=${2:-1}
  [ "$(id -u)" -eq 0 ] || fail "needs root (network and mount namespaces)"
  [ ! -e "$STATE_DIR/hosts.txt" ] || fail "already started ($STATE_DIR); run: $0 stop"
  mkdir -p "$STATE_DIR/ns"
  echo "$cpus" >"$STATE_DIR/cpus"
  mount --bind "$STATE_DIR/ns" "$STATE_DIR/ns"
  mount --make-private "$STATE_DIR/ns"
  ip link add "$BRIDGE" type bridge
  ip link set "$BRIDGE" up
  : >"$STATE_DIR/hosts.txt"
  local host
  for host in s3 head laptop $(seq -f "worker-%g" "$workers"); do add_host "$host"; done
  ray get-auth-token --generate >/dev/null 2>&1 || true
  start_storage
  start_node head
  wait_for_nodes head
  for host in $(seq -f "worker-%g" "$workers"); do start_node "$host"; done
  # shellcheck disable=SC2046
  wait_for_nodes head $(seq -f "worker-%g" "$workers")
  echo "up: head + $workers workers ($((workers * cpus)) CPUs), S3 at http://$(address_of s3):$S3_PORT"
  echo "Ray $(address_of head):$HEAD_PORT, job server http://$(address_of head):$DASHBOARD_PORT"
}

reboot_node() {  # a killed Ray host comes back as after a reboot: its Ray files gone, then it rejoins
  local host=$1
  for _ in $(seq "$JOIN_TIMEOUT_S"); do  # the head has seen the old node go (else two nodes share an address)
    [[ " $(alive_nodes 2>/dev/null || true) " == *" $(address_of "$host") "* ]] || break
    sleep 1
  done
  on_host "$host" sh -c 'rm -rf /tmp/ray /dev/shm/*'
  start_node "$host"
  wait_for_nodes "$host"
}

status() {
  [ -e "$STATE_DIR/hosts.txt" ] || { echo "not started"; return 1; }
  echo "Ray nodes alive: $(alive_nodes 2>/dev/null || echo "none (the head does not answer)")"
  local host
  for host in $(hosts); do
    echo "  $host $(address_of "$host"): $(ip netns pids "$PREFIX-$host" 2>/dev/null | wc -l) processes," \
      "link $(ip -br link show "${PREFIX}v-${host/worker-/w}" 2>/dev/null | awk '{print $2}')"
  done
}

signal_host() {  # every process in the host's network namespace
  local pids
  pids=$(ip netns pids "$PREFIX-$2" 2>/dev/null || true)
  [ -z "$pids" ] || kill "-$1" $pids 2>/dev/null || true
}

stop() {
  local host
  for host in $(hosts); do
    signal_host CONT "$host"
    signal_host KILL "$host"
  done
  for host in $(hosts); do
    for _ in $(seq 40); do
      [ -z "$(ip netns pids "$PREFIX-$host" 2>/dev/null)" ] && break
      sleep 0.25
    done
    umount "$STATE_DIR/ns/$host" "$STATE_DIR/ns/$host.uts" 2>/dev/null || true
    ip netns del "$PREFIX-$host" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  umount "$STATE_DIR/ns" 2>/dev/null || true
  rm -rf "$STATE_DIR"
  echo "stopped"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  status) status ;;
  stop) stop ;;
  run) known "$2"; host=$2; shift 2; on_host "$host" "$@" ;;
  kill)  # again until none is left: a process forked while the others die is killed too
    known "$2"
    for _ in $(seq 40); do
      [ -z "$(ip netns pids "$PREFIX-$2")" ] && break
      signal_host CONT "$2"; signal_host KILL "$2"; sleep 0.25
    done ;;
  pause) known "$2"; signal_host STOP "$2" ;;
  resume) known "$2"; signal_host CONT "$2" ;;
  link-down) known "$2"; ip link set "${PREFIX}v-${2/worker-/w}" down ;;
  link-up) known "$2"; ip link set "${PREFIX}v-${2/worker-/w}" up ;;
  restart)
    known "$2"
    [ -z "$(ip netns pids "$PREFIX-$2")" ] || fail "$2 is running; kill it first"
    boot_host "$2"
    if [ "$2" = s3 ]; then start_storage; elif [ "$2" != laptop ]; then reboot_node "$2"; fi ;;
  *) echo "usage: $0 start [WORKERS] [CPUS_PER_WORKER] | status | stop | run HOST CMD... |" \
    "kill|pause|resume|link-down|link-up|restart HOST" >&2; exit 2 ;;
esac
