//! The sans-IO sync engine. It never does I/O and never reads a clock: `poll(now)` says what to do next
//! (send these requests, wait until an instant, or done with a report) and `handle_response(id, response, now)`
//! feeds an answer back. The shim executes; every decision is here and testable with simulated time.
//!
//! Per target: list Machines → push the signed payload to each selected one (in parallel) → if a restart is
//! needed, lease every chosen Machine, restart at most `max_unavailable` at a time, each confirmed `started`
//! with passing checks before the next, stop at the first failure → release the leases → report.

use crate::change::ContentChange;
use crate::config::{Config, FanOut, Target};
use crate::error::{ErrorClass, SyncError};
use crate::http::{Method, Request, RequestId, RequestLog, Response};
use crate::machines::Machine;
use crate::plan::{self, Skip};
use crate::protocol::{self, Ack};
use crate::report::*;
use crate::retry::{self, Verdict};
use crate::signature;
use serde::Serialize;
use std::collections::{BTreeSet, VecDeque};

/// How often a restarting Machine is read back (Fly allows 5 GETs/s per Machine; one a second is plenty).
pub const POLL_INTERVAL_MS: u64 = 1_000;
/// Time kept back at the end of the budget to release leases.
pub const RELEASE_RESERVE_MS: u64 = 2_000;
/// A Machine list this recent may stand in for a new one when only content is pushed: the runs of a content
/// release then share one list call instead of each spending one against the app's Machines API rate limit.
/// (Restarts never rely on it: a roll reads the list afresh for its baselines.)
pub const LIST_REUSE_MS: u64 = 1_000;
const LEASE_DESCRIPTION: &str = "sanity-fly-sync rolling restart";

/// What the shim should do next.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Action {
    /// Send these now, concurrently; feed each answer to `handle_response`.
    Send { requests: Vec<Request> },
    /// Nothing to send: wait for an answer of a request in flight, or until `until_ms`, then `poll` again.
    Wait {
        #[cfg_attr(test, ts(type = "number"))]
        until_ms: u64,
    },
    Done { report: Box<Report> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    List,
    Sync,
    Lease,
    Restart,
    /// Read a restarted Machine until it is started and healthy.
    Poll,
    /// Read a Machine after an ambiguous restart answer, before deciding to send the restart again.
    Verify,
    Release,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::List => "list",
            Kind::Sync => "sync",
            Kind::Lease => "lease",
            Kind::Restart => "restart",
            Kind::Poll => "poll",
            Kind::Verify => "verify",
            Kind::Release => "release",
        }
    }
}

/// One logical call, possibly sent several times.
#[derive(Debug)]
struct Call {
    target: usize,
    machine: Option<usize>,
    kind: Kind,
    attempts: u32,
    not_before: u64,
    in_flight: Option<RequestId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Listing,
    Syncing,
    /// Reading the Machines afresh before a roll, when the first list may have been a reused one.
    Relisting,
    Leasing,
    Restarting,
    Releasing,
    Done,
}

#[derive(Debug)]
enum SyncState {
    NotSelected(Skip),
    Pending,
    Synced(Ack),
    SharedStore,
    Failed(SyncError),
    WouldSync,
}

#[derive(Debug)]
enum RestartState {
    None,
    Planned,
    Sent { at: u64, baseline_ms: u64, seen_down: bool },
    Restarted { ms: u64 },
    Failed(SyncError),
    NotAttempted(String),
    WouldRestart,
}

#[derive(Debug)]
struct MachineRun {
    machine: Machine,
    had_checks: bool,
    sync: SyncState,
    sync_attempts: u32,
    sync_started: Option<u64>,
    sync_ms: Option<u64>,
    restart: RestartState,
    nonce: Option<String>,
    lease_refused: Option<SyncError>,
    release_error: Option<SyncError>,
}

#[derive(Debug)]
struct TargetRun {
    phase: Phase,
    skipped: Option<String>,
    error: Option<SyncError>,
    regions: Option<BTreeSet<String>>,
    body: String,
    machines: Vec<MachineRun>,
    restart_cause: Option<RestartCause>,
    queue: VecDeque<usize>,
    stopped_early: Option<String>,
    max_down: usize,
    counts: RequestCounts,
    /// The first list may be answered from a recent one (no restart by type is in play).
    list_reusable: bool,
    /// The payload's signature at one instant: the pushes sent together share it (one HMAC, not one each).
    signed: Option<(u64, String)>,
}

impl TargetRun {
    fn down(&self) -> usize {
        self.machines.iter().filter(|m| matches!(m.restart, RestartState::Sent { .. })).count()
    }
}

