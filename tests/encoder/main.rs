//! The CLIP encoder on a tiny checkpoint of the real architecture written by
//! the tests, plus image fixtures made with PIL (scripts/make_fixtures.py).

// Test helpers stop the test with their message on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vitrine::encoder::testing::{TinyClipSpec, write_safetensors, write_tiny_checkpoint};
use vitrine::encoder::{
    AlphaMode, CpuKernels, DecodeOptions, DecodedImage, DeviceSetting, Encoder, EncoderError, EncoderOptions,
    Isa, ModelSource, Precision, SourceOptions, parse_precision,
};

fn tiny_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_checkpoint(dir.path(), &TinyClipSpec::default()).unwrap();
        dir
    })
    .path()
}

fn fresh_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_checkpoint(dir.path(), &TinyClipSpec::default()).unwrap();
    dir
}

fn encoder() -> Encoder {
    Encoder::from_dir(tiny_dir(), &EncoderOptions::default()).unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/encoder")
        .join(name)
}

fn manifest() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture("manifest.json")).unwrap()).unwrap()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const TEXTS: [&str; 5] = [
    "a red shoe",
    "The blue leather bag with a long strap, photographed on a white table",
    "dress",
    "",
    "ÉTÉ — sandales   rouges 42€ !!",
];

#[test]
fn dims_and_shapes_come_from_config() {
    let enc = encoder();
    assert_eq!(enc.dims(), 16);
    assert_eq!(enc.config().vision_config.hidden_size, 48);
    assert_eq!(enc.preprocess_config().image_size, 32);
    let t = enc.embed_texts(&TEXTS).unwrap();
    assert_eq!(t.len(), TEXTS.len());
    assert!(t.iter().all(|v| v.len() == 16));
    let img = enc
        .decode_image(&std::fs::read(fixture("rgb.png")).unwrap())
        .unwrap();
    let i = enc.embed_images(&[img.clone(), img]).unwrap();
    assert_eq!(i.len(), 2);
    assert!(i.iter().all(|v| v.len() == 16));
    assert!(enc.model_id().contains('@'), "{}", enc.model_id());
    assert!(enc.embed_texts(&[]).unwrap().is_empty());
    assert!(enc.embed_images(&[]).unwrap().is_empty());

    // A different architecture is read from config.json, not hard-coded.
    let dir = tempfile::tempdir().unwrap();
    let spec = TinyClipSpec {
        projection_dim: 24,
        image_size: 48,
        patch_size: 16,
        text_layers: 1,
        vision_layers: 3,
        ..TinyClipSpec::default()
    };
    write_tiny_checkpoint(dir.path(), &spec).unwrap();
    let enc2 = Encoder::from_dir(dir.path(), &EncoderOptions::default()).unwrap();
    assert_eq!(enc2.dims(), 24);
    assert_eq!(enc2.embed_texts(&["a"]).unwrap()[0].len(), 24);
    assert_ne!(enc2.model_id(), enc.model_id());
}

#[test]
fn embeddings_are_unit_norm_and_deterministic() {
    let enc = encoder();
    let a = enc.embed_texts(&TEXTS).unwrap();
    for v in &a {
        assert!((norm(v) - 1.0).abs() < 1e-5, "norm {}", norm(v));
    }
    let b = Encoder::from_dir(tiny_dir(), &EncoderOptions::default())
        .unwrap()
        .embed_texts(&TEXTS)
        .unwrap();
    assert_eq!(a, b);
    // Independently written checkpoint with the same seed gives identical vectors.
    let other = fresh_dir();
    let c = Encoder::from_dir(other.path(), &EncoderOptions::default())
        .unwrap()
        .embed_texts(&TEXTS)
        .unwrap();
    assert_eq!(a, c);
    // Different inputs give different vectors.
    assert!(max_diff(&a[0], &a[1]) > 1e-3);

    let img = enc
        .decode_image(&std::fs::read(fixture("rgb.jpg")).unwrap())
        .unwrap();
    let x = enc.embed_images(std::slice::from_ref(&img)).unwrap();
    let y = enc.embed_images(std::slice::from_ref(&img)).unwrap();
    assert_eq!(x, y);
    assert!((norm(&x[0]) - 1.0).abs() < 1e-5);
}

