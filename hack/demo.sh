#!/usr/bin/env bash
# The main job: a local cluster with a real data plane, the CRDs, the
# controller, and the story of three releases told with the project's own
# kubectl plugin while a steady load goes through a real proxy (Traefik) to
# the pods, its split shown live, second by second:
#   1. a canary whose traffic moves 20% (paused until promoted), 40, 60,
#      80, 100% to the new version;
#   2. a release whose pods answer errors: an analysis of the proxy's own
#      metrics in Prometheus catches it, the controller aborts by itself and
#      every request is back on the stable version;
#   3. a blue-green release: preview, promote, switch.
# Each part ends with checks, on the cluster and on what the requests met;
# the demo fails loudly if one does not hold.
#
# The cluster runs in a network namespace of its own (hack/data-plane.sh
# up), where every pod IP is local, so that one small server can answer for
# every pod and requests really reach them: run it as root.
#
# Usage: hack/demo.sh        bring everything up and run the demo
#        hack/demo.sh down   stop everything the demo started (the cluster,
#                            the controller, the proxy, Prometheus, the
#                            load) and delete its network namespace
# Env:   ROLLOUTS_CLUSTER_DIR (the demo cluster's state; default
#        /tmp/rollouts-demo), ROLLOUTS_DEMO_NETNS (the network namespace;
#        default rollouts-demo),
#        ROLLOUTS_CONTROLLER_BIN, ROLLOUTS_PLUGIN_BIN, ROLLOUTS_RIG_BIN:
#        prebuilt binaries (otherwise `cargo build`)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=lib.sh
source hack/lib.sh
state=${ROLLOUTS_CLUSTER_DIR:-${TMPDIR:-/tmp}/rollouts-demo}
export ROLLOUTS_CLUSTER_DIR=$state
netns=${ROLLOUTS_DEMO_NETNS:-rollouts-demo}
ns=rollouts-demo

