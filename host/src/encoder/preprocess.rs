//! Image decoding and preprocessing, reproducing `transformers.CLIPImageProcessor`
//! (the PIL-based "slow" processor) as fed by `transformers.image_utils.load_image`:
//!
//! 1. decode (first frame for animated formats), apply EXIF orientation
//!    (`load_image` calls `PIL.ImageOps.exif_transpose`);
//! 2. `PIL.Image.convert("RGB")`;
//! 3. shortest-edge resize with PIL's BICUBIC (antialiased, 8-bit fixed point);
//! 4. centre crop with HF's offset rounding;
//! 5. rescale by 1/255 and normalise with the CLIP mean/std, channels-first.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use super::config::{PreprocessConfig, ResizeSpec};
use super::error::{EncoderError, Result};

/// Default decompression-bomb guard: 40 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// What to do with an alpha channel when converting to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlphaMode {
    /// Discard alpha (`PIL.Image.convert("RGB")`). This is what OpenAI CLIP's training
    /// preprocessing and `transformers.image_utils.load_image` do, so it is the default.
    #[default]
    Drop,
    /// Composite onto opaque white, reproducing `transformers` 5.x `convert_to_rgb`
    /// (`PIL.Image.alpha_composite` over white) when a PIL RGBA/LA/transparent-palette
    /// image is handed straight to `CLIPImageProcessor`.
    CompositeOnWhite,
}

/// Options applied while decoding untrusted image bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Largest `width * height` accepted, checked from the header before decoding.
    pub max_pixels: u64,
    /// Alpha handling for RGBA / LA / transparent palette images.
    pub alpha: AlphaMode,
    /// Shortest edge the caller needs. A JPEG at least twice that size is
    /// decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (as PIL's
    /// `draft()` does), still at least this size: a fraction of the memory
    /// and time. `None` decodes every image at full size (exact parity with
    /// the reference preprocessing).
    pub min_edge: Option<u32>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            alpha: AlphaMode::Drop,
            min_edge: None,
        }
    }
}

/// An image decoded, EXIF-oriented and converted to 8-bit RGB; ready for preprocessing.
/// It may hold something as long as it lives (its share of a decode budget).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedImage(RgbImage, Option<Hold>);

/// Kept alive as long as the image that holds it (and its clones).
#[derive(Clone)]
pub struct Hold {
    _kept: std::sync::Arc<dyn std::any::Any + Send + Sync>,
}

impl Hold {
    pub fn new(kept: impl std::any::Any + Send + Sync) -> Self {
        Self {
            _kept: std::sync::Arc::new(kept),
        }
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hold")
    }
}

/// Images compare by their pixels only.
impl PartialEq for Hold {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl DecodedImage {
    /// Decode JPEG / PNG / WebP / GIF bytes (first frame of animations).
    pub fn decode(bytes: &[u8], limits: &DecodeOptions) -> Result<Self> {
        decode_image(bytes, limits)
    }

    /// Wrap an already-decoded image; converted to RGB the way PIL's `convert("RGB")` does.
    pub fn from_dynamic(img: DynamicImage, alpha: AlphaMode) -> Self {
        Self(to_rgb(img, alpha), None)
    }

    /// Wrap an RGB buffer as-is.
    pub fn from_rgb(img: RgbImage) -> Self {
        Self(img, None)
    }

    /// The same image, keeping `hold` alive as long as it lives.
    pub fn holding(mut self, hold: Hold) -> Self {
        self.1 = Some(hold);
        self
    }

    pub fn width(&self) -> u32 {
        self.0.width()
    }

    pub fn height(&self) -> u32 {
        self.0.height()
    }

    pub fn as_rgb(&self) -> &RgbImage {
        &self.0
    }

