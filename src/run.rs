//! What a run knows so far, per target and per Machine: the engine writes it, `report` reads it.

use crate::error::SyncError;
use crate::machines::Machine;
use crate::plan::Skip;
use crate::protocol::Ack;
use crate::report::{RequestCounts, RestartCause};
use std::collections::{BTreeSet, VecDeque};

/// Where a target is in its run (the engine's module comment draws the transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
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
pub enum SyncState {
    NotSelected(Skip),
    Pending,
    Synced(Ack),
    /// Fan-out `one`: another Machine acknowledged for the store they share.
    SharedStore,
    Failed(SyncError),
    WouldSync,
    /// Selected when listed, no longer serving when pushed (stopped, suspended, destroyed since): it loads
    /// content when it serves again, so this is not a failure.
    Gone(Skip),
}

#[derive(Debug)]
pub enum RestartState {
    None,
    Planned,
    Sent { at: u64, baseline_ms: u64, seen_down: bool },
    Restarted { ms: u64 },
    Failed(SyncError),
    NotAttempted(String),
    WouldRestart,
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
    pub regions: Option<BTreeSet<String>>,
    /// The payload, exactly the bytes that are signed and sent.
    pub body: String,
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
}

impl TargetRun {
    pub fn down(&self) -> usize {
        self.machines.iter().filter(|m| matches!(m.restart, RestartState::Sent { .. })).count()
    }
}
