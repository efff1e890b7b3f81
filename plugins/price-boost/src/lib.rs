//! `price-boost`: a ranker that lifts in-stock and cheaper products.
//!
//! New score = vector score
//!   + `in_stock_boost` if the product is in stock (default 0.05)
//!   + `cheap_boost` × (1 − price / highest price among the candidates)
//!     (default 0.05; candidates without a price get no price boost).
//!
//! Both parameters are set by the tenant when it activates the plugin.

wit_bindgen::generate!({ path: "../../wit", world: "ranker" });

use vitrine::plugin::host::{Level, log};

struct PriceBoost;

fn param(params: &[(String, String)], name: &str, default: f32) -> f32 {
    match params.iter().find(|(k, _)| k == name) {
        Some((_, v)) => match v.trim().parse::<f32>() {
            Ok(x) if x.is_finite() => x,
            _ => {
                log(
                    Level::Warn,
                    &format!("parameter {name}={v:?} is not a number; using {default}"),
                );
                default
            }
        },
        None => default,
    }
}

impl Guest for PriceBoost {
    fn rank(query: Query, candidates: Vec<Candidate>) -> Vec<f32> {
        let in_stock_boost = param(&query.params, "in_stock_boost", 0.05);
        let cheap_boost = param(&query.params, "cheap_boost", 0.05);
        let max_price = candidates
            .iter()
            .filter_map(|c| c.price)
            .filter(|p| p.is_finite() && *p > 0.0)
            .fold(0.0_f64, f64::max);
        candidates
            .iter()
            .map(|c| {
                let mut score = c.score;
                if c.in_stock {
                    score += in_stock_boost;
                }
                if let Some(price) = c.price.filter(|p| p.is_finite() && *p >= 0.0)
                    && max_price > 0.0
                {
                    score += cheap_boost * (1.0 - (price / max_price) as f32);
                }
                score
            })
            .collect()
    }
}

export!(PriceBoost);
