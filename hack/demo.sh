#!/usr/bin/env bash
# The main job: a local cluster, the CRDs, the controller, and the story of
# three releases told with the project's own kubectl plugin:
#   1. a canary that pauses at 20% until promoted;
#   2. a release whose analysis finds errors: aborted and rolled back by
#      the controller itself;
#   3. a blue-green release: preview, promote, switch.
# Each part ends with a check; the demo fails loudly if one does not hold.
#
# Usage: hack/demo.sh        bring everything up and run the demo
#        hack/demo.sh down   stop what the demo started (the controller, the
#                            metrics server; the cluster if the demo started it)
# Env:   ROLLOUTS_CLUSTER_DIR (default /tmp/rollouts-cluster)
#        ROLLOUTS_CONTROLLER_BIN, ROLLOUTS_PLUGIN_BIN: prebuilt binaries
#        (otherwise `cargo build`)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=lib.sh
source hack/lib.sh
state=${ROLLOUTS_CLUSTER_DIR:-${TMPDIR:-/tmp}/rollouts-cluster}
export ROLLOUTS_CLUSTER_DIR=$state
ns=rollouts-demo

die() { echo "demo: $*" >&2; exit 1; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ok() { printf '\033[32mok:\033[0m %s\n' "$*"; }

stop_pidfile() {
  local f=$1
  if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
    kill "$(cat "$f")" 2>/dev/null || true
  fi
  rm -f "$f"
}

if [ "${1:-}" = down ]; then
  stop_pidfile "$state/demo-controller.pid"
  stop_pidfile "$state/demo-metrics-server.pid"
  if [ -f "$state/demo-started-cluster" ]; then
    bash hack/cluster.sh down
  else
    echo "demo: stopped the controller; the cluster was running before the demo, so it keeps running"
  fi
  exit 0
fi
[ $# -eq 0 ] || die "usage: hack/demo.sh [down]"

say "Local control plane (the first run builds it from the Go module proxy)"
started_cluster=false
bash hack/cluster.sh status >/dev/null 2>&1 || started_cluster=true
kubeconfig=$(bash hack/cluster.sh up | tail -n1)
[ "$started_cluster" = false ] || touch "$state/demo-started-cluster"
export KUBECONFIG=$kubeconfig
kubectl=("$(cat "$state/bin")/kubectl")
"${kubectl[@]}" get nodes

say "CRDs"
"${kubectl[@]}" apply --server-side -k crds/
for crd in rollouts analysisruns analysistemplates clusteranalysistemplates experiments; do
  wait_until "crd/$crd.argoproj.io Established" 60 crd_established "${kubectl[@]}" -- "$crd.argoproj.io" ||
    die "the CRDs were not accepted"
done

say "Controller and plugin"
if [ -n "${ROLLOUTS_CONTROLLER_BIN:-}" ] && [ -n "${ROLLOUTS_PLUGIN_BIN:-}" ]; then
  controller=$ROLLOUTS_CONTROLLER_BIN
  plugin=$ROLLOUTS_PLUGIN_BIN
else
  command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs)"
  cargo build --locked --bin rollouts-controller --bin kubectl-rollouts
  target=${CARGO_TARGET_DIR:-target}
  controller=$target/debug/rollouts-controller
  plugin=$target/debug/kubectl-rollouts
fi
# kubectl finds the plugin on PATH as `kubectl rollouts`.
plugin_dir=$state/demo-plugin
mkdir -p "$plugin_dir"
ln -sf "$(cd "$(dirname "$plugin")" && pwd)/$(basename "$plugin")" "$plugin_dir/kubectl-rollouts"
export PATH="$plugin_dir:$(dirname "${kubectl[0]}"):$PATH"

stop_pidfile "$state/demo-controller.pid"
# As in production: leader election on a Lease in namespace "rollouts",
# metrics and health checks on ports of their own.
"${kubectl[@]}" create namespace rollouts --dry-run=client -o yaml | "${kubectl[@]}" apply -f - >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
metrics_port=$(free_port)
healthz_port=$(free_port)
mkdir -p "$state/logs"
nohup "$controller" --log-format json \
  --leader-election-namespace rollouts --metricsport "$metrics_port" --healthzPort "$healthz_port" \
  >"$state/logs/controller.log" 2>&1 &
echo $! >"$state/demo-controller.pid"
controller_alive() { kill -0 "$(cat "$state/demo-controller.pid")" 2>/dev/null || { echo "the controller exited; see $state/logs/controller.log"; return 42; }; }
wait_until "the controller ready on :$healthz_port" 60 bash -c \
  "kill -0 $(cat "$state/demo-controller.pid") && curl -sf http://127.0.0.1:$healthz_port/readyz" ||
  die "the controller did not become ready; see $state/logs/controller.log"
echo "rollouts-controller running (pid $(cat "$state/demo-controller.pid"), logs in $state/logs/controller.log)"

say "Namespace $ns, from empty"
if "${kubectl[@]}" get namespace "$ns" >/dev/null 2>&1; then
  "${kubectl[@]}" delete namespace "$ns" --wait=false >/dev/null
  wait_until "namespace $ns deleted" 120 bash -c "! '${kubectl[0]}' get namespace $ns -o name" ||
    die "namespace $ns was not deleted"
fi
"${kubectl[@]}" create namespace "$ns" >/dev/null
wait_until "the default service account of $ns" 60 "${kubectl[@]}" -n "$ns" get serviceaccount default ||
  die "namespace $ns has no default service account"
k() { "${kubectl[@]}" -n "$ns" "$@"; }
ro() { kubectl rollouts -n "$ns" "$@"; }
field() { k get rollout "$1" -o "jsonpath=$2"; }

# Succeeds when the Rollout's status says PHASE for its latest spec.
phase_is() { # rollout phase
  controller_alive || return 42
  local gen observed phase
  gen=$(field "$1" '{.metadata.generation}')
  observed=$(field "$1" '{.status.observedGeneration}')
  phase=$(field "$1" '{.status.phase}')
  if [ "$phase" = "$2" ] && [ "$gen" = "$observed" ]; then return 0; fi
  echo "phase ${phase:-<none>} ($(field "$1" '{.status.message}')), generation $gen observed ${observed:-<none>}"
  return 1
}
wait_phase() { # rollout phase timeout
  wait_until "rollout $1 $2" "$3" phase_is "$1" "$2" || die "rollout $1 is not $2"
}
hash_of() { k get rs -l "app=$1" -o "jsonpath={range .items[?(@.spec.template.spec.containers[0].image==\"$2\")]}{.metadata.labels.rollouts-pod-template-hash}{end}"; }
selector_of() { k get service "$1" -o 'jsonpath={.spec.selector.rollouts-pod-template-hash}'; }
check() { # description, test...
  local what=$1; shift
  "$@" || die "check failed: $what"
  ok "$what"
}

say "1. A canary release: pause at 20%, promote, done"
k apply -f examples/demo/canary.yaml
wait_phase canary-demo Healthy 120
ro get rollout canary-demo
echo
echo "\$ kubectl rollouts set image canary-demo rollouts-demo=argoproj/rollouts-demo:yellow"
ro set image canary-demo rollouts-demo=argoproj/rollouts-demo:yellow
wait_phase canary-demo Paused 120
ro get rollout canary-demo
blue=$(hash_of canary-demo argoproj/rollouts-demo:blue)
yellow=$(hash_of canary-demo argoproj/rollouts-demo:yellow)
check "paused at step 1 of 8 (setWeight 20): 1 of 5 pods run the new version" \
  test "$(field canary-demo '{.status.currentStepIndex}')" = 1 -a \
  "$(k get rs -l rollouts-pod-template-hash="$yellow" -o 'jsonpath={.items[0].status.availableReplicas}')" = 1
check "the canary Service selects the new pods, the stable Service the old ones" \
  test "$(selector_of canary-demo-canary)" = "$yellow" -a "$(selector_of canary-demo-stable)" = "$blue"
echo
echo "\$ kubectl rollouts promote canary-demo"
ro promote canary-demo
echo "\$ kubectl rollouts status canary-demo --timeout 2m"
ro status canary-demo --timeout 2m || die "kubectl rollouts status did not end Healthy"
ro get rollout canary-demo
check "the new version is stable, both Services select it" \
  test "$(field canary-demo '{.status.stableRS}')" = "$yellow" -a \
  "$(selector_of canary-demo-stable)" = "$yellow" -a "$(selector_of canary-demo-canary)" = "$yellow"

say "2. A bad release: the analysis finds errors, the controller rolls back by itself"
# The new version's metrics: a small server answering a 35% error rate.
metrics_server_port=$(free_port)
stop_pidfile "$state/demo-metrics-server.pid"
nohup python3 - "$metrics_server_port" >"$state/logs/demo-metrics-server.log" 2>&1 <<'PY' &
import http.server, json, sys
class ErrorRate(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"errorRate": 0.35}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), ErrorRate).serve_forever()
PY
echo $! >"$state/demo-metrics-server.pid"
wait_until "the metrics server on :$metrics_server_port" 30 curl -sf "http://127.0.0.1:$metrics_server_port/" ||
  die "the metrics server did not start; see $state/logs/demo-metrics-server.log"
