//! Fly's wire, and only here: the Machines API (paths, headers, the lease envelope, which status codes mean
//! what for which call) and the proxy's per-Machine routing of a push (`fly-force-instance-id`). The engine asks
//! for typed calls and gets typed answers; changing a Fly detail means reading this file, not the policy.

use crate::config::Target;
use crate::error::{shorten, SyncError};
use crate::http::{Method, Response, Wire};
use crate::json_read;
use crate::machines::Machine;
use crate::protocol::{self, Ack};
use crate::retry::{self, Verdict};
use std::sync::Arc;

/// One call to Fly, with what it needs to be written.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    /// The app's Machines.
    List,
    /// One Machine.
    Get { machine: &'a str },
    /// Take the Machine's lease, or (with `nonce`, ours) renew it for another `ttl_s`.
    Lease { machine: &'a str, ttl_s: u64, description: &'a str, nonce: Option<&'a str> },
    /// Read who holds the Machine's lease.
    LeaseInfo { machine: &'a str },
    /// Block until the Machine is `started`, at most `timeout_s`, counting only what follows `after_event`, for
    /// the Machine's `version` (its `instance_id`: a restart keeps it, an update would change it).
    Wait { machine: &'a str, timeout_s: u64, after_event: Option<&'a str>, version: Option<&'a str> },
    SetMetadata { machine: &'a str, key: &'a str, value: &'a str },
    DeleteMetadata { machine: &'a str, key: &'a str },
    Restart { machine: &'a str, nonce: &'a str },
    Release { machine: &'a str, nonce: &'a str },
    /// The signed payload through the app's URL, to one Machine (`machine`) or to whichever the proxy picks.
    Push { machine: Option<&'a str>, body: &'a Arc<str>, signature: &'a str, idempotency_key: &'a str },
}

/// Which call an answer belongs to (what `read` needs to know of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    List,
    Get,
    Lease,
    LeaseInfo,
    Wait,
    Metadata,
    Restart,
    Release,
    Push,
}

impl Call<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Call::List => Kind::List,
            Call::Get { .. } => Kind::Get,
            Call::Lease { .. } => Kind::Lease,
            Call::LeaseInfo { .. } => Kind::LeaseInfo,
            Call::Wait { .. } => Kind::Wait,
            Call::SetMetadata { .. } | Call::DeleteMetadata { .. } => Kind::Metadata,
            Call::Restart { .. } => Kind::Restart,
            Call::Release { .. } => Kind::Release,
            Call::Push { .. } => Kind::Push,
        }
    }
}

const LEASE_NONCE: &str = "fly-machine-lease-nonce";

/// The request for `call` on `target`'s app.
pub fn request(target: &Target, call: &Call) -> Wire {
    if let Call::Push { machine, body, signature, idempotency_key } = *call {
        return push(target, machine, body, signature, idempotency_key);
    }
    let machines = format!("{}/v1/apps/{}/machines", target.machines_api_url, target.app);
    let auth = ("authorization".to_string(), target.token.authorization().to_string());
    let json = || ("content-type".to_string(), "application/json".to_string());
    let nonce = |n: &str| (LEASE_NONCE.to_string(), n.to_string());
    let (method, url, headers, body): (Method, String, Vec<(String, String)>, Option<String>) = match *call {
        Call::List => (Method::GET, machines, vec![auth], None),
        Call::Get { machine } => (Method::GET, format!("{machines}/{machine}"), vec![auth], None),
        Call::Lease { machine, ttl_s, description, nonce: held } => {
            let body = json_read::text(&json_read::object(vec![("description", description.into()), ("ttl", ttl_s.into())]));
            let mut headers = vec![auth, json()];
            headers.extend(held.map(nonce));
            (Method::POST, format!("{machines}/{machine}/lease"), headers, Some(body))
        }
        Call::LeaseInfo { machine } => (Method::GET, format!("{machines}/{machine}/lease"), vec![auth], None),
        Call::Wait { machine, timeout_s, after_event, version } => {
            // Fly's spec names the Machine's instance id `version` on `/wait`; `instance_id` is its deprecated alias.
            let version = version.map(|v| format!("&version={}", query_value(v))).unwrap_or_default();
            let after = after_event.map(|e| format!("&from_event_id={}", query_value(e))).unwrap_or_default();
            (Method::GET, format!("{machines}/{machine}/wait?state=started&timeout={timeout_s}{version}{after}"), vec![auth], None)
        }
        Call::SetMetadata { machine, key, value } => {
            let body = json_read::text(&json_read::object(vec![("value", value.into())]));
            (Method::POST, format!("{machines}/{machine}/metadata/{key}"), vec![auth, json()], Some(body))
        }
        Call::DeleteMetadata { machine, key } => (Method::DELETE, format!("{machines}/{machine}/metadata/{key}"), vec![auth], None),
        Call::Restart { machine, nonce: n } => (Method::POST, format!("{machines}/{machine}/restart"), vec![auth, nonce(n)], None),
        Call::Release { machine, nonce: n } => (Method::DELETE, format!("{machines}/{machine}/lease"), vec![auth, nonce(n)], None),
        Call::Push { .. } => unreachable!("written by `push`"),
    };
    Wire { method, url, headers, body: body.map(Arc::from) }
}