    pub fn into_rgb(self) -> RgbImage {
        self.0
    }
}

fn classify(err: image::ImageError) -> EncoderError {
    use image::error::{ImageError, LimitErrorKind};
    match err {
        ImageError::Unsupported(e) => EncoderError::UnsupportedImageFormat(e.to_string()),
        ImageError::Limits(e) => match e.kind() {
            LimitErrorKind::DimensionError | LimitErrorKind::InsufficientMemory => {
                EncoderError::CorruptImage(format!("decoder limit exceeded: {e}"))
            }
            _ => EncoderError::CorruptImage(e.to_string()),
        },
        ImageError::IoError(e) => EncoderError::CorruptImage(format!("truncated or unreadable: {e}")),
        other => EncoderError::CorruptImage(other.to_string()),
    }
}

/// What decoding an image will produce, read from its header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodePlan {
    pub width: u32,
    pub height: u32,
    /// Pixels the decoder will hold: the full image, or the scaled JPEG.
    pub decoded_pixels: u64,
    /// `n` of an `n/8` JPEG scale, when scaled decoding applies.
    jpeg_eighths: Option<u32>,
}

impl DecodePlan {
    /// Reads the header only (no pixel data) and checks the pixel limit.
    pub fn read(bytes: &[u8], limits: &DecodeOptions) -> Result<Self> {
        let reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| EncoderError::CorruptImage(e.to_string()))?;
        let format = reader.format();
        let (width, height) = reader.into_dimensions().map_err(classify)?;
        let pixels = u64::from(width) * u64::from(height);
        if pixels > limits.max_pixels {
            return Err(EncoderError::ImageTooLarge {
                width,
                height,
                pixels,
                limit: limits.max_pixels,
            });
        }
        let jpeg_eighths = match (format, limits.min_edge) {
            (Some(image::ImageFormat::Jpeg), Some(edge)) if edge > 0 && scalable_jpeg(bytes) => {
                let short = u64::from(width.min(height));
                // The smallest n with ceil(short * n / 8) >= edge.
                (1..8u32).find(|n| (short * u64::from(*n)).div_ceil(8) >= u64::from(edge))
            }
            _ => None,
        };
        let decoded_pixels = match jpeg_eighths {
            Some(n) => scaled(width, n) * scaled(height, n),
            None => pixels,
        };
        Ok(Self {
            width,
            height,
            decoded_pixels,
            jpeg_eighths,
        })
    }
}

impl DecodePlan {
    /// Pixels of the image at full size.
    pub fn full_pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Whether the image is decoded scaled (a baseline JPEG well above the
    /// edge).
    pub fn is_scaled(&self) -> bool {
        self.jpeg_eighths.is_some()
    }

    /// The scaled decode, or `None` when the decoder cannot make it (the
    /// caller decodes at full size, budgeted as such).
    pub fn decode_scaled(&self, bytes: &[u8], alpha: AlphaMode) -> Option<DecodedImage> {
        let img = decode_jpeg_scaled(bytes, self, self.jpeg_eighths?)?;
        Some(DecodedImage(to_rgb(img, alpha), None))
    }
}

/// A baseline (sequential DCT) JPEG of RGB or grey pixels: what scaled
/// decoding handles within the scaled size. A progressive JPEG keeps
/// full-size coefficient buffers whatever the scale.
fn scalable_jpeg(bytes: &[u8]) -> bool {
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.read_info().is_ok()
        && decoder.info().is_some_and(|i| {
            i.coding_process == jpeg_decoder::CodingProcess::DctSequential
                && matches!(
                    i.pixel_format,
                    jpeg_decoder::PixelFormat::RGB24 | jpeg_decoder::PixelFormat::L8
                )
        })
}

fn scaled(side: u32, eighths: u32) -> u64 {
    (u64::from(side) * u64::from(eighths)).div_ceil(8)
}

/// A JPEG decoded at `eighths`/8 scale by `jpeg-decoder`; `None` when it
/// cannot (CMYK or 16-bit data, or an error the full decoder reports
/// better), and the caller decodes at full size.
fn decode_jpeg_scaled(bytes: &[u8], plan: &DecodePlan, eighths: u32) -> Option<DynamicImage> {
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    if (u32::from(info.width), u32::from(info.height)) != (plan.width, plan.height) {
        return None;
    }
    let want = |side| u16::try_from(scaled(side, eighths)).ok();
    let (w, h) = decoder.scale(want(plan.width)?, want(plan.height)?).ok()?;
    if u64::from(w) * u64::from(h) > plan.decoded_pixels {
        return None;
    }
    let pixels = decoder.decode().ok()?;
    let (w, h) = (u32::from(w), u32::from(h));
    let mut img = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, pixels)?),
        jpeg_decoder::PixelFormat::L8 => DynamicImage::ImageLuma8(image::GrayImage::from_raw(w, h, pixels)?),
        jpeg_decoder::PixelFormat::L16 | jpeg_decoder::PixelFormat::CMYK32 => return None,
    };
    if let Some(orientation) = decoder
        .exif_data()
        .and_then(image::metadata::Orientation::from_exif_chunk)
    {
        img.apply_orientation(orientation);
    }
    Some(img)
}

