//! The decisions before any request: does a target take this change, which regions, which Machines get the
//! push (and why each other one does not), and whether the change's type needs a restart.

use crate::change::{ContentChange, IdKind};
use crate::config::{Target, Unmapped};
use crate::machines::{Machine, MachineState};
use serde_json::Value;

/// Why a target does nothing for this change.
pub fn target_skip_reason(change: &ContentChange, target: &Target) -> Option<String> {
    if !target.accepts_type(&change.doc_type) {
        return Some(format!("type `{}` is not among this target's types", change.doc_type));
    }
    match change.id_kind() {
        IdKind::Draft if !target.include_drafts => Some("draft ids (`drafts.`) do not sync unless the target sets includeDrafts".into()),
        IdKind::Version if !target.include_versions => {
            Some("version ids (`versions.`) do not sync unless the target sets includeVersions".into())
        }
        _ => None,
    }
}

/// The regions this change goes to, sorted and each once: `None` for all of them.
pub fn target_regions(change: &ContentChange, target: &Target) -> Option<Vec<String>> {
    let rule = target.regions.as_ref()?;
    let field = change.field(&rule.field);
    let values: Vec<&str> = match &field {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    // A sorted list kept by inserting in place (a handful of codes; no set type to compile for it).
    let mut mapped: Vec<String> = Vec::new();
    for region in values.iter().filter_map(|v| rule.map.get(*v)).flatten() {
        if let Err(at) = mapped.binary_search(region) {
            mapped.insert(at, region.clone());
        }
    }
    if !mapped.is_empty() {
        return Some(mapped);
    }
    match rule.unmapped {
        Unmapped::All => None,
        Unmapped::None => Some(Vec::new()),
    }
}

/// Why a listed Machine does not get the push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    Stopped,
    Suspended,
    Transient(String),
    NotStarted(String),
    OtherRegion(String),
    Unreachable(String),
    NotAnAppMachine(String),
    /// In a process group the target does not name (`None`: the Machine names none).
    OtherProcessGroup(Option<String>),
    /// In a named group, but with no services: a worker, which Fly's proxy cannot deliver a push to.
    NoService(String),
}

impl Skip {
    pub fn code(&self) -> &'static str {
        match self {
            Skip::Stopped => "stopped",
            Skip::Suspended => "suspended",
            Skip::Transient(_) => "transient_state",
            Skip::NotStarted(_) => "not_started",
            Skip::OtherRegion(_) => "other_region",
            Skip::Unreachable(_) => "host_unreachable",
            Skip::NotAnAppMachine(_) => "not_an_app_machine",
            Skip::OtherProcessGroup(_) => "other_process_group",
            Skip::NoService(_) => "no_http_service",
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Skip::Stopped => "stopped: it loads fresh content when it boots".into(),
            Skip::Suspended => "suspended: it resumes from a memory snapshot with the content it had; not woken for a content change (the receiver's catch-up brings it up to date on resume)".into(),
            Skip::Transient(s) => format!("in transient state `{s}`: it is not serving; it loads content when it is started again"),
            Skip::NotStarted(s) => format!("in state `{s}`: not serving traffic"),
            Skip::OtherRegion(r) => format!("in region `{r}`, which this document does not target"),
            Skip::Unreachable(h) => format!("its host is `{h}`: the Machines API cannot vouch for it"),
            Skip::NotAnAppMachine(g) => format!("a `{g}` Machine, not one that serves the app"),
            Skip::OtherProcessGroup(Some(g)) => format!("in process group `{g}`, which this target's processGroups does not name"),
            Skip::OtherProcessGroup(None) => "its metadata names no process group (fly_process_group), and this target's processGroups names some".into(),
            Skip::NoService(g) => format!(
                "in process group `{g}`, which has no services (a worker): Fly's proxy cannot deliver a push to it; give the group an \
                 http service for the sync path, or let it reconcile with the receiver's catch-up"
            ),
        }
    }
}

/// Which Machines get the push: the `started` ones in the targeted regions (`None` = all regions) and, when the
/// target names process groups, in those groups and with a service to reach them through.
pub fn select(machine: &Machine, regions: Option<&Vec<String>>, groups: Option<&[String]>) -> Result<(), Skip> {
    if let Some(group) = machine.process_group.as_deref().filter(|g| matches!(*g, "fly_app_release_command" | "fly_app_console")) {
        return Err(Skip::NotAnAppMachine(group.to_string()));
    }
    if let Some(groups) = groups {
        match machine.process_group.as_deref() {
            Some(g) if groups.iter().any(|n| n == g) => {
                if machine.services == Some(0) {
                    return Err(Skip::NoService(g.to_string()));
                }
            }
            other => return Err(Skip::OtherProcessGroup(other.map(String::from))),
        }
    }
    match &machine.state {
        MachineState::Started => {}
        MachineState::Stopped => return Err(Skip::Stopped),
        MachineState::Suspended => return Err(Skip::Suspended),
        MachineState::Transient(s) => return Err(Skip::Transient(s.clone())),
        other => return Err(Skip::NotStarted(other.to_string())),
    }
    if !machine.reachable() {
        return Err(Skip::Unreachable(machine.host_status.clone().unwrap_or_default()));
    }
    if let Some(regions) = regions {
        if !regions.contains(&machine.region) {
            return Err(Skip::OtherRegion(machine.region.clone()));
        }
    }
    Ok(())
}

