//! Runs that start from what the process knows (`crate::known`): freshness without waiting for the list.
//!
//! A run that knows its app's Machines from a recent list (`PUSH_AHEAD_MAX_AGE_MS`) pushes to the ones that
//! were serving as soon as its payload is ready (at once, or when the change's dependents are known), while its
//! own list is in flight; when the list comes, it reconciles: a Machine it did not
//! know gets its push then, one no longer listed or no longer serving is skipped if its push fails (not failed,
//! and not read again), one that acked stays synced. Everything after the pushes (a roll, its marks and leases)
//! reads the run's own list, as before. A list answer equal, byte for byte, to the known one is not parsed again.

use super::{Call, Engine, Step, Work};
use crate::config::FanOut;
use crate::fly_api::Answer;
use crate::http::Response;
use crate::known::{self, KnownFleets, KnownList, PUSH_AHEAD_MAX_AGE_MS};
use crate::machines::{Machine, MachineState};
use crate::plan;
use crate::run::{DependentsState, MachineRun, Phase, SyncState};
use std::sync::Arc;

impl Engine {
    /// Start from the lists `fleets` remembers: push ahead of the list where one is recent enough.
    pub fn with_known(mut self, fleets: &KnownFleets) -> Engine {
        let now = self.now_ms;
        for t in 0..self.targets.len() {
            let Some(list) = fleets.get(&known::key(&self.config.targets[t])) else { continue };
            self.known[t] = Some(list.clone());
            let fresh_enough = now.saturating_sub(list.read_at_ms) <= PUSH_AHEAD_MAX_AGE_MS;
            let pushes = !matches!(self.work, Work::Resume) && !self.config.dry_run && matches!(self.config.targets[t].fan_out, FanOut::Every | FanOut::LiteFs);
            if fresh_enough && pushes && self.targets[t].phase == Phase::Listing {
                let machines = list.machines.to_vec();
                self.push_ahead(t, machines);
            }
        }
        self
    }

    /// The lists this run read (each once), for the process to remember; taken, so each is handed over once.
    pub fn take_learned(&mut self) -> Vec<(String, KnownList)> {
        std::mem::take(&mut self.learned)
    }

    /// Take the known Machines that were serving as the ones to push to, before the list answers; push now,
    /// unless the payload waits for the change's dependents (then it goes when they are known).
    fn push_ahead(&mut self, t: usize, machines: Vec<Machine>) {
        let groups = self.config.targets[t].process_groups.as_deref();
        let run = &mut self.targets[t];
        run.machines = machines
            .into_iter()
            .map(|machine| {
                let sync = match plan::select(&machine, run.regions.as_ref(), groups) {
                    Ok(()) => SyncState::Pending,
                    Err(skip) => SyncState::NotSelected(skip),
                };
                MachineRun::new(machine, sync)
            })
            .collect();
        run.pushed_ahead = true;
        if !matches!(run.dependents.state, DependentsState::Querying) {
            self.start_pushes(t);
        }
    }

    /// Whether `response` is a list answer equal to the known one (then it is not read again).
    pub(super) fn is_known_answer(&self, t: usize, response: &Response) -> bool {
        match (&self.known[t], response) {
            (Some(known), Response::Http { status: 200, body, .. }) => **body == *known.body,
            _ => false,
        }
    }

    /// The list answered with the known list: the Machines pushed to ahead of it are all there is (nothing to
    /// reconcile), or the known Machines are this list's.
    pub(super) fn on_known_list(&mut self, call: Call, now: u64) {
        let t = call.target;
        let run = &mut self.targets[t];
        if run.pushed_ahead && matches!(run.phase, Phase::Listing | Phase::Syncing) {
            if run.phase == Phase::Listing {
                // The pushes wait for the dependents (`dependents_settled` starts them).
                run.phase = Phase::Referencing;
            }
            return;
        }
        let machines = self.known[t].as_ref().map(|k| k.machines.to_vec()).unwrap_or_default();
        self.on_answer(call, Answer::Machines(machines), now)
    }

    /// Remember a list read by this run (`body` as it came, `machines` as read from it: by region, then id).
    pub(super) fn learn(&mut self, t: usize, body: &str, machines: &[Machine], now: u64) {
        let list = KnownList { read_at_ms: now, body: Arc::from(body), machines: Arc::from(machines) };
        self.known[t] = Some(list.clone());
        self.learned.push((known::key(&self.config.targets[t]), list));
    }

    /// The list came after the Machines it knew were taken: take the Machines the known list did not have (or had
    /// not serving) that serve now, note the ones no longer serving (a failed push to one of them is a skip),
    /// keep the rest as they are. Pushes already under way go on; new ones go now, or with the others once the
    /// dependents are known.
    pub(super) fn reconcile(&mut self, t: usize, fresh: Vec<Machine>) {
        let groups = self.config.targets[t].process_groups.as_deref();
        let run = &mut self.targets[t];
        let mut listed = vec![false; run.machines.len()];
        let mut new_pushes = Vec::new();
        for machine in fresh {
            let selected = plan::select(&machine, run.regions.as_ref(), groups);
            match run.machines.iter().position(|mr| mr.machine.id == machine.id) {
                Some(m) => {
                    listed[m] = true;
                    let mr = &mut run.machines[m];
                    mr.had_checks = !machine.checks.is_empty();
                    if let SyncState::NotSelected(_) = mr.sync {
                        // Not serving when the known list was read: the new list says whether it serves now.
                        mr.sync = match selected {
                            Ok(()) => {
                                new_pushes.push(m);
                                SyncState::Pending
                            }
                            Err(skip) => SyncState::NotSelected(skip),
                        };
                    }
                    mr.machine = machine;
                }
                None => {
                    let sync = match selected {
                        Ok(()) => {
                            new_pushes.push(run.machines.len());
                            SyncState::Pending
                        }
                        Err(skip) => SyncState::NotSelected(skip),
                    };
                    run.machines.push(MachineRun::new(machine, sync));
                }
            }
        }
        // Known, not listed any more: destroyed since.
        for (m, listed) in listed.into_iter().enumerate() {
            if !listed {
                run.machines[m].machine.state = MachineState::Destroyed;
            }
        }
        match run.phase {
            Phase::Syncing => self.calls.extend(new_pushes.into_iter().map(|m| Call::new(t, Step::Push(Some(m)), 0))),
            _ if matches!(run.dependents.state, DependentsState::Querying) => run.phase = Phase::Referencing,
            _ => self.start_pushes(t),
        }
    }

    /// After pushes went ahead of the list: a Machine the list shows no longer serving (or no longer lists) is
    /// skipped when its push fails, without reading it again.
    pub(super) fn gone_since_listed(&self, t: usize, m: usize) -> Option<plan::Skip> {
        let run = &self.targets[t];
        let listing = self.calls.iter().any(|c| c.target == t && c.step == Step::List);
        if !run.pushed_ahead || listing {
            return None;
        }
        plan::select(&run.machines[m].machine, run.regions.as_ref(), self.config.targets[t].process_groups.as_deref()).err()
    }
}
