//! Hostile: a filter that recurses until the wasm stack overflows.
wit_bindgen::generate!({ path: "../../../wit", world: "filter" });
struct Plugin;

#[inline(never)]
fn dive(depth: u64, pad: [u64; 16]) -> u64 {
    let next = std::hint::black_box(pad);
    if depth == u64::MAX {
        return next[0];
    }
    dive(depth + 1, next).wrapping_add(next[(depth % 16) as usize])
}

impl Guest for Plugin {
    fn filter(_query: Query, candidates: Vec<Candidate>) -> Vec<String> {
        let depth = dive(0, [1; 16]);
        candidates
            .into_iter()
            .take(depth as usize)
            .map(|c| c.id)
            .collect()
    }
}
export!(Plugin);
