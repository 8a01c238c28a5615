//! The bad-input corpus (`tests/bad-input/*.json`): every file is one wrong input — a Function event, a
//! webhook delivery, a configuration, a signature header — with the error it must produce. Each must fail
//! cleanly (no panic, no engine, so no request), with the expected class, the field at fault, and a message
//! that names the field and says what was expected.

use base64::Engine as _;
use sanity_fly_sync::config::Env;
use sanity_fly_sync::error::SyncError;
use sanity_fly_sync::event::Headers;
use sanity_fly_sync::start::{self, StartError};
use sanity_fly_sync::signature;
use serde_json::Value;
use std::panic::{catch_unwind, AssertUnwindSafe};

const NOW: u64 = 1_800_000_000_000;

fn default_env() -> Env {
    [
        ("FLY_APP_NAME", "web"),
        ("FLY_API_TOKEN", "FlyV1 fm2_abc"),
        ("FLY_SYNC_SECRET", "0123456789abcdef-sync"),
        ("SANITY_WEBHOOK_SECRET", "webhook-secret"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Run one case; `Err` is the error it produced (with its stage), `Ok` means it was wrongly accepted.
fn run(case: &Value) -> Result<(), (Option<&'static str>, SyncError)> {
    let env: Env = case.get("env").map(|e| serde_json::from_value(e.clone()).unwrap()).unwrap_or_else(default_env);
    let staged = |e: StartError| match e {
        StartError::Config(e) => (Some("config"), e),
        StartError::Input(e) => (Some("input"), e),
    };
    match case["input"].as_str().unwrap() {
        "function_event" => {
            let envelope = serde_json::json!({"event": case["event"]});
            start::from_function(&env, &envelope, NOW, 1).map(drop).map_err(staged)
        }
        "webhook" => {
            let body: Vec<u8> = match case.get("bodyBase64").and_then(Value::as_str) {
                Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).unwrap(),
                None => case["body"].as_str().unwrap().as_bytes().to_vec(),
            };
            let mut headers: Headers = serde_json::from_value(case["headers"].clone()).unwrap();
            if let Some(sign) = case.get("sign").filter(|s| !s.is_null()) {
                let header = signature::sign(&body, sign["atMs"].as_u64().unwrap(), sign["secret"].as_str().unwrap());
                headers.insert("sanity-webhook-signature".into(), header);
            }
            let now = case["nowMs"].as_u64().unwrap_or(NOW);
            start::from_webhook(&env, &headers, &body, now, 1).map(drop).map_err(staged)
        }
        "signature_header" => {
            signature::parse_header("sanity-webhook-signature", case["header"].as_str().unwrap()).map(drop).map_err(|e| (None, e))
        }
        other => panic!("unknown input kind {other}"),
    }
}

#[test]
fn every_bad_input_fails_with_its_class_field_and_message() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bad-input");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    files.sort();
    assert!(files.len() >= 60, "the corpus holds at least 60 cases, found {}", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let case: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let expect = &case["expect"];
        let outcome = match catch_unwind(AssertUnwindSafe(|| run(&case))) {
            Err(_) => {
                failures.push(format!("{name}: panicked"));
                continue;
            }
            Ok(o) => o,
        };
        let Err((stage, error)) = outcome else {
            failures.push(format!("{name}: accepted"));
            continue;
        };
        let class = serde_json::to_value(error.class).unwrap();
        let field = expect["field"].as_str().unwrap();
        let fragment = expect["message"].as_str().unwrap();
        let checks = [
            (stage == expect["stage"].as_str(), format!("stage {stage:?}")),
            (class == expect["class"], format!("class {class}")),
            (error.field.as_deref() == Some(field), format!("field {:?}", error.field)),
            (error.message.starts_with(&format!("`{field}`")), "message does not start with the field".into()),
            (error.message.contains(fragment), format!("message lacks {fragment:?}")),
        ];
        for (ok, what) in checks {
            if !ok {
                failures.push(format!("{name}: {what}; message: {}", error.message));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), files.len(), failures.join("\n"));
}
