//! Inputs → `ContentChange`: a Sanity document Function event (`{data}`, `data` being the blueprint's projection,
//! as JSON text) or a GROQ-powered webhook delivery (headers + raw body bytes, signature checked over those bytes
//! before anything is parsed).
//!
//! Both are read the same way (`build`): the document's id, type, revision (`_rev`), revision time
//! (`_updatedAt`) and operation (`op`) come from the projected document, the idempotency key is derived from
//! them, and a revision time further ahead of our clock than `limits::MAX_FUTURE_SKEW_MS` is refused. For a
//! webhook that document is the signed body: Sanity does not sign the headers, so none of them decides what is
//! changed, deleted, ordered or deduplicated. `sanity-document-id` and `sanity-operation` are only
//! cross-checked against the body; `sanity-transaction-id`, `sanity-transaction-time` and `idempotency-key`
//! are not read at all (a delete's projection shows the document as it was, so its `_rev` and `_updatedAt`
//! are the last write's, not the delete transaction's: they cannot be compared).

use crate::change::{ContentChange, Op, Operation, Source};
use crate::error::{kind_of, SyncError};
use crate::json_read::Obj;
use crate::limits;
use crate::signature;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;

pub const WEBHOOK_SIGNATURE_HEADER: &str = "sanity-webhook-signature";

/// The largest Function event (its JSON text) or webhook body accepted: 4 MiB. A projected document is far
/// smaller; anything larger is refused with a clear error before it is parsed (and it would be pushed to every
/// Machine). The same bound as `examples/webhook-server.mjs`'s `MAX_BODY_BYTES`.
pub const MAX_INPUT_BYTES: usize = 4 * 1024 * 1024;

/// The largest set of webhook headers accepted (their JSON text, as the shim hands them over): 64 KiB, four
/// times what Node's HTTP server lets through by default.
pub const MAX_HEADERS_BYTES: usize = 64 * 1024;

/// Fields of the projection that steer the sync and are not part of the document the app receives.
const CONTROL_FIELDS: [&str; 2] = ["op", "previousSlug"];

/// Every field of the projection `build` reads; the rest of the document is carried as it came.
const READ_FIELDS: [&str; 11] = ["_id", "_type", "_rev", "_updatedAt", "op", "slug", "previousSlug", "cacheTags", "locale", "language", "market"];

/// The usual event is read without a tree of its document when it nests at most this deep (the full reading's
/// limit, `limits::MAX_JSON_DEPTH`, with room to spare: anything near it is read the full way, which decides).
const SHALLOW_DEPTH: usize = limits::MAX_JSON_DEPTH - 8;

/// What a GROQ-powered webhook's projection must carry (the webhook's headers are not signed).
const WEBHOOK_PROJECTION: &str = "`{..., _id, _type, _rev, _updatedAt, \"op\": delta::operation()}`";

fn check_size(field: &str, len: usize, max: usize) -> Result<(), SyncError> {
    if len > max {
        return Err(SyncError::expected(field, format!("at most {} KiB", max / 1024), format!("{} KiB", len.div_ceil(1024))));
    }
    Ok(())
}

