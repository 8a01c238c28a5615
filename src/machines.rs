//! The part of Fly's `Machine` object the engine reads, parsed leniently (unknown fields ignored) but
//! checked where it matters (`id`, `state`).

use crate::error::SyncError;
use crate::json_pick::{self, Got, PickError, Want};
use crate::roll::{Intent, RestartMark, INTENT_KEY};
use std::borrow::Cow;

/// A Machine's state as Fly names it, read once at the edge. Fly adds states now and then: an unknown one is
/// kept by name and treated as not serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineState {
    Created,
    Started,
    Stopped,
    Suspended,
    Failed,
    Destroyed,
    /// On its way between states (`starting`, `restarting`, `updating`, …): not serving now, serving later.
    Transient(String),
    Other(String),
}

const TRANSIENT: [&str; 9] =
    ["creating", "starting", "stopping", "restarting", "suspending", "destroying", "updating", "replacing", "launch_failed"];

impl MachineState {
    pub fn parse(name: &str) -> MachineState {
        match name {
            "created" => MachineState::Created,
            "started" => MachineState::Started,
            "stopped" => MachineState::Stopped,
            "suspended" => MachineState::Suspended,
            "failed" => MachineState::Failed,
            "destroyed" => MachineState::Destroyed,
            t if TRANSIENT.contains(&t) => MachineState::Transient(t.to_string()),
            other => MachineState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            MachineState::Created => "created",
            MachineState::Started => "started",
            MachineState::Stopped => "stopped",
            MachineState::Suspended => "suspended",
            MachineState::Failed => "failed",
            MachineState::Destroyed => "destroyed",
            MachineState::Transient(s) | MachineState::Other(s) => s,
        }
    }

    /// Gone for good, or on its way there: a restart cannot bring it back.
    pub fn is_lost(&self) -> bool {
        matches!(self, MachineState::Failed | MachineState::Destroyed) || self.as_str() == "destroying"
    }
}

impl std::fmt::Display for MachineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub id: String,
    pub region: String,
    pub state: MachineState,
    /// `ok`, `unknown`, `unreachable`; absent on older API versions (taken as ok).
    pub host_status: Option<String>,
    pub process_group: Option<String>,
    /// How many services its config declares (`None`: no config in the answer). A Machine with none (a worker)
    /// cannot be reached through Fly's proxy.
    pub services: Option<usize>,
    /// Health checks, without the `bg_deployments_compat*` ones flaps injects.
    pub checks: Vec<Check>,
    /// The newest event's timestamp (ms), to tell a fresh start from the one before a restart.
    pub newest_event_ms: u64,
    /// The newest event that reports the Machine `started` (type start/restart/launch).
    pub newest_start_ms: u64,
    /// The newest event's id, to wait for what comes after it.
    pub newest_event_id: Option<String>,
    /// Its `instance_id` (the version of its config: a restart keeps it), to wait for this version's start.
    pub instance_id: Option<String>,
    /// What our metadata key says: a restart this Machine still owes (left by an earlier run), or the change
    /// its last restart was for.
    pub mark: Option<RestartMark>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub status: String,
}

/// Fly's Machine object as far as we read it, picked in one pass (`json_pick`): a list of many Machines is read
/// without building a JSON tree (most of a run's CPU went there), strings borrowed where they need no
/// unescaping, unknown fields skipped; absent or null ones are `None`.
const MACHINE: Want = Want::Fields(&[
    ("id", Want::Text),
    ("state", Want::Text),
    ("region", Want::Text),
    ("host_status", Want::Text),
    ("instance_id", Want::Text),
    ("config", CONFIG),
    ("incomplete_config", CONFIG),
    ("checks", Want::Each(&Want::Fields(&[("name", Want::Text), ("status", Want::Text)]))),
    ("events", Want::Each(&Want::Fields(&[("id", Want::Text), ("status", Want::Text), ("timestamp", Want::Number)]))),
]);

