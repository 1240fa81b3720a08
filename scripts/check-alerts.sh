#!/usr/bin/env bash
# Checks docs/alerts.yml with promtool (syntax, PromQL) and runs its unit tests
# (docs/alerts_test.yml: each alert fires on the series it is meant for, and only then).
# Installs promtool from Debian's `prometheus` package when it is missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing promtool (Debian package prometheus)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  fi
fi
if ! command -v promtool >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    echo "promtool is required under CI and could not be installed" >&2
    exit 1
  fi
  echo "SKIPPED: promtool not found (install Prometheus' promtool to check docs/alerts.yml)"
  exit 0
fi
promtool check rules docs/alerts.yml
promtool test rules docs/alerts_test.yml