/// Parse a Function invocation's `event` (`{data}`) from its JSON text, as the shim hands it over
/// (`JSON.stringify(event)`): bounded in size and depth before anything else is read.
pub fn function_event_from_json(event_json: &[u8], now_ms: u64) -> Result<FunctionEvent, SyncError> {
    check_size("event", event_json.len(), MAX_INPUT_BYTES)?;
    if let Some(change) = function_event_shallow(event_json, now_ms) {
        return change.map(|c| FunctionEvent::Change(Box::new(c)));
    }
    let event = limits::parse_json("event", event_json, "the Function event (a JSON object with `data`)")?;
    if let Some(marker) = event.pointer(&format!("/data/{CONTINUATION_KEY}")) {
        return match marker.as_str() {
            Some(RESUME) => Ok(FunctionEvent::Resume),
            _ => Err(SyncError::expected(format!("event.data.{CONTINUATION_KEY}"), format!("`{RESUME}`"), "another value")),
        };
    }
    // A sync-tag-invalidate event: `{syncTags}` and no document (a document's own field of that name comes with
    // its `_id`, and is a document's).
    if let (Some(tags), None) = (event.pointer("/data/syncTags"), event.pointer("/data/_id")) {
        return crate::sync_tags::read("event.data.syncTags", tags).map(FunctionEvent::SyncTags);
    }
    // Moved into the envelope, not copied (`json!` would serialise a copy of the whole document).
    let mut envelope = Map::new();
    envelope.insert("event".to_string(), event);
    from_function_event(&Value::Object(envelope), now_ms).map(|c| FunctionEvent::Change(Box::new(c)))
}

/// A document's change read the short way: the top level of `data` as keys and value texts, the fields `build`
/// reads parsed from their texts, the document's text assembled from the rest without parsing it. Every event
/// this does not take (`None`: not an object with an object `data`, the continuation, sync tags, nesting near the limit,
/// escapes of surrogates, which the full reading checks and skipping does not) is read the full way, which
/// accepts and refuses exactly as before. What is accepted here is accepted there, with the same change.
fn function_event_shallow(bytes: &[u8], now_ms: u64) -> Option<Result<ContentChange, SyncError>> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.contains("\\ud") || text.contains("\\uD") || limits::nesting_depth(text, SHALLOW_DEPTH) > SHALLOW_DEPTH {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        data: BTreeMap<Cow<'a, str>, &'a RawValue>,
    }
    let Event { data } = serde_json::from_str(text).ok()?;
    // The continuation and sync-tag events are read the full way.
    if data.contains_key(CONTINUATION_KEY) || (data.contains_key("syncTags") && !data.contains_key("_id")) {
        return None;
    }
    let mut read = Map::new();
    for key in READ_FIELDS {
        if let Some(raw) = data.get(key) {
            read.insert(key.to_string(), serde_json::from_str(raw.get()).ok()?);
        }
    }
    let obj = Obj { map: &read, path: "event.data.".into() };
    let document = || object_text(data.iter().map(|(k, v)| (k.as_ref(), *v)));
    Some(function_operation(&obj).and_then(|operation| build(&obj, operation, Source::Function, now_ms, document)))
}

/// The key of the event data a run sends to the resume Function (`{"sanityFlySync": "resume"}`), so that run
/// finishes a roll without waiting for the next edit. No document carries it: Sanity's projections name theirs.
pub const CONTINUATION_KEY: &str = "sanityFlySync";
pub const RESUME: &str = "resume";

/// What a Function invocation asks for: sync a content change, finish the restarts the Machines still owe, or
/// push the sync tags Sanity invalidated.
#[derive(Debug)]
pub enum FunctionEvent {
    Change(Box<ContentChange>),
    Resume,
    SyncTags(Vec<String>),
}

/// Parse a Function invocation, `{context, event: {data}}` (the context is not needed). `now_ms` bounds how far
/// in the future its revision time may be.
pub fn from_function_event(envelope: &Value, now_ms: u64) -> Result<ContentChange, SyncError> {
    let root = Obj::root(envelope, "", "the Function event")?;
    let event = root.obj("event")?.ok_or_else(|| SyncError::expected("event", "an object with `data`", "nothing"))?;
    let data = match event.get("data") {
        Some(Value::Object(map)) => Obj { map, path: "event.data.".into() },
        Some(other) => return Err(SyncError::expected("event.data", "the projected document (an object)", kind_of(other))),
        None => return Err(SyncError::expected("event.data", "the projected document (an object)", "nothing")),
    };
    let operation = function_operation(&data)?;
    build(&data, operation, Source::Function, now_ms, || document_of(&data))
}

