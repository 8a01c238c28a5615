//! Syncing: the signed payload to every selected Machine, and what each answer means. A push that keeps failing
//! reads its Machine first — one that stopped, suspended or was destroyed since the list loads content when it
//! serves again, so it is skipped, not failed.

use super::{Call, Engine, Step, SEND_MARGIN_MS};
use crate::error::{ErrorClass, SyncError};
use crate::fly_api::Answer;
use crate::machines::MachineState;
use crate::plan;
use crate::protocol::Ack;
use crate::run::{PushPending, SyncState};

impl Engine {
    /// Under `fanOut: litefs`, a Machine that answered with a `Retry-After` (a replica the change has not reached
    /// yet): it is serving, so it is asked again after that without reading the Machine first.
    pub(super) fn replica_waiting(&self, call: &Call, retry_after: Option<u64>) -> bool {
        self.config.targets[call.target].fan_out == crate::config::FanOut::LiteFs && retry_after.is_some()
    }

    /// A push to Machine `m` failed transiently. The first time, read the Machine before trying again.
    pub(super) fn push_failed(&mut self, call: Call, m: usize, error: SyncError, retry_at: u64, now: u64) {
        if let Some(skip) = self.gone_since_listed(call.target, m) {
            self.targets[call.target].machines[m].sync = SyncState::Gone(skip);
            return;
        }
        self.targets[call.target].counts.retries += 1;
        if self.targets[call.target].machines[m].push_checks == 0 {
            self.targets[call.target].machines[m].push_pending = Some(PushPending { error, retry: Some((call.attempts, retry_at)) });
            self.check_machine(call.target, m, now);
        } else {
            self.calls.push(Call { not_before: retry_at, ..call });
        }
    }

    /// A push is over without success. A transient failure reads the Machine once more before it counts.
    pub(super) fn push_given_up(&mut self, call: Call, m: Option<usize>, error: SyncError, now: u64) {
        let t = call.target;
        if let Some((m, skip)) = m.and_then(|m| self.gone_since_listed(t, m).map(|skip| (m, skip))) {
            self.targets[t].machines[m].sync = SyncState::Gone(skip);
            return;
        }
        match m {
            Some(m) if error.class == ErrorClass::Retryable && self.may_check(t, m, now) => {
                let mr = &mut self.targets[t].machines[m];
                mr.sync_attempts = call.attempts;
                mr.push_pending = Some(PushPending { error, retry: None });
                self.check_machine(t, m, now);
            }
            _ => self.on_pushed(t, m, call.attempts, Err(error), now),
        }
    }

    /// Whether a push may still read its Machine (at most twice per Machine, time allowing).
    fn may_check(&self, t: usize, m: usize, now: u64) -> bool {
        self.targets[t].machines[m].push_checks < 2 && now + SEND_MARGIN_MS <= self.work_deadline_ms
    }

    fn check_machine(&mut self, t: usize, m: usize, now: u64) {
        self.targets[t].machines[m].push_checks += 1;
        self.calls.push(Call::new(t, Step::Check(m), now));
    }

    /// The Machine behind a failed push, as read now: `Answer::Machine`, `Answer::NoSuchMachine`, or anything
    /// else when it could not be read (then it is assumed to still serve).
    pub(super) fn on_checked(&mut self, t: usize, m: usize, seen: Answer, now: u64) {
        let regions = self.targets[t].regions.clone();
        let mr = &mut self.targets[t].machines[m];
        let Some(pending) = mr.push_pending.take() else { return };
        let machine = match seen {
            Answer::Machine(machine) => Some(machine),
            Answer::NoSuchMachine => Some(crate::machines::Machine { state: MachineState::Destroyed, ..mr.machine.clone() }),
            _ => None,
        };
        if let Some(machine) = machine {
            if let Err(skip) = plan::select(&machine, regions.as_ref(), self.config.targets[t].process_groups.as_deref()) {
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

    pub(super) fn on_pushed(&mut self, t: usize, m: Option<usize>, attempts: u32, result: Result<Ack, SyncError>, now: u64) {
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
}