pub struct Engine {
    config: Config,
    change: ContentChange,
    started_ms: u64,
    work_deadline_ms: u64,
    deadline_ms: u64,
    rng: fastrand::Rng,
    next_id: RequestId,
    calls: Vec<Call>,
    targets: Vec<TargetRun>,
    done: Option<Report>,
}

impl Engine {
    /// `seed` feeds the retry jitter (the shim passes a random one; tests a fixed one).
    pub fn new(config: Config, change: ContentChange, now_ms: u64, seed: u64) -> Engine {
        let deadline_ms = now_ms + config.budget_ms;
        let reserve = RELEASE_RESERVE_MS.min(config.budget_ms / 5);
        let mut engine = Engine {
            work_deadline_ms: deadline_ms - reserve,
            deadline_ms,
            started_ms: now_ms,
            rng: fastrand::Rng::with_seed(seed),
            next_id: 1,
            calls: Vec::new(),
            targets: Vec::new(),
            done: None,
            config,
            change,
        };
        for i in 0..engine.config.targets.len() {
            let target = &engine.config.targets[i];
            let skipped = plan::target_skip_reason(&engine.change, target);
            let run = TargetRun {
                phase: if skipped.is_some() { Phase::Done } else { Phase::Listing },
                regions: plan::target_regions(&engine.change, target),
                body: protocol::payload_body(&engine.change, target),
                skipped,
                error: None,
                machines: Vec::new(),
                restart_cause: None,
                queue: VecDeque::new(),
                stopped_early: None,
                max_down: 0,
                counts: RequestCounts::default(),
                list_reusable: !plan::restart_for_type(&engine.change, target),
                signed: None,
            };
            if run.phase == Phase::Listing {
                engine.calls.push(Call { target: i, machine: None, kind: Kind::List, attempts: 0, not_before: now_ms, in_flight: None });
            }
            engine.targets.push(run);
        }
        engine
    }

    /// The next thing to do at `now_ms`.
    pub fn poll(&mut self, now_ms: u64) -> Action {
        if let Some(report) = &self.done {
            return Action::Done { report: Box::new(report.clone()) };
        }
        for t in 0..self.targets.len() {
            self.advance(t, now_ms);
        }
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for c in 0..self.calls.len() {
            let call = &self.calls[c];
            if call.in_flight.is_some() || call.not_before > now_ms {
                continue;
            }
            let limit = if call.kind == Kind::Release { self.deadline_ms } else { self.work_deadline_ms };
            if now_ms + 100 > limit {
                expired.push(c);
                continue;
            }
            let timeout = self.config.request_timeout_ms.min(limit - now_ms);
            let request = self.request_for(c, now_ms, timeout);
            self.calls[c].in_flight = Some(request.id);
            self.calls[c].attempts += 1;
            out.push(request);
        }
        // Calls that can no longer be sent inside the budget end as failures, newest index first.
        for c in expired.into_iter().rev() {
            let call = self.calls.remove(c);
            let error = SyncError::retryable(format!("{}: time budget of {} ms exhausted", call.kind.name(), self.config.budget_ms));
            self.finish_call(call, Err(error), now_ms);
        }
        if !out.is_empty() {
            return Action::Send { requests: out };
        }
        if self.calls.is_empty() {
            // A finished call may have moved a target to its next phase: let it plan before deciding we are done.
            for t in 0..self.targets.len() {
                self.advance(t, now_ms);
            }
            if self.calls.is_empty() {
                let report = self.build_report(now_ms);
                self.done = Some(report.clone());
                return Action::Done { report: Box::new(report) };
            }
            return self.poll(now_ms);
        }
        let next = self.calls.iter().filter(|c| c.in_flight.is_none()).map(|c| c.not_before).min();
        Action::Wait { until_ms: next.unwrap_or(self.deadline_ms).min(self.deadline_ms).max(now_ms) }
    }

