#!/usr/bin/env bash
# The data-plane rig: runs a command inside a network namespace of its own,
# where the whole pod range (10.244.0.0/16) is local, so one process can
# answer HTTP on every pod's IP and a real proxy can send requests to pods.
# The command starts its own local cluster inside (the loopback there is
# not the host's); on exit the cluster is stopped, every process left in the
# namespace is killed and the namespace is deleted.
#
# Usage: hack/data-plane.sh run -- COMMAND [ARGS...]
# Env:   ROLLOUTS_RIG_CLUSTER_DIR (the inner cluster's state; default
#        /tmp/rollouts-rig-<namespace>), passed on as ROLLOUTS_CLUSTER_DIR.
# The command sees ROLLOUTS_RIG=<namespace> and ROLLOUTS_CLUSTER_DIR.
# Needs root (ip netns); nothing in the namespace reaches the network, so
# build and download before (hack/traefik.sh, cargo build).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "data-plane: $*" >&2; exit 1; }

[ "${1:-}" = run ] && [ "${2:-}" = -- ] && [ $# -ge 3 ] ||
  die "usage: hack/data-plane.sh run -- COMMAND [ARGS...]"
shift 2
[ "$(id -u)" = 0 ] || die "the rig needs root to create a network namespace (ip netns add)"
command -v ip >/dev/null || die "ip (iproute2) is needed to create the network namespace"

ns=rollouts-rig-$$
state=${ROLLOUTS_RIG_CLUSTER_DIR:-${TMPDIR:-/tmp}/$ns}

teardown() {
  ip netns exec "$ns" env ROLLOUTS_CLUSTER_DIR="$state" bash "$here/cluster.sh" down \
    >/dev/null 2>&1 || true
  local pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$state"
}
trap teardown EXIT

ip netns add "$ns" || die "ip netns add $ns failed"
ip netns exec "$ns" ip link set lo up
# Every pod IP is an address of this namespace: connections to any of them
# reach a listener on 0.0.0.0.
ip netns exec "$ns" ip route add local 10.244.0.0/16 dev lo

set +e
ip netns exec "$ns" env ROLLOUTS_RIG="$ns" ROLLOUTS_CLUSTER_DIR="$state" "$@"
rc=$?
set -e
exit $rc
