//! The part of Fly's `Machine` object the engine reads, parsed leniently (unknown fields ignored) but
//! checked where it matters (`id`, `state`).

use crate::error::SyncError;
use crate::roll::{Intent, RestartMark};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

fn short(e: &serde_json::Error) -> String {
    format!("line {} column {}", e.line(), e.column())
}

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

/// Fly's Machine object as far as we read it: typed, so a list of many Machines is read without building a
/// JSON tree (most of a run's CPU went there). Strings are borrowed from the answer where they need no
/// unescaping, events are folded as they are read (only the newest ones matter), and unknown fields are skipped;
/// absent or null ones are `None`.
#[derive(Deserialize)]
struct RawMachine<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    state: Option<Cow<'a, str>>,
    #[serde(borrow)]
    region: Option<Cow<'a, str>>,
    #[serde(borrow)]
    host_status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    instance_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    config: Option<RawConfig<'a>>,
    #[serde(borrow)]
    incomplete_config: Option<RawConfig<'a>>,
    #[serde(borrow)]
    checks: Option<Vec<RawCheck<'a>>>,
    events: Option<NewestEvents>,
}

#[derive(Deserialize)]
struct RawConfig<'a> {
    #[serde(borrow)]
    metadata: Option<RawMetadata<'a>>,
    services: Option<Vec<serde::de::IgnoredAny>>,
}

#[derive(Deserialize)]
struct RawMetadata<'a> {
    #[serde(borrow)]
    fly_process_group: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "sanity_fly_sync_restart")]
    intent: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawCheck<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    timestamp: Option<u64>,
}

/// What the engine needs of a Machine's events, folded while the list is read (no list of events is built).
#[derive(Default)]
struct NewestEvents {
    event_ms: u64,
    start_ms: u64,
    event_id: Option<String>,
}

impl<'de> Deserialize<'de> for NewestEvents {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fold;
        impl<'de> Visitor<'de> for Fold {
            type Value = NewestEvents;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of Machine events")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NewestEvents, A::Error> {
                let mut out = NewestEvents::default();
                let mut newest_id: Option<Cow<'de, str>> = None;
                while let Some(e) = seq.next_element::<RawEvent<'de>>()? {
                    let ts = e.timestamp.unwrap_or(0);
                    if ts >= out.event_ms && e.id.is_some() {
                        newest_id = e.id;
                    }
                    out.event_ms = out.event_ms.max(ts);
                    if e.status.as_deref() == Some("started") {
                        out.start_ms = out.start_ms.max(ts);
                    }
                }
                out.event_id = newest_id.map(Cow::into_owned);
                Ok(out)
            }
        }
        d.deserialize_seq(Fold)
    }
}

impl RawMachine<'_> {
    fn into_machine(self, field: &dyn Fn() -> String) -> Result<Machine, SyncError> {
        let id = self.id.filter(|s| !s.is_empty()).ok_or_else(|| SyncError::expected(format!("{}.id", field()), "a Machine id", "nothing"))?;
        let state = self.state.filter(|s| !s.is_empty()).ok_or_else(|| SyncError::expected(format!("{}.state", field()), "a Machine state", "nothing"))?;
        let state = MachineState::parse(&state);
        let config = self.config.or(self.incomplete_config);
        let services = config.as_ref().map(|c| c.services.as_ref().map_or(0, Vec::len));
        let metadata = config.and_then(|c| c.metadata);
        let (process_group, intent) = match metadata {
            Some(m) => (m.fly_process_group.map(Cow::into_owned), m.intent.filter(|v| !v.is_empty()).map(|v| RestartMark::parse(&v))),
            None => (None, None),
        };
        let checks = self
            .checks
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| {
                let name = c.name?;
                (!name.starts_with("bg_deployments_compat"))
                    .then(|| Check { name: name.into_owned(), status: c.status.map_or_else(|| "unknown".into(), Cow::into_owned) })
            })
            .collect();
        let events = self.events.unwrap_or_default();
        Ok(Machine {
            id: id.into_owned(),
            region: self.region.map(Cow::into_owned).unwrap_or_default(),
            state,
            host_status: self.host_status.map(Cow::into_owned),
            process_group,
            services,
            checks,
            newest_event_ms: events.event_ms,
            newest_start_ms: events.start_ms,
            newest_event_id: events.event_id,
            instance_id: self.instance_id.filter(|v| !v.is_empty()).map(Cow::into_owned),
            mark: intent,
        })
    }
}

