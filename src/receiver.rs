//! The receiving side of the protocol, sans-IO, for the reference receiver every Fly Machine runs: verify the
//! signature and its age, drop duplicates by idempotency key, apply only newer revisions (tombstones for deletes,
//! so a late update cannot resurrect a deleted document), and shape the ack.
//!
//! Two steps around the app's own hooks: `check` decides, the app stores the change, then `commit` records it.
//! A change whose hooks fail is not committed, so the Function's retry applies it.

use crate::error::{kind_of, SyncError};
use crate::event::{rfc3339_ms, Headers};
use crate::json_read::Obj;
use crate::protocol::{PROTOCOL, SIGNATURE_HEADER};
use crate::signature;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};

#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    pub secret: String,
    /// This Machine's `FLY_MACHINE_ID`, echoed in every ack.
    pub machine_id: String,
    pub max_age_ms: u64,
    /// Accept `drafts.`/`versions.` ids (only for a preview app whose target opts in too).
    pub accept_drafts: bool,
    /// How many idempotency keys to remember for duplicate detection.
    pub remember_keys: usize,
}

impl ReceiverOptions {
    /// From the options object the app passes (`{secret, machineId, maxAgeSeconds?, acceptDrafts?, rememberKeys?}`).
    pub fn from_json(value: &Value) -> Result<ReceiverOptions, SyncError> {
        let obj = Obj::root(value, "", "receiver options")?;
        obj.deny_unknown(&["secret", "machineId", "maxAgeSeconds", "acceptDrafts", "rememberKeys"])?;
        let options = ReceiverOptions {
            secret: obj.str_req("secret", "the FLY_SYNC_SECRET shared with the Function")?.to_string(),
            machine_id: obj.str_req("machineId", "this Machine's FLY_MACHINE_ID")?.to_string(),
            max_age_ms: obj.u64_opt("maxAgeSeconds", 1, 86_400)?.map_or(signature::DEFAULT_MAX_AGE_MS, |s| s * 1000),
            accept_drafts: obj.bool_opt("acceptDrafts")?.unwrap_or(false),
            remember_keys: obj.u64_opt("rememberKeys", 1, 10_000_000)?.unwrap_or(100_000) as usize,
        };
        options.validate()?;
        Ok(options)
    }

    pub fn validate(&self) -> Result<(), SyncError> {
        if self.secret.chars().count() < 16 {
            return Err(SyncError::expected("secret", "the FLY_SYNC_SECRET shared with the Function (at least 16 characters)", "a shorter value"));
        }
        if self.machine_id.trim().is_empty() {
            return Err(SyncError::expected("machineId", "this Machine's FLY_MACHINE_ID", "nothing"));
        }
        Ok(())
    }
}

/// What the receiver remembers of a document: the newest revision applied, and whether it is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mark {
    updated_ms: u64,
    rev: String,
    deleted: bool,
    /// Kept so a tombstone can be written for a document Sanity no longer has (reconciliation).
    doc_type: String,
    updated_at: String,
    /// The routes that show the revision held (`routes.current` of the payload applied).
    routes: Vec<String>,
}

/// A verified, in-order change to hand to the app's hooks, then to `commit`.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub payload: Value,
    pub id: String,
    pub delete: bool,
    key: String,
    mark: Mark,
    /// Read from Sanity by reconciliation: its routes are unknown (empty), not "none".
    pulled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    Applied,
    Duplicate,
    Stale,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Apply(Box<Incoming>),
    /// Nothing to do, and success: the Machine already holds this revision or a newer one.
    Ignore(AckStatus),
    /// Refuse with this HTTP status (400 malformed, 401 signature, 422 not accepted here).
    Reject { http_status: u16, error: SyncError },
}

/// The receiver's answer body (docs/protocol.md).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct AckBody<'a> {
    pub protocol: &'static str,
    pub machine: &'a str,
    pub status: AckStatus,
    #[cfg_attr(test, ts(type = "\"required\" | null"))]
    pub restart: Option<&'static str>,
}

pub struct Receiver {
    options: ReceiverOptions,
    marks: HashMap<String, Mark>,
    keys: HashSet<String>,
    key_order: VecDeque<String>,
    pending: HashMap<u32, Incoming>,
    next_ticket: u32,
}

