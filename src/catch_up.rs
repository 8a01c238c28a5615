//! Catch-up and reconciliation for the receiver: pushes are the fast path, but a push can be lost (a run failed
//! after its retries, a Machine was stopped or suspended, a network blip). On boot and then every interval the
//! receiver asks Sanity for what changed since its high-water mark and which documents still exist, and applies
//! the answer through the same ordered, idempotent path as pushes.
//!
//! Sans-IO like the rest: this module writes the GROQ queries, reads their results (as JSON text, bounded in
//! depth like every input) and decides everything about a run — what a failed query means and whether to ask
//! again, what counts as a failure, when the high-water mark moves; the receiver's I/O layer
//! (src/wasm_receiver.rs) only runs the queries, holds documents and runs the app's hooks. A run is a loop of
//! `next` → do what it says → feed the outcome back (`answered`, `unit_next` / `unit_done`, `unit_blocked`) until
//! `next` says `Done`. A page is read first (its documents staged), then applied as one unit while the driver
//! holds every one of its ids, so no push of the same documents interleaves with it.

use crate::change::{Op, Operation};
use crate::error::SyncError;
use crate::limits;
use crate::protocol::{self, Routes, SyncPayload, PROTOCOL};
use crate::http::Response;
use crate::receiver::{Incoming, Mark, Receiver, Reply, Step};
use crate::redact::Redactor;
use crate::retry::{self, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, UNIX_EPOCH};

/// Published documents only: drafts and release versions never reach a live Machine.
const PUBLISHED: &str = r#"!(_id in path("drafts.**")) && !(_id in path("versions.**"))"#;

/// Default time a query to Sanity may take before the run fails (and is tried again at the next interval).
pub const DEFAULT_QUERY_TIMEOUT_MS: u64 = 30_000;

/// The largest query answer read (a page is read whole: a smaller `pageSize` keeps it under this).
pub const MAX_ANSWER_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct CatchUpOptions {
    pub types: Vec<String>,
    /// Re-read this far behind the mark: Sanity's query index can lag a write, and several writes share a second.
    pub lag_ms: u64,
    pub page_size: u32,
    pub max_pages: u32,
    /// A GROQ projection for the documents (`{...}` when none), to shape them like the Function's projection.
    pub projection: Option<String>,
    /// How long the handler waits for one query's answer.
    pub query_timeout_ms: u64,
}

const OPTION_KEYS: [&str; 6] = ["types", "lagSeconds", "pageSize", "maxPages", "projection", "queryTimeoutMs"];

impl CatchUpOptions {
    /// From `{types, lagSeconds?, pageSize?, maxPages?, projection?, queryTimeoutMs?}`.
    pub fn from_json(value: &Value) -> Result<CatchUpOptions, SyncError> {
        let obj = crate::json_read::Obj::root(value, "catchUp", "catchUp")?;
        obj.deny_unknown(&OPTION_KEYS)?;
        CatchUpOptions::read(&obj)
    }

    fn read(obj: &crate::json_read::Obj) -> Result<CatchUpOptions, SyncError> {
        let types = obj.str_list_opt("types")?.filter(|t| !t.is_empty());
        let types = types.ok_or_else(|| SyncError::expected(obj.field("types"), "the document types this app holds", "nothing"))?;
        let projection = obj.str_opt("projection")?.map(str::trim).map(String::from);
        if let Some(p) = &projection {
            if !(p.starts_with('{') && p.ends_with('}')) {
                return Err(SyncError::expected(obj.field("projection"), "a GROQ projection in braces, e.g. `{..., \"slug\": slug.current}`", "another value"));
            }
        }
        Ok(CatchUpOptions {
            types,
            lag_ms: obj.u64_opt("lagSeconds", 0, 86_400)?.unwrap_or(60) * 1000,
            page_size: obj.u64_opt("pageSize", 1, 10_000)?.unwrap_or(500) as u32,
            max_pages: obj.u64_opt("maxPages", 1, 100_000)?.unwrap_or(200) as u32,
            projection,
            query_timeout_ms: obj.u64_opt("queryTimeoutMs", 10, 600_000)?.unwrap_or(DEFAULT_QUERY_TIMEOUT_MS),
        })
    }
}

/// After the receiver's module faulted and was started over with empty state: whether to read everything again
/// now, as at boot. At most once per interval (`last_ms`: when the last such run began, if one did), so a fault
/// that lasts does not loop; a clock that stepped back before `last_ms` waits too.
pub fn recover_after_fault(last_ms: Option<u64>, now_ms: u64, interval_ms: u64) -> bool {
    last_ms.is_none_or(|last| now_ms.checked_sub(last).is_some_and(|since| since >= interval_ms))
}

/// Default API version of the built-in query client.
pub const DEFAULT_API_VERSION: &str = "2025-05-01";

/// Where a run's queries go: the app's own client (a `@sanity/client`), or Sanity's HTTP query API.
#[derive(Debug, Clone, PartialEq)]
pub enum QuerySource {
    Client,
    Http {
        /// `https://<projectId>.api.sanity.io/v<apiVersion>/data/query/<dataset>?perspective=published`
        url: String,
        /// A read token, for a private dataset (sent as a bearer token, shown nowhere).
        token: Option<String>,
    },
}

impl QuerySource {
    /// What keeps this source's secret (the read token) out of a run's errors, however an answer echoes it.
    pub fn redactor(&self) -> Redactor {
        match self {
            QuerySource::Http { token: Some(token), .. } => Redactor::new([token.as_str()]),
            _ => Redactor::default(),
        }
    }
}

/// Everything the receiver's `catchUp` option says: the run's options, where its queries go, how often.
#[derive(Debug, Clone)]
pub struct CatchUpSettings {
    pub options: CatchUpOptions,
    pub source: QuerySource,
    pub interval_ms: u64,
}

impl CatchUpSettings {
    /// From the receiver's `catchUp` option as the adapter passes it: the run's options, `intervalSeconds`, and
    /// `client: true` (the app passed its own client) or the settings of the built-in one (`projectId`,
    /// `dataset`, `apiVersion`, `token`, `apiHost`).
    pub fn from_json(value: &Value) -> Result<CatchUpSettings, SyncError> {
        let obj = crate::json_read::Obj::root(value, "catchUp", "catchUp")?;
        let mut keys = OPTION_KEYS.to_vec();
        keys.extend(["intervalSeconds", "client", "projectId", "dataset", "apiVersion", "token", "apiHost"]);
        obj.deny_unknown(&keys)?;
        let options = CatchUpOptions::read(&obj)?;
        let interval_ms = obj.u64_opt("intervalSeconds", 1, 86_400)?.unwrap_or(300) * 1000;
        let source = if obj.bool_opt("client")?.unwrap_or(false) {
            QuerySource::Client
        } else {
            let (Some(project), Some(dataset)) = (obj.str_opt("projectId")?, obj.str_opt("dataset")?) else {
                return Err(SyncError::expected(obj.field("client"), "a Sanity client, or `projectId` and `dataset`", "neither"));
            };
            let name = |field: &str, value: &str, extra: &[u8]| {
                let ok = !value.is_empty() && value.len() <= 64 && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b));
                if ok { Ok(()) } else { Err(SyncError::expected(obj.field(field), format!("a Sanity {field} (lowercase letters, digits{})", if extra.is_empty() { "" } else { ", `_` and `-`" }), "another value")) }
            };
            name("projectId", project, b"")?;
            name("dataset", dataset, b"_-")?;
            let version = obj.str_opt("apiVersion")?.unwrap_or(DEFAULT_API_VERSION);
            let dated = version.len() == 10 && version.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
            if !(dated || version == "1" || version == "X") {
                return Err(SyncError::expected(obj.field("apiVersion"), "an API version such as `2025-05-01`", "another value"));
            }
            let host = match obj.str_opt("apiHost")? {
                Some(host) => crate::config::base_url(&obj.field("apiHost"), host)?,
                None => format!("https://{project}.api.sanity.io"),
            };
            let token = obj.str_opt("token")?.map(String::from);
            QuerySource::Http { url: format!("{host}/v{version}/data/query/{dataset}?perspective=published"), token }
        };
        Ok(CatchUpSettings { options, source, interval_ms })
    }
}

/// A GROQ query and its parameters, to run against the dataset's published perspective within `timeoutMs`,
/// its answer read only up to `maxBytes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct Query {
    pub query: String,
    #[cfg_attr(test, ts(type = "Record<string, unknown>"))]
    pub params: Value,
    #[cfg_attr(test, ts(type = "number"))]
    pub timeout_ms: u64,
    #[cfg_attr(test, ts(type = "number"))]
    pub max_bytes: u64,
}

