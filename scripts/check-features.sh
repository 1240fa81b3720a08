#!/usr/bin/env bash
# Fast structural checks, no builds:
#  1. the facade's cargo features fan out cleanly: each adapter feature pulls in its own client
#     crate and none of the others' (a `nats` build compiles no lapin, rdkafka or sqlx), the
#     default build pulls in none, `full` pulls in all (cargo tree, normal dependencies);
#  2. docker-compose.yml is valid and has the services and ports the tests use
#     (`docker compose config` where a compose client exists — it needs no engine — and a
#     structural check of services and ports with Python, from compose's JSON or PyYAML).
# Exits non-zero naming every problem found.
set -euo pipefail
cd "$(dirname "$0")/.."

problems=()
fail() {
  problems+=("$1")
  echo "FAIL: $1" >&2
}

# ---- 1. feature fan-out ----------------------------------------------------------------------
# The client crate behind each adapter feature, and (regex) the crates of its family.
declare -A client=([rabbitmq]=lapin [kafka]=rdkafka [nats]=async-nats [postgres]=sqlx-postgres [sqlite]=sqlx-sqlite)
declare -A family=(
  [rabbitmq]='^(lapin|amq-protocol.*)$'
  [kafka]='^(rdkafka|rdkafka-sys)$'
  [nats]='^async-nats$'
  [postgres]='^sqlx-postgres$'
  [sqlite]='^(sqlx-sqlite|libsqlite3-sys)$'
)
adapters=(rabbitmq kafka nats postgres sqlite)

# Prints the names of the adapter client crates in the normal-dependency tree of `longshore`
# built with the given cargo feature arguments (or, failing, cargo's error).
clients_in() {
  local out
  if ! out=$(cargo tree -p longshore -e normal --prefix none --format '{p}' "$@" 2>&1); then
    echo "$out" | tail -3
    return 1
  fi
  local names
  names=$(echo "$out" | awk '{print $1}' | sort -u)
  for a in "${adapters[@]}"; do
    if grep -qE "${family[$a]}" <<<"$names"; then echo "${client[$a]}"; fi
  done
}

# check <label> <expected clients (space separated)> <cargo feature args...>
check() {
  local label=$1 expected=$2
  shift 2
  local got
  if ! got=$(clients_in "$@"); then
    fail "cargo tree -p longshore -e normal $* failed: $got"
    return 0
  fi
  got=$(echo $got) # one line, space separated
  local want
  want=$(tr ' ' '\n' <<<"$expected" | sed '/^$/d' | sort | tr '\n' ' ' | sed 's/ $//')
  local have
  have=$(tr ' ' '\n' <<<"$got" | sed '/^$/d' | sort | tr '\n' ' ' | sed 's/ $//')
  if [[ "$have" == "$want" ]]; then
    echo "ok: $label -> ${have:-no adapter client crates}"
  else
    fail "$label pulls in [${have}] but should pull in exactly [${want}] (cargo tree -p longshore -e normal $*)"
  fi
}

check "default features" ""
check "--no-default-features" "" --no-default-features
check "--no-default-features --features memory" "" --no-default-features --features memory
for a in "${adapters[@]}"; do
  check "--no-default-features --features $a" "${client[$a]}" --no-default-features --features "$a"
  check "--features $a (with the default)" "${client[$a]}" --features "$a"
done
check "--features full" "lapin rdkafka async-nats sqlx-postgres sqlx-sqlite" --features full
# The test harness adds no broker client of its own.
check "--no-default-features --features testing" "" --no-default-features --features testing

# ---- 2. docker-compose.yml -------------------------------------------------------------------
compose_file=${CHECK_COMPOSE_FILE:-docker-compose.yml}
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif docker-compose version >/dev/null 2>&1; then
  compose=(docker-compose)
fi

json=""
if [[ ! -f $compose_file ]]; then
  fail "$compose_file is missing"
else
  if ((${#compose[@]})); then
    if out=$("${compose[@]}" -f "$compose_file" config -q 2>&1); then
      echo "ok: ${compose[*]} config -q accepts $compose_file"
      json=$("${compose[@]}" -f "$compose_file" config --format json 2>/dev/null || true)
    else
      fail "${compose[*]} config rejects $compose_file: $out"
    fi
  else
    echo "note: no docker compose client here; checking $compose_file with Python's YAML parser"
  fi

  # Structural check: from compose's normalised JSON when we have it, else parse the YAML.
  if ! out=$(COMPOSE_JSON="$json" python3 - "$compose_file" <<'PY' 2>&1
import json, os, sys

path = sys.argv[1]
raw = os.environ.get("COMPOSE_JSON", "").strip()
if raw:
    doc = json.loads(raw)
else:
    try:
        import yaml
    except ImportError:
        sys.exit("neither a docker compose client nor PyYAML (python3-yaml) is available to read " + path)
    with open(path) as f:
        try:
            doc = yaml.safe_load(f)
        except yaml.YAMLError as e:
            sys.exit(f"{path} is not valid YAML: {e}")

if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
    sys.exit(f"{path} has no services mapping")

want = {"rabbitmq": 5672, "kafka": 9092, "nats": 4222, "postgres": 5432}
errors = []

def published(port):
    """(host port, container port) of one ports entry, short or long syntax."""
    if isinstance(port, dict):
        return str(port.get("published", "")), str(port.get("target", ""))
    parts = str(port).split("/")[0].split(":")
    if len(parts) == 1:
        return parts[0], parts[0]
    return parts[-2], parts[-1]

for name, port in want.items():
    svc = doc["services"].get(name)
    if not isinstance(svc, dict):
        errors.append(f"service {name} is missing")
        continue
    if not svc.get("image") and not svc.get("build"):
        errors.append(f"service {name} has no image or build")
    ports = [published(p) for p in svc.get("ports") or []]
    if (str(port), str(port)) not in ports:
        errors.append(f"service {name} does not publish port {port} on the host as {port} (ports: {svc.get('ports')})")
    if "healthcheck" not in svc:
        errors.append(f"service {name} has no healthcheck (docker compose up --wait needs one)")

if errors:
    sys.exit("; ".join(errors))
print("ok: services " + ", ".join(f"{n}:{p}" for n, p in want.items()))
PY
  ); then
    fail "$compose_file: $out"
  else
    echo "$out"
  fi
fi

if ((${#problems[@]})); then
  echo >&2
  echo "check-features: ${#problems[@]} problem(s):" >&2
  printf '  - %s\n' "${problems[@]}" >&2
  exit 1
fi
echo "check-features: all good"