/// A list answer, each Machine read as it comes (no list of raw Machines is held). A Machine without what the
/// engine needs stops the read; its error is kept in `bad` (serde's error type would only carry its text).
struct EachMachine<'e> {
    bad: &'e mut Option<SyncError>,
}

impl<'de> Visitor<'de> for EachMachine<'_> {
    type Value = Vec<Machine>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of Machines")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Machine>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(raw) = seq.next_element::<RawMachine<'de>>()? {
            let i = out.len();
            match raw.into_machine(&|| format!("machines[{i}]")) {
                Ok(machine) => out.push(machine),
                Err(e) => {
                    *self.bad = Some(e);
                    return Err(de::Error::custom("a Machine without an id or state"));
                }
            }
        }
        Ok(out)
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
    pub fn parse(value: &Value, field: &str) -> Result<Machine, SyncError> {
        let raw: RawMachine = RawMachine::deserialize(value).map_err(|e| SyncError::fatal(format!("{field}: not a Machine object ({e})")))?;
        raw.into_machine(&|| field.to_string())
    }

    pub fn parse_list(body: &str) -> Result<Vec<Machine>, SyncError> {
        let mut bad = None;
        let mut de = serde_json::Deserializer::from_str(body);
        let read = de.deserialize_seq(EachMachine { bad: &mut bad }).and_then(|list| de.end().map(|()| list));
        match (read, bad) {
            // In the order a run reads them: by region, then id (whatever order the API answered in).
            (Ok(mut list), _) => {
                sort_by_region_id(&mut list, |m| (&m.region, &m.id));
                Ok(list)
            }
            (Err(_), Some(e)) => Err(SyncError::fatal(format!("Machines API answer: {e}"))),
            (Err(e), None) => Err(SyncError::fatal(format!("the Machines API list answer is not a list of Machines ({})", short(&e)))),
        }
    }

    pub fn parse_one(body: &str) -> Result<Machine, SyncError> {
        let raw: RawMachine =
            serde_json::from_str(body).map_err(|e| SyncError::fatal(format!("the Machines API answer is not a Machine ({})", short(&e))))?;
        raw.into_machine(&|| "machine".to_string()).map_err(|e| SyncError::fatal(format!("Machines API answer: {e}")))
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
        let m = Machine::parse(
            &json!({"id":"3d8d413b29d089","region":"ord","state":"started","host_status":"ok","instance_id":"01HMVXC16ED6SHK9452AF029Y7",
                "config":{"metadata":{"fly_process_group":"app"}},
                "checks":[{"name":"servicecheck-00-http-8080","status":"passing"},{"name":"bg_deployments_compat_x","status":"critical"}],
                "events":[{"type":"start","status":"started","timestamp":1700000005000u64},{"type":"launch","status":"created","timestamp":1700000000000u64}]}),
            "m",
        )
        .unwrap();
        assert_eq!(m.process_group.as_deref(), Some("app"));
        assert!(m.is_started());
        assert_eq!(m.checks.len(), 1);
        assert!(m.checks_passing() && m.reachable());
        assert_eq!((m.newest_event_ms, m.newest_start_ms), (1700000005000, 1700000005000));
        assert_eq!(m.mark, None);
        assert_eq!(m.instance_id.as_deref(), Some("01HMVXC16ED6SHK9452AF029Y7"));
        let marked = Machine::parse(
            &json!({"id":"m","state":"started","config":{"metadata":{INTENT_KEY:"1;1700000000000;settings@r1"}},
                "events":[{"id":"01J2","status":"started","timestamp":5},{"id":"01J1","status":"created","timestamp":1}]}),
            "m",
        )
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
    fn a_list_is_read_by_region_then_id_whatever_order_the_api_answers_in() {
        let body = r#"[{"id":"b","state":"started","region":"ord"},{"id":"c","state":"started","region":"fra"},{"id":"a","state":"started","region":"ord"}]"#;
        let ids: Vec<String> = Machine::parse_list(body).unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["c", "a", "b"]);
    }
}
