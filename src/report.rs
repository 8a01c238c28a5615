//! The run's result: per target and per Machine, what happened and why, with durations and request counts.
//! It is what the Function logs and what tests assert on; it never holds a secret.

use crate::change::{ContentChange, Op, Operation, Source};
use crate::config::{Config, Target};
use crate::engine::Work;
use crate::error::{ErrorClass, SyncError};
use crate::redact::Redactor;
use crate::run::{DependentsRun, DependentsState, MachineRun, RestartState, SyncState, TargetRun};
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
    /// The change this run synced; `null` for a resume run, which only finishes unfinished restarts, and for a
    /// sync-tag run.
    pub change: Option<ChangeSummary>,
    /// The sync tags this run pushed (a sync-tag run only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub sync_tags: Option<SyncTagsSummary>,
    /// Machines whose restart is left for a later run (recorded on them; see `resumeWith`).
    pub resumable: u32,
    /// When some of a roll is left: the Function to invoke, and its event data, so the roll goes on without
    /// waiting for the next edit (the shim invokes it where the runtime can).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub resume_with: Option<Continuation>,
    #[cfg_attr(test, ts(type = "number"))]
    pub started_at_ms: u64,
    #[cfg_attr(test, ts(type = "number"))]
    pub duration_ms: u64,
    pub targets: Vec<TargetReport>,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct SyncTagsSummary {
    pub count: u32,
    pub idempotency_key: String,
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
    /// The documents that reference the change, refreshed with it (absent when none were looked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub dependents: Option<DependentsReport>,
    pub requests: RequestCounts,
}

