//! `category-allowlist`: a filter that keeps only the candidates whose
//! category the tenant allows.
//!
//! Parameter `categories`: a comma-separated list, compared without regard
//! to case or surrounding spaces. Without it every candidate is kept.
//! Parameter `keep_uncategorized` (`true`/`false`, default `false`): whether
//! products without a category pass.

wit_bindgen::generate!({ path: "../../wit", world: "filter" });

struct CategoryAllowlist;

impl Guest for CategoryAllowlist {
    fn filter(query: Query, candidates: Vec<Candidate>) -> Vec<String> {
        let get = |name: &str| {
            query
                .params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let Some(list) = get("categories") else {
            return candidates.into_iter().map(|c| c.id).collect();
        };
        let allowed: Vec<String> = list
            .split(',')
            .map(|c| c.trim().to_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        let keep_uncategorized = get("keep_uncategorized").is_some_and(|v| v.trim() == "true");
        candidates
            .into_iter()
            .filter(|c| match &c.category {
                Some(cat) => allowed.contains(&cat.trim().to_lowercase()),
                None => keep_uncategorized,
            })
            .map(|c| c.id)
            .collect()
    }
}

export!(CategoryAllowlist);
