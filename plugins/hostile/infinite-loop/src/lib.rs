//! Hostile: a ranker that never returns. The host's epoch deadline (or its
//! fuel budget) must stop it.
wit_bindgen::generate!({ path: "../../../wit", world: "ranker" });
struct Plugin;
impl Guest for Plugin {
    fn rank(_query: Query, candidates: Vec<Candidate>) -> Vec<f32> {
        let mut x: u64 = candidates.len() as u64;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            if x == 42 {
                break;
            }
        }
        vec![x as f32; candidates.len()]
    }
}
export!(Plugin);