#[test]
fn batched_equals_one_by_one() {
    let opts = EncoderOptions {
        max_batch: 3, // also exercises chunking
        ..EncoderOptions::default()
    };
    let enc = Encoder::from_dir(tiny_dir(), &opts).unwrap();
    let lens: Vec<usize> = TEXTS
        .iter()
        .map(|t| enc.tokenizer().tokenize(t).unwrap().ids.len())
        .collect();
    assert!(lens.iter().min() < lens.iter().max(), "{lens:?}");
    let batched = enc.embed_texts(&TEXTS).unwrap();
    for (t, b) in TEXTS.iter().zip(&batched) {
        let single = enc.embed_texts(&[t]).unwrap();
        assert!(
            max_diff(&single[0], b) < 1e-5,
            "{t:?}: {}",
            max_diff(&single[0], b)
        );
    }

    let names = [
        "rgb.png",
        "gray.jpg",
        "exif_orientation6.jpg",
        "animated.gif",
        "lossy.webp",
    ];
    let imgs: Vec<DecodedImage> = names
        .iter()
        .map(|n| enc.decode_image(&std::fs::read(fixture(n)).unwrap()).unwrap())
        .collect();
    let batched = enc.embed_images(&imgs).unwrap();
    for (img, b) in imgs.iter().zip(&batched) {
        let single = enc.embed_images(std::slice::from_ref(img)).unwrap();
        assert!(max_diff(&single[0], b) < 1e-5);
    }
    let bytes: Vec<Vec<u8>> = names.iter().map(|n| std::fs::read(fixture(n)).unwrap()).collect();
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let from_bytes = enc.embed_image_bytes(&refs).unwrap();
    for (a, b) in from_bytes.iter().zip(&batched) {
        assert!(max_diff(a, b) < 1e-5);
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (norm(a) * norm(b))
}

/// Vitrine's CPU kernels and candle-transformers' CLIP compute the same embeddings, for
/// padded text batches and for images, on widths that leave partial register tiles
/// (hidden 48, 12 heads of 4, projection 20, a 7×7 patch grid).
/// A tiny CLIP whose widths leave partial tiles in every kernel: hidden 40 and 48, 5 and
/// 12 heads, projection 20, a 7×7 patch grid.
fn odd_spec() -> TinyClipSpec {
    TinyClipSpec {
        text_hidden: 40,
        text_heads: 5,
        text_intermediate: 72,
        text_layers: 3,
        vision_hidden: 48,
        vision_heads: 12,
        vision_intermediate: 100,
        vision_layers: 3,
        image_size: 56,
        patch_size: 8,
        projection_dim: 20,
        ..TinyClipSpec::default()
    }
}

fn load_with(dir: &Path, cpu_kernels: CpuKernels, precision: Precision) -> Encoder {
    Encoder::from_dir(
        dir,
        &EncoderOptions {
            cpu_kernels,
            precision,
            ..EncoderOptions::default()
        },
    )
    .unwrap()
}

/// Text and image embeddings of `enc` for the parity inputs: padded text batches (one
/// truncated at 77 tokens) and four image formats.
fn parity_embeddings(enc: &Encoder) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let long = "red leather shoe ".repeat(40);
    let texts: Vec<&str> = TEXTS.iter().copied().chain([long.as_str()]).collect();
    let imgs: Vec<DecodedImage> = ["rgb.png", "gray.jpg", "exif_orientation6.jpg", "lossy.webp"]
        .iter()
        .map(|n| enc.decode_image(&std::fs::read(fixture(n)).unwrap()).unwrap())
        .collect();
    (enc.embed_texts(&texts).unwrap(), enc.embed_images(&imgs).unwrap())
}

