#!/usr/bin/env bash
# Installs what the RabbitMQ interop tests (crates/longshore-rabbitmq/tests/interop.rs) need:
# aio_pika from crates/longshore-rabbitmq/tests/python/requirements.txt, for the interpreter
# the tests run (LONGSHORE_PYTHON, default python3). Idempotent.
# Usage: bash scripts/rabbitmq-python-interop.sh
set -euo pipefail
cd "$(dirname "$0")/.."

py=${LONGSHORE_PYTHON:-python3}
req=crates/longshore-rabbitmq/tests/python/requirements.txt

if ! "$py" -c "import aio_pika" 2>/dev/null; then
  echo "rabbitmq-python-interop: installing $(tr '\n' ' ' <"$req")for $py"
  "$py" -m pip install --quiet --disable-pip-version-check -r "$req" 2>/dev/null ||
    # A Debian system interpreter refuses pip without this flag (PEP 668).
    "$py" -m pip install --quiet --disable-pip-version-check --break-system-packages -r "$req"
fi
"$py" -c "import aio_pika; print('rabbitmq-python-interop: aio_pika', aio_pika.__version__)"
