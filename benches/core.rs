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
use sanity_fly_sync::known::ProcessMemory;
use serde_json::Value;
use std::hint::black_box;
use std::time::Instant;

const CASE: &str = include_str!("../bench/fixtures/core-case.json");

struct Case {
    /// The environment as the shim hands it over: JSON text of the `FLY_*` / `SANITY_*` variables.
    env: Vec<u8>,
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
    let env = serde_json::to_vec(&env).expect("env serialises");
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

/// One event, start to report, in a process that remembers what `memory` holds (a fresh one: the first event
/// of a process, which reads its configuration and lists first). Returns (requests answered, report ok).
fn one_event(case: &Case, seed: u64, memory: &mut ProcessMemory) -> (usize, bool) {
    let mut phases = [0u128; PHASES];
    one_event_timed(case, seed, memory, &mut phases, false)
}

const PHASES: usize = 5;
const PHASE_NAMES: [&str; PHASES] = ["start", "sends", "listAnswer", "acks", "report"];

/// `one_event`, adding the ns of each phase to `into` when `timed`: start (event + config + engine), every poll
/// that sends, the list's answer, the acks, the last poll (the report).
fn one_event_timed(case: &Case, seed: u64, memory: &mut ProcessMemory, into: &mut [u128; PHASES], timed: bool) -> (usize, bool) {
    let mut lap = Instant::now();
    let mut mark = |slot: usize, into: &mut [u128; PHASES]| {
        if timed {
            let now = Instant::now();
            into[slot] += (now - lap).as_nanos();
            lap = now;
        }
    };
    let mut engine = memory.from_function(&case.env, black_box(case.event.as_bytes()), b"null", case.now_ms, seed).expect("the case starts a run");
    mark(0, into);
    let mut answered = 0;
    loop {
        let action = engine.poll(case.now_ms);
        let requests = match action {
            Action::Send { requests } => requests,
            Action::Wait { .. } => panic!("every request is answered at once: nothing to wait for"),
            Action::Done { report } => {
                black_box(&report);
                mark(4, into);
                return (answered, report.ok);
            }
        };
        mark(1, into);
        for request in requests {
            let (response, slot) = match request.log.kind {
                "list" => (case.list.clone(), 2),
                "sync" => {
                    let id = request.log.machine.as_deref().expect("a sync names its Machine");
                    (case.acks.iter().find(|(m, _)| m == id).expect("a known Machine").1.clone(), 3)
                }
                other => panic!("unexpected {other} request in a content-only run"),
            };
            engine.handle_response(request.id, response, case.now_ms);
            memory.learn(&mut engine);
            answered += 1;
            mark(slot, into);
        }
    }
}

/// `iterations` events (after a tenth as many unmeasured), each in a process as `warm` says: µs per event, and
/// per phase over a quarter as many more.
fn measure(case: &Case, iterations: u64, warm: bool) -> (f64, [f64; PHASES]) {
    // A warm process keeps its memory across events; the first event of a process starts from none.
    let mut memory = ProcessMemory::default();
    let process = |memory: &mut ProcessMemory| {
        if !warm {
            memory.forget();
        }
    };
    for i in 0..(iterations / 10).max(1) {
        process(&mut memory);
        black_box(one_event(case, i, &mut memory));
    }
    let started = Instant::now();
    for i in 0..iterations {
        process(&mut memory);
        black_box(one_event(case, i, &mut memory));
    }
    let us_per_event = started.elapsed().as_secs_f64() * 1e6 / iterations as f64;
    let mut split = [0u128; PHASES];
    let split_runs = (iterations / 4).max(1);
    for i in 0..split_runs {
        process(&mut memory);
        black_box(one_event_timed(case, i, &mut memory, &mut split, true));
    }
    (us_per_event, split.map(|ns| ns as f64 / 1e3 / split_runs as f64))
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

    let mut memory = ProcessMemory::default();
    let (requests, ok) = one_event(&case, 1, &mut memory);
    assert!(ok, "the canned run must end in an ok report");
    assert_eq!(requests, 1 + case.acks.len(), "one list and one push per Machine");
    let (requests, ok) = one_event(&case, 2, &mut memory);
    assert!(ok && requests == 1 + case.acks.len(), "a warm process: the same list and pushes, pushed ahead");

    // `--only warm|cold`: measure one kind of event (to count instructions of one under a profiler).
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).map(String::as_str);
    let (warm_us, warm_phases) = if only != Some("cold") { measure(&case, iterations, true) } else { (0.0, [0.0; PHASES]) };
    let (cold_us, cold_phases) = if only != Some("warm") { measure(&case, iterations, false) } else { (0.0, [0.0; PHASES]) };
    let machines = case.acks.len();
    let phases = |p: [f64; PHASES]| PHASE_NAMES.iter().zip(p).map(|(n, us)| format!(r#""{n}":{us:.3}"#)).collect::<Vec<_>>().join(",");
    if json {
        println!(
            r#"{{"bench":"core-native","usPerEvent":{warm_us:.3},"firstEventUs":{cold_us:.3},"iterations":{iterations},"machines":{machines},"requestsPerEvent":{requests},"profile":"{PROFILE}","phasesUs":{{{}}},"firstEventPhasesUs":{{{}}}}}"#,
            phases(warm_phases),
            phases(cold_phases)
        );
    } else {
        println!("core (native, {PROFILE}): {machines}-Machine fan-out, {requests} requests per event, {iterations} events each");
        println!("  warm process (the list known, answered the same): {warm_us:.2} µs/event; per phase (µs): {}", phases(warm_phases).replace('"', ""));
        println!("  first event of a process (nothing known):       {cold_us:.2} µs/event; per phase (µs): {}", phases(cold_phases).replace('"', ""));
    }
}

/// The settings the bench profile inherits (Cargo.toml's release profile, the wasm's).
const PROFILE: &str = "bench profile = release: opt-level z, per-package overrides, LTO";