    /// Feed back the answer to request `id`. Unknown ids (a duplicate, a late answer) are ignored.
    pub fn handle_response(&mut self, id: RequestId, response: Response, now_ms: u64) {
        let Some(c) = self.calls.iter().position(|c| c.in_flight == Some(id)) else { return };
        let mut call = self.calls.remove(c);
        call.in_flight = None;
        let target = &self.config.targets[call.target];
        let what = describe(call.kind, target, call.machine.map(|m| self.targets[call.target].machines[m].machine.id.as_str()));
        let verdict = match (call.kind, &response) {
            // A lease held by someone else is not an error to retry: someone else is operating on the Machine.
            (Kind::Lease, Response::Http { status: 409, body, .. }) => {
                Verdict::Fail(SyncError::fatal(format!("lease held elsewhere{}", retry::error_detail(body))))
            }
            // A lease that expired already is as good as released.
            (Kind::Release, Response::Http { status: 404, .. }) => Verdict::Success { status: 404, body: String::new() },
            _ => retry::classify(&response, &what, now_ms),
        };
        let counts = &mut self.targets[call.target].counts;
        match verdict {
            Verdict::Success { body, .. } => self.finish_call(call, Ok(body), now_ms),
            Verdict::Retry { error, min_delay_ms, rate_limited } => {
                if rate_limited {
                    counts.rate_limited += 1;
                }
                // A restart that may have happened must not simply be sent again: read the Machine first.
                if call.kind == Kind::Restart && !rate_limited {
                    counts.retries += 1;
                    self.calls.push(Call { kind: Kind::Verify, attempts: 0, not_before: now_ms, ..call });
                    return;
                }
                // A failed read of a restarting Machine is just one poll less.
                if call.kind == Kind::Poll {
                    self.schedule_poll(call.target, call.machine.expect("poll has a machine"), now_ms, Some(error));
                    return;
                }
                let delay = retry::backoff_ms(call.attempts, &mut self.rng, min_delay_ms);
                let limit = if call.kind == Kind::Release { self.deadline_ms } else { self.work_deadline_ms };
                let max_attempts = if rate_limited { retry::MAX_RATE_LIMITED_ATTEMPTS } else { retry::MAX_ATTEMPTS };
                if call.attempts >= max_attempts {
                    let e = SyncError::retryable(format!("{} (gave up after {} attempts)", error.message, call.attempts));
                    self.finish_call(call, Err(e), now_ms);
                } else if now_ms + delay + 100 > limit {
                    let e = SyncError::retryable(format!("{} (no time left in the {} ms budget to retry)", error.message, self.config.budget_ms));
                    self.finish_call(call, Err(e), now_ms);
                } else {
                    self.targets[call.target].counts.retries += 1;
                    self.calls.push(Call { not_before: now_ms + delay, ..call });
                }
            }
            Verdict::Fail(error) => self.finish_call(call, Err(error), now_ms),
        }
    }

    /// The report, once `poll` has returned `Done`.
    pub fn report(&self) -> Option<&Report> {
        self.done.as_ref()
    }

    fn schedule_poll(&mut self, t: usize, m: usize, now_ms: u64, last_error: Option<SyncError>) {
        let target = &self.config.targets[t];
        let run = &mut self.targets[t].machines[m];
        let RestartState::Sent { at, .. } = run.restart else { return };
        if now_ms.saturating_sub(at) >= target.restart_timeout_ms || now_ms + POLL_INTERVAL_MS + 100 > self.work_deadline_ms {
            let last = match last_error {
                Some(e) => format!("last read failed: {}", e.message),
                None => format!("state `{}`, checks: {}", run.machine.state, run.machine.checks_summary()),
            };
            let limit = if now_ms.saturating_sub(at) >= target.restart_timeout_ms { "restart timeout" } else { "time budget" };
            let e = SyncError::retryable(format!(
                "not started with passing checks {} ms after the restart ({limit} reached; {last})",
                now_ms.saturating_sub(at)
            ));
            self.restart_failed(t, m, e);
            return;
        }
        self.calls.push(Call { target: t, machine: Some(m), kind: Kind::Poll, attempts: 0, not_before: now_ms + POLL_INTERVAL_MS, in_flight: None });
    }

    fn restart_failed(&mut self, t: usize, m: usize, e: SyncError) {
        let run = &mut self.targets[t];
        let id = run.machines[m].machine.id.clone();
        run.machines[m].restart = RestartState::Failed(e);
        if run.stopped_early.is_none() {
            run.stopped_early = Some(format!("Machine {id} failed to restart; the remaining Machines were left alone"));
        }
    }

