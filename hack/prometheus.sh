#!/usr/bin/env bash
# Prints the path of a Prometheus server binary for the tests, taken from
# Debian's `prometheus` package on first use (apt-get download + dpkg-deb -x,
# nothing installed system-wide) and cached in
# ${ROLLOUTS_CACHE:-~/.cache/rollouts}/prometheus-<version>/.
#
# Usage: hack/prometheus.sh     (stdout: the binary's path; progress on stderr)
# Env: ROLLOUTS_CACHE (cache; default ~/.cache/rollouts),
#      PROMETHEUS_VERSION (upstream version the package must carry)
set -euo pipefail

version=${PROMETHEUS_VERSION:-2.42.0}
cache=${ROLLOUTS_CACHE:-$HOME/.cache/rollouts}
dir=$cache/prometheus-$version
bin=$dir/root/usr/bin/prometheus

die() { echo "prometheus: $*" >&2; exit 1; }
log() { echo "prometheus: $*" >&2; }

# Fast path: already unpacked.
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || die "$tool is needed to fetch Debian's prometheus package (a Debian/Ubuntu machine is assumed)"
done

mkdir -p "$cache"
# Test binaries may ask at the same time: one downloads, the others wait.
exec 9>"$cache/prometheus.lock"
if command -v flock >/dev/null; then
  flock 9
fi
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

work=$(mktemp -d "$cache/prometheus-$version.tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

as_root() { # runs a command as root: directly, or through passwordless sudo
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    return 1
  fi
}

fetch_deb() {
  local uri
  apt-get download prometheus >&2 2>"$work/apt.err" && return 0
  # No package lists yet (or an old one): refresh them if we may.
  if as_root apt-get update >&2 2>>"$work/apt.err"; then
    apt-get download prometheus >&2 2>>"$work/apt.err" && return 0
  fi
  # apt-get download can fail where apt itself cannot write (its sandbox
  # user, a read-only cache): fetch the URL apt would use.
  uri=$(apt-get --print-uris download prometheus 2>>"$work/apt.err" | awk -F"'" '/^'"'"'/ {print $2; exit}')
  [ -n "$uri" ] || return 1
  command -v curl >/dev/null || return 1
  curl -fsSL --retry 3 -o "$work/$(basename "$uri")" "$uri" 2>>"$work/apt.err"
}

log "downloading Debian's prometheus package (first use; cached in $dir)"
if ! fetch_deb; then
  die "could not download Debian's prometheus package: $(tail -n 5 "$work/apt.err" 2>/dev/null | tr '\n' ' ')
  (needs Debian's package lists: run 'apt-get update' as root, then retry)"
fi
deb=$(ls "$work"/prometheus_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || die "apt-get reported success but no prometheus_*.deb is in $work"

# The package carries e.g. 2.42.0+ds-5+deb12u1: its upstream part must match.
pkg_version=$(dpkg-deb -f "$deb" Version)
upstream=${pkg_version#*:}
upstream=${upstream%%[+~-]*}
if [ "$upstream" != "$version" ]; then
  die "Debian's prometheus package is $pkg_version, expected upstream version $version; set PROMETHEUS_VERSION=$upstream (or update the default in hack/prometheus.sh)"
fi

dpkg-deb -x "$deb" "$work/root"
[ -x "$work/root/usr/bin/prometheus" ] || die "$(basename "$deb") has no usr/bin/prometheus"
"$work/root/usr/bin/prometheus" --version >/dev/null 2>"$work/run.err" \
  || die "the unpacked prometheus does not run: $(head -n 5 "$work/run.err" | tr '\n' ' ')"

mkdir -p "$dir"
rm -rf "$dir/root"
mv "$work/root" "$dir/root"
echo "$pkg_version" >"$dir/deb-version"
log "unpacked $pkg_version into $dir"
echo "$bin"
