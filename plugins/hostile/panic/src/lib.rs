//! Hostile: a filter that prints to stdout and stderr, then panics (a trap,
//! with `panic = "abort"`; the panic message goes to stderr). Nothing it
//! writes may reach a response; the host logs it, capped and tagged.
wit_bindgen::generate!({ path: "../../../wit", world: "filter" });
struct Plugin;
impl Guest for Plugin {
    fn filter(query: Query, candidates: Vec<Candidate>) -> Vec<String> {
        println!("SECRET-STDOUT: internal state of the guest");
        eprintln!("SECRET-STDERR: about to panic");
        if std::hint::black_box(query.params.len()) < usize::MAX {
            panic!("this plugin always panics ({} candidates)", candidates.len());
        }
        Vec::new()
    }
}
export!(Plugin);
