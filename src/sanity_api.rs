//! Sanity's query API, and only here: the query that finds the published documents referencing a changed one
//! (its dependents: a post shows its author), written as a request, and its answer read into typed data.
//! One query per level (depth 2: the documents referencing those), each excluding every id seen before, so
//! cycles of references end.

use crate::config::{DependentsRule, SanityApi};
use crate::error::SyncError;
use crate::http::{Method, Response, Wire};
use crate::json_pick::{self, Got, Want};
use crate::retry::{self, Verdict};
use crate::json_read;
use serde_json::Value;

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
    let mut params = vec![("ids", Value::from(ids)), ("seen", Value::from(seen)), ("cap", cap.into())];
    if !rule.types.is_empty() {
        params.push(("types", Value::from(rule.types.as_slice())));
    }
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(token) = &api.token {
        headers.push(("authorization".to_string(), format!("Bearer {}", token.expose())));
    }
    Some(Wire { method: Method::POST, url, headers, body: Some(json_read::text(&json_read::object(vec![("query", query.into()), ("params", json_read::object(params))])).into()) })
}

/// A document that references the changed one, as far as its routes and tags need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub id: String,
    pub doc_type: String,
    pub slug: Option<String>,
    pub locale: Option<String>,
    /// A single market fills `{market}`; a list of them does not.
    pub market: Option<String>,
    pub cache_tags: Option<Vec<String>>,
}

/// One level's answer: up to the cap of the referrers, how many there are, and their types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub documents: Vec<Referrer>,
    pub count: u32,
    pub types: Vec<String>,
}

/// The answer as `PROJECTION` and the query shape it: `{"result": {documents, count, types}}`.
const ANSWER: Want = Want::Fields(&[(
    "result",
    Want::Fields(&[("documents", Want::Each(&REFERRER)), ("count", Want::Number), ("types", Want::Each(&Want::Text))]),
)]);

const REFERRER: Want = Want::Fields(&[
    ("_id", Want::Text),
    ("_type", Want::Text),
    ("slug", Want::Text),
    ("locale", Want::Text),
    ("market", Want::Loose),
    ("cacheTags", Want::Each(&Want::Text)),
]);

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
    let unlike = |detail: String| SyncError::fatal(format!("Sanity's answer to the dependents query is not what was asked for ({detail})"));
    let mut answer = json_pick::pick(body, &ANSWER, "answer").map_err(|e| unlike(e.to_string()))?;
    let mut result = answer.take("result");
    let count = result.get("count").number().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| unlike("`result.count`: expected a count".into()))?;
    let types = texts(result.take("types")).ok_or_else(|| unlike("`result.types`: expected a list of strings".into()))?;
    let Got::Each(documents) = result.take("documents") else { return Err(unlike("`result.documents`: expected a list".into())) };
    let documents = documents.into_iter().map(referrer).collect::<Option<Vec<_>>>().ok_or_else(|| {
        SyncError::fatal("Sanity's answer to the dependents query holds a document without a usable `_id` or `_type`")
    })?;
    Ok(Level { documents, count, types })
}

/// A list of strings (`None`: absent, or an item that is not a string).
fn texts(got: Got) -> Option<Vec<String>> {
    match got {
        Got::Each(items) => items.into_iter().map(|i| i.text().map(|t| t.into_owned())).collect(),
        _ => None,
    }
}

/// A referrer with a usable id and type (`None` otherwise).
fn referrer(mut doc: Got) -> Option<Referrer> {
    let text = |got: Got| got.text().map(|t| t.into_owned());
    let id = text(doc.take("_id")).filter(|id| {
        !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })?;
    let doc_type = text(doc.take("_type")).filter(|t| !t.trim().is_empty())?;
    let cache_tags = match doc.take("cacheTags") {
        Got::Absent => None,
        tags => Some(texts(tags)?),
    };
    Some(Referrer { id, doc_type, slug: text(doc.take("slug")), locale: text(doc.take("locale")), market: text(doc.take("market")), cache_tags })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use serde_json::json;

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
        for bad in [r#"{"result":[]}"#, r#"{"error":"x"}"#, r#"{"result":{"documents":[{"_id":"a b","_type":"t"}],"count":1,"types":[]}}"#, "<html>",
            "null", r#"{"result":null}"#, r#"{"result":{"documents":[],"count":"3","types":[]}}"#, r#"{"result":{"documents":[],"count":1,"types":[null]}}"#,
            r#"{"result":{"documents":[{"_id":"a","_type":"t","cacheTags":[5]}],"count":1,"types":["t"]}}"#, r#"{"result":{"documents":[null],"count":1,"types":["t"]}}"#,
            r#"{"result":{"documents":[],"count":4294967296,"types":[]}}"#, r#"{"result":{"count":1,"types":[]}}"#] {
            assert_eq!(read_level(bad).unwrap_err().class, crate::error::ErrorClass::Fatal, "{bad}");
        }
        assert!(read_level(r#"{"result":{"count":1,"types":[]}}"#).unwrap_err().message.contains("`result.documents`: expected a list"));
    }
}
