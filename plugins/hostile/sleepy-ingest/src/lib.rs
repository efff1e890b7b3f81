//! Hostile: an ingest plugin that sleeps for a second inside WASI before
//! returning the product unchanged: a write must not wait for it.
use std::time::Duration;
wit_bindgen::generate!({ path: "../../../wit", world: "ingest" });
struct Plugin;
impl Guest for Plugin {
    fn transform(product: Product, _params: Vec<(String, String)>) -> Result<Product, String> {
        std::thread::sleep(Duration::from_secs(1));
        Ok(product)
    }
}
export!(Plugin);
