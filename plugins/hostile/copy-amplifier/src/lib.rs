//! Hostile: a filter whose output is 100 ids that all point at the same
//! 1 MiB string in its memory. Lifting it would make the host allocate and
//! copy 100 MiB for 1 MiB of guest memory (under wasmtime's default budget
//! of 128 MiB); the host must refuse it before copying (hostcall fuel sized
//! to the candidates).
wit_bindgen::generate!({ path: "../../../wit", world: "filter" });
struct Plugin;
impl Guest for Plugin {
    fn filter(_query: Query, _candidates: Vec<Candidate>) -> Vec<String> {
        let big: &'static mut [u8] = vec![b'x'; 1 << 20].leak();
        let (ptr, len) = (big.as_mut_ptr(), big.len());
        (0..100)
            // SAFETY (of a kind): every `String` aliases one leaked buffer on
            // purpose. The bindings hand the host (pointer, length) pairs and
            // forget the strings; the instance is thrown away after the call.
            .map(|_| unsafe { String::from_raw_parts(ptr, len, len) })
            .collect()
    }
}
export!(Plugin);
