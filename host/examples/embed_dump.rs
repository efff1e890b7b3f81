//! Print embeddings as JSON (used by `scripts/parity.py`).
//!
//! ```text
//! embed_dump --model DIR [--text T]... [--texts-file F] [--image PATH]... [--pixels]
//!            [--alpha drop|white] [--batch] [--cpu-kernels K] [--precision f32|bf16]
//! ```
//! `--texts-file` reads a JSON array of strings. By default inputs are embedded one at a
//! time; `--batch` embeds all texts (and all images) in one call.

use std::path::PathBuf;

use vitrine::encoder::{
    AlphaMode, CpuKernels, DecodeOptions, Encoder, EncoderOptions, Precision, parse_precision,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut model = None;
    let mut texts: Vec<String> = Vec::new();
    let mut images: Vec<PathBuf> = Vec::new();
    let mut pixels = false;
    let mut batch = false;
    let mut alpha = AlphaMode::Drop;
    let mut cpu_kernels = CpuKernels::Auto;
    let mut precision = Precision::F32;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--model" => model = args.next().map(PathBuf::from),
            "--text" => texts.extend(args.next()),
            "--texts-file" => {
                let p = args.next().ok_or("--texts-file needs a path")?;
                let v: Vec<String> = serde_json::from_str(&std::fs::read_to_string(p)?)?;
                texts.extend(v);
            }
            "--image" => images.extend(args.next().map(PathBuf::from)),
            "--pixels" => pixels = true,
            "--batch" => batch = true,
            "--cpu-kernels" => cpu_kernels = args.next().ok_or("--cpu-kernels needs a value")?.parse()?,
            "--precision" => precision = parse_precision(&args.next().ok_or("--precision needs a value")?)?,
            "--alpha" => {
                alpha = match args.next().as_deref() {
                    Some("white") => AlphaMode::CompositeOnWhite,
                    _ => AlphaMode::Drop,
                }
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let model = model.ok_or("--model DIR is required")?;
    let opts = EncoderOptions {
        decode: DecodeOptions {
            alpha,
            ..DecodeOptions::default()
        },
        cpu_kernels,
        precision,
        ..EncoderOptions::default()
    };
    let enc = Encoder::from_dir(&model, &opts)?;

    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let text_embs = if batch {
        enc.embed_texts(&text_refs)?
    } else {
        let mut v = Vec::new();
        for t in &text_refs {
            v.extend(enc.embed_texts(&[t])?);
        }
        v
    };
    let mut decoded = Vec::new();
    for p in &images {
        decoded.push(enc.decode_image(&std::fs::read(p)?)?);
    }
    let image_embs = if batch {
        enc.embed_images(&decoded)?
    } else {
        let mut v = Vec::new();
        for d in &decoded {
            v.extend(enc.embed_images(std::slice::from_ref(d))?);
        }
        v
    };
    let mut image_json = Vec::new();
    for ((p, d), e) in images.iter().zip(&decoded).zip(image_embs) {
        let mut o = serde_json::json!({ "path": p, "embedding": e });
        if pixels {
            o["pixel_values"] = serde_json::json!(enc.pixel_values(d)?);
        }
        image_json.push(o);
    }
    let out = serde_json::json!({
        "model_id": enc.model_id(),
        "dims": enc.dims(),
        "texts": texts.iter().zip(text_embs).map(|(t, e)| serde_json::json!({"text": t, "embedding": e})).collect::<Vec<_>>(),
        "images": image_json,
    });
    println!("{out}");
    Ok(())
}
