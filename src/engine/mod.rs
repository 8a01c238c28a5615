//! The sans-IO sync engine: one state machine per run, in the manner of str0m's `Rtc`. It never does I/O and
//! never reads a clock. Inputs: `poll(now)` and `handle_response(id, response, now)`. Outputs (`Action`): send
//! these requests (several at once — the fan-out is parallel), wait until an instant, or done with the report.
//! Time only moves forward here: an earlier `now` than one already seen (a clock stepped back) counts as no time
//! passing.
//!
//! Each target is in one `Phase`. A phase ends when the target's last call of it is over; one `exit_*` function
//! per phase decides the next:
//!
//! ```text
//!   Listing ─┬──────────────┬─► Syncing ─┬──────────────► Marking ─► Rolling ─► Releasing ─► Done
//!      │     └► Referencing ┘      │     └─► Relisting ──┘    │          │                      ▲
//!      └───────────────────────────┴── list failed / dry run / nothing to restart ──────────────┘
//! ```
//!
//! Referencing waits, with the Machines listed, for the documents that reference the change (`dependents`):
//! the pushes carry them. Syncing pushes the change to every selected Machine (`pushes`). A roll (`restarts`) is needed when the
//! change's type needs one, a receiver asked for one, or a Machine carries unfinished intent from an earlier
//! run; Marking records the intent on the Machines, Rolling restarts them a few at a time (lease, restart, wait,
//! checks, clear the intent, release). A resume run has no change: it lists and finishes unfinished intent.
//!
//! Where the rest lives: the wire (paths, headers, status codes) is `fly_api` and the requests are written in
//! `requests`; the roll's rules are `roll`; which Machines get the push is `plan`; the payload and the ack are
//! `protocol`; what a run knows so far is `run`; when to try again is `retry`; the report is `report`.

mod dependents;
mod known;
mod pushes;
mod requests;
mod restarts;

use crate::change::ContentChange;
use crate::config::{Config, FanOut};
use crate::error::SyncError;
use crate::fly_api::{self, Answer};
use crate::http::{Request, RequestId, Response};
use crate::known::KnownList;
use crate::machines::Machine;
use crate::plan;
use crate::protocol;
use crate::redact::Redactor;
use crate::report::{self, Report};
use crate::retry::{self, Verdict};
use crate::run::{DependentsRun, DependentsState, MachineRun, Phase, SyncState, TargetRun};
use crate::sanity_api;
use crate::sync_tags::SyncTags;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;

/// How often a restarted Machine's checks are read until they pass (Fly allows 5 GETs/s per Machine).
pub const POLL_INTERVAL_MS: u64 = 1_000;
/// Time kept back at the end of the budget to release leases.
pub const RELEASE_RESERVE_MS: u64 = 2_000;
/// A Machine list this recent may stand in for a new one when only content is pushed: the runs of a content
/// release then share one list call instead of each spending one against the app's Machines API rate limit.
/// (Restarts never rely on it: a roll reads the list afresh for its baselines.)
pub const LIST_REUSE_MS: u64 = 1_000;
/// No call is started this close to its deadline: its answer could not arrive in time to be used.
pub const SEND_MARGIN_MS: u64 = 100;

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

/// What a run was started for.
#[derive(Debug)]
pub enum Work {
    Change(Box<ContentChange>),
    /// Finish the restarts the Machines still owe.
    Resume,
    SyncTags(SyncTags),
}

impl Work {
    pub fn change(&self) -> Option<&ContentChange> {
        match self {
            Work::Change(c) => Some(c),
            _ => None,
        }
    }

    /// What each push of this run is keyed by (empty: a run that pushes nothing).
    fn idempotency_key(&self) -> &str {
        match self {
            Work::Change(c) => &c.idempotency_key,
            Work::SyncTags(t) => &t.idempotency_key,
            Work::Resume => "",
        }
    }
}

/// One logical step of a run; each is one call to Fly, possibly sent several times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    List,
    /// Query Sanity for the documents referencing the change (level 1, 2, …).
    Refs(u8),
    /// The payload to one Machine, or (fan-out `one`) through the proxy to any.
    Push(Option<usize>),
    /// Read a Machine whose push failed: one no longer serving is skipped, not failed.
    Check(usize),
    /// Record on the Machine the restart it owes; `Unmark` removes it once done (or no longer owed).
    Mark(usize),
    Unmark(usize),
    Lease(usize),
    /// Read who holds a lease we could not take.
    LeaseInfo(usize),
    /// Renew a lease we hold, while its Machine is in the roll.
    Renew(usize),
    Restart(usize),
    /// Long-poll until the restarted Machine is started again.
    Wait(usize),
    /// Read a started Machine until its checks pass.
    Poll(usize),
    /// Read a Machine after an ambiguous restart answer, before deciding to send the restart again.
    Verify(usize),
    Release(usize),
}

