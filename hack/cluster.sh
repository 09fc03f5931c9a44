#!/usr/bin/env bash
# A real local Kubernetes control plane on 127.0.0.1, without containers:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake
# nodes that walk pods through Running/Ready/Succeeded).
#
# Usage: hack/cluster.sh up|down|status|kubeconfig|restart kube-apiserver
#   up          build (cached) and start the cluster; a no-op when it runs
#   down        stop exactly the processes `up` started, remove the state
#   status      exit 0 when the cluster runs, 1 otherwise
#   kubeconfig  print the kubeconfig path
#   restart kube-apiserver
#               stop the API server and start it again with the same flags
#               and port, and wait until it is ready (an outage, for tests)
# Env: ROLLOUTS_CLUSTER_DIR (state; default /tmp/rollouts-cluster),
#      ROLLOUTS_CACHE (build cache; default ~/.cache/rollouts),
#      ROLLOUTS_NODES (fake nodes; default 3),
#      ROLLOUTS_CLUSTER_QPS (controller-manager/scheduler client QPS; default 300)
#      ROLLOUTS_KWOK_WORKERS (kwok's pod stage workers; default 4, kwok's own)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
state=${ROLLOUTS_CLUSTER_DIR:-${TMPDIR:-/tmp}/rollouts-cluster}
nodes=${ROLLOUTS_NODES:-3}
# Client QPS of the controller-manager and scheduler: their defaults (20 and
# 50) would make pod creation, not our controller, the bottleneck of the
# scale benchmark.
qps=${ROLLOUTS_CLUSTER_QPS:-300}
# kwok readies and deletes pods with this many workers, one API request at
# a time each: at its default of 4, the tens of thousands of pods of the
# 10,000-Rollout benchmark took over an hour, with our controller idle.
kwok_workers=${ROLLOUTS_KWOK_WORKERS:-4}
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

die() { echo "cluster: $*" >&2; exit 1; }
log() { echo "cluster: $*" >&2; }

pid_alive() { [ -f "$state/pids/$1" ] && kill -0 "$(cat "$state/pids/$1")" 2>/dev/null; }

running() {
  local c
  for c in "${components[@]}"; do pid_alive "$c" || return 1; done
  return 0
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

stop_component() { # name: TERM, KILL if still there after 5s
  local f=$state/pids/$1 pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop() {
  [ -d "$state/pids" ] || return 0
  local c
  # Reverse start order: kwok and controllers first, etcd last.
  for c in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_component "$c"
  done
}

start() { # name, command...
  local name=$1; shift
  # 8>&-: the components must not inherit the lock `up` holds, or it would
  # stay held as long as they run and the next `up` would wait forever.
  setsid "$@" >"$state/logs/$name.log" 2>&1 < /dev/null 8>&- &
  echo $! >"$state/pids/$name"
}

start_saved() { # name: start it with the command line saved in $state/<name>.cmd
  local cmd
  mapfile -d '' -t cmd <"$state/$1.cmd"
  start "$1" "${cmd[@]}"
}

wait_for() { # description, timeout seconds, command...
  wait_until "$@" || die "gave up on $1 (logs in $state/logs)"
}

gen_pki() {
  local p=$state/pki
  mkdir -p "$p"
  command -v openssl >/dev/null || die "openssl is needed to generate the cluster certificates (apt-get install openssl)"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=rollouts-local-ca" \
    -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
  cat >"$p/serving.ext" <<EOF
subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth
EOF
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$p/apiserver.key" -out "$p/apiserver.csr" 2>/dev/null
  openssl x509 -req -in "$p/apiserver.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 3650 \
    -extfile "$p/serving.ext" -out "$p/apiserver.crt" 2>/dev/null
  echo "extendedKeyUsage=clientAuth" >"$p/client.ext"
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kwok-admin" -keyout "$p/admin.key" -out "$p/admin.csr" 2>/dev/null
  openssl x509 -req -in "$p/admin.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 3650 \
    -extfile "$p/client.ext" -out "$p/admin.crt" 2>/dev/null
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
}

write_kubeconfig() { # port
  cat >"$state/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rollouts-local
  cluster:
    server: https://127.0.0.1:$1
    certificate-authority: $state/pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $state/pki/admin.crt
    client-key: $state/pki/admin.key
contexts:
- name: rollouts-local
  context: {cluster: rollouts-local, user: admin}
current-context: rollouts-local
EOF
}

nodes_yaml() {
  local i
  for i in $(seq 1 "$nodes"); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
spec:
  podCIDR: 10.244.$i.0/24
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "10000"}
  capacity: {cpu: "64", memory: 256Gi, pods: "10000"}
  nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake}
  phase: Running
EOF
  done
}

