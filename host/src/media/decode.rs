//! Decoding untrusted images under a process-wide budget of decoded pixels
//! in flight (`media.decode_budget_pixels`): a semaphore weighted by the
//! pixels each decode will hold, read from the image's header. Large
//! images queue for up to `media.decode_wait_ms`, then get `Busy` (503),
//! instead of taking the process past its memory. JPEGs are decoded at a
//! reduced scale toward the encoder's input size where the format allows.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::encoder::{DecodeOptions, DecodePlan, DecodedImage, EncoderError, Hold};
use crate::telemetry;

/// Pixels per semaphore permit (permits are `u32`).
const PIXELS_PER_PERMIT: u64 = 1024;

/// Default budget: three images at the 40-megapixel cap.
pub const DEFAULT_BUDGET_PIXELS: u64 = 120_000_000;
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the image decoder is busy with other large images; retry shortly")]
    Busy,
    #[error(transparent)]
    Image(#[from] EncoderError),
    #[error("the image decoder stopped unexpectedly")]
    Crashed,
}

pub struct DecodeBudget {
    permits: Arc<Semaphore>,
    total: u32,
    wait: Duration,
    /// The encoder's input edge (0: decode at full size).
    min_edge: AtomicU32,
}

impl DecodeBudget {
    pub fn new(budget_pixels: u64, wait: Duration, min_edge: Option<u32>) -> Self {
        let total = u32::try_from(budget_pixels.div_ceil(PIXELS_PER_PERMIT).max(1)).unwrap_or(u32::MAX);
        Self {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
            wait,
            min_edge: AtomicU32::new(min_edge.unwrap_or(0)),
        }
    }

    /// Decodes toward this shortest edge from now on (the encoder's input).
    pub fn set_min_edge(&self, edge: u32) {
        self.min_edge.store(edge, Ordering::Relaxed);
    }

    /// Pixels (rounded to permits) held by decodes now.
    pub fn in_use_pixels(&self) -> u64 {
        held_pixels(&self.permits, self.total, 0)
    }

    /// Decodes `bytes` off the async threads once its pixels fit in the
    /// budget. An image larger than the whole budget waits for all of it.
    /// The decoded image holds its share until it is dropped (after it is
    /// encoded), so images waiting for the encoder count too.
    pub async fn decode(&self, bytes: Vec<u8>, max_pixels: u64) -> Result<DecodedImage, DecodeError> {
        let options = DecodeOptions {
            max_pixels,
            min_edge: Some(self.min_edge.load(Ordering::Relaxed)).filter(|e| *e > 0),
            ..DecodeOptions::default()
        };
        let plan = DecodePlan::read(&bytes, &options)?;
        let bytes = Arc::new(bytes);
        if plan.is_scaled() {
            let share = self.acquire(plan.decoded_pixels).await?;
            let b = bytes.clone();
            let scaled = tokio::task::spawn_blocking(move || {
                plan.decode_scaled(&b, options.alpha)
                    .map(|img| img.holding(Hold::new(share)))
            })
            .await
            .map_err(|_| DecodeError::Crashed)?;
            if let Some(img) = scaled {
                return Ok(img);
            }
            // The scaled decoder could not: decode at full size, budgeted
            // as such.
        }
        let share = self.acquire(plan.full_pixels()).await?;
        let full = DecodeOptions {
            min_edge: None,
            ..options
        };
        tokio::task::spawn_blocking(move || {
            DecodedImage::decode(&bytes, &full).map(|img| img.holding(Hold::new(share)))
        })
        .await
        .map_err(|_| DecodeError::Crashed)?
        .map_err(DecodeError::Image)
    }

    /// Runs `work`, which decodes an image of `pixels` pixels, off the
    /// async threads while holding that share of the budget.
    pub async fn run<T: Send + 'static>(
        &self,
        pixels: u64,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, DecodeError> {
        let share = self.acquire(pixels).await?;
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(share);
            out
        })
        .await
        .map_err(|_| DecodeError::Crashed)
    }

    /// A share of the budget for `pixels`, waiting up to the configured
    /// time. Released when dropped, wherever that happens.
    async fn acquire(&self, pixels: u64) -> Result<Share, DecodeError> {
        let wanted = u32::try_from(pixels.div_ceil(PIXELS_PER_PERMIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total);
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_many_owned(wanted))
            .await
            .map_err(|_| DecodeError::Busy)?
            .map_err(|_| DecodeError::Busy)?;
        let share = Share {
            _permit: permit,
            gauge: self.permits.clone(),
            total: self.total,
        };
        share.report(0);
        Ok(share)
    }
}

