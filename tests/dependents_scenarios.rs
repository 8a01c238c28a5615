//! Whole runs that look up a change's dependents (the published documents referencing it) in a simulated Sanity,
//! beside a simulated Fly: what rides in the push, depth, cap, deletes, cycles, tokens and failing queries.

mod support;

use sanity_fly_sync::error::ErrorClass;
use sanity_fly_sync::http::Response;
use sanity_fly_sync::report::{Report, Status, SyncOutcome};
use serde_json::{json, Value};
use support::*;

const LAKE: &str = "http://127.0.0.1:4281";

fn lake_env(extra: &[(&str, &str)]) -> sanity_fly_sync::config::Env {
    let mut all = vec![
        ("SANITY_PROJECT_ID", "abc123"),
        ("SANITY_DATASET", "production"),
        ("SANITY_API_HOST", LAKE),
        ("SANITY_API_READ_TOKEN", LAKE_TOKEN),
        ("FLY_SYNC_ROUTES", "post=/blog/{slug},category=/c/{slug},page=/{slug}"),
    ];
    all.extend_from_slice(extra);
    env(&all)
}

fn two() -> FakeFly {
    let mut fly = FakeFly::new(fleet(&[("m-ord-1", "ord", "started"), ("m-fra-1", "fra", "started")]));
    fly.lake.token = Some(LAKE_TOKEN.into());
    fly
}

/// Three posts by the person, one draft of a fourth, one post by someone else.
fn posts_by_person(fly: &mut FakeFly) {
    fly.lake.doc("post-a", "post", &["person-1"]).doc("post-b", "post", &["person-1", "category-1"]).doc("post-c", "post", &["person-1"]);
    fly.lake.doc("drafts.post-d", "post", &["person-1"]).doc("post-e", "post", &["person-2"]);
}

fn pushed(fly: &mut FakeFly, machine: &str) -> Value {
    fly.machine(machine).applied.last().cloned().expect("a push")
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect()
}

fn dependents(r: &Report) -> &sanity_fly_sync::report::DependentsReport {
    r.targets[0].dependents.as_ref().expect("a dependents report")
}

#[test]
fn an_edit_of_a_person_pushes_the_routes_of_the_posts_that_show_it_to_every_machine() {
    let mut fly = two();
    posts_by_person(&mut fly);
    let run = drive(&lake_env(&[]), change("person", json!({"_id": "person-1"})), &mut fly);
    assert_eq!(run.report.status, Status::Ok, "{:#?}", run.report);
    for m in ["m-ord-1", "m-fra-1"] {
        let p = pushed(&mut fly, m);
        let ids: Vec<&str> = p["dependents"]["documents"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["post-a", "post-b", "post-c"], "published referrers only, each once");
        assert_eq!(p["dependents"]["documents"][1], json!({"id": "post-b", "type": "post", "routes": ["/blog/b"], "tags": ["post-b", "post"]}));
        assert_eq!(strings(&p["routes"]["invalidate"]), ["/blog/a", "/blog/b", "/blog/c"], "a person has no route of its own");
        assert_eq!(strings(&p["tags"]), ["person-1", "person", "post-a", "post", "post-b", "post-c"]);
        assert!(p["dependents"].get("more").is_none());
    }
    let d = dependents(&run.report);
    assert_eq!((d.pushed.clone(), d.levels, d.without_token.is_none()), (vec!["post-a".into(), "post-b".into(), "post-c".into()], 1, true));
    // The lookup went out with the list, in the same instant, and the pushes waited for both: two round trips.
    let at = |kind| fly.sent.iter().find(|s| s.kind == kind).unwrap().at;
    assert_eq!((at("dependents"), at("list")), (T0, T0));
    assert_eq!(run.ended_at - T0, 2 * fly.latency_ms);
    assert_eq!(run.report.targets[0].requests.sanity, 1);
    assert_eq!(fly.lake.queries[0], json!({"ids": ["person-1"], "seen": ["person-1"], "cap": 50}));
}

