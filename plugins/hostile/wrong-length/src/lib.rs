//! Hostile: a ranker that returns one score too few, and NaN for the rest.
wit_bindgen::generate!({ path: "../../../wit", world: "ranker" });
struct Plugin;
impl Guest for Plugin {
    fn rank(_query: Query, candidates: Vec<Candidate>) -> Vec<f32> {
        vec![f32::NAN; candidates.len().saturating_sub(1)]
    }
}
export!(Plugin);
