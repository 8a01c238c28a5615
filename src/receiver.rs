//! The receiving side of the protocol, sans-IO, for the reference receiver every Fly Machine runs: verify the
//! signature and its age, drop duplicates by idempotency key, apply only newer revisions (tombstones for deletes,
//! so a late update cannot resurrect a deleted document), and shape the ack.
//!
//! A push passes four steps, and nothing is recorded before the third:
//! 1. `intake`: the headers alone, then the body as it streams in. A request without a signature header is
//!    refused before its body is read; a body over the size cap is refused as soon as it is over; the MAC is
//!    computed chunk by chunk, so a forged body is never held whole (nor copied into the core).
//! 2. `verify`: the whole body, pure: signature and age, the payload (`protocol::parse_payload`), a revision
//!    time no further ahead than `limits::MAX_FUTURE_SKEW_MS`, same-origin routes (its dependents' too), drafts only where accepted.
//! 3. `begin_verified`: ordering against what this Machine holds. A change to apply gets a ticket; the app's
//!    hooks run on it (the handler runs one change per document at a time; a second change of a document whose
//!    ticket is open is answered 503, retryable).
//! 4. `finish`: the hooks' outcome. Only success commits (marks, idempotency keys); a failure or a timeout
//!    leaves the change uncommitted, so the Function's retry applies it.

use crate::error::SyncError;
use crate::event::Headers;
use crate::limits;
use crate::protocol::{self, AckStatus, Push, Routes, SyncPayload, TagsPayload, PROTOCOL, SIGNATURE_HEADER};
use crate::routes;
use crate::signature;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use std::collections::{HashMap, HashSet, VecDeque};

/// Default cap on a push body: Sanity's largest document (32 MB of JSON) plus room for the payload around it.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 40_000_000;
/// Default time the app's hooks get per call before the change is answered 503 (uncommitted, retried).
pub const DEFAULT_HOOK_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// The FLY_SYNC_SECRET, used exactly as given (surrounding whitespace is refused, as the Function does).
    pub secret: String,
    /// This Machine's `FLY_MACHINE_ID`, echoed in every ack.
    pub machine_id: String,
    pub max_age_ms: u64,
    /// Accept `drafts.`/`versions.` ids (only for a preview app whose target opts in too).
    pub accept_drafts: bool,
    /// How many idempotency keys to remember for duplicate detection.
    pub remember_keys: usize,
    /// A push body larger than this is refused (413) before it is read whole.
    pub max_body_bytes: u64,
    /// How long each call of an app hook may take (the handler's timer; the core only carries the setting).
    pub hook_timeout_ms: u64,
    /// The app takes sync tags (it gave a hook for them); a sync-tag push is refused (422) otherwise, so the
    /// Function's report says so instead of counting tags nobody invalidated as delivered.
    pub sync_tags: bool,
}

const OPTION_KEYS: [&str; 8] = ["secret", "machineId", "maxAgeSeconds", "acceptDrafts", "rememberKeys", "maxBodyBytes", "hookTimeoutMs", "syncTags"];

impl ReceiverOptions {
    /// The defaults for everything but the secret and the Machine id.
    pub fn new(secret: impl Into<String>, machine_id: impl Into<String>) -> ReceiverOptions {
        ReceiverOptions {
            secret: secret.into(),
            machine_id: machine_id.into(),
            max_age_ms: signature::DEFAULT_MAX_AGE_MS,
            accept_drafts: false,
            remember_keys: 100_000,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            hook_timeout_ms: DEFAULT_HOOK_TIMEOUT_MS,
            sync_tags: false,
        }
    }

    /// From the options object the app passes (`{secret, machineId, maxAgeSeconds?, acceptDrafts?, rememberKeys?,
    /// maxBodyBytes?, hookTimeoutMs?, syncTags?}`).
    pub fn from_json(value: &Value) -> Result<ReceiverOptions, SyncError> {
        let obj = crate::json_read::Obj::root(value, "", "receiver options")?;
        obj.deny_unknown(&OPTION_KEYS)?;
        let defaults = ReceiverOptions::new(String::new(), String::new());
        let options = ReceiverOptions {
            // Not `str_req`: that trims, and the secret is used exactly as given.
            secret: match obj.get("secret") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => return Err(SyncError::expected("secret", "the FLY_SYNC_SECRET shared with the Function", crate::error::kind_of(other))),
                None => return Err(SyncError::expected("secret", "the FLY_SYNC_SECRET shared with the Function", "nothing")),
            },
            machine_id: obj.str_req("machineId", "this Machine's FLY_MACHINE_ID")?.to_string(),
            max_age_ms: obj.u64_opt("maxAgeSeconds", 1, 86_400)?.map_or(defaults.max_age_ms, |s| s * 1000),
            accept_drafts: obj.bool_opt("acceptDrafts")?.unwrap_or(defaults.accept_drafts),
            remember_keys: obj.u64_opt("rememberKeys", 1, 10_000_000)?.map_or(defaults.remember_keys, |n| n as usize),
            max_body_bytes: obj.u64_opt("maxBodyBytes", 1_024, 1 << 30)?.unwrap_or(defaults.max_body_bytes),
            hook_timeout_ms: obj.u64_opt("hookTimeoutMs", 10, 600_000)?.unwrap_or(defaults.hook_timeout_ms),
            sync_tags: obj.bool_opt("syncTags")?.unwrap_or(defaults.sync_tags),
        };
        options.validate()?;
        Ok(options)
    }

    pub fn validate(&self) -> Result<(), SyncError> {
        const SECRET: &str = "the FLY_SYNC_SECRET shared with the Function";
        if self.secret.trim() != self.secret {
            // One rule on every side: the Function refuses the same padding in FLY_SYNC_SECRET.
            return Err(SyncError::expected(
                "secret",
                format!("{SECRET} without surrounding spaces or line breaks (it is used exactly as given)"),
                "a value with surrounding whitespace",
            ));
        }
        if self.secret.chars().count() < 16 {
            return Err(SyncError::expected("secret", format!("{SECRET} (at least 16 characters)"), "a shorter value"));
        }
        if self.machine_id.trim().is_empty() {
            return Err(SyncError::expected("machineId", "this Machine's FLY_MACHINE_ID", "nothing"));
        }
        Ok(())
    }
}