impl Step {
    /// The name in logs and request descriptions.
    fn name(self) -> &'static str {
        match self {
            Step::List => "list",
            Step::Refs(_) => "dependents",
            Step::Push(_) => "sync",
            Step::Check(_) => "check",
            Step::Mark(_) => "mark",
            Step::Unmark(_) => "unmark",
            Step::Lease(_) => "lease",
            Step::LeaseInfo(_) => "lease_info",
            Step::Renew(_) => "renew",
            Step::Restart(_) => "restart",
            Step::Wait(_) => "wait",
            Step::Poll(_) => "poll",
            Step::Verify(_) => "verify",
            Step::Release(_) => "release",
        }
    }

    fn machine(self) -> Option<usize> {
        match self {
            Step::List | Step::Refs(_) | Step::Push(None) => None,
            Step::Push(Some(m))
            | Step::Check(m)
            | Step::Mark(m)
            | Step::Unmark(m)
            | Step::Lease(m)
            | Step::LeaseInfo(m)
            | Step::Renew(m)
            | Step::Restart(m)
            | Step::Wait(m)
            | Step::Poll(m)
            | Step::Verify(m)
            | Step::Release(m) => Some(m),
        }
    }

    /// The kind of Fly call a step is (a dependents query is Sanity's, read by `sanity_api`).
    fn wire_kind(self) -> fly_api::Kind {
        match self {
            Step::List | Step::Refs(_) => fly_api::Kind::List,
            Step::Push(_) => fly_api::Kind::Push,
            Step::Check(_) | Step::Poll(_) | Step::Verify(_) => fly_api::Kind::Get,
            Step::Mark(_) | Step::Unmark(_) => fly_api::Kind::Metadata,
            Step::Lease(_) | Step::Renew(_) => fly_api::Kind::Lease,
            Step::LeaseInfo(_) => fly_api::Kind::LeaseInfo,
            Step::Restart(_) => fly_api::Kind::Restart,
            Step::Wait(_) => fly_api::Kind::Wait,
            Step::Release(_) => fly_api::Kind::Release,
        }
    }

    /// Calls that tidy up after us may use the reserve at the end of the budget.
    fn is_cleanup(self) -> bool {
        matches!(self, Step::Release(_) | Step::Unmark(_))
    }
}

#[derive(Debug)]
struct Call {
    target: usize,
    step: Step,
    attempts: u32,
    not_before: u64,
    in_flight: Option<RequestId>,
}

impl Call {
    fn new(target: usize, step: Step, not_before: u64) -> Call {
        Call { target, step, attempts: 0, not_before, in_flight: None }
    }
}

pub struct Engine {
    /// Shared with the process's memory of it (`known::ProcessMemory`): read once per environment.
    config: Arc<Config>,
    /// `None` for a resume run: nothing to push, only unfinished restarts to finish.
    work: Work,
    started_ms: u64,
    /// The latest `now` seen: time never goes back inside a run.
    now_ms: u64,
    work_deadline_ms: u64,
    deadline_ms: u64,
    rng: fastrand::Rng,
    next_id: RequestId,
    calls: Vec<Call>,
    targets: Vec<TargetRun>,
    redactor: Redactor,
    /// When the run ended: its report is assembled from what it knows as of then (each time it is asked for).
    done: Option<u64>,
    /// Per target, the list the process knew when the run started (or the run's own, once read).
    known: Vec<Option<KnownList>>,
    /// The lists this run read, for the process to remember (`take_learned`).
    learned: Vec<(String, KnownList)>,
}

impl Engine {
    /// A run for `change`. `seed` feeds the retry jitter (the shim passes a random one; tests a fixed one).
    pub fn new(config: impl Into<Arc<Config>>, change: ContentChange, now_ms: u64, seed: u64) -> Engine {
        Engine::start(config.into(), Work::Change(Box::new(change)), now_ms, seed)
    }

    /// A run with no change: it lists every target's Machines and finishes the restarts they still owe.
    pub fn resume(config: impl Into<Arc<Config>>, now_ms: u64, seed: u64) -> Engine {
        Engine::start(config.into(), Work::Resume, now_ms, seed)
    }

