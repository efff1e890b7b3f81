#!/usr/bin/env bash
# Encoder benchmark, side by side in ONE run on the same checkpoint and
# machine: Vitrine's kernels on every instruction set the CPU has (AVX-512,
# AVX2, NEON), each in f32 and bf16, Vitrine on candle, PyTorch
# (transformers) and ONNX Runtime. Not part of CI. Run it several times and
# compare the ratios of one run: this machine's figures move between runs.
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
# Vitrine on each instruction set this CPU has, in f32 and bf16, and on candle.
RUNS=()
for isa in avx512 avx2 neon; do
    for precision in f32 bf16; do
        name="$isa-$precision"
        echo "== vitrine $name" >&2
        if ./target/release/vitrine bench encode --model "$MODEL" --cpu-kernels "$isa" --precision "$precision" \
            > "$BENCH/vitrine-$name.json" 2> "$BENCH/vitrine-$name.err"; then
            RUNS+=("$name=$BENCH/vitrine-$name.json")
        else
            echo "   skipped: $(tail -1 "$BENCH/vitrine-$name.err")" >&2
        fi
    done
done
echo "== vitrine on candle's CPU matmul" >&2
./target/release/vitrine bench encode --model "$MODEL" --cpu-kernels candle > "$BENCH/vitrine-candle.json"
RUNS+=("candle=$BENCH/vitrine-candle.json")
echo "== PyTorch and ONNX Runtime" >&2
"$VENV/bin/python" scripts/bench_reference.py --model-dir "$MODEL" > "$BENCH/reference.json"

"$VENV/bin/python" - "$BENCH/reference.json" "${RUNS[@]}" <<'PY'
import json, sys
ref = {r["backend"]: r for r in json.load(open(sys.argv[1]))["results"] if "error" not in r}
rows = {}
for arg in sys.argv[2:]:
    name, path = arg.split("=", 1)
    rows[name] = json.load(open(path))
rows.update({k: ref[k] for k in ("torch", "onnx") if k in ref})
print(f"{'backend':14} {'img/s b1':>9} {'img/s b8':>9} {'img/s b32':>10} {'text p50 ms':>12} {'text p99 ms':>12} {'peak RSS MiB':>13}")
for name, r in rows.items():
    t = r["image_throughput_img_per_s"]
    print(f"{name:14} {t['1']:9.2f} {t['8']:9.2f} {t['32']:10.2f} {r['text_latency_ms']['p50']:12.2f} "
          f"{r['text_latency_ms']['p99']:12.2f} {r['peak_rss_mb'] or 0:13.0f}")
b32 = lambda n: rows[n]["image_throughput_img_per_s"]["32"]
p50 = lambda n: rows[n]["text_latency_ms"]["p50"]
def ratio(what, a, b, f, target):
    if a in rows and b in rows:
        print(f"{what}: x{f(a) / f(b):.2f} ({target})")
ratio("avx2 vs avx512, batch-32 images", "avx2-f32", "avx512-f32", b32, "target >= 0.9")
ratio("avx2 vs candle, batch-32 images", "avx2-f32", "candle", b32, "target >= 1.8")
for isa in ("avx512", "avx2", "neon"):
    ratio(f"{isa} bf16 vs f32, batch-32 images", f"{isa}-bf16", f"{isa}-f32", b32, "target >= 1.6")
    ratio(f"{isa} bf16 vs f32, text p50", f"{isa}-bf16", f"{isa}-f32", p50, "target <= 0.65")
best = next((f"{i}-f32" for i in ("avx512", "avx2", "neon") if f"{i}-f32" in rows), None)
for k in ("onnx", "torch"):
    if best and k in rows:
        ratio(f"{best} vs {k}, batch-32 images", best, k, b32, "higher is better")
        ratio(f"{best} vs {k}, text p50", best, k, p50, "lower is better")
PY
