//! The versioned payload the Function sends to the receiver, and the ack it expects back
//! (`docs/protocol.md` is the reference for both).
//!
//! `SyncPayload` is the one payload type: the Function serialises it (`payload_body`), catch-up builds the
//! payloads of documents it pulled from Sanity with it, and the receiver parses pushes into it (`parse_payload`).
//! The document travels as its exact JSON text (`RawValue`), so numbers beyond 2^53 and keys like `__proto__`
//! reach the app as they were written.

use crate::change::{ContentChange, Op, Operation};
use crate::config::Target;
use crate::error::SyncError;
use crate::json_pick::{self, Want};
use crate::limits;
use crate::routes::RouteVars;
use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;

pub const PROTOCOL: &str = "sanity-fly-sync/1";
/// Our signature header: Sanity's scheme, under our own name so it never collides with a webhook's.
pub const SIGNATURE_HEADER: &str = "sanity-fly-sync-signature";

/// The sync payload (docs/protocol.md, "Body"). Fields a newer sender adds are ignored when parsing; the
/// optional ones default as a version-1 receiver always read them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct SyncPayload {
    pub protocol: String,
    #[serde(default)]
    pub target: String,
    pub op: Op,
    #[serde(default = "unknown_operation")]
    pub operation: Operation,
    pub id: String,
    #[serde(rename = "type")]
    pub doc_type: String,
    pub rev: String,
    pub updated_at: String,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub previous_slug: Option<String>,
    #[serde(default)]
    pub routes: Routes,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub market: Option<String>,
    /// The (projected) document, carried as the exact JSON text it arrived as (the reference receiver hands it
    /// to the app with integers beyond 2^53 as BigInt). Absent on a delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional, type = "Record<string, unknown>"))]
    pub document: Option<Box<RawValue>>,
    /// The published documents that reference this one (they show it: a post shows its author), with their
    /// routes and tags. Those routes and tags are in `routes.invalidate` and `tags` too, so a receiver that
    /// invalidates those refreshes the dependents with the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub dependents: Option<Dependents>,
    pub idempotency_key: String,
}

/// The documents that reference a changed one, as far as the run looked them up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Dependents {
    #[serde(default)]
    pub documents: Vec<Dependent>,
    /// More of them than the cap: how many were left out, and their types (whose type tags are invalidated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub more: Option<More>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Dependent {
    pub id: String,
    #[serde(rename = "type")]
    pub doc_type: String,
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct More {
    pub count: u32,
    pub types: Vec<String>,
}

fn unknown_operation() -> Operation {
    Operation::Unknown
}

/// `current`: where the document is now; `previous`: where it was and no longer is (rename, delete);
/// `invalidate`: both, deduplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Routes {
    #[serde(default)]
    pub invalidate: Vec<String>,
    #[serde(default)]
    pub current: Vec<String>,
    #[serde(default)]
    pub previous: Vec<String>,
}

impl Routes {
    /// Every route with the field that holds it (`routes.current[0]`), for checks and errors.
    pub fn named(&self) -> impl Iterator<Item = (String, &str)> {
        [("invalidate", &self.invalidate), ("current", &self.current), ("previous", &self.previous)]
            .into_iter()
            .flat_map(|(list, items)| items.iter().enumerate().map(move |(i, r)| (format!("routes.{list}[{i}]"), r.as_str())))
    }
}

// The wire names of the change enums (src/change.rs): an unknown `op` is refused, an unknown `operation` (a
// newer Sanity name) reads as `unknown`, since nothing is decided by it.
impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "upsert" => Ok(Op::Upsert),
            "delete" => Ok(Op::Delete),
            _ => Err(de::Error::invalid_value(de::Unexpected::Other("another operation"), &"`upsert` or `delete`")),
        }
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "create" => Operation::Create,
            "update" => Operation::Update,
            "delete" => Operation::Delete,
            _ => Operation::Unknown,
        })
    }
}

