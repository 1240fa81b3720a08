#!/usr/bin/env bash
# Makes sure every broker the test suite talks to is up on 127.0.0.1, starting what is missing.
# A broker that cannot be brought up is a clear failure naming it, never a silent skip.
#
#   scripts/services.sh            check and start everything
#   scripts/services.sh status     only report
set -uo pipefail
cd "$(dirname "$0")/.."

mode=${1:-ensure}
failed=()

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    port_open "$2" && return 0
    sleep 0.1
  done
  return 1
}

have_docker_engine() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

ensure() { # name port start-command...
  local name=$1 port=$2
  shift 2
  if port_open "$port"; then
    echo "ok: $name on 127.0.0.1:$port"
    return 0
  fi
  if [ "$mode" = status ]; then
    echo "DOWN: $name on 127.0.0.1:$port"
    failed+=("$name")
    return 0
  fi
  echo "starting $name ..."
  if "$@" && wait_port "$name" "$port" 60; then
    echo "ok: $name started on 127.0.0.1:$port"
  else
    echo "FAILED: could not start $name on 127.0.0.1:$port" >&2
    failed+=("$name")
  fi
}

start_postgres() {
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  elif have_docker_engine; then
    docker compose up -d --wait postgres
  else
    echo "no PostgreSQL installed and no Docker engine" >&2; return 1
  fi
}

start_rabbitmq() {
  if command -v rabbitmq-server >/dev/null 2>&1; then
    rabbitmq-server -detached
  elif have_docker_engine; then
    docker compose up -d --wait rabbitmq
  else
    echo "no RabbitMQ installed and no Docker engine" >&2; return 1
  fi
}

start_nats() {
  if [ -x /usr/sbin/nats-server ]; then
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  elif have_docker_engine; then
    docker compose up -d --wait nats
  else
    echo "no nats-server installed and no Docker engine" >&2; return 1
  fi
}

start_kafka() {
  if [ -f scripts/kafka-broker.sh ] && ! have_docker_engine; then
    bash scripts/kafka-broker.sh install && bash scripts/kafka-broker.sh start
  elif have_docker_engine; then
    docker compose up -d --wait kafka
  else
    echo "no Kafka broker script" >&2; return 1
  fi
}

ensure postgresql 5432 start_postgres
ensure rabbitmq 5672 start_rabbitmq
ensure nats 4222 start_nats
if [ -f scripts/kafka-broker.sh ] || have_docker_engine; then
  ensure kafka 9092 start_kafka
fi

# Python peers for the wire-compatibility tests (the seed's services are written with aio_pika).
for req in crates/*/tests/python/requirements.txt; do
  [ -f "$req" ] || continue
  if [ "$mode" != status ]; then
    python3 -m pip install --quiet --disable-pip-version-check -r "$req" || failed+=("python deps in $req")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "brokers not available: ${failed[*]}" >&2
  exit 1
fi