echo "metrics server: curl http://127.0.0.1:$metrics_server_port/ -> $(curl -sf "http://127.0.0.1:$metrics_server_port/")"
sed "s#ERROR_RATE_URL#http://127.0.0.1:$metrics_server_port/#" examples/demo/analysis.yaml | k apply -f -
wait_phase analysis-demo Healthy 120
echo
echo "\$ kubectl rollouts set image analysis-demo rollouts-demo=argoproj/rollouts-demo:red"
ro set image analysis-demo rollouts-demo=argoproj/rollouts-demo:red
wait_phase analysis-demo Degraded 180
ro get rollout analysis-demo
echo
k get analysisrun -l rollout-type=Step
run=$(k get analysisrun -l rollout-type=Step -o 'jsonpath={.items[0].metadata.name}')
echo
echo "measurements of $run:"
k get analysisrun "$run" -o 'jsonpath={range .status.metricResults[*].measurements[*]}  {.phase}  value={.value}  at {.finishedAt}{"\n"}{end}'
message=$(field analysis-demo '{.status.message}')
echo
echo "status.message: $message"
check "the analysis failed and the update was aborted, in upstream's words" \
  test "$(k get analysisrun "$run" -o 'jsonpath={.status.phase}')" = Failed -a \
  "$(field analysis-demo '{.status.abort}')" = true
