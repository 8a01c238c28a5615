//! What a run knows so far, per target and per Machine: the engine writes it, `report` reads it.

use crate::error::SyncError;
use crate::machines::Machine;
use crate::plan::Skip;
use crate::protocol::Dependents;
use crate::protocol::Ack;
use crate::report::{RequestCounts, RestartCause};
use crate::roll::Intent;
use std::collections::VecDeque;

/// Where a target is in its run (the engine's module comment draws the transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Listing,
    /// The Machines are listed; the documents that reference the change are still being looked up.
    Referencing,
    Syncing,
    /// Reading the Machines afresh before a roll, when the first list may have been a reused one.
    Relisting,
    /// Recording on the Machines the restarts they owe (and clearing intents a start has satisfied).
    Marking,
    /// Restarting the Machines that owe one, a few at a time.
    Rolling,
    /// Releasing the leases still held when the roll stopped.
    Releasing,
    Done,
}

#[derive(Debug)]
pub enum SyncState {
    NotSelected(Skip),
    Pending,
    Synced(Ack),
    /// Fan-out `one`: another Machine acknowledged for the store they share.
    SharedStore,
    Failed(SyncError),
    WouldSync,
    /// A resume run: there is no change to push.
    NothingToPush,
    /// Selected when listed, no longer serving when pushed (stopped, suspended, destroyed since): it loads
    /// content when it serves again, so this is not a failure.
    Gone(Skip),
}

#[derive(Debug)]
pub enum RestartState {
    None,
    /// Owes a restart; queued.
    Planned,
    /// Its turn came: the lease is asked for.
    Leasing,
    /// Its lease is held by a run of ours that is likely dead: waiting for it to expire.
    WaitingForLease,
    /// Owes a restart and is in transition (a killed run may have restarted it): waiting to see it settle.
    Settling,
    /// Restart sent (`at`); `baseline_ms` is its newest event before, `seen_down` whether it was seen not started since.
    Sent { at: u64, baseline_ms: u64, seen_down: bool },
    Restarted { ms: u64 },
    Failed(SyncError),
    NotAttempted(String),
    /// Stopped or destroyed by someone else during the roll: nothing to restart.
    Skipped(String),
    /// It started after the change (or after the restart owed was recorded): it runs the change already.
    NotNeeded(String),
    /// Left for a later run by the budget; the restart it owes stays recorded on the Machine.
    Resumable(String),
    /// Owes a restart but does not serve now (suspended, in transition, host unreachable): a later run
    /// restarts it once it serves; the restart stays recorded on it.
    Deferred(String),
    WouldRestart,
}

impl RestartState {
    /// Taking one of the roll's slots: about to go down, or down.
    pub fn in_slot(&self) -> bool {
        matches!(self, RestartState::Leasing | RestartState::WaitingForLease | RestartState::Settling | RestartState::Sent { .. })
    }
}

/// A push that failed transiently, held while the Machine is read: if it no longer serves, the push is moot.
#[derive(Debug)]
pub struct PushPending {
    pub error: SyncError,
    /// Try again with these attempts so far, not before this instant; `None`: this was the last try.
    pub retry: Option<(u32, u64)>,
}

#[derive(Debug)]
pub struct MachineRun {
    pub machine: Machine,
    pub had_checks: bool,
    pub sync: SyncState,
    pub sync_attempts: u32,
    pub sync_started: Option<u64>,
    pub sync_ms: Option<u64>,
    /// Reads of the Machine after a failed push (at most two: after the first failure and before giving up).
    pub push_checks: u8,
    /// A failed push waiting on such a read.
    pub push_pending: Option<PushPending>,
    pub restart: RestartState,
    pub nonce: Option<String>,
    pub lease_refused: Option<SyncError>,
    /// A lease of ours (from a killed run) was waited out once already.
    pub lease_waited: bool,
    /// The intent to record on the Machine (Marking).
    pub planned_mark: Option<Intent>,
    /// The restart owed could not be recorded on the Machine: it is not restarted by this run.
    pub mark_error: Option<SyncError>,
    pub release_error: Option<SyncError>,
}

impl MachineRun {
    pub fn new(machine: Machine, sync: SyncState) -> MachineRun {
        MachineRun {
            had_checks: !machine.checks.is_empty(),
            machine,
            sync,
            sync_attempts: 0,
            sync_started: None,
            sync_ms: None,
            push_checks: 0,
            push_pending: None,
            restart: RestartState::None,
            nonce: None,
            lease_refused: None,
            lease_waited: false,
            planned_mark: None,
            mark_error: None,
            release_error: None,
        }
    }
}

#[derive(Debug)]
pub struct TargetRun {
    pub phase: Phase,
    pub skipped: Option<String>,
    /// A failure of the target as a whole (its Machines could not be listed).
    pub error: Option<SyncError>,
    /// Sorted, each once (`plan::target_regions`).
    pub regions: Option<Vec<String>>,
    /// The payload, exactly the bytes that are signed and sent (shared by its pushes).
    pub body: std::sync::Arc<str>,
    pub machines: Vec<MachineRun>,
    pub restart_cause: Option<RestartCause>,
    /// Machines still to restart, in order.
    pub queue: VecDeque<usize>,
    pub stopped_early: Option<String>,
    pub max_down: usize,
    pub counts: RequestCounts,
    /// The first list may be answered from a recent one (no restart by type is in play).
    pub list_reusable: bool,
    /// The payload's signature at one instant: the pushes sent together share it (one HMAC, not one each).
    pub signed: Option<(u64, String)>,
    /// This run's change as an intent (the lease description names it).
    pub intent: Option<Intent>,
    /// Pushes went to the Machines of a known list before this run's own list came (`Engine::with_known`).
    pub pushed_ahead: bool,
    /// The documents that reference the change, as far as they were looked up.
    pub dependents: DependentsRun,
}

/// Looking up the documents that reference the change (`sanity_api`), level by level.
#[derive(Debug, Default)]
pub struct DependentsRun {
    pub state: DependentsState,
    /// Ids already seen (the change's own first): a later level never asks for them again, so cycles end.
    pub seen: Vec<String>,
    /// The ids whose referrers the next level asks for.
    pub frontier: Vec<String>,
    pub level: u8,
    pub found: Dependents,
    /// Whether the query went without a token (it then sees a public dataset only).
    pub anonymous: bool,
}

#[derive(Debug, Default)]
pub enum DependentsState {
    /// Not looked up, and why (`None`: not asked for, e.g. a resume run).
    #[default]
    Off,
    NotLookedUp(String),
    Querying,
    Done,
    Failed(SyncError),
}

impl TargetRun {
    /// Machines whose restart was sent and that are not confirmed back yet.
    pub fn down(&self) -> usize {
        self.machines.iter().filter(|m| matches!(m.restart, RestartState::Sent { .. })).count()
    }
}
