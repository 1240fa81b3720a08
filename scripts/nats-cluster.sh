#!/usr/bin/env bash
# A local three-node nats-server cluster with JetStream, for the tests of replicated streams
# (crates/longshore-nats/tests/cluster.rs). No Docker: the installed nats-server binary runs
# nodes n1..n3 on 127.0.0.1, client ports 4251-4253, cluster ports 6251-6253, monitoring ports
# 8251-8253; configs, stores, logs and pidfiles live under /var/tmp/longshore-nats-cluster.
#
# Usage: bash scripts/nats-cluster.sh start [N]  start the nodes not running (or node N) and
#                                                wait (bounded) until every node serves JetStream
#        bash scripts/nats-cluster.sh stop       stop the nodes this script started, remove stores
#        bash scripts/nats-cluster.sh status     one line per node; exit 0 only if all three run
#        bash scripts/nats-cluster.sh kill N     SIGKILL node N (a crash); its store is kept
#        bash scripts/nats-cluster.sh pid N      node N's pid
#
# Only processes this script started are signalled: a pid is taken from the node's pidfile and
# used only while that process's command line names this script's config for the node.
set -euo pipefail

DIR=${LONGSHORE_NATS_CLUSTER_DIR:-/var/tmp/longshore-nats-cluster}
NODES=(1 2 3)
# Bounds, in tenths of a second.
READY_LIMIT=300
STOP_LIMIT=100

server_bin() {
  if command -v nats-server >/dev/null 2>&1; then
    command -v nats-server
  else
    echo /usr/sbin/nats-server
  fi
}

conf() { echo "$DIR/n$1.conf"; }
pidfile() { echo "$DIR/n$1.pid"; }
client_port() { echo $((4250 + $1)); }
http_port() { echo $((8250 + $1)); }

# Prints node $1's pid if it runs and this script started it; fails otherwise.
pid_of() {
  local file pid
  file=$(pidfile "$1")
  [ -f "$file" ] || return 1
  pid=$(cat "$file" 2>/dev/null || true)
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-c $(conf "$1") " || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_conf() {
  local n=$1
  cat >"$(conf "$n")" <<EOF
server_name: n$n
listen: 127.0.0.1:$(client_port "$n")
http: 127.0.0.1:$(http_port "$n")
jetstream { store_dir: "$DIR/n$n" }
cluster {
  name: longshore-test
  listen: 127.0.0.1:$((6250 + n))
  routes: [
    nats-route://127.0.0.1:6251
    nats-route://127.0.0.1:6252
    nats-route://127.0.0.1:6253
  ]
}
EOF
}

start_node() {
  local n=$1 bin
  if pid_of "$n" >/dev/null; then
    return 0
  fi
  if port_open "$(client_port "$n")"; then
    echo "nats-cluster: port $(client_port "$n") is taken by a process this script did not start" >&2
    return 1
  fi
  bin=$(server_bin)
  [ -x "$bin" ] || { echo "nats-cluster: no nats-server binary (bash scripts/nats-broker.sh installs it)" >&2; return 1; }
  mkdir -p "$DIR/n$n"
  write_conf "$n"
  rm -f "$(pidfile "$n")"
  # stdio to /dev/null: the node must not hold the caller's pipes open.
  nohup "$bin" -c "$(conf "$n")" -P "$(pidfile "$n")" -l "$DIR/n$n.log" </dev/null >/dev/null 2>&1 &
  echo "nats-cluster: started n$n (pid $!) on 127.0.0.1:$(client_port "$n")"
}

# Waits until every node accepts clients and reports JetStream healthy. `wait_ready` asks the
# full health check (a meta leader known, every stream and consumer current): right for a new
# cluster. `wait_ready js-server-only=true` asks only that JetStream runs on each node: right
# after restarting one node, whose idle consumers can stay "not current" for a long time
# while it catches up (seen with nats-server 2.9.10); the caller's own checks cover the data.
wait_ready() {
  local n tries query=${1:-}
  for n in "${NODES[@]}"; do
    tries=0
    until port_open "$(client_port "$n")" &&
      curl -fsS -m 1 "http://127.0.0.1:$(http_port "$n")/healthz${query:+?$query}" 2>/dev/null |
      grep -q '"ok"'; do
      tries=$((tries + 1))
      if [ "$tries" -ge "$READY_LIMIT" ]; then
        echo "nats-cluster: n$n not healthy within $((READY_LIMIT / 10))s (log: $DIR/n$n.log)" >&2
        return 1
      fi
      sleep 0.1
    done
  done
  echo "nats-cluster: 3 nodes serve JetStream on 127.0.0.1:4251-4253"
}

stop_node() {
  local n=$1 pid tries=0
  pid=$(pid_of "$n") || { rm -f "$(pidfile "$n")"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  while [ -d "/proc/$pid" ] && pid_of "$n" >/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -ge "$STOP_LIMIT" ]; then
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  rm -f "$(pidfile "$n")"
  echo "nats-cluster: stopped n$n (pid $pid)"
}

node_arg() {
  [[ "${1:-}" =~ ^[123]$ ]] || { echo "nats-cluster: node must be 1, 2 or 3" >&2; exit 2; }
}

mkdir -p "$DIR"
case "${1:-}" in
  start)
    if [ -n "${2:-}" ]; then
      node_arg "$2"
      start_node "$2"
      wait_ready js-server-only=true
    else
      for n in "${NODES[@]}"; do start_node "$n"; done
      wait_ready
    fi
    ;;
  stop)
    for n in "${NODES[@]}"; do stop_node "$n"; done
    for n in "${NODES[@]}"; do rm -rf "${DIR:?}/n$n" "$(conf "$n")"; done
    ;;
  status)
    running=0
    for n in "${NODES[@]}"; do
      if pid=$(pid_of "$n"); then
        echo "n$n running (pid $pid) on 127.0.0.1:$(client_port "$n")"
        running=$((running + 1))
      else
        echo "n$n stopped"
      fi
    done
    [ "$running" -eq "${#NODES[@]}" ]
    ;;
  kill)
    node_arg "${2:-}"
    pid=$(pid_of "$2") || { echo "nats-cluster: n$2 is not running (or not started by this script)" >&2; exit 1; }
    kill -KILL "$pid"
    # Gone once its command line is (a zombie has none): bounded, SIGKILL cannot be refused.
    tries=0
    while pid_of "$2" >/dev/null && [ "$tries" -lt "$STOP_LIMIT" ]; do
      tries=$((tries + 1))
      sleep 0.05
    done
    echo "nats-cluster: killed n$2 (pid $pid)"
    ;;
  pid)
    node_arg "${2:-}"
    pid_of "$2"
    ;;
  *)
    echo "usage: $0 start [N] | stop | status | kill N | pid N" >&2
    exit 2
    ;;
esac
