//! Inputs → `ContentChange`: a Sanity document Function event (`{context, event: {data}}`, `data` being the
//! blueprint's projection) or a GROQ-powered webhook delivery (headers + raw body bytes, signature checked over
//! those bytes before anything is parsed).

use crate::change::{ContentChange, Op, Operation, Source};
use crate::error::{kind_of, SyncError};
use crate::json_read::Obj;
use crate::signature;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub const WEBHOOK_SIGNATURE_HEADER: &str = "sanity-webhook-signature";

/// Fields of the projection that steer the sync and are not part of the document the app receives.
const CONTROL_FIELDS: [&str; 2] = ["op", "previousSlug"];

/// Parse a Function invocation: `{context, event: {data}}`.
pub fn from_function_event(envelope: &Value) -> Result<ContentChange, SyncError> {
    let root = Obj::root(envelope, "", "the Function event")?;
    let event = root.obj("event")?.ok_or_else(|| SyncError::expected("event", "an object with `data`", "nothing"))?;
    let data = match event.get("data") {
        Some(Value::Object(map)) => map,
        Some(other) => return Err(SyncError::expected("event.data", "the projected document (an object)", kind_of(other))),
        None => return Err(SyncError::expected("event.data", "the projected document (an object)", "nothing")),
    };
    let data_obj = Obj { map: data, path: "event.data.".into() };
    let operation = match data_obj.get("op") {
        None => Operation::Unknown,
        Some(Value::String(s)) => parse_operation(&data_obj.field("op"), s)?,
        Some(other) => {
            return Err(SyncError::expected(data_obj.field("op"), "`create`, `update`, `delete` or null", kind_of(other)))
        }
    };
    build(&data_obj, operation, Source::Function, &Fallbacks::default())
}

/// What a webhook's headers supply when the body (the projection) lacks it.
#[derive(Default)]
struct Fallbacks<'a> {
    id: Option<&'a str>,
    rev: Option<&'a str>,
    updated_at: Option<&'a str>,
    idempotency_key: Option<&'a str>,
}

/// Headers with lower-case names, as a webhook delivery arrives.
pub type Headers = BTreeMap<String, String>;

pub fn headers_from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Headers {
    pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect()
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
    let header = headers.get(WEBHOOK_SIGNATURE_HEADER).ok_or_else(|| {
        SyncError::expected(WEBHOOK_SIGNATURE_HEADER, "a signature header (set a secret on the webhook)", "no header")
    })?;
    signature::verify(WEBHOOK_SIGNATURE_HEADER, header, body, secret, now_ms, max_age_ms)?;
    let text = std::str::from_utf8(body).map_err(|_| SyncError::expected("body", "UTF-8 JSON", "bytes that are not UTF-8"))?;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        SyncError::expected("body", "a JSON object (the webhook projection)", format!("invalid JSON at line {} column {}", e.line(), e.column()))
    })?;
    let obj = Obj::root(&value, "body", "body")?;
    // Headers are not covered by the signature: the signed body's `op` decides, a header may only agree with it,
    // and a delete is never taken from a header alone (a replayed update must not become a delete).
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
        (None, Some(h)) => h,
        (None, None) => Operation::Unknown,
    };
    // Blank counts as absent: a whitespace-only `idempotency-key` or `sanity-transaction-id` (U+00A0, which HTTP
    // does not trim) passed here, and every receiver then refused the payload (fuzz/event_webhook's invariant).
    let header = |k: &str| headers.get(k).map(String::as_str).filter(|v| !v.trim().is_empty());
    let fallbacks = Fallbacks {
        id: header("sanity-document-id"),
        // A Sanity document's `_rev` is the id of the transaction that last wrote it.
        rev: header("sanity-transaction-id"),
        updated_at: header("sanity-transaction-time"),
        idempotency_key: header("idempotency-key"),
    };
    if let (Some(Value::String(body_id)), Some(header_id)) = (obj.get("_id"), fallbacks.id) {
        if body_id != header_id {
            return Err(SyncError::bad_field("sanity-document-id", "names another document than the body's `_id`"));
        }
    }
    build(&obj, operation, Source::Webhook, &fallbacks)
}

fn parse_operation(field: &str, s: &str) -> Result<Operation, SyncError> {
    match s {
        "create" => Ok(Operation::Create),
        "update" => Ok(Operation::Update),
        "delete" => Ok(Operation::Delete),
        _ => Err(SyncError::expected(field, "`create`, `update` or `delete`", "another operation")),
    }
}

