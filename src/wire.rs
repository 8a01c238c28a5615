//! The engine's actions as they cross to the shim: requests that are alike but for one header's value (a
//! fan-out's pushes, each pinned to its Machine) go as one batch, so the body, its signature and the URL cross
//! once with a list of request ids and header values, and the shim logs one line per batch. Bodies cross apart,
//! as bytes (`Sent::bodies`): a batch names its body by index. Representation only: which requests exist, and
//! what they carry, is the engine's.

use crate::engine::Action;
use crate::http::{Method, Request, RequestId};
use crate::report::Report;
use serde::Serialize;
use std::sync::Arc;

/// What `poll` answers, as the shim reads it.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export, rename = "WireAction"))]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum WireAction {
    /// Send every request of every batch now, concurrently; feed each answer back by its id.
    Send { batches: Vec<Batch> },
    /// Wait for an answer of a request in flight, or until `until_ms`, then poll again.
    Wait {
        #[cfg_attr(test, ts(type = "number"))]
        until_ms: u64,
    },
    /// The run is over: its report, and the status a webhook entry answers with.
    Done { report: Box<Report>, webhook_status: u16 },
}

/// Requests sent once per id: each with `headers`, plus `vary.name: vary.values[i]` for `ids[i]` when the
/// batch has a varying header. `headers` may hold a token: log `log`, never the batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    pub ids: Vec<RequestId>,
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub vary: Option<Vary>,
    /// Which of the send's bodies (`null`: none).
    pub body: Option<u32>,
    #[cfg_attr(test, ts(type = "number"))]
    pub timeout_ms: u64,
    /// As `Request::reuse_ms`: a GET the executor may answer with an identical one this recent.
    #[cfg_attr(test, ts(type = "number"))]
    pub reuse_ms: u64,
    pub log: BatchLog,
}

/// The header whose value differs from one request of a batch to the next.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Vary {
    pub name: String,
    pub values: Vec<String>,
}

/// One redacted log line for a batch: the request's description, with the Machine (one request) or Machines
/// (several) it goes to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct BatchLog {
    pub target: String,
    pub kind: &'static str,
    pub method: Method,
    pub url: String,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub machine: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(test, ts(optional, as = "Option<Vec<String>>"))]
    pub machines: Vec<String>,
}

/// A `poll` answer in the shim's shape, with the bodies its batches name (by index).
pub struct Sent {
    pub action: WireAction,
    pub bodies: Vec<Arc<str>>,
}

/// `action` as it crosses.
pub fn sent(action: Action) -> Sent {
    match action {
        Action::Send { requests } => {
            let (batches, bodies) = batches(requests);
            Sent { action: WireAction::Send { batches }, bodies }
        }
        Action::Wait { until_ms } => Sent { action: WireAction::Wait { until_ms }, bodies: Vec::new() },
        Action::Done { report } => {
            let webhook_status = report.webhook_status();
            Sent { action: WireAction::Done { report, webhook_status }, bodies: Vec::new() }
        }
    }
}

/// `requests` grouped into batches (in the order of their first requests), and the distinct bodies they carry.
pub fn batches(requests: Vec<Request>) -> (Vec<Batch>, Vec<Arc<str>>) {
    let mut out: Vec<Batch> = Vec::new();
    let mut firsts: Vec<Request> = Vec::new();
    let mut bodies: Vec<Arc<str>> = Vec::new();
    for request in requests {
        let joined = out.iter_mut().zip(&firsts).find_map(|(batch, first)| {
            let vary = alike(first, &request)?;
            match (&mut batch.vary, vary) {
                // The same request again: sent once more.
                (None, None) => {}
                (Some(v), Some(at)) if first.headers[at].0 == v.name => v.values.push(request.headers[at].1.clone()),
                (slot @ None, Some(at)) if batch.ids.len() == 1 => {
                    *slot = Some(Vary { name: first.headers[at].0.clone(), values: vec![first.headers[at].1.clone(), request.headers[at].1.clone()] });
                    batch.headers.remove(at);
                }
                _ => return None,
            }
            batch.ids.push(request.id);
            push_machine(&mut batch.log, request.log.machine.clone());
            Some(())
        });
        if joined.is_some() {
            continue;
        }
        let body = request.body.as_ref().map(|b| match bodies.iter().position(|known| Arc::ptr_eq(known, b) || **known == **b) {
            Some(i) => i as u32,
            None => {
                bodies.push(b.clone());
                (bodies.len() - 1) as u32
            }
        });
        let log = BatchLog {
            target: request.log.target.clone(),
            kind: request.log.kind,
            method: request.log.method,
            url: request.log.url.clone(),
            attempt: request.log.attempt,
            machine: request.log.machine.clone(),
            machines: Vec::new(),
        };
        out.push(Batch {
            ids: vec![request.id],
            method: request.method,
            url: request.url.clone(),
            headers: request.headers.clone(),
            vary: None,
            body,
            timeout_ms: request.timeout_ms,
            reuse_ms: request.reuse_ms,
            log,
        });
        firsts.push(request);
    }
    (out, bodies)
}