/// The routes of a document of `doc_type` with these values, each once, by the target's templates.
pub fn render_routes(target: &Target, vars: &RouteVars) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for route in target.routes.get(vars.doc_type).into_iter().flatten().filter_map(|t| t.render(vars)) {
        if !out.contains(&route) {
            out.push(route);
        }
    }
    out
}

pub fn routes(change: &ContentChange, target: &Target) -> Routes {
    let render = |slug: Option<&str>| -> Vec<String> {
        let vars = RouteVars {
            slug,
            id: &change.id,
            doc_type: &change.doc_type,
            locale: change.locale.as_deref(),
            market: change.market.as_deref(),
        };
        render_routes(target, &vars)
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
    document_tags(&change.cache_tags, &change.id, &change.doc_type)
}

/// A document's tags: its cache tags, then its id and type, each once.
pub fn document_tags(cache_tags: &[String], id: &str, doc_type: &str) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in cache_tags.iter().map(String::as_str).chain([id, doc_type]) {
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_string());
        }
    }
    tags
}

/// Add `more` to `list`, each item once.
fn merge(list: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    for item in more {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// The payload of `change` for `target`, with the dependents the run found: their routes and tags are also
/// added to what the receiver invalidates (and the types of those left out over the cap, as tags).
pub fn payload(change: &ContentChange, target: &Target, dependents: Option<&Dependents>) -> SyncPayload {
    let mut routes = routes(change, target);
    let mut tags = tags(change);
    for d in dependents.iter().flat_map(|d| &d.documents) {
        merge(&mut routes.invalidate, d.routes.iter().cloned());
        merge(&mut tags, d.tags.iter().cloned());
    }
    merge(&mut tags, dependents.and_then(|d| d.more.as_ref()).into_iter().flat_map(|m| m.types.iter().cloned()));
    SyncPayload {
        protocol: PROTOCOL.to_string(),
        target: target.name.clone(),
        op: change.op,
        operation: change.operation,
        id: change.id.clone(),
        doc_type: change.doc_type.clone(),
        rev: change.rev.clone(),
        updated_at: change.updated_at.clone(),
        slug: change.slug.clone(),
        previous_slug: change.previous_slug.clone(),
        routes,
        tags,
        locale: change.locale.clone(),
        market: change.market.clone(),
        document: (change.op == Op::Upsert).then(|| change.data.clone()),
        dependents: dependents.cloned(),
        idempotency_key: change.idempotency_key.clone(),
    }
}

/// The payload as the exact bytes that get signed and sent.
pub fn payload_body(change: &ContentChange, target: &Target, dependents: Option<&Dependents>) -> String {
    serde_json::to_string(&payload(change, target, dependents)).unwrap_or_else(|_| unreachable!("payload serialises: plain data"))
}

/// A sync-tag push (docs/protocol.md, "Sync tags"): the tags Sanity invalidated, for the app's caches. No
/// document, no ordering: invalidating a tag twice is harmless, and the key drops a repeat of the same run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct TagsPayload {
    pub protocol: String,
    #[serde(default)]
    pub target: String,
    /// Always `tags`.
    pub op: String,
    pub sync_tags: Vec<String>,
    pub idempotency_key: String,
}

/// The `op` of a sync-tag push.
pub const TAGS_OP: &str = "tags";

/// A sync-tag push as the exact bytes that get signed and sent.
pub fn tags_body(target: &Target, tags: &crate::sync_tags::SyncTags) -> String {
    let payload = TagsPayload {
        protocol: PROTOCOL.to_string(),
        target: target.name.clone(),
        op: TAGS_OP.to_string(),
        sync_tags: tags.tags.clone(),
        idempotency_key: tags.idempotency_key.clone(),
    };
    serde_json::to_string(&payload).unwrap_or_else(|_| unreachable!("payload serialises: plain data"))
}

/// What a push carries: a document's change, or sync tags.
#[derive(Debug, Clone)]
pub enum Push {
    Change(Box<SyncPayload>),
    Tags(TagsPayload),
}

/// Parse a pushed body: a change (`parse_payload`) or, when its `op` is `tags`, sync tags (each checked as the
/// Function checks them).
pub fn parse_push(body: &[u8]) -> Result<Push, SyncError> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        op: Option<Value>,
    }
    let text = checked_text(body, "a sync payload (JSON object)")?;
    let is_tags = serde_json::from_str::<Peek>(text).is_ok_and(|p| p.op.as_ref().and_then(Value::as_str) == Some(TAGS_OP));
    if !is_tags {
        return parse_change(text).map(|p| Push::Change(Box::new(p)));
    }
    check_version(text)?;
    let payload: TagsPayload = read_typed("", "body", text, &tags_expects)?;
    if payload.sync_tags.len() > crate::sync_tags::MAX_TAGS {
        return Err(SyncError::expected("syncTags", format!("at most {} sync tags", crate::sync_tags::MAX_TAGS), "more"));
    }
    for (i, tag) in payload.sync_tags.iter().enumerate() {
        crate::sync_tags::check_tag(&format!("syncTags[{i}]"), tag)?;
    }
    if payload.idempotency_key.trim().is_empty() {
        return Err(SyncError::expected("idempotencyKey", "the idempotency key", "an empty string"));
    }
    Ok(Push::Tags(payload))
}