    /// A call is over: apply its result.
    fn finish_call(&mut self, call: Call, result: Result<String, SyncError>, now_ms: u64) {
        let t = call.target;
        match (call.kind, call.machine) {
            (Kind::List, _) if self.targets[t].phase == Phase::Relisting => {
                match result.and_then(|body| Machine::parse_list(&body)) {
                    Ok(machines) => self.on_relisted(t, machines, now_ms),
                    Err(e) => {
                        let run = &mut self.targets[t];
                        run.stopped_early = Some(format!("no restart: the Machines could not be read again ({})", e.message));
                        for m in run.queue.drain(..) {
                            run.machines[m].restart = RestartState::NotAttempted("not restarted: the Machine list could not be read".into());
                        }
                        run.phase = Phase::Done;
                    }
                }
            }
            (Kind::List, _) => match result.and_then(|body| Machine::parse_list(&body)) {
                Ok(machines) => self.on_listed(t, machines),
                Err(e) => {
                    self.targets[t].error = Some(e);
                    self.targets[t].phase = Phase::Done;
                }
            },
            (Kind::Sync, m) => self.on_synced(t, m, call.attempts, result, now_ms),
            (Kind::Lease, Some(m)) => {
                let run = &mut self.targets[t].machines[m];
                match result.and_then(|body| lease_nonce(&body)) {
                    Ok(nonce) => run.nonce = Some(nonce),
                    Err(e) => run.lease_refused = Some(e),
                }
            }
            (Kind::Restart, Some(m)) => match result {
                Ok(_) => self.schedule_poll(t, m, now_ms, None),
                Err(e) => self.restart_failed(t, m, e),
            },
            (Kind::Verify, Some(m)) => match result.and_then(|b| Machine::parse_one(&b)) {
                Ok(machine) => {
                    let RestartState::Sent { baseline_ms, .. } = self.targets[t].machines[m].restart else { return };
                    if machine.newest_event_ms > baseline_ms || machine.state != "started" {
                        // The restart did happen: watch it come back.
                        self.schedule_poll(t, m, now_ms, None);
                    } else if call.attempts + 1 >= retry::MAX_ATTEMPTS {
                        self.restart_failed(t, m, SyncError::retryable("restart not acknowledged and not observed"));
                    } else {
                        let delay = retry::backoff_ms(1, &mut self.rng, None);
                        self.calls.push(Call { kind: Kind::Restart, not_before: now_ms + delay, attempts: 1, ..call });
                    }
                }
                Err(e) => self.restart_failed(t, m, e),
            },
            (Kind::Poll, Some(m)) => match result.and_then(|b| Machine::parse_one(&b)) {
                Ok(machine) => self.on_polled(t, m, machine, now_ms),
                Err(e) if e.class == ErrorClass::Fatal => self.restart_failed(t, m, e),
                Err(e) => self.schedule_poll(t, m, now_ms, Some(e)),
            },
            (Kind::Release, Some(m)) => {
                let run = &mut self.targets[t].machines[m];
                match result {
                    Ok(_) => run.nonce = None,
                    Err(e) => run.release_error = Some(e),
                }
            }
            (_, None) => unreachable!("per-Machine calls always carry their Machine"),
        }
    }

    fn on_listed(&mut self, t: usize, machines: Vec<Machine>) {
        let target = &self.config.targets[t];
        let dry_run = self.config.dry_run;
        let run = &mut self.targets[t];
        let mut machines = machines;
        machines.sort_by(|a, b| (&a.region, &a.id).cmp(&(&b.region, &b.id)));
        run.machines = machines
            .into_iter()
            .map(|machine| {
                let sync = match plan::select(&machine, run.regions.as_ref()) {
                    Err(skip) => SyncState::NotSelected(skip),
                    Ok(()) if dry_run => SyncState::WouldSync,
                    Ok(()) => SyncState::Pending,
                };
                MachineRun {
                    had_checks: !machine.checks.is_empty(),
                    machine,
                    sync,
                    sync_attempts: 0,
                    sync_started: None,
                    sync_ms: None,
                    restart: RestartState::None,
                    nonce: None,
                    lease_refused: None,
                    release_error: None,
                }
            })
            .collect();
        let pending: Vec<usize> = (0..run.machines.len()).filter(|&m| matches!(run.machines[m].sync, SyncState::Pending)).collect();
        if dry_run {
            if plan::restart_for_type(&self.change, target) {
                run.restart_cause = Some(RestartCause::DocumentType);
                for m in run.machines.iter_mut().filter(|m| matches!(m.sync, SyncState::WouldSync)) {
                    m.restart = RestartState::WouldRestart;
                }
            }
            run.phase = Phase::Done;
            return;
        }
        run.phase = Phase::Syncing;
        let sync_machines: Vec<Option<usize>> = match target.fan_out {
            FanOut::Every => pending.into_iter().map(Some).collect(),
            // One push through the proxy, only if some Machine is serving at all.
            FanOut::One if !pending.is_empty() => vec![None],
            FanOut::One => vec![],
        };
        for machine in sync_machines {
            self.calls.push(Call { target: t, machine, kind: Kind::Sync, attempts: 0, not_before: 0, in_flight: None });
        }
    }

