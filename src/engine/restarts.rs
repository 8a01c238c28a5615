//! Marking and Rolling: the rolling restart's steps. The rules they follow (intent on the Machines, short
//! leases, per-region caps, the budget estimate) are `crate::roll`'s; this file sequences the calls.
//!
//! Per Machine: `Lease` (renewed every few seconds while held) → `Restart` → `Wait` (long-poll until started)
//! → `Poll` (until its checks pass) → `Unmark` (the restart it owed is done) → `Release`. A lease held by a run
//! of ours is waited out once; one held by anybody else stops the roll. A Machine stopped or destroyed by
//! someone else meanwhile is skipped, not failed. A Machine an earlier run left down (in transition, or back
//! started without passing checks yet) counts as down from the start, takes its slot first and is read until it
//! serves; only then does its mark say done.

use super::{Work, Call, Engine, Step, POLL_INTERVAL_MS, SEND_MARGIN_MS};
use crate::error::{ErrorClass, SyncError};
use crate::fly_api::{Answer, LeaseHolder};
use crate::limits::rfc3339_ms;
use crate::machines::{Machine, MachineState};
use crate::plan;
use crate::report::RestartCause;
use crate::roll::{self, Intent, RestartMark, Scope};
use crate::run::{Phase, RestartState, SyncState};

/// How long after a stale lease's stated expiry we ask for it again: Fly states it in whole unix seconds (the
/// lease may hold up to a second past it) and our clock and Fly's differ a little; asked too early, the lease
/// is still held and the Machine is left to a later run.
const LEASE_EXPIRY_MARGIN_MS: u64 = 1_500;

impl Engine {
    /// Why this target rolls, if it does: the change's type, a receiver's request, or unfinished intent.
    pub(super) fn roll_cause(&self, t: usize) -> Option<RestartCause> {
        let target = &self.config.targets[t];
        let run = &self.targets[t];
        if matches!(self.work, Work::SyncTags(_)) {
            // Clients wait on this run: a roll is left to the runs of changes.
            return None;
        }
        let by_type = self.work.change().is_some_and(|c| plan::restart_for_type(c, target));
        let asked = target.restart.on_request && run.machines.iter().any(|m| matches!(&m.sync, SyncState::Synced(a) if a.restart_required));
        if by_type {
            Some(RestartCause::DocumentType)
        } else if asked {
            Some(RestartCause::Receiver)
        } else if run.machines.iter().any(|m| m.machine.owed().is_some()) {
            Some(RestartCause::Unfinished)
        } else {
            None
        }
    }

