#!/usr/bin/env bash
# The fault matrix, from one command: runs every fault test on every backend with
# LONGSHORE_RELIABILITY_N messages (default 10,000; CI runs 400 as part of the test suite),
# collects their rows and rewrites the generated table of RELIABILITY.md.
#
#   scripts/reliability.sh            # full run (brokers from scripts/services.sh)
#   N=2000 scripts/reliability.sh     # smaller
#   OUT=/var/tmp/rows scripts/reliability.sh   # rows kept in OUT (a later run adds to them)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/longshore-target}
export LONGSHORE_RELIABILITY_N=${N:-10000}
out=${OUT:-$(mktemp -d)}   # OUT=dir keeps the rows, to add cells run later
mkdir -p "$out"
export LONGSHORE_RELIABILITY_OUT=$out
bash scripts/services.sh >/dev/null
eval "$(bash scripts/kafka-broker.sh env)"

# Network faults through the proxy, every backend; then the backend-specific faults.
cargo nextest run --all-features --no-fail-fast --test reliability || true
cargo nextest run -p longshore-postgres --all-features --no-fail-fast -E 'test(/terminat/)' || true
cargo nextest run -p longshore-nats --all-features --no-fail-fast --test cluster || true
cargo nextest run -p longshore-kafka --all-features --no-fail-fast --test mock_cluster || true
cargo nextest run -p longshore-rabbitmq --all-features --no-fail-fast -E 'binary(cluster)' || true
# Processes: a broker of each cell's own restarted twice (clean, then SIGKILL), and a consumer
# process SIGKILLed and started again on the shared brokers.
cargo nextest run --all-features --no-fail-fast --test reliability_restart --test reliability_consumer_kill || true
# SQLite (no broker): a consumer process and an appending process SIGKILLed on one file.
cargo nextest run -p longshore-sqlite --no-fail-fast --test processes -E 'test(/sigkill/)' || true

python3 scripts/reliability_table.py "$out" RELIABILITY.md
echo "rows from $out written to RELIABILITY.md"