#[test]
fn cpu_kernels_match_candle_on_every_instruction_set() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_checkpoint(dir.path(), &odd_spec()).unwrap();
    let candle = load_with(dir.path(), CpuKernels::Candle, Precision::F32);
    assert_eq!(candle.backend(), "candle");
    let err = "fast".parse::<CpuKernels>().unwrap_err().to_string();
    assert!(
        err.contains("`fast`") && err.contains("encoder.cpu_kernels") && !err.contains("encoder.device"),
        "{err}"
    );
    let best = load_with(dir.path(), CpuKernels::Vitrine, Precision::F32);
    assert_eq!(best.backend(), format!("vitrine-{}", Isa::detect().name()));
    let (want_text, want_img) = parity_embeddings(&candle);
    // Every instruction set this CPU has, each forced in turn.
    for isa in Isa::supported() {
        let ours = load_with(dir.path(), isa.name().parse().unwrap(), Precision::F32);
        assert_eq!(ours.backend(), format!("vitrine-{}", isa.name()));
        let (text, img) = parity_embeddings(&ours);
        for (what, want, got) in [("text", &want_text, &text), ("image", &want_img, &img)] {
            for (i, (x, y)) in want.iter().zip(got).enumerate() {
                assert!(
                    cosine(x, y) > 0.99999 && max_diff(x, y) < 1e-4,
                    "{isa:?} {what} {i}: cos {} diff {}",
                    cosine(x, y),
                    max_diff(x, y)
                );
            }
        }
    }
    // An instruction set the CPU lacks is refused, naming the setting.
    if let Some(missing) = Isa::ALL.into_iter().find(|i| !i.available()) {
        let err = Encoder::from_dir(
            dir.path(),
            &EncoderOptions {
                cpu_kernels: CpuKernels::Forced(missing),
                ..EncoderOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(missing.name()) && err.contains("encoder.cpu_kernels"),
            "{err}"
        );
    }
}

#[test]
fn bf16_weights_stay_close_to_f32_on_every_instruction_set() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_checkpoint(dir.path(), &odd_spec()).unwrap();
    let f32_enc = load_with(dir.path(), CpuKernels::Vitrine, Precision::F32);
    let (want_text, want_img) = parity_embeddings(&f32_enc);
    for isa in Isa::supported() {
        let ours = load_with(dir.path(), CpuKernels::Forced(isa), Precision::Bf16);
        assert_eq!(ours.backend(), format!("vitrine-{}-bf16", isa.name()));
        let (text, img) = parity_embeddings(&ours);
        for (what, want, got) in [("text", &want_text, &text), ("image", &want_img, &img)] {
            for (i, (x, y)) in want.iter().zip(got).enumerate() {
                // bf16 keeps 8 bits of mantissa: close, but not f32-close.
                assert!(cosine(x, y) > 0.999, "{isa:?} {what} {i}: cos {}", cosine(x, y));
                assert!(max_diff(x, y) > 0.0, "{isa:?} {what} {i}: bf16 changed nothing");
            }
        }
    }
    let err = Encoder::from_dir(
        dir.path(),
        &EncoderOptions {
            cpu_kernels: CpuKernels::Candle,
            precision: Precision::Bf16,
            ..EncoderOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("encoder.precision"), "{err}");
    let err = parse_precision("f16").unwrap_err().to_string();
    assert!(
        err.contains("`f16`") && err.contains("encoder.precision"),
        "{err}"
    );
}

#[test]
fn long_text_is_truncated_to_max_positions() {
    let enc = encoder();
    let long = "red shoe ".repeat(100);
    let tok = enc.tokenizer().tokenize(&long).unwrap();
    assert_eq!(tok.ids.len(), 77);
    assert_eq!(*tok.ids.last().unwrap(), enc.tokenizer().eos_id());
    assert_eq!(tok.eos_pos, 76);
    let longer = format!("{long} and a blue bag");
    let a = enc.embed_texts(&[&long]).unwrap();
    let b = enc.embed_texts(&[&longer, "a"]).unwrap();
    assert!(max_diff(&a[0], &b[0]) < 1e-5);
    // Short text: bos ... eos, pooled at the eos.
    let short = enc.tokenizer().tokenize("a red shoe").unwrap();
    assert_eq!(short.ids.len(), 5, "{:?}", short.ids); // <sot> a red shoe <eot>
    assert_eq!(short.eos_pos, 4);
}

