#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, beside the single broker on 5672, for the
# longshore-rabbitmq cluster test (tests/cluster.rs: a quorum queue while a node is stopped).
#
# Nodes lsa@localhost, lsb@localhost, lsc@localhost listen on 127.0.0.1:5673, 5674, 5675
# (Erlang distribution on 25673..25675), each with its own config, data and logs under
# $LONGSHORE_RABBIT_CLUSTER_DIR (default /var/tmp/longshore-rabbitmq-cluster). They run as the
# rabbitmq user with the installed broker's Erlang cookie; lsb and lsc join lsa. Three nodes,
# not two: a quorum queue needs a majority of its members, and one of two is no majority.
#
# Usage: bash scripts/rabbitmq-cluster.sh start        starts the nodes not running, joins new ones
#        bash scripts/rabbitmq-cluster.sh start lsb    starts one stopped node again
#        bash scripts/rabbitmq-cluster.sh stop         stops only the nodes this script started
#                                                      and deletes their data
#        bash scripts/rabbitmq-cluster.sh env          prints AMQP_CLUSTER_URLS for the test
set -euo pipefail

DIR=${LONGSHORE_RABBIT_CLUSTER_DIR:-/var/tmp/longshore-rabbitmq-cluster}
NODES=(lsa lsb lsc)
STARTED="$DIR/started"

port_of() { case $1 in lsa) echo 5673 ;; lsb) echo 5674 ;; lsc) echo 5675 ;; esac; }

ctl() { timeout 60 rabbitmqctl -q "$@"; }

running() { ctl -n "$1@localhost" ping >/dev/null 2>&1; }

# Runs a command as the rabbitmq user (the owner of the Erlang cookie), as the installed
# rabbitmq-server wrapper does.
as_rabbitmq() {
  if [ "$(id -u)" = "$(id -u rabbitmq)" ]; then
    sh -c "$1"
  elif [ "$(id -u)" = 0 ]; then
    su rabbitmq -s /bin/sh -c "$1"
  else
    echo "rabbitmq-cluster: run as root or rabbitmq" >&2
    exit 1
  fi
}

start_node() {
  local node=$1 port
  port=$(port_of "$node")
  mkdir -p "$DIR/$node"
  echo "listeners.tcp.local = 127.0.0.1:$port" >"$DIR/$node/rabbitmq.conf"
  echo "[]." >"$DIR/$node/enabled_plugins"
  : >"$DIR/$node/env.conf"
  chown -R rabbitmq:rabbitmq "$DIR/$node"
  # RABBITMQ_CONF_ENV_FILE points away from /etc/rabbitmq/rabbitmq-env.conf, which names the
  # installed node; RABBITMQ_CONFIG_FILE away from its listener on 5672.
  as_rabbitmq "cd /var/lib/rabbitmq && HOME=/var/lib/rabbitmq \
    RABBITMQ_NODENAME=$node@localhost RABBITMQ_NODE_PORT=$port RABBITMQ_DIST_PORT=$((port + 20000)) \
    RABBITMQ_CONFIG_FILE=$DIR/$node/rabbitmq.conf RABBITMQ_CONF_ENV_FILE=$DIR/$node/env.conf \
    RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/$node/enabled_plugins RABBITMQ_MNESIA_BASE=$DIR/$node/mnesia \
    RABBITMQ_LOG_BASE=$DIR/$node/log RABBITMQ_PID_FILE=$DIR/$node/pid ERL_EPMD_ADDRESS=127.0.0.1 \
    ERL_FLAGS='-kernel inet_dist_use_interface {127,0,0,1}' \
    /usr/lib/rabbitmq/bin/rabbitmq-server -detached"
  grep -qx "$node" "$STARTED" 2>/dev/null || echo "$node" >>"$STARTED"
}

await_node() {
  for _ in $(seq 1 60); do
    if ctl -n "$1@localhost" await_startup >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "rabbitmq-cluster: $1@localhost did not start (logs in $DIR/$1/log)" >&2
  exit 1
}

joined() { ctl -n lsa@localhost cluster_status --formatter json | grep -q "\"$1@localhost\""; }

start() {
  command -v rabbitmqctl >/dev/null || { echo "rabbitmq-cluster: rabbitmqctl not installed" >&2; exit 1; }
  mkdir -p "$DIR"
  local wanted=("$@")
  [ ${#wanted[@]} -gt 0 ] || wanted=("${NODES[@]}")
  for node in "${wanted[@]}"; do
    running "$node" || start_node "$node"
  done
  for node in "${wanted[@]}"; do await_node "$node"; done
  for node in "${wanted[@]}"; do
    if [ "$node" != lsa ] && ! joined "$node"; then
      # lsa logs "node_not_running" errors for the node while it joins: only shown on failure.
      local out
      if ! out=$({ ctl -n "$node@localhost" stop_app &&
        ctl -n "$node@localhost" join_cluster lsa@localhost &&
        ctl -n "$node@localhost" start_app; } 2>&1); then
        echo "rabbitmq-cluster: $node could not join lsa: $out" >&2
        exit 1
      fi
    fi
  done
  echo "rabbitmq-cluster: ${wanted[*]} running on 127.0.0.1 (cluster of lsa, lsb, lsc)"
}

stop() {
  [ -f "$STARTED" ] || { echo "rabbitmq-cluster: nothing started here"; return 0; }
  while read -r node; do
    case $node in lsa | lsb | lsc) ctl -n "$node@localhost" stop >/dev/null 2>&1 || true ;; esac
  done <"$STARTED"
  rm -rf "$DIR"
  echo "rabbitmq-cluster: stopped"
}

case ${1:-start} in
  start) shift || true; start "$@" ;;
  stop) stop ;;
  env) echo "export AMQP_CLUSTER_URLS=amqp://guest:guest@127.0.0.1:5673/%2f,amqp://guest:guest@127.0.0.1:5674/%2f,amqp://guest:guest@127.0.0.1:5675/%2f" ;;
  *) echo "usage: $0 start [node]|stop|env" >&2; exit 2 ;;
esac