fn decode_image(bytes: &[u8], limits: &DecodeOptions) -> Result<DecodedImage> {
    if limits.min_edge.is_some() {
        let plan = DecodePlan::read(bytes, limits)?;
        if let Some(eighths) = plan.jpeg_eighths
            && let Some(img) = decode_jpeg_scaled(bytes, &plan, eighths)
        {
            return Ok(DecodedImage(to_rgb(img, limits.alpha), None));
        }
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| EncoderError::CorruptImage(e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(EncoderError::UnsupportedImageFormat(
            "unrecognised file signature (expected JPEG, PNG, WebP or GIF)".into(),
        ));
    };
    if !matches!(
        format,
        image::ImageFormat::Jpeg
            | image::ImageFormat::Png
            | image::ImageFormat::WebP
            | image::ImageFormat::Gif
    ) {
        return Err(EncoderError::UnsupportedImageFormat(format!(
            "{format:?} (expected JPEG, PNG, WebP or GIF)"
        )));
    }
    let mut reader = reader;
    // Read only the header first, without allocation limits (none is needed for it),
    // so an oversized image is reported as too large rather than as a limit failure.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(classify)?;
    // Decompression-bomb guard: only the header has been read at this point.
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    let too_large = || EncoderError::ImageTooLarge {
        width,
        height,
        pixels,
        limit: limits.max_pixels,
    };
    if pixels > limits.max_pixels {
        return Err(too_large());
    }
    // Belt and braces: the decoder's own limits also bound allocations in case a header
    // lies (e.g. GIF frames larger than the logical screen, huge metadata chunks).
    let mut lim = image::Limits::default();
    lim.max_image_width = Some(width.max(1));
    lim.max_image_height = Some(height.max(1));
    lim.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
    decoder.set_limits(lim).map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(),
        other => classify(other),
    })?;
    if pixels == 0 {
        return Err(EncoderError::CorruptImage(format!(
            "zero-sized image ({width}x{height})"
        )));
    }
    // `transformers.image_utils.load_image` applies `ImageOps.exif_transpose`; a missing or
    // unreadable EXIF block means "no transform", as in PIL.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    // For GIF (and animated WebP) `ImageDecoder` yields the first frame, as PIL does on open.
    let mut img = DynamicImage::from_decoder(decoder).map_err(classify)?;
    img.apply_orientation(orientation);
    Ok(DecodedImage(to_rgb(img, limits.alpha), None))
}

fn to_rgb(img: DynamicImage, alpha: AlphaMode) -> RgbImage {
    match alpha {
        AlphaMode::CompositeOnWhite if img.color().has_alpha() => composite_on_white(&img.to_rgba8()),
        _ => to_rgb_like_pil(img),
    }
}

/// `PIL.Image.alpha_composite(white, im).convert("RGB")`, ported from Pillow's
/// `AlphaComposite.c` integer path (7 extra precision bits, rounded divisions by 255).
fn composite_on_white(rgba: &image::RgbaImage) -> RgbImage {
    const PREC: u32 = 7;
    let div255 = |a: u32| ((a >> 8) + a) >> 8;
    let (w, h) = rgba.dimensions();
    let data = rgba
        .as_raw()
        .chunks_exact(4)
        .flat_map(|p| {
            let sa = u32::from(p[3]);
            if sa == 0 {
                return [255u8, 255, 255];
            }
            let blend = 255 * (255 - sa);
            let outa255 = sa * 255 + blend;
            let coef1 = sa * 255 * 255 * (1 << PREC) / outa255;
            let coef2 = 255 * (1 << PREC) - coef1;
            [0, 1, 2].map(|c| {
                let tmp = u32::from(p[c]) * coef1 + 255 * coef2;
                (div255(tmp + (0x80 << PREC)) >> PREC) as u8
            })
        })
        .collect();
    RgbImage::from_raw(w, h, data).unwrap_or_default()
}

