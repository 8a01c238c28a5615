//! The part of Fly's `Machine` object the engine reads, parsed leniently (unknown fields ignored) but
//! checked where it matters (`id`, `state`).

use crate::error::SyncError;
use crate::json_read::Obj;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub id: String,
    pub region: String,
    pub state: String,
    /// `ok`, `unknown`, `unreachable`; absent on older API versions (taken as ok).
    pub host_status: Option<String>,
    pub process_group: Option<String>,
    /// Health checks, without the `bg_deployments_compat*` ones flaps injects.
    pub checks: Vec<Check>,
    /// The newest event's timestamp (ms), to tell a fresh start from the one before a restart.
    pub newest_event_ms: u64,
    /// The newest event that reports the Machine `started` (type start/restart/launch).
    pub newest_start_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub status: String,
}

impl Machine {
    pub fn parse(value: &Value, field: &str) -> Result<Machine, SyncError> {
        let obj = Obj::root(value, field, "the Machine")?;
        let id = obj.str_req("id", "a Machine id")?.to_string();
        let state = obj.str_req("state", "a Machine state")?.to_string();
        let region = obj.str_opt("region")?.unwrap_or("").to_string();
        let host_status = obj.str_opt("host_status")?.map(String::from);
        let config = value.get("config").or_else(|| value.get("incomplete_config"));
        let process_group = config
            .and_then(|c| c.get("metadata"))
            .and_then(|m| m.get("fly_process_group"))
            .and_then(Value::as_str)
            .map(String::from);
        let checks = value
            .get("checks")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|c| {
                        let name = c.get("name")?.as_str()?.to_string();
                        let status = c.get("status").and_then(Value::as_str).unwrap_or("unknown").to_string();
                        (!name.starts_with("bg_deployments_compat")).then_some(Check { name, status })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut newest_event_ms = 0;
        let mut newest_start_ms = 0;
        for e in value.get("events").and_then(Value::as_array).into_iter().flatten() {
            let ts = e.get("timestamp").and_then(Value::as_u64).unwrap_or(0);
            newest_event_ms = newest_event_ms.max(ts);
            if e.get("status").and_then(Value::as_str) == Some("started") {
                newest_start_ms = newest_start_ms.max(ts);
            }
        }
        Ok(Machine { id, region, state, host_status, process_group, checks, newest_event_ms, newest_start_ms })
    }

    pub fn parse_list(body: &str) -> Result<Vec<Machine>, SyncError> {
        let value: Value = serde_json::from_str(body)
            .map_err(|_| SyncError::fatal("the Machines API list answer is not JSON"))?;
        let items = value.as_array().ok_or_else(|| SyncError::fatal("the Machines API list answer is not a list"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, m)| Machine::parse(m, &format!("machines[{i}]")).map_err(|e| SyncError::fatal(format!("Machines API answer: {e}"))))
            .collect()
    }

    pub fn parse_one(body: &str) -> Result<Machine, SyncError> {
        let value: Value = serde_json::from_str(body).map_err(|_| SyncError::fatal("the Machines API answer is not JSON"))?;
        Machine::parse(&value, "machine").map_err(|e| SyncError::fatal(format!("Machines API answer: {e}")))
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
        self.checks.iter().map(|c| format!("{}={}", c.name, c.status)).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_the_engine_needs() {
        let m = Machine::parse(
            &json!({"id":"3d8d413b29d089","region":"ord","state":"started","host_status":"ok",
                "config":{"metadata":{"fly_process_group":"app"}},
                "checks":[{"name":"servicecheck-00-http-8080","status":"passing"},{"name":"bg_deployments_compat_x","status":"critical"}],
                "events":[{"type":"start","status":"started","timestamp":1700000005000u64},{"type":"launch","status":"created","timestamp":1700000000000u64}]}),
            "m",
        )
        .unwrap();
        assert_eq!(m.process_group.as_deref(), Some("app"));
        assert_eq!(m.checks.len(), 1);
        assert!(m.checks_passing() && m.reachable());
        assert_eq!((m.newest_event_ms, m.newest_start_ms), (1700000005000, 1700000005000));
    }

    #[test]
    fn rejects_answers_without_id_or_state() {
        let e = Machine::parse_list(r#"[{"id":"a","state":"started"},{"state":"started"}]"#).unwrap_err();
        assert!(e.message.contains("machines[1].id"), "{}", e.message);
        assert!(Machine::parse_list("{}").is_err());
        assert!(Machine::parse_list("<html>").is_err());
    }
}
