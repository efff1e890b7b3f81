#!/usr/bin/env python3
"""Regenerate tests/fixtures/encoder (run once at test-authoring time; needs Pillow + numpy).

Writes tiny images in every mode/format the encoder must handle, plus the exact RGB
arrays PIL produces for them (`<name>.rgb`, raw HxWx3 bytes after
`ImageOps.exif_transpose` + `convert("RGB")`, the path transformers' `load_image` takes),
plus PIL BICUBIC resize references, described by `manifest.json`.
"""
import io
import json
import os
import sys

import numpy as np
from PIL import Image, ImageOps

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "encoder")
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(1234)


def smooth_rgb(w, h):
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(w - 1, 1))
    g = (y * 255 // max(h - 1, 1))
    b = ((x + y) * 7) % 256
    return np.stack([r, g, b], -1).astype(np.uint8)


manifest = {"images": [], "resize": []}


def add(name, img, fmt, exact, **save_kw):
    path = os.path.join(OUT, name)
    img.save(path, format=fmt, **save_kw)
    ref = Image.open(path)
    mode = ref.mode
    ref = ImageOps.exif_transpose(ref).convert("RGB")
    arr = np.asarray(ref)
    with open(path + ".rgb", "wb") as f:
        f.write(arr.tobytes())
    manifest["images"].append({
        "file": name, "pil_mode": mode, "width": ref.width, "height": ref.height,
        "rgb": name + ".rgb", "exact": exact,
    })


W, H = 24, 16
base = Image.fromarray(smooth_rgb(W, H), "RGB")
# Alpha varies so "drop" and "composite" differ.
alpha = Image.fromarray((np.arange(W * H).reshape(H, W) * 255 // (W * H - 1)).astype(np.uint8), "L")

add("rgb.png", base, "PNG", True)
add("gray.png", base.convert("L"), "PNG", True)
la = base.convert("L"); la.putalpha(alpha)
add("gray_alpha.png", la, "PNG", True)
rgba = base.copy(); rgba.putalpha(alpha)
add("rgba.png", rgba, "PNG", True)
pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
add("palette.png", pal, "PNG", True)
pal_t = pal.copy(); pal_t.info["transparency"] = 0
add("palette_transparent.png", pal_t, "PNG", True, transparency=0)
add("rgb.jpg", base, "JPEG", False, quality=95)
add("gray.jpg", base.convert("L"), "JPEG", False, quality=95)
add("cmyk.jpg", base.convert("CMYK"), "JPEG", False, quality=95)
add("lossless.webp", base, "WEBP", True, lossless=True)
add("lossy.webp", base, "WEBP", False, quality=90)
add("rgba_lossless.webp", rgba, "WEBP", True, lossless=True)

# Animated GIF: frame 0 red-ish gradient, frame 1 solid blue -> first frame expected.
f0 = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
f1 = Image.new("RGB", (W, H), (0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
path = os.path.join(OUT, "animated.gif")
f0.save(path, save_all=True, append_images=[f1], duration=100, loop=0)
ref = Image.open(path)
assert getattr(ref, "n_frames", 1) == 2
arr = np.asarray(ImageOps.exif_transpose(ref).convert("RGB"))
open(path + ".rgb", "wb").write(arr.tobytes())
manifest["images"].append({"file": "animated.gif", "pil_mode": ref.mode, "width": W, "height": H,
                           "rgb": "animated.gif.rgb", "exact": True})

# EXIF orientation 6 (rotate 90 CW on display): stored 24x16, displayed 16x24.
exif = Image.Exif(); exif[0x0112] = 6
add("exif_orientation6.jpg", base, "JPEG", False, quality=95, exif=exif.tobytes())
# Same as PNG with an eXIf chunk.
add("exif_orientation6.png", base, "PNG", True, exif=exif.tobytes())

# PIL BICUBIC resize references for the Resample.c port.
src = Image.fromarray(rng.integers(0, 256, size=(43, 61, 3), dtype=np.uint8), "RGB")
src.save(os.path.join(OUT, "resize_src.png"))
for (w, h) in [(20, 14), (150, 97), (61, 224), (224, 43), (7, 5)]:
    name = f"resize_{w}x{h}.png"
    src.resize((w, h), resample=Image.BICUBIC).save(os.path.join(OUT, name))
    manifest["resize"].append({"src": "resize_src.png", "width": w, "height": h, "file": name})

json.dump(manifest, open(os.path.join(OUT, "manifest.json"), "w"), indent=1)
print("wrote", len(manifest["images"]), "images;", sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT)), "bytes", file=sys.stderr)

# transformers 5.x `convert_to_rgb`: alpha-composite onto white (for AlphaMode::CompositeOnWhite).
white = []
for name in ["rgba.png", "gray_alpha.png", "palette_transparent.png", "rgba_lossless.webp"]:
    im = Image.open(os.path.join(OUT, name)).convert("RGBA")
    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
    arr = np.asarray(Image.alpha_composite(bg, im).convert("RGB"))
    open(os.path.join(OUT, name + ".white.rgb"), "wb").write(arr.tobytes())
    white.append({"file": name, "rgb": name + ".white.rgb", "width": im.width, "height": im.height})
manifest["composite_white"] = white
json.dump(manifest, open(os.path.join(OUT, "manifest.json"), "w"), indent=1)