fn tags_expects(field: &str) -> Option<&'static str> {
    Some(match field {
        "" => "a sync-tag payload (JSON object)",
        "protocol" => "`sanity-fly-sync/1`",
        "op" => "`tags`",
        "target" => "a string",
        "syncTags" => "a list of sync tags",
        "syncTags[]" => "a sync tag (a string)",
        "idempotencyKey" => "the idempotency key",
        _ => return None,
    })
}

/// What each payload field holds, for errors (`routes.current[]` stands for every item of the list).
fn payload_expects(field: &str) -> Option<&'static str> {
    Some(match field {
        "" => "a sync payload (JSON object)",
        "protocol" => "`sanity-fly-sync/1`",
        "op" => "`upsert` or `delete`",
        "id" => "the document id",
        "type" => "the document type",
        "rev" => "the document revision",
        "updatedAt" => "an RFC 3339 UTC time",
        "idempotencyKey" => "the idempotency key",
        "document" => "the document (an object) on an upsert",
        "target" | "operation" | "slug" | "previousSlug" | "locale" | "market" => "a string or null",
        "routes" => "an object with the lists `invalidate`, `current` and `previous`",
        "routes.invalidate" | "routes.current" | "routes.previous" => "a list of paths",
        "routes.invalidate[]" | "routes.current[]" | "routes.previous[]" => "a path (a string)",
        "tags" => "a list of strings",
        "tags[]" => "a string",
        _ => return None,
    })
}

/// Parse a pushed body into a payload: UTF-8 JSON nested at most `limits::MAX_JSON_DEPTH` deep, this protocol
/// version, every field of its type, the required strings non-empty, the document an object on an upsert.
/// Errors name the field and never echo a value. Revision times and routes are the receiver's to check.
pub fn parse_payload(body: &[u8]) -> Result<SyncPayload, SyncError> {
    parse_change(checked_text(body, "a sync payload (JSON object)")?)
}

/// The body as UTF-8 JSON text of one object, nested at most `limits::MAX_JSON_DEPTH` deep.
fn checked_text<'a>(body: &'a [u8], whole: &str) -> Result<&'a str, SyncError> {
    let text = std::str::from_utf8(body).map_err(|_| SyncError::expected("body", "UTF-8 JSON", "bytes that are not UTF-8"))?;
    check_depth("body", text, whole)?;
    check_object("body", text, whole)?;
    Ok(text)
}

fn parse_change(text: &str) -> Result<SyncPayload, SyncError> {
    check_version(text)?;
    let payload: SyncPayload = read_typed("", "body", text, &payload_expects)?;
    payload.check_shape()?;
    Ok(payload)
}

