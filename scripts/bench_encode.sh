#!/usr/bin/env bash
# Encoder benchmark, side by side in ONE run on the same checkpoint and
# machine: Vitrine (candle, release build) vs PyTorch (transformers) vs
# ONNX Runtime. Not part of CI.
#
#   scripts/bench_encode.sh [MODEL_DIR]
#
# MODEL_DIR defaults to target/bench/clip-vit-b32-random; when missing it is
# created by scripts/parity.py's builder: the ViT-B/32 architecture with
# random weights (torch.manual_seed(0)) and the real CLIP BPE vocabulary.
# Python packages go into target/bench/venv.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=target/bench
MODEL=${1:-$BENCH/clip-vit-b32-random}
VENV=$BENCH/venv
mkdir -p "$BENCH"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch transformers pillow numpy onnx onnxruntime
fi
if [ ! -f "$MODEL/model.safetensors" ]; then
    "$VENV/bin/pip" download -q --no-deps -d "$BENCH/dl" open-clip-torch
    "$VENV/bin/python" - "$MODEL" "$(ls "$BENCH"/dl/open_clip_torch-*.whl | head -1)" <<'PY'
import sys
sys.path.insert(0, "scripts")
import parity
parity.build_model(sys.argv[1], sys.argv[2])
PY
fi

cargo build --release --locked -p vitrine >/dev/null
echo "== vitrine (its own CPU kernels where the CPU has AVX-512)" >&2
./target/release/vitrine bench encode --model "$MODEL" > "$BENCH/vitrine.json"
echo "== vitrine on candle's CPU matmul (the previous implementation)" >&2
./target/release/vitrine bench encode --model "$MODEL" --cpu-kernels candle > "$BENCH/vitrine-candle.json"
echo "== PyTorch and ONNX Runtime" >&2
"$VENV/bin/python" scripts/bench_reference.py --model-dir "$MODEL" > "$BENCH/reference.json"

"$VENV/bin/python" - "$BENCH/vitrine.json" "$BENCH/reference.json" "$BENCH/vitrine-candle.json" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
ref = {r["backend"]: r for r in json.load(open(sys.argv[2]))["results"] if "error" not in r}
print(f"vitrine kernels: {v.get('kernels')}")
rows = [("vitrine", v), ("v-candle", json.load(open(sys.argv[3])))] + [(k, ref[k]) for k in ("torch", "onnx") if k in ref]
print(f"{'backend':10} {'img/s b1':>9} {'img/s b8':>9} {'img/s b32':>10} {'text p50 ms':>12} {'text p99 ms':>12} {'peak RSS MiB':>13}")
for name, r in rows:
    t = r["image_throughput_img_per_s"]
    print(f"{name:10} {t['1']:9.2f} {t['8']:9.2f} {t['32']:10.2f} {r['text_latency_ms']['p50']:12.2f} "
          f"{r['text_latency_ms']['p99']:12.2f} {r['peak_rss_mb'] or 0:13.0f}")
for k in ("onnx", "torch"):
    if k in ref:
        b32 = v["image_throughput_img_per_s"]["32"] / ref[k]["image_throughput_img_per_s"]["32"]
        p50 = v["text_latency_ms"]["p50"] / ref[k]["text_latency_ms"]["p50"]
        print(f"vitrine vs {k}: batch-32 image throughput x{b32:.2f}; short-query text p50 latency x{p50:.2f} (lower is better)")
PY