    /// Which Machines owe a restart, from the freshest list, and which intent each is to carry: this change's
    /// (its type needs a restart: owed app-wide by Machines started before it; or a receiver asked), and any
    /// unfinished one an earlier run recorded — on the Machine itself, or app-wide on any Machine. A Machine
    /// that owes one is marked with the newest (one restart satisfies them all); owed ones a start has
    /// satisfied are marked done.
    pub(super) fn plan_roll(&mut self, t: usize, now: u64) {
        let (app_intents, asked) = self.intents(t, now);
        let dry_run = self.config.dry_run;
        let run = &mut self.targets[t];
        let (mut marks, mut unmarks, mut older, mut newer) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (m, mr) in run.machines.iter_mut().enumerate() {
            if matches!(mr.sync, SyncState::NotSelected(crate::plan::Skip::NotAnAppMachine(_))) {
                continue;
            }
            let carried = mr.machine.owed().filter(|i| !i.satisfied_by(&mr.machine)).cloned();
            let owed = asked[m].iter().chain(app_intents.iter().filter(|i| i.owed_by(&mr.machine))).chain(carried.iter());
            let newest = owed.max_by_key(|i| i.since_ms).cloned();
            let is_new = newest.as_ref().is_some_and(|i| run.intent.as_ref().is_some_and(|own| own.change == i.change));
            let Some(intent) = newest else {
                if mr.machine.owed().is_some() && !dry_run {
                    if mr.machine.is_started() && mr.machine.reachable() && !mr.machine.checks_passing() {
                        // Booted with the change (restarted by a run killed since, say), its checks not passing
                        // yet: still down. It takes a slot and is watched until they pass; then its mark says done.
                        mr.restart = RestartState::Planned;
                        older.push(m);
                    } else {
                        mr.restart = RestartState::NotNeeded("started after the restart it owed was recorded: it runs the change already".into());
                        unmarks.push(m);
                    }
                }
                continue;
            };
            if dry_run {
                if mr.machine.is_started() && mr.machine.reachable() {
                    mr.restart = RestartState::WouldRestart;
                }
                continue;
            }
            let record = mr.machine.owed() != Some(&intent);
            let Some(now_or_later) = plan_one(mr, &intent) else {
                if mr.machine.owed().is_some() {
                    unmarks.push(m);
                }
                continue;
            };
            if record {
                mr.planned_mark = Some(intent);
                marks.push(m);
            }
            if now_or_later {
                if is_new { newer.push(m) } else { older.push(m) }
            }
        }
        // Unfinished intent first (oldest first), then this change's; before all, the Machines down already (in
        // transition or not healthy since an earlier run's restart): they take the first slots, so what is down
        // is counted before any other Machine goes down.
        let since = |m: usize| (run.machines[m].planned_mark.as_ref().or(run.machines[m].machine.owed()).map_or(0, |i| i.since_ms), m);
        crate::machines::sort_indices(&mut older, &|a, b| since(a).cmp(&since(b)));
        // The Machines down first, each group in its order: a stable partition (not a stable sort, whose code
        // the module would carry for this one call).
        let (up, down): (Vec<usize>, Vec<usize>) = older.into_iter().chain(newer).partition(|&m| is_up(&run.machines[m].machine));
        run.queue = down.into_iter().chain(up).collect();
        run.phase = Phase::Marking;
        self.calls.extend(marks.into_iter().map(|m| Call::new(t, Step::Mark(m), now)));
        self.calls.extend(unmarks.into_iter().map(|m| Call::new(t, Step::Unmark(m), now)));
    }

    /// The app-wide intents in play (this change's, when its type needs a restart, and any recorded on a
    /// Machine), and per Machine the one its receiver asked for. Sets the run's own intent.
    fn intents(&mut self, t: usize, now: u64) -> (Vec<Intent>, Vec<Option<Intent>>) {
        let target = &self.config.targets[t];
        let run = &self.targets[t];
        let mut app: Vec<Intent> = Vec::new();
        for i in run.machines.iter().filter_map(|m| m.machine.owed()).filter(|i| matches!(i.scope, Scope::App { .. })) {
            if !app.contains(i) {
                app.push(i.clone());
            }
        }
        let mut asked = vec![None; run.machines.len()];
        let mut own = None;
        if let Some(change) = self.work.change() {
            let name = format!("{}@{}", change.id, change.rev);
            let shared_store = target.fan_out == crate::config::FanOut::One && self.roll_cause(t) == Some(RestartCause::Receiver);
            if plan::restart_for_type(change, target) || shared_store {
                // Owed by Machines started before the change; one started after booted with it. The time is the
                // change's own, so every run of this change (a retry) computes the same intent; one recorded
                // already is taken as it is.
                let since_ms = rfc3339_ms(&change.updated_at).unwrap_or(now).min(now);
                let regions = run.regions.as_ref().map(|r| r.iter().cloned().collect());
                let intent = app.iter().find(|i| i.change == name).cloned();
                let intent = intent.unwrap_or(Intent { since_ms, change: name.clone(), scope: Scope::App { regions } });
                if !app.contains(&intent) {
                    app.push(intent.clone());
                }
                own = Some(intent);
            }
            let receiver = Intent { since_ms: now, change: name.clone(), scope: Scope::Machine };
            for (m, mr) in run.machines.iter().enumerate() {
                let asked_here = matches!(&mr.sync, SyncState::Synced(a) if target.restart.on_request && a.restart_required);
                let done_here = matches!(&mr.machine.mark, Some(RestartMark::Done { change, .. }) if *change == name);
                if asked_here && !done_here {
                    asked[m] = Some(receiver.clone());
                }
            }
            own = own.or(Some(receiver));
        }
        self.targets[t].intent = own;
        (app, asked)
    }

