//! The one tokenizer of the keyword leg: qdrant-edge's BM25 embedder
//! (Qdrant's own tokenizer pipeline: word tokenizer, lowercase, English
//! stopwords and Snowball stemmer; tokens hashed to term ids). Both
//! backends store and query what it makes, so they agree term for term;
//! the engine multiplies the query's weights by each term's IDF over the
//! index ([`super::V_KEYWORDS`] is created with the IDF modifier).
//!
//! Document weights are BM25's saturated term frequencies,
//! `tf (k1 + 1) / (tf + k1 (1 - b + b len / avg_len))` with k1 = 1.2 and
//! b = 0.75. `avg_len` is fixed (the engine has no corpus statistics for
//! it), at [`AVG_LEN`] tokens: about what a product's title, description,
//! category and tags come to. Changing any of this needs a full reindex.

use std::sync::LazyLock;

use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use qdrant_edge::external::ordered_float::NotNan;

use super::Keywords;

/// Typical length, in tokens, of a product's text.
pub const AVG_LEN: f64 = 24.0;

/// Longest text embedded (longer texts are cut at a character boundary):
/// bounds the work one product or query can ask for.
pub const MAX_TEXT_BYTES: usize = 32 * 1024;

static BM25: LazyLock<Option<EdgeBm25>> = LazyLock::new(|| {
    let config = EdgeBm25Config {
        avg_len: NotNan::new(AVG_LEN).unwrap_or_default(),
        ..EdgeBm25Config::default()
    };
    match EdgeBm25::new(config) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the BM25 tokenizer; keyword search is off");
            None
        }
    }
});

fn cut(text: &str) -> &str {
    if text.len() <= MAX_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Sorted by term id with duplicates summed, as the engines require.
fn sorted(indices: Vec<u32>, values: Vec<f32>) -> Keywords {
    let mut pairs: Vec<(u32, f32)> = indices.into_iter().zip(values).collect();
    pairs.sort_by_key(|(i, _)| *i);
    let mut out = Keywords::default();
    for (i, v) in pairs {
        if out.indices.last() == Some(&i) {
            if let Some(last) = out.values.last_mut() {
                *last += v;
            }
        } else {
            out.indices.push(i);
            out.values.push(v);
        }
    }
    out
}

/// A product text's BM25 document vector.
pub fn document(text: &str) -> Keywords {
    match BM25.as_ref() {
        Some(m) => {
            let v = m.embed_document(cut(text));
            sorted(v.indices, v.values)
        }
        None => Keywords::default(),
    }
}

/// A query's terms, each with weight 1 (a repeated term counts once).
pub fn query(text: &str) -> Keywords {
    match BM25.as_ref() {
        Some(m) => {
            let v = m.embed_query(cut(text));
            let mut k = sorted(v.indices, v.values);
            k.values.iter_mut().for_each(|x| *x = 1.0);
            k
        }
        None => Keywords::default(),
    }
}

/// The number of terms a text has for the keyword leg (tests and the
/// relevance benchmark's reference).
pub fn tokens(text: &str) -> usize {
    query(text).indices.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_stemmed_lowercased_and_stopwords_dropped() {
        assert_eq!(query("Running Shoes"), query("the running shoe"));
        assert_ne!(query("ECCO 470304"), query("ECCO 470305"));
        assert!(query("the and of").is_empty());
        let d = document("red boots red");
        assert_eq!(d.indices.len(), 2);
        assert!(d.indices.windows(2).all(|w| w[0] < w[1]));
        // "red" twice weighs more than "boots" once.
        let q_red = query("red").indices[0];
        let red = d.indices.iter().position(|i| *i == q_red).unwrap();
        assert!(d.values[red] > d.values[1 - red]);
    }

    #[test]
    fn long_texts_are_cut_at_a_char_boundary() {
        let long = "é".repeat(MAX_TEXT_BYTES);
        assert!(!document(&long).is_empty());
    }
}
