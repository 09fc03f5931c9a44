#!/usr/bin/env bash
# The data-plane rig: a network namespace where the whole pod range
# (10.244.0.0/16) is local, so one process can answer HTTP on every pod's IP
# and a real proxy can send requests to pods. What runs inside starts its
# own local cluster there (the loopback inside is not the host's).
#
# Usage: hack/data-plane.sh run -- COMMAND [ARGS...]
#          COMMAND in a namespace of its own; on exit the cluster is
#          stopped, every process left in the namespace is killed and the
#          namespace and the cluster's state are deleted (the tests).
#        hack/data-plane.sh up NAME
#          create namespace NAME and keep it (a no-op when it exists; the
#          demo). Enter it with: ip netns exec NAME COMMAND
#        hack/data-plane.sh down NAME
#          stop the cluster in NAME (state in ROLLOUTS_CLUSTER_DIR), kill
#          every process left in it, delete it and the cluster's state.
# Env:   ROLLOUTS_RIG_CLUSTER_DIR (run: the inner cluster's state; default
#        /tmp/rollouts-rig-<namespace>), passed on as ROLLOUTS_CLUSTER_DIR.
# With run, the command sees ROLLOUTS_RIG=<namespace> and ROLLOUTS_CLUSTER_DIR.
# Needs root (ip netns); nothing in the namespace reaches the network, so
# build and download before (hack/traefik.sh, cargo build).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "data-plane: $*" >&2; exit 1; }
usage="usage: hack/data-plane.sh run -- COMMAND [ARGS...] | up NAME | down NAME"

[ $# -ge 2 ] || die "$usage"
[ "$(id -u)" = 0 ] || die "the rig needs root to create a network namespace (ip netns add)"
command -v ip >/dev/null || die "ip (iproute2) is needed to create the network namespace"

exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

create() { # name
  exists "$1" && return 0
  ip netns add "$1" || die "ip netns add $1 failed"
  ip netns exec "$1" ip link set lo up
  # Every pod IP is an address of this namespace: connections to any of
  # them reach a listener on 0.0.0.0.
  ip netns exec "$1" ip route add local 10.244.0.0/16 dev lo
}

destroy() { # name state
  exists "$1" || { rm -rf "$2"; return 0; }
  ip netns exec "$1" env ROLLOUTS_CLUSTER_DIR="$2" bash "$here/cluster.sh" down \
    >/dev/null 2>&1 || true
  local pids pid i
  pids=$(ip netns pids "$1" 2>/dev/null || true)
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  # A killed process takes a moment to exit: return when all have.
  for pid in $pids; do
    for i in $(seq 1 50); do
      [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || break
      sleep 0.1
    done
  done
  ip netns del "$1" 2>/dev/null || true
  rm -rf "$2"
}

case $1 in
  up) create "$2" ;;
  down) destroy "$2" "${ROLLOUTS_CLUSTER_DIR:?ROLLOUTS_CLUSTER_DIR names the cluster to stop}" ;;
  run)
    [ "$2" = -- ] && [ $# -ge 3 ] || die "$usage"
    shift 2
    ns=rollouts-rig-$$
    state=${ROLLOUTS_RIG_CLUSTER_DIR:-${TMPDIR:-/tmp}/$ns}
    trap 'destroy "$ns" "$state"' EXIT
    create "$ns"
    set +e
    ip netns exec "$ns" env ROLLOUTS_RIG="$ns" ROLLOUTS_CLUSTER_DIR="$state" "$@"
    rc=$?
    set -e
    exit $rc
    ;;
  *) die "$usage" ;;
esac