/// The bounds the handler enforces with its own I/O: the body cap while reading, the timer around each hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct HandlerLimits {
    #[cfg_attr(test, ts(type = "number"))]
    pub max_body_bytes: u64,
    #[cfg_attr(test, ts(type = "number"))]
    pub hook_timeout_ms: u64,
}

/// What the receiver remembers of a document: the newest revision applied, and whether it is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub(crate) updated_ms: u64,
    pub(crate) rev: String,
    pub(crate) deleted: bool,
    /// Kept so a tombstone can be written for a document Sanity no longer has (reconciliation).
    pub(crate) doc_type: String,
    pub(crate) updated_at: String,
    /// The routes that show the revision held (`routes.current` of the payload applied).
    pub(crate) routes: Vec<String>,
    /// Applied from a read of Sanity (catch-up), not from its push: its routes and dependents were not known.
    pub(crate) pulled: bool,
}

impl Mark {
    /// Whether a change to `new` is no news against this mark: older, or the same revision, or an upsert of the
    /// same instant as a delete held. (Two revisions of one instant cannot be ordered: the later arrival wins.)
    pub(crate) fn covers(&self, new: &Mark) -> bool {
        new.updated_ms < self.updated_ms
            || (new.updated_ms == self.updated_ms && ((self.deleted && !new.deleted) || (self.deleted == new.deleted && self.rev == new.rev)))
    }
}

/// What committing a change records: the document's new mark and the change's idempotency key (for a store).
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    pub id: String,
    pub key: String,
    pub mark: Mark,
}

/// The receiver's state as a store holds it, to start from after a restart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub marks: Vec<(String, Mark)>,
    /// Oldest first.
    pub keys: Vec<String>,
}

/// A change whose hooks are running.
#[derive(Debug)]
struct Pending {
    id: String,
    key: String,
    /// `None` for sync tags: only their key is recorded.
    mark: Option<Mark>,
}

/// A verified change (its payload accepted whole), to order with `begin_verified`.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub payload: SyncPayload,
    mark: Mark,
    /// Read from Sanity by reconciliation: its routes are unknown (empty), not "none".
    pulled: bool,
}

/// A verified push: a change, or sync tags.
#[derive(Debug, Clone)]
pub enum Verified {
    Change(Box<Incoming>),
    Tags(TagsPayload),
}

impl Verified {
    /// What the handler holds while the push is applied: the document's id, or for sync tags the push's key
    /// (`tags:…`: a `:` is in no document id, so the two never wait on each other).
    pub fn id(&self) -> &str {
        match self {
            Verified::Change(incoming) => incoming.id(),
            Verified::Tags(tags) => &tags.idempotency_key,
        }
    }
}

impl Incoming {
    pub fn id(&self) -> &str {
        &self.payload.id
    }

    /// Its revision time (ms since the epoch), checked against the skew bound.
    pub fn updated_ms(&self) -> u64 {
        self.mark.updated_ms
    }
}

#[derive(Debug, Clone)]
pub enum Decision {
    Apply(Box<Incoming>),
    /// The revision is held already (catch-up applied it): purge what its push names, apply nothing again.
    Refresh(Box<Incoming>),
    /// Hand these sync tags to the app's hook.
    Tags(TagsPayload),
    /// Nothing to do, and success: the Machine already holds this revision or a newer one.
    Ignore(AckStatus),
    /// Refuse with this HTTP status (400 malformed, 401 signature, 413 too large, 422 not accepted here,
    /// 503 another change of the document is being applied).
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
    /// Changes handed to the app's hooks, by ticket: what `finish` records (the payload went to the handler).
    pending: HashMap<u32, Pending>,
    next_ticket: u32,
}

/// What the handler does next with a request: answer it now, or run the app's hooks on `change` and then call
/// `finish(ticket, …)`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Step {
    Respond(Reply),
    Apply { ticket: u32, change: Box<SyncPayload> },
    /// Run only the app's `invalidate` hook on `change` (its revision is held already: catch-up applied it
    /// before its push came, and only the push knows its routes and dependents), then `finish(ticket, …)`.
    Refresh { ticket: u32, change: Box<SyncPayload> },
    /// Run the app's sync-tag hook on these, then `finish(ticket, …)`.
    Tags { ticket: u32, sync_tags: Vec<String> },
}

/// An HTTP answer: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    pub http_status: u16,
    pub body: String,
}

pub fn error_reply(http_status: u16, error: &SyncError) -> Reply {
    let body = serde_json::json!({"error": error.message, "field": error.field, "class": error.class}).to_string();
    Reply { http_status, body }
}

type HmacSha256 = Hmac<Sha256>;

/// A push body as it streams in (step 1): counted against the cap and MACed chunk by chunk, so the handler
/// holds it whole only once it is known to be signed with our secret. `verify` checks it again, whole.
pub struct BodyIntake {
    mac: HmacSha256,
    expected: Vec<u8>,
    read: u64,
    max: u64,
}

fn too_large(max: u64) -> SyncError {
    SyncError::expected("body", format!("a body of at most {max} bytes (the receiver's maxBodyBytes)"), "a larger one")
}

