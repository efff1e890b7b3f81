//! Hostile: a filter that panics (a trap, with `panic = "abort"`).
wit_bindgen::generate!({ path: "../../../wit", world: "filter" });
struct Plugin;
impl Guest for Plugin {
    fn filter(query: Query, candidates: Vec<Candidate>) -> Vec<String> {
        if std::hint::black_box(query.params.len()) < usize::MAX {
            panic!("this plugin always panics ({} candidates)", candidates.len());
        }
        Vec::new()
    }
}
export!(Plugin);