/// A Function event's `op` (`delta::operation()`, null locally).
fn function_operation(data: &Obj) -> Result<Operation, SyncError> {
    match data.get("op") {
        None => Ok(Operation::Unknown),
        Some(Value::String(s)) => parse_operation(&data.field("op"), s),
        Some(other) => Err(SyncError::expected(data.field("op"), "`create`, `update`, `delete` or null", kind_of(other))),
    }
}

/// The document the app receives: the projection without our control fields, as JSON text.
fn document_of(data: &Obj) -> Box<RawValue> {
    object_text(data.map.iter().map(|(k, v)| (k.as_str(), v)))
}

/// A JSON object of `fields` (in their order, keys unique) without our control fields, as text.
fn object_text<'a, V: serde::Serialize + 'a>(fields: impl Iterator<Item = (&'a str, V)> + Clone) -> Box<RawValue> {
    struct Fields<I>(I);
    impl<'a, V: serde::Serialize, I: Iterator<Item = (&'a str, V)> + Clone> serde::Serialize for Fields<I> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.clone().filter(|(k, _)| !CONTROL_FIELDS.contains(k)))
        }
    }
    serde_json::value::to_raw_value(&Fields(fields)).unwrap_or_else(|_| unreachable!("keys and JSON values serialise"))
}

/// Headers with lower-case names, as a webhook delivery arrives.
pub type Headers = BTreeMap<String, String>;

pub fn headers_from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Headers {
    pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect()
}

/// A delivery's headers from their JSON text (`{"name": "value", …}`, as the shim hands them over), names
/// lower-cased.
pub fn headers_from_json(json: &[u8]) -> Result<Headers, SyncError> {
    check_size("headers", json.len(), MAX_HEADERS_BYTES)?;
    let value = limits::parse_json("headers", json, "the delivery's headers (a JSON object of strings)")?;
    let obj = Obj::root(&value, "headers", "headers")?;
    let mut headers = Headers::new();
    for (name, value) in obj.map {
        match value {
            Value::String(v) => headers.insert(name.to_ascii_lowercase(), v.clone()),
            other => return Err(SyncError::expected(obj.field(name), "a string", kind_of(other))),
        };
    }
    Ok(headers)
}

/// Parse a GROQ-powered webhook delivery. The signature is verified over the raw bytes first: nothing of an
/// unauthenticated body is read.
pub fn from_webhook(
    headers: &Headers,
    body: &[u8],
    secret: &str,
    now_ms: u64,
    max_age_ms: u64,
) -> Result<ContentChange, SyncError> {
    check_size("body", body.len(), MAX_INPUT_BYTES)?;
    let header = headers.get(WEBHOOK_SIGNATURE_HEADER).ok_or_else(|| {
        SyncError::expected(WEBHOOK_SIGNATURE_HEADER, "a signature header (set a secret on the webhook)", "no header")
    })?;
    signature::verify(WEBHOOK_SIGNATURE_HEADER, header, body, secret, now_ms, max_age_ms)?;
    let value = limits::parse_json("body", body, "a JSON object (the webhook projection)")?;
    let obj = Obj::root(&value, "body", "body")?;
    // Only the signed body's `op` decides. A header may agree with it; a header `delete` without a signed `op`
    // is refused (a replayed update must not become a delete); otherwise a header is not used.
    let header_op = headers.get("sanity-operation").map(|op| parse_operation("sanity-operation", op)).transpose()?;
    let body_op = obj.str_opt("op")?.map(|op| parse_operation(&obj.field("op"), op)).transpose()?;
    let operation = match (body_op, header_op) {
        (Some(b), Some(h)) if b != h => {
            return Err(SyncError::bad_field("sanity-operation", "disagrees with the signed body's `op`"));
        }
        (Some(b), _) => b,
        (None, Some(Operation::Delete)) => {
            return Err(SyncError::expected(
                obj.field("op"),
                "the operation in the signed body for a delete (project `\"op\": delta::operation()`)",
                "only the unsigned `sanity-operation` header",
            ));
        }
        (None, _) => Operation::Unknown,
    };
    let change = build(&obj, operation, Source::Webhook, now_ms, || document_of(&obj))?;
    // Blank counts as absent (U+00A0, which HTTP does not trim, is blank too).
    if let Some(header_id) = headers.get("sanity-document-id").filter(|v| !v.trim().is_empty()) {
        if *header_id != change.id {
            return Err(SyncError::bad_field("sanity-document-id", "names another document than the body's `_id`"));
        }
    }
    Ok(change)
}