/// One page read: the ids of the documents staged to apply (`begin_staged`), the next page to read (when this
/// one was full), and what was skipped, with why.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Page {
    pub ids: Vec<String>,
    pub next: Option<Query>,
    pub skipped: Vec<String>,
}

/// Tombstones staged for documents Sanity no longer has (their ids), or why none were made.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Deletions {
    pub ids: Vec<String>,
    pub refused: Option<String>,
}

pub struct CatchUp {
    options: CatchUpOptions,
    /// Newest `_updatedAt` of a completed run.
    mark: Option<u64>,
    run: Option<Run>,
    /// The run under way, as `next` drives it.
    driven: Option<Driven>,
    /// Scrubs the query source's token from what a failed query's answer says, before it is read or quoted.
    redactor: Redactor,
}

struct Run {
    cursor: Option<(String, String)>,
    since: Option<String>,
    pages: u32,
    newest: Option<u64>,
    /// False once a document was skipped that a later run would not read again: the mark must then stay.
    complete: bool,
    /// Read and checked, to begin as one unit.
    staged: Vec<Incoming>,
    /// When the ids query was handed out (our clock).
    ids_asked_ms: Option<u64>,
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn no_run() -> SyncError {
    SyncError::fatal("no catch-up run is under way (call start first)")
}

impl CatchUp {
    pub fn new(options: CatchUpOptions) -> Self {
        CatchUp { options, mark: None, run: None, driven: None, redactor: Redactor::default() }
    }

    /// Keep these secrets (the query source's token: `QuerySource::redactor`) out of every error of a run.
    pub fn redacting(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// Start from a mark recorded before (a durable store, after a restart): the next run reads only what
    /// changed since it, less the lag. A mark further ahead than this clock allows is ignored.
    pub fn restore_mark(&mut self, mark_ms: u64, now_ms: u64) {
        if mark_ms <= now_ms.saturating_add(limits::MAX_FUTURE_SKEW_MS) {
            self.mark = Some(mark_ms);
        }
    }

    /// The high-water mark in ms, for the store.
    pub fn mark_ms(&self) -> Option<u64> {
        self.mark
    }

    /// The lag a run re-reads behind the mark.
    pub fn lag_ms(&self) -> u64 {
        self.options.lag_ms
    }

    /// The high-water mark: the newest `_updatedAt` every change up to which has been applied.
    pub fn mark(&self) -> Option<String> {
        self.mark.map(rfc3339)
    }

    /// Begin a run; the first page's query. With no mark yet (boot) it reads every document of the types.
    pub fn start(&mut self) -> Query {
        let since = self.mark.map(|m| rfc3339(m.saturating_sub(self.options.lag_ms)));
        let run = Run { cursor: None, since, pages: 0, newest: None, complete: true, staged: Vec::new(), ids_asked_ms: None };
        let query = self.page_query(&run);
        self.run = Some(run);
        query
    }

    fn page_query(&self, run: &Run) -> Query {
        let mut filter = format!("_type in $types && {PUBLISHED}");
        let mut params = json!({"types": self.options.types, "limit": self.options.page_size});
        if let Some(since) = &run.since {
            filter.push_str(" && dateTime(_updatedAt) >= dateTime($since)");
            params["since"] = json!(since);
        }
        if let Some((at, id)) = &run.cursor {
            filter.push_str(" && (dateTime(_updatedAt) > dateTime($cursorAt) || (_updatedAt == $cursorAt && _id > $cursorId))");
            params["cursorAt"] = json!(at);
            params["cursorId"] = json!(id);
        }
        let projection = self.options.projection.as_deref().unwrap_or("");
        let query = format!("*[{filter}] | order(_updatedAt asc, _id asc) [0...$limit] {projection}");
        Query { query, params, timeout_ms: self.options.query_timeout_ms, max_bytes: MAX_ANSWER_BYTES }
    }

    /// A page came back: `text` is the query's result as JSON text, or the whole HTTP answer (`{"result": …}`)
    /// when `enveloped`. The whole page is read and checked before anything is staged; a document that cannot
    /// be applied (not a document, or a revision time beyond the skew bound) is skipped with the reason.
    pub fn page(&mut self, receiver: &Receiver, text: &str, enveloped: bool, now_ms: u64) -> Result<Page, SyncError> {
        let docs: Vec<&RawValue> = read_result(text, enveloped, "a list of documents")?;
        let mut run = self.run.take().ok_or_else(no_run)?;
        let mut page = Page { ids: Vec::new(), next: None, skipped: Vec::new() };
        let mut staged = Vec::new();
        let mut last: Option<(String, String)> = None;
        for (i, doc) in docs.iter().enumerate() {
            let field = format!("result[{i}]");
            let payload = match pulled_payload(&field, doc) {
                Ok(p) => p,
                Err(e) => {
                    page.skipped.push(format!("{field}: {}", e.message));
                    run.complete = false;
                    continue;
                }
            };
            last = Some((payload.updated_at.clone(), payload.id.clone()));
            // The revision time, named as the page has it (the receiver checks it again, as `updatedAt`).
            if let Err(e) = limits::revision_ms(&format!("{field}._updatedAt"), &payload.updated_at, now_ms) {
                page.skipped.push(format!("{field}: {}", e.message));
                // A time beyond the skew bound is past any mark this run can set, so the next run reads it again;
                // one that does not parse would not be, once the mark passed it.
                run.complete &= limits::rfc3339_ms(&payload.updated_at).is_some();
                continue;
            }
            match receiver.verify_pulled(payload, now_ms) {
                Ok(incoming) => {
                    run.newest = Some(run.newest.map_or(incoming.updated_ms(), |n| n.max(incoming.updated_ms())));
                    page.ids.push(incoming.id().to_string());
                    staged.push(incoming);
                }
                Err(e) => {
                    page.skipped.push(format!("{field}: {}", e.message));
                    run.complete = false;
                }
            }
        }
        run.pages += 1;
        run.staged = staged;
        let full = docs.len() as u32 >= self.options.page_size;
        if let Some(cursor) = last.filter(|_| full && run.pages < self.options.max_pages) {
            run.cursor = Some(cursor);
            page.next = Some(self.page_query(&run));
        }
        self.run = Some(run);
        Ok(page)
    }

    /// Begin what the last `page` or `deletions` staged, as one unit (the handler holds their ids meanwhile).
    pub fn begin_staged(&mut self, receiver: &mut Receiver) -> Vec<Step> {
        let staged = self.run.as_mut().map(|run| std::mem::take(&mut run.staged)).unwrap_or_default();
        staged.into_iter().map(|incoming| receiver.begin_change(incoming)).collect()
    }

    /// Every id of the types that Sanity still has, asked at `now_ms`.
    pub fn ids_query(&mut self, now_ms: u64) -> Query {
        if let Some(run) = self.run.as_mut() {
            run.ids_asked_ms = Some(now_ms);
        }
        let query = format!("*[_type in $types && {PUBLISHED}]._id");
        Query { query, params: json!({"types": self.options.types}), timeout_ms: self.options.query_timeout_ms, max_bytes: MAX_ANSWER_BYTES }
    }

    /// Stage tombstones for what this Machine holds and Sanity no longer has (`text`: the ids query's result).
    /// An empty answer while documents are held is refused: a private dataset read without a token, or a wrong
    /// dataset, looks exactly like that. A document held at a revision made shortly before the ids were asked
    /// (within the lag, which covers the query index catching up and the clocks' skew) is left for the next
    /// run: the ids may predate it (a push created it after the query), and a tombstone would delete it here.
    pub fn deletions(&mut self, receiver: &Receiver, text: &str, enveloped: bool, now_ms: u64) -> Result<Deletions, SyncError> {
        let ids: Vec<Value> = read_result(text, enveloped, "a list of document ids")?;
        let run = self.run.as_mut().ok_or_else(no_run)?;
        let remote: HashSet<&str> = ids.iter().filter_map(Value::as_str).collect();
        let types: HashSet<&str> = self.options.types.iter().map(String::as_str).collect();
        let settled_before = run.ids_asked_ms.unwrap_or(now_ms).saturating_sub(self.options.lag_ms);
        let mut gone: Vec<String> = receiver
            .live_ids()
            .filter(|id| !remote.contains(id))
            .filter(|id| receiver.held(id).is_some_and(|(t, _, _)| types.contains(t)))
            .filter(|id| receiver.held_since_ms(id).is_some_and(|ms| ms < settled_before))
            .map(String::from)
            .collect();
        if remote.is_empty() && !gone.is_empty() {
            let why = format!(
                "Sanity returned no documents of types {:?} while this Machine holds {}; not deleting them (check the dataset, the read token and the types)",
                self.options.types,
                gone.len()
            );
            return Ok(Deletions { ids: vec![], refused: Some(why) });
        }
        gone.sort();
        let mut staged = Vec::new();
        for (id, (doc_type, rev, updated_at)) in gone.iter().filter_map(|id| Some((id, receiver.held(id)?))) {
            // The last revision held, deleted: at the same instant a delete wins, so the tombstone applies.
            staged.push(receiver.verify_pulled(pulled(Op::Delete, id, doc_type, rev, updated_at), now_ms)?);
        }
        run.staged = staged;
        Ok(Deletions { ids: gone, refused: None })
    }

    /// The run is over. The mark moves to the newest document seen only if every change was applied (and
    /// nothing was skipped that a later run would not read again), so a failed apply is read again next time.
    pub fn finish(&mut self, all_applied: bool) {
        if let Some(run) = self.run.take() {
            if all_applied && run.complete {
                if let Some(newest) = run.newest {
                    self.mark = Some(self.mark.map_or(newest, |m| m.max(newest)));
                }
            }
        }
    }
}

/// Attempts per query, the first included: a query that timed out, met a network error or a 408/429/5xx is asked
/// again inside the run after a backoff (at least the answer's `Retry-After`); anything else fails the run, which
/// the next interval starts over.
pub const QUERY_ATTEMPTS: u32 = 3;

/// What a run did, as the app's `onRun` gets it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    pub applied: u32,
    pub deleted: u32,
    /// Read again and already held (the same revision, or an older one).
    pub unchanged: u32,
    pub failed: Vec<FailedChange>,
    /// Documents of a page that could not be applied, each with why.
    pub skipped: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub refused_deletions: Option<String>,
    pub queries: u32,
    /// What the run read from: changes since this time (the mark less the lag), or `null` for everything (no
    /// mark: a first boot, or a restart with the memory store).
    pub since: Option<String>,
    /// The high-water mark after the run.
    pub mark: Option<String>,
    /// Why the run could not finish (it is tried again at the next interval).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub error: Option<String>,
    /// Under LiteFS, on a replica: the primary's name. A replica reads nothing from Sanity (the primary catches
    /// up, and its changes replicate here).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub replica_of: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct FailedChange {
    pub id: String,
    pub error: String,
}

/// What the driver does next in a run (`CatchUp::next`).
#[derive(Debug, Clone, PartialEq)]
pub enum RunStep {
    /// Run this query against the dataset's published perspective; feed the outcome to `answered`.
    Query(Query),
    /// Nothing to do before this instant (a query's backoff); then `next` again.
    Wait { until_ms: u64 },
    /// Hold these documents, waiting at most `wait_ms` for changes of them already under way; then `unit_next`
    /// until it says the unit is over, or `unit_blocked` when they could not be held in time.
    Apply { ids: Vec<String>, wait_ms: u64 },
    Done(RunResult),
}

/// How a query went, as the driver saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryOutcome {
    /// The answer's text: the query's result, or the whole HTTP answer when `enveloped`.
    Answer { text: String, enveloped: bool },
    /// No usable answer: a status other than 2xx (with a little of its body), a timeout or a network error.
    Failed(Response),
    /// The answer ran over the query's `maxBytes`; the driver stopped reading it.
    TooLarge,
    /// The app's own client could not run the query (`status`: the HTTP status it reports, if any).
    Client { message: String, status: Option<u16> },
    /// An answer that cannot be read at all (its result could not be passed on as JSON, or is not UTF-8): asking
    /// again gives the same.
    Unreadable(String),
}

