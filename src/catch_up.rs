//! Catch-up and reconciliation for the receiver: pushes are the fast path, but a push can be lost (a run failed
//! after its retries, a Machine was stopped or suspended, a network blip). On boot and then every interval the
//! receiver asks Sanity for what changed since its high-water mark and which documents still exist, and applies
//! the answer through the same ordered, idempotent path as pushes (`Receiver::begin_pulled`).
//!
//! Sans-IO like the rest: this module writes the GROQ queries and reads their results; the receiver's handler
//! runs them and the app's hooks.

use crate::error::{kind_of, SyncError};
use crate::event::rfc3339_ms;
use crate::json_read::Obj;
use crate::protocol::PROTOCOL;
use crate::receiver::{Receiver, Step};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, UNIX_EPOCH};

/// Published documents only: drafts and release versions never reach a live Machine.
const PUBLISHED: &str = r#"!(_id in path("drafts.**")) && !(_id in path("versions.**"))"#;

#[derive(Debug, Clone)]
pub struct CatchUpOptions {
    pub types: Vec<String>,
    /// Re-read this far behind the mark: Sanity's query index can lag a write, and several writes share a second.
    pub lag_ms: u64,
    pub page_size: u32,
    pub max_pages: u32,
    /// A GROQ projection for the documents (`{...}` when none), to shape them like the Function's projection.
    pub projection: Option<String>,
}

impl CatchUpOptions {
    /// From `{types, lagSeconds?, pageSize?, maxPages?, projection?}`.
    pub fn from_json(value: &Value) -> Result<CatchUpOptions, SyncError> {
        let obj = Obj::root(value, "catchUp", "catchUp")?;
        obj.deny_unknown(&["types", "lagSeconds", "pageSize", "maxPages", "projection"])?;
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
        })
    }
}

/// A GROQ query and its parameters, to run against the dataset's published perspective.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Query {
    pub query: String,
    #[cfg_attr(test, ts(type = "Record<string, unknown>"))]
    pub params: Value,
}

/// One page's outcome: changes to apply, and the next page to read (when this one was full).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Page {
    pub steps: Vec<Step>,
    pub next: Option<Query>,
    /// Documents in the page that could not be read as documents (left for the next run).
    pub skipped: Vec<String>,
}

