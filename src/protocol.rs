//! The versioned payload the Function sends to the receiver, and the ack it expects back
//! (`docs/protocol.md` is the reference for both).

use crate::change::{ContentChange, Op, Operation};
use crate::config::Target;
use crate::error::SyncError;
use crate::routes::RouteVars;
use serde::Serialize;
use serde_json::{Map, Value};

pub const PROTOCOL: &str = "sanity-fly-sync/1";
/// Our signature header: Sanity's scheme, under our own name so it never collides with a webhook's.
pub const SIGNATURE_HEADER: &str = "sanity-fly-sync-signature";

#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct SyncPayload<'a> {
    pub protocol: &'static str,
    pub target: &'a str,
    pub op: Op,
    pub operation: Operation,
    pub id: &'a str,
    #[serde(rename = "type")]
    pub doc_type: &'a str,
    pub rev: &'a str,
    pub updated_at: &'a str,
    pub slug: Option<&'a str>,
    pub previous_slug: Option<&'a str>,
    pub routes: Routes,
    pub tags: Vec<String>,
    pub locale: Option<&'a str>,
    pub market: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional, type = "Record<string, unknown>"))]
    pub document: Option<&'a Map<String, Value>>,
    pub idempotency_key: &'a str,
}

/// `current`: where the document is now; `previous`: where it was and no longer is (rename, delete);
/// `invalidate`: both, deduplicated.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Routes {
    pub invalidate: Vec<String>,
    pub current: Vec<String>,
    pub previous: Vec<String>,
}

pub fn routes(change: &ContentChange, target: &Target) -> Routes {
    let Some(templates) = target.routes.get(&change.doc_type) else { return Routes::default() };
    let render = |slug: Option<&str>| -> Vec<String> {
        let vars = RouteVars {
            slug,
            id: &change.id,
            doc_type: &change.doc_type,
            locale: change.locale.as_deref(),
            market: change.market.as_deref(),
        };
        let mut out: Vec<String> = Vec::new();
        for route in templates.iter().filter_map(|t| t.render(&vars)) {
            if !out.contains(&route) {
                out.push(route);
            }
        }
        out
    };
    let (current, previous) = match change.op {
        // A deleted document is nowhere now: every route it had (under its last or previous slug) is gone.
        Op::Delete => {
            let mut gone = render(change.slug.as_deref());
            for route in render(change.previous_slug.as_deref()) {
                if !gone.contains(&route) {
                    gone.push(route);
                }
            }
            (Vec::new(), gone)
        }
        Op::Upsert => {
            let current = render(change.slug.as_deref());
            let previous = match change.previous_slug.as_deref() {
                Some(prev) if Some(prev) != change.slug.as_deref() => {
                    render(Some(prev)).into_iter().filter(|r| !current.contains(r)).collect()
                }
                _ => Vec::new(),
            };
            (current, previous)
        }
    };
    let invalidate = current.iter().chain(previous.iter()).cloned().collect();
    Routes { invalidate, current, previous }
}

/// The projection's cache tags, plus the document id and type so every app can key on those.
pub fn tags(change: &ContentChange) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in change.cache_tags.iter().chain([&change.id, &change.doc_type]) {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    tags
}

pub fn payload<'a>(change: &'a ContentChange, target: &'a Target) -> SyncPayload<'a> {
    SyncPayload {
        protocol: PROTOCOL,
        target: &target.name,
        op: change.op,
        operation: change.operation,
        id: &change.id,
        doc_type: &change.doc_type,
        rev: &change.rev,
        updated_at: &change.updated_at,
        slug: change.slug.as_deref(),
        previous_slug: change.previous_slug.as_deref(),
        routes: routes(change, target),
        tags: tags(change),
        locale: change.locale.as_deref(),
        market: change.market.as_deref(),
        document: (change.op == Op::Upsert).then_some(&change.data),
        idempotency_key: &change.idempotency_key,
    }
}

/// The payload as the exact bytes that get signed and sent.
pub fn payload_body(change: &ContentChange, target: &Target) -> String {
    serde_json::to_string(&payload(change, target)).expect("payload serialises: plain data")
}

/// The receiver's answer: `{"machine": "<FLY_MACHINE_ID>", "status": "applied"|"duplicate"|"stale", "restart": "required"?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub machine: String,
    pub status: String,
    pub restart_required: bool,
}

