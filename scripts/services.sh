#!/usr/bin/env bash
# Makes sure every broker the test suite talks to is up on 127.0.0.1, starting what is missing:
# with `docker compose` where a Docker engine runs, otherwise with the machine's own services
# (installing them from Debian packages if needed, see scripts/<broker>-broker.sh).
# A broker that cannot be brought up is a clear failure naming it, never a silent skip.
#
#   scripts/services.sh            check and start everything
#   scripts/services.sh status     only report
set -uo pipefail
cd "$(dirname "$0")/.."

mode=${1:-ensure}
failed=()

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
have_docker_engine() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

ensure() { # name port command...
  local name=$1 port=$2
  shift 2
  if [ "$mode" = status ]; then
    if port_open "$port"; then echo "ok: $name on 127.0.0.1:$port"; else echo "DOWN: $name"; failed+=("$name"); fi
    return
  fi
  if ! port_open "$port" && have_docker_engine; then
    docker compose up -d --wait "$name" || failed+=("$name")
    return
  fi
  # The per-broker scripts are idempotent: they also install tools the tests use
  # (rabbitmqctl, the Kafka-protocol broker) when the port is already open.
  if "$@"; then
    echo "ok: $name on 127.0.0.1:$port"
  else
    echo "FAILED: could not bring up $name on 127.0.0.1:$port" >&2
    failed+=("$name")
  fi
}

kafka_up() { bash scripts/kafka-broker.sh install && bash scripts/kafka-broker.sh start; }

ensure postgres 5432 bash scripts/postgres-server.sh
ensure rabbitmq 5672 bash scripts/rabbitmq-broker.sh
ensure nats 4222 bash scripts/nats-broker.sh
ensure kafka 9092 kafka_up

# Python peers for the wire-compatibility tests (the seed's services use aio_pika).
if [ "$mode" != status ]; then
  bash scripts/rabbitmq-python-interop.sh || failed+=("python interop dependencies (aio_pika)")
  bash scripts/python-jsonschema.sh || failed+=("python jsonschema (the AsyncAPI schema check)")
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "not available: ${failed[*]}" >&2
  exit 1
fi
