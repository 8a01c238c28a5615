//! Calls become requests: each step as a `fly_api::Call`, with its timeout, whether its answer may be shared,
//! and the redacted line the shim logs. Signing happens here, once per instant for all pushes sent together.

use super::{Engine, Step, LIST_REUSE_MS};
use crate::fly_api;
use crate::http::{Request, RequestLog};
use crate::roll::{self, RestartMark, INTENT_KEY};
use crate::run::{Phase, SyncState};
use crate::signature;

impl Engine {
    /// The request for call `c`, marked in flight; it must end by `limit`.
    pub(super) fn request_for(&mut self, c: usize, now: u64, limit: u64) -> Request {
        let id = self.next_id;
        self.next_id += 1;
        let call = &mut self.calls[c];
        call.in_flight = Some(id);
        call.attempts += 1;
        let (t, step, attempt) = (call.target, call.step, call.attempts);
        let mut timeout_ms = self.config.request_timeout_ms.min(limit - now);
        let wait_s = self.wait_s(t, step, now, limit);
        if step.wire_kind() == fly_api::Kind::Wait {
            // A long-poll answers when it has something to say: give it its whole wait, and a little more.
            timeout_ms = (wait_s * 1000 + 2_000).min(limit - now);
        }
        let signature = if let Step::Push(m) = step { self.sign_push(t, m, now) } else { String::new() };
        let target = &self.config.targets[t];
        let run = &mut self.targets[t];
        let machine_id = step.machine().map(|m| run.machines[m].machine.id.clone());
        let mid = machine_id.as_deref().unwrap_or_default();
        let mr = step.machine().map(|m| &run.machines[m]);
        let nonce = mr.and_then(|mr| mr.nonce.as_deref());
        // Written for the calls that carry it only (most calls of a run are pushes).
        let description = match step {
            Step::Lease(_) | Step::Renew(_) => roll::lease_description(run.intent.as_ref().map_or("an unfinished restart", |i| i.change.as_str())),
            _ => String::new(),
        };
        let mark_value = match (step, mr) {
            (Step::Mark(_), Some(mr)) => mr.planned_mark.clone().map(RestartMark::Owed).map(|m| m.value()).unwrap_or_default(),
            (Step::Unmark(_), Some(mr)) => super::restarts::done_mark(mr, run.intent.as_ref()).value(),
            _ => String::new(),
        };
        let after_event = mr.and_then(|mr| mr.machine.newest_event_id.as_deref());
        let version = mr.and_then(|mr| mr.machine.instance_id.as_deref());
        if let Step::Refs(_) = step {
            return self.dependents_request(t, id, attempt, timeout_ms);
        }
        let wire_call = match step {
            Step::List => fly_api::Call::List,
            Step::Push(_) => fly_api::Call::Push {
                machine: machine_id.as_deref(),
                body: &run.body,
                signature: &signature,
                idempotency_key: self.work.idempotency_key(),
            },
            Step::Check(_) | Step::Poll(_) | Step::Verify(_) => fly_api::Call::Get { machine: mid },
            Step::Mark(_) | Step::Unmark(_) => fly_api::Call::SetMetadata { machine: mid, key: INTENT_KEY, value: &mark_value },
            Step::Lease(_) => fly_api::Call::Lease { machine: mid, ttl_s: roll::LEASE_TTL_S, description: &description, nonce: None },
            Step::Renew(_) => fly_api::Call::Lease { machine: mid, ttl_s: roll::LEASE_TTL_S, description: &description, nonce },
            Step::LeaseInfo(_) => fly_api::Call::LeaseInfo { machine: mid },
            Step::Restart(_) => fly_api::Call::Restart { machine: mid, nonce: nonce.unwrap_or_default() },
            Step::Wait(_) => fly_api::Call::Wait { machine: mid, timeout_s: wait_s, after_event, version },
            Step::Release(_) => fly_api::Call::Release { machine: mid, nonce: nonce.unwrap_or_default() },
            Step::Refs(_) => unreachable!("written above"),
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

    /// The dependents query of target `t` (Sanity's query API, not Fly's).
    fn dependents_request(&mut self, t: usize, id: u32, attempt: u32, timeout_ms: u64) -> Request {
        let target = &self.config.targets[t];
        let run = &mut self.targets[t];
        let cap = target.dependents.cap.saturating_sub(run.dependents.found.documents.len() as u32);
        let wire = crate::sanity_api::dependents_request(&self.config.sanity, &target.dependents, &run.dependents.frontier, &run.dependents.seen, cap)
            .expect("a lookup is only under way with a known project and dataset");
        run.counts.sanity += 1;
        let log = RequestLog { target: target.name.clone(), kind: "dependents", method: wire.method, url: wire.url.clone(), machine: None, attempt };
        Request { id, method: wire.method, url: wire.url, headers: wire.headers, body: wire.body, timeout_ms, reuse_ms: 0, log }
    }

    /// How long a `/wait` may block: Fly's cap, what is left of the Machine's restart timeout, and the budget.
    fn wait_s(&self, t: usize, step: Step, now: u64, limit: u64) -> u64 {
        let Step::Wait(m) = step else { return 0 };
        let restart_left = match self.targets[t].machines[m].restart {
            crate::run::RestartState::Sent { at, .. } => (at + self.config.targets[t].restart_timeout_ms).saturating_sub(now),
            _ => self.config.targets[t].restart_timeout_ms,
        };
        (roll::WAIT_S * 1000).min(restart_left).min(limit.saturating_sub(now + 2_000)).max(1_000) / 1000
    }

    /// The payload's signature at `now`, shared by every push sent at that instant; marks when pushes began.
    fn sign_push(&mut self, t: usize, m: Option<usize>, now: u64) -> String {
        let run = &mut self.targets[t];
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
    }
}