    /// A run that pushes sync tags to every started Machine of every target; it never restarts anything (the
    /// clients waiting on the tags wait for this run to end).
    pub fn sync_tags(config: impl Into<Arc<Config>>, tags: SyncTags, now_ms: u64, seed: u64) -> Engine {
        Engine::start(config.into(), Work::SyncTags(tags), now_ms, seed)
    }

    fn start(config: Arc<Config>, work: Work, now_ms: u64, seed: u64) -> Engine {
        let deadline_ms = now_ms.saturating_add(config.budget_ms);
        let reserve = RELEASE_RESERVE_MS.min(config.budget_ms / 5);
        let mut secrets: Vec<&str> = vec![config.sync_secret.expose()];
        secrets.extend(config.webhook_secret.as_ref().map(|s| s.expose()));
        secrets.extend(config.targets.iter().map(|t| t.token.bare()));
        secrets.extend(config.sanity.token.as_ref().map(|s| s.expose()));
        let redactor = Redactor::new(secrets);
        let targets = config.targets.iter().map(|target| target_run(&work, target, &config.sanity)).collect::<Vec<_>>();
        let mut calls: Vec<Call> = Vec::new();
        for (t, run) in targets.iter().enumerate().filter(|(_, r)| r.phase == Phase::Listing) {
            calls.push(Call::new(t, Step::List, now_ms));
            // In parallel with the list: the pushes need both.
            if matches!(run.dependents.state, DependentsState::Querying) {
                calls.push(Call::new(t, Step::Refs(1), now_ms));
            }
        }
        let targets_len = targets.len();
        Engine {
            work_deadline_ms: deadline_ms - reserve,
            deadline_ms,
            started_ms: now_ms,
            now_ms,
            rng: fastrand::Rng::with_seed(seed),
            next_id: 1,
            calls,
            targets,
            redactor,
            done: None,
            known: vec![None; targets_len],
            learned: Vec::new(),
            config,
            work,
        }
    }

    /// The next thing to do at `now_ms`.
    pub fn poll(&mut self, now_ms: u64) -> Action {
        let now = self.observe(now_ms);
        if let Some(report) = self.report() {
            return Action::Done { report: Box::new(report) };
        }
        self.advance_all(now);
        let mut requests = Vec::new();
        let mut expired = Vec::new();
        for c in 0..self.calls.len() {
            let call = &self.calls[c];
            if call.in_flight.is_some() {
                continue;
            }
            let limit = self.limit(call.step);
            // Due now or later, a call that cannot be sent inside its limit will never be: it ends now.
            if call.not_before.max(now) + SEND_MARGIN_MS > limit {
                expired.push(c);
            } else if call.not_before <= now {
                requests.push(self.request_for(c, now, limit));
            }
        }
        // Calls that can no longer be sent inside the budget end as failures, newest index first.
        for c in expired.into_iter().rev() {
            let call = self.calls.remove(c);
            let error = SyncError::retryable(format!("{}: time budget of {} ms exhausted", call.step.name(), self.config.budget_ms));
            self.give_up(call, error, now);
        }
        if !requests.is_empty() {
            return Action::Send { requests };
        }
        // A call given up just now may have scheduled another for now (a release after an expired restart).
        if self.calls.iter().any(|c| c.in_flight.is_none() && c.not_before <= now) {
            return self.poll(now);
        }
        if self.calls.is_empty() {
            // A finished call may have moved a target to its next phase: let it plan before deciding we are done.
            self.advance_all(now);
            if self.calls.is_empty() {
                self.done = Some(now);
                let report = report::assemble(&self.config, &self.work, &self.targets, self.started_ms, now, &self.redactor);
                return Action::Done { report: Box::new(report) };
            }
            return self.poll(now);
        }
        let next = self.calls.iter().filter(|c| c.in_flight.is_none()).map(|c| c.not_before).min();
        Action::Wait { until_ms: next.unwrap_or(self.deadline_ms).min(self.deadline_ms).max(now) }
    }

