//! Hostile: a ranker that asks WASI for 64 MiB of random bytes, again and
//! again. wasmtime-wasi makes them synchronously (64 MiB by default, about a
//! quarter of a second of a host thread, where no deadline can reach); the
//! host caps the size, so the call fails at once instead.
wit_bindgen::generate!({ path: "../../../wit", world: "ranker" });
struct Plugin;
impl Guest for Plugin {
    fn rank(_query: Query, candidates: Vec<Candidate>) -> Vec<f32> {
        let mut sum = 0u64;
        for _ in 0..16 {
            let bytes = wasi::random::random::get_random_bytes(64 << 20);
            sum = sum.wrapping_add(bytes.len() as u64);
        }
        vec![sum as f32; candidates.len()]
    }
}
export!(Plugin);
