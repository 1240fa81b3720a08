#!/usr/bin/env bash
# The whole test suite: brings up the brokers it needs (scripts/services.sh), then runs every
# test of every crate with every adapter compiled in. Broker tests fail loudly under CI=true
# when a broker is missing; elsewhere they skip with a printed reason.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
# Queues earlier runs left on the shared RabbitMQ (each test declares its own, uniquely named).
bash scripts/rabbitmq-broker.sh clean >/dev/null
# Tuning for the local Kafka-protocol broker when this project started it (faster group joins);
# prints nothing for any other broker.
eval "$(bash scripts/kafka-broker.sh env)"

# Tests that restart a shared broker run alone, after everything else, so they never pull the
# server from under other tests. The restart cells of the fault matrix start brokers of their
# own; they run there too, so that a RabbitMQ node booting on a loaded machine is not starved
# by the rest of the suite (they failed that way once, see crates/longshore-rabbitmq/src/acker.rs).
exclusive='binary_id(longshore-nats::restart) | binary_id(longshore::reliability_restart)'

if cargo nextest --version >/dev/null 2>&1; then
  profile=${NEXTEST_PROFILE:-default}
  cargo nextest run --workspace --all-features --profile "$profile" -E "not ($exclusive)"
  cargo nextest run --workspace --all-features --profile "$profile" -E "$exclusive" --test-threads 1
else
  # cargo test runs one test binary at a time, so the restart test is alone in its binary.
  cargo test --workspace --all-features --no-fail-fast
fi
# nextest does not run doc tests.
cargo test --workspace --all-features --doc
# The Prometheus alert rules users are given: valid, and each fires when it should.
bash scripts/check-alerts.sh
