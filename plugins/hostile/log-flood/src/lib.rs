//! Hostile: a ranker that logs without end, with huge lines.
wit_bindgen::generate!({ path: "../../../wit", world: "ranker" });
use vitrine::plugin::host::{Level, log};
struct Plugin;
impl Guest for Plugin {
    fn rank(_query: Query, candidates: Vec<Candidate>) -> Vec<f32> {
        let line = "flood ".repeat(400);
        let mut n: u64 = 0;
        loop {
            log(Level::Error, &line);
            n += 1;
            if std::hint::black_box(n) == u64::MAX {
                break;
            }
        }
        vec![0.0; candidates.len()]
    }
}
export!(Plugin);
