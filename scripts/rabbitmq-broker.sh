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

# Starts the server as the rabbitmq user with 20,000 file handles. `rabbitmq-server` run by
# root switches user through su, whose PAM session drops the limit back to 1,024; setpriv
# keeps it.
start_server() {
  if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1 && id rabbitmq >/dev/null 2>&1; then
    (ulimit -n 20000 2>/dev/null || true
      HOME=/var/lib/rabbitmq setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
        rabbitmq-server -detached)
  else
    rabbitmq-server -detached
  fi
}

if ! port_open; then
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "rabbitmq-broker: installing rabbitmq-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  echo "rabbitmq-broker: starting rabbitmq-server"
  start_server
fi

await_up() {
  for _ in $(seq 1 240); do
    if port_open && timeout 20 rabbitmqctl -q await_startup >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "rabbitmq-broker: RabbitMQ did not answer on 127.0.0.1:5672 within 120s" >&2
  return 1
}
await_up || exit 1

# Every quorum queue holds file handles of its own (its Raft log segments). With the usual
# ulimit of 1024 the broker has 927 handles, which the quorum-queue conformance run (some 200
# queues, 3 handles each, beside the classic queues of the other tests) exhausts, and the
# broker then stops answering new connections. A running broker's limit cannot be raised in
# place here (prlimit is not permitted in this container), so a broker with fewer than 8,000
# handles is restarted once with 20,000. Its durable queues survive the restart.
handles=$(timeout 20 rabbitmqctl -q eval \
  'proplists:get_value(total_limit, file_handle_cache:info([total_limit])).' 2>/dev/null || echo 0)
if [ "${handles:-0}" -lt 8000 ] 2>/dev/null; then
  echo "rabbitmq-broker: RabbitMQ has $handles file handles; restarting it with 20,000"
  timeout 60 rabbitmqctl -q stop >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do port_open || break; sleep 0.5; done
  start_server
  await_up || exit 1
fi
echo "rabbitmq-broker: RabbitMQ $(rabbitmqctl -q version 2>/dev/null) answers on 127.0.0.1:5672"

bash scripts/rabbitmq-python-interop.sh

if [ "${1:-}" = clean ]; then
  rabbitmqctl -q list_queues --no-table-headers name 2>/dev/null |
    { grep -E '^(dlq\.)?t[0-9a-f]{12}-|^(dlq\.)?bench[0-9a-f]{8}-|^lapin-probe-' || true; } |
    "${LONGSHORE_PYTHON:-python3}" crates/longshore-rabbitmq/tests/python/delete_queues.py \
      "${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
fi