/// How the app's hooks went for one change.
#[derive(Debug, Clone, PartialEq)]
pub enum HookOutcome {
    Done { restart: bool },
    Failed(String),
    /// A hook did not settle within its time (`message` says which).
    TimedOut(String),
}

impl HookOutcome {
    /// What `Receiver::finish` takes: success (with the restart asked for) or why not.
    pub fn into_result(self) -> Result<bool, String> {
        match self {
            HookOutcome::Done { restart } => Ok(restart),
            HookOutcome::Failed(message) | HookOutcome::TimedOut(message) => Err(message),
        }
    }
}

/// What follows a unit.
enum Then {
    Query(Query),
    Ids,
    Finish,
}

enum Stage {
    Query { query: Query, ids: bool, attempts: u32, not_before: u64 },
    Unit { ids: Vec<String>, then: Then, begun: Option<Begun> },
    Over,
}

/// A unit whose changes were decided: what is left to hand out, and who holds which ticket.
struct Begun {
    queue: VecDeque<(String, Step)>,
    /// Each ticket's document, and whether it is a delete.
    tickets: HashMap<u32, (String, bool)>,
    stopped: Option<String>,
}

struct Driven {
    stage: Stage,
    result: RunResult,
    rng: fastrand::Rng,
    wait_ms: u64,
}

fn tried_again(error: &SyncError, attempts: u32) -> String {
    if attempts > 1 { format!("{} (asked {attempts} times)", error.message) } else { error.message.clone() }
}

impl CatchUp {
    /// Whether a run is under way.
    pub fn running(&self) -> bool {
        self.driven.is_some()
    }

    /// Begin a run at `now_ms` (nothing when one is under way: the caller joins it). `hold_wait_ms`: how long a
    /// unit waits for changes of its documents already under way (the hooks' timeout).
    pub fn begin(&mut self, now_ms: u64, hold_wait_ms: u64) {
        if self.driven.is_some() {
            return;
        }
        let query = self.start();
        let since = self.run.as_ref().and_then(|r| r.since.clone());
        self.driven = Some(Driven {
            stage: Stage::Query { query, ids: false, attempts: 0, not_before: now_ms },
            result: RunResult { since, ..RunResult::default() },
            rng: fastrand::Rng::with_seed(now_ms),
            wait_ms: hold_wait_ms,
        });
    }

    /// Begin a LiteFS replica's run: no query; what the primary recorded (`marks`, read from the replicated store)
    /// that this Machine has not purged its caches for yet is staged as one unit (the driver runs `invalidate`
    /// only, since the content is replicated already). `primary` names the primary in the result.
    pub fn begin_replica(&mut self, receiver: &Receiver, marks: Vec<(String, Mark)>, primary: String, now_ms: u64, hold_wait_ms: u64) {
        if self.driven.is_some() {
            return;
        }
        let mut staged = Vec::new();
        let mut skipped = Vec::new();
        for (id, mark) in marks.into_iter().filter(|(id, mark)| !receiver.covers(id, mark)) {
            let op = if mark.deleted { Op::Delete } else { Op::Upsert };
            let mut payload = pulled(op, &id, &mark.doc_type, &mark.rev, &mark.updated_at);
            payload.idempotency_key = format!("replica:{}:{id}:{}", if mark.deleted { "delete" } else { "upsert" }, mark.rev);
            payload.routes = Routes { invalidate: mark.routes.clone(), current: if mark.deleted { vec![] } else { mark.routes.clone() }, previous: vec![] };
            if !mark.deleted {
                // The document itself is in the replicated database; the change names it.
                let named = json!({"_id": id, "_type": mark.doc_type, "_rev": mark.rev, "_updatedAt": mark.updated_at}).to_string();
                payload.document = RawValue::from_string(named).ok();
            }
            match receiver.verify_replicated(payload, now_ms) {
                Ok(incoming) => staged.push(incoming),
                Err(e) => skipped.push(format!("{id}: {}", e.message)),
            }
        }
        let ids = staged.iter().map(|i| i.id().to_string()).collect();
        self.run = Some(Run { cursor: None, since: None, pages: 0, newest: None, complete: false, staged, ids_asked_ms: None });
        self.driven = Some(Driven {
            stage: Stage::Unit { ids, then: Then::Finish, begun: None },
            result: RunResult { replica_of: Some(primary), skipped, ..RunResult::default() },
            rng: fastrand::Rng::with_seed(now_ms),
            wait_ms: hold_wait_ms,
        });
    }

