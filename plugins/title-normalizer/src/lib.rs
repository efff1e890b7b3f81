//! `title-normalizer`: an ingest plugin that tidies products on their way
//! into the catalog.
//!
//! - title: control characters removed, runs of whitespace collapsed, ends
//!   trimmed, and (parameter `case`, default `title`) each word capitalised
//!   (`title`), or left as sent (`keep`);
//! - category: trimmed and lower-cased;
//! - tags: trimmed, lower-cased, empty ones dropped, duplicates removed;
//! - rejects the product when its title is empty after tidying, or contains
//!   one of the comma-separated words of parameter `reject_words`.

wit_bindgen::generate!({ path: "../../wit", world: "ingest" });

struct TitleNormalizer;

fn tidy(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn title_case(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Guest for TitleNormalizer {
    fn transform(mut product: Product, params: Vec<(String, String)>) -> Result<Product, String> {
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let mut title = tidy(&product.title);
        if title.is_empty() {
            return Err("the title is empty once control characters and spaces are removed".into());
        }
        if get("case").unwrap_or("title") == "title" {
            title = title_case(&title);
        }
        if let Some(words) = get("reject_words") {
            let lower = title.to_lowercase();
            for word in words.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                if lower.split(' ').any(|w| w == word.to_lowercase()) {
                    return Err(format!("the title contains the banned word `{word}`"));
                }
            }
        }
        product.title = title;
        product.category = product
            .category
            .map(|c| tidy(&c).to_lowercase())
            .filter(|c| !c.is_empty());
        let mut tags: Vec<String> = Vec::new();
        for tag in product.tags.iter().map(|t| tidy(t).to_lowercase()) {
            if !tag.is_empty() && !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        product.tags = tags;
        Ok(product)
    }
}

export!(TitleNormalizer);