/// Convert to 8-bit RGB the way `PIL.Image.convert("RGB")` does for the modes PIL produces:
/// * `L` -> grey replicated to R=G=B;
/// * `LA` / `RGBA` / palette with transparency -> alpha is **dropped**, not composited
///   (PIL's `convert("RGB")` discards the alpha band);
/// * palette -> palette colours (the `image` crate already expands palettes);
/// * CMYK JPEG -> the decoder converts to RGB;
/// * 16-bit -> PIL keeps the most significant byte (`RGB;16B` raw mode), so we shift by 8
///   instead of the `image` crate's rounding `x / 257`.
fn to_rgb_like_pil(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageRgba8(rgba) => {
            let (w, h) = rgba.dimensions();
            let data = rgba
                .into_raw()
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect();
            RgbImage::from_raw(w, h, data).unwrap_or_default()
        }
        DynamicImage::ImageLuma8(l) => {
            let (w, h) = l.dimensions();
            let data = l.into_raw().into_iter().flat_map(|v| [v, v, v]).collect();
            RgbImage::from_raw(w, h, data).unwrap_or_default()
        }
        DynamicImage::ImageLumaA8(la) => {
            let (w, h) = la.dimensions();
            let data = la
                .into_raw()
                .chunks_exact(2)
                .flat_map(|p| [p[0], p[0], p[0]])
                .collect();
            RgbImage::from_raw(w, h, data).unwrap_or_default()
        }
        DynamicImage::ImageRgb16(rgb) => {
            let (w, h) = rgb.dimensions();
            let data = rgb.into_raw().into_iter().map(|v| (v >> 8) as u8).collect();
            RgbImage::from_raw(w, h, data).unwrap_or_default()
        }
        DynamicImage::ImageRgba16(rgba) => {
            let (w, h) = rgba.dimensions();
            let data = rgba
                .into_raw()
                .chunks_exact(4)
                .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
                .collect();
            RgbImage::from_raw(w, h, data).unwrap_or_default()
        }
        DynamicImage::ImageLuma16(l) => {
            let (w, h) = l.dimensions();
            let data = l
                .into_raw()
                .into_iter()
                .flat_map(|v| {
                    let v = (v >> 8) as u8;
                    [v, v, v]
                })
                .collect();
            RgbImage::from_raw(w, h, data).unwrap_or_default()
        }
        DynamicImage::ImageLumaA16(la) => {
            let (w, h) = la.dimensions();
            let data = la
                .into_raw()
                .chunks_exact(2)
                .flat_map(|p| {
                    let v = (p[0] >> 8) as u8;
                    [v, v, v]
                })
                .collect();
            RgbImage::from_raw(w, h, data).unwrap_or_default()
        }
        // Float images and future variants: the image crate's conversion (alpha dropped).
        other => other.to_rgb8(),
    }
}

/// Output `(height, width)` of a shortest-edge resize, exactly as
/// `transformers.image_transforms.get_resize_output_image_size(default_to_square=False)`:
/// the short side becomes `size` and the long side is `int(size * long / short)`
/// (Python true division then truncation, not rounding).
pub fn shortest_edge_output_size(height: u32, width: u32, size: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    // `size * long` is an exact integer product in Python; the division is a correctly
    // rounded f64 division in both languages, and `int()` truncates like `as`.
    let new_long = ((u64::from(size) * u64::from(long)) as f64 / f64::from(short)) as u32;
    if width <= height {
        (new_long, size)
    } else {
        (size, new_long)
    }
}

