#!/usr/bin/env bash
# Search load benchmark (not part of CI), all in ONE run on this machine:
#   1. populate a data dir with PRODUCTS indexed products (default 100,000;
#      random unit vectors, a random-weight ViT-B/32 for the query encoder);
#   2. the floor: encoder time for a query + the raw vector search alone,
#      in-process (`vitrine bench search-floor`);
#   3. `vitrine serve` on that data dir, loaded with wrk: uncached text
#      searches (every query new) and cached ones (one query repeated), at
#      one connection for latency, then at several for throughput.
# Prints one JSON line per measurement and a summary with the ratios.
#
#   scripts/bench_search.sh            # PRODUCTS=100000 DURATION=30s
set -euo pipefail
cd "$(dirname "$0")/.."
N=${PRODUCTS:-100000}
DUR=${DURATION:-30s}
DIR=${DATA_DIR:-target/bench/search-$N}
PORT=${PORT:-18080}
BIN=target/release/vitrine
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --bin vitrine
mkdir -p "$(dirname "$DIR")"
if [ ! -f "$DIR/vectors/CURRENT" ]; then
  "$BIN" bench populate --data-dir "$DIR" --products "$N" | tee "$DIR.populate.json"
fi
"$BIN" bench search-floor --data-dir "$DIR" --model "$DIR/model" > "$DIR.floor.json"
cat "$DIR.floor.json"

VITRINE__DATA_DIR="$DIR" VITRINE__ENCODER__MODEL="$DIR/model" VITRINE__SERVER__LISTEN="127.0.0.1:$PORT" \
  VITRINE__LOG__LEVEL=warn "$BIN" serve > "$DIR.server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null || { echo "server not ready" >&2; cat "$DIR.server.log"; exit 1; }
URL="http://127.0.0.1:$PORT"
LUA=scripts/wrk_search.lua
# run WRK_OPTIONS... -- MODE: wrk wants the script's arguments last.
run() {
  local opts=()
  while [ "$1" != "--" ]; do opts+=("$1"); shift; done
  shift
  wrk "${opts[@]}" -s "$LUA" "$URL" -- "$@" | grep '^{'
}
run -t1 -c1 -d5s -- uncached >/dev/null                       # warm-up
UNCACHED=$(run -t1 -c1 -d"$DUR" -- uncached); echo "$UNCACHED"
UNCACHED4=$(run -t2 -c4 -d"$DUR" -- uncached); echo "$UNCACHED4"
run -t1 -c1 -d2s -- cached >/dev/null                         # fill the caches
CACHED=$(run -t1 -c1 -d"$DUR" -- cached); echo "$CACHED"
CACHED8=$(run -t2 -c8 -d"$DUR" -- cached); echo "$CACHED8"
python3 - "$DIR.floor.json" "$UNCACHED" "$CACHED" "$UNCACHED4" "$CACHED8" <<'PY'
import json, sys
floor = json.load(open(sys.argv[1]))
unc, cac, unc4, cac8 = (json.loads(a) for a in sys.argv[2:6])
print(json.dumps({
    "floor_p99_ms": floor["floor_ms"]["p99"],
    "uncached_p99_ms": unc["p99_ms"],
    "uncached_p99_over_floor_p99": unc["p99_ms"] / floor["floor_ms"]["p99"],
    "uncached_p50_over_floor_p50": unc["p50_ms"] / floor["floor_ms"]["p50"],
    "cached_p99_ms": cac["p99_ms"],
    "throughput_rps": {"uncached_c4": unc4["rps"], "cached_c8": cac8["rps"]},
    "errors": unc["errors"] + cac["errors"] + unc4["errors"] + cac8["errors"],
    "targets": {"uncached_p99_over_floor": 1.10, "cached_p99_ms": 2.0, "errors": 0},
}, indent=2))
PY