/// The version first: a payload of another version may differ in any other field.
fn check_version(text: &str) -> Result<(), SyncError> {
    #[derive(Deserialize)]
    struct Version {
        #[serde(default)]
        protocol: Option<Value>,
    }
    let version: Version = read_flat("body", text, &payload_expects)?;
    match version.protocol {
        Some(Value::String(p)) if p == PROTOCOL => {}
        // A Function of another version (docs/protocol.md, "Versions"): refused whole, never half-understood.
        Some(Value::String(_)) => {
            return Err(SyncError::expected(
                "protocol",
                format!("`{PROTOCOL}`, the version this receiver speaks"),
                "another protocol version (the Function and its receivers must speak one: update sanity-fly-sync on the older side)",
            ))
        }
        Some(other) => return Err(SyncError::expected("protocol", format!("`{PROTOCOL}`"), crate::error::kind_of(&other))),
        None => return Err(SyncError::expected("protocol", format!("`{PROTOCOL}`"), "nothing")),
    }
    Ok(())
}

impl SyncPayload {
    /// Every route the payload carries with the field that holds it: its own (`routes.current[0]`) and its
    /// dependents' (`dependents.documents[2].routes[0]`), which the app's hooks get too. One list for the check.
    pub fn named_routes(&self) -> impl Iterator<Item = (String, &str)> {
        let dependents = self.dependents.iter().flat_map(|d| d.documents.iter().enumerate()).flat_map(|(i, d)| {
            d.routes.iter().enumerate().map(move |(j, r)| (format!("dependents.documents[{i}].routes[{j}]"), r.as_str()))
        });
        self.routes.named().chain(dependents)
    }

    /// The required strings are not blank and an upsert carries its document as an object.
    pub fn check_shape(&self) -> Result<(), SyncError> {
        for (field, value) in [("id", &self.id), ("type", &self.doc_type), ("rev", &self.rev), ("idempotencyKey", &self.idempotency_key)] {
            if value.trim().is_empty() {
                let got = if value.is_empty() { "an empty string" } else { "only spaces" };
                return Err(SyncError::expected(field, payload_expects(field).unwrap_or("a string"), got));
            }
        }
        if self.op == Op::Upsert {
            let got = self.document.as_deref().map_or("nothing", raw_kind);
            if got != "an object" {
                return Err(SyncError::expected("document", payload_expects("document").unwrap_or("an object"), got));
            }
        }
        Ok(())
    }
}

/// The kind of a JSON text, from its first character (the text is valid JSON).
pub fn raw_kind(raw: &RawValue) -> &'static str {
    let text = raw.get().trim_start();
    match text.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') if text == "\"\"" => "an empty string",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Refuse JSON text (valid, depth-checked) that is not an object. Needed before reading a struct: serde also
/// reads a struct from an array of its fields in order, which no sender of ours writes.
pub fn check_object(field: &str, text: &str, expected: &str) -> Result<(), SyncError> {
    let raw: &RawValue = serde_json::from_str(text).map_err(|e| limits::json_error(field, expected, &e))?;
    match raw_kind(raw) {
        "an object" => Ok(()),
        other => Err(SyncError::expected(field, expected, other)),
    }
}

