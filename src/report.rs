//! The run's result: per target and per Machine, what happened and why, with durations and request counts.
//! It is what the Function logs and what tests assert on; it never holds a secret.

use crate::change::{ContentChange, Op, Operation, Source};
use crate::error::{ErrorClass, SyncError};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Everything that should have happened did.
    Ok,
    /// Nothing to do for this change (type, draft, no Machine serving).
    Skipped,
    /// Dry run: planned, nothing sent that changes anything.
    Planned,
    /// Some Machines synced, some did not.
    Partial,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub ok: bool,
    pub status: Status,
    pub dry_run: bool,
    pub change: ChangeSummary,
    #[cfg_attr(test, ts(type = "number"))]
    pub started_at_ms: u64,
    #[cfg_attr(test, ts(type = "number"))]
    pub duration_ms: u64,
    pub targets: Vec<TargetReport>,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct ChangeSummary {
    pub op: Op,
    pub operation: Operation,
    pub source: Source,
    pub id: String,
    #[serde(rename = "type")]
    pub doc_type: String,
    pub rev: String,
    pub idempotency_key: String,
}

impl ChangeSummary {
    pub fn of(c: &ContentChange) -> Self {
        ChangeSummary {
            op: c.op,
            operation: c.operation,
            source: c.source,
            id: c.id.clone(),
            doc_type: c.doc_type.clone(),
            rev: c.rev.clone(),
            idempotency_key: c.idempotency_key.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct TargetReport {
    pub name: String,
    pub app: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub skipped: Option<String>,
    /// A failure of the target as a whole (the Machine list could not be read, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub error: Option<SyncError>,
    /// `None`: every region.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub regions: Option<Vec<String>>,
    pub machines: Vec<MachineReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub restart: Option<RestartReport>,
    pub requests: RequestCounts,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct RequestCounts {
    pub machines_api: u32,
    pub app: u32,
    pub retries: u32,
    pub rate_limited: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum SyncOutcome {
    Synced,
    /// Fan-out `one`: the push went to one Machine of an app whose Machines share a store.
    SharedStore,
    Skipped,
    Failed,
    WouldSync,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct MachineReport {
    pub id: String,
    pub region: String,
    pub state: String,
    pub sync: SyncOutcome,
    /// Why it was skipped (`stopped`, `suspended`, …), as a code and a sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub skip_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub reason: Option<String>,
    /// The receiver's verdict: `applied`, `duplicate`, `stale`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub receiver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub error: Option<SyncError>,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional, type = "number"))]
    pub sync_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub restart: Option<MachineRestart>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum RestartOutcome {
    Restarted,
    Failed,
    /// Planned but not attempted: the roll stopped earlier, a lease was held elsewhere, or time ran out.
    NotAttempted,
    WouldRestart,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct MachineRestart {
    pub outcome: RestartOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub error: Option<SyncError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional, type = "number"))]
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum RestartCause {
    /// The document's type is in the target's restart types.
    DocumentType,
    /// A receiver answered `restart: "required"`.
    Receiver,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct RestartReport {
    pub cause: RestartCause,
    pub planned: u32,
    pub restarted: u32,
    pub max_unavailable: u32,
    /// The most Machines this run had down at once (never above `max_unavailable`).
    pub max_down: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub stopped_early: Option<String>,
    /// Leases we could not release (they expire by their TTL).
    pub unreleased_leases: Vec<String>,
}

impl Report {
    /// The status a webhook entry answers with: 200 when done; 503 when a retry may help (Sanity retries
    /// 5xx); 500 when something needs fixing first (a refused token, a receiver that rejects us).
    pub fn webhook_status(&self) -> u16 {
        if self.ok {
            return 200;
        }
        let errors = self.targets.iter().flat_map(|t| {
            t.error.iter().chain(t.machines.iter().flat_map(|m| {
                m.error.iter().chain(m.restart.iter().flat_map(|r| r.error.iter()))
            }))
        });
        let retryable = errors.clone().any(|e| e.class == ErrorClass::Retryable);
        if retryable || errors.count() == 0 { 503 } else { 500 }
    }

    /// Replace any occurrence of a secret in the report's free text (defence in depth: no code path puts one
    /// there, but an upstream error message could echo something).
    pub fn scrub(&mut self, secrets: &[&str]) {
        let clean = |s: &mut String| {
            for secret in secrets.iter().filter(|s| s.len() >= 4) {
                if s.contains(secret) {
                    *s = s.replace(secret, "[redacted]");
                }
            }
        };
        let clean_err = |e: &mut Option<SyncError>| {
            if let Some(e) = e {
                clean(&mut e.message);
            }
        };
        for t in &mut self.targets {
            clean_err(&mut t.error);
            t.skipped.as_mut().map(clean);
            for m in &mut t.machines {
                clean_err(&mut m.error);
                m.reason.as_mut().map(clean);
                if let Some(r) = &mut m.restart {
                    clean_err(&mut r.error);
                    r.reason.as_mut().map(clean);
                }
            }
            if let Some(r) = &mut t.restart {
                r.stopped_early.as_mut().map(clean);
            }
        }
    }
}
