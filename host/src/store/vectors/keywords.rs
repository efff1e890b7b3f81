//! The one tokenizer of the keyword leg: qdrant-edge's BM25 embedder
//! (Qdrant's own tokenizer pipeline: word tokenizer, lowercase, English
//! stopwords and Snowball stemmer; tokens hashed to term ids). Both
//! backends store and query what it makes, so they agree term for term;
//! the engine multiplies the query's weights by each term's IDF over the
//! index ([`super::V_KEYWORDS`] is created with the IDF modifier).
//!
//! Term ids are per tenant: each token's id is hashed again with the
//! tenant ([`tenant_term`]), so a word of one tenant and the same word of
//! another are different terms. The engine's document frequencies are
//! then each tenant's own, and no tenant's scores say how many of another
//! tenant's products hold a word; only the index's total point count,
//! which IDF also uses, is shared.
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

/// A token's term id for one tenant: FNV-1a (32 bits) of the tenant, a NUL
/// and the engine's id. Stable across processes and versions: NEVER change
/// it, every stored keyword vector depends on it.
pub fn tenant_term(tenant: &str, term: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in tenant.bytes().chain([0]).chain(term.to_le_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The tenant's term ids, sorted, with the weights of ids that meet
/// summed, as the engines require.
fn sorted(tenant: &str, indices: Vec<u32>, values: Vec<f32>) -> Keywords {
    let indices = indices.into_iter().map(|i| tenant_term(tenant, i));
    let mut pairs: Vec<(u32, f32)> = indices.zip(values).collect();
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

/// A product text's BM25 document vector, in its tenant's terms.
pub fn document(tenant: &str, text: &str) -> Keywords {
    match BM25.as_ref() {
        Some(m) => {
            let v = m.embed_document(cut(text));
            sorted(tenant, v.indices, v.values)
        }
        None => Keywords::default(),
    }
}

/// A query's terms in its tenant's terms, each with weight 1 (a repeated
/// term counts once).
pub fn query(tenant: &str, text: &str) -> Keywords {
    match BM25.as_ref() {
        Some(m) => {
            let v = m.embed_query(cut(text));
            let mut k = sorted(tenant, v.indices, v.values);
            k.values.iter_mut().for_each(|x| *x = 1.0);
            k
        }
        None => Keywords::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_stemmed_lowercased_and_stopwords_dropped() {
        assert_eq!(query("t", "Running Shoes"), query("t", "the running shoe"));
        assert_ne!(query("t", "ECCO 470304"), query("t", "ECCO 470305"));
        assert!(query("t", "the and of").is_empty());
        let d = document("t", "red boots red");
        assert_eq!(d.indices.len(), 2);
        assert!(d.indices.windows(2).all(|w| w[0] < w[1]));
        // "red" twice weighs more than "boots" once.
        let q_red = query("t", "red").indices[0];
        let red = d.indices.iter().position(|i| *i == q_red).unwrap();
        assert!(d.values[red] > d.values[1 - red]);
    }

    #[test]
    fn long_texts_are_cut_at_a_char_boundary() {
        let long = "é".repeat(MAX_TEXT_BYTES);
        assert!(!document("t", &long).is_empty());
    }

    #[test]
    fn one_word_is_a_different_term_for_each_tenant() {
        assert_ne!(query("a", "boots"), query("b", "boots"));
        assert_ne!(query("ab", "boots"), query("a", "bboots"));
        assert_eq!(query("a", "boots"), query("a", "boot"));
        // Pinned: stored vectors depend on these ids.
        assert_eq!(tenant_term("", 0), 0x1210_d00f);
        assert_eq!(tenant_term("shop", 7), 0x327a_3ecc);
    }
}
