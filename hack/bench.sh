#!/usr/bin/env bash
# Scale benchmark: N canary Rollouts (2 replicas; setWeight 50, pause 1s,
# setWeight 100) on a local kwok cluster of its own, then an image change on
# all of them. Prints the numbers and appends them to bench/results/results.jsonl.
#
# Usage: hack/bench.sh [N ...]        (default: 100 1000)
# Env:   BENCH_NAMESPACES (default 1), BENCH_QPS (controller --qps, default 500),
#        BENCH_UPDATE_RATE (image changes per second, default 0: all at once),
#        BENCH_TIMEOUT (seconds allowed per phase, default 3600),
#        BENCH_THREADS (controller --rollout-threads, default 10),
#        BENCH_SERVICES=1 (each Rollout names a stable and a canary Service),
#        BENCH_CONTROLLER (the controller to run; default the release build;
#        hack/upstream-controller.sh runs upstream's, for a side-by-side),
#        ROLLOUTS_BENCH_CLUSTER_DIR (default /tmp/rollouts-bench-cluster)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100 1000)

# A cluster of its own, so the benchmark neither disturbs nor is disturbed by
# the test cluster; more fake nodes for the pods of 10,000 Rollouts.
export ROLLOUTS_CLUSTER_DIR=${ROLLOUTS_BENCH_CLUSTER_DIR:-${TMPDIR:-/tmp}/rollouts-bench-cluster}
export ROLLOUTS_NODES=${ROLLOUTS_NODES:-10}
export ROLLOUTS_KWOK_WORKERS=${ROLLOUTS_KWOK_WORKERS:-32}
kubeconfig=$(bash hack/cluster.sh up | tail -n1)
kubectl=("$(cat "$ROLLOUTS_CLUSTER_DIR/bin")/kubectl" --kubeconfig="$kubeconfig")
"${kubectl[@]}" apply --server-side -k crds/ >/dev/null
# shellcheck source=lib.sh
source hack/lib.sh
for crd in rollouts analysisruns analysistemplates clusteranalysistemplates experiments; do
  wait_until "crd/$crd.argoproj.io Established" 60 crd_established "${kubectl[@]}" -- "$crd.argoproj.io" ||
    { echo "bench: the CRDs were not accepted" >&2; exit 1; }
done

cargo build --release --locked --bin rollouts-controller --example scale-bench
target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
out=$root/bench/results
mkdir -p "$out"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet 2>/dev/null || commit="$commit+changes"
[ -z "${BENCH_CONTROLLER:-}" ] || commit="$(basename "$BENCH_CONTROLLER")@$commit"

for n in "${sizes[@]}"; do
  echo "== $n Rollouts" >&2
  KUBECONFIG=$kubeconfig BENCH_COMMIT=$commit "$target/release/examples/scale-bench" \
    --rollouts "$n" --namespaces "${BENCH_NAMESPACES:-1}" --qps "${BENCH_QPS:-500}" \
    --update-rate "${BENCH_UPDATE_RATE:-0}" --timeout-secs "${BENCH_TIMEOUT:-3600}" \
    --threads "${BENCH_THREADS:-10}" ${BENCH_SERVICES:+--services} \
    --controller "${BENCH_CONTROLLER:-$target/release/rollouts-controller}" --out "$out"
done