    /// Marking → Rolling: Machines whose owed restart could not be recorded are left alone by this run (a
    /// restart that is not recorded could be lost with a killed run).
    pub(super) fn exit_marking(&mut self, t: usize) {
        let run = &mut self.targets[t];
        let queue = std::mem::take(&mut run.queue);
        for m in queue {
            match run.machines[m].mark_error.take() {
                Some(e) => run.machines[m].restart = RestartState::NotAttempted(format!("not restarted: the restart it owes could not be recorded on it ({})", e.message)),
                None => run.queue.push_back(m),
            }
        }
        run.phase = if run.queue.is_empty() { Phase::Done } else { Phase::Rolling };
    }

    /// Rolling → Releasing, once nothing is under way: what the budget left over is resumable.
    pub(super) fn exit_rolling(&mut self, t: usize, now: u64) {
        let run = &mut self.targets[t];
        if !run.queue.is_empty() && run.stopped_early.is_none() {
            let left = run.queue.len();
            let machines = if left == 1 { "Machine" } else { "Machines" };
            run.stopped_early = Some(format!("the time budget ran out with {left} {machines} to go; the next run finishes the roll"));
        }
        for m in run.queue.drain(..) {
            run.machines[m].restart =
                RestartState::Resumable("left for the next run: no room left in the budget for its restart; the restart stays recorded on it".into());
        }
        self.begin_release(t, now);
    }

    pub(super) fn begin_release(&mut self, t: usize, now: u64) {
        // Renewals still waiting for their turn are moot now.
        self.calls.retain(|c| !(c.target == t && matches!(c.step, Step::Renew(_)) && c.in_flight.is_none()));
        let run = &mut self.targets[t];
        run.phase = Phase::Releasing;
        let leased: Vec<usize> = (0..run.machines.len()).filter(|&m| run.machines[m].nonce.is_some()).collect();
        self.calls.extend(leased.into_iter().map(|m| Call::new(t, Step::Release(m), now)));
    }