fn parse_operation(field: &str, s: &str) -> Result<Operation, SyncError> {
    match s {
        "create" => Ok(Operation::Create),
        "update" => Ok(Operation::Update),
        "delete" => Ok(Operation::Delete),
        _ => Err(SyncError::expected(field, "`create`, `update` or `delete`", "another operation")),
    }
}

/// The change `data` describes; `document` makes the document's text once everything read is valid.
fn build(data: &Obj, operation: Operation, source: Source, now_ms: u64, document: impl FnOnce() -> Box<RawValue>) -> Result<ContentChange, SyncError> {
    // What to add where a field is missing: to the Function's blueprint projection, or to the webhook's.
    let text = |key: &str, what: &str| -> Result<String, SyncError> {
        if let Some(Value::String(s)) = data.get(key).filter(|v| v.as_str().is_some_and(|s| !s.trim().is_empty())) {
            return Ok(s.clone());
        }
        let hint = match (source, key) {
            (Source::Function, "_id") => "a non-empty string".to_string(),
            (Source::Function, _) => format!("project `{key}`"),
            (Source::Webhook, _) => format!("project `{key}`: the webhook's projection must include {WEBHOOK_PROJECTION}"),
        };
        data.str_req(key, &format!("{what} ({hint})")).map(String::from)
    };
    let id = text("_id", "the document id")?;
    // Sanity's ids are letters, digits, `.`, `_` and `-` (`drafts.` and `versions.<release>.` prefixes included);
    // the id also goes into each push's idempotency-key header, which takes nothing else.
    if id.len() > 256 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(SyncError::expected(data.field("_id"), "a Sanity document id (letters, digits, `.`, `_`, `-`; at most 256 characters)", "another value"));
    }
    let doc_type = text("_type", "the document type")?;
    let rev = text("_rev", "the document revision")?;
    let updated_at = text("_updatedAt", "an RFC 3339 time")?;
    limits::revision_ms(&data.field("_updatedAt"), &updated_at, now_ms)?;
    let op = if operation == Operation::Delete { Op::Delete } else { Op::Upsert };
    Ok(ContentChange {
        op,
        operation,
        source,
        slug: slug(data, "slug")?,
        previous_slug: slug(data, "previousSlug")?,
        cache_tags: data.str_list_opt("cacheTags")?.unwrap_or_default(),
        locale: match data.str_opt("locale")? {
            Some(l) => Some(l.to_string()),
            None => data.str_opt("language")?.map(String::from),
        },
        // A list of markets is fine for region targeting; only a single one can fill a `{market}` route.
        market: match data.get("market") {
            None | Some(Value::Array(_)) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(SyncError::expected(data.field("market"), "a string or a list of strings", kind_of(other))),
        },
        data: document(),
        idempotency_key: ContentChange::derive_idempotency_key(op, &id, &rev),
        id,
        doc_type,
        rev,
        updated_at,
    })
}

/// A slug as projected (`slug.current` → string) or raw (`{current}`); empty means none.
fn slug(data: &Obj, key: &str) -> Result<Option<String>, SyncError> {
    let value = match data.get(key) {
        None => return Ok(None),
        Some(Value::Object(map)) => match map.get("current") {
            None | Some(Value::Null) => return Ok(None),
            Some(v) => v,
        },
        Some(v) => v,
    };
    match value {
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        other => Err(SyncError::expected(data.field(key), "a slug string or {\"current\": string}", kind_of(other))),
    }
}