    /// Feed back the answer to request `id`. Unknown ids (a duplicate, a late answer) are ignored.
    pub fn handle_response(&mut self, id: RequestId, response: Response, now_ms: u64) {
        let now = self.observe(now_ms);
        let Some(c) = self.calls.iter().position(|c| c.in_flight == Some(id)) else { return };
        let mut call = self.calls.remove(c);
        call.in_flight = None;
        if call.step == Step::List && self.is_known_answer(call.target, &response) {
            return self.on_known_list(call, now);
        }
        let response = self.redactor.scrub_response(response);
        // The call's description only goes into errors: not written for an answer that succeeded.
        let what = match &response {
            Response::Http { status, .. } if (200..300).contains(status) => String::new(),
            _ => self.describe(&call),
        };
        if let Step::Refs(_) = call.step {
            return match sanity_api::read(&response, &what, now) {
                Verdict::Success(level) => self.on_referrers(call.target, level, now),
                Verdict::Retry { error, min_delay_ms, rate_limited } => self.on_transient(call, error, min_delay_ms, rate_limited, now),
                Verdict::Fail(error) => self.give_up(call, error, now),
            };
        }
        match fly_api::read(call.step.wire_kind(), &response, &what, now) {
            Verdict::Success(answer) => {
                if let (Step::List, Answer::Machines(machines), Response::Http { body, .. }) = (call.step, &answer, &response) {
                    self.learn(call.target, body, machines, now);
                }
                self.on_answer(call, answer, now)
            }
            Verdict::Retry { error, min_delay_ms, rate_limited } => self.on_transient(call, error, min_delay_ms, rate_limited, now),
            Verdict::Fail(error) => self.give_up(call, error, now),
        }
    }

    /// The report, once `poll` has returned `Done` (the same each time).
    pub fn report(&self) -> Option<Report> {
        self.done.map(|at| report::assemble(&self.config, &self.work, &self.targets, self.started_ms, at, &self.redactor))
    }

    fn observe(&mut self, now_ms: u64) -> u64 {
        self.now_ms = self.now_ms.max(now_ms);
        self.now_ms
    }

    /// Cleanup may use the reserve at the end of the budget; everything else must end before it.
    fn limit(&self, step: Step) -> u64 {
        if step.is_cleanup() { self.deadline_ms } else { self.work_deadline_ms }
    }

    fn machine_id(&self, call: &Call) -> Option<&str> {
        call.step.machine().map(|m| self.targets[call.target].machines[m].machine.id.as_str())
    }

    fn describe(&self, call: &Call) -> String {
        let target = &self.config.targets[call.target];
        match (call.step, self.machine_id(call)) {
            (Step::List, _) => format!("list Machines of {}", target.app),
            (Step::Refs(level), _) => format!("look up the documents referencing the change (level {level})"),
            (Step::Push(None), _) => format!("sync through {}", target.app_url),
            (Step::Push(_), Some(m)) => format!("sync to Machine {m}"),
            (Step::Lease(_) | Step::Renew(_), Some(m)) => format!("lease Machine {m}"),
            (Step::Restart(_), Some(m)) => format!("restart Machine {m}"),
            (Step::Release(_), Some(m)) => format!("release lease on Machine {m}"),
            (Step::Mark(_) | Step::Unmark(_), Some(m)) => format!("record the restart owed on Machine {m}"),
            (Step::Wait(_), Some(m)) => format!("wait for Machine {m} to start"),
            (_, Some(m)) => format!("read Machine {m}"),
            (step, None) => step.name().to_string(),
        }
    }

    // ── answers ──────────────────────────────────────────────────────────────────────────────────────────

    fn on_answer(&mut self, call: Call, answer: Answer, now: u64) {
        let t = call.target;
        match (call.step, answer) {
            (Step::List, Answer::Machines(machines)) if self.targets[t].phase == Phase::Relisting => self.exit_relisting(t, machines, now),
            (Step::List, Answer::Machines(machines)) => self.exit_listing(t, machines),
            (Step::Push(m), Answer::Ack(ack)) => self.on_pushed(t, m, call.attempts, Ok(ack), now),
            (Step::Check(m), answer) => self.on_checked(t, m, answer, now),
            (step, answer) => self.on_roll_answer(call.attempts, t, step, answer, now),
        }
    }