die() { echo "demo: $*" >&2; exit 1; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ok() { printf '\033[32mok:\033[0m %s\n' "$*"; }

# Outside the network namespace: build and download (nothing inside reaches
# the network), create the namespace, and run this script again in it.
if [ -z "${ROLLOUTS_RIG:-}" ]; then
  if [ "${1:-}" = down ]; then
    bash hack/data-plane.sh down "$netns"
    echo "demo: stopped; network namespace $netns and $state are gone"
    exit 0
  fi
  [ $# -eq 0 ] || die "usage: hack/demo.sh [down]"
  [ "$(id -u)" = 0 ] ||
    die "the demo runs its cluster in a network namespace of its own, so that requests reach the pods: run it as root (sudo hack/demo.sh)"

  say "Build and downloads (the first run builds the control plane from the Go module proxy)"
  bash hack/build-control-plane.sh >/dev/null
  echo "Traefik: $(bash hack/traefik.sh | tail -n1)"
  echo "Gateway API CRDs: $(bash hack/gateway-api-crds.sh | tail -n1)"
  echo "Prometheus: $(bash hack/prometheus.sh | tail -n1)"
  if [ -n "${ROLLOUTS_CONTROLLER_BIN:-}" ] && [ -n "${ROLLOUTS_PLUGIN_BIN:-}" ] && [ -n "${ROLLOUTS_RIG_BIN:-}" ]; then
    controller=$ROLLOUTS_CONTROLLER_BIN plugin=$ROLLOUTS_PLUGIN_BIN rig=$ROLLOUTS_RIG_BIN
  else
    command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs)"
    cargo build --locked --bin rollouts-controller --bin kubectl-rollouts --example demo-rig
    target=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
    controller=$target/debug/rollouts-controller
    plugin=$target/debug/kubectl-rollouts
    rig=$target/debug/examples/demo-rig
  fi
  bash hack/data-plane.sh up "$netns"
  echo "network namespace $netns: the pod range 10.244.0.0/16 is local in it"
  exec ip netns exec "$netns" env ROLLOUTS_RIG="$netns" ROLLOUTS_CONTROLLER_BIN="$controller" \
    ROLLOUTS_PLUGIN_BIN="$plugin" ROLLOUTS_RIG_BIN="$rig" bash "$0"
fi

stop_pidfile() {
  local f=$1
  if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
    kill "$(cat "$f")" 2>/dev/null || true
  fi
  rm -f "$f"
}

say "Local control plane, in network namespace $netns"
kubeconfig=$(bash hack/cluster.sh up | tail -n1)
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
controller=$ROLLOUTS_CONTROLLER_BIN
plugin=$ROLLOUTS_PLUGIN_BIN
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

say "Data plane: an answer for every pod, Traefik in front, Prometheus scraping Traefik"
"${kubectl[@]}" apply -f examples/demo/ingress-class.yaml
rig_dir=$state/demo-rig
stop_pidfile "$state/demo-rig.pid"
rm -rf "$rig_dir"
mkdir -p "$rig_dir"
nohup "$ROLLOUTS_RIG_BIN" "$rig_dir" >"$state/logs/demo-rig.log" 2>&1 &
echo $! >"$state/demo-rig.pid"
rig_up() {
  kill -0 "$(cat "$state/demo-rig.pid")" 2>/dev/null ||
    { echo "the rig exited: $(tail -n 5 "$state/logs/demo-rig.log")"; return 42; }
  test -f "$rig_dir/rig.env"
}
wait_until "Traefik and Prometheus" 120 rig_up || die "the data plane did not start; see $state/logs/demo-rig.log"
# shellcheck disable=SC1091
source "$rig_dir/rig.env"
cat "$state/logs/demo-rig.log"

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
scaled_down() { # replicaset-hash
  local n
  n=$(k get rs -l rollouts-pod-template-hash="$1" -o 'jsonpath={.items[0].spec.replicas}')
  [ "$n" = 0 ] || { echo "ReplicaSet $1 at ${n:-?} replicas"; return 1; }
}
check() { # description, test...
  local what=$1; shift
  "$@" || die "check failed: $what"
  ok "$what"
}

# --- The load and its live view (hack/demo-rig.rs writes them) ---------------
# A steady stream of requests through Traefik for HOST, tallied per second
# in $rig_dir/traffic/NAME.log as `<unix second> <requests> <failed> <tag>=<n>...`.
start_load() { # name host
  echo "load \"$1\": 20 requests a second to http://$2/ through Traefik"
  echo "$2" >"$rig_dir/load/.$1" && mv "$rig_dir/load/.$1" "$rig_dir/load/$1"
  wait_until "requests to $2" 30 test -s "$rig_dir/traffic/$1.log" || die "no load for $2; see $state/logs/demo-rig.log"
}
stop_load() { rm -f "$rig_dir/load/$1"; }
# The seconds of a load from unix time SINCE on (and before UNTIL):
# "<served by TAG> <requests> <failed> <seconds>".
tally_since() { # name tag since [until]
  awk -v tag="$2" -v since="$3" -v until="${4:-}" '$1 >= since && (until == "" || $1 < until) {
      s++; total += $2; failed += $3
      for (i = 4; i <= NF; i++) { split($i, kv, "="); if (kv[1] == tag) n += kv[2] }
    } END { printf "%d %d %d %d\n", n, total, failed, s }' "$rig_dir/traffic/$1.log"
}
# Succeeds when, over the last SECONDS full seconds, TAG served PCT% of the
# requests (within TOLERANCE points) and none failed.
share_is() { # name tag pct seconds tolerance
  local n total failed s
  read -r n total failed s < <(tally_since "$1" "$2" $(($(date +%s) - $4)))
  if [ "$s" -ge "$4" ] && [ "$total" -gt 0 ] && [ "$failed" = 0 ] &&
    awk -v n="$n" -v t="$total" -v p="$3" -v tol="$5" 'BEGIN { d = 100 * n / t - p; exit !(d <= tol && -d <= tol) }'; then
    return 0
  fi
  echo "last $4 s: $2 served $n of $total requests, $failed failed"
  return 1
}

# As wait_until, drawing the last second of each named load while it waits:
# in place on a terminal, every 5 s otherwise (a log).
watch_until() { # what timeout load... -- test...
  local what=$1 timeout=$2 loads=() code last next=0 drawn=false
  shift 2
  while [ "$1" != -- ]; do loads+=("$1"); shift; done
  shift
  local deadline=$((SECONDS + timeout))
  while true; do
    code=0
    last=$("$@" 2>&1) || code=$?
    if [ -t 1 ]; then
      [ "$drawn" = false ] || printf '\033[%dA' "${#loads[@]}"
      draw "${loads[@]}"
      drawn=true
    elif [ "$code" = 0 ] || [ "$SECONDS" -ge "$next" ]; then
      draw "${loads[@]}"
      next=$((SECONDS + 5))
    fi
    [ "$code" != 0 ] || return 0
    if [ "$code" = 42 ]; then echo "gave up waiting for $what: ${last:-<no output>}" >&2; return 1; fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "timed out after ${timeout}s waiting for $what; last seen: ${last:-<no output>}" >&2
      return 1
    fi
    sleep 0.5
  done
}
draw() {
  local l clear=
  [ -t 1 ] && clear='\r\033[K'
  for l; do printf "$clear%s\n" "$(cat "$rig_dir/view/$l" 2>/dev/null || echo "$l: no requests yet")"; done
}
watch_phase() { # rollout phase timeout load...
  local ro=$1 phase=$2 timeout=$3
  shift 3
  watch_until "rollout $ro $phase" "$timeout" "$@" -- phase_is "$ro" "$phase" || die "rollout $ro is not $phase"
}
watch_share() { # load tag pct seconds tolerance timeout
  watch_until "$2 at $3% of the requests to $1" "$6" "$1" -- share_is "$1" "$2" "$3" "$4" "$5" ||
    die "$2 did not get $3% of the requests to $1"
}