#[test]
fn deeper_levels_follow_referrers_of_referrers_and_cycles_end() {
    let mut fly = two();
    // category-1 ← post-b ← page-home; page-home ↔ page-about reference each other; post-b references itself.
    fly.lake.doc("post-b", "post", &["category-1", "post-b"]).doc("page-home", "page", &["post-b", "page-about"]);
    fly.lake.doc("page-about", "page", &["page-home", "category-1"]);
    let one = drive(&lake_env(&[]), change("category", json!({"_id": "category-1"})), &mut fly);
    assert_eq!(dependents(&one.report).pushed, ["post-b", "page-about"], "depth 1: direct referrers only");

    let mut fly2 = two();
    fly2.lake = fly.lake.clone();
    fly2.lake.queries.clear();
    let run = drive(&lake_env(&[("FLY_SYNC_DEPENDENTS_DEPTH", "3")]), change("category", json!({"_id": "category-1"})), &mut fly2);
    let d = dependents(&run.report);
    assert_eq!(d.pushed, ["post-b", "page-about", "page-home"], "each document once, however many paths lead to it");
    assert_eq!(d.levels, 3);
    let asked: Vec<(&Value, &Value)> = fly2.lake.queries.iter().map(|q| (&q["ids"], &q["seen"])).collect();
    assert_eq!(asked[1], (&json!(["post-b", "page-about"]), &json!(["category-1", "post-b", "page-about"])));
    assert_eq!(asked[2], (&json!(["page-home"]), &json!(["category-1", "post-b", "page-about", "page-home"])), "the cycle back to page-about ends here");
    assert_eq!(asked.len(), 3, "nothing new at level 3: no level 4 even if allowed");
    assert_eq!(strings(&pushed(&mut fly2, "m-ord-1")["routes"]["invalidate"]), ["/c/hello", "/blog/b", "/about", "/home"]);
}

#[test]
fn over_the_cap_the_rest_is_reported_and_covered_by_its_types_tag() {
    let mut fly = two();
    for i in 0..5 {
        fly.lake.doc(&format!("post-{i}"), "post", &["person-1"]);
    }
    fly.lake.doc("page-x", "page", &["person-1"]);
    let run = drive(&lake_env(&[("FLY_SYNC_DEPENDENTS_CAP", "2"), ("FLY_SYNC_DEPENDENTS_DEPTH", "2")]), change("person", json!({"_id": "person-1"})), &mut fly);
    assert_eq!(run.report.status, Status::Ok);
    let d = dependents(&run.report);
    assert_eq!(d.pushed, ["post-0", "post-1"]);
    let more = d.left_out.as_ref().expect("left out");
    assert_eq!((more.count, more.types.clone()), (4, vec!["page".to_string(), "post".to_string()]));
    assert_eq!(fly.lake.queries.len(), 1, "the cap is reached: no second level");
    let p = pushed(&mut fly, "m-fra-1");
    assert_eq!(p["dependents"]["more"], json!({"count": 4, "types": ["page", "post"]}));
    let tags = strings(&p["tags"]);
    assert!(tags.contains(&"page") && tags.contains(&"post"), "the types of those left out are invalidated by tag: {tags:?}");
}

#[test]
fn a_deleted_category_invalidates_the_posts_that_showed_it() {
    let mut fly = two();
    posts_by_person(&mut fly);
    let run = drive(&lake_env(&[]), change("category", json!({"_id": "category-1", "op": "delete", "slug": "news"})), &mut fly);
    assert_eq!(run.report.status, Status::Ok);
    let p = pushed(&mut fly, "m-ord-1");
    assert_eq!(p["op"], "delete");
    assert_eq!(strings(&p["routes"]["previous"]), ["/c/news"]);
    assert_eq!(strings(&p["routes"]["invalidate"]), ["/c/news", "/blog/b"], "the category's own route and the post that showed it");
    assert_eq!(dependents(&run.report).pushed, ["post-b"]);
}

#[test]
fn without_a_token_the_lookup_is_anonymous_and_the_report_says_what_that_misses() {
    let mut fly = two();
    fly.lake.token = None;
    posts_by_person(&mut fly);
    let mut vars = lake_env(&[]);
    vars.remove("SANITY_API_READ_TOKEN");
    let run = drive(&vars, change("person", json!({"_id": "person-1"})), &mut fly);
    assert_eq!(run.report.status, Status::Ok);
    let d = dependents(&run.report);
    assert_eq!(d.pushed.len(), 3, "a public dataset answers anonymous queries");
    let why = d.without_token.as_deref().expect("the report says the lookup had no token");
    assert!(why.contains("private dataset") && why.contains("SANITY_API_READ_TOKEN"), "{why}");
}

