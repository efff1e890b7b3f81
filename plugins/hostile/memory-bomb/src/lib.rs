//! Hostile: a ranker that allocates until the memory cap stops it.
wit_bindgen::generate!({ path: "../../../wit", world: "ranker" });
struct Plugin;
impl Guest for Plugin {
    fn rank(_query: Query, candidates: Vec<Candidate>) -> Vec<f32> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut block = vec![0u8; 1 << 20];
            block[0] = hoard.len() as u8;
            hoard.push(std::hint::black_box(block));
            if hoard.len() == usize::MAX {
                break;
            }
        }
        vec![hoard.len() as f32; candidates.len()]
    }
}
export!(Plugin);
