#!/usr/bin/env bash
# Builds upstream Argo Rollouts' `rollouts-controller` and
# `kubectl-argo-rollouts` (ARGO_ROLLOUTS_VERSION in versions.env) from the Go
# module proxy into a cache outside the repository, keyed by version, for the
# switch-over tests (tests/switch_over.rs). A second run with the same version
# is a no-op. Prints the bin directory on its last line.
#
# The module's go.mod pins every dependency and its go.sum checks their
# hashes; the module itself is checked against the Go checksum database by
# `go mod download`. Its go.mod has replace directives, which `go install
# mod@version` refuses, so the build runs inside a writable copy of the
# module. The web UI (server/static, built by npm upstream) is not in the
# module: a placeholder page stands in for it.
#
# Usage: hack/build-argo-rollouts.sh
# Env:   ROLLOUTS_CACHE (default ~/.cache/rollouts)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=lib.sh
source "$here/lib.sh"
cache=${ROLLOUTS_CACHE:-$HOME/.cache/rollouts}
version=$ARGO_ROLLOUTS_VERSION
module=github.com/argoproj/argo-rollouts

die() { echo "build-argo-rollouts: $*" >&2; exit 1; }
log() { echo "build-argo-rollouts: $*" >&2; }


out=$cache/argo-rollouts-$version/bin
bins=(rollouts-controller kubectl-argo-rollouts)

cached() {
  local b
  for b in "${bins[@]}"; do [ -x "$out/$b" ] || return 1; done
}

if cached; then
  log "argo-rollouts $version cached in $out"
  echo "$out"
  exit 0
fi

command -v go >/dev/null 2>&1 ||
  die "Go is not installed (any Go >= 1.21 can fetch the $ARGO_ROLLOUTS_GOTOOLCHAIN toolchain this build uses)"
# The module asks for a newer Go than the control plane does; the go command
# fetches that toolchain from the module proxy (golang.org/toolchain).
export GOTOOLCHAIN=$ARGO_ROLLOUTS_GOTOOLCHAIN

mkdir -p "$cache"
# One build at a time: two would remove each other's copy of the module and
# race on the output directory.
exec 9>"$cache/build-argo-rollouts.lock"
if command -v flock >/dev/null; then flock 9; fi
# Built by the run we waited for?
if cached; then
  log "argo-rollouts $version cached in $out"
  echo "$out"
  exit 0
fi

start=$SECONDS
work=$cache/build/argo-rollouts-$version
rm -rf "$work"
mkdir -p "$work"
log "downloading $module@$version from the module proxy (and Go $GOTOOLCHAIN if needed)"
src=$(cd "$work" && go mod download -json "$module@$version" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
[ -n "$src" ] && [ -f "$src/go.mod" ] || die "could not download $module@$version from the module proxy"
grep -q "^module $module\$" "$src/go.mod" || die "$src/go.mod is not $module"

# The module cache is read-only; the build needs a copy it may add to.
cp -R "$src" "$work/src"
chmod -R u+w "$work/src"
if ! ls "$work/src/server/static"/*.html >/dev/null 2>&1; then
  mkdir -p "$work/src/server/static"
  cat >"$work/src/server/static/index.html" <<EOF
<!doctype html>
<title>Argo Rollouts $version</title>
<p>Placeholder: this build of Argo Rollouts $version (hack/build-argo-rollouts.sh) has no web UI.</p>
EOF
fi

pkg=$module/utils/version
ldflags="-s -w -X $pkg.version=${version#v} -X $pkg.buildDate=1970-01-01T00:00:00Z"
mkdir -p "$out.tmp"
(
  cd "$work/src"
  CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" run_logged "argo-rollouts $version" "5-8 min cold on 2 cores" \
    go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" ./cmd/rollouts-controller ./cmd/kubectl-argo-rollouts
)
for b in "${bins[@]}"; do [ -x "$out.tmp/$b" ] || die "the build did not produce $b"; done
rm -rf "$out"
mv "$out.tmp" "$out"
rm -rf "$work"
log "argo-rollouts $version built into $out in $((SECONDS - start))s"
echo "$out"