/// Pixels held in the budget; the gauge follows when it is released.
struct Share {
    _permit: OwnedSemaphorePermit,
    gauge: Arc<Semaphore>,
    total: u32,
}

/// Pixels held in `permits` out of `total`, counting `returning` permits
/// as already back.
fn held_pixels(permits: &Semaphore, total: u32, returning: usize) -> u64 {
    u64::from(total).saturating_sub((permits.available_permits() + returning) as u64) * PIXELS_PER_PERMIT
}

impl Share {
    fn report(&self, returning: usize) {
        let used = held_pixels(&self.gauge, self.total, returning);
        metrics::gauge!(telemetry::DECODE_PIXELS_IN_USE).set(used as f64);
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        // The permit goes back after this body; count it as back already.
        self.report(self._permit.num_permits());
    }
}

static BUDGET: OnceLock<DecodeBudget> = OnceLock::new();

/// Sets the process-wide budget (once, at start-up; later calls are
/// ignored). Without a call, the defaults apply.
pub fn configure(budget_pixels: u64, wait: Duration, min_edge: Option<u32>) {
    let _ = BUDGET.set(DecodeBudget::new(budget_pixels, wait, min_edge));
}

/// The process-wide budget.
pub fn budget() -> &'static DecodeBudget {
    BUDGET.get_or_init(|| DecodeBudget::new(DEFAULT_BUDGET_PIXELS, DEFAULT_WAIT, Some(224)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::new(width, height)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
        })
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
        out.into_inner()
    }

    #[tokio::test]
    async fn a_decode_waits_for_pixels_and_gives_up_as_busy() {
        let budget = Arc::new(DecodeBudget::new(1_000_000, Duration::from_millis(200), None));
        // Hold most of the budget, as a decode in flight would.
        let held = budget.permits.clone().acquire_many_owned(900).await.unwrap();
        let err = budget.decode(png(1000, 500), 40_000_000).await.unwrap_err();
        assert!(matches!(err, DecodeError::Busy), "{err}");
        // A small image still fits beside it.
        let small = budget.decode(png(200, 200), 40_000_000).await.unwrap();
        assert_eq!((small.width(), small.height()), (200, 200));
        drop(held);
        let big = budget.decode(png(1000, 500), 40_000_000).await.unwrap();
        assert_eq!(big.width(), 1000);
        // A decoded image holds its share until it is dropped.
        assert!(budget.in_use_pixels() >= 500_000);
        drop((big, small));
        assert_eq!(budget.in_use_pixels(), 0);
    }

    #[tokio::test]
    async fn large_jpegs_decode_scaled_but_never_below_the_edge() {
        let budget = DecodeBudget::new(DEFAULT_BUDGET_PIXELS, DEFAULT_WAIT, Some(224));
        let img = budget.decode(jpeg(1920, 1080), 40_000_000).await.unwrap();
        // 1080 / 4 = 270 >= 224; 1080 / 8 would be 135.
        assert_eq!((img.width(), img.height()), (480, 270));
        let plan = DecodePlan::read(
            &jpeg(1920, 1080),
            &DecodeOptions {
                min_edge: Some(224),
                ..DecodeOptions::default()
            },
        )
        .unwrap();
        assert_eq!(plan.decoded_pixels, 480 * 270);
        // Too small to scale: full size.
        let img = budget.decode(jpeg(300, 400), 40_000_000).await.unwrap();
        assert_eq!((img.width(), img.height()), (300, 400));
        // PNG has no scaled decoding.
        let img = budget.decode(png(900, 900), 40_000_000).await.unwrap();
        assert_eq!(img.width(), 900);
    }

    #[tokio::test]
    async fn the_pixel_cap_is_checked_from_the_header() {
        let budget = DecodeBudget::new(DEFAULT_BUDGET_PIXELS, DEFAULT_WAIT, Some(224));
        let err = budget.decode(png(3000, 3000), 1_000_000).await.unwrap_err();
        assert!(
            matches!(err, DecodeError::Image(EncoderError::ImageTooLarge { .. })),
            "{err}"
        );
    }
}