/// Full preprocessing: returns channels-first `[3, image_size, image_size]` f32 values.
pub fn preprocess(img: &DecodedImage, cfg: &PreprocessConfig) -> Result<Vec<f32>> {
    let mut rgb: std::borrow::Cow<'_, RgbImage> = std::borrow::Cow::Borrowed(&img.0);
    if let Some(spec) = cfg.resize {
        let (h, w) = match spec {
            ResizeSpec::ShortestEdge(n) => shortest_edge_output_size(rgb.height(), rgb.width(), n),
            ResizeSpec::Exact { height, width } => (height, width),
        };
        if h == 0 || w == 0 {
            return Err(EncoderError::CorruptImage(format!(
                "image {}x{} is too thin to resize",
                rgb.width(),
                rgb.height()
            )));
        }
        // HF converts the array back to a PIL image, resizes with BICUBIC, and converts
        // back to uint8: the u8 rounding/clamping is part of the reference.
        rgb = std::borrow::Cow::Owned(pil_resize::resize_bicubic(&rgb, w, h));
    }
    let (ch, cw) = cfg.crop.unwrap_or((rgb.height(), rgb.width()));
    if ch != cfg.image_size || cw != cfg.image_size {
        return Err(EncoderError::UnsupportedConfig(format!(
            "preprocessing yields {cw}x{ch} but the vision tower expects {0}x{0}",
            cfg.image_size
        )));
    }
    Ok(crop_and_normalize(&rgb, ch, cw, cfg))
}

/// HF `center_crop` + `rescale` + `normalize`, fused.
///
/// Crop offsets are `(orig - crop) // 2` (Python floor division). When the image is smaller
/// than the crop HF zero-pads symmetrically with `ceil` padding; the net effect is that output
/// pixel `(r, c)` reads source `(r + top, c + left)` or 0 outside the source, which is what
/// we compute.
fn crop_and_normalize(rgb: &RgbImage, ch: u32, cw: u32, cfg: &PreprocessConfig) -> Vec<f32> {
    let (w, h) = (i64::from(rgb.width()), i64::from(rgb.height()));
    let top = (h - i64::from(ch)).div_euclid(2);
    let left = (w - i64::from(cw)).div_euclid(2);
    let plane = (ch as usize) * (cw as usize);
    let mut out = vec![0f32; 3 * plane];
    let raw = rgb.as_raw();
    // HF: `image.astype(float64) * scale` then `.astype(float32)`; normalise in float32.
    let lut: Vec<[f32; 3]> = (0u16..=255)
        .map(|v| {
            let x = match cfg.rescale_factor {
                Some(s) => (f64::from(v) * s) as f32,
                None => f32::from(v),
            };
            [0, 1, 2].map(|c| (x - cfg.mean[c]) / cfg.std[c])
        })
        .collect();
    for r in 0..i64::from(ch) {
        let sy = r + top;
        for c in 0..i64::from(cw) {
            let sx = c + left;
            let px = if sy >= 0 && sy < h && sx >= 0 && sx < w {
                let i = ((sy * w + sx) * 3) as usize;
                [raw[i], raw[i + 1], raw[i + 2]]
            } else {
                [0, 0, 0]
            };
            let o = (r as usize) * (cw as usize) + c as usize;
            for k in 0..3 {
                out[k * plane + o] = lut[px[k] as usize][k];
            }
        }
    }
    out
}

/// A port of Pillow's `Resample.c` (`ImagingResample` with `BICUBIC`) for 8-bit RGB.
///
/// Reproduced exactly because `CLIPImageProcessor` resizes through PIL: bicubic kernel with
/// `a = -0.5`, support scaled by the downscale factor (antialiasing), coefficients normalised
/// in f64 then converted to 22-bit fixed point, a horizontal pass whose output is rounded
/// and clamped to u8, then a vertical pass. Each pass is skipped when that dimension is
/// unchanged, as in Pillow.
pub mod pil_resize {
    use image::RgbImage;

    const PRECISION_BITS: u32 = 32 - 8 - 2;
    const SUPPORT: f64 = 2.0;

    fn bicubic(x: f64) -> f64 {
        const A: f64 = -0.5;
        let x = x.abs();
        if x < 1.0 {
            ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * A
        } else {
            0.0
        }
    }