const CONFIG: Want =
    Want::Fields(&[("metadata", Want::Fields(&[("fly_process_group", Want::Text), (INTENT_KEY, Want::Text)])), ("services", Want::Count)]);

const MACHINES: Want = Want::Each(&MACHINE);

/// What the engine needs of a Machine's events: the newest one's time and id, the newest start's time.
#[derive(Default)]
struct NewestEvents {
    event_ms: u64,
    start_ms: u64,
    event_id: Option<String>,
}

impl NewestEvents {
    fn fold(events: Vec<Got>) -> NewestEvents {
        let mut out = NewestEvents::default();
        let mut newest_id = None;
        for mut e in events {
            let ts = e.get("timestamp").number().unwrap_or(0);
            let id = e.take("id").text();
            if ts >= out.event_ms && id.is_some() {
                newest_id = id;
            }
            out.event_ms = out.event_ms.max(ts);
            if e.get("status").as_str() == Some("started") {
                out.start_ms = out.start_ms.max(ts);
            }
        }
        out.event_id = newest_id.map(Cow::into_owned);
        out
    }
}

/// A Machine from what was picked of it (`field` names it in errors).
fn machine<'a>(mut raw: Got<'a>, field: &dyn Fn() -> String) -> Result<Machine, SyncError> {
    let nonempty = |got: Got<'a>| got.text().filter(|s| !s.is_empty());
    let id = nonempty(raw.take("id")).ok_or_else(|| SyncError::expected(format!("{}.id", field()), "a Machine id", "nothing"))?;
    let state = nonempty(raw.take("state")).ok_or_else(|| SyncError::expected(format!("{}.state", field()), "a Machine state", "nothing"))?;
    let (region, host_status, instance_id) = (raw.take("region").text(), raw.take("host_status").text(), nonempty(raw.take("instance_id")));
    let state = MachineState::parse(&state);
    let mut config = raw.take("config");
    if config.is_absent() {
        config = raw.take("incomplete_config");
    }
    let services = (!config.is_absent()).then(|| config.get("services").count().unwrap_or(0));
    let mut metadata = config.take("metadata");
    let process_group = metadata.take("fly_process_group").text().map(Cow::into_owned);
    let mark = metadata.take(INTENT_KEY).text().filter(|v| !v.is_empty()).map(|v| RestartMark::parse(&v));
    let checks = raw
        .take("checks")
        .items()
        .into_iter()
        .filter_map(|mut c| {
            let name = c.take("name").text()?;
            (!name.starts_with("bg_deployments_compat"))
                .then(|| Check { name: name.into_owned(), status: c.take("status").text().map_or_else(|| "unknown".into(), Cow::into_owned) })
        })
        .collect();
    let events = NewestEvents::fold(raw.take("events").items());
    Ok(Machine {
        id: id.into_owned(),
        region: region.map(Cow::into_owned).unwrap_or_default(),
        state,
        host_status: host_status.map(Cow::into_owned),
        process_group,
        services,
        checks,
        newest_event_ms: events.event_ms,
        newest_start_ms: events.start_ms,
        newest_event_id: events.event_id,
        instance_id: instance_id.map(Cow::into_owned),
        mark,
    })
}

/// An answer the engine cannot use: what is wrong with it (a field's error, never the value).
fn unusable(e: SyncError) -> SyncError {
    SyncError::fatal(format!("Machines API answer: {e}"))
}

/// A pick's failure as the Machines API answer's error.
fn answer_error(e: PickError, what: &str) -> SyncError {
    match e {
        PickError::Field(e) => unusable(e),
        PickError::NotJson { line, column } => SyncError::fatal(format!("the Machines API {what} (line {line} column {column})")),
    }
}