/// Tombstones for documents Sanity no longer has, or why none were made.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Deletions {
    pub steps: Vec<Step>,
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
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
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
        self.run = Some(Run { cursor: None, since, pages: 0, newest: None });
        self.page_query()
    }

    fn page_query(&self) -> Query {
        let run = self.run.as_ref().expect("a run is under way");
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
        Query { query: format!("*[{filter}] | order(_updatedAt asc, _id asc) [0...$limit] {projection}"), params }
    }

    /// A page came back (the query's `result`): begin applying each document, and say what to read next.
    pub fn page(&mut self, receiver: &mut Receiver, result: &Value) -> Result<Page, SyncError> {
        let docs = result.as_array().ok_or_else(|| SyncError::expected("result", "a list of documents", kind_of(result)))?;
        let mut steps = Vec::new();
        let mut skipped = Vec::new();
        let mut last: Option<(String, String)> = None;
        for (i, doc) in docs.iter().enumerate() {
            match pulled_payload(doc) {
                Ok((payload, at, id)) => {
                    if let Some(ms) = rfc3339_ms(&at) {
                        let run = self.run.as_mut().expect("a run is under way");
                        run.newest = Some(run.newest.map_or(ms, |n| n.max(ms)));
                    }
                    last = Some((at, id));
                    steps.push(receiver.begin_pulled(payload));
                }
                Err(e) => skipped.push(format!("result[{i}]: {}", e.message)),
            }
        }
        let run = self.run.as_mut().expect("a run is under way");
        run.pages += 1;
        let full = docs.len() as u32 >= self.options.page_size;
        let next = match last {
            Some(cursor) if full && run.pages < self.options.max_pages => {
                run.cursor = Some(cursor);
                Some(self.page_query())
            }
            _ => None,
        };
        Ok(Page { steps, next, skipped })
    }

    /// Every id of the types that Sanity still has.
    pub fn ids_query(&self) -> Query {
        Query { query: format!("*[_type in $types && {PUBLISHED}]._id"), params: json!({"types": self.options.types}) }
    }

    /// Tombstones for what this Machine holds and Sanity no longer has. An empty answer while documents are
    /// held is refused: a private dataset read without a token, or a wrong dataset, looks exactly like that.
    pub fn deletions(&self, receiver: &mut Receiver, result: &Value) -> Result<Deletions, SyncError> {
        let ids = result.as_array().ok_or_else(|| SyncError::expected("result", "a list of document ids", kind_of(result)))?;
        let remote: HashSet<&str> = ids.iter().filter_map(Value::as_str).collect();
        let types: HashSet<&str> = self.options.types.iter().map(String::as_str).collect();
        let mut gone: Vec<String> = receiver
            .live_ids()
            .filter(|id| !remote.contains(id))
            .filter(|id| receiver.held(id).is_some_and(|(t, _, _)| types.contains(t)))
            .map(String::from)
            .collect();
        if remote.is_empty() && !gone.is_empty() {
            let why = format!(
                "Sanity returned no documents of types {:?} while this Machine holds {}; not deleting them (check the dataset, the read token and the types)",
                self.options.types,
                gone.len()
            );
            return Ok(Deletions { steps: vec![], refused: Some(why) });
        }
        gone.sort();
        let steps = gone
            .iter()
            .map(|id| {
                let (doc_type, rev, updated_at) = receiver.held(id).expect("live");
                // The last revision held, deleted: at the same instant a delete wins, so the tombstone applies.
                let payload = json!({"protocol": PROTOCOL, "target": "catch-up", "op": "delete", "operation": "delete", "id": id,
                    "type": doc_type, "rev": rev, "updatedAt": updated_at, "slug": null, "previousSlug": null,
                    "routes": {"invalidate": [], "current": [], "previous": []}, "tags": [id, doc_type],
                    "locale": null, "market": null, "idempotencyKey": format!("pull:delete:{id}:{rev}")});
                receiver.begin_pulled(payload)
            })
            .collect();
        Ok(Deletions { steps, refused: None })
    }

    /// The run is over. The mark moves to the newest document seen only if every change was applied, so a
    /// failed apply is read again next time.
    pub fn finish(&mut self, all_applied: bool) {
        if let Some(run) = self.run.take() {
            if all_applied {
                if let Some(newest) = run.newest {
                    self.mark = Some(self.mark.map_or(newest, |m| m.max(newest)));
                }
            }
        }
    }
}