impl BodyIntake {
    /// The next chunk; a 413 once the body is over the cap (stop reading).
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), Reply> {
        self.read = self.read.saturating_add(chunk.len() as u64);
        if self.read > self.max {
            return Err(error_reply(413, &too_large(self.max)));
        }
        self.mac.update(chunk);
        Ok(())
    }

    /// The body is complete: a 401 unless it is signed with our secret.
    pub fn finish(self) -> Result<(), Reply> {
        self.mac.verify_slice(&self.expected).map_err(|_| {
            let error = SyncError::bad_field(SIGNATURE_HEADER, "signature does not match the body (wrong secret, or the body was changed)");
            error_reply(401, &error)
        })
    }
}

fn signature_header(headers: &Headers) -> Result<&str, (u16, SyncError)> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(SIGNATURE_HEADER))
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| (401, SyncError::expected(SIGNATURE_HEADER, "the signature of the sync request", "no header")))
}

impl Receiver {
    pub fn new(options: ReceiverOptions) -> Result<Receiver, SyncError> {
        options.validate()?;
        Ok(Receiver { options, marks: HashMap::new(), keys: HashSet::new(), key_order: VecDeque::new(), pending: HashMap::new(), next_ticket: 1 })
    }

    pub fn limits(&self) -> HandlerLimits {
        HandlerLimits { max_body_bytes: self.options.max_body_bytes, hook_timeout_ms: self.options.hook_timeout_ms }
    }

    /// Step 1: before the body is read. Refuses a request without a well-formed signature header (401) or whose
    /// declared `content-length` is over the cap (413); otherwise the intake to feed the body through.
    pub fn intake(&self, headers: &Headers) -> Result<BodyIntake, Reply> {
        let header = signature_header(headers).map_err(|(status, e)| error_reply(status, &e))?;
        let parsed = signature::parse_header(SIGNATURE_HEADER, header).map_err(|e| error_reply(401, &e))?;
        self.check_size(headers, 0).map_err(|e| error_reply(413, &e))?;
        // The MAC of "<t>.<body>", as `signature::verify` computes it, fed as the body arrives.
        let mut mac = HmacSha256::new_from_slice(self.options.secret.as_bytes()).expect("HMAC takes keys of any size");
        mac.update(parsed.timestamp_ms.to_string().as_bytes());
        mac.update(b".");
        Ok(BodyIntake { mac, expected: parsed.mac, read: 0, max: self.options.max_body_bytes })
    }

