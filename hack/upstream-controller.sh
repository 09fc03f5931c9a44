#!/usr/bin/env bash
# Runs upstream Argo Rollouts' controller (built by hack/build-argo-rollouts.sh)
# with this controller's flags, for side-by-side benchmarks:
#   hack/bench.sh takes BENCH_CONTROLLER=hack/upstream-controller.sh
# Only the flags hack/bench.sh passes are mapped; upstream reads KUBECONFIG.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=versions.env
source "$root/hack/versions.env"
bin=${ARGO_ROLLOUTS_BIN:-$HOME/.cache/rollouts/argo-rollouts-$ARGO_ROLLOUTS_VERSION/bin/rollouts-controller}
[ -x "$bin" ] || { echo "upstream-controller: $bin not built (run hack/build-argo-rollouts.sh)" >&2; exit 1; }
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --log-level) args+=(--loglevel "$2"); shift ;;
    --log-level=*) args+=(--loglevel "${1#*=}") ;;
    --metricsport) args+=(--metricsPort "$2"); shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
exec "$bin" "${args[@]}"