/// Refuse JSON nested deeper than `limits::MAX_JSON_DEPTH` without building it: a walk under serde_json's own
/// recursion limit. Needed wherever a part of the input is kept as text (`RawValue`), which carries any depth.
pub fn check_depth(field: &str, text: &str, expected: &str) -> Result<(), SyncError> {
    struct Walk;
    impl<'de> Deserialize<'de> for Walk {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Walk)
        }
    }
    impl<'de> Visitor<'de> for Walk {
        type Value = Walk;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Walk, E> {
            Ok(Walk)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Walk, E> {
            Ok(Walk)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Walk, E> {
            Ok(Walk)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Walk, E> {
            Ok(Walk)
        }
        fn visit_str<E>(self, _: &str) -> Result<Walk, E> {
            Ok(Walk)
        }
        fn visit_unit<E>(self) -> Result<Walk, E> {
            Ok(Walk)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Walk, A::Error> {
            while seq.next_element::<Walk>()?.is_some() {}
            Ok(Walk)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Walk, A::Error> {
            while map.next_entry::<IgnoredAny, Walk>()?.is_some() {}
            Ok(Walk)
        }
    }
    serde_json::from_str::<Walk>(text).map(drop).map_err(|e| limits::json_error(field, expected, &e))
}

/// Read JSON `text` (already depth-checked) into `T`. Errors name the field (`prefix` + the path inside the
/// text; `root` for the text as a whole), say what `expects` says the field holds, and describe what was
/// found by its kind only.
pub fn read_typed<T: DeserializeOwned>(
    prefix: &str,
    root: &str,
    text: &str,
    expects: &dyn Fn(&str) -> Option<&'static str>,
) -> Result<T, SyncError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| typed_error(prefix, root, &e.path().to_string(), e.inner(), expects))?;
    de.end().map_err(|e| limits::json_error(root, expects("").unwrap_or("JSON"), &e))?;
    Ok(value)
}

/// `read_typed` for a value whose errors can only be about the text as a whole or a missing top-level field
/// (a list of raw values, a one-field probe): no field paths to track.
pub fn read_flat<'a, T: Deserialize<'a>>(root: &str, text: &'a str, expects: &dyn Fn(&str) -> Option<&'static str>) -> Result<T, SyncError> {
    serde_json::from_str(text).map_err(|e| typed_error("", root, ".", &e, expects))
}

fn typed_error(prefix: &str, root: &str, path: &str, e: &serde_json::Error, expects: &dyn Fn(&str) -> Option<&'static str>) -> SyncError {
    let whole = expects("").unwrap_or("JSON");
    if !e.is_data() {
        return limits::json_error(root, whole, e);
    }
    // serde's message: "<what> at line L column C". Only fixed words of it are used, never the value it quotes.
    let full = e.to_string();
    let message = full.rsplit_once(" at line ").map_or(full.as_str(), |(m, _)| m);
    let path = if path == "." { "" } else { path };
    let named = |prefix_text: &str| message.strip_prefix(prefix_text).and_then(|rest| rest.split('`').next());
    let (inner, got) = if let Some(name) = named("missing field `") {
        (join(path, name), "nothing (the field is missing)")
    } else if let Some(name) = named("duplicate field `") {
        (join(path, name), "the field more than once")
    } else if let Some(rest) = message.strip_prefix("invalid type: ") {
        let got = [
            ("string", "a string"),
            ("integer", "a number"),
            ("floating point", "a number"),
            // A number beyond f64 or u64, as serde_json's `arbitrary_precision` reads it.
            ("number", "a number"),
            ("boolean", "a boolean"),
            ("null", "null"),
            ("unit", "null"),
            ("sequence", "an array"),
            ("map", "an object"),
        ]
        .iter()
        .find(|(word, _)| rest.starts_with(word))
        .map_or("another value", |(_, kind)| kind);
        (path.to_string(), got)
    } else {
        (path.to_string(), "another value")
    };
    let shape: String = {
        // `routes.current[3]` → `routes.current[]`: one expectation for every item of a list.
        let mut out = String::with_capacity(inner.len());
        let mut in_index = false;
        for c in inner.chars() {
            match c {
                '[' => in_index = true,
                ']' => in_index = false,
                _ if in_index => continue,
                _ => {}
            }
            out.push(c);
        }
        out
    };
    let serde_expected = message.rsplit_once(", expected ").map(|(_, x)| x.to_string());
    let expected = expects(&shape).map(String::from).or(serde_expected).unwrap_or_else(|| "another value".into());
    let field = if inner.is_empty() { root.to_string() } else { format!("{prefix}{inner}") };
    SyncError::expected(field, expected, got)
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// How a receiver answered a push (docs/protocol.md, "Answer"). All three are success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    Applied,
    Duplicate,
    Stale,
}

impl AckStatus {
    pub const ALL: [AckStatus; 3] = [AckStatus::Applied, AckStatus::Duplicate, AckStatus::Stale];

    pub fn as_str(self) -> &'static str {
        match self {
            AckStatus::Applied => "applied",
            AckStatus::Duplicate => "duplicate",
            AckStatus::Stale => "stale",
        }
    }
}

/// The receiver's answer: `{"machine": "<FLY_MACHINE_ID>", "status": "applied"|"duplicate"|"stale", "restart": "required"?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub machine: String,
    pub status: AckStatus,
    pub restart_required: bool,
}

