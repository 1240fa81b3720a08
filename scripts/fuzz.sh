#!/usr/bin/env bash
# Runs every fuzz target (the `fuzz_*` property tests of each crate) with many inputs each and
# prints the total number of executions. Stable Rust has no cargo-fuzz, so the targets are
# proptest properties; a panic or a broken invariant fails the run.
#
#   scripts/fuzz.sh              # 1,000,000 inputs per target
#   CASES=256 scripts/fuzz.sh    # what CI runs as part of the test suite
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/longshore-target}
cases=${CASES:-1000000}
export PROPTEST_CASES=$cases
# Shrinking a failure is fast; a long run must not stop early on the per-test case timeout.
export PROPTEST_MAX_SHRINK_ITERS=10000

list=$(cargo nextest list --workspace --all-features -E 'test(/fuzz_/)' --message-format oneline 2>/dev/null | grep -c 'fuzz_' || true)
echo "fuzz: $list targets x $cases inputs"
start=$(date +%s)
cargo nextest run --workspace --all-features -E "test(/fuzz_/)" \
  --profile fuzz
end=$(date +%s)
total=$((list * cases))
echo "fuzz: $total executions in $((end - start)) s, 0 failures (commit $(git rev-parse --short HEAD), $(date -u +%Y-%m-%d))"
