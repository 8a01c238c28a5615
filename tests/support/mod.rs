//! A scripted, simulated-time Fly (Machines API + app proxy + receivers) for driving the engine natively.
//! Responses are computed from the fake's state at the simulated instant; faults are queued per call.
#![allow(dead_code)]

use sanity_fly_sync::change::ContentChange;
use sanity_fly_sync::config::{Config, Env};
use sanity_fly_sync::engine::{Action, Engine};
use sanity_fly_sync::http::{Method, Request, Response};
use sanity_fly_sync::report::Report;
use sanity_fly_sync::{event, protocol, signature};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};

pub const SECRET: &str = "test-sync-secret-0123456789";
pub const TOKEN: &str = "fm2_testtoken_abcdef";
pub const T0: u64 = 1_800_000_000_000;

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
    pub lease: Option<String>,
    pub lease_held_elsewhere: bool,
    pub restarts: u32,
    pub ask_restart: bool,
    pub ack_as: Option<String>,
    pub applied: Vec<Value>,
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
            restarts: 0,
            ask_restart: false,
            ack_as: None,
            applied: vec![],
        }
    }

    /// State at `now`, moving a restart along.
    fn settle(&mut self, now: u64) {
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
        let mut events: Vec<Value> =
            self.events.iter().map(|(ts, ty, st)| json!({"type": ty, "status": st, "timestamp": ts})).collect();
        events.reverse();
        json!({
            "id": self.id, "name": format!("name-{}", self.id), "state": self.state, "region": self.region,
            "instance_id": "01HMVXC16ED6SHK9452AF029Y7", "host_status": "ok",
            "config": {"metadata": {"fly_process_group": "app"}},
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
    /// Stop this Machine right after it acknowledges its push (it scales down between push and roll).
    pub stop_after_sync: Option<String>,
}

impl FakeFly {
    pub fn new(machines: Vec<FakeMachine>) -> Self {
        FakeFly { machines, faults: BTreeMap::new(), latency_ms: 20, sent: vec![], max_down: 0, restart_then_408: BTreeMap::new(), app_down: false, stop_after_sync: None }
    }

    /// Queue a canned answer for the next `kind` call on `machine` ("" for list / fan-out one).
    pub fn fault(&mut self, kind: &str, machine: &str, response: Response) {
        self.faults.entry((kind.into(), machine.into())).or_default().push_back(response);
    }

    pub fn machine(&mut self, id: &str) -> &mut FakeMachine {
        self.machines.iter_mut().find(|m| m.id == id).expect("machine")
    }

    fn settle(&mut self, now: u64) {
        for m in &mut self.machines {
            m.settle(now);
        }
        let down = self.machines.iter().filter(|m| m.down()).count();
        self.max_down = self.max_down.max(down);
    }

    pub fn count(&self, kind: &str) -> usize {
        self.sent.iter().filter(|s| s.kind == kind).count()
    }

    pub fn mutating(&self) -> Vec<&Sent> {
        self.sent.iter().filter(|s| s.method != Method::GET).collect()
    }

    /// Answer `req` as Fly would at `now`.
    pub fn handle(&mut self, req: &Request, now: u64) -> Response {
        self.settle(now);
        let kind = req.log.kind;
        let mid = req.log.machine.clone().unwrap_or_default();
        self.sent.push(Sent { at: now, kind, method: req.method, machine: req.log.machine.clone(), url: req.url.clone(), reuse_ms: req.reuse_ms });
        if kind != "sync" {
            let auth = req.headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.as_str());
            assert_eq!(auth, Some(format!("FlyV1 {TOKEN}").as_str()), "Machines API calls carry the token");
        }
        if let Some(r) = self.faults.get_mut(&(kind.to_string(), mid.clone())).and_then(VecDeque::pop_front) {
            // An ambiguous 408 on restart: the restart happened, the answer was lost.
            if kind == "restart" && matches!(r, Response::Http { status: 408, .. }) {
                *self.restart_then_408.entry(mid.clone()).or_default() += 1;
                self.do_restart(&mid, now);
            }
            return r;
        }
        match kind {
            "list" => Response::json(200, Value::Array(self.machines.iter().map(|m| m.json(now)).collect()).to_string()),
            "poll" | "verify" => {
                let m = self.machine(&mid);
                Response::json(200, m.json(now).to_string())
            }
            "lease" => {
                let m = self.machine(&mid);
                if m.lease_held_elsewhere || m.lease.is_some() {
                    return Response::json(409, json!({"error": format!("machine ID {mid} lease currently held by someone@tokens.fly.io, expires at 2027-01-01T00:00:00Z")}).to_string());
                }
                let nonce = format!("nonce-{mid}");
                m.lease = Some(nonce.clone());
                Response::json(201, json!({"status":"success","data":{"nonce": nonce, "expires_at": 0, "owner": "x", "description": "", "version": "v"}}).to_string())
            }
            "release" => {
                let nonce = header(req, "fly-machine-lease-nonce");
                let m = self.machine(&mid);
                match &m.lease {
                    Some(n) if Some(n.as_str()) == nonce => {
                        m.lease = None;
                        Response::json(200, r#"{"status":"success","data":{"ok":true}}"#)
                    }
                    Some(_) => Response::json(409, r#"{"error":"lease nonce mismatch"}"#),
                    None => Response::json(404, r#"{"error":"lease not found"}"#),
                }
            }
            "restart" => {
                let nonce = header(req, "fly-machine-lease-nonce").map(String::from);
                let m = self.machine(&mid);
                if m.lease.is_none() || m.lease != nonce {
                    return Response::json(409, r#"{"error":"lease mismatch"}"#);
                }
                if m.state != "started" {
                    return Response::json(412, r#"{"error":"failed_precondition: unable to restart machine, not currently started or stopped"}"#);
                }
                self.do_restart(&mid, now);
                Response::json(200, r#"{"ok":true}"#)
            }
            "sync" => {
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
                let m = self.machine(&target);
                if m.state != "started" {
                    return Response::json(502, r#"{"error":"could not reach machine"}"#);
                }
                m.applied.push(serde_json::from_str(&body).unwrap());
                if self.stop_after_sync.as_deref() == Some(target.as_str()) {
                    let m = self.machine(&target);
                    let ack = json!({"machine": m.id, "status": "applied", "restart": if m.ask_restart { json!("required") } else { Value::Null }});
                    m.state = "stopped".into();
                    return Response::json(200, ack.to_string());
                }
                let m = self.machine(&target);
                let machine = m.ack_as.clone().unwrap_or(m.id.clone());
                let restart = if m.ask_restart { json!("required") } else { Value::Null };
                Response::json(200, json!({"machine": machine, "status": "applied", "restart": restart}).to_string())
            }
            other => panic!("unexpected kind {other}"),
        }
    }

    fn do_restart(&mut self, mid: &str, now: u64) {
        let m = self.machine(mid);
        m.restarts += 1;
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
    let mut data = json!({"_id": format!("{doc_type}-1"), "_type": doc_type, "_rev": "rev-2", "_updatedAt": "2026-11-27T10:00:00Z",
        "title": "Hello", "slug": "hello", "op": "update"});
    for (k, v) in extra.as_object().unwrap() {
        data[k] = v.clone();
    }
    event::from_function_event(&json!({"context": {}, "event": {"data": data}}), T0).unwrap()
}

pub struct Run {
    pub report: Report,
    pub ended_at: u64,
    pub polls: usize,
    pub log: Vec<String>,
}

/// Drive the engine against the fake until it is done, in simulated time. Requests slower than their
/// timeout come back as `Timeout` (their side effect still happened at the fake, as in life).
pub fn drive(env: &Env, change: ContentChange, fly: &mut FakeFly) -> Run {
    let config = Config::from_env(env).expect("config");
    let mut engine = Engine::new(config, change, T0, 42);
    let mut now = T0;
    let mut pending: Vec<(u64, u32, Response)> = vec![];
    let mut log = vec![];
    for polls in 0..100_000 {
        match engine.poll(now) {
            Action::Send { requests: reqs } => {
                assert!(!reqs.is_empty());
                for r in reqs {
                    log.push(serde_json::to_string(&r.log).unwrap());
                    let response = fly.handle(&r, now);
                    if fly.latency_ms > r.timeout_ms {
                        pending.push((now + r.timeout_ms, r.id, Response::Timeout));
                    } else {
                        pending.push((now + fly.latency_ms, r.id, response));
                    }
                }
            }
            Action::Wait { until_ms } => {
                assert!(until_ms >= now, "waits never go back in time");
                let next = pending.iter().map(|p| p.0).min();
                match next {
                    Some(due) if due <= until_ms => {
                        now = now.max(due);
                        let (ready, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|p| p.0 <= now);
                        pending = rest;
                        for (_, id, resp) in ready {
                            engine.handle_response(id, resp, now);
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
                return Run { report: *report, ended_at: now, polls, log };
            }
        }
    }
    panic!("engine did not finish in 100000 polls");
}
