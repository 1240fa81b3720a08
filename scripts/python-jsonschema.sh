#!/usr/bin/env bash
# Installs Python's jsonschema, which tests/asyncapi.rs uses to check generated AsyncAPI
# documents against the official AsyncAPI 3.0 schema (docs/asyncapi/). Idempotent.
# Usage: bash scripts/python-jsonschema.sh
set -euo pipefail

py=${LONGSHORE_PYTHON:-python3}
if ! "$py" -c "import jsonschema" 2>/dev/null; then
  echo "python-jsonschema: installing jsonschema for $py"
  "$py" -m pip install --quiet --disable-pip-version-check jsonschema 2>/dev/null ||
    # A Debian system interpreter refuses pip without this flag (PEP 668).
    "$py" -m pip install --quiet --disable-pip-version-check --break-system-packages jsonschema
fi
"$py" -c "import jsonschema; print('python-jsonschema: ok')"