/// What the handler does next with a request: answer it now, or run the app's hooks on `change` and then call
/// `finish(ticket, …)`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Step {
    Respond(Reply),
    Apply {
        ticket: u32,
        #[cfg_attr(test, ts(type = "import(\"./SyncPayload.js\").SyncPayload"))]
        change: Value,
    },
}

/// An HTTP answer: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    pub http_status: u16,
    pub body: String,
}

fn error_reply(http_status: u16, error: &SyncError) -> Reply {
    let body = serde_json::json!({"error": error.message, "field": error.field, "class": error.class}).to_string();
    Reply { http_status, body }
}

impl Receiver {
    pub fn new(options: ReceiverOptions) -> Result<Receiver, SyncError> {
        options.validate()?;
        Ok(Receiver { options, marks: HashMap::new(), keys: HashSet::new(), key_order: VecDeque::new(), pending: HashMap::new(), next_ticket: 1 })
    }

    /// Step one of a pushed request. Requests must be handled one at a time (begin … finish), so that two
    /// deliveries of one change cannot both be applied.
    pub fn begin(&mut self, headers: &Headers, body: &[u8], now_ms: u64) -> Step {
        self.step(self.check(headers, body, now_ms))
    }

    /// Step one of a pulled document (catch-up): same ordering, no signature.
    pub fn begin_pulled(&mut self, payload: Value) -> Step {
        self.step(self.check_pulled(payload))
    }

    fn step(&mut self, decision: Decision) -> Step {
        match decision {
            Decision::Reject { http_status, error } => Step::Respond(error_reply(http_status, &error)),
            Decision::Ignore(status) => Step::Respond(Reply { http_status: 200, body: self.ack(status, false) }),
            Decision::Apply(incoming) => {
                let ticket = self.next_ticket;
                self.next_ticket = self.next_ticket.wrapping_add(1);
                let change = incoming.payload.clone();
                self.pending.insert(ticket, *incoming);
                Step::Apply { ticket, change }
            }
        }
    }

    /// Step two: the app's hooks finished. `Ok(restart_required)` commits the change; `Err(message)` leaves it
    /// uncommitted and answers 503, so the Function retries.
    pub fn finish(&mut self, ticket: u32, outcome: Result<bool, String>) -> Reply {
        let Some(incoming) = self.pending.remove(&ticket) else {
            return error_reply(500, &SyncError::fatal(format!("unknown ticket {ticket}")));
        };
        match outcome {
            Ok(restart_required) => {
                self.commit(&incoming);
                Reply { http_status: 200, body: self.ack(AckStatus::Applied, restart_required) }
            }
            Err(message) => {
                let error = SyncError::retryable(format!("the app could not apply {}: {}", incoming.id, crate::error::shorten(&message, 300)));
                error_reply(503, &error)
            }
        }
    }

    pub fn machine_id(&self) -> &str {
        &self.options.machine_id
    }

