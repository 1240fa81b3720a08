#!/usr/bin/env bash
# Cost per message on the memory backend, counted rather than timed (repeatable on a noisy
# machine): CPU instructions under callgrind, heap allocations under valgrind's DHAT, for
#   decode:     one ~250-byte seed-format event decoded into its typed event;
#   decode-raw: the same bytes read by serde_json alone, in one pass, into a plain struct of
#               the same fields (the floor for decode; informational, never gated);
#   path:       publish (batches of 100) -> consumer runtime -> typed handler -> ack.
# Each is counted at two sizes and the difference divided, so one-time costs drop out
# (crates/longshore-bench/src/bin/cost.rs says how).
#
#   scripts/cost.sh            # count, print, compare with the baseline; fails if decode's
#                              # or path's instruction count regressed by more than 10 %
#   scripts/cost.sh --update   # count and write the baseline (commit it)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/longshore-target}
BASELINE=crates/longshore-bench/cost-baseline.json
TOLERANCE=${COST_TOLERANCE:-10}

if ! command -v valgrind >/dev/null 2>&1; then
  echo "cost: installing valgrind"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
cargo build --quiet --release -p longshore-bench --bin cost
bin=$CARGO_TARGET_DIR/release/cost
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Instructions collected inside cost::measured.
instructions() {
  valgrind --tool=callgrind --toggle-collect='cost::measured' \
    --callgrind-out-file="$out/cg" "$bin" "$@" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
# Heap blocks allocated over the whole run.
blocks() {
  valgrind --tool=dhat --dhat-out-file="$out/dh" "$bin" "$@" 2>&1 |
    sed -n 's/.*Total:.* in \([0-9,]*\) blocks.*/\1/p' | tr -d ,
}

declare -A small=([decode]=2000 [decode-raw]=2000 [path]=2000)
declare -A large=([decode]=12000 [decode-raw]=12000 [path]=12000)
declare -A counted
json="{"
for piece in decode decode-raw path; do
  a=${small[$piece]} b=${large[$piece]}
  i1=$(instructions "$piece" "$a")
  i2=$(instructions "$piece" "$b")
  m1=$(( $(blocks "$piece" "$a") - $(blocks "$piece" "$a" setup) ))
  m2=$(( $(blocks "$piece" "$b") - $(blocks "$piece" "$b" setup) ))
  ins=$(( (i2 - i1) / (b - a) ))
  allocs=$(python3 -c "print(round(($m2 - $m1) / ($b - $a), 2))")
  counted[$piece]=$ins
  echo "cost: $piece: $ins instructions, $allocs allocations per message"
  json+="\"$piece\": {\"instructions\": $ins, \"allocations\": $allocs},"
done
json="${json%,}}"
# What longshore's decode costs beyond serde_json's own reading of the same bytes.
python3 -c "print(f'cost: decode / decode-raw: {${counted[decode]} / ${counted[decode-raw]}:.2f}x')"
echo "$json" | python3 -m json.tool >"$out/now.json"

if [ "${1:-}" = --update ]; then
  cp "$out/now.json" "$BASELINE"
  echo "cost: wrote $BASELINE"
  exit 0
fi
python3 - "$BASELINE" "$out/now.json" "$TOLERANCE" <<'EOF'
import json, sys
base, now, tol = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), float(sys.argv[3])
failed = False
for piece, b in base.items():
    n = now[piece]
    if piece == "decode-raw":
        # serde_json's cost, not longshore's: shown, never gated.
        print(f"cost: {piece}: {n['instructions']} instructions (baseline {b['instructions']}): "
              f"informational; allocations {n['allocations']} (baseline {b['allocations']})")
        continue
    limit = b["instructions"] * (1 + tol / 100)
    verdict = "ok" if n["instructions"] <= limit else "REGRESSED"
    failed |= verdict != "ok"
    print(f"cost: {piece}: {n['instructions']} instructions (baseline {b['instructions']}, "
          f"limit {int(limit)}): {verdict}; allocations {n['allocations']} "
          f"(baseline {b['allocations']})")
sys.exit(1 if failed else 0)
EOF