    /// Start restarts while the region and app caps allow, and only those the budget can see through.
    pub(super) fn fill_restart_slots(&mut self, t: usize, now: u64) {
        let target = &self.config.targets[t];
        let rule = target.max_unavailable;
        let run = &mut self.targets[t];
        if let Some(stopped) = &run.stopped_early {
            let why = format!("not restarted: the roll stopped ({stopped}); the restart stays recorded on it for a later run");
            for m in run.queue.drain(..) {
                run.machines[m].restart = RestartState::NotAttempted(why.clone());
            }
            return;
        }
        let observed = run.machines.iter().filter_map(|m| match m.restart {
            RestartState::Restarted { ms } => Some(ms),
            _ => None,
        });
        let last_roll = run.machines.iter().filter_map(|m| match m.machine.mark {
            Some(RestartMark::Done { took_ms, .. }) => took_ms,
            _ => None,
        });
        let estimate = roll::restart_estimate_ms(observed, last_roll, target.restart_timeout_ms);
        // Per region: Machines serving (or down because of a restart of ours, this run's or an earlier one's),
        // and down so. A queued Machine down already (an earlier run's restart) counts as down from the start.
        let down_already = |mr: &crate::run::MachineRun| matches!(mr.restart, RestartState::Planned) && !is_up(&mr.machine);
        // A short list (a fleet spans a few regions), looked up by name: no map type to compile for it.
        let mut regions: Vec<(String, (usize, usize))> = Vec::new();
        let at = |regions: &[(String, (usize, usize))], region: &str| regions.iter().position(|(r, _)| r == region);
        for mr in &run.machines {
            let i = at(&regions, &mr.machine.region).unwrap_or_else(|| {
                regions.push((mr.machine.region.clone(), (0, 0)));
                regions.len() - 1
            });
            let entry = &mut regions[i].1;
            let down = mr.restart.in_slot() || down_already(mr);
            entry.0 += usize::from(down || (mr.machine.is_started() && mr.machine.reachable()));
            entry.1 += usize::from(down);
        }
        let mut i = 0;
        while i < run.queue.len() && now + estimate + SEND_MARGIN_MS <= self.work_deadline_ms {
            let m = run.queue[i];
            // Every queued Machine's region was counted above.
            let here = at(&regions, &run.machines[m].machine.region).expect("counted");
            let (serving, down_here) = regions[here].1;
            let down_total = regions.iter().map(|(_, r)| r.1).sum();
            let lone_down = regions.iter().any(|&(_, (serving, down))| serving == 1 && down == 1);
            // One down already takes no more than it has: it is watched until it serves, whatever the caps.
            let counted = down_already(&run.machines[m]);
            if counted || roll::may_start(rule, serving, down_here, down_total, lone_down) {
                if !counted {
                    regions[here].1 .1 += 1;
                }
                run.queue.remove(i);
                // A Machine in transition is first seen settled, one started without passing checks is read until
                // they pass; a serving one is leased for its restart.
                let machine = &run.machines[m].machine;
                let (state, step) = if is_up(machine) {
                    (RestartState::Leasing, Step::Lease(m))
                } else if machine.is_started() {
                    (RestartState::Settling, Step::Poll(m))
                } else {
                    (RestartState::Settling, Step::Wait(m))
                };
                run.machines[m].restart = state;
                self.calls.push(Call::new(t, step, now));
            } else {
                i += 1;
            }
        }
        run.max_down = run.max_down.max(run.down());
    }

    /// Answers to the roll's calls.
    pub(super) fn on_roll_answer(&mut self, attempts: u32, t: usize, step: Step, answer: Answer, now: u64) {
        let run = &mut self.targets[t];
        let mr = &mut run.machines[step.machine().expect("roll steps have a Machine")];
        match (step, answer) {
            (Step::Mark(_), Answer::Done) => mr.machine.mark = mr.planned_mark.take().map(RestartMark::Owed),
            (Step::Unmark(_), Answer::Done) => mr.machine.mark = Some(done_mark(mr, run.intent.as_ref())),
            (Step::Lease(m), Answer::Leased { nonce }) => self.on_leased(t, m, nonce, now),
            (Step::Lease(m), Answer::LeaseHeld(e)) => {
                mr.lease_refused = Some(e);
                self.calls.push(Call::new(t, Step::LeaseInfo(m), now));
            }
            (Step::LeaseInfo(m), Answer::LeaseInfo(holder)) => self.on_lease_info(t, m, holder, now),
            (Step::Renew(m), Answer::Leased { .. }) => self.schedule_renew(t, m, now),
            // Our lease lapsed and someone took it: nothing to renew; the release will find it gone.
            (Step::Renew(_), Answer::LeaseHeld(_)) => mr.nonce = None,
            (Step::Restart(m), Answer::Done) => {
                mr.restart = RestartState::Sent { at: now, baseline_ms: mr.machine.newest_event_ms, seen_down: false };
                self.calls.push(Call::new(t, Step::Wait(m), now));
            }
            (Step::Restart(m), Answer::NotRunning) => self.skip_restart(t, m, "not running when its turn came (stopped by someone else): it boots with the change", now),
            (Step::Restart(m) | Step::Wait(m) | Step::Poll(m) | Step::Verify(m), Answer::NoSuchMachine) => {
                mr.nonce = None;
                self.skip_restart(t, m, "destroyed during the roll", now)
            }
            (Step::Wait(m), Answer::Started) if matches!(mr.restart, RestartState::Settling) => self.calls.push(Call::new(t, Step::Poll(m), now)),
            (Step::Wait(m), Answer::Started) => self.on_started(t, m, now),
            (Step::Wait(m), Answer::NotYet { state }) if state.as_deref() == Some("stopped") => {
                self.skip_restart(t, m, "stopped by someone else during its restart: it boots with the change", now)
            }
            (Step::Wait(m), Answer::NotYet { .. }) => self.watch(t, m, now, None),
            (Step::Poll(m), Answer::Machine(machine)) if matches!(mr.restart, RestartState::Settling) => self.on_settled(t, m, machine, now),
            (Step::Poll(m), Answer::Machine(machine)) => self.on_polled(t, m, machine, now),
            (Step::Verify(m), Answer::Machine(machine)) => self.on_verified(attempts, t, m, machine, now),
            (Step::Release(m), Answer::Done) => {
                mr.nonce = None;
                self.calls.retain(|c| !(c.target == t && c.step == Step::Renew(m) && c.in_flight.is_none()));
            }
            // `fly_api::read` answers each kind of call with that kind's answers only.
            _ => unreachable!("an answer of another kind of call"),
        }
    }