    /// The body cap, against the declared `content-length` and the bytes at hand.
    fn check_size(&self, headers: &Headers, have: u64) -> Result<(), SyncError> {
        let declared = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.trim().parse::<u64>().ok());
        if declared.unwrap_or(0).max(have) > self.options.max_body_bytes {
            return Err(too_large(self.options.max_body_bytes));
        }
        Ok(())
    }

    /// Step 2, pure: the whole request verified and its payload accepted, or the answer that refuses it.
    pub fn verify(&self, headers: &Headers, body: &[u8], now_ms: u64) -> Result<Verified, (u16, SyncError)> {
        let header = signature_header(headers)?;
        self.check_size(headers, body.len() as u64).map_err(|e| (413, e))?;
        signature::verify(SIGNATURE_HEADER, header, body, &self.options.secret, now_ms, self.options.max_age_ms).map_err(|e| (401, e))?;
        let payload = match protocol::parse_push(body).map_err(|e| (400, e))? {
            Push::Change(payload) => *payload,
            Push::Tags(_) if !self.options.sync_tags => {
                let error = SyncError::bad_field("op", "sync tags are not taken by this receiver: give createReceiver a `syncTags` hook");
                return Err((422, error));
            }
            Push::Tags(tags) => return Ok(Verified::Tags(tags)),
        };
        if !self.options.accept_drafts && (payload.id.starts_with("drafts.") || payload.id.starts_with("versions.")) {
            let error = SyncError::bad_field("id", "draft and version ids are not accepted by this receiver (set acceptDrafts for a preview app)");
            return Err((422, error));
        }
        self.accept(payload, false, now_ms).map(|i| Verified::Change(Box::new(i))).map_err(|e| (400, e))
    }

    /// A payload built from a document pulled from Sanity (catch-up), checked like a push but unsigned.
    pub fn verify_pulled(&self, payload: SyncPayload, now_ms: u64) -> Result<Incoming, SyncError> {
        self.accept(payload, true, now_ms)
    }

    fn accept(&self, payload: SyncPayload, pulled: bool, now_ms: u64) -> Result<Incoming, SyncError> {
        payload.check_shape()?;
        // One bad revision time must not freeze the document: a time further ahead than the skew bound would
        // rank above every later real edit.
        let updated_ms = limits::revision_ms("updatedAt", &payload.updated_at, now_ms)?;
        for (field, route) in payload.named_routes() {
            routes::check_route(&field, route)?;
        }
        let mark = Mark {
            updated_ms,
            rev: payload.rev.clone(),
            deleted: payload.op == crate::change::Op::Delete,
            doc_type: payload.doc_type.clone(),
            updated_at: payload.updated_at.clone(),
            routes: payload.routes.current.clone(),
            pulled,
        };
        Ok(Incoming { payload, mark, pulled })
    }

    /// Decide what to do with a pushed request (headers with any case, raw body bytes). Pure: see `begin`.
    pub fn check(&self, headers: &Headers, body: &[u8], now_ms: u64) -> Decision {
        match self.verify(headers, body, now_ms) {
            Ok(verified) => self.decide(verified),
            Err((http_status, error)) => Decision::Reject { http_status, error },
        }
    }

    /// Steps 2 and 3 at once, for callers that hold the whole body already.
    pub fn begin(&mut self, headers: &Headers, body: &[u8], now_ms: u64) -> Step {
        self.step(self.check(headers, body, now_ms))
    }

    /// Step 3: order a verified change against what is held (sync tags: drop a repeat).
    pub fn begin_verified(&mut self, verified: Verified) -> Step {
        self.step(self.decide(verified))
    }

    /// `begin_verified` for a change known to be one (catch-up's pulled documents).
    pub fn begin_change(&mut self, incoming: Incoming) -> Step {
        self.step(self.order(incoming))
    }

    fn decide(&self, verified: Verified) -> Decision {
        match verified {
            Verified::Change(incoming) => self.order(*incoming),
            Verified::Tags(tags) if self.keys.contains(&tags.idempotency_key) => Decision::Ignore(AckStatus::Duplicate),
            Verified::Tags(tags) => Decision::Tags(tags),
        }
    }

    /// A change a LiteFS primary recorded, read from the replicated store by a replica: checked like a push
    /// (its routes are the primary's record of them), unsigned.
    pub fn verify_replicated(&self, payload: SyncPayload, now_ms: u64) -> Result<Incoming, SyncError> {
        self.accept(payload, false, now_ms)
    }

    /// Whether this receiver holds `mark` of `id` already (or something newer).
    pub fn covers(&self, id: &str, mark: &Mark) -> bool {
        self.marks.get(id).is_some_and(|held| held.covers(mark))
    }

    /// A pulled document (catch-up): the same checks and ordering, without the signature.
    pub fn begin_pulled(&mut self, payload: SyncPayload, now_ms: u64) -> Step {
        match self.verify_pulled(payload, now_ms) {
            Ok(incoming) => self.begin_change(incoming),
            Err(error) => Step::Respond(error_reply(400, &error)),
        }
    }

    fn step(&mut self, decision: Decision) -> Step {
        match decision {
            Decision::Reject { http_status, error } => Step::Respond(error_reply(http_status, &error)),
            Decision::Ignore(status) => Step::Respond(Reply { http_status: 200, body: self.ack(status, false) }),
            Decision::Apply(incoming) => {
                let (ticket, change) = self.hand_over(*incoming);
                Step::Apply { ticket, change }
            }
            Decision::Refresh(incoming) => {
                let (ticket, change) = self.hand_over(*incoming);
                Step::Refresh { ticket, change }
            }
            Decision::Tags(tags) => {
                let ticket = self.next_ticket;
                self.next_ticket = self.next_ticket.wrapping_add(1);
                self.pending.insert(ticket, Pending { id: tags.idempotency_key.clone(), key: tags.idempotency_key, mark: None });
                Step::Tags { ticket, sync_tags: tags.sync_tags }
            }
        }
    }

    /// A change to the app's hooks: its ticket, held pending until `finish`.
    fn hand_over(&mut self, incoming: Incoming) -> (u32, Box<SyncPayload>) {
        let ticket = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1);
        let Incoming { payload, mark, .. } = incoming;
        self.pending.insert(ticket, Pending { id: payload.id.clone(), key: payload.idempotency_key.clone(), mark: Some(mark) });
        (ticket, Box::new(payload))
    }

    /// Step 4: the app's hooks finished. `Ok(restart_required)` commits the change; `Err(message)` (a failure or
    /// the handler's timeout) leaves it uncommitted and answers 503, so the Function retries.
    pub fn finish(&mut self, ticket: u32, outcome: Result<bool, String>) -> Reply {
        let Some(pending) = self.pending.remove(&ticket) else {
            return error_reply(500, &SyncError::fatal(format!("unknown ticket {ticket}")));
        };
        match outcome {
            Ok(restart_required) => {
                self.record(pending.id, pending.key, pending.mark);
                Reply { http_status: 200, body: self.ack(AckStatus::Applied, restart_required) }
            }
            Err(message) => {
                let error = SyncError::retryable(format!("the app could not apply {}: {}", pending.id, crate::error::shorten(&message, 300)));
                error_reply(503, &error)
            }
        }
    }

    fn order(&self, mut incoming: Incoming) -> Decision {
        if self.keys.contains(&incoming.payload.idempotency_key) {
            return Decision::Ignore(AckStatus::Duplicate);
        }
        if self.pending.values().any(|p| p.id == incoming.id()) {
            // Its hooks are still running (the handler orders per document, so only a caller that does not can
            // get here): deciding now could apply the same change twice or an older one last.
            let error = SyncError::retryable(format!("another change of {} is being applied; retry", incoming.id()));
            return Decision::Reject { http_status: 503, error };
        }
        if let Some(mark) = self.marks.get(incoming.id()) {
            // Newer instant wins. At the same instant: a delete beats an upsert (a late update must not bring a
            // deleted document back); the same revision is already here; two different revisions within Sanity's
            // timestamp precision cannot be ordered, so the later arrival wins.
            let new = &incoming.mark;
            let same = new.updated_ms == mark.updated_ms && mark.deleted == new.deleted && mark.rev == new.rev;
            // The push of a revision catch-up already applied: nothing to apply, but it alone knows the routes and
            // dependents to purge.
            if same && mark.pulled && !incoming.pulled {
                return Decision::Refresh(Box::new(incoming));
            }
            if mark.covers(new) {
                return Decision::Ignore(AckStatus::Stale);
            }
            // Routes of the revision held that the new one no longer has must go too, even when the change
            // that moved them (a rename between the two) arrived late and was skipped as stale.
            let gone: Vec<String> = mark.routes.iter().filter(|r| !incoming.mark.routes.contains(r)).cloned().collect();
            if incoming.pulled {
                // Its routes are unknown: purge the held ones, keep them as the document's routes.
                retire(&mut incoming.payload.routes, &gone, false);
                incoming.mark.routes = mark.routes.clone();
            } else {
                retire(&mut incoming.payload.routes, &gone, true);
            }
        }
        Decision::Apply(Box::new(incoming))
    }

    /// What `finish(ticket, Ok(..))` would record, for a store to write first (in the same transaction as the
    /// app's own writes); `None` for an unknown ticket.
    pub fn pending_commit(&self, ticket: u32) -> Option<Commit> {
        // Sync tags leave nothing to store: invalidating them again after a restart is harmless.
        let p = self.pending.get(&ticket)?;
        Some(Commit { id: p.id.clone(), key: p.key.clone(), mark: p.mark.clone()? })
    }

    /// Start from what a store held (after a restart): the marks and the remembered keys, oldest first.
    pub fn restore(&mut self, snapshot: Snapshot) {
        for (id, mark) in snapshot.marks {
            self.marks.insert(id, mark);
        }
        for key in snapshot.keys {
            if self.keys.insert(key.clone()) {
                self.key_order.push_back(key);
            }
        }
        while self.key_order.len() > self.options.remember_keys.max(1) {
            if let Some(old) = self.key_order.pop_front() {
                self.keys.remove(&old);
            }
        }
    }

    /// How many idempotency keys are remembered at most.
    pub fn remember_keys(&self) -> usize {
        self.options.remember_keys.max(1)
    }

    /// Whether this Machine's replicated state (`held`, read from the store a LiteFS primary writes) already has
    /// `incoming` or something newer: a replica then only invalidates.
    pub fn replicated(incoming: &Incoming, held: Option<&Mark>) -> bool {
        held.is_some_and(|held| held.covers(&incoming.mark))
    }

    /// Record an applied change (call after the app's hooks succeeded).
    pub fn commit(&mut self, incoming: &Incoming) {
        self.record(incoming.payload.id.clone(), incoming.payload.idempotency_key.clone(), Some(incoming.mark.clone()));
    }

    fn record(&mut self, id: String, key: String, mark: Option<Mark>) {
        if let Some(mark) = mark {
            self.marks.insert(id, mark);
        }
        if self.keys.insert(key.clone()) {
            self.key_order.push_back(key);
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

    /// When the newest revision held of a live document was made (ms), for reconciliation.
    pub fn held_since_ms(&self, id: &str) -> Option<u64> {
        self.marks.get(id).filter(|m| !m.deleted).map(|m| m.updated_ms)
    }

    /// Whether anything is recorded or pending (for tests of "nothing before acceptance").
    pub fn is_untouched(&self) -> bool {
        self.marks.is_empty() && self.keys.is_empty() && self.pending.is_empty()
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
fn retire(routes: &mut Routes, gone: &[String], as_previous: bool) {
    for route in gone {
        if as_previous && !routes.previous.contains(route) {
            routes.previous.push(route.clone());
        }
    }
    for route in gone {
        if !routes.invalidate.contains(route) {
            routes.invalidate.push(route.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef-sync";
    const NOW: u64 = 1_800_000_000_000; // 2027-01-15T08:00:00Z

    fn receiver() -> Receiver {
        Receiver::new(ReceiverOptions { max_age_ms: 300_000, remember_keys: 3, ..ReceiverOptions::new(SECRET, "m1") }).unwrap()
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
            Decision::Apply(i) | Decision::Refresh(i) => {
                r.commit(&i);
                Ok(AckStatus::Applied)
            }
            Decision::Tags(_) => Ok(AckStatus::Applied),
            Decision::Ignore(s) => Ok(s),
            Decision::Reject { http_status, error } => Err((http_status, error.message)),
        }
    }

    fn reject(r: &Receiver, p: &Value) -> (u16, String, String) {
        let body = p.to_string();
        match r.check(&signed(&body, NOW), body.as_bytes(), NOW) {
            Decision::Reject { http_status, error } => (http_status, error.field.unwrap_or_default(), error.message),
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn the_push_of_a_revision_catch_up_applied_first_still_purges_its_routes_and_dependents_without_applying_it_again() {
        let mut r = receiver();
        let mut pushed = payload("upsert", "person-1", "r2", "2026-11-27T10:00:05Z");
        pushed["routes"] = json!({"invalidate": ["/blog/a", "/blog/b"], "current": [], "previous": []});
        let pulled: SyncPayload = serde_json::from_value(json!({"protocol": PROTOCOL, "target": "catch-up", "op": "upsert", "id": "person-1",
            "type": "page", "rev": "r2", "updatedAt": "2026-11-27T10:00:05Z", "document": {"_id": "person-1"}, "idempotencyKey": "pull:upsert:person-1:r2"})).unwrap();
        let Step::Apply { ticket, .. } = r.begin_pulled(pulled.clone(), NOW) else { panic!("catch-up applies it first") };
        r.finish(ticket, Ok(false));
        // The push comes after: the same revision, but it carries what to purge. Refreshed (invalidate only), not
        // dropped as `stale`, nor applied twice.
        let body = pushed.to_string();
        let Step::Refresh { ticket, change } = r.begin(&signed(&body, NOW), body.as_bytes(), NOW) else { panic!("the push was dropped as stale") };
        assert_eq!(change.routes.invalidate, ["/blog/a", "/blog/b"]);
        r.finish(ticket, Ok(false));
        // Once: a second read by catch-up, or a retry of the push, is stale or a duplicate again.
        assert!(matches!(r.begin_pulled(pulled, NOW), Step::Respond(Reply { http_status: 200, ref body }) if body.contains("duplicate")));
        assert_eq!(deliver(&mut r, &pushed), Ok(AckStatus::Duplicate));
        let mut other_key = pushed.clone();
        other_key["idempotencyKey"] = json!("upsert:person-1:r2-again");
        assert_eq!(deliver(&mut r, &other_key), Ok(AckStatus::Stale), "a pushed revision is never applied twice");
    }

    #[test]
    fn sync_tags_go_to_the_hook_once_per_run_and_are_refused_where_no_hook_takes_them() {
        let tags = json!({"protocol": PROTOCOL, "target": "web", "op": "tags", "syncTags": ["s1:a", "s1:b"], "idempotencyKey": "tags:1-2"});
        let body = tags.to_string();
        let mut without = receiver();
        assert_eq!(reject(&without, &tags).0, 422, "no hook: refused, so the Function does not count it delivered");
        assert!(matches!(without.begin(&signed(&body, NOW), body.as_bytes(), NOW), Step::Respond(Reply { http_status: 422, .. })));
        let mut r = Receiver::new(ReceiverOptions { sync_tags: true, ..ReceiverOptions::new(SECRET, "m1") }).unwrap();
        let Step::Tags { ticket, sync_tags } = r.begin(&signed(&body, NOW), body.as_bytes(), NOW) else { panic!("tags for the hook") };
        assert_eq!(sync_tags, ["s1:a", "s1:b"]);
        // A hook that fails leaves nothing recorded: the Function's retry hands the tags over again.
        assert_eq!(r.finish(ticket, Err("cache down".into())).http_status, 503);
        let Step::Tags { ticket, .. } = r.begin(&signed(&body, NOW), body.as_bytes(), NOW) else { panic!("again after a failure") };
        let ack = r.finish(ticket, Ok(false));
        assert_eq!(ack.http_status, 200);
        assert!(ack.body.contains(r#""status":"applied""#), "{}", ack.body);
        assert!(matches!(r.begin(&signed(&body, NOW), body.as_bytes(), NOW), Step::Respond(Reply { http_status: 200, ref body }) if body.contains("duplicate")));
        assert!(r.live_ids().next().is_none(), "tags are no document");
        // The same tags from another run (a later edit) are handed over again.
        let later = json!({"protocol": PROTOCOL, "op": "tags", "syncTags": ["s1:a"], "idempotencyKey": "tags:1-3"}).to_string();
        assert!(matches!(r.begin(&signed(&later, NOW), later.as_bytes(), NOW), Step::Tags { .. }));
        // Tags are checked as the Function checks them; the signature and version come first.
        let bad = |t: Value| {
            let mut p = tags.clone();
            p["syncTags"] = t;
            reject(&r, &p)
        };
        assert_eq!(bad(json!(["ok", "two words"])).1, "syncTags[1]");
        assert_eq!(bad(json!("s1:a")).1, "syncTags");
        assert_eq!(bad(json!(["x".repeat(300)])).0, 400);
        let mut other_version = tags.clone();
        other_version["protocol"] = json!("sanity-fly-sync/2");
        assert_eq!(reject(&r, &other_version).1, "protocol");
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
        assert_eq!(change.routes.previous, ["/b", "/a"]);
        assert_eq!(change.routes.invalidate, ["/c", "/b", "/a"]);
        r.finish(ticket, Ok(false));
        assert_eq!(deliver(&mut r, &with_routes("r2", "2026-11-27T10:00:05Z", "b", "a")), Ok(AckStatus::Stale));
        // A delete retires every route the held revision had.
        let mut del = payload("delete", "p", "r3", "2026-11-27T10:00:10Z");
        del["routes"] = json!({"invalidate": [], "current": [], "previous": []});
        let body = del.to_string();
        let Step::Apply { change, .. } = r.begin(&signed(&body, NOW), body.as_bytes(), NOW) else { panic!() };
        assert_eq!(change.routes.previous, ["/c"]);
    }

    #[test]
    fn a_receiver_restored_from_what_it_committed_decides_as_the_one_before_the_restart() {
        let mut r = receiver();
        let v1 = payload("upsert", "p", "r1", "2026-11-27T10:00:00Z").to_string();
        let Step::Apply { ticket, .. } = r.begin(&signed(&v1, NOW), v1.as_bytes(), NOW) else { panic!() };
        let commit = r.pending_commit(ticket).expect("what finish would record");
        assert_eq!((commit.id.as_str(), commit.key.as_str(), commit.mark.rev.as_str()), ("p", "upsert:p:r1", "r1"));
        r.finish(ticket, Ok(false));
        assert_eq!(r.pending_commit(ticket), None, "committed: nothing pending");
        deliver(&mut r, &payload("delete", "q", "r2", "2026-11-27T10:00:00Z")).unwrap();
        let snapshot = Snapshot {
            marks: vec![("p".into(), commit.mark.clone()), ("q".into(), r.marks["q"].clone())],
            keys: vec!["old-1".into(), "old-2".into(), "upsert:p:r1".into(), "delete:q:r2".into()],
        };
        let mut restarted = receiver();
        restarted.restore(snapshot);
        assert_eq!(restarted.keys.len(), 3, "remembered keys stay bounded");
        assert!(!restarted.keys.contains("old-1"));
        let Step::Respond(again) = restarted.begin(&signed(&v1, NOW), v1.as_bytes(), NOW) else { panic!("applied twice") };
        assert!(again.body.contains("duplicate"));
        let mut retry = payload("upsert", "q", "r1", "2026-11-27T09:00:00Z");
        retry["idempotencyKey"] = json!("a-late-push");
        assert_eq!(deliver(&mut restarted, &retry), Ok(AckStatus::Stale), "the tombstone survived the restart");
        assert_eq!(restarted.live_ids().collect::<Vec<_>>(), ["p"]);
    }

    #[test]
    fn a_replica_holds_a_change_once_the_replicated_mark_covers_it() {
        let r = receiver();
        let incoming = |rev: &str, at: &str, op: &str| {
            let body = payload(op, "p", rev, at).to_string();
            let Verified::Change(incoming) = r.verify(&signed(&body, NOW), body.as_bytes(), NOW).unwrap() else { panic!("a change") };
            *incoming
        };
        let held = incoming("r2", "2026-11-27T10:00:05Z", "upsert").mark.clone();
        assert!(!Receiver::replicated(&incoming("r2", "2026-11-27T10:00:05Z", "upsert"), None), "nothing replicated yet");
        assert!(Receiver::replicated(&incoming("r2", "2026-11-27T10:00:05Z", "upsert"), Some(&held)));
        assert!(Receiver::replicated(&incoming("r1", "2026-11-27T10:00:00Z", "upsert"), Some(&held)), "an older one is covered");
        assert!(!Receiver::replicated(&incoming("r3", "2026-11-27T10:00:09Z", "upsert"), Some(&held)), "a newer one is not there yet");
        assert!(!Receiver::replicated(&incoming("r2", "2026-11-27T10:00:05Z", "delete"), Some(&held)), "its delete is not there yet");
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
    fn a_revision_time_beyond_the_skew_bound_is_refused_and_nothing_is_recorded() {
        let mut r = receiver();
        // NOW is 2027-01-15T08:00:00Z: two minutes ahead is the bound.
        let at_bound = payload("upsert", "p", "r1", "2027-01-15T08:02:00Z");
        assert_eq!(reject(&r, &payload("upsert", "p", "r2", "2027-01-15T08:02:01Z")), (400, "updatedAt".into(),
            "`updatedAt`: expected a revision time at most 120 s ahead of this clock, got a time 121 s in the future".into()));
        let (status, field, _) = reject(&r, &payload("delete", "p", "r9", "2099-01-01T00:00:00Z"));
        assert_eq!((status, field.as_str()), (400, "updatedAt"), "a delete from 2099 cannot freeze the document");
        assert!(r.is_untouched());
        assert_eq!(deliver(&mut r, &at_bound), Ok(AckStatus::Applied));
        // And a pulled document is held to the same bound.
        let pulled: SyncPayload = serde_json::from_value(payload("upsert", "q", "r1", "2099-01-01T00:00:00Z")).unwrap();
        let Step::Respond(reply) = r.begin_pulled(pulled, NOW) else { panic!("a future pulled document applied") };
        assert_eq!(reply.http_status, 400);
        assert!(reply.body.contains("updatedAt"));
    }

    #[test]
    fn routes_must_be_same_origin_paths_and_the_error_names_the_field() {
        let r = receiver();
        for (list, bad) in [("current", "https://evil.example/x"), ("previous", "/blog/../../admin"), ("invalidate", "/a\r\nset-cookie: x"), ("current", "//evil.example")] {
            let mut p = payload("upsert", "p", "r1", "2026-11-27T10:00:00Z");
            p["routes"] = json!({"invalidate": ["/ok"], "current": ["/ok"], "previous": ["/ok"]});
            p["routes"][list].as_array_mut().unwrap().push(json!(bad));
            let (status, field, message) = reject(&r, &p);
            assert_eq!((status, field.as_str()), (400, format!("routes.{list}[1]").as_str()), "{message}");
            assert!(message.contains("a path on the app's own origin"), "{message}");
            assert!(!message.contains("evil") && !message.contains("admin"), "never echoes: {message}");
        }
        assert!(r.is_untouched());
    }

    #[test]
    fn routes_of_dependents_are_held_to_the_same_rule_and_the_error_names_the_field() {
        let r = receiver();
        for bad in ["https://evil.example/x", "/blog/../../admin", "/a\r\nset-cookie: x", "//evil.example", "admin"] {
            let mut p = payload("upsert", "p", "r1", "2026-11-27T10:00:00Z");
            p["routes"] = json!({"invalidate": ["/ok"], "current": ["/ok"], "previous": []});
            p["dependents"] = json!({"documents": [
                {"id": "post-1", "type": "post", "routes": ["/blog/one"], "tags": []},
                {"id": "post-2", "type": "post", "routes": ["/blog/two", bad], "tags": []},
            ]});
            let (status, field, message) = reject(&r, &p);
            assert_eq!((status, field.as_str()), (400, "dependents.documents[1].routes[1]"), "{message}");
            assert!(message.starts_with("`dependents.documents[1].routes[1]`: expected a path on the app's own origin"), "{message}");
            assert!(!message.contains("evil") && !message.contains("admin"), "never echoes: {message}");
        }
        assert!(r.is_untouched(), "refused whole: nothing recorded");
        // Good dependents' routes pass.
        let mut p = payload("upsert", "p", "r1", "2026-11-27T10:00:00Z");
        p["dependents"] = json!({"documents": [{"id": "post-1", "type": "post", "routes": ["/blog/one", "/"], "tags": []}]});
        let mut r = receiver();
        assert_eq!(deliver(&mut r, &p), Ok(AckStatus::Applied));
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
        assert_eq!(change.id, "p");
        let failed = r.finish(ticket, Err("disk full".into()));
        assert_eq!(failed.http_status, 503);
        assert!(failed.body.contains("disk full") && failed.body.contains("retryable"));
        assert!(r.is_untouched(), "a failed apply records nothing");
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
    fn a_document_whose_change_is_being_applied_is_not_decided_again_until_it_finishes() {
        let mut r = receiver();
        let v1 = payload("upsert", "p", "r1", "2026-11-27T10:00:00Z").to_string();
        let Step::Apply { ticket, .. } = r.begin(&signed(&v1, NOW), v1.as_bytes(), NOW) else { panic!() };
        // The same change again, and a newer one: neither may start while the first is open.
        let v2 = payload("upsert", "p", "r2", "2026-11-27T10:00:05Z").to_string();
        for body in [&v1, &v2] {
            let Step::Respond(busy) = r.begin(&signed(body, NOW), body.as_bytes(), NOW) else { panic!("decided twice") };
            assert_eq!(busy.http_status, 503);
            assert!(busy.body.contains("being applied") && busy.body.contains("retryable"), "{}", busy.body);
        }
        // Another document is independent.
        let other = payload("upsert", "q", "r1", "2026-11-27T10:00:00Z").to_string();
        assert!(matches!(r.begin(&signed(&other, NOW), other.as_bytes(), NOW), Step::Apply { .. }));
        // Timed out (the handler says so): uncommitted, and the retry applies it, once.
        assert_eq!(r.finish(ticket, Err("the apply hook did not settle within 10000 ms".into())).http_status, 503);
        let Step::Apply { ticket, .. } = r.begin(&signed(&v1, NOW), v1.as_bytes(), NOW) else { panic!("the retry applies") };
        assert_eq!(r.finish(ticket, Ok(false)).http_status, 200);
        assert!(matches!(r.begin(&signed(&v1, NOW), v1.as_bytes(), NOW), Step::Respond(ref a) if a.body.contains("duplicate")));
    }

    #[test]
    fn intake_refuses_unsigned_and_oversized_bodies_before_holding_them() {
        let r = Receiver::new(ReceiverOptions { max_body_bytes: 1_024, ..ReceiverOptions::new(SECRET, "m1") }).unwrap();
        let Err(unsigned) = r.intake(&[("content-length".to_string(), "999999999".to_string())].into()) else { panic!() };
        assert_eq!(unsigned.http_status, 401, "no signature: refused before the body, whatever its size");
        let Err(garbled) = r.intake(&[(SIGNATURE_HEADER.to_string(), "v1=x".to_string())].into()) else { panic!() };
        assert_eq!(garbled.http_status, 401);
        let body = payload("upsert", "p", "r1", "2026-11-27T10:00:00Z").to_string();
        let mut headers = signed(&body, NOW);
        headers.insert("Content-Length".into(), "1025".into());
        let Err(declared) = r.intake(&headers) else { panic!() };
        assert_eq!(declared.http_status, 413);
        assert!(declared.body.contains("at most 1024 bytes"), "{}", declared.body);
        // Streamed: counted as it comes, refused as soon as it is over.
        let headers = signed(&body, NOW);
        let mut intake = r.intake(&headers).unwrap();
        intake.push(&[b' '; 1_000]).unwrap();
        assert_eq!(intake.push(&[b' '; 25]).unwrap_err().http_status, 413);
        // Within the cap: the MAC decides, chunk by chunk, exactly as `verify` does.
        let mut intake = r.intake(&headers).unwrap();
        for chunk in body.as_bytes().chunks(7) {
            intake.push(chunk).unwrap();
        }
        intake.finish().unwrap();
        let mut forged = r.intake(&headers).unwrap();
        forged.push(body.replace("r1", "r2").as_bytes()).unwrap();
        assert_eq!(forged.finish().unwrap_err().http_status, 401);
        assert!(r.verify(&headers, body.as_bytes(), NOW).is_ok());
        assert_eq!(r.verify(&headers, format!("{body:1100}").as_bytes(), NOW).unwrap_err().0, 413, "verify holds the cap too");
    }

    #[test]
    fn options_from_json_name_the_field() {
        let e = ReceiverOptions::from_json(&json!({"secret": SECRET})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("machineId"));
        let e = ReceiverOptions::from_json(&json!({"secret": SECRET, "machineId": "m", "maxAge": 3})).unwrap_err();
        assert!(e.message.contains("unknown setting"));
        let o = ReceiverOptions::from_json(&json!({"secret": SECRET, "machineId": "m", "maxAgeSeconds": 60})).unwrap();
        assert_eq!(o.max_age_ms, 60_000);
        assert_eq!((o.max_body_bytes, o.hook_timeout_ms), (DEFAULT_MAX_BODY_BYTES, DEFAULT_HOOK_TIMEOUT_MS));
        let o = ReceiverOptions::from_json(&json!({"secret": SECRET, "machineId": "m", "maxBodyBytes": 2048, "hookTimeoutMs": 250})).unwrap();
        assert_eq!(Receiver::new(o).unwrap().limits(), HandlerLimits { max_body_bytes: 2048, hook_timeout_ms: 250 });
        for (key, bad) in [("maxBodyBytes", json!(10)), ("hookTimeoutMs", json!(0)), ("hookTimeoutMs", json!("10s")), ("secret", json!(5))] {
            let mut o = json!({"secret": SECRET, "machineId": "m"});
            o[key] = bad;
            assert_eq!(ReceiverOptions::from_json(&o).unwrap_err().field.as_deref(), Some(key));
        }
    }

    #[test]
    fn options_are_validated() {
        let o = ReceiverOptions::new("short", "m");
        assert_eq!(Receiver::new(o).err().unwrap().field.as_deref(), Some("secret"));
    }

    #[test]
    fn the_secret_is_used_exactly_as_given_and_padding_is_a_configuration_error() {
        for padded in [format!(" {SECRET}"), format!("{SECRET}\n"), format!("{SECRET}\r\n"), format!("\t{SECRET}")] {
            let e = ReceiverOptions::from_json(&json!({"secret": padded, "machineId": "m"})).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("secret"));
            assert!(e.message.starts_with("`secret`: expected the FLY_SYNC_SECRET shared with the Function without surrounding spaces or line breaks"), "{}", e.message);
            assert!(!e.message.contains(SECRET), "never echoes the secret");
        }
        // Inner spaces are part of the secret, used as given on both sides.
        let inner = "0123456789 abcdef sync";
        let mut r = Receiver::new(ReceiverOptions::new(inner, "m")).unwrap();
        let body = payload("upsert", "p", "r1", "2026-11-27T10:00:00Z").to_string();
        let headers: Headers = [(SIGNATURE_HEADER.to_string(), signature::sign(body.as_bytes(), NOW, inner))].into();
        assert!(matches!(r.begin(&headers, body.as_bytes(), NOW), Step::Apply { .. }));
        let squeezed: Headers = [(SIGNATURE_HEADER.to_string(), signature::sign(body.as_bytes(), NOW, &inner.replace(' ', "")))].into();
        assert!(matches!(r.begin(&squeezed, body.as_bytes(), NOW), Step::Respond(ref a) if a.http_status == 401));
    }
}
