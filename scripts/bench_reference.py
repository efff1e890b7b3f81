#!/usr/bin/env python3
"""Reference CPU benchmark for the same checkpoint in PyTorch (transformers) and ONNX Runtime.

    venv/bin/pip install torch transformers pillow numpy onnxruntime onnx
    venv/bin/python scripts/bench_reference.py --model-dir /work/models/clip-vit-b32-random

Prints JSON: image throughput (img/s, model forward on preprocessed 224x224 pixels) at
batch 1/8/32, single short-query text latency p50/p99 (tokenise + forward), peak RSS.
Each backend runs in its own subprocess so peak RSS is per backend. Threads: --threads
(default: all cores) for both torch and ORT intra-op pools.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def timed(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run_backend(backend, model_dir, threads, iters):
    import torch
    from transformers import CLIPModel, CLIPTokenizer

    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    tok = CLIPTokenizer.from_pretrained(model_dir)
    rng = np.random.default_rng(0)
    pix = {b: rng.standard_normal((b, 3, 224, 224)).astype(np.float32) for b in (1, 8, 32)}
    query = "red leather handbag"
    res = {"backend": backend, "threads": threads}

    if backend == "torch":
        model = CLIPModel.from_pretrained(model_dir).eval()

        def img(b):
            return lambda: model.get_image_features(pixel_values=torch.from_numpy(pix[b]))

        def txt():
            enc = tok([query], return_tensors="pt")
            model.get_text_features(input_ids=enc["input_ids"])
    else:
        import onnxruntime as ort

        onnx_dir = os.path.join(model_dir, "onnx")
        if backend == "onnx" and not (os.path.exists(os.path.join(onnx_dir, "vision.onnx"))
                                      and os.path.exists(os.path.join(onnx_dir, "text.onnx"))):
            # Export in a separate process so torch's memory does not count in ORT's peak RSS.
            subprocess.run([sys.executable, __file__, "--backend", "export", "--model-dir", model_dir], check=True)
        model = CLIPModel.from_pretrained(model_dir).eval() if backend == "export" else None
        onnx_dir = os.path.join(model_dir, "onnx")
        os.makedirs(onnx_dir, exist_ok=True)
        vpath, tpath = os.path.join(onnx_dir, "vision.onnx"), os.path.join(onnx_dir, "text.onnx")

        class Vision(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, pixel_values):
                pooled = self.m.vision_model(pixel_values=pixel_values).pooler_output
                return self.m.visual_projection(pooled)

        class Text(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, eos_pos):
                h = self.m.text_model(input_ids=input_ids).last_hidden_state
                pooled = h[torch.arange(h.shape[0]), eos_pos]
                return self.m.text_projection(pooled)

        if not os.path.exists(vpath):
            torch.onnx.export(Vision(model), (torch.from_numpy(pix[1]),), vpath, input_names=["pixel_values"],
                              output_names=["emb"], dynamic_axes={"pixel_values": {0: "b"}}, opset_version=17, dynamo=False)
        if not os.path.exists(tpath):
            ids = tok([query], return_tensors="pt")["input_ids"]
            torch.onnx.export(Text(model), (ids, torch.tensor([ids.shape[1] - 1])), tpath,
                              input_names=["input_ids", "eos_pos"], output_names=["emb"],
                              dynamic_axes={"input_ids": {0: "b", 1: "s"}, "eos_pos": {0: "b"}}, opset_version=17, dynamo=False)
        if backend == "export":
            return {"exported": [vpath, tpath]}
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        vs = ort.InferenceSession(vpath, so, providers=["CPUExecutionProvider"])
        ts = ort.InferenceSession(tpath, so, providers=["CPUExecutionProvider"])

        def img(b):
            return lambda: vs.run(None, {"pixel_values": pix[b]})

        def txt():
            ids = np.asarray(tok([query])["input_ids"], np.int64)
            ts.run(None, {"input_ids": ids, "eos_pos": np.array([ids.shape[1] - 1], np.int64)})

    res["image_throughput_img_per_s"] = {}
    for b in (1, 8, 32):
        n = max(3, iters // b)
        ts_ = timed(img(b), 2, n)
        res["image_throughput_img_per_s"][str(b)] = b / statistics.median(ts_)
    lat = timed(txt, 5, iters * 4)
    res["text_latency_ms"] = {"p50": 1000 * pct(lat, 50), "p99": 1000 * pct(lat, 99), "n": len(lat)}
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default="/work/models/clip-vit-b32-random")
    ap.add_argument("--backend", choices=["torch", "onnx", "export"], default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--iters", type=int, default=32)
    a = ap.parse_args()
    if a.backend:
        print(json.dumps(run_backend(a.backend, a.model_dir, a.threads, a.iters)))
        return
    out = []
    for b in ("torch", "onnx"):
        r = subprocess.run([sys.executable, __file__, "--backend", b, "--model-dir", a.model_dir,
                            "--threads", str(a.threads), "--iters", str(a.iters)], capture_output=True, text=True)
        if r.returncode != 0:
            out.append({"backend": b, "error": r.stderr.strip().splitlines()[-1:]})
        else:
            out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(json.dumps({"model_dir": a.model_dir, "cpus": os.cpu_count(), "results": out}, indent=1))


if __name__ == "__main__":
    main()
