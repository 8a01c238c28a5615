//! Whole runs of the engine against a simulated Fly, in simulated time: fan-out, retries, rolling restarts,
//! leases, budgets. Each test asserts on both the report and what the fake Fly saw.

mod support;

use sanity_fly_sync::error::ErrorClass;
use sanity_fly_sync::http::{Method, Response};
use sanity_fly_sync::report::{RestartCause, RestartOutcome, Status, SyncOutcome};
use serde_json::json;
use sanity_fly_sync::known::KnownFleets;
use support::*;

fn six() -> FakeFly {
    FakeFly::new(fleet(&[
        ("m-ord-1", "ord", "started"),
        ("m-ord-2", "ord", "started"),
        ("m-fra-1", "fra", "started"),
        ("m-fra-2", "fra", "stopped"),
        ("m-nrt-1", "nrt", "started"),
        ("m-nrt-2", "nrt", "suspended"),
    ]))
}

#[test]
fn fans_out_to_every_started_machine_in_parallel() {
    let mut fly = six();
    let run = drive(&env(&[]), change("page", json!({})), &mut fly);
    let r = &run.report;
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.status, Status::Ok);
    assert_eq!(r.webhook_status(), 200);
    let t = &r.targets[0];
    let synced: Vec<&str> = t.machines.iter().filter(|m| m.sync == SyncOutcome::Synced).map(|m| m.id.as_str()).collect();
    assert_eq!(synced, ["m-fra-1", "m-nrt-1", "m-ord-1", "m-ord-2"]);
    let skipped: Vec<(&str, &str)> =
        t.machines.iter().filter(|m| m.sync == SyncOutcome::Skipped).map(|m| (m.id.as_str(), m.skip_code.unwrap())).collect();
    assert_eq!(skipped, [("m-fra-2", "stopped"), ("m-nrt-2", "suspended")]);
    // Each started Machine got the payload exactly once, all sent in the same instant (parallel).
    for m in &fly.machines {
        assert_eq!(m.applied.len(), usize::from(m.state == "started"), "{}", m.id);
    }
    let sync_times: Vec<u64> = fly.sent.iter().filter(|s| s.kind == "sync").map(|s| s.at).collect();
    assert_eq!(sync_times.len(), 4);
    assert!(sync_times.iter().all(|&t| t == sync_times[0]), "all pushes leave together: {sync_times:?}");
    // One list, four pushes, nothing else; done in two round trips.
    assert_eq!((fly.count("list"), fly.count("sync"), fly.sent.len()), (1, 4, 5));
    assert_eq!(run.ended_at - T0, 2 * fly.latency_ms);
    assert_eq!((t.requests.machines_api, t.requests.app), (1, 4));
    assert!(t.restart.is_none());
    let payload = &fly.machine("m-ord-1").applied[0];
    assert_eq!(payload["protocol"], "sanity-fly-sync/1");
    assert_eq!(payload["idempotencyKey"], "upsert:page-1:rev-2");
}

#[test]
fn a_target_naming_process_groups_pushes_to_those_only_and_says_why_not_to_the_others() {
    let mut fly = six();
    fly.machine("m-ord-2").metadata.insert("fly_process_group".into(), "worker".into());
    fly.machine("m-fra-1").metadata.insert("fly_process_group".into(), "worker".into());
    fly.machine("m-fra-1").services = false;
    // The web group only: the worker Machines are skipped, each with its reason.
    let run = drive(&env(&[("FLY_PROCESS_GROUPS", "app")]), change("page", json!({})), &mut fly);
    assert!(run.report.ok, "{:#?}", run.report);
    let t = &run.report.targets[0];
    let synced: Vec<&str> = t.machines.iter().filter(|m| m.sync == SyncOutcome::Synced).map(|m| m.id.as_str()).collect();
    assert_eq!(synced, ["m-nrt-1", "m-ord-1"]);
    let worker = t.machines.iter().find(|m| m.id == "m-ord-2").unwrap();
    assert_eq!(worker.skip_code, Some("other_process_group"));
    assert_eq!(worker.reason.as_deref(), Some("in process group `worker`, which this target's processGroups does not name"));
    assert_eq!(fly.count("sync"), 2);
    // A target for the workers: the one with a service gets the push; the one without is refused clearly.
    let mut fly2 = six();
    fly2.machine("m-ord-2").metadata.insert("fly_process_group".into(), "worker".into());
    fly2.machine("m-fra-1").metadata.insert("fly_process_group".into(), "worker".into());
    fly2.machine("m-fra-1").services = false;
    let run = drive(&env(&[("FLY_PROCESS_GROUPS", "worker")]), change("page", json!({})), &mut fly2);
    let t = &run.report.targets[0];
    let synced: Vec<&str> = t.machines.iter().filter(|m| m.sync == SyncOutcome::Synced).map(|m| m.id.as_str()).collect();
    assert_eq!(synced, ["m-ord-2"]);
    let no_service = t.machines.iter().find(|m| m.id == "m-fra-1").unwrap();
    assert_eq!(no_service.skip_code, Some("no_http_service"));
    assert!(no_service.reason.as_deref().unwrap().contains("Fly's proxy cannot deliver a push to it"));
    assert_eq!(fly2.count("sync"), 1, "nothing is sent to the worker without a service");
}