    /// A roll call is over without success.
    pub(super) fn roll_step_failed(&mut self, t: usize, step: Step, error: SyncError, now: u64) {
        let mr = &mut self.targets[t].machines[step.machine().expect("roll steps have a Machine")];
        match step {
            Step::Mark(_) => mr.mark_error = Some(error),
            // A start has satisfied it (or it is done): the next run reads it as satisfied and clears it.
            Step::Unmark(_) => {}
            Step::Lease(m) | Step::LeaseInfo(m) => {
                let e = mr.lease_refused.take().unwrap_or(error);
                self.lease_refused(t, m, e);
            }
            // A lapsed renewal shows at release; the restart goes on.
            Step::Renew(_) => {}
            Step::Restart(m) | Step::Verify(m) => self.restart_failed(t, m, error),
            Step::Poll(m) | Step::Wait(m) if error.class == ErrorClass::Fatal => self.restart_failed(t, m, error),
            Step::Poll(m) | Step::Wait(m) => self.watch(t, m, now, Some(error)),
            Step::Release(_) => mr.release_error = Some(error),
            Step::List | Step::Refs(_) | Step::Push(_) | Step::Check(_) => unreachable!("not a roll step"),
        }
    }

    fn on_leased(&mut self, t: usize, m: usize, nonce: String, now: u64) {
        let mr = &mut self.targets[t].machines[m];
        mr.nonce = Some(nonce);
        mr.lease_refused = None;
        if matches!(mr.restart, RestartState::Leasing | RestartState::WaitingForLease) {
            mr.restart = RestartState::Leasing;
            self.calls.push(Call::new(t, Step::Restart(m), now));
        }
        self.schedule_renew(t, m, now);
    }

    fn schedule_renew(&mut self, t: usize, m: usize, now: u64) {
        if self.targets[t].machines[m].nonce.is_some() && self.targets[t].phase == Phase::Rolling {
            self.calls.push(Call::new(t, Step::Renew(m), now + roll::RENEW_EVERY_MS));
        }
    }

    /// Who holds the lease we could not take: a run of ours (waited out once: a killed run's lease expires
    /// within its short TTL), or someone else (a deploy, an operator: the roll stops, nothing is fought).
    fn on_lease_info(&mut self, t: usize, m: usize, holder: Option<LeaseHolder>, now: u64) {
        let mr = &mut self.targets[t].machines[m];
        match holder {
            // Released meanwhile: ask again.
            None if !mr.lease_waited => {
                mr.lease_waited = true;
                self.calls.push(Call::new(t, Step::Lease(m), now));
            }
            Some(h) if roll::lease_is_ours(&h.description) && !mr.lease_waited && h.expires_at_ms + LEASE_EXPIRY_MARGIN_MS < self.work_deadline_ms => {
                mr.lease_waited = true;
                mr.restart = RestartState::WaitingForLease;
                self.calls.push(Call::new(t, Step::Lease(m), h.expires_at_ms.max(now) + LEASE_EXPIRY_MARGIN_MS));
            }
            Some(h) if roll::lease_is_ours(&h.description) => {
                mr.restart = RestartState::NotAttempted("another run of ours holds its lease and keeps it: that run restarts it".into());
            }
            _ => {
                let e = mr.lease_refused.take().unwrap_or_else(|| SyncError::fatal("lease held elsewhere"));
                self.lease_refused(t, m, e);
            }
        }
    }