    fn on_synced(&mut self, t: usize, m: Option<usize>, attempts: u32, result: Result<String, SyncError>, now_ms: u64) {
        let run = &mut self.targets[t];
        let result = result.and_then(|body| protocol::parse_ack(&body));
        match m {
            Some(m) => {
                let mr = &mut run.machines[m];
                mr.sync_attempts = attempts;
                mr.sync_ms = mr.sync_started.map(|s| now_ms - s);
                mr.sync = match result {
                    Ok(ack) if ack.machine == mr.machine.id => SyncState::Synced(ack),
                    Ok(ack) => SyncState::Failed(SyncError::fatal(format!(
                        "the ack came from Machine {} instead of {}: the sync path must answer with its own FLY_MACHINE_ID",
                        ack.machine, mr.machine.id
                    ))),
                    Err(e) => SyncState::Failed(e),
                };
            }
            None => {
                // Fan-out `one`: the acking Machine synced; the others share its store.
                let acked = result.as_ref().ok().map(|a| a.machine.clone());
                for mr in run.machines.iter_mut().filter(|mr| matches!(mr.sync, SyncState::Pending)) {
                    mr.sync_attempts = attempts;
                    mr.sync = match &result {
                        Ok(ack) if Some(&mr.machine.id) == acked.as_ref() => {
                            mr.sync_ms = mr.sync_started.map(|s| now_ms - s);
                            SyncState::Synced(ack.clone())
                        }
                        Ok(_) => SyncState::SharedStore,
                        Err(e) => SyncState::Failed(e.clone()),
                    };
                }
                if let (Ok(ack), None) = (&result, run.machines.iter().find(|mr| Some(&mr.machine.id) == acked.as_ref())) {
                    // The acking Machine was not in our list (started since): the push still landed.
                    let _ = ack;
                }
            }
        }
    }

    fn on_polled(&mut self, t: usize, m: usize, machine: Machine, now_ms: u64) {
        let run = &mut self.targets[t].machines[m];
        let RestartState::Sent { at, baseline_ms, seen_down } = run.restart else { return };
        if matches!(machine.state.as_str(), "failed" | "destroyed" | "destroying") {
            let e = SyncError::fatal(format!("Machine went `{}` after the restart", machine.state));
            run.machine = machine;
            self.restart_failed(t, m, e);
            return;
        }
        let fresh_start = machine.newest_start_ms > baseline_ms || seen_down;
        let healthy = !run.had_checks || (!machine.checks.is_empty() && machine.checks_passing());
        let started = machine.state == "started";
        let seen_down = seen_down || !started;
        run.machine = machine;
        if started && fresh_start && healthy {
            run.restart = RestartState::Restarted { ms: now_ms - at };
        } else {
            run.restart = RestartState::Sent { at, baseline_ms, seen_down };
            self.schedule_poll(t, m, now_ms, None);
        }
    }

