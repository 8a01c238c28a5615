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
//!   Listing ─► Syncing ─┬────────────────► Leasing ─► Restarting ─► Releasing ─► Done
//!      │          │     └─► Relisting ─────┘   │                        ▲
//!      │          │             │              └─ a lease held elsewhere ┘
//!      └──────────┴─────────────┴─ list failed / dry run / nothing to restart ──────► Done
//! ```
//!
//! Where the rest lives: the wire (paths, headers, status codes) is `fly_api`; which Machines get the push and
//! whether a change needs a restart is `plan`; the payload and the ack are `protocol`; what a run knows so far
//! is `run`; when to try again is `retry`; the report is assembled in `report`.

use crate::change::ContentChange;
use crate::config::{Config, FanOut};
use crate::error::{ErrorClass, SyncError};
use crate::fly_api::{self, Answer};
use crate::http::{Request, RequestId, RequestLog, Response};
use crate::machines::{Machine, MachineState};
use crate::plan;
use crate::protocol;
use crate::redact::Redactor;
use crate::report::{self, Report, RestartCause};
use crate::retry::{self, Verdict};
use crate::run::{MachineRun, Phase, PushPending, RestartState, SyncState, TargetRun};
use crate::signature;
use serde::Serialize;
use std::collections::VecDeque;

/// How often a restarting Machine is read back (Fly allows 5 GETs/s per Machine; one a second is plenty).
pub const POLL_INTERVAL_MS: u64 = 1_000;
/// Time kept back at the end of the budget to release leases.
pub const RELEASE_RESERVE_MS: u64 = 2_000;
/// A Machine list this recent may stand in for a new one when only content is pushed: the runs of a content
/// release then share one list call instead of each spending one against the app's Machines API rate limit.
/// (Restarts never rely on it: a roll reads the list afresh for its baselines.)
pub const LIST_REUSE_MS: u64 = 1_000;
/// No call is started this close to its deadline: its answer could not arrive in time to be used.
pub const SEND_MARGIN_MS: u64 = 100;
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

/// One logical step of a run; each is one call to Fly, possibly sent several times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    List,
    /// The payload to one Machine, or (fan-out `one`) through the proxy to any.
    Push(Option<usize>),
    /// Read a Machine whose push failed: one no longer serving is skipped, not failed.
    Check(usize),
    Lease(usize),
    Restart(usize),
    /// Read a restarted Machine until it is started with passing checks.
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
            Step::Push(_) => "sync",
            Step::Check(_) => "check",
            Step::Lease(_) => "lease",
            Step::Restart(_) => "restart",
            Step::Poll(_) => "poll",
            Step::Verify(_) => "verify",
            Step::Release(_) => "release",
        }
    }

    fn machine(self) -> Option<usize> {
        match self {
            Step::List | Step::Push(None) => None,
            Step::Push(Some(m)) | Step::Check(m) | Step::Lease(m) | Step::Restart(m) | Step::Poll(m) | Step::Verify(m) | Step::Release(m) => {
                Some(m)
            }
        }
    }

    fn in_roll(self) -> bool {
        matches!(self, Step::Restart(_) | Step::Poll(_) | Step::Verify(_))
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
    config: Config,
    change: ContentChange,
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
    done: Option<Report>,
}

impl Engine {
    /// `seed` feeds the retry jitter (the shim passes a random one; tests a fixed one).
    pub fn new(config: Config, change: ContentChange, now_ms: u64, seed: u64) -> Engine {
        let deadline_ms = now_ms.saturating_add(config.budget_ms);
        let reserve = RELEASE_RESERVE_MS.min(config.budget_ms / 5);
        let mut secrets: Vec<&str> = vec![config.sync_secret.expose()];
        secrets.extend(config.webhook_secret.as_ref().map(|s| s.expose()));
        secrets.extend(config.targets.iter().map(|t| t.token.bare()));
        let redactor = Redactor::new(secrets);
        let mut engine = Engine {
            work_deadline_ms: deadline_ms - reserve,
            deadline_ms,
            started_ms: now_ms,
            now_ms,
            rng: fastrand::Rng::with_seed(seed),
            next_id: 1,
            calls: Vec::new(),
            targets: Vec::new(),
            redactor,
            done: None,
            config,
            change,
        };
        for (t, target) in engine.config.targets.iter().enumerate() {
            let skipped = plan::target_skip_reason(&engine.change, target);
            if skipped.is_none() {
                engine.calls.push(Call::new(t, Step::List, now_ms));
            }
            engine.targets.push(TargetRun {
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
                counts: Default::default(),
                list_reusable: !plan::restart_for_type(&engine.change, target),
                signed: None,
            });
        }
        engine
    }