/// Read an ack. Only the protocol's three statuses count: a `status` that is missing, null, of another type or
/// another name is an error naming the field and what was expected (the value shortened): an app that answers
/// 200 with `"rejected"`, or with no status at all, has not said it holds the change.
pub fn parse_ack(body: &str) -> Result<Ack, SyncError> {
    // The usual ack, read without a tree: every field absent, null or a string. Anything else is read the full
    // way below, which says what is wrong with it.
    const USUAL: Want = Want::Fields(&[("machine", Want::Text), ("status", Want::Text), ("restart", Want::Text)]);
    if let Ok(mut usual) = json_pick::pick(body, &USUAL, "ack") {
        let status = usual.get("status").as_str().and_then(|s| AckStatus::ALL.into_iter().find(|a| a.as_str() == s));
        if let (Some(machine), Some(status)) = (usual.take("machine").text().filter(|m| !m.is_empty()), status) {
            return Ok(Ack { machine: machine.into_owned(), status, restart_required: usual.get("restart").as_str() == Some("required") });
        }
    }
    let value: Value = serde_json::from_str(body)
        .map_err(|_| SyncError::fatal("the receiver's answer is not JSON: is the sync path served by the sanity-fly-sync receiver?"))?;
    let machine = value
        .get("machine")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| SyncError::fatal("the receiver's answer names no `machine` (it must echo FLY_MACHINE_ID)"))?;
    let status = match value.get("status") {
        None | Some(Value::Null) => {
            return Err(SyncError::fatal(
                "the receiver's answer has no `status`; expected `applied`, `duplicate` or `stale` (docs/protocol.md): a 200 without one does not say the change is held",
            ))
        }
        Some(Value::String(s)) => AckStatus::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| {
            let shown: String = s.chars().take(40).flat_map(char::escape_default).collect();
            let more = if s.chars().count() > 40 { "…" } else { "" };
            SyncError::fatal(format!(
                "the receiver's answer has status `{shown}{more}`; expected `applied`, `duplicate` or `stale` (docs/protocol.md)"
            ))
        })?,
        Some(other) => {
            return Err(SyncError::fatal(format!(
                "the receiver's answer has a `status` that is {}; expected `applied`, `duplicate` or `stale`",
                crate::error::kind_of(other)
            )))
        }
    };
    let restart_required = value.get("restart").and_then(Value::as_str) == Some("required");
    Ok(Ack { machine: machine.to_string(), status, restart_required })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{env, SECRET};
    use crate::config::Config;
    use crate::error::ErrorClass;
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
        let body: Value = serde_json::from_str(&payload_body(&c, &target(), None)).unwrap();
        assert_eq!(body["op"], "delete");
        assert_eq!(body["routes"]["current"], json!([]));
        assert_eq!(body["routes"]["previous"], json!(["/blog/gone", "/en/blog/gone", "/feed.xml"]));
        assert!(body.get("document").is_none());
        assert_eq!(body["idempotencyKey"], "delete:article-1:r2");
    }

    #[test]
    fn upsert_payload_carries_document_and_tags() {
        let c = change(json!({"op":"create","slug":"a","cacheTags":["article:article-1","article"]}));
        let body: Value = serde_json::from_str(&payload_body(&c, &target(), None)).unwrap();
        assert_eq!(body["protocol"], PROTOCOL);
        assert_eq!(body["type"], "article");
        assert_eq!(body["updatedAt"], "2026-11-27T10:00:00Z");
        assert_eq!(body["document"]["title"], "T");
        assert!(body["document"].get("op").is_none());
        assert_eq!(body["tags"], json!(["article:article-1", "article", "article-1"]));
    }

    #[test]
    fn the_wire_shape_is_the_documented_one_and_parses_back_to_the_same_bytes() {
        let c = change(json!({"op":"update","slug":"new","previousSlug":"old","market":"eu"}));
        let body = payload_body(&c, &target(), None);
        let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, Value>>(&body).unwrap().keys().cloned().collect();
        let mut documented = ["protocol", "target", "op", "operation", "id", "type", "rev", "updatedAt", "slug", "previousSlug", "routes",
            "tags", "locale", "market", "document", "idempotencyKey"];
        documented.sort();
        assert_eq!(keys, documented, "the fields of docs/protocol.md");
        assert!(body.starts_with(r#"{"protocol":"sanity-fly-sync/1","target":"web","op":"upsert","operation":"update","id":"article-1","type":"article""#), "{body}");
        let parsed = parse_payload(body.as_bytes()).unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), body, "parse then serialise changes no byte");
    }

    fn push(extra: Value) -> Value {
        let mut p = json!({"protocol": PROTOCOL, "op": "upsert", "id": "p", "type": "page", "rev": "r1",
            "updatedAt": "2026-11-27T10:00:00Z", "idempotencyKey": "upsert:p:r1", "document": {"_id": "p"}});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                p.as_object_mut().unwrap().remove(k);
            } else {
                p[k] = v.clone();
            }
        }
        p
    }

    fn refused(body: &str) -> (String, String) {
        let e = parse_payload(body.as_bytes()).unwrap_err();
        assert_eq!(e.class, ErrorClass::BadInput);
        let field = e.field.clone().unwrap();
        assert!(e.message.starts_with(&format!("`{field}`: expected ")), "{}", e.message);
        (field, e.message)
    }

    #[test]
    fn a_push_is_read_with_serde_naming_every_bad_field_without_echoing_it() {
        // Unknown fields (a newer sender) are ignored; optional ones default.
        let p = parse_payload(push(json!({"addedLater": {"x": [1, 2]}})).to_string().as_bytes()).unwrap();
        assert_eq!((p.id.as_str(), p.operation, p.routes.clone(), p.tags.len()), ("p", Operation::Unknown, Routes::default(), 0));
        let p = parse_payload(push(json!({"operation": "publish-v3"})).to_string().as_bytes()).unwrap();
        assert_eq!(p.operation, Operation::Unknown, "an operation name we do not know decides nothing");
        for (extra, field, fragment) in [
            (json!({"id": null}), "id", "expected the document id, got nothing"),
            (json!({"id": 7}), "id", "got a number"),
            (json!({"id": ""}), "id", "got an empty string"),
            (json!({"rev": "  "}), "rev", "the document revision, got only spaces"),
            (json!({"op": "destroy-secret-value"}), "op", "expected `upsert` or `delete`, got another value"),
            (json!({"updatedAt": ["2026"]}), "updatedAt", "got an array"),
            (json!({"routes": {"current": ["/a", {"secret-value": 1}]}}), "routes.current[1]", "expected a path (a string), got an object"),
            (json!({"routes": "secret-value"}), "routes", "got a string"),
            (json!({"tags": [true]}), "tags[0]", "got a boolean"),
            (json!({"slug": 12}), "slug", "a string or null, got a number"),
            (json!({"id": serde_json::from_str::<Value>("123456789012345678901234567890e999999").unwrap()}), "id", "expected the document id, got a number"),
            (json!({"document": "secret-value"}), "document", "got a string"),
            (json!({"document": []}), "document", "got an array"),
            (json!({"document": null}), "document", "on an upsert, got nothing"),
            (json!({"protocol": "sanity-fly-sync/2"}), "protocol", "another protocol version"),
            (json!({"protocol": null, "id": 5}), "protocol", "got nothing"),
        ] {
            let (f, m) = refused(&push(extra.clone()).to_string());
            assert_eq!(f, field, "{extra}: {m}");
            assert!(m.contains(fragment), "{extra}: {m}");
            assert!(!m.contains("secret-value") && !m.contains("destroy"), "never echoes the value: {m}");
        }
        let (f, m) = refused(r#"{"protocol":"sanity-fly-sync/1","id":"a","id":"b"}"#);
        assert_eq!(f, "id", "{m}");
        assert!(m.contains("more than once"), "{m}");
        assert_eq!(refused("[1]"), ("body".into(), "`body`: expected a sync payload (JSON object), got an array".into()));
        assert!(refused(r#"{"protocol":"#).1.contains("invalid JSON at line 1"));
        assert!(refused(&format!("{} x", push(json!({})))).1.contains("invalid JSON"), "trailing characters");
        let e = parse_payload(&[0xff, b'{']).unwrap_err();
        assert!(e.message.contains("not UTF-8"));
        // A delete needs no document.
        assert!(parse_payload(push(json!({"op": "delete", "document": null})).to_string().as_bytes()).is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_even_inside_the_document_kept_as_text() {
        let deep = format!(r#"{{"protocol":"{PROTOCOL}","document":{}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        let (field, message) = refused(&deep);
        assert_eq!(field, "body");
        assert!(message.contains("nested at most 128 levels deep"), "{message}");
        // Within the bound it passes, and a document at Sanity's own limit (20 levels) is far inside it.
        let ok = push(json!({"document": serde_json::from_str::<Value>(&format!("{{\"a\":{}1{}}}", "[".repeat(100), "]".repeat(100))).unwrap()}));
        assert!(parse_payload(ok.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn the_document_travels_as_its_exact_text() {
        let body = format!(
            r#"{{"protocol":"{PROTOCOL}","op":"upsert","id":"p","type":"page","rev":"r","updatedAt":"2026-11-27T10:00:00Z","idempotencyKey":"k","document":{{"big":9007199254740993,"huge":123456789012345678901234567890,"__proto__":{{"polluted":true}},"f":1.0000000000000002}}}}"#
        );
        let p = parse_payload(body.as_bytes()).unwrap();
        assert_eq!(
            p.document.as_deref().unwrap().get(),
            r#"{"big":9007199254740993,"huge":123456789012345678901234567890,"__proto__":{"polluted":true},"f":1.0000000000000002}"#
        );
        assert!(serde_json::to_string(&p).unwrap().contains(r#""huge":123456789012345678901234567890"#));
    }

    #[test]
    fn ack_parsing() {
        let a = parse_ack(r#"{"machine":"m1","status":"applied","restart":"required"}"#).unwrap();
        assert_eq!(a, Ack { machine: "m1".into(), status: AckStatus::Applied, restart_required: true });
        assert!(!parse_ack(r#"{"machine":"m1","status":"stale"}"#).unwrap().restart_required);
        for status in AckStatus::ALL {
            let body = format!(r#"{{"machine":"m1","status":"{}"}}"#, status.as_str());
            assert_eq!(parse_ack(&body).unwrap().status, status);
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert!(parse_ack(r#"{"ok":true}"#).unwrap_err().message.contains("FLY_MACHINE_ID"));
        assert!(parse_ack("OK").is_err());
    }

    #[test]
    fn an_ack_with_another_status_is_a_fatal_error_naming_it() {
        let e = parse_ack(r#"{"machine":"m1","status":"rejected"}"#).unwrap_err();
        assert_eq!(e.class, ErrorClass::Fatal);
        assert!(e.message.contains("status `rejected`; expected `applied`, `duplicate` or `stale`"), "{}", e.message);
        let long = format!(r#"{{"machine":"m1","status":"{}\n"}}"#, "x".repeat(500));
        let e = parse_ack(&long).unwrap_err();
        assert!(e.message.contains(&format!("`{}…`", "x".repeat(40))), "shortened: {}", e.message);
        assert!(e.message.len() < 200);
        let e = parse_ack(r#"{"machine":"m1","status":3}"#).unwrap_err();
        assert!(e.message.contains("a number"), "{}", e.message);
        assert!(parse_ack(r#"{"machine":"m1","status":"Applied"}"#).is_err(), "exact names only");
    }

    #[test]
    fn an_ack_without_a_status_is_a_fatal_error_naming_the_field() {
        for body in [r#"{"machine":"m1"}"#, r#"{"machine":"m1","status":null}"#, r#"{"machine":"m1","restart":"required"}"#] {
            let e = parse_ack(body).unwrap_err();
            assert_eq!(e.class, ErrorClass::Fatal, "{body}");
            assert!(e.message.contains("no `status`; expected `applied`, `duplicate` or `stale`"), "{body}: {}", e.message);
        }
    }
}