    /// Decide what to do with a pushed request (headers with any case, raw body bytes). Pure: see `begin`.
    pub fn check(&self, headers: &Headers, body: &[u8], now_ms: u64) -> Decision {
        let header = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(SIGNATURE_HEADER)).map(|(_, v)| v.as_str());
        let Some(header) = header else {
            let error = SyncError::expected(SIGNATURE_HEADER, "the signature of the sync request", "no header");
            return Decision::Reject { http_status: 401, error };
        };
        if let Err(error) = signature::verify(SIGNATURE_HEADER, header, body, &self.options.secret, now_ms, self.options.max_age_ms) {
            return Decision::Reject { http_status: 401, error };
        }
        let incoming = match parse_payload(body) {
            Ok(i) => i,
            Err(error) => return Decision::Reject { http_status: 400, error },
        };
        if !self.options.accept_drafts && (incoming.id.starts_with("drafts.") || incoming.id.starts_with("versions.")) {
            let error = SyncError::bad_field("id", "draft and version ids are not accepted by this receiver (set acceptDrafts for a preview app)");
            return Decision::Reject { http_status: 422, error };
        }
        self.order(incoming)
    }

    /// A pulled document (catch-up): the same ordering, without the signature (it came from Sanity's API).
    pub fn check_pulled(&self, payload: Value) -> Decision {
        let body = payload.to_string();
        match parse_payload(body.as_bytes()) {
            Ok(incoming) => self.order(Incoming { pulled: true, ..incoming }),
            Err(error) => Decision::Reject { http_status: 400, error },
        }
    }

    fn order(&self, mut incoming: Incoming) -> Decision {
        if self.keys.contains(&incoming.key) {
            return Decision::Ignore(AckStatus::Duplicate);
        }
        if let Some(mark) = self.marks.get(&incoming.id) {
            let new = &incoming.mark;
            // Newer instant wins. At the same instant: a delete beats an upsert (a late update must not bring a
            // deleted document back); the same revision is already here; two different revisions within Sanity's
            // timestamp precision cannot be ordered, so the later arrival wins.
            let stale = new.updated_ms < mark.updated_ms
                || (new.updated_ms == mark.updated_ms
                    && ((mark.deleted && !new.deleted) || (mark.deleted == new.deleted && mark.rev == new.rev)));
            if stale {
                return Decision::Ignore(AckStatus::Stale);
            }
            // Routes of the revision held that the new one no longer has must go too, even when the change
            // that moved them (a rename between the two) arrived late and was skipped as stale.
            let gone: Vec<String> = mark.routes.iter().filter(|r| !incoming.mark.routes.contains(r)).cloned().collect();
            if incoming.pulled {
                // Its routes are unknown: purge the held ones, keep them as the document's routes.
                retire(&mut incoming.payload, &gone, false);
                incoming.mark.routes = mark.routes.clone();
            } else {
                retire(&mut incoming.payload, &gone, true);
            }
        }
        Decision::Apply(Box::new(incoming))
    }

    /// Record an applied change (call after the app's hooks succeeded).
    pub fn commit(&mut self, incoming: &Incoming) {
        self.marks.insert(incoming.id.clone(), incoming.mark.clone());
        if self.keys.insert(incoming.key.clone()) {
            self.key_order.push_back(incoming.key.clone());
            while self.key_order.len() > self.options.remember_keys.max(1) {
                if let Some(old) = self.key_order.pop_front() {
                    self.keys.remove(&old);
                }
            }
        }
    }

    /// Ids of documents this Machine holds (not deleted), for reconciliation.
    pub fn live_ids(&self) -> impl Iterator<Item = &str> {
        self.marks.iter().filter(|(_, m)| !m.deleted).map(|(id, _)| id.as_str())
    }

    /// The newest revision held of a live document: `(type, rev, updatedAt)`.
    pub fn held(&self, id: &str) -> Option<(&str, &str, &str)> {
        self.marks.get(id).filter(|m| !m.deleted).map(|m| (m.doc_type.as_str(), m.rev.as_str(), m.updated_at.as_str()))
    }

    pub fn ack(&self, status: AckStatus, restart_required: bool) -> String {
        let body = AckBody {
            protocol: PROTOCOL,
            machine: &self.options.machine_id,
            status,
            restart: restart_required.then_some("required"),
        };
        serde_json::to_string(&body).expect("ack serialises")
    }
}

/// Add `gone` routes to the payload's `invalidate` (and `previous`), each once.
fn retire(payload: &mut Value, gone: &[String], as_previous: bool) {
    let Some(routes) = payload.get_mut("routes").and_then(Value::as_object_mut) else { return };
    let lists: &[&str] = if as_previous { &["previous", "invalidate"] } else { &["invalidate"] };
    for list in lists {
        if let Some(Value::Array(items)) = routes.get_mut(*list) {
            for route in gone {
                if !items.iter().any(|i| i.as_str() == Some(route.as_str())) {
                    items.push(Value::String(route.clone()));
                }
            }
        }
    }
}

