//! Sync-tag runs against a simulated Fly: the tags Sanity invalidated, pushed signed to every started Machine,
//! never a restart, and always an end inside the budget (the shim calls `done` then: clients wait on it).

mod support;

use sanity_fly_sync::engine::Action;
use sanity_fly_sync::entry;
use sanity_fly_sync::error::ErrorClass;
use sanity_fly_sync::http::Response;
use sanity_fly_sync::report::{Status, SyncOutcome};
use serde_json::json;
use support::*;

fn three() -> FakeFly {
    FakeFly::new(fleet(&[("m-ord-1", "ord", "started"), ("m-fra-1", "fra", "started"), ("m-nrt-1", "nrt", "stopped")]))
}

#[test]
fn tags_reach_every_started_machine_signed_with_one_key_and_nothing_else() {
    let mut fly = three();
    let run = drive_tags(&env(&[]), &["s1:a1b2", "s1:c3d4"], &mut fly);
    let r = &run.report;
    assert_eq!(r.status, Status::Ok, "{r:#?}");
    assert!(r.change.is_none());
    let summary = r.sync_tags.as_ref().expect("the tags are reported");
    assert_eq!(summary.count, 2);
    let mut keys = vec![];
    for id in ["m-ord-1", "m-fra-1"] {
        let body = &fly.machine(id).applied[0];
        assert_eq!((body["op"].clone(), body["syncTags"].clone()), (json!("tags"), json!(["s1:a1b2", "s1:c3d4"])));
        assert_eq!(body["protocol"], "sanity-fly-sync/1");
        assert!(body.get("id").is_none() && body.get("document").is_none(), "no document rides with tags");
        keys.push(body["idempotencyKey"].as_str().unwrap().to_string());
    }
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[0], summary.idempotency_key);
    assert!(fly.machine("m-nrt-1").applied.is_empty(), "a stopped Machine serves nothing: it is skipped");
    assert_eq!((fly.count("list"), fly.count("sync"), fly.sent.len()), (1, 2, 3));
    assert_eq!(run.ended_at - T0, 2 * fly.latency_ms, "one list, the pushes in parallel: two round trips");
}

#[test]
fn a_sync_tag_run_never_restarts_even_when_asked_or_owed() {
    let mut fly = three();
    fly.machine("m-ord-1").ask_restart = true;
    fly.machine("m-fra-1").metadata.insert("sanity_fly_sync_restart".into(), format!("1;{};settings-1@r1", T0 - 1_000));
    let run = drive_tags(&env(&[("FLY_RESTART_ON_REQUEST", "true")]), &["s1:x"], &mut fly);
    assert_eq!(run.report.status, Status::Ok);
    assert!(run.report.targets[0].restart.is_none());
    assert!(fly.mutating().iter().all(|s| s.kind == "sync"), "only pushes: {:?}", fly.mutating());
    assert_eq!(run.report.resumable, 0);
    assert!(run.report.resume_with.is_none());
    // The control: the same Machines, a resume run, does restart the one that owes it.
    let resumed = drive_from(&env(&[("FLY_RESTART_ON_REQUEST", "true")]), None, &mut fly, T0 + 1_000, None).unwrap();
    assert_eq!(resumed.report.targets[0].restart.as_ref().map(|r| r.restarted), Some(1), "{:#?}", resumed.report);
}

#[test]
fn an_unreachable_machine_is_named_and_the_run_still_ends_inside_its_budget() {
    let mut fly = three();
    for _ in 0..100 {
        fly.fault("sync", "m-fra-1", Response::Network { message: "connect ECONNREFUSED".into() });
    }
    let run = drive_tags(&env(&[("FLY_SYNC_BUDGET_MS", "10000")]), &["s1:x"], &mut fly);
    let r = &run.report;
    assert_eq!(r.status, Status::Partial);
    let fra = r.targets[0].machines.iter().find(|m| m.id == "m-fra-1").unwrap();
    assert_eq!(fra.sync, SyncOutcome::Failed);
    assert_eq!(fra.error.as_ref().unwrap().class, ErrorClass::Retryable);
    assert!(r.targets[0].machines.iter().any(|m| m.id == "m-ord-1" && m.sync == SyncOutcome::Synced));
    assert!(run.ended_at - T0 <= 10_000, "ended {} ms in: the budget is the bound", run.ended_at - T0);
    assert!(fly.count("sync") > 2, "the unreachable Machine was tried again");
}

#[test]
fn when_the_machines_cannot_be_listed_the_run_fails_inside_its_budget() {
    let mut fly = three();
    for _ in 0..100 {
        fly.fault("list", "", Response::json(503, r#"{"error":"unavailable"}"#));
    }
    let run = drive_tags(&env(&[("FLY_SYNC_BUDGET_MS", "8000")]), &["s1:x"], &mut fly);
    assert_eq!(run.report.status, Status::Failed);
    assert!(run.report.targets[0].error.is_some());
    assert!(run.ended_at - T0 <= 8_000);
    assert_eq!(fly.count("sync"), 0);
}

#[test]
fn an_event_without_tags_pushes_nothing() {
    let mut fly = three();
    let run = drive_tags(&env(&[]), &[], &mut fly);
    assert_eq!(run.report.status, Status::Skipped);
    assert_eq!(run.report.targets[0].skipped.as_deref(), Some("the event carried no sync tags"));
    assert!(fly.sent.is_empty());
}

#[test]
fn the_function_entry_tells_a_sync_tag_event_from_a_document_that_has_such_a_field() {
    let now = T0;
    let first_push = |event: serde_json::Value| {
        let mut engine = entry::from_function(&env(&[]), event.to_string().as_bytes(), b"null", now, 1).unwrap();
        let mut fly = three();
        let Action::Send { requests } = engine.poll(now) else { panic!("a list first") };
        let list = fly.handle(&requests[0], now);
        engine.handle_response(requests[0].id, list, now + 20);
        let Action::Send { requests } = engine.poll(now + 20) else { panic!("pushes") };
        serde_json::from_str::<serde_json::Value>(requests[0].body.as_deref().unwrap()).unwrap()
    };
    let tags = first_push(json!({"data": {"syncTags": ["s1:q"]}}));
    assert_eq!(tags["op"], "tags");
    let doc = first_push(json!({"data": {"_id": "page-1", "_type": "page", "_rev": "r", "_updatedAt": UPDATED_AT, "syncTags": ["mine"]}}));
    assert_eq!((doc["op"].as_str(), doc["id"].as_str()), (Some("upsert"), Some("page-1")), "a document's field is a document's");
    let e = entry::from_function(&env(&[]), br#"{"data":{"syncTags":["ok","has space"]}}"#, b"null", now, 1).err().unwrap();
    assert_eq!(e.error().field.as_deref(), Some("event.data.syncTags[1]"));
}
