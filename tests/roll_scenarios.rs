//! Rolling restarts that outlive a run: intent recorded on the Machines, short renewed leases, a budget that
//! ends a run cleanly, kills at any instant, per-region caps. Every assertion about what happened reads the
//! fake Fly's own records (restart counts, restart windows, leases, metadata), not only the engine's report.

mod support;

use sanity_fly_sync::report::{RestartCause, RestartOutcome, Status};
use serde_json::json;
use support::*;

const KEY: &str = "sanity_fly_sync_restart";
/// Our leases' time-to-live, in ms.
const TTL_MS: u64 = sanity_fly_sync::roll::LEASE_TTL_S * 1000;

fn fleet_of(n: usize, regions: &[&str]) -> FakeFly {
    let machines = (0..n).map(|i| FakeMachine::new(&format!("m{i:03}"), regions[i % regions.len()], "started")).collect();
    FakeFly::new(machines)
}

fn settings_env(extra: &[(&str, &str)]) -> sanity_fly_sync::config::Env {
    let mut pairs = vec![("FLY_RESTART_TYPES", "settings")];
    pairs.extend_from_slice(extra);
    env(&pairs)
}

/// Every started Machine restarted exactly once, owes nothing, holds no lease; never more than `cap` down.
fn assert_rolled_once(fly: &FakeFly, cap: usize) {
    assert_rolled_once_in(fly, cap, "");
}

fn assert_rolled_once_in(fly: &FakeFly, cap: usize, context: &str) {
    for m in fly.machines.iter().filter(|m| m.state == "started") {
        assert_eq!(m.restarts, 1, "{context}: {} restarted exactly once", m.id);
        let mark = m.metadata.get(KEY).map(String::as_str).unwrap_or("");
        assert!(mark.starts_with("1;done;"), "{context}: {}: its mark says done, got {mark:?}", m.id);
        assert!(m.lease.is_none(), "{context}: {} holds no lease", m.id);
    }
    assert!(fly.most_down(None) <= cap, "{context}: at most {cap} down at once, saw {}", fly.most_down(None));
}