    struct Coeffs {
        ksize: usize,
        /// `(xmin, count)` per output pixel.
        bounds: Vec<(usize, usize)>,
        kk: Vec<i32>,
    }

    fn precompute(in_size: usize, out_size: usize) -> Coeffs {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut kk = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C `(int)` casts truncate toward zero, like Rust `as`.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
            let xmax = xmax.max(0) as usize;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(xmax) {
                let w = bicubic(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            for (x, kx) in k.iter().enumerate().take(xmax) {
                let v = if ww != 0.0 { kx / ww } else { *kx };
                let f = v * f64::from(1u32 << PRECISION_BITS);
                kk[xx * ksize + x] = if v < 0.0 {
                    (-0.5 + f) as i32
                } else {
                    (0.5 + f) as i32
                };
            }
            bounds.push((xmin as usize, xmax));
        }
        Coeffs { ksize, bounds, kk }
    }

    fn clip8(v: i32) -> u8 {
        if v >= (1 << PRECISION_BITS << 8) {
            255
        } else if v <= 0 {
            0
        } else {
            (v >> PRECISION_BITS) as u8
        }
    }

    /// Resize to `out_w x out_h` exactly as `PIL.Image.resize(..., Image.BICUBIC)` on "RGB".
    pub fn resize_bicubic(src: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
        let (in_w, in_h) = (src.width() as usize, src.height() as usize);
        let (ow, oh) = (out_w as usize, out_h as usize);
        let mut cur: Vec<u8> = src.as_raw().clone();
        let mut cur_w = in_w;
        let mut cur_h = in_h;
        if ow != in_w {
            let c = precompute(in_w, ow);
            let mut out = vec![0u8; ow * cur_h * 3];
            for y in 0..cur_h {
                let row = &cur[y * cur_w * 3..(y + 1) * cur_w * 3];
                for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
                    let k = &c.kk[xx * c.ksize..xx * c.ksize + n];
                    let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
                    for (x, &kx) in k.iter().enumerate() {
                        let p = (xmin + x) * 3;
                        for ch in 0..3 {
                            ss[ch] += i32::from(row[p + ch]) * kx;
                        }
                    }
                    let o = (y * ow + xx) * 3;
                    for ch in 0..3 {
                        out[o + ch] = clip8(ss[ch]);
                    }
                }
            }
            cur = out;
            cur_w = ow;
        }
        if oh != cur_h {
            let c = precompute(cur_h, oh);
            let mut out = vec![0u8; cur_w * oh * 3];
            for (yy, &(ymin, n)) in c.bounds.iter().enumerate() {
                let k = &c.kk[yy * c.ksize..yy * c.ksize + n];
                for x in 0..cur_w {
                    let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
                    for (y, &ky) in k.iter().enumerate() {
                        let p = ((ymin + y) * cur_w + x) * 3;
                        for ch in 0..3 {
                            ss[ch] += i32::from(cur[p + ch]) * ky;
                        }
                    }
                    let o = (yy * cur_w + x) * 3;
                    for ch in 0..3 {
                        out[o + ch] = clip8(ss[ch]);
                    }
                }
            }
            cur = out;
            cur_h = oh;
        }
        RgbImage::from_raw(cur_w as u32, cur_h as u32, cur).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_resize_output_size() {
        // int(224 * 640 / 480) = 298 (298.66 truncated)
        assert_eq!(shortest_edge_output_size(480, 640, 224), (224, 298));
        assert_eq!(shortest_edge_output_size(640, 480, 224), (298, 224));
        assert_eq!(shortest_edge_output_size(100, 100, 224), (224, 224));
        // int(224 * 333 / 100) = int(745.92) = 745
        assert_eq!(shortest_edge_output_size(100, 333, 224), (224, 745));
    }

    #[test]
    fn identity_resize_is_copy() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 7]));
        assert_eq!(pil_resize::resize_bicubic(&img, 5, 4), img);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([10, 128, 250]));
        let out = pil_resize::resize_bicubic(&img, 11, 50);
        assert!(out.pixels().all(|p| p.0 == [10, 128, 250]));
    }
}