say "1. A canary release: 20% of the traffic until promoted, then 40, 60, 80, 100%"
k apply -f examples/demo/canary.yaml
wait_phase canary-demo Healthy 120
start_load canary canary.demo.local
watch_share canary blue 100 3 0 60
echo
echo "\$ kubectl rollouts set image canary-demo rollouts-demo=argoproj/rollouts-demo:yellow"
release=$(date +%s)
ro set image canary-demo rollouts-demo=argoproj/rollouts-demo:yellow
watch_phase canary-demo Paused 120 canary
watch_share canary yellow 20 5 3 60
ro get rollout canary-demo
blue=$(hash_of canary-demo argoproj/rollouts-demo:blue)
yellow=$(hash_of canary-demo argoproj/rollouts-demo:yellow)
check "paused at step 1 of 8 (setWeight 20): 1 of 5 pods run the new version" \
  test "$(field canary-demo '{.status.currentStepIndex}')" = 1 -a \
  "$(k get rs -l rollouts-pod-template-hash="$yellow" -o 'jsonpath={.items[0].status.availableReplicas}')" = 1
check "the canary Service selects the new pods, the stable Service the old ones" \
  test "$(selector_of canary-demo-canary)" = "$yellow" -a "$(selector_of canary-demo-stable)" = "$blue"
read -r n total _ _ < <(tally_since canary yellow $(($(date +%s) - 5)))
check "the proxy sends 20% of the requests to the new version (the last 5 s: $n of $total)" \
  share_is canary yellow 20 5 3
echo
echo "\$ kubectl rollouts promote canary-demo"
ro promote canary-demo
watch_phase canary-demo Healthy 120 canary
watch_share canary yellow 100 3 0 60
echo "\$ kubectl rollouts status canary-demo --timeout 2m"
ro status canary-demo --timeout 2m || die "kubectl rollouts status did not end Healthy"
ro get rollout canary-demo
check "the new version is stable, both Services select it" \
  test "$(field canary-demo '{.status.stableRS}')" = "$yellow" -a \
  "$(selector_of canary-demo-stable)" = "$yellow" -a "$(selector_of canary-demo-canary)" = "$yellow"
read -r _ total failed _ < <(tally_since canary yellow "$release")
check "no request failed during the release ($total requests through the proxy)" test "$failed" = 0
stop_load canary

say "2. A bad release: its pods answer errors; an analysis of the proxy's metrics catches it, the controller rolls back by itself"
echo "Prometheus at $PROMETHEUS_URL scrapes Traefik's metrics every second."
k apply -f analysis-examples/traefik-canary-error-rate.yaml
sed "s#PROMETHEUS_URL#$PROMETHEUS_URL#" examples/demo/analysis.yaml | k apply -f -
wait_phase analysis-demo Healthy 120
start_load analysis analysis.demo.local
watch_share analysis blue 100 3 0 60
echo
echo "The new version, red, answers HTTP 500 to every request (the rig's pods do what label rig.rollouts.test/answer says):"
patch='[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"argoproj/rollouts-demo:red"},
        {"op":"add","path":"/spec/template/metadata/labels/rig.rollouts.test~1answer","value":"500"}]'
echo "\$ kubectl patch rollout analysis-demo --type json -p '$patch'"
release=$(date +%s)
k patch rollout analysis-demo --type json -p "$patch"
watch_phase analysis-demo Degraded 180 analysis
# When the controller wrote the abort (its Progressing condition's time).
aborted_at=$(field analysis-demo '{.status.conditions[?(@.type=="Progressing")].lastTransitionTime}')
aborted=$(date -d "$aborted_at" +%s 2>/dev/null || date +%s)
watch_share analysis blue 100 3 0 60
# The first second, from the abort on, in which blue served every request.
clean_second() {
  awk -v since="$aborted" '$1 >= since && $3 == 0 && $2 > 0 {
      for (i = 4; i <= NF; i++) if ($i == "blue=" $2) { print $1; found = 1; exit }
    } END { exit !found }' "$rig_dir/traffic/analysis.log"
}
wait_until "a second with every request on blue" 30 clean_second || die "the requests did not all go back to blue"
clean=$(clean_second)
ro get rollout analysis-demo
echo
k get analysisrun -l rollout-type=Step
run=$(k get analysisrun -l rollout-type=Step -o 'jsonpath={.items[0].metadata.name}')
echo
echo "measurements of $run (the canary's error rate as Prometheus saw it through Traefik):"
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
# With traffic routing, upstream's default keeps the aborted canary's pods
# for abortScaleDownDelaySeconds (30 s) after no request goes to them.
watch_until "the bad version scaled down" 90 analysis -- scaled_down "$red" ||
  die "the bad version kept its pods"
