//! Catch-up and reconciliation for the receiver: pushes are the fast path, but a push can be lost (a run failed
//! after its retries, a Machine was stopped or suspended, a network blip). On boot and then every interval the
//! receiver asks Sanity for what changed since its high-water mark and which documents still exist, and applies
//! the answer through the same ordered, idempotent path as pushes.
//!
//! Sans-IO like the rest: this module writes the GROQ queries and reads their results (as JSON text, bounded in
//! depth like every input); the receiver's handler runs them and the app's hooks. A page is read first
//! (`page`: the ids it holds, its documents staged), then applied as one unit (`begin_staged`) while the
//! handler holds every one of those ids, so no push of the same documents interleaves with it.

use crate::change::{Op, Operation};
use crate::error::SyncError;
use crate::limits;
use crate::protocol::{self, Routes, SyncPayload, PROTOCOL};
use crate::receiver::{Incoming, Receiver, Step};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::HashSet;
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

impl CatchUpOptions {
    /// From `{types, lagSeconds?, pageSize?, maxPages?, projection?, queryTimeoutMs?}`.
    pub fn from_json(value: &Value) -> Result<CatchUpOptions, SyncError> {
        let obj = crate::json_read::Obj::root(value, "catchUp", "catchUp")?;
        obj.deny_unknown(&["types", "lagSeconds", "pageSize", "maxPages", "projection", "queryTimeoutMs"])?;
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
        CatchUp { options, mark: None, run: None }
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
            // A time beyond the skew bound is past any mark this run can set, so the next run reads it again.
            let ahead = limits::rfc3339_ms(&payload.updated_at).is_some_and(|ms| ms > now_ms.saturating_add(limits::MAX_FUTURE_SKEW_MS));
            match receiver.verify_pulled(payload, now_ms) {
                Ok(incoming) => {
                    run.newest = Some(run.newest.map_or(incoming.updated_ms(), |n| n.max(incoming.updated_ms())));
                    page.ids.push(incoming.id().to_string());
                    staged.push(incoming);
                }
                Err(e) => {
                    page.skipped.push(format!("{field}: {}", e.message));
                    run.complete &= ahead;
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
        assert!(p.skipped[0].starts_with("result[2]: `updatedAt`: expected a revision time at most 120 s ahead"), "{}", p.skipped[0]);
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
