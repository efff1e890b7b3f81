//! Hostile: a ranker that sleeps for a second inside WASI (a monotonic-clock
//! pollable, as `std::thread::sleep` compiles on wasm32-wasip2). Epoch
//! interruption cannot stop it; the host must drop the call at its deadline.
use std::time::Duration;
wit_bindgen::generate!({ path: "../../../wit", world: "ranker" });
struct Plugin;
impl Guest for Plugin {
    fn rank(_query: Query, candidates: Vec<Candidate>) -> Vec<f32> {
        std::thread::sleep(Duration::from_secs(1));
        candidates.iter().map(|c| c.score).collect()
    }
}
export!(Plugin);