case $message in
  "RolloutAborted: Rollout aborted update to revision 2: "*) ;;
  *) die "check failed: unexpected status message: $message" ;;
esac
blue=$(hash_of analysis-demo argoproj/rollouts-demo:blue)
red=$(hash_of analysis-demo argoproj/rollouts-demo:red)
wait_until "the bad version scaled down" 60 test "$(k get rs -l rollouts-pod-template-hash="$red" -o 'jsonpath={.items[0].spec.replicas}')" = 0 ||
  die "the bad version kept its pods"
check "all pods run the stable version again, which stays stable" \
  test "$(field analysis-demo '{.status.stableRS}')" = "$blue" -a \
  "$(k get rs -l rollouts-pod-template-hash="$blue" -o 'jsonpath={.items[0].status.availableReplicas}')" = 4

say "3. A blue-green release: preview, promote, switch"
k apply -f examples/demo/bluegreen.yaml
wait_phase bluegreen-demo Healthy 120
echo "\$ kubectl rollouts set image bluegreen-demo rollouts-demo=argoproj/rollouts-demo:green"
ro set image bluegreen-demo rollouts-demo=argoproj/rollouts-demo:green
wait_phase bluegreen-demo Paused 120
ro get rollout bluegreen-demo
blue=$(hash_of bluegreen-demo argoproj/rollouts-demo:blue)
green=$(hash_of bluegreen-demo argoproj/rollouts-demo:green)
check "the new version is up behind the preview Service; users still get the old one" \
  test "$(selector_of bluegreen-demo-preview)" = "$green" -a "$(selector_of bluegreen-demo-active)" = "$blue"
echo
echo "\$ kubectl rollouts promote bluegreen-demo"
ro promote bluegreen-demo
ro status bluegreen-demo --timeout 2m || die "kubectl rollouts status did not end Healthy"
ro get rollout bluegreen-demo
check "the active Service switched to the new version" \
  test "$(selector_of bluegreen-demo-active)" = "$green" -a "$(field bluegreen-demo '{.status.stableRS}')" = "$green"

say "Controller metrics (http://127.0.0.1:$metrics_port/metrics)"
curl -sf "http://127.0.0.1:$metrics_port/metrics" |
  grep -E "^(rollout_info\{namespace=\"$ns\"|leader_election_master_status|process_resident_memory_bytes)" || true

say "Done: three releases, each checked"
cat <<MSG
The cluster and the controller keep running:
  export KUBECONFIG=$kubeconfig PATH=$plugin_dir:\$PATH
  kubectl rollouts list rollouts -n $ns
  curl http://127.0.0.1:$metrics_port/metrics    # and :$healthz_port/readyz
Stop what the demo started with: hack/demo.sh down
MSG
