#!/usr/bin/env bash
# Fuzzes the parsers, the validation, the planner and the condition
# evaluation with cargo-fuzz (libFuzzer; needs a nightly toolchain).
#
# Usage: hack/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS  how long to run each target (default 60)
#   TARGET   rollout, analysis_template, condition (default: all three)
#
# Each target starts from the seeds in fuzz/corpus/<target>/ (committed;
# the rollout target also from tests/fixtures/malformed/)
# and keeps what it learns in fuzz/work/<target>/ (not committed), so the
# seeds stay a small, readable set. A crash is written to
# fuzz/artifacts/<target>/ and stops the run: reproduce it with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
# then fix it, add a unit test, and copy the input into the seeds so that
# tests/fuzz_corpus.rs (plain `cargo test`) keeps it fixed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(rollout analysis_template condition)
fi
case $seconds in
  '' | *[!0-9]*) echo "fuzz: SECONDS must be a number, not '$seconds'" >&2; exit 2 ;;
esac

cargo_fuzz_version=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q " $cargo_fuzz_version"; then
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi

for target in "${targets[@]}"; do
  dict=fuzz/dict/$target.dict
  [ -f "fuzz/fuzz_targets/$target.rs" ] || { echo "fuzz: no target '$target'" >&2; exit 2; }
  mkdir -p "fuzz/work/$target"
  printf '\n== %s for %ss\n' "$target" "$seconds" >&2
  # -rss_limit_mb: a condition or manifest that makes the controller
  # allocate gigabytes is a bug too. -timeout: one input taking longer
  # than 10 s is a hang.
  seeds=("fuzz/corpus/$target")
  # The malformed Rollouts of the integration test are seeds too.
  if [ "$target" = rollout ]; then seeds+=(tests/fixtures/malformed); fi
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" "fuzz/work/$target" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -dict="$dict" -print_final_stats=1
done
