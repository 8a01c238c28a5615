//! A scripted, simulated-time Fly (Machines API + app proxy + receivers) for driving the engine natively.
//! Responses are computed from the fake's state at the simulated instant; faults are queued per call.
#![allow(dead_code)]

use sanity_fly_sync::change::ContentChange;
use sanity_fly_sync::config::{Config, Env};
use sanity_fly_sync::engine::{Action, Engine};
use sanity_fly_sync::http::{Method, Request, Response};
use sanity_fly_sync::known::KnownFleets;
use sanity_fly_sync::report::Report;
use sanity_fly_sync::{event, protocol, signature};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};

pub const SECRET: &str = "test-sync-secret-0123456789";
pub const TOKEN: &str = "fm2_testtoken_abcdef";
/// The read token the dependents query carries when the environment gives one.
pub const LAKE_TOKEN: &str = "sk-read-lake-0123456789abcdef";
pub const T0: u64 = 1_800_000_000_000;
/// The changes' revision time: a second before the runs start (2027-01-15T08:00:00Z is T0), after every
/// fake Machine booted (T0 − 60 s), so a change whose type needs a restart needs one on each of them.
pub const UPDATED_AT: &str = "2027-01-15T07:59:59Z";

#[derive(Debug, Clone, PartialEq)]
pub struct FakeLease {
    pub nonce: String,
    pub expires_at: u64,
    pub description: String,
}