    /// The next thing to do at `now_ms`.
    pub fn poll(&mut self, now_ms: u64) -> Action {
        let now = self.observe(now_ms);
        if let Some(report) = &self.done {
            return Action::Done { report: Box::new(report.clone()) };
        }
        self.advance_all(now);
        let mut requests = Vec::new();
        let mut expired = Vec::new();
        for c in 0..self.calls.len() {
            let call = &self.calls[c];
            if call.in_flight.is_some() || call.not_before > now {
                continue;
            }
            let limit = self.limit(call.step);
            if now + SEND_MARGIN_MS > limit {
                expired.push(c);
                continue;
            }
            requests.push(self.request_for(c, now, self.config.request_timeout_ms.min(limit - now)));
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
        if self.calls.is_empty() {
            // A finished call may have moved a target to its next phase: let it plan before deciding we are done.
            self.advance_all(now);
            if self.calls.is_empty() {
                let report = report::assemble(&self.config, &self.change, &self.targets, self.started_ms, now, &self.redactor);
                self.done = Some(report.clone());
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
        let response = self.scrubbed(response);
        let what = self.describe(&call);
        match fly_api::read(self.wire_kind(call.step), &response, &what, now) {
            Verdict::Success(answer) => self.on_answer(call, answer, now),
            Verdict::Retry { error, min_delay_ms, rate_limited } => self.on_transient(call, error, min_delay_ms, rate_limited, now),
            Verdict::Fail(error) => self.give_up(call, error, now),
        }
    }

    /// The report, once `poll` has returned `Done`.
    pub fn report(&self) -> Option<&Report> {
        self.done.as_ref()
    }

    fn observe(&mut self, now_ms: u64) -> u64 {
        self.now_ms = self.now_ms.max(now_ms);
        self.now_ms
    }

    /// Releases may use the reserve at the end of the budget; everything else must end before it.
    fn limit(&self, step: Step) -> u64 {
        if matches!(step, Step::Release(_)) { self.deadline_ms } else { self.work_deadline_ms }
    }

    /// Another party's words (an error body, a network message) with any secret it echoes redacted, before
    /// anything shortens or quotes them.
    fn scrubbed(&self, response: Response) -> Response {
        match response {
            Response::Http { status, headers, mut body } if !(200..300).contains(&status) => {
                self.redactor.scrub_in_place(&mut body);
                Response::Http { status, headers, body }
            }
            Response::Network { mut message } => {
                self.redactor.scrub_in_place(&mut message);
                Response::Network { message }
            }
            other => other,
        }
    }

    fn wire_kind(&self, step: Step) -> fly_api::Kind {
        match step {
            Step::List => fly_api::Kind::List,
            Step::Push(_) => fly_api::Kind::Push,
            Step::Check(_) | Step::Poll(_) | Step::Verify(_) => fly_api::Kind::Get,
            Step::Lease(_) => fly_api::Kind::Lease,
            Step::Restart(_) => fly_api::Kind::Restart,
            Step::Release(_) => fly_api::Kind::Release,
        }
    }

    fn machine_id(&self, call: &Call) -> Option<&str> {
        call.step.machine().map(|m| self.targets[call.target].machines[m].machine.id.as_str())
    }

    fn describe(&self, call: &Call) -> String {
        let target = &self.config.targets[call.target];
        match (call.step, self.machine_id(call)) {
            (Step::List, _) => format!("list Machines of {}", target.app),
            (Step::Push(None), _) => format!("sync through {}", target.app_url),
            (Step::Push(_), Some(m)) => format!("sync to Machine {m}"),
            (Step::Lease(_), Some(m)) => format!("lease Machine {m}"),
            (Step::Restart(_), Some(m)) => format!("restart Machine {m}"),
            (Step::Release(_), Some(m)) => format!("release lease on Machine {m}"),
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
            (Step::Check(m), Answer::Machine(machine)) => self.on_checked(t, m, Some(machine), now),
            (Step::Check(m), Answer::NoSuchMachine) => {
                let mut gone = self.targets[t].machines[m].machine.clone();
                gone.state = MachineState::Destroyed;
                self.on_checked(t, m, Some(gone), now)
            }
            (Step::Poll(m) | Step::Verify(m), Answer::NoSuchMachine) => {
                self.restart_failed(t, m, SyncError::fatal("the Machine was destroyed after the restart"))
            }
            (Step::Lease(m), Answer::Leased { nonce }) => self.targets[t].machines[m].nonce = Some(nonce),
            (Step::Lease(m), Answer::LeaseHeld(e)) => self.targets[t].machines[m].lease_refused = Some(e),
            (Step::Restart(m), Answer::Done) => self.schedule_poll(t, m, now, None),
            (Step::Verify(m), Answer::Machine(machine)) => self.on_verified(call, m, machine, now),
            (Step::Poll(m), Answer::Machine(machine)) => self.on_polled(t, m, machine, now),
            (Step::Release(m), Answer::Done) => self.targets[t].machines[m].nonce = None,
            // `fly_api::read` answers each kind of call with that kind's answers only.
            (_, _) => unreachable!("an answer of another kind of call"),
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
            Step::Restart(_) if !rate_limited => {
                counts.retries += 1;
                self.calls.push(Call { step: Step::Verify(call.step.machine().expect("restart has a machine")), attempts: 0, not_before: now, ..call });
            }
            // A failed read of a restarting Machine is just one poll less.
            Step::Poll(m) => self.schedule_poll(call.target, m, now, Some(error)),
            _ => {
                let delay = retry::backoff_ms(call.attempts, &mut self.rng, min_delay_ms);
                let max_attempts = if rate_limited { retry::MAX_RATE_LIMITED_ATTEMPTS } else { retry::MAX_ATTEMPTS };
                if call.attempts >= max_attempts {
                    let e = SyncError::retryable(format!("{} (gave up after {} attempts)", error.message, call.attempts));
                    self.give_up(call, e, now);
                } else if now + delay + SEND_MARGIN_MS > self.limit(call.step) {
                    let e = SyncError::retryable(format!("{} (no time left in the {} ms budget to retry)", error.message, self.config.budget_ms));
                    self.give_up(call, e, now);
                } else if let (Step::Push(Some(m)), false) = (call.step, rate_limited) {
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
            Step::Push(Some(m)) if error.class == ErrorClass::Retryable && self.may_check(t, m, now) => {
                let mr = &mut self.targets[t].machines[m];
                mr.sync_attempts = call.attempts;
                mr.push_pending = Some(PushPending { error, retry: None });
                self.check_machine(t, m, now);
            }
            Step::Push(m) => self.on_pushed(t, m, call.attempts, Err(error), now),
            Step::Check(m) => self.on_checked(t, m, None, now),
            Step::Lease(m) => self.targets[t].machines[m].lease_refused = Some(error),
            Step::Restart(m) | Step::Verify(m) => self.restart_failed(t, m, error),
            Step::Poll(m) if error.class == ErrorClass::Fatal => self.restart_failed(t, m, error),
            Step::Poll(m) => self.schedule_poll(t, m, now, Some(error)),
            Step::Release(m) => self.targets[t].machines[m].release_error = Some(error),
        }
    }

    // ── pushes ───────────────────────────────────────────────────────────────────────────────────────────

    /// A push to Machine `m` failed transiently. The first time, read the Machine before trying again: one
    /// stopped since the list needs no push.
    fn push_failed(&mut self, call: Call, m: usize, error: SyncError, retry_at: u64, now: u64) {
        self.targets[call.target].counts.retries += 1;
        if self.targets[call.target].machines[m].push_checks == 0 {
            self.targets[call.target].machines[m].push_pending = Some(PushPending { error, retry: Some((call.attempts, retry_at)) });
            self.check_machine(call.target, m, now);
        } else {
            self.calls.push(Call { not_before: retry_at, ..call });
        }
    }

    /// Whether a push given up on may still read its Machine first (at most twice per Machine, time allowing).
    fn may_check(&self, t: usize, m: usize, now: u64) -> bool {
        self.targets[t].machines[m].push_checks < 2 && now + SEND_MARGIN_MS <= self.work_deadline_ms
    }

    fn check_machine(&mut self, t: usize, m: usize, now: u64) {
        self.targets[t].machines[m].push_checks += 1;
        self.calls.push(Call::new(t, Step::Check(m), now));
    }

    /// The Machine behind a failed push, as read now (`None`: it could not be read; assume it still serves).
    fn on_checked(&mut self, t: usize, m: usize, machine: Option<Machine>, now: u64) {
        let regions = self.targets[t].regions.clone();
        let mr = &mut self.targets[t].machines[m];
        let Some(pending) = mr.push_pending.take() else { return };
        if let Some(machine) = machine {
            if let Err(skip) = plan::select(&machine, regions.as_ref()) {
                mr.machine = machine;
                mr.sync = SyncState::Gone(skip);
                return;
            }
        }
        match pending.retry {
            Some((attempts, at)) => self.calls.push(Call { target: t, step: Step::Push(Some(m)), attempts, not_before: at.max(now), in_flight: None }),
            None => {
                let attempts = mr.sync_attempts;
                self.on_pushed(t, Some(m), attempts, Err(pending.error), now)
            }
        }
    }

    fn on_pushed(&mut self, t: usize, m: Option<usize>, attempts: u32, result: Result<protocol::Ack, SyncError>, now: u64) {
        let run = &mut self.targets[t];
        match m {
            Some(m) => {
                let mr = &mut run.machines[m];
                mr.sync_attempts = attempts;
                mr.sync_ms = mr.sync_started.map(|s| now.saturating_sub(s));
                mr.sync = match result {
                    Ok(ack) if ack.machine == mr.machine.id => SyncState::Synced(ack),
                    Ok(ack) => SyncState::Failed(SyncError::fatal(format!(
                        "the ack came from Machine {} instead of {}: the sync path must answer with its own FLY_MACHINE_ID",
                        ack.machine, mr.machine.id
                    ))),
                    Err(e) => SyncState::Failed(e),
                };
            }
            // Fan-out `one`: the acking Machine synced; the others share its store. (An acking Machine missing
            // from the list started since: the push landed all the same.)
            None => {
                for mr in run.machines.iter_mut().filter(|mr| matches!(mr.sync, SyncState::Pending)) {
                    mr.sync_attempts = attempts;
                    mr.sync = match &result {
                        Ok(ack) if ack.machine == mr.machine.id => {
                            mr.sync_ms = mr.sync_started.map(|s| now.saturating_sub(s));
                            SyncState::Synced(ack.clone())
                        }
                        Ok(_) => SyncState::SharedStore,
                        Err(e) => SyncState::Failed(e.clone()),
                    };
                }
            }
        }
    }

    // ── phases ───────────────────────────────────────────────────────────────────────────────────────────

    fn advance_all(&mut self, now: u64) {
        for t in 0..self.targets.len() {
            if self.targets[t].phase == Phase::Restarting {
                self.fill_restart_slots(t, now);
            }
            if self.calls.iter().any(|c| c.target == t) {
                continue;
            }
            match self.targets[t].phase {
                // These end with their answer (`exit_listing`, `exit_relisting`) or with the run.
                Phase::Listing | Phase::Relisting | Phase::Done => {}
                Phase::Syncing => self.exit_syncing(t, now),
                Phase::Leasing => self.exit_leasing(t, now),
                Phase::Restarting => self.exit_restarting(t, now),
                Phase::Releasing => self.targets[t].phase = Phase::Done,
            }
        }
    }

    /// Listing → Syncing (or Done for a dry run): select the Machines and push to each.
    fn exit_listing(&mut self, t: usize, mut machines: Vec<Machine>) {
        let target = &self.config.targets[t];
        let dry_run = self.config.dry_run;
        let run = &mut self.targets[t];
        machines.sort_by(|a, b| (&a.region, &a.id).cmp(&(&b.region, &b.id)));
        run.machines = machines
            .into_iter()
            .map(|machine| {
                let sync = match plan::select(&machine, run.regions.as_ref()) {
                    Err(skip) => SyncState::NotSelected(skip),
                    Ok(()) if dry_run => SyncState::WouldSync,
                    Ok(()) => SyncState::Pending,
                };
                MachineRun::new(machine, sync)
            })
            .collect();
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
        let pending: Vec<usize> = (0..run.machines.len()).filter(|&m| matches!(run.machines[m].sync, SyncState::Pending)).collect();
        let pushes: Vec<Option<usize>> = match target.fan_out {
            FanOut::Every => pending.into_iter().map(Some).collect(),
            // One push through the proxy, only if some Machine is serving at all.
            FanOut::One if !pending.is_empty() => vec![None],
            FanOut::One => vec![],
        };
        self.calls.extend(pushes.into_iter().map(|m| Call::new(t, Step::Push(m), 0)));
    }

    /// Syncing → Done, or towards a roll: the type needs a restart, or receivers asked for one.
    fn exit_syncing(&mut self, t: usize, now: u64) {
        let target = &self.config.targets[t];
        let run = &mut self.targets[t];
        let by_type = plan::restart_for_type(&self.change, target);
        let asked = |m: &MachineRun| matches!(&m.sync, SyncState::Synced(a) if a.restart_required);
        let any_asked = target.restart.on_request && run.machines.iter().any(asked);
        let chosen: Vec<usize> = if by_type || (any_asked && target.fan_out == FanOut::One) {
            // Every serving Machine: the type needs it, or the shared store told us to.
            (0..run.machines.len()).filter(|&m| !matches!(run.machines[m].sync, SyncState::NotSelected(_) | SyncState::Gone(_))).collect()
        } else if any_asked {
            (0..run.machines.len()).filter(|&m| asked(&run.machines[m])).collect()
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
            self.calls.push(Call::new(t, Step::List, now));
        } else {
            self.begin_leasing(t, now);
        }
    }

    /// Relisting → Leasing: fresh baselines for the roll (the newest events and checks of each chosen
    /// Machine), and which of them are still serving at all.
    fn exit_relisting(&mut self, t: usize, machines: Vec<Machine>, now: u64) {
        let run = &mut self.targets[t];
        for m in std::mem::take(&mut run.queue) {
            let mr = &mut run.machines[m];
            match machines.iter().find(|fresh| fresh.id == mr.machine.id) {
                Some(fresh) if fresh.is_started() => {
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
        self.begin_leasing(t, now);
    }

    fn relist_failed(&mut self, t: usize, e: SyncError) {
        let run = &mut self.targets[t];
        run.stopped_early = Some(format!("no restart: the Machines could not be read again ({})", e.message));
        for m in run.queue.drain(..) {
            run.machines[m].restart = RestartState::NotAttempted("not restarted: the Machine list could not be read".into());
        }
        run.phase = Phase::Done;
    }

    fn begin_leasing(&mut self, t: usize, now: u64) {
        let run = &mut self.targets[t];
        if run.queue.is_empty() {
            run.phase = Phase::Done;
            return;
        }
        run.phase = Phase::Leasing;
        self.calls.extend(run.queue.iter().map(|&m| Call::new(t, Step::Lease(m), now)));
    }

    /// Leasing → Restarting when every chosen Machine is ours; else Releasing: someone else (a deploy, another
    /// restart) is operating on some of them, and we do not fight.
    fn exit_leasing(&mut self, t: usize, now: u64) {
        let run = &mut self.targets[t];
        let refused: Vec<String> = run.machines.iter().filter(|m| m.lease_refused.is_some()).map(|m| m.machine.id.clone()).collect();
        if refused.is_empty() {
            run.phase = Phase::Restarting;
            return;
        }
        run.stopped_early = Some(format!("no restart: could not lease {}", refused.join(", ")));
        for m in run.queue.drain(..) {
            let mr = &mut run.machines[m];
            let why = match &mr.lease_refused {
                Some(e) => format!("not leased: {}", e.message),
                None => "not restarted: another Machine's lease is held elsewhere".into(),
            };
            mr.restart = RestartState::NotAttempted(why);
        }
        self.begin_release(t, now);
    }

    /// Restarting → Releasing, once the queue is empty and no restart is under way.
    fn exit_restarting(&mut self, t: usize, now: u64) {
        if self.targets[t].queue.is_empty() {
            self.begin_release(t, now);
        }
    }

    fn begin_release(&mut self, t: usize, now: u64) {
        let run = &mut self.targets[t];
        run.phase = Phase::Releasing;
        let leased: Vec<usize> = (0..run.machines.len()).filter(|&m| run.machines[m].nonce.is_some()).collect();
        self.calls.extend(leased.into_iter().map(|m| Call::new(t, Step::Release(m), now)));
    }

    // ── the roll ─────────────────────────────────────────────────────────────────────────────────────────

    /// Start restarts while fewer than `max_unavailable` Machines are down; stop starting them after a
    /// failure or when the budget runs out.
    fn fill_restart_slots(&mut self, t: usize, now: u64) {
        let max_unavailable = self.config.targets[t].max_unavailable;
        let out_of_time = now + SEND_MARGIN_MS > self.work_deadline_ms;
        let run = &mut self.targets[t];
        if run.stopped_early.is_some() || out_of_time {
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
        while run.down() < max_unavailable {
            let Some(m) = run.queue.pop_front() else { break };
            let baseline_ms = run.machines[m].machine.newest_event_ms;
            run.machines[m].restart = RestartState::Sent { at: now, baseline_ms, seen_down: false };
            self.calls.push(Call::new(t, Step::Restart(m), now));
        }
        run.max_down = run.max_down.max(run.down());
        debug_assert!(self.calls.iter().filter(|c| c.target == t && c.step.in_roll()).count() <= max_unavailable.max(run.down()));
    }

    fn schedule_poll(&mut self, t: usize, m: usize, now: u64, last_error: Option<SyncError>) {
        let restart_timeout_ms = self.config.targets[t].restart_timeout_ms;
        let mr = &self.targets[t].machines[m];
        let RestartState::Sent { at, .. } = mr.restart else { return };
        let waited = now.saturating_sub(at);
        if waited >= restart_timeout_ms || now + POLL_INTERVAL_MS + SEND_MARGIN_MS > self.work_deadline_ms {
            let last = match last_error {
                Some(e) => format!("last read failed: {}", e.message),
                None => format!("state `{}`, checks: {}", mr.machine.state, mr.machine.checks_summary()),
            };
            let limit = if waited >= restart_timeout_ms { "restart timeout" } else { "time budget" };
            let e = SyncError::retryable(format!("not started with passing checks {waited} ms after the restart ({limit} reached; {last})"));
            self.restart_failed(t, m, e);
            return;
        }
        self.calls.push(Call::new(t, Step::Poll(m), now + POLL_INTERVAL_MS));
    }

    fn restart_failed(&mut self, t: usize, m: usize, e: SyncError) {
        let run = &mut self.targets[t];
        let id = run.machines[m].machine.id.clone();
        run.machines[m].restart = RestartState::Failed(e);
        if run.stopped_early.is_none() {
            run.stopped_early = Some(format!("Machine {id} failed to restart; the remaining Machines were left alone"));
        }
    }

    /// After an ambiguous restart answer: did the restart happen? If not, send it again (a bounded number of
    /// times); if it did, watch it come back.
    fn on_verified(&mut self, call: Call, m: usize, machine: Machine, now: u64) {
        let t = call.target;
        let RestartState::Sent { baseline_ms, .. } = self.targets[t].machines[m].restart else { return };
        if machine.newest_event_ms > baseline_ms || !machine.is_started() {
            self.schedule_poll(t, m, now, None);
        } else if call.attempts + 1 >= retry::MAX_ATTEMPTS {
            self.restart_failed(t, m, SyncError::retryable("restart not acknowledged and not observed"));
        } else {
            let delay = retry::backoff_ms(1, &mut self.rng, None);
            self.calls.push(Call { step: Step::Restart(m), not_before: now + delay, attempts: 1, ..call });
        }
    }

    fn on_polled(&mut self, t: usize, m: usize, machine: Machine, now: u64) {
        let mr = &mut self.targets[t].machines[m];
        let RestartState::Sent { at, baseline_ms, seen_down } = mr.restart else { return };
        if machine.state.is_lost() {
            let e = SyncError::fatal(format!("Machine went `{}` after the restart", machine.state));
            mr.machine = machine;
            self.restart_failed(t, m, e);
            return;
        }
        let fresh_start = machine.newest_start_ms > baseline_ms || seen_down;
        let healthy = !mr.had_checks || (!machine.checks.is_empty() && machine.checks_passing());
        let started = machine.is_started();
        let seen_down = seen_down || !started;
        mr.machine = machine;
        if started && fresh_start && healthy {
            mr.restart = RestartState::Restarted { ms: now.saturating_sub(at) };
        } else {
            mr.restart = RestartState::Sent { at, baseline_ms, seen_down };
            self.schedule_poll(t, m, now, None);
        }
    }

    // ── requests ─────────────────────────────────────────────────────────────────────────────────────────

    /// The request for call `c`, marked in flight.
    fn request_for(&mut self, c: usize, now: u64, timeout_ms: u64) -> Request {
        let id = self.next_id;
        self.next_id += 1;
        let call = &mut self.calls[c];
        call.in_flight = Some(id);
        call.attempts += 1;
        let (t, step, attempt) = (call.target, call.step, call.attempts);
        let lease_ttl_s = self.lease_ttl_s(now);
        let target = &self.config.targets[t];
        let run = &mut self.targets[t];
        let machine_id = step.machine().map(|m| run.machines[m].machine.id.clone());
        let mid = machine_id.as_deref().unwrap_or_default();
        let nonce = step.machine().and_then(|m| run.machines[m].nonce.clone()).unwrap_or_default();
        let signature = if let Step::Push(m) = step {
            for mr in m.map_or(0..run.machines.len(), |m| m..m + 1) {
                let mr = &mut run.machines[mr];
                if matches!(mr.sync, SyncState::Pending) && mr.sync_started.is_none() {
                    mr.sync_started = Some(now);
                }
            }
            match &run.signed {
                Some((at, sig)) if *at == now => sig.clone(),
                _ => {
                    let sig = signature::sign(run.body.as_bytes(), now, self.config.sync_secret.expose());
                    run.signed = Some((now, sig.clone()));
                    sig
                }
            }
        } else {
            String::new()
        };
        let wire_call = match step {
            Step::List => fly_api::Call::List,
            Step::Push(_) => fly_api::Call::Push {
                machine: machine_id.as_deref(),
                body: &run.body,
                signature: &signature,
                idempotency_key: &self.change.idempotency_key,
            },
            Step::Check(_) | Step::Poll(_) | Step::Verify(_) => fly_api::Call::Get { machine: mid },
            Step::Lease(_) => fly_api::Call::Lease { machine: mid, ttl_s: lease_ttl_s, description: LEASE_DESCRIPTION },
            Step::Restart(_) => fly_api::Call::Restart { machine: mid, nonce: &nonce },
            Step::Release(_) => fly_api::Call::Release { machine: mid, nonce: &nonce },
        };
        let wire = fly_api::request(target, &wire_call);
        if matches!(step, Step::Push(_)) {
            run.counts.app += 1;
        } else {
            run.counts.machines_api += 1;
        }
        let reuse_ms = if step == Step::List && run.phase == Phase::Listing && run.list_reusable { LIST_REUSE_MS } else { 0 };
        let log = RequestLog { target: target.name.clone(), kind: step.name(), method: wire.method, url: wire.url.clone(), machine: machine_id, attempt };
        Request { id, method: wire.method, url: wire.url, headers: wire.headers, body: wire.body, timeout_ms, reuse_ms, log }
    }

    /// Long enough for the whole run, so a crashed run's lease frees itself soon after.
    fn lease_ttl_s(&self, now: u64) -> u64 {
        (self.deadline_ms.saturating_sub(now) / 1000 + 5).max(10)
    }
}