    /// What to do next in the run under way (`Done` ends it and moves the mark, or not).
    pub fn next(&mut self, now_ms: u64) -> RunStep {
        let Some(driven) = self.driven.as_mut() else {
            return RunStep::Done(RunResult { error: Some(no_run().message), mark: self.mark(), ..RunResult::default() });
        };
        match &driven.stage {
            Stage::Query { not_before, .. } if *not_before > now_ms => RunStep::Wait { until_ms: *not_before },
            Stage::Query { query, .. } => RunStep::Query(query.clone()),
            Stage::Unit { ids, .. } => RunStep::Apply { ids: ids.clone(), wait_ms: driven.wait_ms },
            Stage::Over => {
                let mut result = self.driven.take().map(|d| d.result).unwrap_or_default();
                self.finish(result.error.is_none() && result.failed.is_empty());
                result.mark = self.mark();
                RunStep::Done(result)
            }
        }
    }

    /// The outcome of the query `next` handed out. A readable answer stages its documents (or tombstones); a
    /// transient failure is asked again after a backoff, up to `QUERY_ATTEMPTS`; anything else ends the run.
    pub fn answered(&mut self, receiver: &Receiver, outcome: QueryOutcome, now_ms: u64) {
        let Some(Driven { stage: Stage::Query { query, ids, attempts, .. }, .. }) = self.driven.as_mut() else { return };
        let (query, ids, attempts) = (query.clone(), *ids, *attempts + 1);
        let driven = self.driven.as_mut().expect("checked above");
        driven.result.queries += 1;
        let retry = |error: SyncError, min_delay_ms: Option<u64>, driven: &mut Driven| {
            if attempts < QUERY_ATTEMPTS {
                let at = now_ms + retry::backoff_ms(attempts, &mut driven.rng, min_delay_ms);
                driven.stage = Stage::Query { query: query.clone(), ids, attempts, not_before: at };
            } else {
                driven.result.error = Some(tried_again(&error, attempts));
                driven.stage = Stage::Over;
            }
        };
        let what = "the query to Sanity";
        // Another party's words, scrubbed of the token before anything reads, shortens or quotes them.
        let outcome = match outcome {
            QueryOutcome::Failed(response) => QueryOutcome::Failed(self.redactor.scrub_response(response)),
            QueryOutcome::Client { mut message, status } => {
                self.redactor.scrub_in_place(&mut message);
                QueryOutcome::Client { message, status }
            }
            QueryOutcome::Unreadable(mut why) => {
                self.redactor.scrub_in_place(&mut why);
                QueryOutcome::Unreadable(why)
            }
            answer => answer,
        };
        match outcome {
            QueryOutcome::Answer { text, enveloped } => self.read_answer(receiver, &text, enveloped, ids, now_ms),
            QueryOutcome::Failed(Response::Timeout) => {
                retry(SyncError::retryable(format!("{what} did not answer within {} ms", query.timeout_ms)), None, driven)
            }
            QueryOutcome::Failed(response) => match retry::classify(&response, what, now_ms) {
                Verdict::Retry { error, min_delay_ms, .. } => retry(error, min_delay_ms, driven),
                Verdict::Fail(error) => {
                    driven.result.error = Some(error.message);
                    driven.stage = Stage::Over;
                }
                Verdict::Success(_) => {
                    driven.result.error = Some(format!("{what}: a successful answer was reported as a failure"));
                    driven.stage = Stage::Over;
                }
            },
            QueryOutcome::TooLarge => {
                driven.result.error =
                    Some(format!("the query answer is over {} bytes, the most a page is read at once: lower catchUp.pageSize", query.max_bytes));
                driven.stage = Stage::Over;
            }
            QueryOutcome::Unreadable(why) => {
                driven.result.error = Some(format!("{what} answered what cannot be read: {why}"));
                driven.stage = Stage::Over;
            }
            QueryOutcome::Client { message, status } => {
                let error = SyncError::retryable(format!("{what} failed: {}", crate::error::shorten(&message, 300)));
                match status {
                    Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => {
                        driven.result.error = Some(error.message);
                        driven.stage = Stage::Over;
                    }
                    _ => retry(error, None, driven),
                }
            }
        }
    }

    fn read_answer(&mut self, receiver: &Receiver, text: &str, enveloped: bool, ids: bool, now_ms: u64) {
        let read = if ids {
            self.deletions(receiver, text, enveloped, now_ms).map(|d| (d.ids, Then::Finish, Vec::new(), d.refused))
        } else {
            self.page(receiver, text, enveloped, now_ms).map(|p| {
                let then = p.next.map_or(Then::Ids, Then::Query);
                (p.ids, then, p.skipped, None)
            })
        };
        let driven = self.driven.as_mut().expect("a run is under way");
        match read {
            Ok((ids, then, skipped, refused)) => {
                driven.result.skipped.extend(skipped);
                if refused.is_some() {
                    driven.result.refused_deletions = refused;
                }
                driven.stage = Stage::Unit { ids, then, begun: None };
            }
            Err(e) => {
                driven.result.error = Some(e.message);
                driven.stage = Stage::Over;
            }
        }
    }

    /// The unit's documents could not be held in time: the run ends, and the next interval tries again.
    pub fn unit_blocked(&mut self) {
        if let Some(run) = self.run.as_mut() {
            run.staged.clear();
        }
        if let Some(driven) = self.driven.as_mut() {
            driven.result.error = Some(format!(
                "documents of this page are still being applied by a push (waited {} ms); the run is tried again",
                driven.wait_ms
            ));
            driven.stage = Stage::Over;
        }
    }

    /// While the unit's documents are held: the next change whose hooks to run (`(ticket, change)`), or `None`
    /// when the unit is over (then `next`). Changes already held are counted unchanged; after a hook timed out,
    /// the rest of the unit is left for the next run (counted failed, the mark stays).
    pub fn unit_next(&mut self, receiver: &mut Receiver, now_ms: u64) -> Option<(u32, Box<SyncPayload>)> {
        if matches!(&self.driven, Some(Driven { stage: Stage::Unit { begun: None, .. }, .. })) {
            let staged = self.run.as_mut().map(|run| std::mem::take(&mut run.staged)).unwrap_or_default();
            let queue = staged.into_iter().map(|incoming| (incoming.id().to_string(), receiver.begin_change(incoming))).collect();
            if let Some(Driven { stage: Stage::Unit { begun, .. }, .. }) = self.driven.as_mut() {
                *begun = Some(Begun { queue, tickets: HashMap::new(), stopped: None });
            }
        }
        let Some(Driven { stage: Stage::Unit { begun: Some(begun), .. }, result, .. }) = self.driven.as_mut() else { return None };
        while let Some((id, step)) = begun.queue.pop_front() {
            match step {
                Step::Respond(reply) if reply.http_status >= 300 => result.failed.push(FailedChange { id, error: reply_error(&reply) }),
                Step::Respond(_) => result.unchanged += 1,
                Step::Apply { ticket, change } => match &begun.stopped {
                    Some(why) => {
                        receiver.finish(ticket, Err(why.clone()));
                        result.failed.push(FailedChange { id, error: why.clone() });
                    }
                    None => {
                        begun.tickets.insert(ticket, (id, change.op == Op::Delete));
                        return Some((ticket, change));
                    }
                },
                // A pulled document is a change to apply, never sync tags nor a refresh (only a push after a pull
                // is one): refused, not applied.
                Step::Tags { ticket, .. } | Step::Refresh { ticket, .. } => {
                    let error = "a pulled document read as sync tags or a refresh".to_string();
                    receiver.finish(ticket, Err(error.clone()));
                    result.failed.push(FailedChange { id, error });
                }
            }
        }
        // The unit is over: what follows it.
        let Some(Driven { stage, .. }) = self.driven.as_mut() else { return None };
        let Stage::Unit { then, .. } = std::mem::replace(stage, Stage::Over) else { return None };
        let next = match then {
            Then::Query(query) => Stage::Query { query, ids: false, attempts: 0, not_before: now_ms },
            Then::Ids => Stage::Query { query: self.ids_query(now_ms), ids: true, attempts: 0, not_before: now_ms },
            Then::Finish => Stage::Over,
        };
        if let Some(driven) = self.driven.as_mut() {
            driven.stage = next;
        }
        None
    }

    /// The hooks of `ticket` (handed out by `unit_next`) are over: the receiver's reply, counted.
    pub fn unit_done(&mut self, receiver: &mut Receiver, ticket: u32, outcome: HookOutcome) -> Reply {
        let timed_out = matches!(outcome, HookOutcome::TimedOut(_));
        let reply = receiver.finish(ticket, outcome.into_result());
        if let Some(Driven { stage: Stage::Unit { begun: Some(begun), .. }, result, .. }) = self.driven.as_mut() {
            let (id, delete) = begun.tickets.remove(&ticket).unwrap_or_default();
            if reply.http_status >= 300 {
                result.failed.push(FailedChange { id, error: reply_error(&reply) });
            } else if delete {
                result.deleted += 1;
            } else {
                result.applied += 1;
            }
            if timed_out {
                begun.stopped = Some("not applied: a hook of this run timed out before it".into());
            }
        }
        reply
    }
}