up() {
  # Two `up` at once (test binaries, a demo beside the tests) would both
  # start a cluster in the same state directory: one waits for the other.
  mkdir -p "$(dirname "$state")"
  exec 8>"$state.lock"
  if command -v flock >/dev/null; then flock 8; fi
  if running; then
    log "already running (state in $state)"
    echo "$state/kubeconfig"
    return 0
  fi
  stop # leftovers of a cluster that died halfway
  local bin
  bin=$("$here/build-control-plane.sh" | tail -n1)
  [ -x "$bin/kube-apiserver" ] || die "build did not produce binaries in $bin"
  rm -rf "$state"
  mkdir -p "$state"/{pids,logs,etcd,kwok-home}
  echo "$bin" >"$state/bin"
  gen_pki
  local etcd_port etcd_peer api_port kcm_port sched_port
  etcd_port=$(free_port); etcd_peer=$(free_port); api_port=$(free_port)
  kcm_port=$(free_port); sched_port=$(free_port)
  write_kubeconfig "$api_port"
  local p=$state/pki kc=$state/kubeconfig

  log "starting etcd on 127.0.0.1:$etcd_port"
  start etcd "$bin/etcd" --name=local --data-dir="$state/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-cluster="local=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync=true \
    --quota-backend-bytes=8589934592 --log-level=warn
  wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"

  log "starting kube-apiserver on 127.0.0.1:$api_port"
  # Saved (NUL-separated) so that `restart kube-apiserver` repeats it exactly.
  printf '%s\0' "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" --etcd-prefix=/registry \
    --allow-privileged=true --authorization-mode=Node,RBAC \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.96.0.0/16 \
    --proxy-client-cert-file="$p/admin.crt" --proxy-client-key-file="$p/admin.key" \
    --requestheader-client-ca-file="$p/ca.crt" --requestheader-allowed-names=kwok-admin \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    >"$state/kube-apiserver.cmd"
  start_saved kube-apiserver
  local kubectl=("$bin/kubectl" --kubeconfig="$kc")
  wait_for kube-apiserver 90 "${kubectl[@]}" get --raw /readyz

  log "starting kube-controller-manager, kube-scheduler"
  start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" \
    --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics \
    --root-ca-file="$p/ca.crt" --service-account-private-key-file="$p/sa.key" \
    --use-service-account-credentials=false --leader-elect=false \
    --kube-api-qps="$qps" --kube-api-burst=$((qps * 2)) --concurrent-replicaset-syncs=10
  start kube-scheduler "$bin/kube-scheduler" --kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" \
    --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics --leader-elect=false \
    --kube-api-qps="$qps" --kube-api-burst=$((qps * 2))

  log "starting kwok with $nodes fake nodes"
  # Every option spelled out: the defaults kwok applies without a
  # configuration are not all applied to one that is given.
  cat >"$state/kwok-options.yaml" <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  podPlayStageParallelism: $kwok_workers
  nodePlayStageParallelism: 4
  nodeLeaseParallelism: 4
  podsOnNodeSyncParallelism: 1
  enablePodsOnNodeSyncListPager: true
  enablePodsOnNodeSyncStreamWatch: false
  manageAllNodes: false
  enableDebuggingHandlers: true
  enableProfilingHandler: true
  enableContentionProfiling: false
EOF
  # HOME is isolated so a user's ~/.kwok/kwok.yaml is not merged in.
  start kwok env HOME="$state/kwok-home" "$bin/kwok" --kubeconfig="$kc" \
    --config="$here/kwok.yaml" --config="$state/kwok-options.yaml" \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=127.0.0.1 --cidr=10.244.0.1/16
  nodes_yaml | "${kubectl[@]}" apply -f - >/dev/null
  nodes_ready() {
    local ready
    ready=$("${kubectl[@]}" get nodes --no-headers 2>&1 | grep -cw Ready || true)
    [ "$ready" -ge "$nodes" ] || { echo "$ready of $nodes nodes Ready"; return 1; }
  }
  wait_for "$nodes ready nodes" 60 nodes_ready
  wait_for "the default service account" 60 "${kubectl[@]}" get serviceaccount default -n default
  running || die "a component exited during start-up (logs in $state/logs)"
  log "cluster ready: export KUBECONFIG=$kc"
  echo "$kc"
}

restart() { # component
  [ "${1:-}" = kube-apiserver ] || die "usage: hack/cluster.sh restart kube-apiserver"
  running || die "the cluster is not running (hack/cluster.sh up)"
  local saved=$state/kube-apiserver.cmd
  # A cluster started before the command line was saved: take it from the
  # running process (/proc/PID/cmdline is NUL-separated too).
  [ -f "$saved" ] || cp "/proc/$(cat "$state/pids/kube-apiserver")/cmdline" "$saved"
  log "restarting kube-apiserver"
  stop_component kube-apiserver
  mv -f "$state/logs/kube-apiserver.log" "$state/logs/kube-apiserver.log.1"
  start_saved kube-apiserver
  wait_for kube-apiserver 90 "$(cat "$state/bin")/kubectl" --kubeconfig="$state/kubeconfig" get --raw /readyz
  log "kube-apiserver ready again"
}

case "${1:-}" in
  up) up ;;
  down) stop; rm -rf "$state" "$state.lock"; log "stopped" ;;
  status) if running; then echo "running: KUBECONFIG=$state/kubeconfig"; else echo "not running"; exit 1; fi ;;
  kubeconfig) echo "$state/kubeconfig" ;;
  restart) restart "${2:-}" ;;
  *) die "usage: hack/cluster.sh up|down|status|kubeconfig|restart kube-apiserver" ;;
esac
