#!/usr/bin/env python3
"""Reference parity check of the Rust encoder against transformers (not run in CI).

    python -m venv venv && venv/bin/pip install torch transformers pillow numpy
    venv/bin/pip download open-clip-torch --no-deps -d dl     # only for its BPE vocab file
    cargo build --release --example embed_dump
    venv/bin/python scripts/parity.py --model-dir /work/models/clip-vit-b32-random \
        --open-clip-wheel dl/open_clip_torch-*.whl

1. Builds (once) a ViT-B/32-architecture CLIP checkpoint with random weights
   (`CLIPConfig()` defaults, `torch.manual_seed(0)`), saved with safetensors, plus the real
   CLIP BPE tokenizer (derived from open_clip's bpe_simple_vocab_16e6.txt.gz exactly as
   open_clip's SimpleTokenizer does) and the CLIP image processor config.
2. Generates varied test images (non-square, grayscale, RGBA, palette, CMYK, EXIF, WebP, GIF).
3. Computes reference embeddings with CLIPModel.get_text_features / get_image_features,
   images loaded with transformers' `load_image` (EXIF transpose + convert("RGB")) and
   processed by the PIL image processor (`CLIPImageProcessorPil`).
4. Runs `embed_dump` and reports per-input cosine similarity and pixel differences.
"""
import argparse
import glob
import gzip
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import torch
from PIL import Image

TEXTS = [
    "a red shoe",
    "A photo of a blue leather handbag with a gold chain strap",
    "dress",
    "",
    "ÉTÉ — sandales rouges taille 42, 59,99€ !!",
    "running shoes for men's trail running (waterproof) - size 10.5",
    "日本のスニーカー",
    "   multiple     spaces\tand\nnewlines   ",
    " ".join(["very long product description"] * 40),  # > 77 tokens: truncated
    "SKU-12345-XL cotton t-shirt, 100% organic",
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def build_tokenizer(wheel, out_dir):
    from transformers import CLIPTokenizer

    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith("bpe_simple_vocab_16e6.txt.gz"))
        lines = gzip.decompress(z.read(name)).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, model_max_length=77)
    tok.save_pretrained(out_dir)
    assert os.path.exists(os.path.join(out_dir, "tokenizer.json"))
    return tok


def build_model(model_dir, wheel):
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip import CLIPImageProcessorPil

    os.makedirs(model_dir, exist_ok=True)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig())
    model.eval()
    model.save_pretrained(model_dir, safe_serialization=True)
    build_tokenizer(wheel, model_dir)
    CLIPImageProcessorPil().save_pretrained(model_dir)