    /// Move a target to its next phase when the current one has no calls left.
    fn advance(&mut self, t: usize, now_ms: u64) {
        let busy = |calls: &[Call], kind: Kind| calls.iter().any(|c| c.target == t && c.kind == kind);
        let target = &self.config.targets[t];
        match self.targets[t].phase {
            Phase::Listing | Phase::Done => {}
            Phase::Syncing if busy(&self.calls, Kind::Sync) => {}
            Phase::Syncing => {
                let run = &mut self.targets[t];
                let by_type = plan::restart_for_type(&self.change, target);
                let asked = target.restart.on_request
                    && run.machines.iter().any(|m| matches!(&m.sync, SyncState::Synced(a) if a.restart_required));
                let chosen: Vec<usize> = if by_type || (asked && target.fan_out == FanOut::One) {
                    // Every serving Machine: the type needs it, or the shared store told us to.
                    (0..run.machines.len()).filter(|&m| !matches!(run.machines[m].sync, SyncState::NotSelected(_))).collect()
                } else if asked {
                    (0..run.machines.len()).filter(|&m| matches!(&run.machines[m].sync, SyncState::Synced(a) if a.restart_required)).collect()
                } else {
                    vec![]
                };
                if chosen.is_empty() {
                    run.phase = Phase::Done;
                    return;
                }
                run.restart_cause = Some(if by_type { RestartCause::DocumentType } else { RestartCause::Receiver });
                for &m in &chosen {
                    run.machines[m].restart = RestartState::Planned;
                }
                run.queue = chosen.into();
                if run.list_reusable {
                    run.phase = Phase::Relisting;
                    self.calls.push(Call { target: t, machine: None, kind: Kind::List, attempts: 0, not_before: now_ms, in_flight: None });
                } else {
                    self.begin_leasing(t, now_ms);
                }
            }
            Phase::Relisting => {}
            Phase::Leasing if busy(&self.calls, Kind::Lease) => {}
            Phase::Leasing => {
                let run = &mut self.targets[t];
                let refused: Vec<String> =
                    run.machines.iter().filter(|m| m.lease_refused.is_some()).map(|m| m.machine.id.clone()).collect();
                if refused.is_empty() {
                    run.phase = Phase::Restarting;
                } else {
                    // Someone else is operating on these Machines (a deploy, another restart): don't fight.
                    run.stopped_early = Some(format!("no restart: could not lease {}", refused.join(", ")));
                    for m in run.queue.drain(..) {
                        let mr = &mut run.machines[m];
                        let why = match &mr.lease_refused {
                            Some(e) => format!("not leased: {}", e.message),
                            None => "not restarted: another Machine's lease is held elsewhere".into(),
                        };
                        mr.restart = RestartState::NotAttempted(why);
                    }
                    self.begin_release(t, now_ms);
                }
            }
            Phase::Restarting => {
                let run = &mut self.targets[t];
                let stop = run.stopped_early.is_some() || now_ms + 100 > self.work_deadline_ms;
                if stop {
                    let why = if run.stopped_early.is_some() {
                        "not restarted: the roll stopped at an earlier failure"
                    } else {
                        "not restarted: the time budget ran out before its turn"
                    };
                    if run.stopped_early.is_none() && !run.queue.is_empty() {
                        run.stopped_early = Some("the time budget ran out".into());
                    }
                    for m in run.queue.drain(..) {
                        run.machines[m].restart = RestartState::NotAttempted(why.into());
                    }
                }
                while run.down() < target.max_unavailable {
                    let Some(m) = run.queue.pop_front() else { break };
                    let baseline_ms = run.machines[m].machine.newest_event_ms;
                    run.machines[m].restart = RestartState::Sent { at: now_ms, baseline_ms, seen_down: false };
                    self.calls.push(Call { target: t, machine: Some(m), kind: Kind::Restart, attempts: 0, not_before: now_ms, in_flight: None });
                }
                run.max_down = run.max_down.max(run.down());
                let in_roll = self.calls.iter().any(|c| c.target == t && matches!(c.kind, Kind::Restart | Kind::Poll | Kind::Verify));
                if !in_roll && run.queue.is_empty() {
                    self.begin_release(t, now_ms);
                }
            }
            Phase::Releasing if busy(&self.calls, Kind::Release) => {}
            Phase::Releasing => self.targets[t].phase = Phase::Done,
        }
    }

    /// Fresh baselines for the roll: the newest events and checks of each chosen Machine, and which of them
    /// are still serving at all.
    fn on_relisted(&mut self, t: usize, machines: Vec<Machine>, now_ms: u64) {
        let run = &mut self.targets[t];
        let queue: Vec<usize> = run.queue.drain(..).collect();
        for m in queue {
            let mr = &mut run.machines[m];
            match machines.iter().find(|fresh| fresh.id == mr.machine.id) {
                Some(fresh) if fresh.state == "started" => {
                    mr.had_checks = !fresh.checks.is_empty();
                    mr.machine = fresh.clone();
                    run.queue.push_back(m);
                }
                other => {
                    let state = other.map_or("gone", |f| f.state.as_str());
                    mr.restart = RestartState::NotAttempted(format!("not restarted: no longer started (now `{state}`)"));
                }
            }
        }
        self.begin_leasing(t, now_ms);
    }

    fn begin_leasing(&mut self, t: usize, now_ms: u64) {
        let run = &mut self.targets[t];
        if run.queue.is_empty() {
            run.phase = Phase::Done;
            return;
        }
        for &m in &run.queue {
            self.calls.push(Call { target: t, machine: Some(m), kind: Kind::Lease, attempts: 0, not_before: now_ms, in_flight: None });
        }
        run.phase = Phase::Leasing;
    }

    fn begin_release(&mut self, t: usize, now_ms: u64) {
        let run = &mut self.targets[t];
        run.phase = Phase::Releasing;
        for m in 0..run.machines.len() {
            if run.machines[m].nonce.is_some() {
                self.calls.push(Call { target: t, machine: Some(m), kind: Kind::Release, attempts: 0, not_before: now_ms, in_flight: None });
            }
        }
    }