#[test]
fn rate_limited_then_success_honours_retry_after() {
    let mut fly = six();
    let limited = Response::Http { status: 429, headers: vec![("retry-after".into(), "2".into())], body: r#"{"error":"rate limited"}"#.into() };
    fly.fault("list", "", limited);
    let run = drive(&env(&[]), change("page", json!({})), &mut fly);
    assert!(run.report.ok, "{:#?}", run.report);
    let lists: Vec<u64> = fly.sent.iter().filter(|s| s.kind == "list").map(|s| s.at).collect();
    assert_eq!(lists.len(), 2);
    assert!(lists[1] - lists[0] >= 2_000, "retry waited for Retry-After: {lists:?}");
    let t = &run.report.targets[0];
    assert_eq!((t.requests.rate_limited, t.requests.retries, t.requests.machines_api), (1, 1, 2));
}

#[test]
fn a_long_rate_limit_is_waited_out_but_not_forever() {
    let mut fly = six();
    for _ in 0..8 {
        fly.fault("list", "", Response::json(429, "{}"));
    }
    let run = drive(&env(&[("FLY_SYNC_BUDGET_MS", "120000")]), change("page", json!({})), &mut fly);
    assert!(run.report.ok, "8 rate-limited answers in a row are waited out: {:#?}", run.report);
    assert_eq!(fly.count("list"), 9);
    let mut fly = six();
    for _ in 0..100 {
        fly.fault("list", "", Response::json(429, "{}"));
    }
    let run = drive(&env(&[("FLY_SYNC_BUDGET_MS", "600000")]), change("page", json!({})), &mut fly);
    assert!(!run.report.ok);
    assert_eq!(fly.count("list"), 20, "bounded in count even with time to spare");
    assert!(run.report.targets[0].error.as_ref().unwrap().message.contains("gave up after 20 attempts"));
}

#[test]
fn rate_limited_without_retry_after_backs_off_exponentially() {
    let mut fly = six();
    for _ in 0..3 {
        fly.fault("sync", "m-ord-1", Response::json(429, "{}"));
    }
    let run = drive(&env(&[]), change("page", json!({})), &mut fly);
    assert!(run.report.ok);
    let times: Vec<u64> = fly.sent.iter().filter(|s| s.kind == "sync" && s.machine.as_deref() == Some("m-ord-1")).map(|s| s.at).collect();
    assert_eq!(times.len(), 4);
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // equal jitter: attempt n waits within [step/2, step] (+ latency), step = 500 ms · 2^(n-1)
    for (i, gap) in gaps.iter().enumerate() {
        let step = 500u64 << i;
        assert!(*gap >= step / 2 + fly.latency_ms && *gap <= step + fly.latency_ms, "gap {i}: {gap}");
    }
    assert_eq!(run.report.targets[0].machines.iter().find(|m| m.id == "m-ord-1").unwrap().attempts, 4);
}

#[test]
fn restart_type_rolls_with_max_unavailable_and_health_checks() {
    let mut fly = FakeFly::new(fleet(&[
        ("a", "ord", "started"),
        ("b", "ord", "started"),
        ("c", "fra", "started"),
        ("d", "fra", "started"),
        ("e", "nrt", "started"),
        ("f", "nrt", "stopped"),
    ]));
    for m in &mut fly.machines {
        m.checks_critical_ms = 1_500;
    }
    let env = env(&[("FLY_RESTART_TYPES", "settings"), ("FLY_MAX_UNAVAILABLE", "2"), ("FLY_SYNC_BUDGET_MS", "60000")]);
    let run = drive(&env, change("settings", json!({})), &mut fly);
    let r = &run.report;
    assert!(r.ok, "{r:#?}");
    let restart = r.targets[0].restart.as_ref().unwrap();
    assert_eq!(restart.cause, RestartCause::DocumentType);
    assert_eq!((restart.planned, restart.restarted, restart.max_down), (5, 5, 2));
    assert!(fly.max_down <= 2, "never more than max_unavailable down at the fake: {}", fly.max_down);
    assert!(restart.unreleased_leases.is_empty());
    // Every started Machine restarted once, the stopped one never; all leases released.
    for m in &fly.machines {
        assert_eq!(m.restarts, u32::from(m.id != "f"), "{}", m.id);
        assert!(m.lease.is_none(), "{} lease released", m.id);
    }
    // Each Machine is marked first (the restart it owes recorded on it), leased just before its restart, and
    // released once it is back; never more held at once than may be down. A third restart only after one of
    // the first two is healthy.
    let first_restart = fly.sent.iter().position(|s| s.kind == "restart").unwrap();
    assert_eq!(fly.sent[..first_restart].iter().filter(|s| s.kind == "mark").count(), 5, "every owed restart recorded first");
    for m in ["a", "b", "c", "d", "e"] {
        let kinds: Vec<&str> = fly.sent.iter().filter(|s| s.machine.as_deref() == Some(m) && s.kind != "renew").map(|s| s.kind).collect();
        let at = |k: &str| kinds.iter().position(|x| *x == k).unwrap_or_else(|| panic!("{m}: no {k} in {kinds:?}"));
        assert!(at("mark") < at("lease") && at("lease") < at("restart") && at("restart") < at("unmark") && at("unmark") < at("release"), "{m}: {kinds:?}");
        assert!(fly.machine(m).metadata["sanity_fly_sync_restart"].starts_with("1;done;"), "{m}: the restart it owed is done");
    }
    let restarts: Vec<u64> = fly.sent.iter().filter(|s| s.kind == "restart").map(|s| s.at).collect();
    assert!(restarts[2] >= restarts[0] + 3_000 + 1_500, "third waits for a healthy Machine: {restarts:?}");
    let durations: Vec<u64> = r.targets[0].machines.iter().filter_map(|m| m.restart.as_ref()?.duration_ms).collect();
    assert!(durations.iter().all(|&d| d >= 4_500), "{durations:?}");
}

#[test]
fn machine_that_never_starts_stops_the_roll_and_releases_leases() {
    let mut fly = FakeFly::new(fleet(&[("a", "ord", "started"), ("b", "ord", "started"), ("c", "ord", "started")]));
    fly.machine("b").never_starts = true;
    let env = env(&[("FLY_RESTART_TYPES", "settings"), ("FLY_RESTART_TIMEOUT_MS", "10000"), ("FLY_SYNC_BUDGET_MS", "60000")]);
    let run = drive(&env, change("settings", json!({})), &mut fly);
    let r = &run.report;
    assert!(!r.ok);
    assert_eq!(r.status, Status::Partial);
    let t = &r.targets[0];
    let outcome = |id: &str| t.machines.iter().find(|m| m.id == id).unwrap().restart.clone().unwrap();
    assert_eq!(outcome("a").outcome, RestartOutcome::Restarted);
    let b = outcome("b");
    assert_eq!(b.outcome, RestartOutcome::Failed);
    assert!(b.error.unwrap().message.contains("not started with passing checks"));
    assert_eq!(outcome("c").outcome, RestartOutcome::NotAttempted);
    assert_eq!(fly.machine("c").restarts, 0, "stop at the first failure");
    assert!(t.restart.as_ref().unwrap().stopped_early.as_ref().unwrap().contains("b"));
    assert!(fly.machines.iter().all(|m| m.lease.is_none()), "leases released after the failure");
    let b_restart = fly.sent.iter().find(|s| s.kind == "restart" && s.machine.as_deref() == Some("b")).unwrap().at;
    let reads: Vec<u64> = fly.sent.iter().filter(|s| matches!(s.kind, "wait" | "poll") && s.machine.as_deref() == Some("b")).map(|s| s.at).collect();
    assert!(!reads.is_empty() && reads.iter().all(|&r| r - b_restart <= 10_000 + 1_000), "gave up at the restart timeout: {reads:?}");
    assert!(run.ended_at - b_restart <= 10_000 + 1_000 + 1_000, "and ended right after");
    // What b owed stays recorded on it (and c's, never reached): a later run tries again.
    assert!(fly.machine("b").metadata.contains_key("sanity_fly_sync_restart") && fly.machine("c").metadata.contains_key("sanity_fly_sync_restart"));
    assert!(fly.machine("a").metadata["sanity_fly_sync_restart"].starts_with("1;done;"));
}

#[test]
fn lease_held_elsewhere_is_reported_not_fought() {
    let mut fly = FakeFly::new(fleet(&[("a", "ord", "started"), ("b", "ord", "started"), ("c", "ord", "started")]));
    fly.machine("b").lease_held_elsewhere = true;
    let run = drive(&env(&[("FLY_RESTART_TYPES", "settings")]), change("settings", json!({})), &mut fly);
    let t = &run.report.targets[0];
    assert!(!run.report.ok);
    // Leases are taken one Machine at a time: a, first, is restarted; b's lease is someone else's (a deploy),
    // so the roll stops there and c is left alone.
    assert_eq!(fly.machine("b").restarts + fly.machine("c").restarts, 0, "no restart while someone else holds a lease");
    assert_eq!(fly.machine("a").restarts, 1);
    let to = |kind: &str, m: &str| fly.sent.iter().filter(|s| s.kind == kind && s.machine.as_deref() == Some(m)).count();
    assert_eq!((to("lease", "b"), to("lease_info", "b")), (1, 1), "a 409 is not retried: we read who holds it");
    assert_eq!(to("lease", "c"), 0);
    let b = t.machines.iter().find(|m| m.id == "b").unwrap().restart.clone().unwrap();
    assert_eq!(b.outcome, RestartOutcome::NotAttempted);
    assert!(b.reason.unwrap().contains("lease currently held"), "Fly's message is kept");
    assert!(t.restart.as_ref().unwrap().stopped_early.as_ref().unwrap().contains("could not lease b"));
    assert!(fly.machine("a").lease.is_none() && fly.machine("c").lease.is_none(), "ours released");
    assert_eq!(fly.count("release"), 1);
    // b and c still owe the restart, recorded on them for a later run (once the deploy is done).
    assert!(fly.machine("b").metadata.contains_key("sanity_fly_sync_restart") && fly.machine("c").metadata.contains_key("sanity_fly_sync_restart"));
    // The content itself still synced everywhere.
    assert!(t.machines.iter().all(|m| m.sync == SyncOutcome::Synced));
}

#[test]
fn receiver_asking_for_restart_restarts_only_that_machine() {
    let mut fly = six();
    fly.machine("m-fra-1").ask_restart = true;
    let run = drive(&env(&[]), change("page", json!({})), &mut fly);
    assert!(run.report.ok, "{:#?}", run.report);
    let restart = run.report.targets[0].restart.as_ref().unwrap();
    assert_eq!((restart.cause, restart.planned, restart.restarted), (RestartCause::Receiver, 1, 1));
    let restarted: Vec<&str> = fly.machines.iter().filter(|m| m.restarts > 0).map(|m| m.id.as_str()).collect();
    assert_eq!(restarted, ["m-fra-1"]);
}

#[test]
fn a_reusable_list_is_read_again_before_a_roll() {
    let mut fly = six();
    fly.machine("m-fra-1").ask_restart = true;
    fly.machine("m-ord-1").ask_restart = true;
    let run = drive(&env(&[]), change("page", json!({})), &mut fly);
    let lists: Vec<u64> = fly.sent.iter().filter(|s| s.kind == "list").map(|s| s.reuse_ms).collect();
    assert_eq!(lists, [1_000, 0], "content-only first list may be reused; the roll's list is fresh");
    assert!(run.report.ok, "{:#?}", run.report);
    assert_eq!(run.report.targets[0].restart.as_ref().unwrap().restarted, 2);
}

#[test]
fn a_machine_that_stopped_before_the_roll_is_left_alone() {
    let mut fly = six();
    fly.machine("m-fra-1").ask_restart = true;
    fly.machine("m-ord-1").ask_restart = true;
    fly.stop_after_sync = Some("m-ord-1".into());
    let run = drive(&env(&[]), change("page", json!({})), &mut fly);
    let t = &run.report.targets[0];
    let ord = t.machines.iter().find(|m| m.id == "m-ord-1").unwrap().restart.clone().unwrap();
    assert_eq!(ord.outcome, RestartOutcome::NotNeeded, "stopped: it boots with the change");
    assert!(ord.reason.unwrap().contains("stopped"));
    assert_eq!(fly.machine("m-ord-1").restarts, 0);
    assert_eq!(fly.machine("m-fra-1").restarts, 1);
}

#[test]
fn restart_types_never_reuse_a_list() {
    let mut fly = six();
    drive(&env(&[("FLY_RESTART_TYPES", "settings"), ("FLY_SYNC_BUDGET_MS", "60000")]), change("settings", json!({})), &mut fly);
    let lists: Vec<u64> = fly.sent.iter().filter(|s| s.kind == "list").map(|s| s.reuse_ms).collect();
    assert_eq!(lists, [0], "one fresh list, no second one");
}

#[test]
fn receiver_restart_request_is_ignored_when_the_target_says_so() {
    let mut fly = six();
    fly.machine("m-fra-1").ask_restart = true;
    let run = drive(&env(&[("FLY_RESTART_ON_REQUEST", "false")]), change("page", json!({})), &mut fly);
    assert!(run.report.ok && run.report.targets[0].restart.is_none());
    assert_eq!(fly.count("restart") + fly.count("lease"), 0);
}

#[test]
fn fan_out_litefs_asks_a_waiting_replica_again_after_its_retry_after_without_reading_the_machine() {
    let replica_waiting = || Response::Http {
        status: 503,
        headers: vec![("retry-after".into(), "1".into())],
        body: r#"{"error":"this Machine is a LiteFS replica (the primary is m-ord-1) and does not hold revision rev-2 of page-1 yet","class":"retryable"}"#.into(),
    };
    let mut fly = six();
    fly.fault("sync", "m-fra-1", replica_waiting());
    fly.fault("sync", "m-fra-1", replica_waiting());
    let run = drive(&env(&[("FLY_SYNC_FAN_OUT", "litefs")]), change("page", json!({})), &mut fly);
    assert!(run.report.ok, "{:#?}", run.report);
    let synced = run.report.targets[0].machines.iter().filter(|m| m.sync == SyncOutcome::Synced).count();
    assert_eq!(synced, 4, "every started Machine, the primary and the replicas");
    assert_eq!(fly.count("sync"), 6, "the replica asked three times");
    assert_eq!(fly.count("check"), 0, "a replica that answered is serving: not read");
    let retries: Vec<u64> = fly.sent.iter().filter(|s| s.kind == "sync" && s.machine.as_deref() == Some("m-fra-1")).map(|s| s.at).collect();
    assert!(retries.windows(2).all(|w| w[1] - w[0] >= 1_000), "after its Retry-After: {retries:?}");
    // The same answers under `every`: the Machine is read before it is asked again.
    let mut fly = six();
    fly.fault("sync", "m-fra-1", replica_waiting());
    drive(&env(&[]), change("page", json!({})), &mut fly);
    assert_eq!(fly.count("check"), 1);
}

#[test]
fn time_budget_running_out_stops_retries_inside_the_budget() {
    let mut fly = six();
    for _ in 0..50 {
        fly.fault("sync", "m-ord-1", Response::json(503, r#"{"error":"upstream"}"#));
    }
    let run = drive(&env(&[("FLY_SYNC_BUDGET_MS", "3000")]), change("page", json!({})), &mut fly);
    assert!(!run.report.ok);
    assert_eq!(run.report.status, Status::Partial);
    assert!(run.ended_at <= T0 + 3_000, "finished inside the budget: {}", run.ended_at - T0);
    assert!(fly.sent.iter().all(|s| s.at < T0 + 3_000));
    let m = run.report.targets[0].machines.iter().find(|m| m.id == "m-ord-1").unwrap();
    let e = m.error.as_ref().unwrap();
    assert_eq!(e.class, ErrorClass::Retryable);
    assert!(e.message.contains("HTTP 503") && e.message.contains("budget"), "{}", e.message);
    assert_eq!(run.report.webhook_status(), 503, "a retry may help: let Sanity retry");
}

#[test]
fn ambiguous_408_on_restart_reads_the_machine_before_any_retry() {
    let mut fly = FakeFly::new(fleet(&[("a", "ord", "started"), ("b", "ord", "started")]));
    fly.fault("restart", "a", Response::json(408, r#"{"error":"deadline_exceeded"}"#));
    let run = drive(&env(&[("FLY_RESTART_TYPES", "settings"), ("FLY_SYNC_BUDGET_MS", "60000")]), change("settings", json!({})), &mut fly);
    assert!(run.report.ok, "{:#?}", run.report);
    assert_eq!(fly.restart_then_408.get("a"), Some(&1));
    assert_eq!(fly.machine("a").restarts, 1, "the restart that happened behind the 408 was not sent again");
    assert_eq!(fly.count("verify"), 1);
    assert_eq!(fly.count("restart"), 2, "one for a (answered 408), one for b");
}

#[test]
fn lost_restart_is_sent_again_after_the_read_shows_nothing_happened() {
    let mut fly = FakeFly::new(fleet(&[("a", "ord", "started")]));
    // A 500 that did not restart anything (the fake only applies a restart behind a 408).
    fly.fault("restart", "a", Response::json(500, r#"{"error":"internal"}"#));
    let run = drive(&env(&[("FLY_RESTART_TYPES", "settings"), ("FLY_SYNC_BUDGET_MS", "60000")]), change("settings", json!({})), &mut fly);
    assert!(run.report.ok, "{:#?}", run.report);
    assert_eq!((fly.count("restart"), fly.count("verify"), fly.machine("a").restarts), (2, 1, 1));
}

#[test]
fn dry_run_plans_without_mutating_anything() {
    let mut fly = six();
    let run = drive(&env(&[("FLY_SYNC_DRY_RUN", "true"), ("FLY_RESTART_TYPES", "settings")]), change("settings", json!({})), &mut fly);
    let r = &run.report;
    assert!(r.ok && r.dry_run);
    assert_eq!(r.status, Status::Planned);
    assert!(fly.mutating().is_empty(), "dry run sent {:?}", fly.mutating());
    let t = &r.targets[0];
    assert_eq!(t.machines.iter().filter(|m| m.sync == SyncOutcome::WouldSync).count(), 4);
    assert_eq!(t.machines.iter().filter(|m| m.restart.as_ref().is_some_and(|x| x.outcome == RestartOutcome::WouldRestart)).count(), 4);
}

#[test]
fn ack_from_another_machine_is_a_fatal_failure() {
    let mut fly = six();
    fly.machine("m-ord-2").ack_as = Some("m-ord-1".into());
    let run = drive(&env(&[]), change("page", json!({})), &mut fly);
    let m = run.report.targets[0].machines.iter().find(|m| m.id == "m-ord-2").unwrap();
    assert_eq!(m.sync, SyncOutcome::Failed);
    let e = m.error.as_ref().unwrap();
    assert_eq!(e.class, ErrorClass::Fatal);
    assert!(e.message.contains("FLY_MACHINE_ID"));
    assert_eq!(m.attempts, 1, "a fatal answer is not retried");
    assert_eq!(run.report.webhook_status(), 500, "only fatal failures: retrying the delivery will not help");
}

#[test]
fn an_ack_without_a_status_is_a_failed_push_naming_the_field() {
    let mut fly = six();
    fly.machine("m-ord-2").ack_without_status = true;
    let run = drive(&env(&[]), change("page", json!({})), &mut fly);
    let m = run.report.targets[0].machines.iter().find(|m| m.id == "m-ord-2").unwrap();
    assert_eq!(m.sync, SyncOutcome::Failed, "a 200 without a status is not synced");
    let e = m.error.as_ref().unwrap();
    assert_eq!(e.class, ErrorClass::Fatal);
    assert!(e.message.contains("no `status`; expected `applied`, `duplicate` or `stale`"), "{}", e.message);
    let ord1 = run.report.targets[0].machines.iter().find(|m| m.id == "m-ord-1").unwrap();
    assert_eq!(ord1.sync, SyncOutcome::Synced, "the others, acked with a status, are synced");
}

#[test]
fn market_targeting_pushes_only_to_mapped_regions() {
    let mut fly = six();
    let cfg = r#"{"targets":[{"app":"web","machinesApiUrl":"http://127.0.0.1:4280","appUrl":"http://127.0.0.1:8080",
        "regions":{"field":"market","map":{"jp":["nrt"],"us":["ord"]}}}]}"#;
    let run = drive(&env(&[("FLY_SYNC_CONFIG", cfg)]), change("page", json!({"market": "jp"})), &mut fly);
    assert!(run.report.ok);
    let t = &run.report.targets[0];
    assert_eq!(t.regions.as_deref(), Some(&["nrt".to_string()][..]));
    let synced: Vec<&str> = t.machines.iter().filter(|m| m.sync == SyncOutcome::Synced).map(|m| m.id.as_str()).collect();
    assert_eq!(synced, ["m-nrt-1"]);
    assert_eq!(t.machines.iter().filter(|m| m.skip_code == Some("other_region")).count(), 3);
}

#[test]
fn fan_out_one_posts_once_through_the_proxy() {
    let mut fly = six();
    let run = drive(&env(&[("FLY_SYNC_FAN_OUT", "one")]), change("page", json!({})), &mut fly);
    assert!(run.report.ok, "{:#?}", run.report);
    assert_eq!(fly.count("sync"), 1);
    let t = &run.report.targets[0];
    assert_eq!(t.machines.iter().filter(|m| m.sync == SyncOutcome::Synced).count(), 1);
    assert_eq!(t.machines.iter().filter(|m| m.sync == SyncOutcome::SharedStore).count(), 3);
}

#[test]
fn app_unreachable_fails_every_push_retryably_within_bounds() {
    let mut fly = six();
    fly.app_down = true;
    let run = drive(&env(&[]), change("page", json!({})), &mut fly);
    assert_eq!(run.report.status, Status::Failed);
    for m in run.report.targets[0].machines.iter().filter(|m| m.sync == SyncOutcome::Failed) {
        assert_eq!(m.attempts, 5, "bounded attempts");
        assert_eq!(m.error.as_ref().unwrap().class, ErrorClass::Retryable);
    }
}

#[test]
fn list_refused_is_a_fatal_target_error_and_other_targets_still_sync() {
    let mut fly = six();
    fly.fault("list", "", Response::json(401, r#"{"error":"Authenticate: token validation error"}"#));
    let cfg = r#"{"targets":[{"name":"a","app":"web","machinesApiUrl":"http://127.0.0.1:4280","appUrl":"http://127.0.0.1:8080"},
                             {"name":"b","app":"web","machinesApiUrl":"http://127.0.0.1:4280","appUrl":"http://127.0.0.1:8080"}]}"#;
    let run = drive(&env(&[("FLY_SYNC_CONFIG", cfg)]), change("page", json!({})), &mut fly);
    let (a, b) = (&run.report.targets[0], &run.report.targets[1]);
    let failed = if a.status == Status::Failed { a } else { b };
    let other = if a.status == Status::Failed { b } else { a };
    assert_eq!(failed.error.as_ref().unwrap().class, ErrorClass::Fatal);
    assert!(failed.error.as_ref().unwrap().message.contains("credentials refused"));
    assert_eq!(other.status, Status::Ok);
    assert_eq!(run.report.status, Status::Partial);
}

#[test]
fn skipped_types_and_drafts_send_nothing() {
    let mut fly = six();
    let run = drive(&env(&[("FLY_SYNC_TYPES", "article")]), change("page", json!({})), &mut fly);
    assert_eq!(run.report.status, Status::Skipped);
    assert!(run.report.ok);
    let run = drive(&env(&[]), change("page", json!({"_id": "drafts.page-1"})), &mut fly);
    assert!(run.report.targets[0].skipped.as_ref().unwrap().contains("includeDrafts"));
    assert!(fly.sent.is_empty());
}

#[test]
fn report_and_logs_never_hold_the_token_or_secret() {
    let mut fly = six();
    // A receiver that echoes secrets in its error: the report must not carry them on.
    fly.fault("sync", "m-ord-1", Response::json(400, format!(r#"{{"error":"echo {TOKEN} {SECRET}"}}"#)));
    let run = drive(&env(&[("FLY_RESTART_TYPES", "page")]), change("page", json!({})), &mut fly);
    let text = serde_json::to_string(&run.report).unwrap() + &run.log.join("\n");
    assert!(text.contains("echo [redacted] [redacted]"), "the error is kept, scrubbed");
    assert!(!text.contains(TOKEN) && !text.contains(SECRET));
    assert!(fly.sent.iter().any(|s| s.method == Method::POST && s.kind == "restart"));
}

#[test]
fn same_seed_same_run() {
    let go = || {
        let mut fly = six();
        for _ in 0..3 {
            fly.fault("sync", "m-fra-1", Response::json(503, "{}"));
        }
        drive(&env(&[]), change("page", json!({})), &mut fly);
        fly.sent.iter().map(|s| (s.at, s.kind, s.machine.clone())).collect::<Vec<_>>()
    };
    assert_eq!(go(), go());
}

#[test]
fn a_machine_stopped_between_list_and_push_is_skipped_not_failed() {
    for state in ["stopped", "suspended", "destroyed"] {
        let mut fly = six();
        fly.after_list = Some(("m-ord-1".into(), state));
        let run = drive(&env(&[]), change("page", json!({})), &mut fly);
        assert!(run.report.ok, "{state}: {:#?}", run.report);
        let m = run.report.targets[0].machines.iter().find(|m| m.id == "m-ord-1").unwrap();
        assert_eq!(m.sync, SyncOutcome::Skipped, "{state}");
        assert!(m.reason.as_deref().unwrap().starts_with("no longer serving when pushed"), "{state}: {:?}", m.reason);
        // One push, one read of the Machine, no retries: it is not a failure to wait out.
        let to_it = |kind: &str| fly.sent.iter().filter(|s| s.kind == kind && s.machine.as_deref() == Some("m-ord-1")).count();
        assert_eq!((to_it("sync"), to_it("check")), (1, 1), "{state}");
        assert!(run.ended_at - T0 < 500, "{state}: no backoff spent on it: {} ms", run.ended_at - T0);
    }
}

#[test]
fn a_failing_push_to_a_machine_still_started_is_retried_and_checked_again_before_giving_up() {
    let mut fly = six();
    for _ in 0..10 {
        fly.fault("sync", "m-ord-1", Response::json(502, r#"{"error":"could not reach machine"}"#));
    }
    let run = drive(&env(&[]), change("page", json!({})), &mut fly);
    let m = run.report.targets[0].machines.iter().find(|m| m.id == "m-ord-1").unwrap();
    assert_eq!(m.sync, SyncOutcome::Failed, "still started, still failing: a real failure");
    assert_eq!(m.attempts, 5);
    let checks = fly.sent.iter().filter(|s| s.kind == "check" && s.machine.as_deref() == Some("m-ord-1")).count();
    assert_eq!(checks, 2, "read after the first failure and before giving up");
    // The same, but the Machine stops at the third push: the check before giving up finds it stopped.
    let mut fly = six();
    fly.fault("sync", "m-ord-1", Response::json(502, r#"{"error":"could not reach machine"}"#));
    fly.fault("sync", "m-ord-1", Response::json(502, r#"{"error":"could not reach machine"}"#));
    fly.stop_on_push = Some(("m-ord-1".into(), 3));
    let run = drive(&env(&[]), change("page", json!({})), &mut fly);
    assert!(run.report.ok, "{:#?}", run.report);
    let m = run.report.targets[0].machines.iter().find(|m| m.id == "m-ord-1").unwrap();
    assert_eq!((m.sync, m.skip_code), (SyncOutcome::Skipped, Some("stopped")));
    let mut fly = six();
    fly.fault("sync", "m-ord-1", Response::json(502, "{}"));
    let run = drive(&env(&[]), change("page", json!({})), &mut fly);
    assert!(run.report.ok, "one 502, then the push lands: {:#?}", run.report);
}

#[test]
fn a_clock_that_steps_back_mid_run_neither_panics_nor_bends_the_report() {
    let mut fly = FakeFly::new(fleet(&[("a", "ord", "started"), ("b", "ord", "started"), ("c", "fra", "started")]));
    fly.fault("sync", "a", Response::json(503, "{}"));
    let env = env(&[("FLY_RESTART_TYPES", "settings"), ("FLY_SYNC_BUDGET_MS", "60000")]);
    // An NTP step of 5 s backwards 30 ms into the run.
    let run = drive_with_clock(&env, change("settings", json!({})), &mut fly, |now| if now >= T0 + 30 { now - 5_000 } else { now });
    let r = &run.report;
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.targets[0].restart.as_ref().unwrap().restarted, 3);
    assert!(r.duration_ms < 60_000, "durations saturate instead of wrapping: {}", r.duration_ms);
    for m in &r.targets[0].machines {
        assert!(m.sync_ms.unwrap() < 60_000 && m.restart.as_ref().unwrap().duration_ms.unwrap() < 60_000, "{m:?}");
    }
}

#[test]
fn an_echoed_token_never_reaches_the_report_whole_cut_or_per_macaroon() {
    let token = "fm2_lJPECAAAAAAAAMqHxBBvWhPBHz3Rv2cjwCR8hAsxwrVodHRwczovL2FwaS5mbHkuaW8vdjGWAJLOAAzgyB8Lk7O9,fm2_lJPETX3nUoLPtbuFW6k8c0xqR2V0SGVyZUJ5UXVpY2tseQ";
    let (first, second) = token.split_once(',').unwrap();
    let echoes = [
        format!(r#"{{"error":"token {token} is not valid"}}"#),
        // The body cut by the other side, or long enough that our message would be cut.
        format!(r#"{{"error":"token FlyV1 {}"}}"#, &token[..60]),
        format!(r#"{{"error":"{} macaroon {second} refused"}}"#, "x".repeat(150)),
        format!(r#"{{"error":"first {first}"}}"#),
    ];
    for body in echoes {
        let mut fly = six();
        fly.authorization = format!("FlyV1 {token}");
        fly.fault("list", "", Response::json(401, &body));
        let run = drive(&env(&[("FLY_API_TOKEN", &format!("FlyV1 {token}"))]), change("page", json!({})), &mut fly);
        let text = serde_json::to_string(&run.report).unwrap();
        assert!(text.contains("credentials refused"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
        for piece in [first, second] {
            assert!(!text.contains(&piece[..12]), "an echoed start of a macaroon leaked: {text}");
        }
    }
}

// ── runs that start from the Machines the process knows (crate::known) ─────────────────────────────────────

fn synced(run: &Run) -> Vec<&str> {
    run.report.targets[0].machines.iter().filter(|m| m.sync == SyncOutcome::Synced).map(|m| m.id.as_str()).collect()
}

#[test]
fn a_known_list_is_pushed_to_while_the_runs_own_list_is_in_flight() {
    let mut fly = six();
    let mut fleets = KnownFleets::default();
    let first = drive_known(&env(&[]), change("page", json!({})), &mut fly, T0, &mut fleets);
    assert!(first.report.ok);
    assert_eq!(first.ended_at - T0, 2 * fly.latency_ms, "nothing known: list, then pushes");
    assert!(!fleets.is_empty(), "the run leaves its list for the next one");

    let start = T0 + 10_000;
    let sent_before = fly.sent.len();
    let second = drive_known(&env(&[]), change("page", json!({"_rev": "rev-3"})), &mut fly, start, &mut fleets);
    assert!(second.report.ok, "{:#?}", second.report);
    assert_eq!(synced(&second), ["m-fra-1", "m-nrt-1", "m-ord-1", "m-ord-2"]);
    let sent = &fly.sent[sent_before..];
    assert!(sent.iter().all(|s| s.at == start), "the list and every push leave together: {sent:?}");
    assert_eq!(sent.iter().filter(|s| s.kind == "list").count(), 1, "the run still reads its own list");
    assert_eq!(sent.iter().filter(|s| s.kind == "sync").count(), 4);
    assert_eq!(second.ended_at - start, fly.latency_ms, "one round trip to fresh");
    for m in &fly.machines {
        assert_eq!(m.applied.len(), 2 * usize::from(m.state == "started"), "{}: each change once", m.id);
    }
}

#[test]
fn the_runs_own_list_reconciles_what_the_known_one_missed() {
    let mut fly = six();
    let mut fleets = KnownFleets::default();
    drive_known(&env(&[]), change("page", json!({})), &mut fly, T0, &mut fleets);
    // Between the runs: one Machine is destroyed, a stopped one is started, a new one is created.
    fly.machine("m-ord-2").state = "destroyed".into();
    fly.machine("m-fra-2").state = "started".into();
    fly.machines.push(FakeMachine::new("m-nrt-3", "nrt", "started"));

    let start = T0 + 10_000;
    let sent_before = fly.sent.len();
    let run = drive_known(&env(&[]), change("page", json!({"_rev": "rev-3"})), &mut fly, start, &mut fleets);
    assert!(run.report.ok, "a Machine gone since the known list is a skip, not a failure: {:#?}", run.report);
    assert_eq!(synced(&run), ["m-fra-1", "m-fra-2", "m-nrt-1", "m-nrt-3", "m-ord-1"]);
    let gone = run.report.targets[0].machines.iter().find(|m| m.id == "m-ord-2").unwrap();
    assert_eq!((gone.sync, gone.skip_code, gone.state.as_str()), (SyncOutcome::Skipped, Some("not_started"), "destroyed"));
    let sent = &fly.sent[sent_before..];
    assert_eq!(sent.iter().filter(|s| s.kind == "check").count(), 0, "the list already said it is gone: no read");
    let late: Vec<&str> = sent.iter().filter(|s| s.kind == "sync" && s.at > start).filter_map(|s| s.machine.as_deref()).collect();
    assert_eq!(late, ["m-fra-2", "m-nrt-3"], "Machines the known list did not have serving are pushed once the list says so");
    let ids: Vec<&str> = run.report.targets[0].machines.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m-fra-1", "m-fra-2", "m-nrt-1", "m-nrt-2", "m-nrt-3", "m-ord-1", "m-ord-2"], "the report reads as a list does");
}

#[test]
fn a_stale_known_list_is_not_pushed_ahead_of_the_list() {
    let mut fly = six();
    let mut fleets = KnownFleets::default();
    drive_known(&env(&[]), change("page", json!({})), &mut fly, T0, &mut fleets);
    let read_at = T0 + fly.latency_ms; // when the first run's list answered
    let start = read_at + sanity_fly_sync::known::PUSH_AHEAD_MAX_AGE_MS + 1;
    let sent_before = fly.sent.len();
    let run = drive_known(&env(&[]), change("page", json!({"_rev": "rev-3"})), &mut fly, start, &mut fleets);
    assert!(run.report.ok);
    assert!(fly.sent[sent_before..].iter().filter(|s| s.kind == "sync").all(|s| s.at > start), "pushes wait for the list");
    assert_eq!(run.ended_at - start, 2 * fly.latency_ms);
}

#[test]
fn a_list_answer_equal_to_the_known_one_is_taken_as_it() {
    // The known list carries the fake's exact answer text but no Machines: taking the answer as the known list
    // (rather than reading it again) pushes to nobody.
    let mut fly = six();
    let mut fleets = KnownFleets::default();
    drive_known(&env(&[]), change("page", json!({})), &mut fly, T0, &mut fleets);
    let config = sanity_fly_sync::config::Config::from_env(&env(&[])).unwrap();
    let key = sanity_fly_sync::known::key(&config.targets[0]);
    let body = fleets.get(&key).unwrap().body.clone();
    let mut hollow = KnownFleets::default();
    let stale_at = T0 - sanity_fly_sync::known::PUSH_AHEAD_MAX_AGE_MS - 1; // too old to push ahead: only the answer is compared
    hollow.learn(key, sanity_fly_sync::known::KnownList { read_at_ms: stale_at, body, machines: std::sync::Arc::from(Vec::new()) });
    let run = drive_known(&env(&[]), change("page", json!({"_rev": "rev-3"})), &mut fly, T0 + 10_000, &mut hollow);
    assert!(run.report.targets[0].machines.is_empty(), "{:#?}", run.report);
    // A different answer is read.
    fly.machines.push(FakeMachine::new("m-nrt-3", "nrt", "started"));
    let run = drive_known(&env(&[]), change("page", json!({"_rev": "rev-4"})), &mut fly, T0 + 20_000, &mut hollow);
    assert_eq!(run.report.targets[0].machines.len(), 7);
}