/// Whether `b` can go in the batch `a` started: everything alike, headers alike but for at most one value
/// (`Some(position)` of the one that differs).
fn alike(a: &Request, b: &Request) -> Option<Option<usize>> {
    let same_body = match (&a.body, &b.body) {
        (None, None) => true,
        (Some(x), Some(y)) => Arc::ptr_eq(x, y) || **x == **y,
        _ => false,
    };
    let same = same_body
        && a.method == b.method
        && a.url == b.url
        && a.timeout_ms == b.timeout_ms
        && a.reuse_ms == b.reuse_ms
        && a.log.kind == b.log.kind
        && a.log.target == b.log.target
        && a.log.attempt == b.log.attempt
        && a.headers.len() == b.headers.len();
    if !same {
        return None;
    }
    let mut differs = None;
    for (at, (x, y)) in a.headers.iter().zip(&b.headers).enumerate() {
        if x.0 != y.0 || (x.1 != y.1 && differs.replace(at).is_some()) {
            return None;
        }
    }
    Some(differs)
}

/// A batch of several requests lists its Machines.
fn push_machine(log: &mut BatchLog, machine: Option<String>) {
    if let Some(first) = log.machine.take() {
        log.machines.push(first);
    }
    log.machines.extend(machine);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::RequestLog;

    fn push(id: RequestId, machine: &str, body: &Arc<str>) -> Request {
        let url = "https://web.fly.dev/internal/content-sync".to_string();
        Request {
            id,
            method: Method::POST,
            url: url.clone(),
            headers: vec![("content-type".into(), "application/json".into()), ("sig".into(), "t=1,v1=x".into()), ("fly-force-instance-id".into(), machine.into())],
            body: Some(body.clone()),
            timeout_ms: 5_000,
            reuse_ms: 0,
            log: RequestLog { target: "web".into(), kind: "sync", method: Method::POST, url, machine: Some(machine.into()), attempt: 1 },
        }
    }

    fn list(id: RequestId) -> Request {
        let url = "https://api.machines.dev/v1/apps/web/machines".to_string();
        Request {
            id,
            method: Method::GET,
            url: url.clone(),
            headers: vec![("authorization".into(), "FlyV1 secret".into())],
            body: None,
            timeout_ms: 5_000,
            reuse_ms: 1_000,
            log: RequestLog { target: "web".into(), kind: "list", method: Method::GET, url, machine: None, attempt: 1 },
        }
    }

    #[test]
    fn a_fan_out_crosses_as_one_batch_with_its_body_once() {
        let body: Arc<str> = Arc::from(r#"{"doc":1}"#);
        let (batches, bodies) = batches(vec![list(1), push(2, "m1", &body), push(3, "m2", &body), push(4, "m3", &body)]);
        assert_eq!(bodies.len(), 1);
        assert_eq!(batches.len(), 2, "{batches:#?}");
        assert_eq!((batches[0].ids.clone(), batches[0].body, batches[0].vary.clone()), (vec![1], None, None));
        let fan = &batches[1];
        assert_eq!((fan.ids.clone(), fan.body), (vec![2, 3, 4], Some(0)));
        assert_eq!(fan.vary, Some(Vary { name: "fly-force-instance-id".into(), values: vec!["m1".into(), "m2".into(), "m3".into()] }));
        assert!(!fan.headers.iter().any(|(k, _)| k == "fly-force-instance-id"), "the varying header is not among the common ones");
        assert_eq!((fan.log.machine.as_deref(), fan.log.machines.len()), (None, 3));
        // Every request can be written back from its batch exactly as it was.
        let again: Vec<(u32, Vec<(String, String)>)> = fan
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let v = fan.vary.as_ref().unwrap();
                let mut h = fan.headers.clone();
                h.push((v.name.clone(), v.values[i].clone()));
                (*id, h)
            })
            .collect();
        assert_eq!(again[1], (3, push(3, "m2", &body).headers));
    }

    #[test]
    fn requests_that_differ_in_more_than_one_way_stay_apart() {
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let mut retried = push(3, "m2", &a);
        retried.log.attempt = 2;
        let mut resigned = push(4, "m3", &a);
        resigned.headers[1].1 = "t=2,v1=y".into();
        let (batches, bodies) = batches(vec![push(1, "m1", &a), push(2, "m1", &b), retried, resigned, list(5), list(6)]);
        let ids: Vec<Vec<u32>> = batches.iter().map(|b| b.ids.clone()).collect();
        assert_eq!(ids, [vec![1], vec![2], vec![3], vec![4], vec![5, 6]], "another body, attempt, or two headers apart");
        assert_eq!(bodies.len(), 2);
        assert_eq!(batches[4].vary, None, "the same request twice: sent once per id");
    }
}