    fn lease_refused(&mut self, t: usize, m: usize, e: SyncError) {
        let run = &mut self.targets[t];
        let id = run.machines[m].machine.id.clone();
        run.machines[m].restart = RestartState::NotAttempted(format!("not leased: {}", e.message));
        if run.stopped_early.is_none() {
            run.stopped_early = Some(format!("no further restarts: could not lease {id}; the restarts left stay recorded for a later run"));
        }
    }

    /// Skipped, not failed: the Machine left the roll by someone else's doing.
    fn skip_restart(&mut self, t: usize, m: usize, why: &str, now: u64) {
        self.targets[t].machines[m].restart = RestartState::Skipped(why.into());
        self.release_one(t, m, now);
    }

    fn release_one(&mut self, t: usize, m: usize, now: u64) {
        self.calls.retain(|c| !(c.target == t && c.step == Step::Renew(m) && c.in_flight.is_none()));
        if self.targets[t].machines[m].nonce.is_some() {
            self.calls.push(Call::new(t, Step::Release(m), now));
        }
    }

    /// Started again after its restart: done unless its checks have to pass first.
    fn on_started(&mut self, t: usize, m: usize, now: u64) {
        let mr = &mut self.targets[t].machines[m];
        if let RestartState::Sent { seen_down, .. } = &mut mr.restart {
            *seen_down = true;
        }
        if mr.had_checks {
            self.calls.push(Call::new(t, Step::Poll(m), now));
        } else {
            self.confirm(t, m, now);
        }
    }

    /// Back started, checks passing: clear the intent, release the lease.
    fn confirm(&mut self, t: usize, m: usize, now: u64) {
        let mr = &mut self.targets[t].machines[m];
        let RestartState::Sent { at, .. } = mr.restart else { return };
        mr.restart = RestartState::Restarted { ms: now.saturating_sub(at) };
        if mr.machine.owed().is_some() {
            self.calls.push(Call::new(t, Step::Unmark(m), now));
        }
        self.release_one(t, m, now);
    }

    /// Keep watching a restarted Machine — a long-poll until it is started, then reads until its checks pass —
    /// or give up at its restart timeout or the budget.
    pub(super) fn watch(&mut self, t: usize, m: usize, now: u64, last_error: Option<SyncError>) {
        let restart_timeout_ms = self.config.targets[t].restart_timeout_ms;
        let mr = &mut self.targets[t].machines[m];
        if matches!(mr.restart, RestartState::Settling) {
            // In transition since its newest event: past the restart timeout, it is stuck (a failure, as within a
            // run); before, a later run sees it settle.
            let stuck_ms = now.saturating_sub(mr.machine.newest_event_ms);
            if stuck_ms >= restart_timeout_ms {
                let e = SyncError::retryable(format!("`{}` for {} s since its last event, past the restart timeout", mr.machine.state, stuck_ms / 1000));
                return self.restart_failed(t, m, e);
            }
            let why = format!("still `{}` (not seen settled): restarted by a later run once it serves; the restart stays recorded on it", mr.machine.state);
            mr.restart = RestartState::Deferred(why);
            return;
        }
        let RestartState::Sent { at, seen_down, .. } = mr.restart else { return };
        let waited = now.saturating_sub(at);
        if waited < restart_timeout_ms && now + POLL_INTERVAL_MS + SEND_MARGIN_MS > self.work_deadline_ms {
            // Out of budget, not out of patience: the restart stays recorded, the next run sees it through.
            let why = "restart sent, not yet seen healthy when the budget ran out: the next run confirms it (the restart stays recorded on it)";
            self.targets[t].machines[m].restart = RestartState::Resumable(why.into());
            return self.release_one(t, m, now);
        }
        if waited >= restart_timeout_ms {
            let last = match last_error {
                Some(e) => format!("last read failed: {}", e.message),
                None => format!("state `{}`, checks: {}", mr.machine.state, mr.machine.checks_summary()),
            };
            let e = SyncError::retryable(format!("not started with passing checks {waited} ms after the restart (restart timeout reached; {last})"));
            self.restart_failed(t, m, e);
            return;
        }
        // Started already (its checks are pending): read it again shortly. Else long-poll for the start.
        let step = if seen_down && mr.machine.is_started() { Step::Poll(m) } else { Step::Wait(m) };
        let at = if step == Step::Poll(m) || last_error.is_some() { now + POLL_INTERVAL_MS } else { now };
        self.calls.push(Call::new(t, step, at));
    }

