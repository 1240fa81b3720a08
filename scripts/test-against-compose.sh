#!/usr/bin/env bash
# Runs a service's tests (written with `longshore::testing`) once per backend, each run with
# LONGSHORE_TEST_URL naming that backend. Brings the brokers up first: `docker compose up -d
# --wait` where a Docker engine runs (docker-compose.yml), otherwise scripts/services.sh (the
# machine's own services, as on CI here).
#
#   scripts/test-against-compose.sh                      # this repo's example tests
#   scripts/test-against-compose.sh cargo test -p my-service --features longshore/full
#   BACKENDS="nats postgres" scripts/test-against-compose.sh
#
# The URLs default to the compose ports on 127.0.0.1; AMQP_URL, NATS_URL, DATABASE_URL and
# KAFKA_BROKERS override them. Exits non-zero if any backend's run failed, naming them.
set -uo pipefail
cd "$(dirname "$0")/.."

backends=${BACKENDS:-memory rabbitmq nats postgres kafka}
if [ $# -eq 0 ]; then
  set -- cargo test --features full,testing --test testing_example --test testing_chain
fi

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  docker compose up -d --wait || exit 1
else
  echo "no Docker engine here: using the local brokers (scripts/services.sh)"
  bash scripts/services.sh || exit 1
fi

kafka=${KAFKA_BROKERS:-127.0.0.1:9092}
case $kafka in *://*) ;; *) kafka="kafka://$kafka" ;; esac
declare -A url=(
  [memory]="memory://"
  [rabbitmq]="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
  [nats]="${NATS_URL:-nats://127.0.0.1:4222}"
  [postgres]="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
  [kafka]="$kafka"
)

failed=()
for b in $backends; do
  if [ -z "${url[$b]:-}" ]; then
    echo "unknown backend $b (expected: ${!url[*]})" >&2
    failed+=("$b")
    continue
  fi
  echo "== $b"
  # CI=true: an unreachable broker fails the run instead of skipping it.
  if ! LONGSHORE_TEST_URL="${url[$b]}" CI=true "$@"; then
    failed+=("$b")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "failed on: ${failed[*]}" >&2
  exit 1
fi
echo "passed on: $backends"