/// The error message of a refusing reply (`{"error": …}`).
fn reply_error(reply: &Reply) -> String {
    serde_json::from_str::<Value>(&reply.body).ok().and_then(|v| v.get("error").and_then(Value::as_str).map(String::from)).unwrap_or_else(|| reply.body.clone())
}

/// A query's result as a list of `T`, read from `text` bounded in size and depth; `enveloped`: `text` is the
/// HTTP answer.
fn read_result<'a, T: Deserialize<'a>>(text: &'a str, enveloped: bool, expected: &'static str) -> Result<Vec<T>, SyncError> {
    if text.len() as u64 > MAX_ANSWER_BYTES {
        let expected = format!("a query answer of at most {MAX_ANSWER_BYTES} bytes (a smaller catchUp.pageSize keeps a page under it)");
        return Err(SyncError::expected("result", expected, "a larger one"));
    }
    protocol::check_depth("result", text, expected)?;
    let expects = move |field: &str| match field {
        "" => Some(expected),
        _ => None,
    };
    if enveloped {
        #[derive(Deserialize)]
        struct Answer<'a> {
            #[serde(borrow)]
            result: &'a RawValue,
        }
        protocol::check_object("result", text, "a query answer (`{\"result\": …}`)")?;
        let answer: Answer = protocol::read_flat("result", text, &|field| match field {
            "" => Some("a query answer (`{\"result\": …}`)"),
            "result" => Some(expected),
            _ => None,
        })?;
        return protocol::read_flat("result", answer.result.get(), &expects);
    }
    protocol::read_flat("result", text, &expects)
}

/// The fields of a document from Sanity that its payload needs.
#[derive(Deserialize)]
struct PulledDoc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(rename = "_type")]
    doc_type: String,
    #[serde(rename = "_rev")]
    rev: String,
    #[serde(rename = "_updatedAt")]
    updated_at: String,
    #[serde(default)]
    slug: Option<Value>,
    #[serde(default)]
    locale: Option<Value>,
    #[serde(default)]
    language: Option<Value>,
    #[serde(default)]
    market: Option<Value>,
}

fn pulled_doc_expects(field: &str) -> Option<&'static str> {
    Some(match field {
        "" => "a document (JSON object)",
        "_id" => "the document id",
        "_type" => "the document type",
        "_rev" => "the revision",
        "_updatedAt" => "an RFC 3339 time",
        _ => return None,
    })
}

/// A document from Sanity as a sync payload (routes unknown: the app derives them from the document), its text
/// carried as it came.
fn pulled_payload(field: &str, raw: &RawValue) -> Result<SyncPayload, SyncError> {
    protocol::check_object(field, raw.get(), "a document (JSON object)")?;
    let doc: PulledDoc = protocol::read_typed(&format!("{field}."), field, raw.get(), &pulled_doc_expects)?;
    for (key, value) in [("_id", &doc.id), ("_type", &doc.doc_type), ("_rev", &doc.rev), ("_updatedAt", &doc.updated_at)] {
        if value.trim().is_empty() {
            return Err(SyncError::expected(format!("{field}.{key}"), pulled_doc_expects(key).unwrap_or("a string"), "an empty string"));
        }
    }
    let text = |v: Option<Value>| v.and_then(|v| v.as_str().map(String::from));
    let slug = match doc.slug {
        Some(Value::String(s)) => Some(s),
        Some(Value::Object(o)) => o.get("current").and_then(Value::as_str).map(String::from),
        _ => None,
    };
    Ok(SyncPayload {
        slug,
        locale: text(doc.locale.or(doc.language)),
        market: text(doc.market),
        document: Some(raw.to_owned()),
        ..pulled(Op::Upsert, &doc.id, &doc.doc_type, &doc.rev, &doc.updated_at)
    })
}