    pub(super) fn restart_failed(&mut self, t: usize, m: usize, e: SyncError) {
        let run = &mut self.targets[t];
        let id = run.machines[m].machine.id.clone();
        run.machines[m].restart = RestartState::Failed(e);
        if run.stopped_early.is_none() {
            run.stopped_early = Some(format!("Machine {id} failed to restart; the remaining Machines were left alone"));
        }
        let now = self.now_ms;
        self.release_one(t, m, now);
    }

    /// After an ambiguous restart answer: did the restart happen (a newer event, or not started now)? Then
    /// watch it come back; if not, send it again, a bounded number of times.
    fn on_verified(&mut self, attempts: u32, t: usize, m: usize, machine: Machine, now: u64) {
        let mr = &mut self.targets[t].machines[m];
        if machine.newest_event_ms > mr.machine.newest_event_ms || !machine.is_started() {
            mr.restart = RestartState::Sent { at: now, baseline_ms: mr.machine.newest_event_ms, seen_down: !machine.is_started() };
            return self.watch(t, m, now, None);
        }
        if attempts + 1 >= crate::retry::MAX_ATTEMPTS {
            return self.restart_failed(t, m, SyncError::retryable("restart not acknowledged and not observed"));
        }
        let delay = crate::retry::backoff_ms(1, &mut self.rng, None);
        self.calls.push(Call { target: t, step: Step::Restart(m), attempts: 1, not_before: now + delay, in_flight: None });
    }

    /// A Machine seen settled after a transition: the restart it owed is satisfied (it started since), or
    /// still owed (then its lease is taken), or it is not serving (later).
    fn on_settled(&mut self, t: usize, m: usize, machine: Machine, now: u64) {
        let mr = &mut self.targets[t].machines[m];
        mr.had_checks = !machine.checks.is_empty();
        mr.machine = machine;
        if mr.machine.owed().is_none_or(|i| i.satisfied_by(&mr.machine)) {
            if mr.machine.is_started() && !mr.machine.checks_passing() {
                // Booted with the change, its checks not passing yet: still down, and its restart not done
                // until they pass (the mark says done only then).
                return self.recheck_settled(t, m, now);
            }
            mr.restart = RestartState::NotNeeded("started after the restart it owed was recorded: it runs the change already".into());
            self.calls.push(Call::new(t, Step::Unmark(m), now));
        } else if mr.machine.is_started() {
            mr.restart = RestartState::Leasing;
            self.calls.push(Call::new(t, Step::Lease(m), now));
        } else {
            let why = format!("`{}`: restarted by a later run once it serves; the restart stays recorded on it", mr.machine.state);
            mr.restart = RestartState::Deferred(why);
        }
    }

