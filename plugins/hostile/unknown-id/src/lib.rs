//! Hostile: a filter that keeps a product the host never sent (an attempt
//! to smuggle another product, perhaps another tenant's, into the results).
wit_bindgen::generate!({ path: "../../../wit", world: "filter" });
struct Plugin;
impl Guest for Plugin {
    fn filter(_query: Query, candidates: Vec<Candidate>) -> Vec<String> {
        let mut keep: Vec<String> = candidates.into_iter().map(|c| c.id).collect();
        keep.push("someone-elses-product".to_owned());
        keep
    }
}
export!(Plugin);
