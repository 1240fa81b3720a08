#!/usr/bin/env bash
# Makes sure RabbitMQ answers on 127.0.0.1:5672 for the longshore-rabbitmq tests (starting the
# installed server when the port is closed, bounded wait), that `rabbitmqctl` works (the
# reconnect test force-closes connections with it), and that aio_pika is installed for the
# interop tests (scripts/rabbitmq-python-interop.sh).
# Usage: bash scripts/rabbitmq-broker.sh        (idempotent; exits non-zero if RabbitMQ never answers)
#        bash scripts/rabbitmq-broker.sh clean  (also deletes the queues earlier test runs left:
#                                                t<12 hex>-*, dlq.t<12 hex>-*, bench*-*, lapin-probe-*)
set -euo pipefail
cd "$(dirname "$0")/.."

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if ! port_open; then
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "rabbitmq-broker: installing rabbitmq-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  echo "rabbitmq-broker: starting rabbitmq-server"
  rabbitmq-server -detached
fi

ok=
for _ in $(seq 1 120); do
  if port_open && timeout 20 rabbitmqctl -q await_startup >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.5
done
if [ -z "$ok" ]; then
  echo "rabbitmq-broker: RabbitMQ did not answer on 127.0.0.1:5672 within 60s" >&2
  exit 1
fi
echo "rabbitmq-broker: RabbitMQ $(rabbitmqctl -q version 2>/dev/null) answers on 127.0.0.1:5672"

bash scripts/rabbitmq-python-interop.sh

if [ "${1:-}" = clean ]; then
  rabbitmqctl -q list_queues --no-table-headers name 2>/dev/null |
    grep -E '^(dlq\.)?t[0-9a-f]{12}-|^(dlq\.)?bench[0-9a-f]{8}-|^lapin-probe-' |
    "${LONGSHORE_PYTHON:-python3}" crates/longshore-rabbitmq/tests/python/delete_queues.py \
      "${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
fi