    /// A Machine that booted with the change and is started, its checks not passing yet: read it again shortly,
    /// until they pass; past the restart timeout since its start it failed; out of budget, a later run sees it.
    fn recheck_settled(&mut self, t: usize, m: usize, now: u64) {
        let restart_timeout_ms = self.config.targets[t].restart_timeout_ms;
        let mr = &mut self.targets[t].machines[m];
        let since_start = now.saturating_sub(mr.machine.newest_start_ms);
        if since_start >= restart_timeout_ms {
            let e = SyncError::retryable(format!("started {} s ago, checks still not passing ({}): past the restart timeout", since_start / 1000, mr.machine.checks_summary()));
            return self.restart_failed(t, m, e);
        }
        if now + POLL_INTERVAL_MS + SEND_MARGIN_MS > self.work_deadline_ms {
            let why = "started with the change, its checks not yet passing when the budget ran out: a later run confirms it (the restart stays recorded on it)";
            mr.restart = RestartState::Deferred(why.into());
            return;
        }
        self.calls.push(Call::new(t, Step::Poll(m), now + POLL_INTERVAL_MS));
    }

    fn on_polled(&mut self, t: usize, m: usize, machine: Machine, now: u64) {
        let mr = &mut self.targets[t].machines[m];
        let RestartState::Sent { at, baseline_ms, seen_down } = mr.restart else { return };
        if machine.state.is_lost() {
            let e = SyncError::fatal(format!("Machine went `{}` after the restart", machine.state));
            mr.machine = machine;
            return self.restart_failed(t, m, e);
        }
        if machine.state == MachineState::Stopped {
            mr.machine = machine;
            return self.skip_restart(t, m, "stopped by someone else during its restart: it boots with the change", now);
        }
        let fresh_start = machine.newest_start_ms > baseline_ms || seen_down;
        let healthy = !mr.had_checks || (!machine.checks.is_empty() && machine.checks_passing());
        let started = machine.is_started();
        mr.restart = RestartState::Sent { at, baseline_ms, seen_down: seen_down || !started };
        mr.machine = machine;
        if started && fresh_start && healthy {
            self.confirm(t, m, now);
        } else {
            self.watch(t, m, now, None);
        }
    }
}

/// Started with its checks passing, as last seen: up for users.
fn is_up(machine: &Machine) -> bool {
    machine.is_started() && machine.checks_passing()
}

/// What a Machine's mark becomes once the restart it owed is done (or satisfied): done, for that change, with how
/// long this run saw it take.
pub(super) fn done_mark(mr: &crate::run::MachineRun, this_run: Option<&Intent>) -> RestartMark {
    let change = mr.machine.owed().or(this_run).map_or_else(|| "an unfinished restart".to_string(), |i| i.change.clone());
    let took_ms = match mr.restart {
        RestartState::Restarted { ms } => Some(ms),
        _ => None,
    };
    RestartMark::Done { change, took_ms }
}

/// Where a Machine that owes `intent` goes: `Some(true)` queued for a restart now, `Some(false)` recorded
/// for a later run (it does not serve now), `None` nothing owed after all (it boots with the change).
fn plan_one(mr: &mut crate::run::MachineRun, intent: &Intent) -> Option<bool> {
    match &mr.machine.state {
        MachineState::Started if mr.machine.reachable() => {
            mr.restart = RestartState::Planned;
            Some(true)
        }
        // In transition with a restart owed from before (perhaps by a run killed mid-restart): see it settle.
        MachineState::Transient(_) if mr.machine.owed().is_some() => {
            mr.restart = RestartState::Planned;
            Some(true)
        }
        MachineState::Transient(s) if !matches!(intent.scope, Scope::Machine) => {
            mr.restart = RestartState::NotNeeded(format!("`{s}` after the change: it boots with it"));
            None
        }
        MachineState::Stopped => {
            mr.restart = RestartState::NotNeeded("stopped: it boots with the change when it starts".into());
            None
        }
        other => {
            let why = format!("`{other}` (or its host unreachable): restarted by a later run once it serves; the restart stays recorded on it");
            mr.restart = RestartState::Deferred(why);
            Some(false)
        }
    }
}