#[test]
fn a_roll_longer_than_the_budget_stops_cleanly_and_the_next_run_finishes_it() {
    for next in ["resume", "content change"] {
        let mut fly = fleet_of(8, &["ord", "fra"]);
        let env = settings_env(&[("FLY_SYNC_BUDGET_MS", "20000")]);
        let first = drive_from(&env, Some(change("settings", json!({}))), &mut fly, T0, None).unwrap();
        let r = &first.report;
        assert!(r.ok, "a roll left for later is not a failure: {r:#?}");
        assert!(first.ended_at <= T0 + 20_000, "inside its budget");
        let done = fly.machines.iter().filter(|m| m.restarts == 1).count();
        assert!((1..8).contains(&done), "some restarted, some left: {done}");
        assert_eq!(r.resumable as usize, 8 - done, "the rest is resumable");
        let resume = r.resume_with.as_ref().expect("a continuation");
        assert_eq!((resume.function.as_str(), serde_json::to_string(&resume.data).unwrap().as_str()), ("fly-sync-resume", r#"{"sanityFlySync":"resume"}"#));
        assert_eq!(r.webhook_status(), 503, "a webhook delivery is retried, and that run finishes the roll");
        let left: Vec<&FakeMachine> = fly.machines.iter().filter(|m| m.restarts == 0).collect();
        assert!(left.iter().all(|m| m.metadata[KEY] == "1;1799999999000;settings-1@rev-2;app"), "what is left stays recorded on the Machines");
        assert!(fly.machines.iter().all(|m| m.lease.is_none()), "no lease outlives the run");

        let start = first.ended_at + 1_000;
        let second = match next {
            "resume" => drive_from(&env, None, &mut fly, start, None).unwrap(),
            _ => drive_from(&env, Some(change("page", json!({"_id": "page-9"}))), &mut fly, start, None).unwrap(),
        };
        assert!(second.report.ok && second.report.resumable == 0, "{next}: {:#?}", second.report);
        let restart = second.report.targets[0].restart.as_ref().unwrap();
        assert_eq!(restart.cause, RestartCause::Unfinished, "{next}");
        assert_eq!(restart.restarted as usize, 8 - done, "{next}");
        assert_rolled_once(&fly, 1);
    }
}

#[test]
fn killed_at_any_instant_the_next_run_finishes_the_roll_exactly_once() {
    let env = settings_env(&[("FLY_SYNC_BUDGET_MS", "90000")]);
    let fresh = || {
        let mut fly = fleet_of(6, &["ord", "fra"]);
        for m in &mut fly.machines {
            m.checks_critical_ms = 1_200;
        }
        fly
    };
    // The uninterrupted run, to pick kill points among its requests.
    let mut fly = fresh();
    let whole = drive_from(&env, Some(change("settings", json!({}))), &mut fly, T0, None).unwrap();
    assert_rolled_once(&fly, 1);
    let kinds: Vec<String> = whole.log.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string()).collect();
    let mut points: Vec<usize> = vec![1];
    for kind in ["sync", "mark", "lease", "restart", "wait", "poll", "unmark", "release", "renew"] {
        let at: Vec<usize> = kinds.iter().enumerate().filter(|(_, k)| *k == kind).map(|(i, _)| i).collect();
        assert!(!at.is_empty(), "the roll uses {kind}");
        points.extend([at[0], at[at.len() / 2], at[at.len() - 1]]);
    }
    points.sort_unstable();
    points.dedup();
    assert!(points.len() >= 10, "{points:?}");
    for k in points {
        for next in ["retry of the change", "resume"] {
            let mut fly = fresh();
            let killed_at = drive_from(&env, Some(change("settings", json!({}))), &mut fly, T0, Some(k)).expect_err("killed");
            let ran_restarts = fly.machines.iter().any(|m| m.restarts > 0) || fly.machines.iter().any(|m| m.metadata.contains_key(KEY));
            // A resume run only knows what is recorded on the Machines: before any mark, the retry is what knows.
            if next == "resume" && !ran_restarts {
                continue;
            }
            let context = format!("killed after {k} ({}), then {next}", kinds[k.min(kinds.len() - 1)]);
            // The killed run's leases (never released: it was killed) free themselves at their TTL from the
            // kill at the latest, not after: nothing it asked for outlives it by more than the TTL.
            let stale: Vec<LeaseRecord> = fly.leases.iter().filter(|l| l.released_at.is_none()).cloned().collect();
            for l in &stale {
                assert!(l.expires_at <= killed_at + TTL_MS, "{context}: {}'s lease expires {} ms after the kill, past its TTL", l.machine, l.expires_at - killed_at);
            }
            let (leases_before, sent_before) = (fly.leases.len(), fly.sent.len());
            let change = (next != "resume").then(|| change("settings", json!({})));
            let run = drive_from(&env, change, &mut fly, killed_at + 500, None).unwrap();
            assert!(run.report.ok && run.report.resumable == 0, "{context}: {:#?}", run.report);
            // The next run's own leases: every one released by the run itself before it ended, each before its
            // TTL could have expired it (read from the fake's lease log, not from whether a lease is left).
            for l in &fly.leases[leases_before..] {
                let released = l.released_at.unwrap_or_else(|| panic!("{context}: the next run's lease on {} was never released: {l:?}", l.machine));
                assert!(released <= run.ended_at && released < l.expires_at, "{context}: {}'s lease released at {released}, expiring at {}, the run ended at {}", l.machine, l.expires_at, run.ended_at);
            }
            // A stale lease is waited out, not fought: on a Machine the killed run held, the next run asks for the
            // lease at most once before it expires, and holds it only from its expiry on.
            for s in &stale {
                let early = fly.sent[sent_before..].iter().filter(|x| x.kind == "lease" && x.machine.as_deref() == Some(s.machine.as_str()) && x.at < s.expires_at).count();
                assert!(early <= 1, "{context}: {} asked for {early} times while the killed run's lease held", s.machine);
                let taken = fly.leases[leases_before..].iter().filter(|l| l.machine == s.machine);
                assert!(taken.clone().all(|l| l.acquired_at >= s.expires_at), "{context}: {} leased before the stale lease expired", s.machine);
            }
            fly.settle(run.ended_at + 13_000);
            assert_rolled_once_in(&fly, 1, &context);
        }
    }
}

#[test]
fn a_lease_left_by_a_killed_run_of_ours_is_waited_out_not_fought() {
    let mut fly = fleet_of(2, &["ord"]);
    fly.machine("m000").lease = Some(FakeLease { nonce: "dead".into(), expires_at: T0 + 6_000, description: "sanity-fly-sync restart for settings-1@rev-1".into() });
    let run = drive(&settings_env(&[("FLY_SYNC_BUDGET_MS", "60000")]), change("settings", json!({})), &mut fly);
    assert!(run.report.ok, "{:#?}", run.report);
    assert_rolled_once(&fly, 1);
    let restart = fly.sent.iter().find(|s| s.kind == "restart" && s.machine.as_deref() == Some("m000")).unwrap().at;
    assert!(restart >= T0 + 6_000, "restarted once the dead run's lease expired, not before: {}", restart - T0);
    // A lease held by someone else is not waited out: see engine_scenarios' lease_held_elsewhere test.
}

#[test]
fn machines_stopped_or_destroyed_mid_roll_are_skipped_not_failed() {
    let mut fly = fleet_of(3, &["ord"]);
    fly.stop_on_lease = Some("m001".into());
    let run = drive(&settings_env(&[("FLY_SYNC_BUDGET_MS", "60000")]), change("settings", json!({})), &mut fly);
    assert!(run.report.ok, "{:#?}", run.report);
    let outcome = |id: &str| run.report.targets[0].machines.iter().find(|m| m.id == id).unwrap().restart.clone().unwrap();
    assert_eq!(outcome("m001").outcome, RestartOutcome::Skipped);
    assert!(outcome("m001").reason.unwrap().contains("not running"));
    assert_eq!((fly.machine("m000").restarts, fly.machine("m001").restarts, fly.machine("m002").restarts), (1, 0, 1), "the roll went on");
    assert!(fly.machines.iter().all(|m| m.lease.is_none()));
}

#[test]
fn a_machine_started_after_the_change_booted_with_it_and_is_not_restarted() {
    let mut fly = fleet_of(3, &["ord"]);
    fly.machine("m002").events.push((T0 - 500, "start", "started")); // a scale-up after the publish
    let run = drive(&settings_env(&[("FLY_SYNC_BUDGET_MS", "60000")]), change("settings", json!({})), &mut fly);
    assert!(run.report.ok, "{:#?}", run.report);
    assert_eq!(fly.machine("m002").restarts, 0);
    assert_eq!((fly.machine("m000").restarts, fly.machine("m001").restarts), (1, 1));
}

#[test]
fn a_retried_run_of_the_same_change_restarts_nothing_twice() {
    let mut fly = fleet_of(4, &["ord", "fra"]);
    let env = settings_env(&[("FLY_SYNC_BUDGET_MS", "60000")]);
    let first = drive(&env, change("settings", json!({})), &mut fly);
    assert!(first.report.ok);
    let again = drive_from(&env, Some(change("settings", json!({}))), &mut fly, first.ended_at + 1_000, None).unwrap();
    assert!(again.report.ok, "{:#?}", again.report);
    assert!(fly.machines.iter().all(|m| m.restarts == 1), "done marks keep a retry from restarting again");
    assert_eq!(fly.count("restart"), 4);
}

#[test]
fn every_region_keeps_serving_and_a_lone_machine_goes_on_its_own() {
    // ord 3, fra 2, nrt 1; two down at once at most.
    let mut fly = FakeFly::new(fleet(&[
        ("o1", "ord", "started"), ("o2", "ord", "started"), ("o3", "ord", "started"),
        ("f1", "fra", "started"), ("f2", "fra", "started"), ("n1", "nrt", "started"),
    ]));
    let run = drive(&settings_env(&[("FLY_MAX_UNAVAILABLE", "2"), ("FLY_SYNC_BUDGET_MS", "120000")]), change("settings", json!({})), &mut fly);
    assert!(run.report.ok, "{:#?}", run.report);
    assert_rolled_once(&fly, 2);
    assert_eq!(fly.most_down(Some("fra")), 1, "never both of fra's two Machines");
    assert!(fly.most_down(Some("ord")) <= 2, "ord keeps one serving");
    let (n_from, n_to) = fly.downtimes.iter().find(|w| w.0 == "n1").map(|w| (w.2, w.3)).unwrap();
    assert!(fly.downtimes.iter().filter(|w| w.0 != "n1").all(|w| w.3 <= n_from || w.2 >= n_to), "nrt's only Machine went down alone");
}

#[test]
fn restarts_are_watched_with_long_polls_not_a_read_a_second() {
    let mut fly = fleet_of(4, &["ord", "fra"]);
    for m in &mut fly.machines {
        m.checks = false;
        m.restart_ms = 8_000;
    }
    let run = drive(&settings_env(&[("FLY_SYNC_BUDGET_MS", "120000"), ("FLY_MAX_UNAVAILABLE", "2")]), change("settings", json!({})), &mut fly);
    assert!(run.report.ok, "{:#?}", run.report);
    assert_rolled_once(&fly, 2);
    for m in &fly.machines {
        let to = |kind: &str| fly.sent.iter().filter(|s| s.kind == kind && s.machine.as_deref() == Some(m.id.as_str())).count();
        assert_eq!((to("wait"), to("poll")), (1, 0), "{}: one long-poll for an 8 s restart, no reads", m.id);
        assert!(to("renew") >= 1, "{}: its lease was renewed while it restarted", m.id);
    }
}

#[test]
fn a_roll_of_480_machines_completes_across_runs() {
    let mut fly = fleet_of(480, &["ord", "fra", "nrt", "iad"]);
    for m in &mut fly.machines {
        m.restart_ms = 2_500;
        m.checks = false;
    }
    let env = settings_env(&[("FLY_MAX_UNAVAILABLE", "2"), ("FLY_SYNC_BUDGET_MS", "100000")]);
    let mut run = drive_from(&env, Some(change("settings", json!({}))), &mut fly, T0, None).unwrap();
    let mut runs = 1;
    while run.report.resumable > 0 {
        assert!(runs < 20, "bounded: {runs} runs");
        run = drive_from(&env, None, &mut fly, run.ended_at + 1_000, None).unwrap();
        runs += 1;
    }
    assert!(run.report.ok && run.report.status == Status::Ok, "{:?}", run.report.status);
    assert!(runs > 1, "it did need several runs: {runs}");
    assert_rolled_once(&fly, 2);
}



#[test]
fn a_fraction_rolls_every_region_at_once_and_keeps_two_thirds_of_each_serving() {
    let mut fly = fleet_of(96, &["ord", "fra", "nrt"]);
    for m in &mut fly.machines {
        m.restart_ms = 800;
        m.checks_critical_ms = 300;
    }
    let env = settings_env(&[("FLY_MAX_UNAVAILABLE", "33%"), ("FLY_SYNC_BUDGET_MS", "100000")]);
    let run = drive(&env, change("settings", json!({})), &mut fly);
    assert!(run.report.ok && run.report.resumable == 0, "{:#?}", run.report.status);
    assert_rolled_once(&fly, 96);
    for region in ["ord", "fra", "nrt"] {
        // 32 Machines a region: at most 10 down, so at least 22 (over two thirds) serve at every instant.
        let most = fly.most_down(Some(region));
        assert!((2..=10).contains(&most), "{region}: {most} down at most");
    }
    assert!(fly.most_down(None) > 10, "regions rolled side by side: {}", fly.most_down(None));
    assert_eq!(run.report.targets[0].restart.as_ref().unwrap().max_unavailable, "33%");
}

#[test]
fn a_resume_run_that_makes_no_progress_hands_nothing_on() {
    let mut fly = fleet_of(8, &["ord"]);
    let env = settings_env(&[("FLY_SYNC_BUDGET_MS", "20000")]);
    let first = drive_from(&env, Some(change("settings", json!({}))), &mut fly, T0, None).unwrap();
    assert!(first.report.resumable > 0 && first.report.resume_with.is_some(), "{:#?}", first.report);
    // A resume run whose budget cannot fit one restart (the done marks say the last ones took about 3 s): nothing
    // restarted, so no continuation — a chain of runs that make no progress would never end.
    let took = |v: &str| v.strip_prefix("1;done;").and_then(|rest| rest.rsplit(';').next()?.parse::<u64>().ok());
    let timed: Vec<u64> = fly.machines.iter().filter_map(|m| took(m.metadata.get(KEY)?)).collect();
    assert!(!timed.is_empty() && timed.iter().all(|ms| (3_000..4_100).contains(ms)), "done marks carry what each restart took: {timed:?}");
    let tight = settings_env(&[("FLY_SYNC_BUDGET_MS", "3000")]);
    let idle = drive_from(&tight, None, &mut fly, first.ended_at + 1_000, None).unwrap();
    assert_eq!(idle.report.resumable, first.report.resumable, "{:#?}", idle.report);
    assert!(idle.report.resume_with.is_none(), "no progress, no continuation");
    // Not "skipped": restarts are owed and none was done, and the report says why.
    let t = &idle.report.targets[0];
    assert_eq!((idle.report.status, idle.report.ok), (Status::Partial, false), "{:#?}", idle.report);
    let why = t.restart.as_ref().and_then(|r| r.stopped_early.as_deref()).unwrap_or_default();
    assert!(why.contains("time budget"), "{why}");
    let done = drive_from(&env, None, &mut fly, idle.ended_at + 1_000, None).unwrap();
    assert_eq!(done.report.resumable, 0);
    assert_rolled_once(&fly, 1);
    // A resume run with nothing owed: skipped, and said so.
    let nothing = drive_from(&env, None, &mut fly, done.ended_at + 1_000, None).unwrap();
    assert_eq!(nothing.report.status, Status::Skipped);
    assert_eq!(nothing.report.targets[0].skipped.as_deref(), Some("no Machine owes a restart"));
}

#[test]
fn a_machine_stuck_since_an_earlier_run_is_failed_past_the_restart_timeout() {
    let mut fly = fleet_of(2, &["ord"]);
    fly.machine("m000").never_starts = true;
    let env = settings_env(&[("FLY_SYNC_BUDGET_MS", "20000"), ("FLY_RESTART_TIMEOUT_MS", "60000")]);
    let first = drive_from(&env, Some(change("settings", json!({}))), &mut fly, T0, None).unwrap();
    let outcome = |r: &sanity_fly_sync::report::Report, id: &str| r.targets[0].machines.iter().find(|m| m.id == id).unwrap().restart.clone().unwrap();
    assert_eq!(outcome(&first.report, "m000").outcome, RestartOutcome::Resumable, "the budget ran out first: not known stuck yet");
    // A resume run within the restart timeout waits for it to settle and leaves it for later…
    let soon = drive_from(&env, None, &mut fly, first.ended_at + 1_000, None).unwrap();
    assert_eq!(outcome(&soon.report, "m000").outcome, RestartOutcome::Deferred, "{:#?}", soon.report);
    // …and one past it calls it what it is.
    assert!(soon.ended_at < T0 + 60_000);
    let late = drive_from(&env, None, &mut fly, T0 + 80_000, None).unwrap();
    let stuck = outcome(&late.report, "m000");
    assert_eq!(stuck.outcome, RestartOutcome::Failed);
    assert!(stuck.error.unwrap().message.contains("past the restart timeout"));
    assert!(!late.report.ok);
    assert_eq!(fly.machine("m000").restarts, 1, "never restarted twice");
}

#[test]
fn calls_scheduled_past_the_deadline_end_the_run_instead_of_spinning() {
    // Found by the engine-invariants property (tests/ordering_props.rs): slow answers put a lease renewal after the
    // budget's end; the run used to wait at its deadline without ever sending or dropping it. The driver asserts
    // every wait moves time.
    let mut fly = fleet_of(3, &["ord", "fra"]);
    fly.latency_ms = 1_500;
    fly.fault("list", "", sanity_fly_sync::http::Response::json(429, r#"{"error":"rate limited"}"#));
    fly.fault("release", "m000", sanity_fly_sync::http::Response::json(429, r#"{"error":"rate limited"}"#));
    let env = settings_env(&[("FLY_SYNC_BUDGET_MS", "30000"), ("FLY_RESTART_TIMEOUT_MS", "10000")]);
    let run = drive(&env, change("settings", json!({})), &mut fly);
    assert!(run.ended_at <= T0 + 30_000);
    assert!(fly.sent.iter().all(|s| s.at < T0 + 30_000));
}

#[test]
fn machines_a_killed_run_left_down_count_against_the_caps_until_they_serve() {
    // Found on the local Fly (tests/node/roll-kill.test.mjs). ord 3, fra 2, two down at once at most. A run killed
    // mid-roll left two ord Machines down: o1 still restarting, o2 back started but its checks not passing yet.
    let mut fly = FakeFly::new(fleet(&[
        ("f1", "fra", "started"), ("f2", "fra", "started"),
        ("o1", "ord", "started"), ("o2", "ord", "started"), ("o3", "ord", "started"),
    ]));
    for m in &mut fly.machines {
        m.metadata.insert(KEY.into(), "1;1799999999000;settings-1@rev-2;app".into());
    }
    let o1 = fly.machine("o1");
    (o1.restarts, o1.restart_at, o1.state) = (1, Some(T0 - 1_000), "restarting".into());
    o1.events.push((T0 - 1_000, "restart", "stopping"));
    let o2 = fly.machine("o2");
    (o2.restarts, o2.checks_critical_ms) = (1, 5_000);
    o2.events.extend([(T0 - 1_500, "restart", "stopping"), (T0 - 500, "start", "started")]);
    fly.downtimes.extend([("o1".into(), "ord".into(), T0 - 1_000, T0 + 2_000), ("o2".into(), "ord".into(), T0 - 1_500, T0 + 4_500)]);

    let env = settings_env(&[("FLY_MAX_UNAVAILABLE", "2"), ("FLY_SYNC_BUDGET_MS", "60000")]);
    let run = drive_from(&env, Some(change("settings", json!({}))), &mut fly, T0, None).unwrap();
    assert!(run.report.ok, "{:#?}", run.report);
    assert_rolled_once(&fly, 2);
    assert_eq!(fly.most_down(Some("fra")), 1, "never both of fra's two Machines");
    // o2's restart is done (its mark says so) only once its checks pass.
    let unmarked = fly.sent.iter().find(|s| s.kind == "unmark" && s.machine.as_deref() == Some("o2")).expect("o2's mark cleared").at;
    assert!(unmarked >= T0 + 4_500, "o2 marked done {} ms before its checks passed", T0 + 4_500 - unmarked);
}
