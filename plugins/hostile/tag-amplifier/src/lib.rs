//! Hostile: an ingest plugin whose product comes back with 100 tags that
//! all point at the same 1 MiB string: the ingest form of the copy
//! amplifier (100 MiB, under wasmtime's default budget of 128 MiB). The
//! host must refuse it before copying (the product limits).
wit_bindgen::generate!({ path: "../../../wit", world: "ingest" });
struct Plugin;
impl Guest for Plugin {
    fn transform(mut product: Product, _params: Vec<(String, String)>) -> Result<Product, String> {
        let big: &'static mut [u8] = vec![b'x'; 1 << 20].leak();
        let (ptr, len) = (big.as_mut_ptr(), big.len());
        // SAFETY (of a kind): every tag aliases one leaked buffer on purpose;
        // the bindings hand the host (pointer, length) pairs, and the
        // instance is thrown away after the call.
        product.tags = (0..100)
            .map(|_| unsafe { String::from_raw_parts(ptr, len, len) })
            .collect();
        Ok(product)
    }
}
export!(Plugin);
