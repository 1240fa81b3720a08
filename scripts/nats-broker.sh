#!/usr/bin/env bash
# Makes sure a nats-server with JetStream answers on 127.0.0.1:4222 for longshore-nats tests.
# Installs the Debian package when the binary is missing, starts the server with the exact
# command of DESIGN.md when the port is closed, and waits (bounded) until it answers.
# Usage: bash scripts/nats-broker.sh      (idempotent; exits non-zero if NATS never answers)
set -euo pipefail

port_open() { (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; }

if ! [ -x /usr/sbin/nats-server ]; then
  echo "nats-broker: installing nats-server"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi
mkdir -p /var/lib/nats-server

if ! port_open; then
  echo "nats-broker: starting nats-server with JetStream on 127.0.0.1:4222"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
fi

for _ in $(seq 1 100); do
  if port_open; then
    echo "nats-broker: nats-server $(/usr/sbin/nats-server --version 2>/dev/null | awk '{print $NF}') answers on 127.0.0.1:4222"
    exit 0
  fi
  sleep 0.2
done
echo "nats-broker: nats-server did not answer on 127.0.0.1:4222 within 20s" >&2
exit 1