/// The signed payload through the app's URL (no Machines API token: it never goes to the app).
fn push(target: &Target, machine: Option<&str>, body: &Arc<str>, signature: &str, idempotency_key: &str) -> Wire {
    let mut headers = Vec::with_capacity(4);
    headers.push(("content-type".to_string(), "application/json".to_string()));
    headers.push(("idempotency-key".to_string(), idempotency_key.to_string()));
    headers.push((protocol::SIGNATURE_HEADER.to_string(), signature.to_string()));
    if let Some(m) = machine {
        // Addressed to Fly's proxy: this Machine or an error, never another one.
        headers.push(("fly-force-instance-id".to_string(), m.to_string()));
    }
    Wire { method: Method::POST, url: format!("{}{}", target.app_url, target.sync_path), headers, body: Some(body.clone()) }
}

/// What a successful answer said.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Machines(Vec<Machine>),
    Machine(Machine),
    Leased { nonce: String },
    /// Someone else holds the Machine's lease: not an error to retry, someone else is operating on it.
    LeaseHeld(SyncError),
    /// The restart was accepted, or the lease is released (or had expired already, which is as good).
    Done,
    /// The receiver's acknowledgement of a push.
    Ack(Ack),
    /// The Machine asked for does not exist (destroyed).
    NoSuchMachine,
    /// Who holds a Machine's lease (`None`: nobody).
    LeaseInfo(Option<LeaseHolder>),
    /// `/wait` saw the Machine `started`.
    Started,
    /// `/wait` timed out: not started yet (`state` as Fly said it, when it did).
    NotYet { state: Option<String> },
    /// The restart was refused because the Machine is not started or stopped (Fly's 412): someone stopped it.
    NotRunning,
}

/// A lease as Fly shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub description: String,
    pub expires_at_ms: u64,
}

/// Read the answer to a call of `kind`: Fly's statuses that mean something for that call first, then the
/// generic retry rules. `what` names the call in messages.
pub fn read(kind: Kind, response: &Response, what: &str, now_ms: u64) -> Verdict<Answer> {
    match (kind, response) {
        (Kind::Lease, Response::Http { status: 409, body, .. }) => {
            return Verdict::Success(Answer::LeaseHeld(SyncError::fatal(format!("lease held elsewhere{}", error_detail(body)))));
        }
        (Kind::Release, Response::Http { status: 404, .. }) => return Verdict::Success(Answer::Done),
        (Kind::Get | Kind::Wait, Response::Http { status: 404, .. }) => return Verdict::Success(Answer::NoSuchMachine),
        (Kind::Restart, Response::Http { status: 404, .. }) => return Verdict::Success(Answer::NoSuchMachine),
        (Kind::Restart, Response::Http { status: 412, .. }) => return Verdict::Success(Answer::NotRunning),
        (Kind::LeaseInfo, Response::Http { status: 404, .. }) => return Verdict::Success(Answer::LeaseInfo(None)),
        // Fly answers a long-poll that ran out with 408 `deadline_exceeded: … currently <state>`: an answer.
        (Kind::Wait, Response::Http { status: 408, body, .. }) => return Verdict::Success(Answer::NotYet { state: current_state(body) }),
        _ => {}
    }
    let body = match retry::classify(response, what, now_ms) {
        Verdict::Success(body) => body,
        Verdict::Retry { error, min_delay_ms, rate_limited } => return Verdict::Retry { error, min_delay_ms, rate_limited },
        Verdict::Fail(e) => return Verdict::Fail(e),
    };
    let answer = match kind {
        Kind::List => Machine::parse_list(body).map(Answer::Machines),
        Kind::Get => Machine::parse_one(body).map(Answer::Machine),
        Kind::Lease => lease_nonce(body).map(|nonce| Answer::Leased { nonce }),
        Kind::LeaseInfo => lease_holder(body).map(|h| Answer::LeaseInfo(Some(h))),
        Kind::Wait => Ok(Answer::Started),
        Kind::Restart | Kind::Release | Kind::Metadata => Ok(Answer::Done),
        Kind::Push => protocol::parse_ack(body).map(Answer::Ack),
    };
    match answer {
        Ok(a) => Verdict::Success(a),
        Err(e) => Verdict::Fail(e),
    }
}