fn load_rgb(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

#[test]
fn every_mode_and_format_matches_pil_convert_rgb() {
    let m = manifest();
    let opts = DecodeOptions::default();
    for entry in m["images"].as_array().unwrap() {
        let file = entry["file"].as_str().unwrap();
        let img = DecodedImage::decode(&std::fs::read(fixture(file)).unwrap(), &opts)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let (w, h) = (
            entry["width"].as_u64().unwrap(),
            entry["height"].as_u64().unwrap(),
        );
        assert_eq!(
            (u64::from(img.width()), u64::from(img.height())),
            (w, h),
            "{file}"
        );
        let expected = load_rgb(entry["rgb"].as_str().unwrap());
        let got = img.as_rgb().as_raw();
        let diffs: Vec<i32> = got
            .iter()
            .zip(&expected)
            .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
            .collect();
        let max = diffs.iter().copied().max().unwrap();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        if entry["exact"].as_bool().unwrap() {
            assert_eq!(max, 0, "{file}: differs from PIL (mean {mean})");
        } else {
            // Different JPEG / lossy WebP decoders (IDCT, chroma upsampling) differ by a
            // few levels; a wrong colour conversion or orientation would be far larger.
            assert!(mean < 2.5 && max < 40, "{file}: mean {mean} max {max}");
        }
    }
}

#[test]
fn composite_on_white_matches_transformers_convert_to_rgb() {
    let m = manifest();
    let opts = DecodeOptions {
        alpha: AlphaMode::CompositeOnWhite,
        ..DecodeOptions::default()
    };
    for entry in m["composite_white"].as_array().unwrap() {
        let file = entry["file"].as_str().unwrap();
        let img = DecodedImage::decode(&std::fs::read(fixture(file)).unwrap(), &opts).unwrap();
        assert_eq!(
            img.as_rgb().as_raw(),
            &load_rgb(entry["rgb"].as_str().unwrap()),
            "{file}"
        );
    }
}

#[test]
fn animated_gif_uses_first_frame_and_exif_is_applied() {
    let opts = DecodeOptions::default();
    let gif = DecodedImage::decode(&std::fs::read(fixture("animated.gif")).unwrap(), &opts).unwrap();
    // Frame 1 is solid blue; frame 0 is a gradient whose top-left is black-ish.
    assert_ne!(gif.as_rgb().get_pixel(0, 0).0, [0, 0, 255]);
    for name in ["exif_orientation6.jpg", "exif_orientation6.png"] {
        let img = DecodedImage::decode(&std::fs::read(fixture(name)).unwrap(), &opts).unwrap();
        assert_eq!((img.width(), img.height()), (16, 24), "{name}");
    }
    // Upright reference vs rotated image: embeddings must match closely.
    let enc = encoder();
    let upright = vitrine::encoder::DecodedImage::from_rgb(
        image::RgbImage::from_raw(16, 24, load_rgb("exif_orientation6.png.rgb")).unwrap(),
    );
    let rotated = enc
        .decode_image(&std::fs::read(fixture("exif_orientation6.png")).unwrap())
        .unwrap();
    let unrotated_raw = image::load_from_memory(&std::fs::read(fixture("rgb.png")).unwrap())
        .unwrap()
        .to_rgb8();
    let e = enc
        .embed_images(&[upright, rotated, DecodedImage::from_rgb(unrotated_raw)])
        .unwrap();
    assert!(max_diff(&e[0], &e[1]) < 1e-6);
    assert!(max_diff(&e[0], &e[2]) > 1e-3);
}

#[test]
fn pil_bicubic_resize_is_bit_exact() {
    let m = manifest();
    for entry in m["resize"].as_array().unwrap() {
        let src = image::open(fixture(entry["src"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let expected = image::open(fixture(entry["file"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let got = vitrine::encoder::pil_resize::resize_bicubic(&src, expected.width(), expected.height());
        assert_eq!(got, expected, "{}", entry["file"]);
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    v.extend(13u32.to_be_bytes());
    v.extend(&ihdr);
    v.extend(crc32(&ihdr).to_be_bytes());
    // An empty IDAT so the header parse completes; no pixel data follows.
    for chunk in [&b"IDAT"[..], &b"IEND"[..]] {
        v.extend(0u32.to_be_bytes());
        v.extend(chunk);
        v.extend(crc32(chunk).to_be_bytes());
    }
    v
}

#[test]
fn bad_images_give_clear_errors() {
    let opts = DecodeOptions::default();
    let err = DecodedImage::decode(b"definitely not an image", &opts).unwrap_err();
    assert!(matches!(err, EncoderError::UnsupportedImageFormat(_)), "{err}");
    let err = DecodedImage::decode(b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00", &opts).unwrap_err();
    assert!(matches!(err, EncoderError::UnsupportedImageFormat(_)), "{err}");

    for name in ["rgb.jpg", "rgb.png", "lossy.webp", "animated.gif"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let truncated = &bytes[..bytes.len() / 2];
        let err = DecodedImage::decode(truncated, &opts).unwrap_err();
        assert!(matches!(err, EncoderError::CorruptImage(_)), "{name}: {err}");
    }
    let mut corrupt = std::fs::read(fixture("rgb.png")).unwrap();
    let n = corrupt.len();
    corrupt[40..n - 20].iter_mut().for_each(|b| *b = !*b);
    let err = DecodedImage::decode(&corrupt, &opts).unwrap_err();
    assert!(matches!(err, EncoderError::CorruptImage(_)), "{err}");

    // Header announces 50000x50000: refused before any pixel is decoded.
    let err = DecodedImage::decode(&png_header_only(50_000, 50_000), &opts).unwrap_err();
    match err {
        EncoderError::ImageTooLarge {
            width, height, limit, ..
        } => {
            assert_eq!((width, height, limit), (50_000, 50_000, 40_000_000));
        }
        other => panic!("expected ImageTooLarge, got {other}"),
    }
    let small_limit = DecodeOptions {
        max_pixels: 100,
        ..DecodeOptions::default()
    };
    let err = DecodedImage::decode(&std::fs::read(fixture("rgb.jpg")).unwrap(), &small_limit).unwrap_err();
    assert!(matches!(err, EncoderError::ImageTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("too large"));
}

fn rewrite_tensors(
    dir: &Path,
    edit: impl FnOnce(&mut std::collections::HashMap<String, candle_core::Tensor>),
) {
    let path = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    edit(&mut tensors);
    write_safetensors(&path, &tensors).unwrap();
}

#[test]
fn missing_or_misshapen_tensor_is_named() {
    let dir = fresh_dir();
    rewrite_tensors(dir.path(), |t| {
        t.remove("vision_model.embeddings.class_embedding");
    });
    let err = Encoder::from_dir(dir.path(), &EncoderOptions::default()).unwrap_err();
    assert!(
        matches!(&err, EncoderError::MissingTensor { name, .. } if name == "vision_model.embeddings.class_embedding"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("vision_model.embeddings.class_embedding")
    );

    let dir = fresh_dir();
    rewrite_tensors(dir.path(), |t| {
        t.insert(
            "text_projection.weight".into(),
            candle_core::Tensor::zeros((16, 31), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
        );
    });
    let err = Encoder::from_dir(dir.path(), &EncoderOptions::default()).unwrap_err();
    match &err {
        EncoderError::TensorShape {
            name,
            expected,
            actual,
        } => {
            assert_eq!(name, "text_projection.weight");
            assert_eq!(
                (expected.as_slice(), actual.as_slice()),
                (&[16, 32][..], &[16, 31][..])
            );
        }
        other => panic!("expected TensorShape, got {other}"),
    }
    assert!(err.to_string().contains("text_projection.weight"));

    let dir = fresh_dir();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let err = Encoder::from_dir(dir.path(), &EncoderOptions::default()).unwrap_err();
    assert!(matches!(err, EncoderError::CorruptCheckpoint { .. }), "{err}");
}

#[test]
fn missing_file_is_named() {
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        let dir = fresh_dir();
        std::fs::remove_file(dir.path().join(file)).unwrap();
        let err = Encoder::from_dir(dir.path(), &EncoderOptions::default()).unwrap_err();
        assert!(
            matches!(&err, EncoderError::MissingFile { path } if path.ends_with(file)),
            "{file}: {err}"
        );
        assert!(err.to_string().contains(file), "{err}");
    }
    let err = Encoder::from_dir(Path::new("/nonexistent/clip"), &EncoderOptions::default()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/clip"), "{err}");
}

#[test]
fn unsupported_config_is_refused() {
    let dir = fresh_dir();
    let p = dir.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    cfg["vision_config"]["hidden_act"] = "gelu".into();
    std::fs::write(&p, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let err = Encoder::from_dir(dir.path(), &EncoderOptions::default()).unwrap_err();
    assert!(matches!(err, EncoderError::UnsupportedConfig(_)), "{err}");

    std::fs::write(&p, b"{not json").unwrap();
    let err = Encoder::from_dir(dir.path(), &EncoderOptions::default()).unwrap_err();
    assert!(matches!(err, EncoderError::InvalidConfig { .. }), "{err}");
}

#[test]
fn model_source_parsing() {
    let dir = tiny_dir();
    assert_eq!(
        dir.to_str().unwrap().parse::<ModelSource>().unwrap(),
        ModelSource::LocalDir(dir.to_path_buf())
    );
    assert_eq!(
        "openai/clip-vit-base-patch32".parse::<ModelSource>().unwrap(),
        ModelSource::Hub {
            repo: "openai/clip-vit-base-patch32".into(),
            revision: None
        }
    );
    assert_eq!(
        "hf://openai/clip-vit-base-patch32@3d74acf"
            .parse::<ModelSource>()
            .unwrap(),
        ModelSource::Hub {
            repo: "openai/clip-vit-base-patch32".into(),
            revision: Some("3d74acf".into())
        }
    );
    assert!(matches!(
        "s3://bucket/models/clip".parse::<ModelSource>().unwrap(),
        ModelSource::ObjectStore(_)
    ));
    assert!(matches!(
        "file:///srv/clip".parse::<ModelSource>().unwrap(),
        ModelSource::ObjectStore(_)
    ));
    assert!(matches!(
        "./models/clip".parse::<ModelSource>().unwrap(),
        ModelSource::LocalDir(_)
    ));
    let err = "not a source".parse::<ModelSource>().unwrap_err();
    assert!(err.to_string().contains("encoder.model"), "{err}");

    assert_eq!("cpu".parse::<DeviceSetting>().unwrap(), DeviceSetting::Cpu);
    assert_eq!("auto".parse::<DeviceSetting>().unwrap(), DeviceSetting::Auto);
    assert_eq!("cuda:1".parse::<DeviceSetting>().unwrap(), DeviceSetting::Cuda(1));
    assert!("tpu".parse::<DeviceSetting>().is_err());
}

#[test]
fn object_store_file_url_loads_and_stores_this_build_lacks_are_unsupported() {
    let cache = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(tiny_dir()).unwrap();
    let opts = EncoderOptions {
        source: SourceOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            revision: None,
        },
        ..EncoderOptions::default()
    };
    let src: ModelSource = url.as_str().parse().unwrap();
    let enc = Encoder::load(&src, &opts).unwrap();
    let direct = encoder();
    assert_eq!(
        enc.embed_texts(&["a red shoe"]).unwrap(),
        direct.embed_texts(&["a red shoe"]).unwrap()
    );
    assert_eq!(
        enc.model_id().split('@').nth(1),
        direct.model_id().split('@').nth(1)
    );
    // Second load hits the cache.
    Encoder::load(&src, &opts).unwrap();

    // This build carries object_store's S3 support (for `blobs.url`), not GCS.
    let src: ModelSource = "gs://bucket/clip".parse().unwrap();
    let err = Encoder::load(&src, &opts).unwrap_err();
    assert!(matches!(err, EncoderError::UnsupportedSource { .. }), "{err}");
    assert!(err.to_string().contains("encoder.model"));

    let missing = url::Url::from_directory_path("/nonexistent-dir-for-test").unwrap();
    let err = Encoder::load(&missing.as_str().parse().unwrap(), &opts).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn hub_without_network_names_the_setting() {
    let cache = tempfile::tempdir().unwrap();
    let opts = EncoderOptions {
        source: SourceOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            revision: Some("main".into()),
        },
        ..EncoderOptions::default()
    };
    // A repo that does not exist: never downloads real weights, even with network.
    let src: ModelSource = "vitrine-test/no-such-clip-model".parse().unwrap();
    let start = std::time::Instant::now();
    let err = Encoder::load(&src, &opts).unwrap_err();
    eprintln!("hub error after {:?}: {err}", start.elapsed());
    // Without network: HubUnreachable; with network: HubNotFound (401/404).
    assert!(
        matches!(
            err,
            EncoderError::HubUnreachable { .. } | EncoderError::HubNotFound { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("encoder.model"), "{err}");
}

#[test]
fn cuda_without_feature_is_a_clear_error() {
    let opts = EncoderOptions {
        device: DeviceSetting::Cuda(0),
        ..EncoderOptions::default()
    };
    match Encoder::from_dir(tiny_dir(), &opts) {
        Err(err) => {
            assert!(matches!(err, EncoderError::Device { .. }), "{err}");
            assert!(err.to_string().contains("encoder.device"));
        }
        Ok(enc) => assert!(enc.device().is_cuda()),
    }
    let auto = EncoderOptions {
        device: DeviceSetting::Auto,
        threads: Some(1),
        ..EncoderOptions::default()
    };
    let enc = Encoder::from_dir(tiny_dir(), &auto).unwrap();
    assert_eq!(enc.embed_texts(&["a"]).unwrap()[0].len(), 16);
}

#[test]
fn encoder_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Encoder>();
    let enc = std::sync::Arc::new(encoder());
    let expected = enc.embed_texts(&["a red shoe"]).unwrap();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let enc = enc.clone();
            std::thread::spawn(move || enc.embed_texts(&["a red shoe"]).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), expected);
    }
}
