#!/usr/bin/env bash
# The whole test suite: brings up the brokers it needs (scripts/services.sh), then runs every
# test of every crate with every adapter compiled in. Broker tests fail loudly under CI=true
# when a broker is missing; elsewhere they skip with a printed reason.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --profile "${NEXTEST_PROFILE:-default}"
else
  cargo test --workspace --all-features --no-fail-fast
fi
# nextest does not run doc tests.
cargo test --workspace --all-features --doc