    fn request_for(&mut self, c: usize, now_ms: u64, timeout_ms: u64) -> Request {
        let id = self.next_id;
        self.next_id += 1;
        let call = &self.calls[c];
        let target = &self.config.targets[call.target];
        let run = &mut self.targets[call.target];
        let machine_id = call.machine.map(|m| run.machines[m].machine.id.clone());
        let api = format!("{}/v1/apps/{}/machines", target.machines_api_url, target.app);
        let auth = || ("authorization".to_string(), target.token.authorization().to_string());
        let json = || ("content-type".to_string(), "application/json".to_string());
        let mid = machine_id.clone().unwrap_or_default();
        let nonce = || {
            let m = call.machine.expect("leased calls have a machine");
            ("fly-machine-lease-nonce".to_string(), run.machines[m].nonce.clone().unwrap_or_default())
        };
        let (method, url, headers, body) = match call.kind {
            Kind::List => (Method::GET, api, vec![auth()], None),
            Kind::Poll | Kind::Verify => (Method::GET, format!("{api}/{mid}"), vec![auth()], None),
            Kind::Lease => {
                // Long enough for the whole run, so a crashed run's lease frees itself soon after.
                let ttl_s = (self.deadline_ms.saturating_sub(now_ms) / 1000 + 5).max(10);
                let body = serde_json::json!({"description": LEASE_DESCRIPTION, "ttl": ttl_s}).to_string();
                (Method::POST, format!("{api}/{mid}/lease"), vec![auth(), json()], Some(body))
            }
            Kind::Restart => (Method::POST, format!("{api}/{mid}/restart"), vec![auth(), nonce()], None),
            Kind::Release => (Method::DELETE, format!("{api}/{mid}/lease"), vec![auth(), nonce()], None),
            Kind::Sync => {
                let signature = match &run.signed {
                    Some((at, sig)) if *at == now_ms => sig.clone(),
                    _ => {
                        let sig = signature::sign(run.body.as_bytes(), now_ms, self.config.sync_secret.expose());
                        run.signed = Some((now_ms, sig.clone()));
                        sig
                    }
                };
                let mut headers = vec![
                    json(),
                    ("idempotency-key".to_string(), self.change.idempotency_key.clone()),
                    (protocol::SIGNATURE_HEADER.to_string(), signature),
                ];
                if let Some(m) = &machine_id {
                    headers.push(("fly-force-instance-id".to_string(), m.clone()));
                }
                for mr in call.machine.map_or_else(|| (0..run.machines.len()).collect::<Vec<_>>(), |m| vec![m]) {
                    let mr = &mut run.machines[mr];
                    if matches!(mr.sync, SyncState::Pending) && mr.sync_started.is_none() {
                        mr.sync_started = Some(now_ms);
                    }
                }
                (Method::POST, format!("{}{}", target.app_url, target.sync_path), headers, Some(run.body.clone()))
            }
        };
        let reuse_ms = if call.kind == Kind::List && run.phase == Phase::Listing && run.list_reusable { LIST_REUSE_MS } else { 0 };
        if call.kind == Kind::Sync {
            run.counts.app += 1;
        } else {
            run.counts.machines_api += 1;
        }
        let log = RequestLog {
            target: target.name.clone(),
            kind: call.kind.name(),
            method,
            url: url.clone(),
            machine: machine_id,
            attempt: call.attempts + 1,
        };
        Request { id, method, url, headers, body, timeout_ms, reuse_ms, log }
    }

    fn build_report(&self, now_ms: u64) -> Report {
        let dry_run = self.config.dry_run;
        let targets: Vec<TargetReport> = self.targets.iter().zip(&self.config.targets).map(|(run, target)| target_report(run, target, dry_run)).collect();
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
        let mut report = Report {
            ok: matches!(status, Status::Ok | Status::Skipped | Status::Planned),
            status,
            dry_run,
            change: ChangeSummary::of(&self.change),
            started_at_ms: self.started_ms,
            duration_ms: now_ms - self.started_ms,
            targets,
        };
        let mut secrets: Vec<&str> = vec![self.config.sync_secret.expose()];
        secrets.extend(self.config.webhook_secret.as_ref().map(|s| s.expose()));
        secrets.extend(self.config.targets.iter().map(|t| t.token.bare()));
        report.scrub(&secrets);
        report
    }
}

