#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) from the Go module proxy into a cache outside
# the repository, keyed by version. A second run with the same versions is a
# no-op. Prints the bin directory on its last line.
#
# Usage: hack/build-control-plane.sh
# Env:   ROLLOUTS_CACHE (default ~/.cache/rollouts)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=lib.sh
source "$here/lib.sh"
cache=${ROLLOUTS_CACHE:-$HOME/.cache/rollouts}

die() { echo "build-control-plane: $*" >&2; exit 1; }
log() { echo "build-control-plane: $*" >&2; }


check_go() {
  command -v go >/dev/null 2>&1 ||
    die "Go is not installed (need go >= $GO_MIN_VERSION on PATH; see https://go.dev/doc/install or 'apt-get install golang-go' if new enough)"
  local have
  have=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
  [ -n "$have" ] || die "cannot read the Go version from 'go env GOVERSION'"
  # sort -V puts the smaller version first; if that is not GO_MIN_VERSION, Go is too old.
  if [ "$(printf '%s\n%s\n' "$GO_MIN_VERSION" "$have" | sort -V | head -n1)" != "$GO_MIN_VERSION" ]; then
    die "Go $have is too old: Kubernetes $K8S_VERSION needs go >= $GO_MIN_VERSION"
  fi
}

# A throwaway module outside the repo, so go.mod/go.sum of the build never
# touch the project tree.
new_module() {
  local dir=$1 name=$2
  rm -rf "$dir"
  mkdir -p "$dir"
  (cd "$dir" && go mod init "$name" >/dev/null 2>&1)
}

build_kubernetes() {
  local out=$cache/k8s-$K8S_VERSION/bin
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local missing=0 b
  for b in "${bins[@]}"; do [ -x "$out/$b" ] || missing=1; done
  if [ $missing = 0 ]; then log "kubernetes $K8S_VERSION cached in $out"; return; fi

  local mod=$cache/build/k8s-$K8S_VERSION
  new_module "$mod" rollouts-build/k8s
  cd "$mod"
  local gomod
  log "downloading k8s.io/kubernetes@$K8S_VERSION from the module proxy"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION from the module proxy"
  # Kubernetes v1.Y.Z ships its staging modules as v0.Y.Z; read the list of
  # staging modules from this version's own go.mod rather than hard-coding it.
  local staging=v0.${K8S_VERSION#v1.}
  local replaces
  replaces=$(sed -n 's#^\s*\(k8s\.io/[a-z0-9./-]*\) => \./staging/.*#\1#p' "$gomod")
  [ -n "$replaces" ] || die "found no staging replace lines in $gomod"
  local args=(-require="k8s.io/kubernetes@$K8S_VERSION")
  local r
  for r in $replaces; do args+=(-replace="$r=$r@$staging"); done
  go mod edit "${args[@]}"

  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$out.tmp"
  local pkgs=()
  for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  CGO_ENABLED=0 GOFLAGS=-mod=mod run_logged "kubernetes $K8S_VERSION" "8-20 min cold on 2 cores" \
    go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" "${pkgs[@]}"
  rm -rf "$out"
  mv "$out.tmp" "$out"
  log "kubernetes $K8S_VERSION built into $out"
}

build_etcd() {
  local out=$cache/etcd-$ETCD_VERSION/bin
  if [ -x "$out/etcd" ]; then log "etcd $ETCD_VERSION cached in $out"; return; fi
  local mod=$cache/build/etcd-$ETCD_VERSION
  new_module "$mod" rollouts-build/etcd
  cd "$mod"
  go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  mkdir -p "$out.tmp"
  CGO_ENABLED=0 GOFLAGS=-mod=mod run_logged "etcd $ETCD_VERSION" "1-3 min cold on 2 cores" \
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
  rm -rf "$out"
  mv "$out.tmp" "$out"
  log "etcd $ETCD_VERSION built into $out"
}

build_kwok() {
  local out=$cache/kwok-$KWOK_VERSION/bin
  if [ -x "$out/kwok" ]; then log "kwok $KWOK_VERSION cached in $out"; return; fi
  mkdir -p "$out.tmp"
  CGO_ENABLED=0 GOBIN="$out.tmp" run_logged "kwok $KWOK_VERSION" "1-3 min cold on 2 cores" \
    go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  rm -rf "$out"
  mv "$out.tmp" "$out"
  log "kwok $KWOK_VERSION built into $out"
}

check_go
mkdir -p "$cache"
# One build at a time: two would remove each other's module directories
# (new_module) and race on the output directories.
exec 9>"$cache/build-control-plane.lock"
if command -v flock >/dev/null; then flock 9; fi
start=$(date +%s)
build_etcd
build_kwok
build_kubernetes
log "control plane ready in $(( $(date +%s) - start ))s"
# One bin dir with links, so callers need a single PATH entry.
bin=$cache/bin-k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION
mkdir -p "$bin"
for f in "$cache/k8s-$K8S_VERSION/bin"/* "$cache/etcd-$ETCD_VERSION/bin/etcd" "$cache/kwok-$KWOK_VERSION/bin/kwok"; do
  ln -sf "$f" "$bin/$(basename "$f")"
done
echo "$bin"