/// Leases come back in Fly's envelope (`{"status":"success","data":{"nonce":…}}`); accept the flat shape too.
fn lease_nonce(body: &str) -> Result<String, SyncError> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|_| SyncError::fatal("lease answer is not JSON"))?;
    v.pointer("/data/nonce")
        .or_else(|| v.get("nonce"))
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .map(String::from)
        .ok_or_else(|| SyncError::fatal("lease answer has no nonce"))
}

fn lease_holder(body: &str) -> Result<LeaseHolder, SyncError> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|_| SyncError::fatal("lease answer is not JSON"))?;
    let data = v.get("data").unwrap_or(&v);
    let description = data.get("description").and_then(|d| d.as_str()).unwrap_or_default().to_string();
    // Fly gives whole seconds since the epoch.
    let expires_at_ms = data.get("expires_at").and_then(|e| e.as_u64()).unwrap_or(0).saturating_mul(1000);
    Ok(LeaseHolder { description, expires_at_ms })
}

/// The state at the end of a `/wait` timeout message (`… currently stopped`).
fn current_state(body: &str) -> Option<String> {
    let detail = error_detail(body);
    let state = detail.rsplit("currently ").next().filter(|_| detail.contains("currently "))?;
    let state = state.trim().trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_');
    (!state.is_empty() && state.len() <= 32).then(|| state.to_string())
}

