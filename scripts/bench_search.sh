#!/usr/bin/env bash
# Search load benchmark (not part of CI), all in ONE run on this machine:
#   1. populate a data dir with PRODUCTS indexed products (default 100,000;
#      random unit vectors, a random-weight ViT-B/32 for the query encoder:
#      MODEL, else the real-vocabulary one scripts/bench_encode.sh builds
#      when present, else a built-in one with a small BPE vocabulary);
#   2. a list of 12,000 distinct shopper queries ("navy wool slim fit
#      blazer"); every uncached request takes a line never sent before;
#   3. the floor: encoder time + the raw vector search alone, in-process
#      (`vitrine bench search-floor`), for the very texts of the
#      one-connection uncached run (text encoding time grows with the
#      token count, so the floor must embed the same texts);
#   4. `vitrine serve` on that data dir, loaded with wrk: uncached text
#      searches and cached ones (one query repeated), at one connection for
#      latency, then at several for throughput.
# Prints one JSON line per measurement and a summary with the ratios.
#
#   scripts/bench_search.sh            # PRODUCTS=100000 DURATION=30s [MODEL=dir]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${PRODUCTS:-100000}
DUR=${DURATION:-30s}
DIR=${DATA_DIR:-target/bench/search-$N}
PORT=${PORT:-18080}
BIN=target/release/vitrine
MODEL=${MODEL:-}
if [ -z "$MODEL" ] && [ -f target/bench/clip-vit-b32-random/model.safetensors ]; then
  MODEL=target/bench/clip-vit-b32-random
fi
MODEL=${MODEL:-$DIR/model}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --bin vitrine
mkdir -p "$(dirname "$DIR")"
if [ ! -f "$DIR/vectors/CURRENT" ]; then
  "$BIN" bench populate --data-dir "$DIR" --products "$N" --model "$MODEL" | tee "$DIR.populate.json"
fi

QUERIES=$DIR.queries.txt
cat > "$DIR.queries.py" <<'PY'
import itertools, random
colors = ["red", "navy", "black", "white", "olive", "beige", "grey", "pink", "mustard", "burgundy", "teal", "brown"]
materials = ["leather", "wool", "cotton", "linen", "suede", "denim", "silk", "canvas", "cashmere", "nylon"]
items = ["ankle boots", "sneakers", "sandals", "loafers", "cardigan", "hoodie", "trench coat", "rain jacket",
         "backpack", "tote bag", "wallet", "belt", "scarf", "beanie", "dress", "skirt", "chinos", "jeans",
         "t-shirt", "polo shirt", "blazer", "gloves", "swim shorts", "pyjamas", "watch strap"]
fits = ["", "slim fit ", "kids ", "oversized "]
queries = [f"{f}{c} {m} {i}" for c, m, i, f in itertools.product(colors, materials, items, fits)]
random.Random(7).shuffle(queries)
print("\n".join(queries))
PY
python3 "$DIR.queries.py" > "$QUERIES"
# Lines each run takes: warm-up [0, 1000), one connection [1000, 5000),
# four connections [5000, 12000). The floor embeds the first 2,010 texts
# of the one-connection run (10 of them warm-up).
FLOOR_QUERIES=2000
sed -n "1001,$((1000 + FLOOR_QUERIES + 10))p" "$QUERIES" > "$DIR.floor-queries.txt"
"$BIN" bench search-floor --data-dir "$DIR" --model "$MODEL" --queries "$FLOOR_QUERIES" \
  --queries-file "$DIR.floor-queries.txt" > "$DIR.floor.json"
cat "$DIR.floor.json"

VITRINE__DATA_DIR="$DIR" VITRINE__ENCODER__MODEL="$MODEL" VITRINE__SERVER__LISTEN="127.0.0.1:$PORT" \
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
# run WRK_OPTIONS... -- SCRIPT_ARGS...: wrk wants the script's arguments last.
run() {
  local opts=()
  while [ "$1" != "--" ]; do opts+=("$1"); shift; done
  shift
  wrk "${opts[@]}" -s "$LUA" "$URL" -- "$@" | grep '^{'
}
run -t1 -c1 -d5s -- uncached "$QUERIES" 0 1 >/dev/null       # warm-up
UNCACHED=$(run -t1 -c1 -d"$DUR" -- uncached "$QUERIES" 1000 1); echo "$UNCACHED"
UNCACHED4=$(run -t2 -c4 -d"$DUR" -- uncached "$QUERIES" 5000 2); echo "$UNCACHED4"
run -t1 -c1 -d2s -- cached >/dev/null                         # fill the caches
CACHED=$(run -t1 -c1 -d"$DUR" -- cached); echo "$CACHED"
CACHED8=$(run -t2 -c8 -d"$DUR" -- cached); echo "$CACHED8"
python3 - "$DIR.floor.json" "$UNCACHED" "$CACHED" "$UNCACHED4" "$CACHED8" <<'PY'
import json, sys
floor = json.load(open(sys.argv[1]))
unc, cac, unc4, cac8 = (json.loads(a) for a in sys.argv[2:6])
print(json.dumps({
    "floor_p50_ms": floor["floor_ms"]["p50"],
    "floor_p99_ms": floor["floor_ms"]["p99"],
    "uncached_p50_ms": unc["p50_ms"],
    "uncached_p99_ms": unc["p99_ms"],
    "uncached_p99_over_floor_p99": unc["p99_ms"] / floor["floor_ms"]["p99"],
    "uncached_p50_over_floor_p50": unc["p50_ms"] / floor["floor_ms"]["p50"],
    "cached_p99_ms": cac["p99_ms"],
    "throughput_rps": {"uncached_c1": unc["rps"], "uncached_c4": unc4["rps"],
                       "cached_c1": cac["rps"], "cached_c8": cac8["rps"]},
    "errors": unc["errors"] + cac["errors"] + unc4["errors"] + cac8["errors"],
    "fresh_queries_exhausted": unc["queries_exhausted"] + unc4["queries_exhausted"],
    "targets": {"uncached_p99_over_floor": 1.10, "cached_p99_ms": 2.0, "errors": 0},
}, indent=2))
PY