/// A document from Sanity as a sync payload (routes unknown: the app derives them from the document).
fn pulled_payload(doc: &Value) -> Result<(Value, String, String), SyncError> {
    let obj = Obj::root(doc, "", "document")?;
    let id = obj.str_req("_id", "the document id")?.to_string();
    let doc_type = obj.str_req("_type", "the document type")?.to_string();
    let rev = obj.str_req("_rev", "the revision")?.to_string();
    let at = obj.str_req("_updatedAt", "an RFC 3339 time")?.to_string();
    let slug = match doc.get("slug") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => o.get("current").and_then(Value::as_str).map(String::from),
        _ => None,
    };
    let payload = json!({"protocol": PROTOCOL, "target": "catch-up", "op": "upsert", "operation": "unknown", "id": id,
        "type": doc_type, "rev": rev, "updatedAt": at, "slug": slug, "previousSlug": null,
        "routes": {"invalidate": [], "current": [], "previous": []}, "tags": [id, doc_type],
        "locale": doc.get("locale").or_else(|| doc.get("language")).filter(|v| v.is_string()), "market": doc.get("market").filter(|v| v.is_string()),
        "document": doc, "idempotencyKey": format!("pull:upsert:{id}:{rev}")});
    Ok((payload, at, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::ReceiverOptions;

    fn receiver() -> Receiver {
        Receiver::new(ReceiverOptions { secret: "0123456789abcdef-x".into(), machine_id: "m".into(), max_age_ms: 1, accept_drafts: false, remember_keys: 100 }).unwrap()
    }

    fn catch_up(page_size: u64) -> CatchUp {
        CatchUp::new(CatchUpOptions::from_json(&json!({"types": ["page"], "lagSeconds": 60, "pageSize": page_size})).unwrap())
    }

    fn doc(id: &str, rev: &str, at: &str) -> Value {
        json!({"_id": id, "_type": "page", "_rev": rev, "_updatedAt": at, "slug": {"current": id}, "title": rev})
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
        let page = c.page(&mut r, &json!([doc("a", "r1", "2026-11-27T10:00:00Z"), doc("b", "r1", "2026-11-27T10:05:00Z")])).unwrap();
        assert!(page.next.is_none());
        assert_eq!(apply(&mut r, &page.steps), 2);
        c.finish(true);
        assert_eq!(c.mark().as_deref(), Some("2026-11-27T10:05:00Z"));
        let q = c.start();
        assert_eq!(q.params["since"], "2026-11-27T10:04:00Z", "mark minus the lag");
        // Re-reading a held revision changes nothing; a newer one applies.
        let page = c.page(&mut r, &json!([doc("b", "r1", "2026-11-27T10:05:00Z"), doc("a", "r2", "2026-11-27T10:06:00Z")])).unwrap();
        assert_eq!(apply(&mut r, &page.steps), 1);
        assert!(matches!(&page.steps[0], Step::Respond(reply) if reply.body.contains("duplicate")));
    }

    #[test]
    fn full_pages_continue_from_a_cursor_and_failures_hold_the_mark() {
        let (mut r, mut c) = (receiver(), catch_up(2));
        c.start();
        let page = c.page(&mut r, &json!([doc("a", "r", "2026-11-27T10:00:00Z"), doc("b", "r", "2026-11-27T10:00:00Z")])).unwrap();
        let next = page.next.expect("a full page asks for the next one");
        assert_eq!((next.params["cursorAt"].as_str(), next.params["cursorId"].as_str()), (Some("2026-11-27T10:00:00Z"), Some("b")));
        c.finish(false);
        assert_eq!(c.mark(), None, "not everything applied: the mark stays");
    }

    #[test]
    fn deletions_make_tombstones_and_refuse_an_empty_answer() {
        let (mut r, mut c) = (receiver(), catch_up(500));
        c.start();
        let page = c.page(&mut r, &json!([doc("a", "r1", "2026-11-27T10:00:00Z"), doc("b", "r1", "2026-11-27T10:00:00Z")])).unwrap();
        apply(&mut r, &page.steps);
        let refused = c.deletions(&mut r, &json!([])).unwrap();
        assert!(refused.steps.is_empty() && refused.refused.unwrap().contains("not deleting"));
        let d = c.deletions(&mut r, &json!(["a"])).unwrap();
        assert_eq!(d.steps.len(), 1);
        assert!(matches!(&d.steps[0], Step::Apply { change, .. } if change["op"] == "delete" && change["id"] == "b"));
        apply(&mut r, &d.steps);
        assert_eq!(r.live_ids().collect::<Vec<_>>(), ["a"]);
        // The tombstone holds against a late push of the old revision.
        let late = c.page(&mut r, &json!([doc("b", "r1", "2026-11-27T10:00:00Z")])).unwrap();
        assert_eq!(apply(&mut r, &late.steps), 0);
    }

    #[test]
    fn bad_options_and_bad_documents() {
        assert_eq!(CatchUpOptions::from_json(&json!({})).unwrap_err().field.as_deref(), Some("catchUp.types"));
        assert!(CatchUpOptions::from_json(&json!({"types": ["a"], "projection": "slug"})).unwrap_err().message.contains("braces"));
        let (mut r, mut c) = (receiver(), catch_up(500));
        c.start();
        let page = c.page(&mut r, &json!([{"_id": "x"}])).unwrap();
        assert_eq!(page.skipped.len(), 1);
        assert!(c.page(&mut r, &json!({"not": "a list"})).is_err());
    }
}