/// The payload of a pulled document or a tombstone (docs/protocol.md, "Reconciliation payloads"), without the
/// document and the fields read from it.
fn pulled(op: Op, id: &str, doc_type: &str, rev: &str, updated_at: &str) -> SyncPayload {
    let (operation, key) = match op {
        Op::Upsert => (Operation::Unknown, "upsert"),
        Op::Delete => (Operation::Delete, "delete"),
    };
    SyncPayload {
        protocol: PROTOCOL.to_string(),
        target: "catch-up".to_string(),
        op,
        operation,
        id: id.to_string(),
        doc_type: doc_type.to_string(),
        rev: rev.to_string(),
        updated_at: updated_at.to_string(),
        slug: None,
        previous_slug: None,
        routes: Routes::default(),
        tags: vec![id.to_string(), doc_type.to_string()],
        dependents: None,
        locale: None,
        market: None,
        document: None,
        idempotency_key: format!("pull:{key}:{id}:{rev}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::ReceiverOptions;

    /// 2026-11-27T12:00:00Z: after every document below.
    const NOW: u64 = 1_795_780_800_000;

    fn receiver() -> Receiver {
        Receiver::new(ReceiverOptions { max_age_ms: 1, remember_keys: 100, ..ReceiverOptions::new("0123456789abcdef-x", "m") }).unwrap()
    }

    fn catch_up(page_size: u64) -> CatchUp {
        CatchUp::new(CatchUpOptions::from_json(&json!({"types": ["page"], "lagSeconds": 60, "pageSize": page_size})).unwrap())
    }

    fn doc(id: &str, rev: &str, at: &str) -> Value {
        json!({"_id": id, "_type": "page", "_rev": rev, "_updatedAt": at, "slug": {"current": id}, "title": rev})
    }

    /// Read a page and begin it, as the handler does (under the lock of its ids).
    fn page(c: &mut CatchUp, r: &mut Receiver, docs: &Value) -> (Page, Vec<Step>) {
        let page = c.page(r, &docs.to_string(), false, NOW).unwrap();
        let steps = c.begin_staged(r);
        (page, steps)
    }

    /// Apply every step, as the handler does when the hooks succeed; the number applied.
    fn apply(r: &mut Receiver, steps: &[Step]) -> usize {
        steps.iter().filter(|s| matches!(s, Step::Apply { .. })).map(|s| if let Step::Apply { ticket, .. } = s { r.finish(*ticket, Ok(false)) } else { unreachable!() }).count()
    }

    /// Drive a whole run as the I/O layer does: queries answered by `answer(query, attempt)`, every unit held at
    /// once, hooks by `hook`. Returns the result and what happened, in order.
    fn drive(
        c: &mut CatchUp,
        r: &mut Receiver,
        mut answer: impl FnMut(&Query) -> QueryOutcome,
        mut hook: impl FnMut(&SyncPayload) -> HookOutcome,
    ) -> (RunResult, Vec<String>) {
        let mut now = NOW;
        let mut log = Vec::new();
        c.begin(now, 10_000);
        for _ in 0..1000 {
            match c.next(now) {
                RunStep::Query(q) => {
                    log.push(if q.query.ends_with("._id") { "ids".to_string() } else { format!("page since={}", q.params["since"]) });
                    let outcome = answer(&q);
                    c.answered(r, outcome, now);
                }
                RunStep::Wait { until_ms } => {
                    assert!(until_ms > now, "a wait moves time on");
                    log.push(format!("wait {}", until_ms - now));
                    now = until_ms;
                }
                RunStep::Apply { ids, .. } => {
                    log.push(format!("hold {ids:?}"));
                    while let Some((ticket, change)) = c.unit_next(r, now) {
                        let outcome = hook(&change);
                        log.push(format!("hooks {} {:?}", change.id, outcome));
                        c.unit_done(r, ticket, outcome);
                    }
                }
                RunStep::Done(result) => return (result, log),
            }
        }
        panic!("the run did not end: {log:?}")
    }

    fn list(docs: &[Value]) -> QueryOutcome {
        QueryOutcome::Answer { text: Value::Array(docs.to_vec()).to_string(), enveloped: false }
    }

    fn ids(docs: &[Value]) -> QueryOutcome {
        QueryOutcome::Answer { text: json!(docs.iter().map(|d| d["_id"].clone()).collect::<Vec<_>>()).to_string(), enveloped: false }
    }

    fn sanity(docs: Vec<Value>) -> impl FnMut(&Query) -> QueryOutcome {
        move |q| if q.query.ends_with("._id") { ids(&docs) } else { list(&docs) }
    }

    const OK: fn(&SyncPayload) -> HookOutcome = |_| HookOutcome::Done { restart: false };

    #[test]
    fn a_driven_run_reads_pages_then_ids_applies_each_unit_and_moves_the_mark() {
        let (mut r, mut c) = (receiver(), catch_up(2));
        let docs = vec![doc("a", "r1", "2026-11-27T10:00:00Z"), doc("b", "r1", "2026-11-27T10:01:00Z"), doc("c", "r1", "2026-11-27T10:02:00Z")];
        let paged = |pages: Vec<Value>| {
            move |q: &Query| match (q.query.ends_with("._id"), q.params.get("cursorId")) {
                (true, _) => ids(&pages),
                (false, None) => list(&pages[..2]),
                (false, Some(_)) => list(&pages[2..]),
            }
        };
        let (result, log) = drive(&mut c, &mut r, paged(docs.clone()), OK);
        assert_eq!(log[0], "page since=null", "no mark: everything");
        assert_eq!(log.iter().filter(|l| l.starts_with("hold")).count(), 3, "two pages and the deletions, each held as a unit: {log:?}");
        assert_eq!((result.applied, result.deleted, result.unchanged, result.queries), (3, 0, 0, 3));
        assert_eq!((result.since, result.mark.as_deref(), result.error), (None, Some("2026-11-27T10:02:00Z"), None));
        // The next run reads from the mark less the lag, and what it reads again is unchanged.
        let (again, log) = drive(&mut c, &mut r, paged(docs), OK);
        assert_eq!(log[0], "page since=\"2026-11-27T10:01:00Z\"");
        assert_eq!((again.applied, again.unchanged, again.since.as_deref()), (0, 3, Some("2026-11-27T10:01:00Z")));
    }

    #[test]
    fn transient_query_failures_are_asked_again_after_a_backoff_then_the_run_fails_and_the_mark_stays() {
        let (mut r, mut c) = (receiver(), catch_up(500));
        let docs = vec![doc("a", "r1", "2026-11-27T10:00:00Z")];
        // A timeout, then a 503 asking for 7 s: both asked again; the third attempt answers.
        let mut n = 0;
        let docs2 = docs.clone();
        let (result, log) = drive(&mut c, &mut r, move |q| {
            n += 1;
            match n {
                1 => QueryOutcome::Failed(Response::Timeout),
                2 => QueryOutcome::Failed(Response::Http { status: 503, headers: vec![("retry-after".into(), "7".into())], body: String::new() }),
                _ => sanity(docs2.clone())(q),
            }
        }, OK);
        let waits: Vec<u64> = log.iter().filter_map(|l| l.strip_prefix("wait ")?.parse().ok()).collect();
        assert_eq!(waits.len(), 2, "{log:?}");
        assert!(waits[1] >= 7_000, "Retry-After is honoured: {waits:?}");
        assert_eq!((result.applied, result.queries, result.error), (1, 4, None));
        // Always failing: three attempts, then the run ends with why, and the mark does not move.
        let (mut r, mut c) = (receiver(), catch_up(500));
        let (result, log) = drive(&mut c, &mut r, |_| QueryOutcome::Failed(Response::Timeout), OK);
        assert_eq!(log.iter().filter(|l| l.starts_with("page")).count(), QUERY_ATTEMPTS as usize);
        assert_eq!(result.error.as_deref(), Some("the query to Sanity did not answer within 30000 ms (asked 3 times)"));
        assert_eq!((result.mark, result.queries), (None, 3));
    }

    #[test]
    fn a_failed_querys_answer_that_echoes_the_read_token_is_scrubbed_before_it_reaches_the_runs_error() {
        const TOKEN: &str = "skR3adT0kenAbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
        let settings = CatchUpSettings::from_json(&json!({"types": ["page"], "projectId": "abc123", "dataset": "production", "token": TOKEN})).unwrap();
        // Echoed whole; cut by the body's own shortening (its message is read to 200 characters, the token starts at
        // 180); in a network message; by the app's client. Each ends the run with an error, never the token.
        let long = format!("{}{TOKEN}", "x".repeat(180));
        for outcome in [
            QueryOutcome::Failed(Response::json(401, &json!({"message": format!("token {TOKEN} is not valid")}).to_string())),
            QueryOutcome::Failed(Response::json(403, &json!({"error": long}).to_string())),
            QueryOutcome::Failed(Response::json(500, &json!({"message": format!("upstream saw Bearer {TOKEN}")}).to_string())),
            QueryOutcome::Failed(Response::Network { message: format!("fetch failed: Bearer {}", &TOKEN[..20]) }),
            QueryOutcome::Client { message: format!("bad token {TOKEN}"), status: Some(401) },
            QueryOutcome::Unreadable(format!("the answer quotes {TOKEN}")),
        ] {
            let mut r = receiver();
            let mut c = CatchUp::new(settings.options.clone()).redacting(settings.source.redactor());
            let once = outcome.clone();
            let (result, _) = drive(&mut c, &mut r, move |_| once.clone(), OK);
            let error = result.error.expect("the run failed");
            assert!(error.contains(crate::redact::REDACTED), "{outcome:?} → {error}");
            assert!(!error.contains(&TOKEN[..crate::redact::MIN_ECHO]), "{outcome:?} → {error}");
        }
        // Without a token nothing is redacted.
        assert_eq!(QuerySource::Client.redactor().scrub("skR3adT0kenAbCdEf"), "skR3adT0kenAbCdEf");
    }

    #[test]
    fn after_a_fault_everything_is_read_again_at_once_but_at_most_once_per_interval() {
        let interval = CatchUpSettings::from_json(&json!({"types": ["page"], "client": true})).unwrap().interval_ms;
        assert_eq!(interval, 300_000, "the default interval");
        assert!(recover_after_fault(None, NOW, interval), "the first fault: at once");
        assert!(!recover_after_fault(Some(NOW), NOW + 1_000, interval), "another fault soon after: no loop");
        assert!(!recover_after_fault(Some(NOW), NOW + interval - 1, interval));
        assert!(recover_after_fault(Some(NOW), NOW + interval, interval), "one interval later: again");
        assert!(!recover_after_fault(Some(NOW), NOW - 5_000, interval), "a clock stepped back: wait");
    }

    #[test]
    fn refused_queries_end_the_run_at_once() {
        for (outcome, expected) in [
            (QueryOutcome::Failed(Response::json(401, r#"{"error":"Unauthorized"}"#)), "the query to Sanity: HTTP 401 credentials refused: Unauthorized"),
            (QueryOutcome::Failed(Response::json(404, "{}")), "the query to Sanity: HTTP 404 not found"),
            (QueryOutcome::TooLarge, "the query answer is over 268435456 bytes, the most a page is read at once: lower catchUp.pageSize"),
            (QueryOutcome::Client { message: "dataset not found".into(), status: Some(404) }, "the query to Sanity failed: dataset not found"),
            (QueryOutcome::Unreadable("nested too deeply to serialise".into()), "the query to Sanity answered what cannot be read: nested too deeply to serialise"),
        ] {
            let (mut r, mut c) = (receiver(), catch_up(500));
            let once = outcome.clone();
            let (result, log) = drive(&mut c, &mut r, move |_| once.clone(), OK);
            assert_eq!(log.len(), 1, "asked once: {log:?}");
            assert_eq!(result.error.as_deref(), Some(expected));
        }
        // A client error without a status (a network failure inside the client) is asked again.
        let (mut r, mut c) = (receiver(), catch_up(500));
        let (result, _) = drive(&mut c, &mut r, |_| QueryOutcome::Client { message: "socket hang up".into(), status: None }, OK);
        assert_eq!(result.error.as_deref(), Some("the query to Sanity failed: socket hang up (asked 3 times)"));
    }

    #[test]
    fn a_failed_hook_is_counted_failed_and_holds_the_mark_and_a_timed_out_one_stops_the_unit() {
        let docs = vec![doc("a", "r1", "2026-11-27T10:00:00Z"), doc("b", "r1", "2026-11-27T10:00:00Z"), doc("c", "r1", "2026-11-27T10:00:00Z")];
        let (mut r, mut c) = (receiver(), catch_up(500));
        let (result, _) = drive(&mut c, &mut r, sanity(docs.clone()), |ch| {
            if ch.id == "b" { HookOutcome::Failed("store unavailable".into()) } else { HookOutcome::Done { restart: false } }
        });
        assert_eq!(result.applied, 2);
        assert_eq!(result.failed, [FailedChange { id: "b".into(), error: "the app could not apply b: store unavailable".into() }]);
        assert_eq!(result.mark, None, "not everything applied: the mark stays");
        // A hook that timed out: the rest of the unit is not started, and waits for the next run.
        let (mut r, mut c) = (receiver(), catch_up(500));
        let (result, log) = drive(&mut c, &mut r, sanity(docs.clone()), |ch| {
            if ch.id == "a" { HookOutcome::TimedOut("the apply hook did not settle within 10000 ms".into()) } else { HookOutcome::Done { restart: false } }
        });
        assert_eq!(log.iter().filter(|l| l.starts_with("hooks")).count(), 1, "b and c were not started: {log:?}");
        assert_eq!(result.failed.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(result.failed[1].error, "not applied: a hook of this run timed out before it");
        assert_eq!((result.applied, result.mark.as_deref()), (0, None));
        let (next, _) = drive(&mut c, &mut r, sanity(docs), OK);
        assert_eq!((next.applied, next.mark.as_deref()), (3, Some("2026-11-27T10:00:00Z")));
    }

    #[test]
    fn a_unit_that_cannot_be_held_ends_the_run_and_stages_nothing() {
        let (r, mut c) = (receiver(), catch_up(500));
        c.begin(NOW, 250);
        let RunStep::Query(q) = c.next(NOW) else { panic!() };
        c.answered(&r, list(&[doc("a", "r1", "2026-11-27T10:00:00Z")]), NOW);
        assert!(matches!(c.next(NOW), RunStep::Apply { ref ids, wait_ms: 250 } if ids == &["a"]), "{q:?}");
        c.unit_blocked();
        let RunStep::Done(result) = c.next(NOW) else { panic!() };
        assert_eq!(result.error.as_deref(), Some("documents of this page are still being applied by a push (waited 250 ms); the run is tried again"));
        assert_eq!(result.mark, None);
        assert!(r.is_untouched());
        assert!(!c.running());
    }

    #[test]
    fn a_replica_run_stages_what_the_primary_recorded_and_this_machine_has_not_purged_for() {
        let (mut r, mut c) = (receiver(), catch_up(500));
        // This Machine purged for a@r1 and o@r1 (pushes reached it).
        c.start();
        let (_, steps) = page(&mut c, &mut r, &json!([doc("a", "r1", "2026-11-27T10:00:00Z"), doc("o", "r1", "2026-11-27T10:00:00Z")]));
        apply(&mut r, &steps);
        c.finish(true);
        let mark = |rev: &str, at: &str, deleted: bool| {
            let ms = limits::rfc3339_ms(at).unwrap();
            Mark { updated_ms: ms, rev: rev.into(), deleted, doc_type: "page".into(), updated_at: at.into(), routes: vec![format!("/{rev}")], pulled: false }
        };
        // The primary recorded a@r2 (a push this replica missed), q deleted, and o@r1 (already purged for).
        let recorded = vec![
            ("a".to_string(), mark("r2", "2026-11-27T11:00:00Z", false)),
            ("q".to_string(), mark("r5", "2026-11-27T11:00:00Z", true)),
            ("o".to_string(), mark("r1", "2026-11-27T10:00:00Z", false)),
        ];
        c.begin_replica(&r, recorded.clone(), "primary-1".into(), NOW, 1_000);
        let RunStep::Apply { ids, .. } = c.next(NOW) else { panic!("a unit to purge for") };
        assert_eq!(ids, ["a", "q"], "not o: this Machine purged for it already");
        let mut seen = Vec::new();
        while let Some((ticket, change)) = c.unit_next(&mut r, NOW) {
            seen.push((change.id.clone(), change.op, change.routes.invalidate.clone()));
            c.unit_done(&mut r, ticket, HookOutcome::Done { restart: false });
        }
        assert_eq!(seen, [("a".to_string(), Op::Upsert, vec!["/r2".to_string()]), ("q".to_string(), Op::Delete, vec!["/r5".to_string()])]);
        let RunStep::Done(result) = c.next(NOW) else { panic!() };
        assert_eq!((result.applied, result.deleted, result.queries, result.replica_of.as_deref()), (1, 1, 0, Some("primary-1")));
        assert_eq!(result.mark.as_deref(), Some("2026-11-27T10:00:00Z"), "a replica's run does not move the mark");
        // Purged for: the next run has nothing to do.
        c.begin_replica(&r, recorded, "primary-1".into(), NOW, 1_000);
        assert!(matches!(c.next(NOW), RunStep::Apply { ref ids, .. } if ids.is_empty()));
    }

    #[test]
    fn a_restored_mark_starts_the_next_run_from_it_and_a_future_one_is_ignored() {
        let (mut r, mut c) = (receiver(), catch_up(500));
        c.restore_mark(limits::rfc3339_ms("2026-11-27T10:00:00Z").unwrap(), NOW);
        let (result, log) = drive(&mut c, &mut r, sanity(vec![doc("a", "r2", "2026-11-27T11:00:00Z")]), OK);
        assert_eq!(log[0], "page since=\"2026-11-27T09:59:00Z\"", "the restored mark less the lag");
        assert_eq!((result.applied, result.mark.as_deref()), (1, Some("2026-11-27T11:00:00Z")));
        let mut future = catch_up(500);
        future.restore_mark(NOW + limits::MAX_FUTURE_SKEW_MS + 1, NOW);
        assert_eq!(future.mark(), None);
    }

    #[test]
    fn settings_name_the_query_source_and_refuse_what_is_missing_or_malformed() {
        let read = |v: Value| CatchUpSettings::from_json(&v);
        let s = read(json!({"types": ["page"], "client": true, "intervalSeconds": 5})).unwrap();
        assert_eq!((s.source, s.interval_ms), (QuerySource::Client, 5_000));
        let s = read(json!({"types": ["page"], "projectId": "abc123", "dataset": "production", "token": "sk-read"})).unwrap();
        assert_eq!(s.source, QuerySource::Http {
            url: "https://abc123.api.sanity.io/v2025-05-01/data/query/production?perspective=published".into(),
            token: Some("sk-read".into()),
        });
        assert_eq!(s.interval_ms, 300_000);
        let s = read(json!({"types": ["page"], "projectId": "p", "dataset": "d", "apiHost": "http://127.0.0.1:9/", "apiVersion": "X"})).unwrap();
        assert!(matches!(s.source, QuerySource::Http { ref url, token: None } if url == "http://127.0.0.1:9/vX/data/query/d?perspective=published"));
        for (bad, field) in [
            (json!({"types": ["page"]}), "catchUp.client"),
            (json!({"types": ["page"], "projectId": "p"}), "catchUp.client"),
            (json!({"types": ["page"], "projectId": "P!", "dataset": "d"}), "catchUp.projectId"),
            (json!({"types": ["page"], "projectId": "p", "dataset": "d/x"}), "catchUp.dataset"),
            (json!({"types": ["page"], "projectId": "p", "dataset": "d", "apiVersion": "latest"}), "catchUp.apiVersion"),
            (json!({"types": ["page"], "projectId": "p", "dataset": "d", "apiHost": "ftp://x"}), "catchUp.apiHost"),
            (json!({"types": [], "client": true}), "catchUp.types"),
            (json!({"types": ["page"], "client": true, "intervalSeconds": 0}), "catchUp.intervalSeconds"),
        ] {
            assert_eq!(read(bad.clone()).unwrap_err().field.as_deref(), Some(field), "{bad}");
        }
        let e = read(json!({"types": ["page"], "client": true, "interval": 5})).unwrap_err();
        assert!(e.message.contains("unknown setting"), "{}", e.message);
    }

    #[test]
    fn boot_reads_everything_then_only_changes_since_the_mark_minus_lag() {
        let (mut r, mut c) = (receiver(), catch_up(500));
        let q = c.start();
        assert!(!q.query.contains("$since"), "no mark: everything");
        assert_eq!(q.params["types"], json!(["page"]));
        assert_eq!(q.timeout_ms, DEFAULT_QUERY_TIMEOUT_MS);
        let (p, steps) = page(&mut c, &mut r, &json!([doc("a", "r1", "2026-11-27T10:00:00Z"), doc("b", "r1", "2026-11-27T10:05:00Z")]));
        assert!(p.next.is_none());
        assert_eq!(p.ids, ["a", "b"]);
        assert_eq!(apply(&mut r, &steps), 2);
        c.finish(true);
        assert_eq!(c.mark().as_deref(), Some("2026-11-27T10:05:00Z"));
        let q = c.start();
        assert_eq!(q.params["since"], "2026-11-27T10:04:00Z", "mark minus the lag");
        // Re-reading a held revision changes nothing; a newer one applies.
        let (_, steps) = page(&mut c, &mut r, &json!([doc("b", "r1", "2026-11-27T10:05:00Z"), doc("a", "r2", "2026-11-27T10:06:00Z")]));
        assert_eq!(apply(&mut r, &steps), 1);
        assert!(matches!(&steps[0], Step::Respond(reply) if reply.body.contains("duplicate")));
    }

    #[test]
    fn full_pages_continue_from_a_cursor_and_failures_hold_the_mark() {
        let (mut r, mut c) = (receiver(), catch_up(2));
        c.start();
        let (p, _) = page(&mut c, &mut r, &json!([doc("a", "r", "2026-11-27T10:00:00Z"), doc("b", "r", "2026-11-27T10:00:00Z")]));
        let next = p.next.expect("a full page asks for the next one");
        assert_eq!((next.params["cursorAt"].as_str(), next.params["cursorId"].as_str()), (Some("2026-11-27T10:00:00Z"), Some("b")));
        c.finish(false);
        assert_eq!(c.mark(), None, "not everything applied: the mark stays");
    }

    #[test]
    fn deletions_make_tombstones_and_refuse_an_empty_answer() {
        let (mut r, mut c) = (receiver(), catch_up(500));
        c.start();
        let (_, steps) = page(&mut c, &mut r, &json!([doc("a", "r1", "2026-11-27T10:00:00Z"), doc("b", "r1", "2026-11-27T10:00:00Z")]));
        apply(&mut r, &steps);
        c.ids_query(NOW);
        let refused = c.deletions(&r, "[]", false, NOW).unwrap();
        assert!(refused.ids.is_empty() && refused.refused.unwrap().contains("not deleting"));
        assert!(c.begin_staged(&mut r).is_empty());
        let d = c.deletions(&r, r#"["a"]"#, false, NOW).unwrap();
        assert_eq!(d.ids, ["b"]);
        let steps = c.begin_staged(&mut r);
        assert!(matches!(&steps[..], [Step::Apply { change, .. }] if change.op == Op::Delete && change.id == "b" && change.idempotency_key == "pull:delete:b:r1"));
        apply(&mut r, &steps);
        assert_eq!(r.live_ids().collect::<Vec<_>>(), ["a"]);
        // The tombstone holds against a late push of the old revision.
        let (_, late) = page(&mut c, &mut r, &json!([doc("b", "r1", "2026-11-27T10:00:00Z")]));
        assert_eq!(apply(&mut r, &late), 0);
    }

    #[test]
    fn a_document_newer_than_the_ids_answer_is_not_tombstoned() {
        let (mut r, mut c) = (receiver(), catch_up(500));
        c.start();
        // `fresh` was created (and pushed) a moment before the ids were asked: the answer may not list it yet.
        let (_, steps) = page(&mut c, &mut r, &json!([doc("old", "r1", "2026-11-27T10:00:00Z"), doc("fresh", "r1", "2026-11-27T11:59:30Z")]));
        apply(&mut r, &steps);
        c.ids_query(NOW);
        let d = c.deletions(&r, r#"["unrelated"]"#, false, NOW).unwrap();
        assert_eq!(d.ids, ["old"], "only what was held well before the ids were asked");
    }

    #[test]
    fn bad_options_and_bad_documents() {
        assert_eq!(CatchUpOptions::from_json(&json!({})).unwrap_err().field.as_deref(), Some("catchUp.types"));
        assert!(CatchUpOptions::from_json(&json!({"types": ["a"], "projection": "slug"})).unwrap_err().message.contains("braces"));
        assert_eq!(CatchUpOptions::from_json(&json!({"types": ["a"], "queryTimeoutMs": 0})).unwrap_err().field.as_deref(), Some("catchUp.queryTimeoutMs"));
        let (mut r, mut c) = (receiver(), catch_up(500));
        c.start();
        let (p, steps) = page(&mut c, &mut r, &json!([{"_id": "x"}, {"_id": 5, "_type": "page", "_rev": "r", "_updatedAt": "2026-11-27T10:00:00Z"}, "text"]));
        assert_eq!(p.skipped, [
            "result[0]: `result[0]._type`: expected the document type, got nothing (the field is missing)",
            "result[1]: `result[1]._id`: expected the document id, got a number",
            "result[2]: `result[2]`: expected a document (JSON object), got a string",
        ]);
        assert!(steps.is_empty());
        assert_eq!(c.page(&r, r#"{"not": "a list"}"#, false, NOW).unwrap_err().message, "`result`: expected a list of documents, got an object");
        c.finish(true);
        assert_eq!(c.mark(), None, "skipped documents hold the mark");
        assert!(c.page(&r, "[]", false, NOW).unwrap_err().message.contains("no catch-up run"), "an error, not a panic");
    }

    #[test]
    fn a_deep_page_is_refused_whole_and_stages_nothing() {
        let (mut r, mut c) = (receiver(), catch_up(500));
        c.start();
        let deep = format!("[{}, {{\"_id\": \"x\", \"deep\": {}1{}}}]", doc("a", "r1", "2026-11-27T10:00:00Z"), "[".repeat(10_000), "]".repeat(10_000));
        let e = c.page(&r, &deep, false, NOW).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("result"));
        assert!(e.message.contains("nested at most 128 levels deep"), "{}", e.message);
        assert!(c.begin_staged(&mut r).is_empty(), "nothing of the page was staged");
        assert!(r.is_untouched());
        let e = c.deletions(&r, &format!("{}\"a\"{}", "[".repeat(10_000), "]".repeat(10_000)), false, NOW).unwrap_err();
        assert!(e.message.contains("nested at most 128 levels deep"), "{}", e.message);
    }

    #[test]
    fn a_future_revision_is_skipped_with_its_reason_and_the_mark_never_passes_now_plus_skew() {
        let (mut r, mut c) = (receiver(), catch_up(500));
        c.start();
        let (p, steps) = page(&mut c, &mut r, &json!([doc("a", "r1", "2026-11-27T10:00:00Z"), doc("soon", "r1", "2026-11-27T12:01:00Z"), doc("frozen", "r9", "2099-01-01T00:00:00Z")]));
        assert_eq!(p.ids, ["a", "soon"], "within the skew bound is fine");
        assert_eq!(p.skipped.len(), 1);
        assert!(p.skipped[0].starts_with("result[2]: `result[2]._updatedAt`: expected a revision time at most 120 s ahead"), "{}", p.skipped[0]);
        assert_eq!(apply(&mut r, &steps), 2);
        c.finish(true);
        // The future document will be read again by every run (its time is past any mark), so it does not hold
        // the mark; and the mark is the newest accepted time, never beyond now + skew.
        assert_eq!(c.mark().as_deref(), Some("2026-11-27T12:01:00Z"));
        assert!(limits::rfc3339_ms(&c.mark().unwrap()).unwrap() <= NOW + limits::MAX_FUTURE_SKEW_MS);
        assert!(r.held("frozen").is_none());
    }

    #[test]
    fn documents_keep_their_exact_text_and_an_enveloped_answer_is_read_too() {
        let (mut r, mut c) = (receiver(), catch_up(500));
        c.start();
        let text = r#"{"ms":3,"query":"*","result":[{"_id":"a","_type":"page","_rev":"r1","_updatedAt":"2026-11-27T10:00:00Z","n":9007199254740993,"__proto__":{"x":1},"language":"de","slug":"a-slug"}]}"#;
        let p = c.page(&r, text, true, NOW).unwrap();
        assert_eq!(p.ids, ["a"]);
        let steps = c.begin_staged(&mut r);
        let [Step::Apply { change, .. }] = &steps[..] else { panic!("{steps:?}") };
        assert_eq!(change.document.as_deref().unwrap().get(),
            r#"{"_id":"a","_type":"page","_rev":"r1","_updatedAt":"2026-11-27T10:00:00Z","n":9007199254740993,"__proto__":{"x":1},"language":"de","slug":"a-slug"}"#);
        assert_eq!((change.slug.as_deref(), change.locale.as_deref(), change.target.as_str()), (Some("a-slug"), Some("de"), "catch-up"));
        assert_eq!(c.page(&r, r#"{"error":"x"}"#, true, NOW).unwrap_err().field.as_deref(), Some("result"));
    }
}
