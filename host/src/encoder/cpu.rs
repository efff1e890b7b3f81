//! Vitrine's CPU forward pass for the CLIP towers (crate `vitrine-clip`, on
//! `vitrine-kernels`) fed from a memory-mapped Hugging Face checkpoint.
//!
//! candle-transformers' CLIP stays the path for CUDA and for CPUs the kernels do not
//! serve by default; parity between the two is a test (`cpu_kernels_match_candle_*`).

use candle_core::{DType, Device, safetensors::MmapedSafetensors};
use vitrine_clip::ClipError;
pub use vitrine_clip::CpuClip;
use vitrine_kernels::{Isa, Precision};

use super::config::HfClipConfig;
use super::error::{EncoderError, Result};

/// Load and pack every weight of `st` (any float dtype, read as f32). The checkpoint
/// must already have passed `validate_checkpoint` (names and shapes).
pub(crate) fn load(
    st: &MmapedSafetensors,
    cfg: &HfClipConfig,
    isa: Isa,
    precision: Precision,
) -> Result<CpuClip> {
    CpuClip::load(&cfg.dims(), isa, precision, |name| {
        let t = st.load(name, &Device::Cpu)?;
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    })
}

impl From<ClipError> for EncoderError {
    fn from(e: ClipError) -> Self {
        match e {
            ClipError::Unsupported(isa) => EncoderError::CpuKernels {
                requested: isa.name().into(),
                message: e.to_string(),
            },
            other => EncoderError::Internal(other.to_string()),
        }
    }
}