fn build(data: &Obj, operation: Operation, source: Source, fb: &Fallbacks) -> Result<ContentChange, SyncError> {
    let text_or = |key: &str, fallback: Option<&str>, expected: &str| -> Result<String, SyncError> {
        match (data.get(key), fallback) {
            (Some(Value::String(s)), _) if !s.trim().is_empty() => Ok(s.clone()),
            (None, Some(f)) => Ok(f.to_string()),
            _ => data.str_req(key, expected).map(String::from),
        }
    };
    let id = text_or("_id", fb.id, "the document id (a non-empty string)")?;
    if id.len() > 256 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SyncError::expected(data.field("_id"), "a Sanity document id (no spaces, at most 256 characters)", "another value"));
    }
    let doc_type = text_or("_type", None, "the document type (project `_type`)")?;
    let rev = text_or("_rev", fb.rev, "the document revision (project `_rev`)")?;
    let updated_at = text_or("_updatedAt", fb.updated_at, "an RFC 3339 time (project `_updatedAt`)")?;
    if rfc3339_ms(&updated_at).is_none() {
        return Err(SyncError::expected(data.field("_updatedAt"), "an RFC 3339 UTC time such as 2026-11-27T10:00:00Z", "another value"));
    }
    let op = if operation == Operation::Delete { Op::Delete } else { Op::Upsert };
    let idempotency_key = match fb.idempotency_key {
        Some(k) => k.to_string(),
        None => ContentChange::derive_idempotency_key(op, &id, &rev),
    };
    let mut rest: Map<String, Value> = data.map.clone();
    for key in CONTROL_FIELDS {
        rest.remove(key);
    }
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
        data: rest,
        id,
        doc_type,
        rev,
        updated_at,
        idempotency_key,
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

    pub fn page(extra: Value) -> Value {
        let mut data = json!({"_id":"page-1","_type":"page","_rev":"r1","_updatedAt":"2026-11-27T10:00:00Z",
            "title":"Hello","slug":"hello","op":"update","previousSlug":"hi","cacheTags":["page:page-1"]});
        for (k, v) in extra.as_object().unwrap() {
            data[k] = v.clone();
        }
        json!({"context": {"local": true}, "event": {"data": data}})
    }

    #[test]
    fn function_event_update_with_rename() {
        let c = from_function_event(&page(json!({}))).unwrap();
        assert_eq!((c.op, c.operation, c.source), (Op::Upsert, Operation::Update, Source::Function));
        assert_eq!((c.id.as_str(), c.doc_type.as_str(), c.rev.as_str()), ("page-1", "page", "r1"));
        assert_eq!(c.slug.as_deref(), Some("hello"));
        assert_eq!(c.previous_slug.as_deref(), Some("hi"));
        assert_eq!(c.cache_tags, ["page:page-1"]);
        assert_eq!(c.idempotency_key, "upsert:page-1:r1");
        assert!(!c.data.contains_key("op") && !c.data.contains_key("previousSlug") && c.data.contains_key("title"));
        assert_eq!(c.id_kind(), IdKind::Published);
    }

    #[test]
    fn function_event_delete_and_null_op() {
        let c = from_function_event(&page(json!({"op":"delete"}))).unwrap();
        assert_eq!((c.op, c.operation), (Op::Delete, Operation::Delete));
        assert_eq!(c.idempotency_key, "delete:page-1:r1");
        let c = from_function_event(&page(json!({"op":null, "slug": {"current":"x"}, "previousSlug": null}))).unwrap();
        assert_eq!((c.op, c.operation), (Op::Upsert, Operation::Unknown));
        assert_eq!((c.slug.as_deref(), c.previous_slug), (Some("x"), None));
    }

    #[test]
    fn draft_and_version_ids_are_recognised() {
        assert_eq!(from_function_event(&page(json!({"_id":"drafts.page-1"}))).unwrap().id_kind(), IdKind::Draft);
        assert_eq!(from_function_event(&page(json!({"_id":"versions.r1.page-1"}))).unwrap().id_kind(), IdKind::Version);
    }

    fn signed(body: &str, extra: &[(&str, &str)]) -> Headers {
        let mut h = headers_from_pairs(extra.iter().copied());
        h.insert(WEBHOOK_SIGNATURE_HEADER.into(), signature::sign(body.as_bytes(), NOW, SECRET));
        h
    }
    const NOW: u64 = 1_800_000_000_000;
    const SECRET: &str = "webhook-secret";

    #[test]
    fn webhook_delivery_uses_headers_for_what_the_body_lacks() {
        let body = r#"{"_id":"article-9","_type":"article","slug":{"current":"new"},"previousSlug":"old"}"#;
        let h = signed(
            body,
            &[
                ("Sanity-Operation", "update"),
                ("sanity-document-id", "article-9"),
                ("sanity-transaction-id", "tx42"),
                ("sanity-transaction-time", "2026-11-27T10:00:01.123Z"),
                ("idempotency-key", "idem-1"),
            ],
        );
        let c = from_webhook(&h, body.as_bytes(), SECRET, NOW + 10, 300_000).unwrap();
        assert_eq!((c.source, c.operation), (Source::Webhook, Operation::Update));
        assert_eq!((c.rev.as_str(), c.updated_at.as_str()), ("tx42", "2026-11-27T10:00:01.123Z"));
        assert_eq!(c.idempotency_key, "idem-1");
        assert_eq!((c.slug.as_deref(), c.previous_slug.as_deref()), (Some("new"), Some("old")));
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
        let e = from_webhook(&signed(body, &[("sanity-operation", "delete")]), body.as_bytes(), SECRET, NOW, 300_000).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body.op"));
        let with_op = r#"{"_id":"a","_type":"t","_rev":"r","_updatedAt":"2026-11-27T10:00:00Z","op":"update"}"#;
        let e = from_webhook(&signed(with_op, &[("sanity-operation", "delete")]), with_op.as_bytes(), SECRET, NOW, 300_000).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sanity-operation"));
        let del = r#"{"_id":"a","_type":"t","_rev":"r","_updatedAt":"2026-11-27T10:00:00Z","op":"delete"}"#;
        let c = from_webhook(&signed(del, &[("sanity-operation", "delete")]), del.as_bytes(), SECRET, NOW, 300_000).unwrap();
        assert_eq!(c.op, Op::Delete);
    }

    #[test]
    fn webhook_id_header_must_agree_with_body() {
        let body = r#"{"_id":"a","_type":"t","_rev":"r","_updatedAt":"2026-11-27T10:00:00Z"}"#;
        let h = signed(body, &[("sanity-document-id", "b")]);
        let e = from_webhook(&h, body.as_bytes(), SECRET, NOW, 300_000).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sanity-document-id"));
    }
}