fn parse_payload(body: &[u8]) -> Result<Incoming, SyncError> {
    let text = std::str::from_utf8(body).map_err(|_| SyncError::expected("body", "UTF-8 JSON", "bytes that are not UTF-8"))?;
    let payload: Value = serde_json::from_str(text)
        .map_err(|e| SyncError::expected("body", "a sync payload (JSON object)", format!("invalid JSON at line {} column {}", e.line(), e.column())))?;
    let obj = Obj::root(&payload, "", "body")?;
    match obj.get("protocol") {
        Some(Value::String(p)) if p == PROTOCOL => {}
        // A Function of another version (docs/protocol.md, "Versions"): refused whole, never half-understood.
        Some(Value::String(_)) => {
            return Err(SyncError::expected(
                "protocol",
                format!("`{PROTOCOL}`, the version this receiver speaks"),
                "another protocol version (the Function and its receivers must speak one: update sanity-fly-sync on the older side)",
            ))
        }
        Some(other) => return Err(SyncError::expected("protocol", format!("`{PROTOCOL}`"), kind_of(other))),
        None => return Err(SyncError::expected("protocol", format!("`{PROTOCOL}`"), "nothing")),
    }
    let delete = match obj.str_req("op", "`upsert` or `delete`")? {
        "upsert" => false,
        "delete" => true,
        _ => return Err(SyncError::expected("op", "`upsert` or `delete`", "another operation")),
    };
    let id = obj.str_req("id", "the document id")?.to_string();
    let doc_type = obj.str_req("type", "the document type")?.to_string();
    let rev = obj.str_req("rev", "the document revision")?.to_string();
    let updated_at = obj.str_req("updatedAt", "an RFC 3339 UTC time")?;
    let updated_ms = rfc3339_ms(updated_at).ok_or_else(|| SyncError::expected("updatedAt", "an RFC 3339 UTC time", "another value"))?;
    let key = obj.str_req("idempotencyKey", "the idempotency key")?.to_string();
    if !delete && !matches!(obj.get("document"), Some(Value::Object(_))) {
        return Err(SyncError::expected("document", "the document (an object) on an upsert", obj.get("document").map_or("nothing", kind_of)));
    }
    let updated_at = updated_at.to_string();
    let routes: Vec<String> = payload
        .pointer("/routes/current")
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    Ok(Incoming { mark: Mark { updated_ms, rev, deleted: delete, doc_type, updated_at, routes }, id, delete, key, payload, pulled: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef-sync";
    const NOW: u64 = 1_800_000_000_000;

    fn receiver() -> Receiver {
        Receiver::new(ReceiverOptions { secret: SECRET.into(), machine_id: "m1".into(), max_age_ms: 300_000, accept_drafts: false, remember_keys: 3 }).unwrap()
    }

    fn payload(op: &str, id: &str, rev: &str, at: &str) -> Value {
        let mut p = json!({"protocol": PROTOCOL, "op": op, "id": id, "type": "page", "rev": rev, "updatedAt": at,
            "idempotencyKey": format!("{op}:{id}:{rev}")});
        if op == "upsert" {
            p["document"] = json!({"_id": id, "title": rev});
        }
        p
    }

    fn signed(body: &str, at: u64) -> Headers {
        [(SIGNATURE_HEADER.to_string(), signature::sign(body.as_bytes(), at, SECRET))].into()
    }

    /// check + commit, as the handler does when the hooks succeed.
    fn deliver(r: &mut Receiver, p: &Value) -> Result<AckStatus, (u16, String)> {
        let body = p.to_string();
        match r.check(&signed(&body, NOW), body.as_bytes(), NOW) {
            Decision::Apply(i) => {
                r.commit(&i);
                Ok(AckStatus::Applied)
            }
            Decision::Ignore(s) => Ok(s),
            Decision::Reject { http_status, error } => Err((http_status, error.message)),
        }
    }

    #[test]
    fn newer_applies_older_and_equal_are_stale_duplicates_are_duplicates() {
        let mut r = receiver();
        let v1 = payload("upsert", "p", "r1", "2026-11-27T10:00:00Z");
        let v2 = payload("upsert", "p", "r2", "2026-11-27T10:00:05Z");
        assert_eq!(deliver(&mut r, &v2), Ok(AckStatus::Applied));
        assert_eq!(deliver(&mut r, &v2), Ok(AckStatus::Duplicate));
        assert_eq!(deliver(&mut r, &v1), Ok(AckStatus::Stale), "out of order: older revision");
        let same_instant = payload("upsert", "p", "r3", "2026-11-27T10:00:05Z");
        assert_eq!(deliver(&mut r, &same_instant), Ok(AckStatus::Applied), "same instant, other revision: later arrival wins");
    }

    #[test]
    fn tombstones_stop_resurrection_but_not_recreation() {
        let mut r = receiver();
        let v1 = payload("upsert", "p", "r1", "2026-11-27T10:00:00Z");
        let del = payload("delete", "p", "r1", "2026-11-27T10:00:00Z");
        assert_eq!(deliver(&mut r, &v1), Ok(AckStatus::Applied));
        assert_eq!(deliver(&mut r, &del), Ok(AckStatus::Applied), "a delete wins over the same revision");
        let mut late = v1.clone();
        late["idempotencyKey"] = json!("retry-of-r1");
        assert_eq!(deliver(&mut r, &late), Ok(AckStatus::Stale), "a late update does not resurrect");
        assert_eq!(r.live_ids().count(), 0);
        let recreated = payload("upsert", "p", "r9", "2026-11-27T11:00:00Z");
        assert_eq!(deliver(&mut r, &recreated), Ok(AckStatus::Applied));
        assert_eq!(r.live_ids().collect::<Vec<_>>(), ["p"]);
        // A delete that arrives first leaves a tombstone for an unseen document.
        let ghost_delete = payload("delete", "q", "r5", "2026-11-27T10:00:00Z");
        assert_eq!(deliver(&mut r, &ghost_delete), Ok(AckStatus::Applied));
        assert_eq!(deliver(&mut r, &payload("upsert", "q", "r4", "2026-11-27T09:00:00Z")), Ok(AckStatus::Stale));
    }

    #[test]
    fn routes_of_a_skipped_rename_are_retired_by_the_newer_change() {
        let mut r = receiver();
        let with_routes = |rev: &str, at: &str, slug: &str, previous: &str| {
            let mut p = payload("upsert", "p", rev, at);
            p["routes"] = json!({"invalidate": [format!("/{slug}"), format!("/{previous}")], "current": [format!("/{slug}")], "previous": [format!("/{previous}")]});
            p
        };
        deliver(&mut r, &with_routes("r1", "2026-11-27T10:00:00Z", "a", "a")).unwrap();
        // r3 (b → c) arrives before r2 (a → b): r3 must also retire /a, which only r2 named.
        let body = with_routes("r3", "2026-11-27T10:00:10Z", "c", "b").to_string();
        let Step::Apply { ticket, change } = r.begin(&signed(&body, NOW), body.as_bytes(), NOW) else { panic!() };
        assert_eq!(change["routes"]["previous"], json!(["/b", "/a"]));
        assert_eq!(change["routes"]["invalidate"], json!(["/c", "/b", "/a"]));
        r.finish(ticket, Ok(false));
        assert_eq!(deliver(&mut r, &with_routes("r2", "2026-11-27T10:00:05Z", "b", "a")), Ok(AckStatus::Stale));
        // A delete retires every route the held revision had.
        let mut del = payload("delete", "p", "r3", "2026-11-27T10:00:10Z");
        del["routes"] = json!({"invalidate": [], "current": [], "previous": []});
        let body = del.to_string();
        let Step::Apply { change, .. } = r.begin(&signed(&body, NOW), body.as_bytes(), NOW) else { panic!() };
        assert_eq!(change["routes"]["previous"], json!(["/c"]));
    }

    #[test]
    fn remembered_keys_are_bounded() {
        let mut r = receiver();
        for i in 0..5 {
            deliver(&mut r, &payload("upsert", &format!("d{i}"), "r", "2026-11-27T10:00:00Z")).unwrap();
        }
        assert_eq!(r.keys.len(), 3);
        assert_eq!(r.key_order.len(), 3);
    }

    #[test]
    fn bad_requests_are_rejected_with_status_and_field() {
        let r = receiver();
        let good = payload("upsert", "p", "r1", "2026-11-27T10:00:00Z").to_string();
        let reject = |headers: Headers, body: &str| match r.check(&headers, body.as_bytes(), NOW) {
            Decision::Reject { http_status, error } => (http_status, error.field.unwrap_or_default(), error.message),
            other => panic!("accepted: {other:?}"),
        };
        assert_eq!(reject(Headers::new(), &good).0, 401);
        let (s, f, m) = reject(signed(&good, NOW - 301_000), &good);
        assert_eq!((s, f.as_str()), (401, SIGNATURE_HEADER));
        assert!(m.contains("old"));
        let wrong: Headers = [(SIGNATURE_HEADER.to_string(), signature::sign(good.as_bytes(), NOW, "another-secret-000000"))].into();
        assert!(reject(wrong, &good).2.contains("does not match"));
        assert_eq!(reject(signed("{", NOW), "{").0, 400);
        let mut p = payload("upsert", "p", "r1", "2026-11-27T10:00:00Z");
        p["protocol"] = json!("sanity-fly-sync/2");
        let b = p.to_string();
        assert_eq!(reject(signed(&b, NOW), &b).1, "protocol");
        let mut p = payload("upsert", "p", "r1", "2026-11-27T10:00:00Z");
        p.as_object_mut().unwrap().remove("document");
        let b = p.to_string();
        assert_eq!(reject(signed(&b, NOW), &b), (400, "document".into(), "`document`: expected the document (an object) on an upsert, got nothing".into()));
        let b = payload("upsert", "drafts.p", "r1", "2026-11-27T10:00:00Z").to_string();
        assert_eq!(reject(signed(&b, NOW), &b).0, 422);
        let b = payload("upsert", "p", "r1", "last tuesday").to_string();
        assert_eq!(reject(signed(&b, NOW), &b).1, "updatedAt");
    }

    #[test]
    fn ack_names_the_machine() {
        let ack: Value = serde_json::from_str(&receiver().ack(AckStatus::Stale, true)).unwrap();
        assert_eq!(ack, json!({"protocol": PROTOCOL, "machine": "m1", "status": "stale", "restart": "required"}));
    }

    #[test]
    fn begin_finish_commits_only_on_success() {
        let mut r = receiver();
        let body = payload("upsert", "p", "r1", "2026-11-27T10:00:00Z").to_string();
        let Step::Apply { ticket, change } = r.begin(&signed(&body, NOW), body.as_bytes(), NOW) else { panic!() };
        assert_eq!(change["id"], "p");
        let failed = r.finish(ticket, Err("disk full".into()));
        assert_eq!(failed.http_status, 503);
        assert!(failed.body.contains("disk full") && failed.body.contains("retryable"));
        // Not committed: the retry applies.
        let Step::Apply { ticket, .. } = r.begin(&signed(&body, NOW), body.as_bytes(), NOW) else { panic!("retry applies") };
        let ok = r.finish(ticket, Ok(true));
        assert_eq!(ok.http_status, 200);
        assert!(ok.body.contains(r#""restart":"required""#));
        let Step::Respond(again) = r.begin(&signed(&body, NOW), body.as_bytes(), NOW) else { panic!() };
        assert!(again.body.contains("duplicate"));
        assert_eq!(r.finish(999, Ok(false)).http_status, 500);
    }

    #[test]
    fn options_from_json_name_the_field() {
        let e = ReceiverOptions::from_json(&json!({"secret": SECRET})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("machineId"));
        let e = ReceiverOptions::from_json(&json!({"secret": SECRET, "machineId": "m", "maxAge": 3})).unwrap_err();
        assert!(e.message.contains("unknown setting"));
        let o = ReceiverOptions::from_json(&json!({"secret": SECRET, "machineId": "m", "maxAgeSeconds": 60})).unwrap();
        assert_eq!(o.max_age_ms, 60_000);
    }

    #[test]
    fn options_are_validated() {
        let o = ReceiverOptions { secret: "short".into(), machine_id: "m".into(), max_age_ms: 1, accept_drafts: false, remember_keys: 1 };
        assert_eq!(Receiver::new(o).err().unwrap().field.as_deref(), Some("secret"));
    }
}