check "all pods run the stable version again, which stays stable" \
  test "$(field analysis-demo '{.status.stableRS}')" = "$blue" -a \
  "$(k get rs -l rollouts-pod-template-hash="$blue" -o 'jsonpath={.items[0].status.availableReplicas}')" = 4
read -r _ total failed _ < <(tally_since analysis blue "$release" "$clean")
echo "the bad release failed $failed of $total requests until the abort (the canary's share, 25%, while the analysis measured);"
echo "every request was on blue again in the second starting $((clean - aborted)) s after the controller wrote the abort ($aborted_at)"
sleep 3
read -r n total failed _ < <(tally_since analysis blue "$clean")
check "after the abort, the stable version serves every request and none fails ($n of $total)" \
  test "$failed" = 0 -a "$n" = "$total"
stop_load analysis

say "3. A blue-green release: preview, promote, switch"
k apply -f examples/demo/bluegreen.yaml
wait_phase bluegreen-demo Healthy 120
start_load active bluegreen.demo.local
start_load preview preview.bluegreen.demo.local
watch_share active blue 100 3 0 60
echo "The preview Service moves to the new pods at once, as upstream's does: its requests fail until they are ready."
echo "\$ kubectl rollouts set image bluegreen-demo rollouts-demo=argoproj/rollouts-demo:green"
release=$(date +%s)
ro set image bluegreen-demo rollouts-demo=argoproj/rollouts-demo:green
watch_phase bluegreen-demo Paused 120 active preview
watch_share preview green 100 3 0 60
ro get rollout bluegreen-demo
blue=$(hash_of bluegreen-demo argoproj/rollouts-demo:blue)
green=$(hash_of bluegreen-demo argoproj/rollouts-demo:green)
check "the new version is up behind the preview Service; users still get the old one" \
  test "$(selector_of bluegreen-demo-preview)" = "$green" -a "$(selector_of bluegreen-demo-active)" = "$blue"
split_before_promotion() { share_is preview green 100 3 0 && share_is active blue 100 3 0; }
check "through the proxy, the preview serves only the new version and the active Service only the old one" \
  split_before_promotion
echo
echo "\$ kubectl rollouts promote bluegreen-demo"
ro promote bluegreen-demo
watch_phase bluegreen-demo Healthy 120 active preview
watch_share active green 100 3 0 60
ro status bluegreen-demo --timeout 2m || die "kubectl rollouts status did not end Healthy"
ro get rollout bluegreen-demo
check "the active Service switched to the new version" \
  test "$(selector_of bluegreen-demo-active)" = "$green" -a "$(field bluegreen-demo '{.status.stableRS}')" = "$green"
# Past scaleDownDelaySeconds (5 s): the old pods are gone, and that too
# fails no request.
watch_until "the old version scaled down" 60 active -- scaled_down "$blue" ||
  die "the old version kept its pods"
sleep 3
read -r _ total failed _ < <(tally_since active green "$release")
check "no request to the active Service failed, through the switch and the old pods' removal ($total requests)" \
  test "$failed" = 0
stop_load active
stop_load preview

say "Controller metrics (http://127.0.0.1:$metrics_port/metrics)"
curl -sf "http://127.0.0.1:$metrics_port/metrics" |
  grep -E "^(rollout_info\{namespace=\"$ns\"|leader_election_master_status|process_resident_memory_bytes)" || true

say "Done: three releases, each checked"
cat <<MSG
The cluster, the controller, Traefik and Prometheus keep running, in network
namespace $netns (commands there: ip netns exec $netns COMMAND):
  ip netns exec $netns env KUBECONFIG=$kubeconfig PATH=$plugin_dir:\$PATH kubectl rollouts list rollouts -n $ns
  ip netns exec $netns curl -H 'Host: canary.demo.local' http://127.0.0.1:$TRAEFIK_PORT/
  ip netns exec $netns curl http://127.0.0.1:$metrics_port/metrics    # and :$healthz_port/readyz
Stop everything the demo started with: hack/demo.sh down
MSG
