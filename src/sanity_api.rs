//! Sanity's query API, and only here: the query that finds the published documents referencing a changed one
//! (its dependents: a post shows its author), written as a request, and its answer read into typed data.
//! One query per level (depth 2: the documents referencing those), each excluding every id seen before, so
//! cycles of references end.

use crate::config::{DependentsRule, SanityApi};
use crate::error::SyncError;
use crate::http::{Method, Response, Wire};
use crate::retry::{self, Verdict};
use serde::Deserialize;
use serde_json::json;

/// What a dependent is read as: the fields its routes and tags are made of (as the blueprint projects them).
const PROJECTION: &str = r#"{_id, _type, "slug": slug.current, "locale": language, market, cacheTags}"#;
const PUBLISHED: &str = r#"!(_id in path("drafts.**")) && !(_id in path("versions.**"))"#;

/// One level's query: documents referencing any of `ids`, none of `seen`, at most `cap` of them, with how many
/// there are in all and of which types.
pub fn dependents_request(api: &SanityApi, rule: &DependentsRule, ids: &[String], seen: &[String], cap: u32) -> Option<Wire> {
    let url = api.query_url()?;
    let types = if rule.types.is_empty() { "" } else { " && _type in $types" };
    let filter = format!("references($ids) && !(_id in $seen) && {PUBLISHED}{types}");
    let query = format!(
        r#"{{"documents": *[{filter}] | order(_updatedAt desc) [0...$cap] {PROJECTION}, "count": count(*[{filter}]), "types": array::unique(*[{filter}]._type)}}"#
    );
    let mut params = json!({"ids": ids, "seen": seen, "cap": cap});
    if !rule.types.is_empty() {
        params["types"] = json!(rule.types);
    }
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(token) = &api.token {
        headers.push(("authorization".to_string(), format!("Bearer {}", token.expose())));
    }
    Some(Wire { method: Method::POST, url, headers, body: Some(crate::json_read::text(&json!({"query": query, "params": params})).into()) })
}

/// A document that references the changed one, as far as its routes and tags need it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Referrer {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "_type")]
    pub doc_type: String,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    /// A single market fills `{market}`; a list of them does not.
    #[serde(default, deserialize_with = "single_string")]
    pub market: Option<String>,
    #[serde(default, rename = "cacheTags")]
    pub cache_tags: Option<Vec<String>>,
}

/// One level's answer: up to the cap of the referrers, how many there are, and their types.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Level {
    pub documents: Vec<Referrer>,
    pub count: u32,
    pub types: Vec<String>,
}

#[derive(Deserialize)]
struct Envelope {
    result: Level,
}

/// What an answer to the dependents query means: the level read, try again, or give up. A refused token is
/// named as such: without one that may read the dataset, dependents cannot be found.
pub fn read(response: &Response, what: &str, now_ms: u64) -> Verdict<Level> {
    match response {
        Response::Http { status: 401 | 403, .. } => Verdict::Fail(SyncError::fatal(format!(
            "{what}: Sanity refused the query: the Function's robot token (context.clientOptions.token), or SANITY_API_READ_TOKEN for the webhook entry, must be able to read the dataset"
        ))),
        _ => match retry::classify(response, what, now_ms) {
            Verdict::Success(body) => read_level(body).map_or_else(Verdict::Fail, Verdict::Success),
            Verdict::Retry { error, min_delay_ms, rate_limited } => Verdict::Retry { error, min_delay_ms, rate_limited },
            Verdict::Fail(e) => Verdict::Fail(e),
        },
    }
}

/// Read the query API's answer (`{"result": …}`). An answer that is not of this shape is refused (fatal: the
/// same query would get it again), naming where, never echoing it.
pub fn read_level(body: &str) -> Result<Level, SyncError> {
    let envelope: Envelope = serde_json::from_str(body).map_err(|e| {
        SyncError::fatal(format!("Sanity's answer to the dependents query is not what was asked for (line {} column {})", e.line(), e.column()))
    })?;
    let level = envelope.result;
    for doc in &level.documents {
        let id_ok = !doc.id.is_empty() && doc.id.len() <= 256 && doc.id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !id_ok || doc.doc_type.trim().is_empty() {
            return Err(SyncError::fatal("Sanity's answer to the dependents query holds a document without a usable `_id` or `_type`"));
        }
    }
    Ok(level)
}

/// `market` when it is a string; a list of markets (or anything else) is none.
fn single_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn api(token: Option<&str>) -> SanityApi {
        SanityApi {
            project_id: Some("abc123".into()),
            dataset: Some("production".into()),
            api_host: None,
            token: token.map(|t| Secret::parse("t", t, 1).unwrap()),
        }
    }

    #[test]
    fn one_level_query_excludes_what_was_seen_and_carries_the_token() {
        let rule = DependentsRule { depth: 2, cap: 10, types: vec!["post".into()] };
        let w = dependents_request(&api(Some("sk-read")), &rule, &["person-1".into()], &["person-1".into()], 10).unwrap();
        assert_eq!((w.method, w.url.as_str()), (Method::POST, "https://abc123.api.sanity.io/v2025-02-19/data/query/production?perspective=published&returnQuery=false"));
        assert!(w.headers.contains(&("authorization".to_string(), "Bearer sk-read".to_string())));
        let body: serde_json::Value = serde_json::from_str(w.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["params"], json!({"ids": ["person-1"], "seen": ["person-1"], "cap": 10, "types": ["post"]}));
        let q = body["query"].as_str().unwrap();
        assert!(q.contains("references($ids)") && q.contains("!(_id in $seen)") && q.contains("_type in $types") && q.contains("drafts.**"), "{q}");
        let anonymous = dependents_request(&api(None), &DependentsRule::default(), &["a".into()], &[], 50).unwrap();
        assert!(!anonymous.headers.iter().any(|(k, _)| k == "authorization"));
        assert!(!anonymous.body.unwrap().contains("$types"));
        let unknown = SanityApi::default();
        assert!(dependents_request(&unknown, &DependentsRule::default(), &["a".into()], &[], 50).is_none(), "no project: no query");
    }

    #[test]
    fn answers_are_read_typed_and_refused_when_not_what_was_asked() {
        let body = r#"{"ms":3,"result":{"documents":[{"_id":"post-1","_type":"post","slug":"hello","locale":null,"market":["us","jp"],"cacheTags":null}],"count":3,"types":["post"]}}"#;
        let level = read_level(body).unwrap();
        assert_eq!(level.count, 3);
        assert_eq!(level.documents[0].slug.as_deref(), Some("hello"));
        assert_eq!(level.documents[0].market, None, "a list of markets fills no {{market}}");
        for bad in [r#"{"result":[]}"#, r#"{"error":"x"}"#, r#"{"result":{"documents":[{"_id":"a b","_type":"t"}],"count":1,"types":[]}}"#, "<html>"] {
            assert_eq!(read_level(bad).unwrap_err().class, crate::error::ErrorClass::Fatal, "{bad}");
        }
    }
}