def make_images(img_dir):
    from PIL import ImageDraw

    os.makedirs(img_dir, exist_ok=True)
    rng = np.random.default_rng(0)

    def scene(w, h, seed):
        r = np.random.default_rng(seed)
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([
            128 + 100 * np.sin(x / (7 + seed) + r.random() * 6),
            128 + 100 * np.cos(y / (11 + seed) + r.random() * 6),
            (x * 255 // max(w - 1, 1) + y) % 256,
        ], -1)
        base += r.normal(0, 12, base.shape)
        im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
        d = ImageDraw.Draw(im)
        for _ in range(6):
            x0, y0 = int(r.integers(0, w)), int(r.integers(0, h))
            d.ellipse([x0, y0, x0 + w // 4, y0 + h // 5], fill=tuple(int(v) for v in r.integers(0, 256, 3)))
        return im

    out = []

    def save(name, im, **kw):
        p = os.path.join(img_dir, name)
        im.save(p, **kw)
        out.append(p)

    save("landscape_640x480.jpg", scene(640, 480, 1), quality=92)
    save("portrait_300x500.png", scene(300, 500, 2))
    save("wide_1000x200.png", scene(1000, 200, 3))
    save("square_224.png", scene(224, 224, 4))
    save("small_100x80_upscale.png", scene(100, 80, 5))
    save("odd_333x517.jpg", scene(333, 517, 6), quality=90)
    save("gray_400x300.png", scene(400, 300, 7).convert("L"))
    rgba = scene(256, 320, 8)
    a = np.zeros((320, 256), np.uint8)
    a[40:280, 30:220] = 255
    a[:, :15] = 90
    rgba.putalpha(Image.fromarray(a, "L"))
    save("rgba_256x320.png", rgba)
    save("palette_300x240.png", scene(300, 240, 9).convert("P", palette=Image.Palette.ADAPTIVE, colors=64))
    save("cmyk_320x240.jpg", scene(320, 240, 10).convert("CMYK"), quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif6_360x240.jpg", scene(360, 240, 11), quality=92, exif=exif.tobytes())
    save("lossy_300x300.webp", scene(300, 300, 12), quality=85)
    save("lossless_260x200.webp", scene(260, 200, 13), lossless=True)
    f0 = scene(200, 150, 14).convert("P", palette=Image.Palette.ADAPTIVE, colors=128)
    f1 = Image.new("RGB", (200, 150), (0, 0, 255)).convert("P")
    p = os.path.join(img_dir, "animated_200x150.gif")
    f0.save(p, save_all=True, append_images=[f1], duration=100, loop=0)
    out.append(p)
    return out


def features(x):
    # transformers 5 may return a ModelOutput; its pooler_output holds the projected features.
    if isinstance(x, torch.Tensor):
        return x
    return x.pooler_output


def cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default="/work/models/clip-vit-b32-random")
    ap.add_argument("--open-clip-wheel", default=None)
    ap.add_argument("--embed-dump", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "examples", "embed_dump"))
    ap.add_argument("--out", default=None, help="write the full report JSON here")
    ap.add_argument("--cpu-kernels", default="auto", help="passed to embed_dump (auto, avx512, avx2, neon, ...)")
    ap.add_argument("--precision", default="f32", help="passed to embed_dump: f32 or bf16")
    ap.add_argument("--target", type=float, default=None,
                    help="minimum cosine to pass (default 0.9999 for f32, 0.999 for bf16)")
    args = ap.parse_args()
    target = args.target or (0.999 if args.precision == "bf16" else 0.9999)
    mode = ["--cpu-kernels", args.cpu_kernels, "--precision", args.precision]

    from transformers import CLIPModel, CLIPTokenizer
    from transformers.image_utils import load_image
    from transformers.models.clip import CLIPImageProcessorPil

    if not os.path.exists(os.path.join(args.model_dir, "model.safetensors")):
        wheel = args.open_clip_wheel or next(iter(glob.glob("/work/pyenv/dl/open_clip_torch-*.whl")), None)
        if wheel is None:
            sys.exit("need --open-clip-wheel (pip download open-clip-torch --no-deps)")
        build_model(args.model_dir, wheel)
    img_dir = os.path.join(args.model_dir, "parity_images")
    images = make_images(img_dir)

    torch.set_grad_enabled(False)
    model = CLIPModel.from_pretrained(args.model_dir).eval()
    tok = CLIPTokenizer.from_pretrained(args.model_dir)
    proc = CLIPImageProcessorPil.from_pretrained(args.model_dir)

    enc = tok(TEXTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
    ref_text = features(model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])).numpy()
    pil_images = [load_image(p) for p in images]
    pix = proc(images=pil_images, return_tensors="pt")["pixel_values"]
    ref_img = features(model.get_image_features(pixel_values=pix)).numpy()
    # transformers 5 `convert_to_rgb` composites alpha on white when handed the RGBA image.
    rgba_path = next(p for p in images if "rgba" in p)
    pix_white = proc(images=[Image.open(rgba_path)], return_tensors="pt")["pixel_values"]
    ref_white = features(model.get_image_features(pixel_values=pix_white)).numpy()[0]

    texts_file = os.path.join(img_dir, "texts.json")
    json.dump(TEXTS, open(texts_file, "w"))
    cmd = [args.embed_dump, "--model", args.model_dir, "--texts-file", texts_file, "--pixels"] + mode
    for p in images:
        cmd += ["--image", p]
    rust = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    rust_batch = json.loads(subprocess.run(cmd + ["--batch"], check=True, capture_output=True, text=True).stdout)
    rust_white = json.loads(subprocess.run(
        [args.embed_dump, "--model", args.model_dir, "--alpha", "white", "--image", rgba_path] + mode,
        check=True, capture_output=True, text=True).stdout)

    report = {"texts": [], "images": []}
    for i, t in enumerate(TEXTS):
        report["texts"].append({
            "text": t[:60],
            "cos_single": cos(ref_text[i], rust["texts"][i]["embedding"]),
            "cos_batched": cos(ref_text[i], rust_batch["texts"][i]["embedding"]),
        })
    for i, p in enumerate(images):
        rp = np.asarray(rust["images"][i]["pixel_values"], np.float32).reshape(pix[i].shape)
        report["images"].append({
            "image": os.path.basename(p),
            "cos_single": cos(ref_img[i], rust["images"][i]["embedding"]),
            "cos_batched": cos(ref_img[i], rust_batch["images"][i]["embedding"]),
            "pixel_max_abs_diff": float(np.abs(rp - pix[i].numpy()).max()),
            "pixel_mean_abs_diff": float(np.abs(rp - pix[i].numpy()).mean()),
        })
    report["rgba_composite_on_white_cos"] = cos(ref_white, rust_white["images"][0]["embedding"])
    report["min_cos_texts"] = min(min(r["cos_single"], r["cos_batched"]) for r in report["texts"])
    report["min_cos_images"] = min(min(r["cos_single"], r["cos_batched"]) for r in report["images"])
    report["model_id"] = rust["model_id"]
    report["mode"] = {"cpu_kernels": args.cpu_kernels, "precision": args.precision}
    if args.out:
        json.dump(report, open(args.out, "w"), indent=1, ensure_ascii=False)
    for r in report["texts"]:
        print(f"text  cos={r['cos_single']:.7f} batched={r['cos_batched']:.7f}  {r['text']!r}")
    for r in report["images"]:
        print(f"image cos={r['cos_single']:.7f} batched={r['cos_batched']:.7f} pix_max={r['pixel_max_abs_diff']:.5f} pix_mean={r['pixel_mean_abs_diff']:.6f}  {r['image']}")
    print(f"rgba composite-on-white cos={report['rgba_composite_on_white_cos']:.7f}")
    print(f"MIN text cos = {report['min_cos_texts']:.7f}   MIN image cos = {report['min_cos_images']:.7f}")
    ok = report["min_cos_texts"] >= target and report["min_cos_images"] >= target
    print(f"mode: {args.cpu_kernels} {args.precision}")
    print("PASS" if ok else f"FAIL (target {target})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