/// Restart needed because of the document's type (settings read at boot).
pub fn restart_for_type(change: &ContentChange, target: &Target) -> bool {
    target.restart.types.contains(&change.doc_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{env, SECRET};
    use crate::config::Config;
    use crate::event::from_function_event;
    use serde_json::json;

    fn target(regions: &str) -> Target {
        let json = format!(r#"{{"targets":[{{"app":"web","types":["page","settings"],"restart":{{"types":["settings"]}},{regions}"maxUnavailable":1}}]}}"#);
        let c = Config::from_env(&env(&[("FLY_SYNC_CONFIG", &json), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET)])).unwrap();
        c.targets.into_iter().next().unwrap()
    }

    fn change(id: &str, doc_type: &str, market: Value) -> ContentChange {
        from_function_event(&json!({"event":{"data":{"_id":id,"_type":doc_type,"_rev":"r","_updatedAt":"2026-11-27T10:00:00Z","market":market}}}), 1_800_000_000_000)
            .unwrap()
    }

    fn machine(state: &str, region: &str) -> Machine {
        Machine::parse_one(&json!({"id":"m","state":state,"region":region}).to_string()).unwrap()
    }

    #[test]
    fn targets_skip_other_types_drafts_and_versions() {
        let t = target("");
        assert!(target_skip_reason(&change("p", "page", Value::Null), &t).is_none());
        assert!(target_skip_reason(&change("p", "author", Value::Null), &t).unwrap().contains("`author`"));
        assert!(target_skip_reason(&change("drafts.p", "page", Value::Null), &t).unwrap().contains("includeDrafts"));
        assert!(target_skip_reason(&change("versions.r.p", "page", Value::Null), &t).unwrap().contains("includeVersions"));
    }

    #[test]
    fn region_targeting_by_field() {
        let t = target(r#""regions":{"field":"market","map":{"us":["ord","iad"],"jp":["nrt"]}},"#);
        let set = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(target_regions(&change("p", "page", json!("jp")), &t), set(&["nrt"]));
        assert_eq!(target_regions(&change("p", "page", json!(["jp", "us"])), &t), set(&["iad", "nrt", "ord"]));
        assert_eq!(target_regions(&change("p", "page", json!("eu")), &t), None, "unmapped goes everywhere");
        let none = target(r#""regions":{"field":"market","map":{"us":"ord"},"unmapped":"none"},"#);
        assert_eq!(target_regions(&change("p", "page", Value::Null), &none), set(&[]));
        assert_eq!(target_regions(&change("p", "page", json!("us")), &target("")), None, "no rule: everywhere");
    }

    #[test]
    fn only_started_reachable_machines_in_region_are_selected() {
        let ord: Vec<String> = vec!["ord".to_string()];
        assert_eq!(select(&machine("started", "ord"), Some(&ord), None), Ok(()));
        assert_eq!(select(&machine("started", "nrt"), Some(&ord), None), Err(Skip::OtherRegion("nrt".into())));
        assert_eq!(select(&machine("stopped", "ord"), None, None), Err(Skip::Stopped));
        assert_eq!(select(&machine("suspended", "ord"), None, None), Err(Skip::Suspended));
        assert_eq!(select(&machine("restarting", "ord"), None, None), Err(Skip::Transient("restarting".into())));
        assert_eq!(select(&machine("created", "ord"), None, None), Err(Skip::NotStarted("created".into())));
        let mut m = machine("started", "ord");
        m.host_status = Some("unreachable".into());
        assert_eq!(select(&m, None, None).unwrap_err().code(), "host_unreachable");
        m.host_status = None;
        m.process_group = Some("fly_app_release_command".into());
        assert_eq!(select(&m, None, None).unwrap_err().code(), "not_an_app_machine");
    }

    #[test]
    fn a_target_naming_process_groups_skips_other_groups_and_workers_with_a_reason() {
        let grouped = |group: Option<&str>, services: Option<usize>| {
            let mut config = json!({"metadata": {}});
            if let Some(g) = group {
                config["metadata"]["fly_process_group"] = json!(g);
            }
            if let Some(n) = services {
                config["services"] = Value::Array(vec![json!({"internal_port": 8080}); n]);
            }
            Machine::parse_one(&json!({"id": "m", "state": "started", "region": "ord", "config": config}).to_string()).unwrap()
        };
        let web = ["web".to_string(), "app".to_string()];
        assert_eq!(select(&grouped(Some("web"), Some(1)), None, Some(&web)), Ok(()));
        assert_eq!(select(&grouped(Some("app"), Some(2)), None, Some(&web)), Ok(()));
        let other = select(&grouped(Some("worker"), Some(1)), None, Some(&web)).unwrap_err();
        assert_eq!((other.code(), other.reason().as_str()), ("other_process_group", "in process group `worker`, which this target's processGroups does not name"));
        assert_eq!(select(&grouped(None, Some(1)), None, Some(&web)).unwrap_err().code(), "other_process_group");
        // A worker the target names: refused with the way out, never pushed to and failed.
        let workers = ["worker".to_string()];
        let worker = select(&grouped(Some("worker"), None), None, Some(&workers)).unwrap_err();
        assert_eq!(worker.code(), "no_http_service");
        assert!(worker.reason().contains("Fly's proxy cannot deliver a push to it") && worker.reason().contains("catch-up"), "{}", worker.reason());
        // No groups named: every group serves, as before (a worker in the list is left to the proxy).
        assert_eq!(select(&grouped(Some("worker"), None), None, None), Ok(()));
        // A Machine listed without its config is not judged by what the answer left out.
        assert_eq!(select(&machine("started", "ord"), None, Some(&web)).unwrap_err().code(), "other_process_group");
    }

    #[test]
    fn restart_rule_by_type() {
        let t = target("");
        assert!(restart_for_type(&change("s", "settings", Value::Null), &t));
        assert!(!restart_for_type(&change("p", "page", Value::Null), &t));
    }
}