    /// A transient failure: try again after a backoff, unless the step has its own way to go on.
    fn on_transient(&mut self, call: Call, error: SyncError, min_delay_ms: Option<u64>, rate_limited: bool, now: u64) {
        let counts = &mut self.targets[call.target].counts;
        if rate_limited {
            counts.rate_limited += 1;
        }
        match call.step {
            // A restart that may have happened must not simply be sent again: read the Machine first.
            Step::Restart(m) if !rate_limited => {
                counts.retries += 1;
                self.calls.push(Call { step: Step::Verify(m), attempts: 0, not_before: now, ..call });
            }
            // A failed read of a restarting Machine, or a long-poll that failed, is one look less.
            Step::Poll(m) | Step::Wait(m) => self.watch(call.target, m, now, Some(error)),
            _ => {
                let delay = retry::backoff_ms(call.attempts, &mut self.rng, min_delay_ms);
                let max_attempts = if rate_limited { retry::MAX_RATE_LIMITED_ATTEMPTS } else { retry::MAX_ATTEMPTS };
                if call.attempts >= max_attempts {
                    let e = SyncError::retryable(format!("{} (gave up after {} attempts)", error.message, call.attempts));
                    self.give_up(call, e, now);
                } else if now + delay + SEND_MARGIN_MS > self.limit(call.step) {
                    let e = SyncError::retryable(format!("{} (no time left in the {} ms budget to retry)", error.message, self.config.budget_ms));
                    self.give_up(call, e, now);
                } else if let (Step::Push(Some(m)), false, false) = (call.step, rate_limited, self.replica_waiting(&call, min_delay_ms)) {
                    self.push_failed(call, m, error, now + delay, now);
                } else {
                    self.targets[call.target].counts.retries += 1;
                    self.calls.push(Call { not_before: now + delay, ..call });
                }
            }
        }
    }

    /// A call is over without success: record why, per step.
    fn give_up(&mut self, call: Call, error: SyncError, now: u64) {
        let t = call.target;
        match call.step {
            Step::List if self.targets[t].phase == Phase::Relisting => self.relist_failed(t, error),
            Step::List => {
                self.targets[t].error = Some(error);
                self.targets[t].phase = Phase::Done;
            }
            Step::Refs(_) => self.referrers_failed(t, error, now),
            Step::Push(m) => self.push_given_up(call, m, error, now),
            Step::Check(m) => self.on_checked(t, m, Answer::Done, now),
            step => self.roll_step_failed(t, step, error, now),
        }
    }

    // ── phases ───────────────────────────────────────────────────────────────────────────────────────────

    /// Move every target on until it waits for an answer or is done (a phase with nothing to send ends at once).
    fn advance_all(&mut self, now: u64) {
        for t in 0..self.targets.len() {
            loop {
                let before = self.targets[t].phase;
                self.advance(t, now);
                if self.targets[t].phase == before {
                    break;
                }
            }
        }
    }

    fn advance(&mut self, t: usize, now: u64) {
        if self.targets[t].phase == Phase::Rolling {
            self.fill_restart_slots(t, now);
        }
        if self.calls.iter().any(|c| c.target == t) {
            return;
        }
        match self.targets[t].phase {
            // These end with their answer (`exit_listing`, `exit_relisting`) or with the run.
            Phase::Listing | Phase::Referencing | Phase::Relisting | Phase::Done => {}
            Phase::Syncing => self.exit_syncing(t, now),
            Phase::Marking => self.exit_marking(t),
            Phase::Rolling => self.exit_rolling(t, now),
            Phase::Releasing => self.targets[t].phase = Phase::Done,
        }
    }

    /// Listing → Syncing (or Referencing while the dependents are looked up): select the Machines.
    fn exit_listing(&mut self, t: usize, machines: Vec<Machine>) {
        if self.targets[t].pushed_ahead {
            return self.reconcile(t, machines);
        }
        let target = &self.config.targets[t];
        let dry_run = self.config.dry_run;
        let has_push = !matches!(self.work, Work::Resume);
        let run = &mut self.targets[t];
        run.machines = machines
            .into_iter()
            .map(|machine| {
                let sync = match plan::select(&machine, run.regions.as_ref(), target.process_groups.as_deref()) {
                    Err(skip) => SyncState::NotSelected(skip),
                    Ok(()) if !has_push => SyncState::NothingToPush,
                    Ok(()) if dry_run => SyncState::WouldSync,
                    Ok(()) => SyncState::Pending,
                };
                MachineRun::new(machine, sync)
            })
            .collect();
        // The pushes carry the dependents: while they are still being looked up, the list waits for them.
        if matches!(run.dependents.state, DependentsState::Querying) {
            run.phase = Phase::Referencing;
        } else {
            self.start_pushes(t);
        }
    }