/// A value for a query string: Fly's ids are letters and digits; anything else is escaped.
fn query_value(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `{"error": "…"}` (Fly's error shape) or `{"message": "…"}`, shortened, as a `: …` suffix for messages.
pub fn error_detail(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let text = parsed.as_ref().and_then(|v| v.get("error").or_else(|| v.get("message"))).and_then(|v| v.as_str());
    match text {
        Some(t) if !t.is_empty() => format!(": {}", shorten(t, 200)),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{env, SECRET};
    use crate::config::Config;

    fn target() -> Target {
        let env = env(&[("FLY_APP_NAME", "web"), ("FLY_API_TOKEN", "fm2_tok"), ("FLY_SYNC_SECRET", SECRET), ("FLY_API_URL", "http://api")]);
        Config::from_env(&env).unwrap().targets.remove(0)
    }

    #[test]
    fn machines_api_paths_and_headers() {
        let t = target();
        let list = request(&t, &Call::List);
        assert_eq!((list.method, list.url.as_str()), (Method::GET, "http://api/v1/apps/web/machines"));
        assert_eq!(list.headers, [("authorization".to_string(), "FlyV1 fm2_tok".to_string())]);
        let lease = request(&t, &Call::Lease { machine: "m1", ttl_s: 30, description: "d", nonce: None });
        assert_eq!(lease.url, "http://api/v1/apps/web/machines/m1/lease");
        assert_eq!(lease.body.as_deref(), Some(r#"{"description":"d","ttl":30}"#));
        let restart = request(&t, &Call::Restart { machine: "m1", nonce: "n" });
        assert_eq!((restart.method, restart.url.as_str()), (Method::POST, "http://api/v1/apps/web/machines/m1/restart"));
        assert!(restart.headers.contains(&(LEASE_NONCE.to_string(), "n".to_string())));
        let release = request(&t, &Call::Release { machine: "m1", nonce: "n" });
        assert_eq!(release.method, Method::DELETE);
        let renew = request(&t, &Call::Lease { machine: "m1", ttl_s: 12, description: "d", nonce: Some("n") });
        assert!(renew.headers.contains(&(LEASE_NONCE.to_string(), "n".to_string())), "a renewal names the lease");
        let wait = request(&t, &Call::Wait { machine: "m1", timeout_s: 30, after_event: Some("01J 2"), version: Some("01HMVXC16ED6SHK9452AF029Y7") });
        assert_eq!(wait.url, "http://api/v1/apps/web/machines/m1/wait?state=started&timeout=30&version=01HMVXC16ED6SHK9452AF029Y7&from_event_id=01J%202");
        let unversioned = request(&t, &Call::Wait { machine: "m1", timeout_s: 30, after_event: None, version: None });
        assert_eq!(unversioned.url, "http://api/v1/apps/web/machines/m1/wait?state=started&timeout=30");
        let mark = request(&t, &Call::SetMetadata { machine: "m1", key: "k", value: "1;2;x" });
        assert_eq!((mark.method, mark.url.as_str(), mark.body.as_deref()), (Method::POST, "http://api/v1/apps/web/machines/m1/metadata/k", Some(r#"{"value":"1;2;x"}"#)));
        assert_eq!(request(&t, &Call::DeleteMetadata { machine: "m1", key: "k" }).method, Method::DELETE);
    }

    #[test]
    fn a_push_is_pinned_to_its_machine() {
        let t = target();
        let body: Arc<str> = Arc::from("{}");
        let push = request(&t, &Call::Push { machine: Some("m1"), body: &body, signature: "t=1,v1=x", idempotency_key: "k" });
        assert_eq!(push.url, "https://web.fly.dev/internal/content-sync");
        assert!(push.headers.contains(&("fly-force-instance-id".to_string(), "m1".to_string())));
        assert!(!push.headers.iter().any(|(k, _)| k == "authorization"), "the Fly token never goes to the app");
        let one = request(&t, &Call::Push { machine: None, body: &body, signature: "s", idempotency_key: "k" });
        assert!(!one.headers.iter().any(|(k, _)| k == "fly-force-instance-id"));
    }

    #[test]
    fn statuses_that_mean_something_per_call() {
        let held = Response::json(409, r#"{"error":"lease currently held by x"}"#);
        assert!(matches!(read(Kind::Lease, &held, "lease", 0), Verdict::Success(Answer::LeaseHeld(e)) if e.message.contains("currently held")));
        assert!(matches!(read(Kind::Restart, &held, "restart", 0), Verdict::Fail(_)), "409 elsewhere is a refusal");
        assert_eq!(read(Kind::Release, &Response::json(404, "{}"), "release", 0), Verdict::Success(Answer::Done));
        let lease = Response::json(201, r#"{"status":"success","data":{"nonce":"abc"}}"#);
        assert_eq!(read(Kind::Lease, &lease, "lease", 0), Verdict::Success(Answer::Leased { nonce: "abc".into() }));
        assert!(matches!(read(Kind::Lease, &Response::json(201, "{}"), "lease", 0), Verdict::Fail(e) if e.message.contains("no nonce")));
        assert!(matches!(read(Kind::List, &Response::json(503, "{}"), "list", 0), Verdict::Retry { .. }));
        assert_eq!(read(Kind::Get, &Response::json(404, "{}"), "read", 0), Verdict::Success(Answer::NoSuchMachine));
        assert!(matches!(read(Kind::List, &Response::json(404, "{}"), "list", 0), Verdict::Fail(_)), "an app that is not there");
        let timed_out = Response::json(408, r#"{"error":"deadline_exceeded: machine failed to reach desired state, started, currently stopped"}"#);
        assert_eq!(read(Kind::Wait, &timed_out, "wait", 0), Verdict::Success(Answer::NotYet { state: Some("stopped".into()) }));
        assert_eq!(read(Kind::Wait, &Response::json(200, r#"{"ok":true}"#), "wait", 0), Verdict::Success(Answer::Started));
        assert_eq!(read(Kind::Restart, &Response::json(412, "{}"), "restart", 0), Verdict::Success(Answer::NotRunning));
        let info = Response::json(200, r#"{"status":"success","data":{"nonce":"x","expires_at":1700000000,"description":"sanity-fly-sync restart for a@b"}}"#);
        let holder = LeaseHolder { description: "sanity-fly-sync restart for a@b".into(), expires_at_ms: 1_700_000_000_000 };
        assert_eq!(read(Kind::LeaseInfo, &info, "lease", 0), Verdict::Success(Answer::LeaseInfo(Some(holder))));
        assert_eq!(read(Kind::LeaseInfo, &Response::json(404, "{}"), "lease", 0), Verdict::Success(Answer::LeaseInfo(None)));
    }

    #[test]
    fn error_details_are_short() {
        assert_eq!(error_detail(r#"{"error":"nope"}"#), ": nope");
        assert_eq!(error_detail(r#"{"message":"m"}"#), ": m");
        assert_eq!(error_detail("<html>"), "");
        assert_eq!(error_detail(&serde_json::json!({"error": "x".repeat(500)}).to_string()).chars().count(), 2 + 200 + 1);
    }
}