/// `items` by region, then id (`key` gives both). Positions are sorted, then the items moved into place: one sort
/// of `usize` with a `dyn` comparison serves every item type (the module carries one copy of the sort, not one
/// per type).
pub fn sort_by_region_id<T>(items: &mut [T], key: fn(&T) -> (&str, &str)) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    sort_indices(&mut order, &|a, b| key(&items[a]).cmp(&key(&items[b])));
    // Apply the order in place: the item for slot `i` is at `order[i]`, unless an earlier swap moved it on.
    for i in 0..order.len() {
        let mut from = order[i];
        while from < i {
            from = order[from];
        }
        items.swap(i, from);
    }
}

/// Sort `indices` by `cmp` (unstable: for keys that never tie).
pub fn sort_indices(indices: &mut [usize], cmp: &dyn Fn(usize, usize) -> std::cmp::Ordering) {
    indices.sort_unstable_by(|&a, &b| cmp(a, b));
}

impl Machine {
    pub fn parse_list(body: &str) -> Result<Vec<Machine>, SyncError> {
        let items = json_pick::pick(body, &MACHINES, "machines").map_err(|e| answer_error(e, "list answer is not a list of Machines"))?.items();
        let mut list = Vec::with_capacity(items.len());
        for (i, raw) in items.into_iter().enumerate() {
            list.push(machine(raw, &|| format!("machines[{i}]")).map_err(unusable)?);
        }
        // In the order a run reads them: by region, then id (whatever order the API answered in).
        sort_by_region_id(&mut list, |m| (&m.region, &m.id));
        Ok(list)
    }

    pub fn parse_one(body: &str) -> Result<Machine, SyncError> {
        let raw = json_pick::pick(body, &MACHINE, "machine").map_err(|e| answer_error(e, "answer is not a Machine"))?;
        machine(raw, &|| "machine".to_string()).map_err(unusable)
    }

    /// The restart this Machine owes, if any.
    pub fn owed(&self) -> Option<&Intent> {
        match &self.mark {
            Some(RestartMark::Owed(i)) => Some(i),
            _ => None,
        }
    }

    pub fn is_started(&self) -> bool {
        self.state == MachineState::Started
    }

    pub fn reachable(&self) -> bool {
        self.host_status.as_deref().is_none_or(|s| s == "ok")
    }

    pub fn checks_passing(&self) -> bool {
        self.checks.iter().all(|c| c.status == "passing")
    }