    /// Listing or Referencing → Syncing: the payload (with the dependents found) and one push per Machine.
    pub(super) fn start_pushes(&mut self, t: usize) {
        let target = &self.config.targets[t];
        let run = &mut self.targets[t];
        run.phase = Phase::Syncing;
        match &self.work {
            Work::Change(change) => {
                let found = matches!(run.dependents.state, DependentsState::Done).then_some(&run.dependents.found);
                run.body = protocol::payload_body(change, target, found).into();
            }
            Work::SyncTags(tags) => run.body = protocol::tags_body(target, tags).into(),
            Work::Resume => {}
        }
        if self.config.dry_run {
            return;
        }
        let pending: Vec<usize> = (0..run.machines.len()).filter(|&m| matches!(run.machines[m].sync, SyncState::Pending)).collect();
        let pushes: Vec<Option<usize>> = match target.fan_out {
            FanOut::Every | FanOut::LiteFs => pending.into_iter().map(Some).collect(),
            // One push through the proxy, only if some Machine is serving at all.
            FanOut::One if !pending.is_empty() => vec![None],
            FanOut::One => vec![],
        };
        self.calls.extend(pushes.into_iter().map(|m| Call::new(t, Step::Push(m), 0)));
    }

    /// Syncing → Done, or towards a roll: the type needs a restart, receivers asked for one, or Machines still
    /// owe one from an earlier run. A roll reads the Machines afresh first when the list may have been reused.
    fn exit_syncing(&mut self, t: usize, now: u64) {
        let Some(cause) = self.roll_cause(t) else {
            self.targets[t].phase = Phase::Done;
            return;
        };
        let run = &mut self.targets[t];
        run.restart_cause = Some(cause);
        if run.list_reusable && !self.config.dry_run {
            run.phase = Phase::Relisting;
            self.calls.push(Call::new(t, Step::List, now));
        } else {
            self.plan_roll(t, now);
        }
    }

    /// Relisting → Marking: fresh baselines for the roll (states, newest events, checks, intents).
    fn exit_relisting(&mut self, t: usize, fresh: Vec<Machine>, now: u64) {
        let run = &mut self.targets[t];
        for mr in &mut run.machines {
            match fresh.iter().find(|f| f.id == mr.machine.id) {
                Some(f) => {
                    mr.had_checks = !f.checks.is_empty();
                    mr.machine = f.clone();
                }
                None => mr.machine.state = crate::machines::MachineState::Destroyed,
            }
        }
        self.plan_roll(t, now);
    }

    fn relist_failed(&mut self, t: usize, e: SyncError) {
        let run = &mut self.targets[t];
        run.stopped_early = Some(format!("no restart: the Machines could not be read again ({})", e.message));
        run.phase = Phase::Done;
    }
}

/// A target's run before anything is sent: skipped, or listing (and looking up the change's dependents).
fn target_run(work: &Work, target: &crate::config::Target, sanity: &crate::config::SanityApi) -> TargetRun {
    let change = work.change();
    let skipped = match work {
        Work::SyncTags(t) if t.tags.is_empty() => Some("the event carried no sync tags".to_string()),
        _ => change.and_then(|c| plan::target_skip_reason(c, target)),
    };
    let dependents = match change {
        Some(c) if skipped.is_none() => dependents::plan(c, target, sanity),
        _ => DependentsRun::default(),
    };
    TargetRun {
        phase: if skipped.is_some() { Phase::Done } else { Phase::Listing },
        regions: change.and_then(|c| plan::target_regions(c, target)),
        // Written when the pushes start, with the dependents found by then.
        body: "".into(),
        skipped,
        error: None,
        machines: Vec::new(),
        restart_cause: None,
        queue: VecDeque::new(),
        stopped_early: None,
        max_down: 0,
        counts: Default::default(),
        // A resume run, or one whose type needs a restart, reads its list fresh; a sync-tag run never rolls.
        list_reusable: matches!(work, Work::SyncTags(_)) || change.is_some_and(|c| !plan::restart_for_type(c, target)),
        signed: None,
        intent: None,
        dependents,
        pushed_ahead: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_reads_its_own_kind_of_answer() {
        // Steps that read a Machine share the Get kind; the rest map one to one.
        for step in [Step::Check(0), Step::Poll(0), Step::Verify(0)] {
            assert_eq!(step.wire_kind(), fly_api::Kind::Get);
        }
        assert!(Step::Release(0).is_cleanup() && Step::Unmark(0).is_cleanup() && !Step::Restart(0).is_cleanup());
        assert_eq!(Step::Renew(3).machine(), Some(3));
        assert_eq!(Step::Push(None).machine(), None);
    }
}