#[test]
fn a_refused_token_costs_the_dependents_not_the_push_and_is_not_retried() {
    let mut fly = two();
    posts_by_person(&mut fly);
    fly.lake.token = Some("another-token-entirely".into());
    let run = drive(&lake_env(&[]), change("person", json!({"_id": "person-1"})), &mut fly);
    let r = &run.report;
    assert_eq!(r.status, Status::Partial, "the dependents stayed stale: not ok");
    assert!(r.targets[0].machines.iter().all(|m| m.sync == SyncOutcome::Synced), "the document itself reached every Machine");
    let e = dependents(r).error.as_ref().expect("the error");
    assert_eq!(e.class, ErrorClass::Fatal);
    assert!(e.message.contains("refused the query") && e.message.contains("token"), "{}", e.message);
    assert_eq!(fly.count("dependents"), 1, "a refused token is not asked again");
    assert!(pushed(&mut fly, "m-ord-1").get("dependents").is_none(), "no dependents: none claimed");
}

#[test]
fn a_failing_query_is_retried_then_given_up_with_the_document_pushed() {
    let mut fly = two();
    posts_by_person(&mut fly);
    fly.fault("dependents", "", Response::json(503, r#"{"error":"unavailable"}"#));
    let run = drive(&lake_env(&[]), change("person", json!({"_id": "person-1"})), &mut fly);
    assert_eq!(run.report.status, Status::Ok, "one 503, then the answer: {:#?}", run.report);
    assert_eq!((fly.count("dependents"), dependents(&run.report).pushed.len()), (2, 3));
    assert!(run.report.targets[0].requests.retries >= 1);

    let mut fly = two();
    posts_by_person(&mut fly);
    for _ in 0..20 {
        fly.fault("dependents", "", Response::Network { message: "connect ECONNREFUSED".into() });
    }
    let run = drive(&lake_env(&[]), change("person", json!({"_id": "person-1"})), &mut fly);
    let r = &run.report;
    assert_eq!(r.status, Status::Partial);
    assert!(r.targets[0].machines.iter().all(|m| m.sync == SyncOutcome::Synced));
    let e = dependents(r).error.as_ref().unwrap();
    assert_eq!(e.class, ErrorClass::Retryable, "{e:?}");
    assert!((2..20).contains(&fly.count("dependents")), "retried, within bounds: {}", fly.count("dependents"));
    // The pushes waited for the lookup to settle: they carry no dependents, and none left before it gave up.
    let last_query = fly.sent.iter().filter(|s| s.kind == "dependents").map(|s| s.at).max().unwrap();
    assert!(fly.sent.iter().filter(|s| s.kind == "sync").all(|s| s.at >= last_query));
}

#[test]
fn unknown_project_or_depth_zero_pushes_without_looking() {
    let mut fly = two();
    posts_by_person(&mut fly);
    let run = drive(&env(&[]), change("person", json!({"_id": "person-1"})), &mut fly);
    assert_eq!(run.report.status, Status::Ok);
    let why = dependents(&run.report).not_looked_up.as_deref().unwrap();
    assert!(why.contains("SANITY_PROJECT_ID"), "{why}");
    assert_eq!(fly.count("dependents"), 0);

    let mut fly = two();
    let run = drive(&lake_env(&[("FLY_SYNC_DEPENDENTS_DEPTH", "0")]), change("person", json!({"_id": "person-1"})), &mut fly);
    assert!(run.report.targets[0].dependents.is_none(), "turned off: nothing to report");
    assert_eq!(fly.count("dependents"), 0);
}

#[test]
fn dependent_types_limit_what_is_looked_up() {
    let mut fly = two();
    posts_by_person(&mut fly);
    fly.lake.doc("page-x", "page", &["person-1"]);
    let run = drive(&lake_env(&[("FLY_SYNC_DEPENDENT_TYPES", "page")]), change("person", json!({"_id": "person-1"})), &mut fly);
    assert_eq!(dependents(&run.report).pushed, ["page-x"]);
    assert_eq!(fly.lake.queries[0]["types"], json!(["page"]));
}
