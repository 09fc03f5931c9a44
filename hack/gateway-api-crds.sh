#!/usr/bin/env bash
# Prints the directory holding the standard-channel CRDs of the Gateway API
# (HTTPRoute, GRPCRoute, Gateway, GatewayClass, ...), taken on first use from
# the Go module sigs.k8s.io/gateway-api on the Go module proxy, pinned by
# the zip's hash, and cached in ${ROLLOUTS_CACHE:-~/.cache/rollouts}/.
# The data-plane rig applies them so Traefik's Gateway API provider runs.
#
# Usage: hack/gateway-api-crds.sh   (stdout: the directory; progress on stderr)
# Env: ROLLOUTS_CACHE (cache; default ~/.cache/rollouts), GOPROXY (its first
#      entry is used; default https://proxy.golang.org)
set -euo pipefail

version=v1.6.1
# sha256 of sigs.k8s.io/gateway-api/@v/v1.6.1.zip as the module proxy serves it
sha256=cbedb5752da4817b0aa55ddf03b19903b3016083f4583b926b4d26e537d82591
cache=${ROLLOUTS_CACHE:-$HOME/.cache/rollouts}
dir=$cache/gateway-api-$version/standard

die() { echo "gateway-api-crds: $*" >&2; exit 1; }
log() { echo "gateway-api-crds: $*" >&2; }

if [ -f "$dir/gateway.networking.k8s.io_httproutes.yaml" ]; then
  echo "$dir"
  exit 0
fi
command -v curl >/dev/null || die "curl is needed to download the Gateway API module"
python3 --version >/dev/null 2>&1 || die "python3 is needed to unpack the module"

mkdir -p "$cache"
exec 9>"$cache/gateway-api.lock"
if command -v flock >/dev/null; then flock 9; fi
if [ -f "$dir/gateway.networking.k8s.io_httproutes.yaml" ]; then
  echo "$dir"
  exit 0
fi

proxy=${GOPROXY:-https://proxy.golang.org}
proxy=${proxy%%,*}
case $proxy in off | direct | "") proxy=https://proxy.golang.org ;; esac
work=$(mktemp -d "$cache/gateway-api-$version.tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "downloading sigs.k8s.io/gateway-api@$version from $proxy"
curl -sSfL --retry 3 -o "$work/module.zip" "$proxy/sigs.k8s.io/gateway-api/@v/$version.zip" ||
  die "downloading the module from $proxy failed"
echo "$sha256  $work/module.zip" | sha256sum -c --quiet - >&2 ||
  die "sigs.k8s.io/gateway-api@$version.zip does not have the pinned sha256 $sha256"
python3 - "$work" "$version" <<'PY' || die "unpacking the module failed"
import os, sys, zipfile
work, version = sys.argv[1], sys.argv[2]
prefix = f"sigs.k8s.io/gateway-api@{version}/config/crd/standard/"
os.makedirs(f"{work}/standard")
with zipfile.ZipFile(f"{work}/module.zip") as z:
    for name in z.namelist():
        base = name[len(prefix):]
        # The CRDs only (not the ValidatingAdmissionPolicy beside them).
        if name.startswith(prefix) and base.startswith("gateway.networking.k8s.io_") and "_vap_" not in base:
            with z.open(name) as src, open(f"{work}/standard/{base}", "wb") as dst:
                dst.write(src.read())
PY
mkdir -p "$(dirname "$dir")"
rm -rf "$dir"
mv "$work/standard" "$dir"
log "Gateway API $version CRDs cached in $dir"
echo "$dir"
