//! The bad-input corpus (`tests/bad-input/*.json`): every file is one wrong input — a Function event, a
//! webhook delivery, a configuration, a signature header, a request to the receiver, a page of the receiver's
//! reconciliation (catch-up) query — with the error it must produce. Each must fail cleanly (no panic; no engine,
//! so no request; nothing held by the receiver), with the expected class, the field at fault, a message that names the field and says what was expected, and for the
//! receiver the HTTP status.

use base64::Engine as _;
use sanity_fly_sync::catch_up::{CatchUp, CatchUpOptions};
use sanity_fly_sync::config::Env;
use sanity_fly_sync::error::{ErrorClass, SyncError};
use sanity_fly_sync::event::Headers;
use sanity_fly_sync::receiver::{Receiver, ReceiverOptions, Step};
use sanity_fly_sync::entry::{self, StartError};
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

fn body_of(case: &Value) -> Vec<u8> {
    match case.get("bodyBase64").and_then(Value::as_str) {
        Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).unwrap(),
        None => case["body"].as_str().unwrap().as_bytes().to_vec(),
    }
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
            // As the shim hands it over: the handler's `event` as JSON text (`eventText`: exactly these bytes).
            let text = match case.get("eventText").and_then(Value::as_str) {
                Some(text) => text.to_string(),
                None => case["event"].to_string(),
            };
            let now = case["nowMs"].as_u64().unwrap_or(NOW);
            entry::from_function(&env, text.as_bytes(), b"null", now, 1).map(drop).map_err(staged)
        }
        "webhook" => {
            let body = body_of(case);
            let mut headers: Headers = serde_json::from_value(case["headers"].clone()).unwrap();
            if let Some(sign) = case.get("sign").filter(|s| !s.is_null()) {
                let header = signature::sign(&body, sign["atMs"].as_u64().unwrap(), sign["secret"].as_str().unwrap());
                headers.insert("sanity-webhook-signature".into(), header);
            }
            let now = case["nowMs"].as_u64().unwrap_or(NOW);
            entry::from_webhook(&env, &headers, &body, now, 1).map(drop).map_err(staged)
        }
        "receiver_request" => {
            let body = body_of(case);
            let mut headers = Headers::new();
            if let Some(sign) = case.get("sign").filter(|s| !s.is_null()) {
                let header = signature::sign(&body, sign["atMs"].as_u64().unwrap(), sign["secret"].as_str().unwrap());
                headers.insert("sanity-fly-sync-signature".into(), header);
            }
            let options = ReceiverOptions { max_age_ms: 300_000, remember_keys: 100, ..ReceiverOptions::new("0123456789abcdef-receiver", "machine-1") };
            let mut receiver = Receiver::new(options).unwrap();
            let step = receiver.begin(&headers, &body, case["nowMs"].as_u64().unwrap());
            // No side effect before validation: nothing to apply, nothing held.
            assert_eq!(receiver.live_ids().count(), 0);
            if let Step::Respond(_) = step {
                assert!(receiver.is_untouched(), "a refused request records nothing (pending, keys, marks)");
            }
            match step {
                Step::Apply { .. } | Step::Refresh { .. } | Step::Tags { .. } => Ok(()),
                Step::Respond(reply) => {
                    let answer: Value = serde_json::from_str(&reply.body).unwrap();
                    assert_eq!(Some(reply.http_status), case["expect"]["status"].as_u64().map(|s| s as u16), "status of {}", answer);
                    let class = match answer["class"].as_str() {
                        Some("bad_input") => ErrorClass::BadInput,
                        Some("retryable") => ErrorClass::Retryable,
                        _ => ErrorClass::Fatal,
                    };
                    let field = answer["field"].as_str().map(String::from);
                    Err((None, SyncError { class, field, message: answer["error"].as_str().unwrap().to_string() }))
                }
            }
        }
        "reconciliation_page" => {
            // A page of catch-up's query answer, as the receiver's I/O layer hands it over: the result's text
            // (`pageText`: exactly these characters, else `page` as JSON), or the whole HTTP answer when `enveloped`.
            let text = match case.get("pageText").and_then(Value::as_str) {
                Some(text) => text.to_string(),
                None => case["page"].to_string(),
            };
            let enveloped = case.get("enveloped").and_then(Value::as_bool).unwrap_or(false);
            let options = CatchUpOptions::from_json(&serde_json::json!({"types": ["page"]})).unwrap();
            let receiver = Receiver::new(ReceiverOptions::new("0123456789abcdef-receiver", "machine-1")).unwrap();
            let mut catch_up = CatchUp::new(options);
            catch_up.start();
            let page = catch_up.page(&receiver, &text, enveloped, case["nowMs"].as_u64().unwrap_or(NOW)).map_err(|e| (None, e))?;
            // Read whole before anything is applied: the receiver holds nothing yet.
            assert!(receiver.is_untouched());
            // A document the page reader refuses is skipped with why (`result[i]: <error naming its field>`); the
            // rest of the page applies. Each case holds one bad document: that is its error.
            let Some(skip) = page.skipped.first() else { return Ok(()) };
            assert_eq!(page.skipped.len(), 1, "one bad document per case: {:?}", page.skipped);
            let (at, message) = skip.split_once(": ").unwrap();
            let field = message.strip_prefix('`').and_then(|m| m.split_once('`')).map(|(f, _)| f.to_string());
            assert!(field.as_deref().is_some_and(|f| f.starts_with(at)), "the skip names its document: {skip}");
            Err((None, SyncError { class: ErrorClass::BadInput, field, message: message.to_string() }))
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
    assert!(files.len() >= 80, "the corpus holds at least 80 cases, found {}", files.len());
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