pub use crate::limits::rfc3339_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::IdKind;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000_000;
    const SECRET: &str = "webhook-secret";

    /// A Function event (`{data}`) as the shim hands it over: JSON text.
    pub fn page(extra: Value) -> Vec<u8> {
        let mut data = json!({"_id":"page-1","_type":"page","_rev":"r1","_updatedAt":"2026-11-27T10:00:00Z",
            "title":"Hello","slug":"hello","op":"update","previousSlug":"hi","cacheTags":["page:page-1"]});
        for (k, v) in extra.as_object().unwrap() {
            data[k] = v.clone();
        }
        json!({"data": data}).to_string().into_bytes()
    }

    fn function(extra: Value) -> Result<ContentChange, SyncError> {
        match function_event_from_json(&page(extra), NOW)? {
            FunctionEvent::Change(c) => Ok(*c),
            other => panic!("not a change: {other:?}"),
        }
    }

    #[test]
    fn the_continuation_is_recognised_and_nothing_else_passes_for_it() {
        let resume = br#"{"data":{"sanityFlySync":"resume"}}"#;
        assert!(matches!(function_event_from_json(resume, NOW), Ok(FunctionEvent::Resume)));
        let e = function_event_from_json(br#"{"data":{"sanityFlySync":"restart-everything"}}"#, NOW).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("event.data.sanityFlySync"));
        assert!(function(json!({})).is_ok(), "a document is still a document");
    }

    #[test]
    fn function_event_update_with_rename() {
        let c = function(json!({})).unwrap();
        assert_eq!((c.op, c.operation, c.source), (Op::Upsert, Operation::Update, Source::Function));
        assert_eq!((c.id.as_str(), c.doc_type.as_str(), c.rev.as_str()), ("page-1", "page", "r1"));
        assert_eq!(c.slug.as_deref(), Some("hello"));
        assert_eq!(c.previous_slug.as_deref(), Some("hi"));
        assert_eq!(c.cache_tags, ["page:page-1"]);
        assert_eq!(c.idempotency_key, "upsert:page-1:r1");
        let doc: Map<String, Value> = serde_json::from_str(c.data.get()).unwrap();
        assert!(!doc.contains_key("op") && !doc.contains_key("previousSlug") && doc.contains_key("title"));
        assert_eq!(c.id_kind(), IdKind::Published);
    }

    #[test]
    fn the_short_reading_agrees_with_the_full_one() {
        let full = |text: &[u8]| {
            let event: Value = serde_json::from_slice(text).unwrap();
            from_function_event(&json!({"event": event}), NOW)
        };
        let same = |a: &ContentChange, b: &ContentChange| {
            let doc = |c: &ContentChange| serde_json::from_str::<Value>(c.data.get()).unwrap();
            let fields = |c: &ContentChange| (c.op, c.operation, c.id.clone(), c.doc_type.clone(), c.rev.clone(), c.updated_at.clone());
            let more = |c: &ContentChange| (c.slug.clone(), c.previous_slug.clone(), c.cache_tags.clone(), c.locale.clone(), c.market.clone(), c.idempotency_key.clone());
            fields(a) == fields(b) && more(a) == more(b) && doc(a) == doc(b)
        };
        let cases = [
            json!({}),
            json!({"op": "delete", "market": "jp", "language": "de"}),
            json!({"op": null, "slug": {"current": "x"}, "previousSlug": null, "locale": "en"}),
            json!({"nested": {"b": 1, "a": [1, 2.5e300, {"z": null}]}, "big": 9_223_372_036_854_775_809u64, "k\"ey": "v\u{1F600}"}),
            json!({"_id": ""}),
            json!({"op": 7}),
            json!({"cacheTags": [1]}),
            json!({"slug": 3}),
            json!({"_updatedAt": "2099-01-01T00:00:00Z"}),
        ];
        for extra in cases {
            let text = page(extra.clone());
            assert!(function_event_shallow(&text, NOW).is_some(), "{extra}: read the short way");
            match (function(extra.clone()), full(&text)) {
                (Ok(a), Ok(b)) => assert!(same(&a, &b), "{extra}: {a:?} vs {b:?}"),
                (Err(a), Err(b)) => assert_eq!(a, b, "{extra}"),
                (a, b) => panic!("{extra}: {a:?} vs {b:?}"),
            }
        }
        // Read the full way: surrogate escapes (a lone one is refused there), deep nesting, the continuation.
        for text in [r#"{"data":{"_id":"a","_type":"t","_rev":"r","_updatedAt":"2026-11-27T10:00:00Z","x":"\ud800"}}"#, r#"{"data":{"sanityFlySync":"resume"}}"#, "[]"] {
            assert!(function_event_shallow(text.as_bytes(), NOW).is_none(), "{text}");
        }
        let lone = function_event_from_json(br#"{"data":{"_id":"a","_type":"t","_rev":"r","_updatedAt":"2026-11-27T10:00:00Z","x":"\ud800"}}"#, NOW);
        assert_eq!(lone.unwrap_err().field.as_deref(), Some("event"), "a lone surrogate is still refused");
    }

    #[test]
    fn function_event_delete_and_null_op() {
        let c = function(json!({"op":"delete"})).unwrap();
        assert_eq!((c.op, c.operation), (Op::Delete, Operation::Delete));
        assert_eq!(c.idempotency_key, "delete:page-1:r1");
        let c = function(json!({"op":null, "slug": {"current":"x"}, "previousSlug": null})).unwrap();
        assert_eq!((c.op, c.operation), (Op::Upsert, Operation::Unknown));
        assert_eq!((c.slug.as_deref(), c.previous_slug), (Some("x"), None));
    }

    #[test]
    fn draft_and_version_ids_are_recognised() {
        assert_eq!(function(json!({"_id":"drafts.page-1"})).unwrap().id_kind(), IdKind::Draft);
        assert_eq!(function(json!({"_id":"versions.r1.page-1"})).unwrap().id_kind(), IdKind::Version);
    }

    #[test]
    fn function_event_crosses_as_text_bounded_in_depth_size_and_future_skew() {
        // 10,000 levels deep trapped the wasm module when the event crossed as a JS object tree.
        let deep = format!(r#"{{"data":{{"_id":"a","_type":"t","_rev":"r","_updatedAt":"2026-11-27T10:00:00Z","x":{}{}}}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        let e = function_event_from_json(deep.as_bytes(), NOW).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("event"));
        assert!(e.message.contains("nested at most 128 levels deep"), "{}", e.message);
        let big = format!(r#"{{"data":{{"pad":"{}"}}}}"#, "x".repeat(MAX_INPUT_BYTES));
        let e = function_event_from_json(big.as_bytes(), NOW).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("event"));
        assert!(e.message.contains("expected at most 4096 KiB"), "{}", e.message);
        // A revision time in 2099 would rank above every later real edit: refused.
        let e = function(json!({"_updatedAt": "2099-01-01T00:00:00Z"})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("event.data._updatedAt"));
        assert!(e.message.contains("at most 120 s ahead"), "{}", e.message);
        let within = crate::limits::MAX_FUTURE_SKEW_MS;
        let soon = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(NOW + within)).to_string();
        assert!(function(json!({"_updatedAt": soon})).is_ok(), "clock skew within the bound is fine");
        // Integers up to 64 bits are carried exactly (JavaScript numbers cannot hold 2^63 + 1).
        let c = function(json!({"views": 9_223_372_036_854_775_809u64, "neg": -9_223_372_036_854_775_807i64})).unwrap();
        assert_eq!(serde_json::to_string(&c.field("views").unwrap()).unwrap(), "9223372036854775809");
        assert_eq!(serde_json::to_string(&c.field("neg").unwrap()).unwrap(), "-9223372036854775807");
    }

    fn signed(body: &str, extra: &[(&str, &str)]) -> Headers {
        let mut h = headers_from_pairs(extra.iter().copied());
        h.insert(WEBHOOK_SIGNATURE_HEADER.into(), signature::sign(body.as_bytes(), NOW, SECRET));
        h
    }

    fn webhook(body: &str, extra: &[(&str, &str)]) -> Result<ContentChange, SyncError> {
        from_webhook(&signed(body, extra), body.as_bytes(), SECRET, NOW + 10, 300_000)
    }

    #[test]
    fn webhook_delivery_is_read_from_the_signed_body() {
        let body = r#"{"_id":"article-9","_type":"article","_rev":"tx41","_updatedAt":"2026-11-27T10:00:00Z","op":"update",
            "slug":{"current":"new"},"previousSlug":"old"}"#;
        let c = webhook(body, &[("Sanity-Operation", "update"), ("sanity-document-id", "article-9")]).unwrap();
        assert_eq!((c.source, c.operation), (Source::Webhook, Operation::Update));
        assert_eq!((c.rev.as_str(), c.updated_at.as_str()), ("tx41", "2026-11-27T10:00:00Z"));
        assert_eq!(c.idempotency_key, "upsert:article-9:tx41");
        assert_eq!((c.slug.as_deref(), c.previous_slug.as_deref()), (Some("new"), Some("old")));
    }

    #[test]
    fn unsigned_headers_decide_nothing() {
        // A captured delivery replayed with new headers: another id, a revision in 2099, another key. Before, a
        // body without `_id`/`_rev`/`_updatedAt` took them from these headers.
        let hostile = [
            ("sanity-document-id", "victim"),
            ("sanity-transaction-id", "tx-forged"),
            ("sanity-transaction-time", "2099-01-01T00:00:00Z"),
            ("idempotency-key", "forged-key"),
            ("sanity-operation", "update"),
        ];
        let bare = r#"{"_type":"article","title":"x"}"#;
        let e = webhook(bare, &hostile).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body._id"));
        assert!(e.message.contains("_id, _type, _rev, _updatedAt"), "names the projection to add: {}", e.message);
        for missing in ["_rev", "_updatedAt"] {
            let mut doc = json!({"_id":"victim","_type":"article","_rev":"r1","_updatedAt":"2026-11-27T10:00:00Z"});
            doc.as_object_mut().unwrap().remove(missing);
            let body = doc.to_string();
            let e = webhook(&body, &hostile).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(format!("body.{missing}").as_str()), "{}", e.message);
            assert!(e.message.contains(&format!("project `{missing}`")), "{}", e.message);
        }
        // With a full body, only the body counts: the transaction headers and the key are not read.
        let body = r#"{"_id":"victim","_type":"article","_rev":"r1","_updatedAt":"2026-11-27T10:00:00Z"}"#;
        let c = webhook(body, &hostile).unwrap();
        assert_eq!((c.rev.as_str(), c.updated_at.as_str()), ("r1", "2026-11-27T10:00:00Z"));
        assert_eq!(c.idempotency_key, "upsert:victim:r1", "derived from the signed body, not the header");
        assert_eq!(c.operation, Operation::Unknown, "an unsigned operation is not taken");
        // A revision time far in the future is refused even when signed.
        let future = r#"{"_id":"a","_type":"t","_rev":"r","_updatedAt":"2099-01-01T00:00:00Z"}"#;
        assert_eq!(webhook(future, &[]).unwrap_err().field.as_deref(), Some("body._updatedAt"));
    }

    #[test]
    fn ids_are_sanitys_characters_only() {
        for id in ["page-1", "drafts.page-1", "versions.rABC.page_2"] {
            assert!(function(json!({"_id": id})).is_ok(), "{id}");
        }
        for id in ["文章-1", "a b", "a/b", "a\u{0}", "é"] {
            let e = function(json!({"_id": id})).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("event.data._id"), "{id:?}");
            assert!(!e.message.contains(id), "never echoed");
        }
    }

    #[test]
    fn numbers_in_a_webhook_document_are_carried_digit_for_digit() {
        let body = r#"{"_id":"a","_type":"t","_rev":"r","_updatedAt":"2026-11-27T10:00:00Z","op":"update","big":1180591620717411303424,"exact":0.1000000000000000055511151231257827,"neg":-9223372036854775809}"#;
        let c = webhook(body, &[]).unwrap();
        let config = crate::config::Config::from_env(&crate::config::tests::env(&[
            ("FLY_APP_NAME", "web"),
            ("FLY_API_TOKEN", "fm2_x"),
            ("FLY_SYNC_SECRET", crate::config::tests::SECRET),
        ]))
        .unwrap();
        let pushed = crate::protocol::payload_body(&c, &config.targets[0], None);
        for digits in ["1180591620717411303424", "0.1000000000000000055511151231257827", "-9223372036854775809"] {
            assert!(pushed.contains(digits), "{digits} in {pushed}");
        }
    }

    #[test]
    fn webhook_body_is_not_read_before_the_signature_passes() {
        let body = "not json";
        let mut h = signed(body, &[]);
        // Correct signature: the JSON error shows the body was read only after verification.
        let e = from_webhook(&h, body.as_bytes(), SECRET, NOW, 300_000).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        h.insert(WEBHOOK_SIGNATURE_HEADER.into(), signature::sign(body.as_bytes(), NOW, "other"));
        let e = from_webhook(&h, body.as_bytes(), SECRET, NOW, 300_000).unwrap_err();
        assert_eq!(e.field.as_deref(), Some(WEBHOOK_SIGNATURE_HEADER));
    }

    #[test]
    fn an_unsigned_header_cannot_turn_a_signed_update_into_a_delete() {
        let body = r#"{"_id":"a","_type":"t","_rev":"r","_updatedAt":"2026-11-27T10:00:00Z"}"#;
        let e = webhook(body, &[("sanity-operation", "delete")]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body.op"));
        let with_op = r#"{"_id":"a","_type":"t","_rev":"r","_updatedAt":"2026-11-27T10:00:00Z","op":"update"}"#;
        let e = webhook(with_op, &[("sanity-operation", "delete")]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sanity-operation"));
        let del = r#"{"_id":"a","_type":"t","_rev":"r","_updatedAt":"2026-11-27T10:00:00Z","op":"delete"}"#;
        let c = webhook(del, &[("sanity-operation", "delete")]).unwrap();
        assert_eq!((c.op, c.idempotency_key.as_str()), (Op::Delete, "delete:a:r"));
    }

    #[test]
    fn webhook_id_header_must_agree_with_body() {
        let body = r#"{"_id":"a","_type":"t","_rev":"r","_updatedAt":"2026-11-27T10:00:00Z"}"#;
        let e = webhook(body, &[("sanity-document-id", "b")]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sanity-document-id"));
        assert!(webhook(body, &[("sanity-document-id", "\u{a0}")]).is_ok(), "a blank header is absent");
    }

    #[test]
    fn headers_cross_as_json_text() {
        let h = headers_from_json(br#"{"Sanity-Operation":"update","x":"1"}"#).unwrap();
        assert_eq!(h.get("sanity-operation").map(String::as_str), Some("update"));
        assert_eq!(headers_from_json(br#"{"a":1}"#).unwrap_err().field.as_deref(), Some("headers.a"));
        assert_eq!(headers_from_json(b"[]").unwrap_err().field.as_deref(), Some("headers"));
        let huge = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_HEADERS_BYTES));
        assert!(headers_from_json(huge.as_bytes()).unwrap_err().message.contains("at most 64 KiB"));
    }
}
