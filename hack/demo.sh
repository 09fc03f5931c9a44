#!/usr/bin/env bash
# The main job: a local cluster, the CRDs, the controller, and a demo Rollout
# that reaches Healthy and then rolls to a new image.
#
# Usage: hack/demo.sh        bring everything up and run the demo
#        hack/demo.sh down   stop the controller and the cluster
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
state=${ROLLOUTS_CLUSTER_DIR:-${TMPDIR:-/tmp}/rollouts-cluster}
pidfile=$state/demo-controller.pid

die() { echo "demo: $*" >&2; exit 1; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

stop_controller() {
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")"
  fi
  rm -f "$pidfile"
}

if [ "${1:-}" = down ]; then
  stop_controller
  bash hack/cluster.sh down
  exit 0
fi

command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs)"

say "Local control plane (first run builds it from the Go module proxy: ~15-25 min)"
kubeconfig=$(bash hack/cluster.sh up)
export KUBECONFIG=$kubeconfig
kubectl=("$(cat "$state/bin")/kubectl")
"${kubectl[@]}" get nodes

say "CRDs"
"${kubectl[@]}" apply --server-side -k crds/
"${kubectl[@]}" wait --for condition=established --timeout=60s crd/rollouts.argoproj.io >/dev/null

say "Controller"
cargo build --locked --bin rollouts-controller
stop_controller
# As in production: leader election on a Lease in namespace "rollouts",
# metrics and health checks on ports of their own.
"${kubectl[@]}" create namespace rollouts --dry-run=client -o yaml | "${kubectl[@]}" apply -f - >/dev/null
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
healthz_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nohup "${CARGO_TARGET_DIR:-target}/debug/rollouts-controller" --log-format json \
  --leader-election-namespace rollouts --metricsport "$metrics_port" --healthzPort "$healthz_port" \
  >"$state/logs/controller.log" 2>&1 &
echo $! >"$pidfile"
echo "rollouts-controller running (pid $(cat "$pidfile"), logs in $state/logs/controller.log)"

wait_healthy() {
  local want_gen i phase gen observed
  for i in $(seq 1 120); do
    phase=$("${kubectl[@]}" get ro demo -o jsonpath='{.status.phase}' 2>/dev/null || true)
    gen=$("${kubectl[@]}" get ro demo -o jsonpath='{.metadata.generation}' 2>/dev/null || true)
    observed=$("${kubectl[@]}" get ro demo -o jsonpath='{.status.observedGeneration}' 2>/dev/null || true)
    kill -0 "$(cat "$pidfile")" 2>/dev/null || die "the controller exited; see $state/logs/controller.log"
    if [ "$phase" = Healthy ] && [ "$gen" = "$observed" ]; then return 0; fi
    "${kubectl[@]}" get ro demo --no-headers 2>/dev/null | sed "s/^/  [$phase] /"
    sleep 1
  done
  die "demo Rollout did not become Healthy in 120s"
}

say "Demo Rollout (examples/demo-rollout.yaml)"
"${kubectl[@]}" delete rollout demo --ignore-not-found >/dev/null
"${kubectl[@]}" apply -f examples/demo-rollout.yaml
wait_healthy
"${kubectl[@]}" get ro,rs,pods -l app=demo

say "New image: the pods roll over within maxSurge 1 / maxUnavailable 1"
"${kubectl[@]}" patch ro demo --type merge \
  -p '{"spec":{"template":{"spec":{"containers":[{"name":"demo","image":"argoproj/rollouts-demo:green"}]}}}}'
wait_healthy
"${kubectl[@]}" get ro,rs -l app=demo
echo
echo "status: $("${kubectl[@]}" get ro demo -o jsonpath='phase={.status.phase} stableRS={.status.stableRS} currentPodHash={.status.currentPodHash}')"

say "Controller metrics (http://127.0.0.1:$metrics_port/metrics)"
curl -sf "http://127.0.0.1:$metrics_port/metrics" | grep -E '^(rollout_info\{.*name="demo"|leader_election_master_status|process_resident_memory_bytes)' || true

say "Done"
cat <<MSG
The cluster and the controller keep running:
  export KUBECONFIG=$kubeconfig
  ${kubectl[*]} get rollouts
  curl http://127.0.0.1:$metrics_port/metrics    # and :$healthz_port/readyz
Stop everything with: hack/demo.sh down
MSG