pub fn parse_ack(body: &str) -> Result<Ack, SyncError> {
    let value: Value = serde_json::from_str(body)
        .map_err(|_| SyncError::fatal("the receiver's answer is not JSON: is the sync path served by the sanity-fly-sync receiver?"))?;
    let machine = value
        .get("machine")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| SyncError::fatal("the receiver's answer names no `machine` (it must echo FLY_MACHINE_ID)"))?;
    let status = value.get("status").and_then(Value::as_str).unwrap_or("applied");
    let restart_required = value.get("restart").and_then(Value::as_str) == Some("required");
    Ok(Ack { machine: machine.to_string(), status: status.to_string(), restart_required })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{env, SECRET};
    use crate::config::Config;
    use crate::event::from_function_event;
    use serde_json::json;

    fn target() -> Target {
        let c = Config::from_env(&env(&[
            ("FLY_APP_NAME", "web"),
            ("FLY_API_TOKEN", "fm2_x"),
            ("FLY_SYNC_SECRET", SECRET),
            ("FLY_SYNC_ROUTES", "article=/blog/{slug}|/{locale}/blog/{slug}|/feed.xml"),
        ]))
        .unwrap();
        c.targets.into_iter().next().unwrap()
    }

    fn change(data: Value) -> ContentChange {
        let mut base = json!({"_id":"article-1","_type":"article","_rev":"r2","_updatedAt":"2026-11-27T10:00:00Z","locale":"en","title":"T"});
        for (k, v) in data.as_object().unwrap() {
            base[k] = v.clone();
        }
        from_function_event(&json!({"event":{"data":base}}), 1_800_000_000_000).unwrap()
    }

    #[test]
    fn rename_invalidates_old_and_new_routes() {
        let r = routes(&change(json!({"op":"update","slug":"new","previousSlug":"old"})), &target());
        assert_eq!(r.current, ["/blog/new", "/en/blog/new", "/feed.xml"]);
        assert_eq!(r.previous, ["/blog/old", "/en/blog/old"]);
        assert_eq!(r.invalidate, ["/blog/new", "/en/blog/new", "/feed.xml", "/blog/old", "/en/blog/old"]);
    }

    #[test]
    fn unchanged_slug_has_no_previous_routes() {
        let r = routes(&change(json!({"op":"update","slug":"same","previousSlug":"same"})), &target());
        assert!(r.previous.is_empty());
    }

    #[test]
    fn delete_moves_every_route_to_previous_and_drops_the_document() {
        let c = change(json!({"op":"delete","slug":"gone"}));
        let body: Value = serde_json::from_str(&payload_body(&c, &target())).unwrap();
        assert_eq!(body["op"], "delete");
        assert_eq!(body["routes"]["current"], json!([]));
        assert_eq!(body["routes"]["previous"], json!(["/blog/gone", "/en/blog/gone", "/feed.xml"]));
        assert!(body.get("document").is_none());
        assert_eq!(body["idempotencyKey"], "delete:article-1:r2");
    }

    #[test]
    fn upsert_payload_carries_document_and_tags() {
        let c = change(json!({"op":"create","slug":"a","cacheTags":["article:article-1","article"]}));
        let body: Value = serde_json::from_str(&payload_body(&c, &target())).unwrap();
        assert_eq!(body["protocol"], PROTOCOL);
        assert_eq!(body["type"], "article");
        assert_eq!(body["updatedAt"], "2026-11-27T10:00:00Z");
        assert_eq!(body["document"]["title"], "T");
        assert!(body["document"].get("op").is_none());
        assert_eq!(body["tags"], json!(["article:article-1", "article", "article-1"]));
    }

    #[test]
    fn ack_parsing() {
        let a = parse_ack(r#"{"machine":"m1","status":"applied","restart":"required"}"#).unwrap();
        assert_eq!(a, Ack { machine: "m1".into(), status: "applied".into(), restart_required: true });
        assert!(!parse_ack(r#"{"machine":"m1"}"#).unwrap().restart_required);
        assert!(parse_ack(r#"{"ok":true}"#).unwrap_err().message.contains("FLY_MACHINE_ID"));
        assert!(parse_ack("OK").is_err());
    }
}
