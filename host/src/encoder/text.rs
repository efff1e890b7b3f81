//! CLIP text tokenisation (`tokenizer.json` through the `tokenizers` crate).

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::error::{EncoderError, Result};

/// Tokenizer plus the CLIP-specific knobs: truncation length and the end-of-text id
/// used to locate the pooled position.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    max_len: usize,
    eos_id: u32,
    pad_id: u32,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("max_len", &self.max_len)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

/// Token ids of one text, already truncated, with the pooling position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    pub ids: Vec<u32>,
    /// Index whose hidden state is pooled: the first end-of-text token, or the last token
    /// if (unexpectedly) none is present.
    pub eos_pos: usize,
}

impl ClipTokenizer {
    /// Load `tokenizer.json`; `max_len` is `text_config.max_position_embeddings` and
    /// `config_eos` the `text_config.eos_token_id` fallback.
    pub fn load(path: &Path, max_len: usize, config_eos: Option<u32>) -> Result<Self> {
        if !path.exists() {
            return Err(EncoderError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        let err = |message: String| EncoderError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        let mut inner = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        // HF's CLIPProcessor is called with `truncation=True, max_length=77` by CLIP users;
        // truncation happens before the post-processor adds <|startoftext|>/<|endoftext|>,
        // so the sequence still ends in end-of-text, like HF.
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| err(e.to_string()))?;
        // Single queries are not padded (HF: `padding=False`); batches are padded by us.
        inner.with_padding(None);
        // The tokenizer's <|endoftext|> is authoritative; legacy configs carry
        // `eos_token_id: 2`, which is why HF added the explicit-eos code path.
        let eos_id = inner
            .token_to_id("<|endoftext|>")
            .or(config_eos)
            .ok_or_else(|| err("no <|endoftext|> token and no text_config.eos_token_id".into()))?;
        // HF's CLIP tokenizer pads with <|endoftext|>; the value is irrelevant to the output
        // because of the causal mask and explicit eos pooling.
        let pad_id = eos_id;
        Ok(Self {
            inner,
            max_len,
            eos_id,
            pad_id,
        })
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Tokenise one text with special tokens, truncated to `max_len`.
    pub fn tokenize(&self, text: &str) -> Result<TokenizedText> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| EncoderError::Tokenize(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        // Defensive: a tokenizer.json with its own truncation settings could exceed ours.
        ids.truncate(self.max_len);
        if ids.is_empty() {
            return Err(EncoderError::Tokenize(
                "tokenizer produced no tokens (missing post-processor?)".into(),
            ));
        }
        // HF CLIPTextTransformer (eos_token_id != 2): pool at the first eos occurrence.
        let eos_pos = ids
            .iter()
            .position(|&t| t == self.eos_id)
            .unwrap_or(ids.len() - 1);
        Ok(TokenizedText { ids, eos_pos })
    }
}