fn describe(kind: Kind, target: &Target, machine: Option<&str>) -> String {
    match (kind, machine) {
        (Kind::List, _) => format!("list Machines of {}", target.app),
        (Kind::Sync, Some(m)) => format!("sync to Machine {m}"),
        (Kind::Sync, None) => format!("sync through {}", target.app_url),
        (Kind::Lease, Some(m)) => format!("lease Machine {m}"),
        (Kind::Restart, Some(m)) => format!("restart Machine {m}"),
        (Kind::Poll | Kind::Verify, Some(m)) => format!("read Machine {m}"),
        (Kind::Release, Some(m)) => format!("release lease on Machine {m}"),
        (_, None) => kind.name().to_string(),
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

fn target_report(run: &TargetRun, target: &Target, dry_run: bool) -> TargetReport {
    let machines: Vec<MachineReport> = run.machines.iter().map(machine_report).collect();
    let restart = run.restart_cause.map(|cause| RestartReport {
        cause,
        planned: run.machines.iter().filter(|m| !matches!(m.restart, RestartState::None)).count() as u32,
        restarted: run.machines.iter().filter(|m| matches!(m.restart, RestartState::Restarted { .. })).count() as u32,
        max_unavailable: target.max_unavailable as u32,
        max_down: run.max_down as u32,
        stopped_early: run.stopped_early.clone(),
        unreleased_leases: run.machines.iter().filter(|m| m.nonce.is_some()).map(|m| m.machine.id.clone()).collect(),
    });
    let failed_sync = machines.iter().filter(|m| m.sync == SyncOutcome::Failed).count();
    let synced = machines.iter().filter(|m| matches!(m.sync, SyncOutcome::Synced | SyncOutcome::SharedStore)).count();
    let restart_failed = restart.as_ref().is_some_and(|r| r.restarted < r.planned);
    let status = if run.skipped.is_some() {
        Status::Skipped
    } else if run.error.is_some() {
        Status::Failed
    } else if dry_run {
        Status::Planned
    } else if failed_sync == 0 && !restart_failed {
        if synced == 0 { Status::Skipped } else { Status::Ok }
    } else if synced > 0 {
        Status::Partial
    } else {
        Status::Failed
    };
    TargetReport {
        name: target.name.clone(),
        app: target.app.clone(),
        status,
        skipped: run.skipped.clone().or_else(|| (status == Status::Skipped && run.skipped.is_none()).then(|| "no Machine is serving in the targeted regions".into())),
        error: run.error.clone(),
        regions: run.regions.as_ref().map(|r| r.iter().cloned().collect()),
        machines,
        restart,
        requests: run.counts,
    }
}

fn machine_report(m: &MachineRun) -> MachineReport {
    let (sync, skip_code, reason, receiver, error) = match &m.sync {
        SyncState::NotSelected(skip) => (SyncOutcome::Skipped, Some(skip.code()), Some(skip.reason()), None, None),
        SyncState::Pending => (SyncOutcome::Failed, None, None, None, Some(SyncError::retryable("not synced: the run ended first"))),
        SyncState::Synced(ack) => (SyncOutcome::Synced, None, None, Some(ack.status.as_str().to_string()), None),
        SyncState::SharedStore => (SyncOutcome::SharedStore, None, Some("fan-out `one`: shares the store of the Machine that acked".into()), None, None),
        SyncState::Failed(e) => (SyncOutcome::Failed, None, None, None, Some(e.clone())),
        SyncState::WouldSync => (SyncOutcome::WouldSync, None, None, None, None),
    };
    let restart = match &m.restart {
        RestartState::None => None,
        RestartState::Planned => Some(MachineRestart { outcome: RestartOutcome::NotAttempted, reason: Some("planned, not reached".into()), error: None, duration_ms: None }),
        RestartState::Sent { .. } => Some(MachineRestart {
            outcome: RestartOutcome::Failed,
            reason: None,
            error: Some(SyncError::retryable("restart sent, not confirmed before the run ended")),
            duration_ms: None,
        }),
        RestartState::Restarted { ms } => Some(MachineRestart { outcome: RestartOutcome::Restarted, reason: None, error: None, duration_ms: Some(*ms) }),
        RestartState::Failed(e) => Some(MachineRestart { outcome: RestartOutcome::Failed, reason: None, error: Some(e.clone()), duration_ms: None }),
        RestartState::NotAttempted(why) => Some(MachineRestart { outcome: RestartOutcome::NotAttempted, reason: Some(why.clone()), error: None, duration_ms: None }),
        RestartState::WouldRestart => Some(MachineRestart { outcome: RestartOutcome::WouldRestart, reason: None, error: None, duration_ms: None }),
    };
    MachineReport {
        id: m.machine.id.clone(),
        region: m.machine.region.clone(),
        state: m.machine.state.clone(),
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
