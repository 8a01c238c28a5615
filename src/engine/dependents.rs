//! Referencing: the published documents that reference the change (a post shows its author) are looked up in
//! Sanity, level by level, in parallel with the Machine list; their routes and tags ride in the same push. A
//! lookup that fails (after its retries) or cannot be made costs only the dependents: the document is pushed.

use super::{Call, Engine, Step};
use crate::change::ContentChange;
use crate::config::{SanityApi, Target};
use crate::error::SyncError;
use crate::protocol::{self, Dependent, More};
use crate::routes::RouteVars;
use crate::run::{DependentsRun, DependentsState, Phase};
use crate::sanity_api::Level;

/// Whether and how this change's dependents are looked up for `target`.
pub(super) fn plan(change: &ContentChange, target: &Target, sanity: &SanityApi) -> DependentsRun {
    let mut run = DependentsRun { seen: vec![change.id.clone()], frontier: vec![change.id.clone()], ..DependentsRun::default() };
    run.state = if target.dependents.depth == 0 {
        DependentsState::Off
    } else if sanity.query_url().is_none() {
        DependentsState::NotLookedUp(
            "the Sanity project and dataset are unknown (the Function's context.clientOptions, or SANITY_PROJECT_ID and SANITY_DATASET)".into(),
        )
    } else {
        run.anonymous = sanity.token.is_none();
        DependentsState::Querying
    };
    run
}

impl Engine {
    /// One level's referrers: keep them (up to the cap), then ask for the next level or finish.
    pub(super) fn on_referrers(&mut self, t: usize, level: Level, now: u64) {
        let target = &self.config.targets[t];
        let rule = &target.dependents;
        let run = &mut self.targets[t].dependents;
        let room = rule.cap.saturating_sub(run.found.documents.len() as u32) as usize;
        let mut next = Vec::new();
        let fresh: Vec<_> = level.documents.iter().filter(|d| !run.seen.contains(&d.id)).take(room).collect();
        for doc in fresh {
            let vars = RouteVars { slug: doc.slug.as_deref(), id: &doc.id, doc_type: &doc.doc_type, locale: doc.locale.as_deref(), market: doc.market.as_deref() };
            let tags = protocol::document_tags(doc.cache_tags.as_deref().unwrap_or_default(), &doc.id, &doc.doc_type);
            run.found.documents.push(Dependent { id: doc.id.clone(), doc_type: doc.doc_type.clone(), routes: protocol::render_routes(target, &vars), tags });
            run.seen.push(doc.id.clone());
            next.push(doc.id.clone());
        }
        let left_out = level.count.saturating_sub(next.len() as u32);
        if left_out > 0 {
            // Over the cap: the rest is covered by their types' tags.
            let more = run.found.more.get_or_insert(More { count: 0, types: Vec::new() });
            more.count += left_out;
            for doc_type in level.types {
                if !more.types.contains(&doc_type) {
                    more.types.push(doc_type);
                }
            }
        }
        run.level += 1;
        run.frontier = next;
        let room_left = (run.found.documents.len() as u32) < rule.cap;
        if run.level < rule.depth && !run.frontier.is_empty() && room_left {
            let level = run.level + 1;
            self.calls.push(Call::new(t, Step::Refs(level), now));
        } else {
            run.state = DependentsState::Done;
            self.dependents_settled(t);
        }
    }

    /// The lookup failed after its retries: push without the dependents; the report says why.
    pub(super) fn referrers_failed(&mut self, t: usize, error: SyncError, _now: u64) {
        self.targets[t].dependents.state = DependentsState::Failed(error);
        self.dependents_settled(t);
    }

    /// The dependents are known (or will not be): if the list waited for them, push now; if the list is still
    /// in flight and the run knows its Machines already (`Engine::with_known`), push to those now.
    fn dependents_settled(&mut self, t: usize) {
        let run = &self.targets[t];
        if run.phase == Phase::Referencing || (run.phase == Phase::Listing && run.pushed_ahead) {
            self.start_pushes(t);
        }
    }
}