    pub fn checks_summary(&self) -> String {
        if self.checks.is_empty() {
            return "no checks".into();
        }
        let pairs: Vec<String> = self.checks.iter().map(|c| format!("{}={}", c.name, c.status)).collect();
        // Joined as `&str`s, as every other list in the module is (one join routine, not one per element type).
        pairs.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sort_by_region_id_matches_a_plain_sort_for_every_order() {
        let mut rng = fastrand::Rng::with_seed(7);
        for len in 0..40 {
            for _ in 0..20 {
                let mut items: Vec<(String, String)> =
                    (0..len).map(|i| (["ord", "fra", "syd"][rng.usize(0..3)].to_string(), format!("m{i:02}"))).collect();
                rng.shuffle(&mut items);
                let mut expected = items.clone();
                expected.sort();
                sort_by_region_id(&mut items, |(r, id)| (r, id));
                assert_eq!(items, expected);
            }
        }
    }

    use crate::roll::INTENT_KEY;

    #[test]
    fn reads_what_the_engine_needs() {
        let m = Machine::parse_one(&json!({"id":"3d8d413b29d089","region":"ord","state":"started","host_status":"ok","instance_id":"01HMVXC16ED6SHK9452AF029Y7",
                "config":{"metadata":{"fly_process_group":"app"}},
                "checks":[{"name":"servicecheck-00-http-8080","status":"passing"},{"name":"bg_deployments_compat_x","status":"critical"}],
                "events":[{"type":"start","status":"started","timestamp":1700000005000u64},{"type":"launch","status":"created","timestamp":1700000000000u64}]}).to_string())
        .unwrap();
        assert_eq!(m.process_group.as_deref(), Some("app"));
        assert!(m.is_started());
        assert_eq!(m.checks.len(), 1);
        assert!(m.checks_passing() && m.reachable());
        assert_eq!((m.newest_event_ms, m.newest_start_ms), (1700000005000, 1700000005000));
        assert_eq!(m.mark, None);
        assert_eq!(m.instance_id.as_deref(), Some("01HMVXC16ED6SHK9452AF029Y7"));
        let marked = Machine::parse_one(&json!({"id":"m","state":"started","config":{"metadata":{INTENT_KEY:"1;1700000000000;settings@r1"}},
                "events":[{"id":"01J2","status":"started","timestamp":5},{"id":"01J1","status":"created","timestamp":1}]}).to_string())
        .unwrap();
        assert_eq!(marked.owed(), Some(&Intent { since_ms: 1_700_000_000_000, change: "settings@r1".into(), scope: crate::roll::Scope::Machine }));
        assert_eq!(marked.newest_event_id.as_deref(), Some("01J2"));
        assert_eq!(marked.instance_id, None, "absent: the wait goes without it");
    }

    #[test]
    fn states_are_read_once() {
        for (name, state) in [("started", MachineState::Started), ("suspended", MachineState::Suspended), ("destroyed", MachineState::Destroyed)] {
            assert_eq!(MachineState::parse(name), state);
            assert_eq!(state.as_str(), name);
        }
        assert_eq!(MachineState::parse("restarting"), MachineState::Transient("restarting".into()));
        assert_eq!(MachineState::parse("hibernating"), MachineState::Other("hibernating".into()));
        assert!(MachineState::parse("destroying").is_lost() && MachineState::Failed.is_lost() && !MachineState::Stopped.is_lost());
    }

    #[test]
    fn rejects_answers_without_id_or_state() {
        let e = Machine::parse_list(r#"[{"id":"a","state":"started"},{"state":"started"}]"#).unwrap_err();
        assert!(e.message.contains("machines[1].id"), "{}", e.message);
        assert!(Machine::parse_list("{}").is_err());
        assert!(Machine::parse_list("<html>").is_err());
    }

    #[test]
    fn a_field_of_another_type_is_named_and_its_value_never_echoed() {
        let cases = [
            (r#"[{"id":"a","state":"started","region":"secret-5"},{"id":"b","state":"started","region":5}]"#, "machines[1].region"),
            (r#"[{"id":"a","state":"started","config":{"metadata":{"fly_process_group":["secret"]}}}]"#, "machines[0].config.metadata.fly_process_group"),
            (r#"[{"id":"a","state":"started","events":[{"timestamp":-1}]}]"#, "machines[0].events[0].timestamp"),
            (r#"[{"id":"a","state":"started","checks":{"secret":1}}]"#, "machines[0].checks"),
        ];
        for (body, field) in cases {
            let e = Machine::parse_list(body).unwrap_err();
            assert_eq!(e.class, crate::error::ErrorClass::Fatal);
            assert!(e.message.starts_with(&format!("Machines API answer: `{field}`: expected ")), "{}", e.message);
            assert!(!e.message.contains("secret"), "{}", e.message);
        }
        let one = Machine::parse_one(r#"{"id":"a","state":7}"#).unwrap_err();
        assert!(one.message.contains("`machine.state`"), "{}", one.message);
        for body in [r#"[{"id":"#, "<html>", "[] []"] {
            assert!(Machine::parse_list(body).unwrap_err().message.contains("is not a list of Machines (line 1 column"), "{body}");
        }
        assert!(Machine::parse_list("null").unwrap_err().message.contains("`machines`: expected a list, got null"));
    }

    #[test]
    fn a_list_is_read_by_region_then_id_whatever_order_the_api_answers_in() {
        let body = r#"[{"id":"b","state":"started","region":"ord"},{"id":"c","state":"started","region":"fra"},{"id":"a","state":"started","region":"ord"}]"#;
        let ids: Vec<String> = Machine::parse_list(body).unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["c", "a", "b"]);
    }
}