/// What the dependents lookup found and pushed, or why it did not.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct DependentsReport {
    /// Ids of the documents whose routes and tags rode in the push.
    pub pushed: Vec<String>,
    /// More than the cap: how many were left out, covered by their types' tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub left_out: Option<crate::protocol::More>,
    /// Levels of references looked up.
    pub levels: u8,
    /// The lookup had no token, and what that misses (a private dataset shows an anonymous query nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub without_token: Option<String>,
    /// Why they were not looked up (no project known).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub not_looked_up: Option<String>,
    /// The lookup failed: the document was pushed without its dependents.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub error: Option<SyncError>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct RequestCounts {
    pub machines_api: u32,
    pub app: u32,
    /// Queries to Sanity (the dependents lookup).
    pub sanity: u32,
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
    /// Planned but not attempted: the roll stopped at a failure, or a lease was held elsewhere.
    NotAttempted,
    /// Stopped or destroyed by someone else during the roll: nothing left to restart.
    Skipped,
    /// It started after the change (or after the restart owed was recorded): it runs the change already.
    NotNeeded,
    /// Left for the next run by the budget; the restart stays recorded on it.
    Resumable,
    /// Owes a restart but does not serve now; a later run restarts it once it serves.
    Deferred,
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
    /// Machines still owed a restart an earlier run recorded on them.
    Unfinished,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct RestartReport {
    pub cause: RestartCause,
    pub planned: u32,
    pub restarted: u32,
    /// As configured: a count (`"2"`) or a fraction of each region (`"33%"`).
    pub max_unavailable: String,
    /// The most Machines this run had down at once.
    pub max_down: u32,
    /// Machines left for a later run.
    pub resumable: u32,
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
        // A roll left for later: a 5xx makes Sanity deliver again, and that run finishes it.
        if self.ok && self.resumable > 0 {
            return 503;
        }
        if self.ok {
            return 200;
        }
        let errors = self.targets.iter().flat_map(|t| {
            t.error.iter().chain(t.dependents.iter().flat_map(|d| d.error.iter())).chain(t.machines.iter().flat_map(|m| {
                m.error.iter().chain(m.restart.iter().flat_map(|r| r.error.iter()))
            }))
        });
        let retryable = errors.clone().any(|e| e.class == ErrorClass::Retryable);
        if retryable || errors.count() == 0 { 503 } else { 500 }
    }

    /// Redact any secret in the report's free text (defence in depth: what other parties said was scrubbed
    /// on arrival, but an answer that succeeded carries text too).
    pub fn scrub(&mut self, redactor: &Redactor) {
        let clean = |s: &mut String| redactor.scrub_in_place(s);
        let clean_err = |e: &mut Option<SyncError>| {
            if let Some(e) = e {
                clean(&mut e.message);
            }
        };
        for t in &mut self.targets {
            clean_err(&mut t.error);
            if let Some(d) = &mut t.dependents {
                clean_err(&mut d.error);
            }
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

/// A Function to invoke with `data` as its event data.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Continuation {
    pub function: String,
    #[cfg_attr(test, ts(type = "Record<string, string>"))]
    /// The map type the environment and headers already use (one type fewer in the module).
    pub data: std::collections::BTreeMap<String, String>,
}

/// The report of a run that ended at `now_ms`, from what it knows (`run`).
pub(crate) fn assemble(config: &Config, work: &Work, runs: &[TargetRun], started_ms: u64, now_ms: u64, redactor: &Redactor) -> Report {
    let change = work.change();
    let dry_run = config.dry_run;
    let pushes = !matches!(work, Work::Resume);
    let targets: Vec<TargetReport> = runs.iter().zip(&config.targets).map(|(run, target)| target_report(run, target, dry_run, pushes)).collect();
    let statuses: Vec<Status> = targets.iter().map(|t| t.status).collect();
    let status = if statuses.iter().all(|s| *s == Status::Skipped) {
        Status::Skipped
    } else if statuses.contains(&Status::Failed) && !statuses.iter().any(|s| matches!(s, Status::Ok | Status::Partial)) {
        Status::Failed
    } else if statuses.iter().any(|s| matches!(s, Status::Failed | Status::Partial)) {
        Status::Partial
    } else if dry_run {
        Status::Planned
    } else {
        Status::Ok
    };
    let resumable: u32 = targets.iter().filter_map(|t| t.restart.as_ref()).map(|r| r.resumable).sum();
    let restarted: u32 = targets.iter().filter_map(|t| t.restart.as_ref()).map(|r| r.restarted).sum();
    let mut report = Report {
        ok: matches!(status, Status::Ok | Status::Skipped | Status::Planned),
        status,
        dry_run,
        change: change.map(ChangeSummary::of),
        sync_tags: match work {
            Work::SyncTags(t) => Some(SyncTagsSummary { count: t.tags.len() as u32, idempotency_key: t.idempotency_key.clone() }),
            _ => None,
        },
        resumable,
        // A resume run that restarted nothing hands nothing on: no chain of runs that make no progress.
        resume_with: config.resume_function.clone().filter(|_| resumable > 0 && !dry_run && (change.is_some() || restarted > 0)).map(|function| Continuation {
            function,
            data: [(crate::event::CONTINUATION_KEY.to_string(), crate::event::RESUME.to_string())].into(),
        }),
        started_at_ms: started_ms,
        duration_ms: now_ms.saturating_sub(started_ms),
        targets,
    };
    report.scrub(redactor);
    report
}

fn target_report(run: &TargetRun, target: &Target, dry_run: bool, pushes: bool) -> TargetReport {
    let mut machines: Vec<MachineReport> = run.machines.iter().map(machine_report).collect();
    // By region and id, as the list is read (Machines a run learnt of after pushing ahead come last in `run`).
    if run.pushed_ahead {
        crate::machines::sort_by_region_id(&mut machines, |m| (&m.region, &m.id));
    }
    let count = |f: fn(&RestartState) -> bool| run.machines.iter().filter(|m| f(&m.restart)).count() as u32;
    let restart = run.restart_cause.map(|cause| RestartReport {
        cause,
        planned: count(|r| {
            !matches!(r, RestartState::None | RestartState::NotNeeded(_) | RestartState::Skipped(_) | RestartState::Resumable(_) | RestartState::Deferred(_))
        }),
        restarted: count(|r| matches!(r, RestartState::Restarted { .. })),
        max_unavailable: target.max_unavailable.to_string(),
        max_down: run.max_down as u32,
        resumable: count(|r| matches!(r, RestartState::Resumable(_))),
        stopped_early: run.stopped_early.clone(),
        unreleased_leases: run.machines.iter().filter(|m| m.nonce.is_some()).map(|m| m.machine.id.clone()).collect(),
    });
    let failed_sync = machines.iter().filter(|m| m.sync == SyncOutcome::Failed).count();
    let synced = machines.iter().filter(|m| matches!(m.sync, SyncOutcome::Synced | SyncOutcome::SharedStore)).count();
    let restart_failed = restart.as_ref().is_some_and(|r| r.restarted < r.planned);
    let dependents = dependents_report(&run.dependents);
    let dependents_failed = dependents.as_ref().is_some_and(|d| d.error.is_some());
    let status = if run.skipped.is_some() {
        Status::Skipped
    } else if run.error.is_some() {
        Status::Failed
    } else if dry_run {
        Status::Planned
    } else if failed_sync == 0 && !restart_failed && !dependents_failed {
        let (restarted, resumable) = restart.as_ref().map_or((0, 0), |r| (r.restarted, r.resumable));
        match (synced + restarted as usize, resumable) {
            // Nothing done and restarts left: the budget could not see even one through (`stoppedEarly` says).
            (0, 1..) => Status::Partial,
            (0, 0) => Status::Skipped,
            _ => Status::Ok,
        }
    } else if synced > 0 {
        Status::Partial
    } else {
        Status::Failed
    };
    let skipped = match (&run.skipped, status) {
        (Some(why), _) => Some(why.clone()),
        (None, Status::Skipped) if pushes => Some("no Machine is serving in the targeted regions".into()),
        (None, Status::Skipped) => Some("no Machine owes a restart".into()),
        (None, _) => None,
    };
    TargetReport {
        name: target.name.clone(),
        app: target.app.clone(),
        status,
        skipped,
        error: run.error.clone(),
        regions: run.regions.as_ref().map(|r| r.iter().cloned().collect()),
        machines,
        restart,
        dependents,
        requests: run.counts,
    }
}

fn dependents_report(run: &DependentsRun) -> Option<DependentsReport> {
    let base = |error: Option<SyncError>, not_looked_up: Option<String>| DependentsReport {
        pushed: run.found.documents.iter().map(|d| d.id.clone()).collect(),
        left_out: run.found.more.clone(),
        levels: run.level,
        without_token: run.anonymous.then(|| {
            "looked up without a token: a private dataset answers such a query with no documents, so its dependents stay stale; give the Function a robot token (its blueprint's robotToken) or set SANITY_API_READ_TOKEN for the webhook entry".to_string()
        }),
        not_looked_up,
        error,
    };
    match &run.state {
        DependentsState::Off => None,
        DependentsState::NotLookedUp(why) => Some(base(None, Some(why.clone()))),
        DependentsState::Failed(e) => Some(DependentsReport { pushed: vec![], left_out: None, ..base(Some(e.clone()), None) }),
        DependentsState::Querying => Some(base(Some(SyncError::retryable("the run ended before the dependents were found")), None)),
        DependentsState::Done => Some(base(None, None)),
    }
}

fn machine_report(m: &MachineRun) -> MachineReport {
    let (sync, skip_code, reason, receiver, error) = match &m.sync {
        SyncState::NotSelected(skip) => (SyncOutcome::Skipped, Some(skip.code()), Some(skip.reason()), None, None),
        SyncState::Gone(skip) => {
            (SyncOutcome::Skipped, Some(skip.code()), Some(format!("no longer serving when pushed: {}", skip.reason())), None, None)
        }
        SyncState::Pending => (SyncOutcome::Failed, None, None, None, Some(SyncError::retryable("not synced: the run ended first"))),
        SyncState::Synced(ack) => (SyncOutcome::Synced, None, None, Some(ack.status.as_str().to_string()), None),
        SyncState::SharedStore => (SyncOutcome::SharedStore, None, Some("fan-out `one`: shares the store of the Machine that acked".into()), None, None),
        SyncState::Failed(e) => (SyncOutcome::Failed, None, None, None, Some(e.clone())),
        SyncState::WouldSync => (SyncOutcome::WouldSync, None, None, None, None),
        SyncState::NothingToPush => (SyncOutcome::Skipped, Some("nothing_to_push"), Some("a resume run: it only finishes restarts".into()), None, None),
    };
    let restart_of = |outcome, reason: Option<String>, error: Option<SyncError>, duration_ms| Some(MachineRestart { outcome, reason, error, duration_ms });
    let restart = match &m.restart {
        RestartState::None => None,
        RestartState::Planned => restart_of(RestartOutcome::NotAttempted, Some("planned, not reached".into()), None, None),
        RestartState::Leasing | RestartState::WaitingForLease | RestartState::Settling | RestartState::Sent { .. } => {
            restart_of(RestartOutcome::Failed, None, Some(SyncError::retryable("restart under way, not confirmed before the run ended")), None)
        }
        RestartState::Skipped(why) => restart_of(RestartOutcome::Skipped, Some(why.clone()), None, None),
        RestartState::NotNeeded(why) => restart_of(RestartOutcome::NotNeeded, Some(why.clone()), None, None),
        RestartState::Resumable(why) => restart_of(RestartOutcome::Resumable, Some(why.clone()), None, None),
        RestartState::Deferred(why) => restart_of(RestartOutcome::Deferred, Some(why.clone()), None, None),
        RestartState::Restarted { ms } => restart_of(RestartOutcome::Restarted, None, None, Some(*ms)),
        RestartState::Failed(e) => restart_of(RestartOutcome::Failed, None, Some(e.clone()), None),
        RestartState::NotAttempted(why) => restart_of(RestartOutcome::NotAttempted, Some(why.clone()), None, None),
        RestartState::WouldRestart => restart_of(RestartOutcome::WouldRestart, None, None, None),
    };
    MachineReport {
        id: m.machine.id.clone(),
        region: m.machine.region.clone(),
        state: m.machine.state.to_string(),
        sync,
        skip_code,
        reason,
        receiver,
        error,
        attempts: m.sync_attempts,
        sync_ms: m.sync_ms,
        restart,
    }
}
