//! Core cost per event, natively: parse a Function event and the configuration, build the engine, and drive it
//! through a 24-Machine fan-out with canned answers (one Machines API list, 24 acks) until it is done. No network,
//! no clock reads inside the engine. The case is `bench/fixtures/core-case.json`, the same one
//! `bench/core-wasm.mjs` drives through the wasm boundary.
//!
//! `cargo bench --bench core [-- --iterations N] [--json]` (std only: `Instant` and `black_box`). The bench
//! profile inherits `[profile.release]` (opt-level "z", LTO), the settings the wasm is built with. After the
//! timed loop, a quarter as many events are timed per phase (start, list, fan-out, acks, report).
//! `cargo test --all-targets` runs this target too (`--all-targets` includes benches whatever `test = false`
//! says) but without `--bench`: then it does 10 events, checks the run ends in an ok report, and exits.

use sanity_fly_sync::config::Env;
use sanity_fly_sync::engine::Action;
use sanity_fly_sync::http::Response;
use sanity_fly_sync::entry;
use serde_json::Value;
use std::hint::black_box;
use std::time::Instant;

const CASE: &str = include_str!("../bench/fixtures/core-case.json");

struct Case {
    env: Env,
    /// The Function's `event` (`{data}`) as text, as the shim hands it over: parsed inside the timed loop.
    event: String,
    now_ms: u64,
    list: Response,
    /// machine id → its ack
    acks: Vec<(String, Response)>,
}

fn load() -> Case {
    let case: Value = serde_json::from_str(CASE).expect("bench/fixtures/core-case.json is JSON");
    let env: Env = serde_json::from_value(case["env"].clone()).expect("env is a string map");
    let event = case["event"].to_string();
    let list_body = case["listBody"].as_str().expect("listBody").to_string();
    let machines: Value = serde_json::from_str(&list_body).expect("listBody is JSON");
    let json_headers = vec![(
        "content-type".to_string(),
        "application/json; charset=utf-8".to_string(),
    )];
    let acks = machines
        .as_array()
        .expect("a list")
        .iter()
        .map(|m| {
            let id = m["id"].as_str().expect("id").to_string();
            let body = format!(r#"{{"protocol":"sanity-fly-sync/1","machine":"{id}","status":"applied","restart":null}}"#);
            (id, Response::Http { status: 200, headers: json_headers.clone(), body })
        })
        .collect();
    Case {
        env,
        event,
        now_ms: case["nowMs"].as_u64().expect("nowMs"),
        list: Response::Http {
            status: 200,
            headers: json_headers,
            body: list_body,
        },
        acks,
    }
}

/// One event, start to report. Returns (requests answered, report ok).
fn one_event(case: &Case, seed: u64) -> (usize, bool) {
    let mut engine = entry::from_function(&case.env, black_box(case.event.as_bytes()), b"null", case.now_ms, seed)
        .expect("the case starts a run");
    let mut answered = 0;
    loop {
        match engine.poll(case.now_ms) {
            Action::Send { requests } => {
                for request in requests {
                    let response = match request.log.kind {
                        "list" => case.list.clone(),
                        "sync" => {
                            let id = request
                                .log
                                .machine
                                .as_deref()
                                .expect("a sync names its Machine");
                            case.acks
                                .iter()
                                .find(|(m, _)| m == id)
                                .expect("a known Machine")
                                .1
                                .clone()
                        }
                        other => panic!("unexpected {other} request in a content-only run"),
                    };
                    engine.handle_response(request.id, response, case.now_ms);
                    answered += 1;
                }
            }
            Action::Wait { .. } => panic!("every request is answered at once: nothing to wait for"),
            Action::Done { report } => return (answered, black_box(report).ok),
        }
    }
}

/// The same event, timed per phase (ns): [parse + config + engine, list poll, list answer, fan-out poll,
/// acks, report poll].
fn phases(case: &Case, seed: u64, into: &mut [u128; 6]) {
    let mut lap = Instant::now();
    let mut mark = |slot: usize, into: &mut [u128; 6]| {
        let now = Instant::now();
        into[slot] += (now - lap).as_nanos();
        lap = now;
    };
    let mut engine = entry::from_function(&case.env, black_box(case.event.as_bytes()), b"null", case.now_ms, seed)
        .expect("the case starts a run");
    mark(0, into);
    let Action::Send { requests } = engine.poll(case.now_ms) else {
        panic!("a list first")
    };
    mark(1, into);
    for r in requests {
        engine.handle_response(r.id, case.list.clone(), case.now_ms);
    }
    mark(2, into);
    let Action::Send { requests } = engine.poll(case.now_ms) else {
        panic!("then the pushes")
    };
    mark(3, into);
    for r in requests {
        let id = r.log.machine.as_deref().expect("a Machine");
        engine.handle_response(
            r.id,
            case.acks
                .iter()
                .find(|(m, _)| m == id)
                .expect("known")
                .1
                .clone(),
            case.now_ms,
        );
    }
    mark(4, into);
    let Action::Done { report } = engine.poll(case.now_ms) else {
        panic!("then done")
    };
    black_box(report);
    mark(5, into);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let benching = args.iter().any(|a| a == "--bench");
    let json = args.iter().any(|a| a == "--json");
    let iterations: u64 = args
        .iter()
        .position(|a| a == "--iterations")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--iterations: a whole number"))
        .unwrap_or(if benching { 2_000 } else { 10 });
    let case = load();

    let (requests, ok) = one_event(&case, 1);
    assert!(ok, "the canned run must end in an ok report");
    assert_eq!(
        requests,
        1 + case.acks.len(),
        "one list and one push per Machine"
    );

    let warmup = (iterations / 10).max(1);
    for i in 0..warmup {
        black_box(one_event(&case, i));
    }
    let started = Instant::now();
    for i in 0..iterations {
        black_box(one_event(&case, i));
    }
    let elapsed = started.elapsed();
    let us_per_event = elapsed.as_secs_f64() * 1e6 / iterations as f64;
    let machines = case.acks.len();
    let mut split = [0u128; 6];
    let split_runs = (iterations / 4).max(1);
    for i in 0..split_runs {
        phases(&case, i, &mut split);
    }
    let us = |ns: u128| ns as f64 / 1e3 / split_runs as f64;
    let names = [
        "start",
        "listPoll",
        "listAnswer",
        "fanOutPoll",
        "acks",
        "report",
    ];
    let phases_json: Vec<String> = names
        .iter()
        .zip(split)
        .map(|(n, ns)| format!(r#""{n}":{:.3}"#, us(ns)))
        .collect();
    if json {
        println!(
            r#"{{"bench":"core-native","usPerEvent":{us_per_event:.3},"iterations":{iterations},"machines":{machines},"requestsPerEvent":{requests},"profile":"bench (inherits release: opt-level z, lto)","phasesUs":{{{}}}}}"#,
            phases_json.join(",")
        );
    } else {
        println!("core (native): {us_per_event:.2} µs/event over {iterations} events ({machines}-Machine fan-out, {requests} requests each)");
        println!(
            "  per phase (µs): {}",
            phases_json.join(", ").replace('"', "")
        );
    }
}
