#!/usr/bin/env bash
# Makes sure the PostgreSQL server the longshore-postgres tests use is up on 127.0.0.1:5432 and
# that the database named in DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)
# exists. On the CI machines PostgreSQL 15 is preinstalled with trust auth.
#
#   scripts/postgres-server.sh          start if needed, create the database if missing
#   scripts/postgres-server.sh status   only report
set -euo pipefail

url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
db=${url##*/}
db=${db%%\?*}
admin=${url%/*}/postgres

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

if [ "${1:-ensure}" = status ]; then
  if port_open; then echo "ok: postgresql on 127.0.0.1:5432"; else echo "DOWN: postgresql"; exit 1; fi
  exit 0
fi

if ! port_open; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  else
    echo "PostgreSQL is not installed here (apt-get install postgresql, or docker compose up postgres)" >&2
    exit 1
  fi
  for _ in $(seq 1 100); do port_open && break; sleep 0.1; done
  port_open || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
fi

if command -v psql >/dev/null 2>&1; then
  case "$db" in
    *[!A-Za-z0-9_]*|'') echo "unexpected database name in DATABASE_URL" >&2; exit 1 ;;
  esac
  if [ "$(psql "$admin" -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
    psql "$admin" -qc "CREATE DATABASE \"$db\""
    echo "created database $db"
  fi
fi
echo "ok: postgresql on 127.0.0.1:5432, database $db"