/// One lease the fake granted through the API, from acquisition to its end: `released_at` is when a DELETE
/// released it (`None`: never released — it expired at `expires_at`, or is still held).
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRecord {
    pub machine: String,
    pub nonce: String,
    pub acquired_at: u64,
    /// Moved by each refresh.
    pub expires_at: u64,
    pub refreshed_at: Option<u64>,
    pub released_at: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct FakeMachine {
    pub id: String,
    pub region: String,
    pub state: String,
    pub checks: bool,
    /// When a restart was accepted; the Machine is `restarting` until `restart_at + restart_ms`.
    pub restart_at: Option<u64>,
    pub restart_ms: u64,
    /// Checks stay critical this long after the Machine is started again.
    pub checks_critical_ms: u64,
    pub never_starts: bool,
    pub events: Vec<(u64, &'static str, &'static str)>,
    pub lease: Option<FakeLease>,
    /// Someone else (a deploy) holds this Machine's lease, and keeps it.
    pub lease_held_elsewhere: bool,
    pub metadata: BTreeMap<String, String>,
    pub restarts: u32,
    pub ask_restart: bool,
    pub ack_as: Option<String>,
    /// Its ack leaves out `status` (an app answering 200 without saying it holds the change).
    pub ack_without_status: bool,
    pub applied: Vec<Value>,
    /// Its config declares a service (false: a worker the proxy cannot reach).
    pub services: bool,
}

impl FakeMachine {
    pub fn new(id: &str, region: &str, state: &str) -> Self {
        FakeMachine {
            id: id.into(),
            region: region.into(),
            state: state.into(),
            checks: true,
            restart_at: None,
            restart_ms: 3_000,
            checks_critical_ms: 0,
            never_starts: false,
            events: vec![(T0 - 60_000, "start", "started")],
            lease: None,
            lease_held_elsewhere: false,
            metadata: BTreeMap::new(),
            restarts: 0,
            ask_restart: false,
            ack_as: None,
            ack_without_status: false,
            applied: vec![],
            services: true,
        }
    }

    /// State at `now`, moving a restart along and expiring a lease past its TTL.
    fn settle(&mut self, now: u64) {
        if self.lease.as_ref().is_some_and(|l| l.expires_at <= now) {
            self.lease = None;
        }
        if let Some(at) = self.restart_at {
            if self.never_starts {
                self.state = "starting".into();
            } else if now >= at + self.restart_ms {
                self.state = "started".into();
                self.events.push((at + self.restart_ms, "start", "started"));
                self.restart_at = None;
            } else {
                self.state = "restarting".into();
            }
        }
    }

    fn down(&self) -> bool {
        self.restart_at.is_some()
    }

    fn json(&self, now: u64) -> Value {
        let started_since = self.events.iter().filter(|e| e.2 == "started").map(|e| e.0).max().unwrap_or(0);
        let checks_ok = self.state == "started" && now >= started_since + self.checks_critical_ms;
        let mut events: Vec<Value> = self
            .events
            .iter()
            .enumerate()
            .map(|(i, (ts, ty, st))| json!({"id": format!("ev-{i:04}"), "type": ty, "status": st, "timestamp": ts}))
            .collect();
        let mut metadata: serde_json::Map<String, Value> = self.metadata.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        metadata.entry("fly_process_group").or_insert_with(|| json!("app"));
        let services = if self.services { json!([{"protocol": "tcp", "internal_port": 8080}]) } else { json!([]) };
        events.reverse();
        json!({
            "id": self.id, "name": format!("name-{}", self.id), "state": self.state, "region": self.region,
            "instance_id": "01HMVXC16ED6SHK9452AF029Y7", "host_status": "ok",
            "config": {"metadata": metadata, "services": services},
            "checks": if self.checks { json!([{"name": "servicecheck-00-http-8080", "status": if checks_ok {"passing"} else {"critical"}}]) } else { json!([]) },
            "events": events,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Sent {
    pub at: u64,
    pub kind: &'static str,
    pub method: Method,
    pub machine: Option<String>,
    pub url: String,
    pub reuse_ms: u64,
}

pub struct FakeFly {
    pub machines: Vec<FakeMachine>,
    /// Canned answers served before the normal one, per (kind, machine id or "").
    pub faults: BTreeMap<(String, String), VecDeque<Response>>,
    /// Latency of every answer.
    pub latency_ms: u64,
    pub sent: Vec<Sent>,
    pub max_down: usize,
    /// Restart requests that reached the fake even though the answer was lost (ambiguous 408).
    pub restart_then_408: BTreeMap<String, u32>,
    pub app_down: bool,
    /// Every restart's window of unavailability: (Machine, region, from, until).
    pub downtimes: Vec<(String, String, u64, u64)>,
    /// Stop this Machine right after it acknowledges its push (it scales down between push and roll).
    pub stop_after_sync: Option<String>,
    /// Put this Machine in this state right after a list (it stops or is destroyed between list and push).
    pub after_list: Option<(String, &'static str)>,
    /// Someone stops this Machine right after we lease it (its restart then finds it not running).
    pub stop_on_lease: Option<String>,
    /// Stop this Machine when its n-th push arrives (it scales down while pushes to it are being retried).
    pub stop_on_push: Option<(String, usize)>,
    /// The authorization the Machines API expects (`FlyV1 <token>`).
    pub authorization: String,
    /// Sanity's query API, for the dependents lookup.
    pub lake: FakeLake,
    /// Every lease granted through the API, oldest first.
    pub leases: Vec<LeaseRecord>,
}

/// The documents of a dataset, as far as the dependents query reads them: which ids each references.
#[derive(Debug, Clone, Default)]
pub struct FakeLake {
    /// (id, type, slug, ids it references), in the order the query returns them.
    pub docs: Vec<(String, String, String, Vec<String>)>,
    /// `Some`: queries must carry `Bearer <token>` (401 otherwise); `None`: anonymous queries are answered.
    pub token: Option<String>,
    /// Each query's parameters, as sent.
    pub queries: Vec<Value>,
}

impl FakeLake {
    pub fn doc(&mut self, id: &str, doc_type: &str, references: &[&str]) -> &mut Self {
        let slug = id.rsplit('-').next().unwrap_or(id).to_string();
        self.docs.push((id.into(), doc_type.into(), slug, references.iter().map(|r| r.to_string()).collect()));
        self
    }

    /// What Sanity would answer to one level of the dependents query (published documents referencing any of
    /// `$ids`, none of `$seen`, of `$types` if given, at most `$cap`, with their count and types).
    fn answer(&mut self, req: &Request) -> Response {
        let auth = header(req, "authorization").map(String::from);
        if let Some(token) = &self.token {
            if auth.as_deref() != Some(&format!("Bearer {token}")) {
                return Response::json(401, r#"{"error":{"description":"Unauthorized - Session not found","type":"httpError"}}"#);
            }
        }
        let body: Value = serde_json::from_str(req.body.as_deref().expect("a query body")).unwrap();
        let p = &body["params"];
        self.queries.push(p.clone());
        let has = |list: &Value, id: &str| list.as_array().is_some_and(|l| l.iter().any(|v| v == id));
        let matching: Vec<_> = self
            .docs
            .iter()
            .filter(|(id, t, _, refs)| {
                !id.starts_with("drafts.")
                    && !has(&p["seen"], id)
                    && refs.iter().any(|r| has(&p["ids"], r))
                    && (p["types"].is_null() || has(&p["types"], t))
            })
            .collect();
        let cap = p["cap"].as_u64().unwrap() as usize;
        let documents: Vec<Value> = matching.iter().take(cap).map(|(id, t, slug, _)| json!({"_id": id, "_type": t, "slug": slug})).collect();
        let mut types: Vec<&str> = matching.iter().map(|d| d.1.as_str()).collect();
        types.sort();
        types.dedup();
        Response::json(200, json!({"ms": 1, "result": {"documents": documents, "count": matching.len(), "types": types}}).to_string())
    }
}

impl FakeFly {
    pub fn new(machines: Vec<FakeMachine>) -> Self {
        FakeFly { machines, faults: BTreeMap::new(), latency_ms: 20, sent: vec![], max_down: 0, restart_then_408: BTreeMap::new(), app_down: false, downtimes: vec![], stop_after_sync: None, after_list: None, stop_on_lease: None, stop_on_push: None, authorization: format!("FlyV1 {TOKEN}"), lake: FakeLake::default(), leases: vec![] }
    }

    /// Queue a canned answer for the next `kind` call on `machine` ("" for list / fan-out one).
    pub fn fault(&mut self, kind: &str, machine: &str, response: Response) {
        self.faults.entry((kind.into(), machine.into())).or_default().push_back(response);
    }

    pub fn machine(&mut self, id: &str) -> &mut FakeMachine {
        self.machines.iter_mut().find(|m| m.id == id).expect("machine")
    }

    pub fn settle(&mut self, now: u64) {
        for m in &mut self.machines {
            m.settle(now);
        }
        let down = self.machines.iter().filter(|m| m.down()).count();
        self.max_down = self.max_down.max(down);
    }

    /// The most Machines down at any instant, from the restart windows (and per region).
    pub fn most_down(&self, region: Option<&str>) -> usize {
        let windows: Vec<&(String, String, u64, u64)> = self.downtimes.iter().filter(|w| region.is_none_or(|r| w.1 == r)).collect();
        windows.iter().map(|w| windows.iter().filter(|o| o.2 <= w.2 && w.2 < o.3).count()).max().unwrap_or(0)
    }

    pub fn count(&self, kind: &str) -> usize {
        self.sent.iter().filter(|s| s.kind == kind).count()
    }

    pub fn mutating(&self) -> Vec<&Sent> {
        self.sent.iter().filter(|s| s.method != Method::GET).collect()
    }

    /// Answer `req` as Fly would at `now`.
    pub fn handle(&mut self, req: &Request, now: u64) -> Response {
        self.handle_timed(req, now).0
    }

    /// Answer `req` as Fly would at `now`, and when the answer is ready (a `/wait` long-poll answers when the
    /// Machine is started, or at its timeout); the side effects happen at `now`.
    pub fn handle_timed(&mut self, req: &Request, now: u64) -> (Response, u64) {
        self.settle(now);
        let kind = req.log.kind;
        let mid = req.log.machine.clone().unwrap_or_default();
        self.sent.push(Sent { at: now, kind, method: req.method, machine: req.log.machine.clone(), url: req.url.clone(), reuse_ms: req.reuse_ms });
        if kind != "sync" && kind != "dependents" {
            let auth = req.headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.as_str());
            assert_eq!(auth, Some(self.authorization.as_str()), "Machines API calls carry the token");
        }
        if let Some((id, n)) = &self.stop_on_push {
            if kind == "sync" && *id == mid && self.sent.iter().filter(|s| s.kind == "sync" && s.machine.as_deref() == Some(id)).count() == *n {
                self.machine(&mid).state = "stopped".into();
            }
        }
        if let Some(r) = self.faults.get_mut(&(kind.to_string(), mid.clone())).and_then(VecDeque::pop_front) {
            // An ambiguous 408 on restart: the restart happened, the answer was lost.
            if kind == "restart" && matches!(r, Response::Http { status: 408, .. }) {
                *self.restart_then_408.entry(mid.clone()).or_default() += 1;
                self.do_restart(&mid, now);
            }
            return (r, now);
        }
        if !matches!(kind, "list" | "sync" | "dependents") && !self.machines.iter().any(|m| m.id == mid && m.state != "destroyed") {
            return (Response::json(404, r#"{"error":"machine not found"}"#), now);
        }
        match kind {
            "dependents" => (self.lake.answer(req), now),
            "list" => {
                let list = Response::json(200, Value::Array(self.machines.iter().filter(|m| m.state != "destroyed").map(|m| m.json(now)).collect()).to_string());
                if let Some((id, state)) = self.after_list.take() {
                    self.machine(&id).state = state.into();
                }
                (list, now)
            }
            "poll" | "verify" | "check" => (Response::json(200, self.machine(&mid).json(now).to_string()), now),
            "wait" => self.wait(&mid, req, now),
            "lease" | "renew" => {
                let answer = self.lease(&mid, req, now);
                if kind == "lease" && self.stop_on_lease.as_deref() == Some(mid.as_str()) {
                    self.machine(&mid).state = "stopped".into();
                }
                (answer, now)
            }
            "lease_info" => {
                let m = self.machine(&mid);
                let answer = match (&m.lease, m.lease_held_elsewhere) {
                    (_, true) => json!({"status":"success","data":{"nonce":"theirs","expires_at": 1_900_000_000u64,"owner":"someone@tokens.fly.io","description":"flyctl deploy"}}),
                    (Some(l), false) => json!({"status":"success","data":{"nonce": l.nonce,"expires_at": l.expires_at / 1000,"owner":"x","description": l.description}}),
                    (None, false) => return (Response::json(404, r#"{"error":"lease not found"}"#), now),
                };
                (Response::json(200, answer.to_string()), now)
            }
            "release" => {
                let nonce = header(req, "fly-machine-lease-nonce");
                let leases = &mut self.leases;
                let m = self.machines.iter_mut().find(|m| m.id == mid).expect("machine");
                let answer = match &m.lease {
                    Some(l) if Some(l.nonce.as_str()) == nonce => {
                        let released = l.nonce.clone();
                        m.lease = None;
                        if let Some(r) = leases.iter_mut().rev().find(|r| r.nonce == released) {
                            r.released_at = Some(now);
                        }
                        Response::json(200, r#"{"status":"success","data":{"ok":true}}"#)
                    }
                    Some(_) => Response::json(409, r#"{"error":"lease nonce mismatch"}"#),
                    None => Response::json(404, r#"{"error":"lease not found"}"#),
                };
                (answer, now)
            }
            "mark" | "unmark" => {
                let key = req.url.rsplit('/').next().unwrap().to_string();
                let m = self.machine(&mid);
                if req.method == Method::POST {
                    let body: Value = serde_json::from_str(req.body.as_deref().unwrap()).unwrap();
                    m.metadata.insert(key, body["value"].as_str().unwrap().to_string());
                } else {
                    m.metadata.remove(&key);
                }
                (Response::Http { status: 204, headers: vec![], body: String::new() }, now)
            }
            "restart" => (self.restart(&mid, req, now), now),
            "sync" => (self.sync(req, now), now),
            other => panic!("unexpected kind {other}"),
        }
    }

    fn lease(&mut self, mid: &str, req: &Request, now: u64) -> Response {
        let nonce = header(req, "fly-machine-lease-nonce").map(String::from);
        let body: Value = serde_json::from_str(req.body.as_deref().unwrap_or("{}")).unwrap();
        let ttl_ms = body["ttl"].as_u64().expect("a lease ttl") * 1000;
        let description = body["description"].as_str().unwrap_or_default().to_string();
        let leases = &mut self.leases;
        let m = self.machines.iter_mut().find(|m| m.id == mid).expect("machine");
        let held = |nonce: &str| format!("machine ID {} lease currently held by someone@tokens.fly.io, expires at 2027-01-01T00:00:00Z ({nonce})", m.id);
        if m.lease_held_elsewhere {
            return Response::json(409, json!({ "error": held("theirs") }).to_string());
        }
        match (&mut m.lease, nonce) {
            (Some(l), Some(n)) if l.nonce == n => {
                l.expires_at = now + ttl_ms;
                if let Some(r) = leases.iter_mut().rev().find(|r| r.nonce == n) {
                    (r.expires_at, r.refreshed_at) = (now + ttl_ms, Some(now));
                }
            }
            (Some(l), _) => return Response::json(409, json!({ "error": held(&l.nonce) }).to_string()),
            (None, Some(_)) => return Response::json(409, json!({"error": "lease not found to refresh"}).to_string()),
            (None, None) => {
                let n = format!("nonce-{mid}-{now}");
                leases.push(LeaseRecord { machine: mid.to_string(), nonce: n.clone(), acquired_at: now, expires_at: now + ttl_ms, refreshed_at: None, released_at: None });
                m.lease = Some(FakeLease { nonce: n, expires_at: now + ttl_ms, description });
            }
        }
        let l = m.lease.as_ref().unwrap();
        Response::json(201, json!({"status":"success","data":{"nonce": l.nonce, "expires_at": l.expires_at / 1000, "owner": "x", "description": l.description, "version": "v"}}).to_string())
    }

    fn restart(&mut self, mid: &str, req: &Request, now: u64) -> Response {
        let nonce = header(req, "fly-machine-lease-nonce").map(String::from);
        let m = self.machine(mid);
        if m.lease_held_elsewhere || m.lease.as_ref().map(|l| &l.nonce) != nonce.as_ref() {
            return Response::json(409, r#"{"error":"lease mismatch"}"#);
        }
        if m.state != "started" {
            return Response::json(412, r#"{"error":"failed_precondition: unable to restart machine, not currently started or stopped"}"#);
        }
        self.do_restart(mid, now);
        Response::json(200, r#"{"ok":true}"#)
    }

    /// `/wait?state=started&timeout=N`: answered when the Machine is started, or 408 at the timeout.
    fn wait(&mut self, mid: &str, req: &Request, now: u64) -> (Response, u64) {
        let timeout_s: u64 = req.url.split("timeout=").nth(1).and_then(|v| v.split('&').next()).and_then(|v| v.parse().ok()).unwrap();
        let m = self.machine(mid);
        let started_at = match (&m.restart_at, m.state.as_str()) {
            (None, "started") => Some(now),
            (Some(at), _) if !m.never_starts => Some(at + m.restart_ms),
            _ => None,
        };
        match started_at {
            Some(at) if at <= now + timeout_s * 1000 => (Response::json(200, r#"{"ok":true,"state":"started"}"#), at.max(now)),
            _ => {
                let state = if m.never_starts { "starting".to_string() } else { m.state.clone() };
                let body = json!({"error": format!("deadline_exceeded: machine failed to reach desired state, started, currently {state}")});
                (Response::json(408, body.to_string()), now + timeout_s * 1000)
            }
        }
    }

    fn sync(&mut self, req: &Request, now: u64) -> Response {
        if self.app_down {
            return Response::Network { message: "connect ECONNREFUSED".into() };
        }
        let sig = header(req, protocol::SIGNATURE_HEADER).expect("signed").to_string();
        let body = req.body.clone().expect("sync has a body");
        signature::verify("sig", &sig, body.as_bytes(), SECRET, now, 300_000).expect("signature verifies");
        let forced = header(req, "fly-force-instance-id").map(String::from);
        let target = match forced {
            Some(id) => id,
            None => self.machines.iter().find(|m| m.state == "started").map(|m| m.id.clone()).expect("a started machine"),
        };
        let stop_after = self.stop_after_sync.as_deref() == Some(target.as_str());
        let m = self.machine(&target);
        if m.state != "started" {
            return Response::json(502, r#"{"error":"could not reach machine"}"#);
        }
        m.applied.push(serde_json::from_str(&body).unwrap());
        let machine = m.ack_as.clone().unwrap_or(m.id.clone());
        let restart = if m.ask_restart { json!("required") } else { Value::Null };
        if stop_after {
            m.state = "stopped".into();
        }
        let mut ack = json!({"machine": machine, "status": "applied", "restart": restart});
        if m.ack_without_status {
            ack.as_object_mut().expect("an object").remove("status");
        }
        Response::json(200, ack.to_string())
    }

    fn do_restart(&mut self, mid: &str, now: u64) {
        let m = self.machine(mid);
        let until = if m.never_starts { u64::MAX } else { now + m.restart_ms };
        let window = (m.id.clone(), m.region.clone(), now, until);
        m.restarts += 1;
        self.downtimes.push(window);
        let m = self.machine(mid);
        m.restart_at = Some(now);
        m.state = "restarting".into();
        m.events.push((now, "restart", "stopping"));
    }
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

pub fn fleet(spec: &[(&str, &str, &str)]) -> Vec<FakeMachine> {
    spec.iter().map(|(id, region, state)| FakeMachine::new(id, region, state)).collect()
}

pub fn env(extra: &[(&str, &str)]) -> Env {
    let mut env: Env = [
        ("FLY_APP_NAME", "web"),
        ("FLY_API_TOKEN", &format!("FlyV1 {TOKEN}") as &str),
        ("FLY_SYNC_SECRET", SECRET),
        ("FLY_API_URL", "http://127.0.0.1:4280"),
        ("FLY_APP_URL", "http://127.0.0.1:8080"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    // The JSON form names its own apps and URLs; mixing it with the simple form is a configuration error.
    if env.contains_key("FLY_SYNC_CONFIG") {
        for simple in ["FLY_APP_NAME", "FLY_API_URL", "FLY_APP_URL"] {
            env.remove(simple);
        }
    }
    env
}

pub fn change(doc_type: &str, extra: Value) -> ContentChange {
    let mut data = json!({"_id": format!("{doc_type}-1"), "_type": doc_type, "_rev": "rev-2", "_updatedAt": UPDATED_AT,
        "title": "Hello", "slug": "hello", "op": "update"});
    for (k, v) in extra.as_object().unwrap() {
        data[k] = v.clone();
    }
    event::from_function_event(&json!({"context": {}, "event": {"data": data}}), T0).unwrap()
}

#[derive(Debug)]
pub struct Run {
    pub report: Report,
    pub ended_at: u64,
    pub polls: usize,
    pub log: Vec<String>,
}

/// Drive the engine against the fake until it is done, in simulated time. Requests slower than their
/// timeout come back as `Timeout` (their side effect still happened at the fake, as in life).
pub fn drive(env: &Env, change: ContentChange, fly: &mut FakeFly) -> Run {
    drive_with_clock(env, change, fly, |now| now)
}

/// `drive`, with the engine reading its time through `clock` (simulated time → what the engine is told), e.g.
/// a clock that steps back mid-run. The fake and the request timings stay on simulated time.
pub fn drive_with_clock(env: &Env, change: ContentChange, fly: &mut FakeFly, clock: impl Fn(u64) -> u64) -> Run {
    let config = Config::from_env(env).expect("config");
    let engine = Engine::new(config, change, clock(T0), 42);
    run_engine(engine, fly, T0, &clock, None, None).expect("not killed")
}

/// A run of `change` at `start` in a process that remembers Machine lists in `fleets` (as the wasm boundary
/// does): it starts from them and leaves what it read there.
pub fn drive_known(env: &Env, change: ContentChange, fly: &mut FakeFly, start: u64, fleets: &mut KnownFleets) -> Run {
    let config = Config::from_env(env).expect("config");
    let engine = Engine::new(config, change, start, 42).with_known(fleets);
    run_engine(engine, fly, start, &|now| now, None, Some(fleets)).expect("not killed")
}

/// A sync-tag run of `tags`, from T0.
pub fn drive_tags(env: &Env, tags: &[&str], fly: &mut FakeFly) -> Run {
    let config = Config::from_env(env).expect("config");
    let tags = sanity_fly_sync::sync_tags::SyncTags::new(tags.iter().map(|t| t.to_string()).collect(), T0, 42);
    run_engine(Engine::sync_tags(config, tags, T0, 42), fly, T0, &|now| now, None, None).expect("not killed")
}

/// A run of `change` (or a resume run) starting at `start`, killed after `kill_after` requests if given:
/// `Err(instant)` when it was killed (its requests in flight had their effect at the fake, as in life).
pub fn drive_from(env: &Env, change: Option<ContentChange>, fly: &mut FakeFly, start: u64, kill_after: Option<usize>) -> Result<Run, u64> {
    let config = Config::from_env(env).expect("config");
    let engine = match change {
        Some(c) => Engine::new(config, c, start, 42),
        None => Engine::resume(config, start, 42),
    };
    run_engine(engine, fly, start, &|now| now, kill_after, None)
}

fn run_engine(
    mut engine: Engine,
    fly: &mut FakeFly,
    start: u64,
    clock: &dyn Fn(u64) -> u64,
    kill_after: Option<usize>,
    mut fleets: Option<&mut KnownFleets>,
) -> Result<Run, u64> {
    let mut now = start;
    let mut pending: Vec<(u64, u32, Response)> = vec![];
    let mut log = vec![];
    for polls in 0..200_000 {
        match engine.poll(clock(now)) {
            Action::Send { requests: reqs } => {
                assert!(!reqs.is_empty());
                for r in reqs {
                    if kill_after.is_some_and(|k| log.len() >= k) {
                        return Err(now);
                    }
                    log.push(serde_json::to_string(&r.log).unwrap());
                    let (response, ready_at) = fly.handle_timed(&r, now);
                    let ready_at = ready_at.max(now + fly.latency_ms);
                    if ready_at > now + r.timeout_ms {
                        pending.push((now + r.timeout_ms, r.id, Response::Timeout));
                    } else {
                        pending.push((ready_at, r.id, response));
                    }
                }
            }
            Action::Wait { until_ms } => {
                assert!(until_ms >= clock(now), "waits never go back in time");
                // Back to simulated time: the engine's instants are on its (possibly skewed) clock.
                let until_ms = now + (until_ms - clock(now));
                let next = pending.iter().map(|p| p.0).min();
                match next {
                    Some(due) if due <= until_ms => {
                        now = now.max(due);
                        let (ready, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|p| p.0 <= now);
                        pending = rest;
                        for (_, id, resp) in ready {
                            engine.handle_response(id, resp, clock(now));
                            if let Some(fleets) = fleets.as_deref_mut() {
                                for (key, list) in engine.take_learned() {
                                    fleets.learn(key, list);
                                }
                            }
                        }
                    }
                    _ => {
                        assert!(until_ms > now || !pending.is_empty(), "a wait with nothing pending must move time");
                        now = until_ms;
                    }
                }
            }
            Action::Done { report } => {
                assert!(pending.is_empty(), "done with requests still in flight");
                // Every run of every scenario: no secret in the report or in any log line.
                let text = serde_json::to_string(&report).unwrap() + &log.join("\n");
                assert!(!text.contains(TOKEN) && !text.contains(SECRET), "a secret leaked into the report or logs");
                assert!(!text.contains(LAKE_TOKEN), "the Sanity token leaked into the report or logs");
                fly.settle(now);
                return Ok(Run { report: *report, ended_at: now, polls, log });
            }
        }
    }
    panic!("engine did not finish in 200000 polls");
}
