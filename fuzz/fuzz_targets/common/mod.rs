//! Shared by the fuzz targets: how raw fuzz bytes become headers and bodies, and the invariants that hold for
//! every input (errors name their field, never carry a secret; what the Function accepts, the receiver accepts).
#![allow(dead_code)]

use sanity_fly_sync::change::ContentChange;
use sanity_fly_sync::config::{Config, Env, Target};
use sanity_fly_sync::engine::Action;
use sanity_fly_sync::error::{ErrorClass, SyncError};
use sanity_fly_sync::event::{rfc3339_ms, Headers};
use sanity_fly_sync::protocol::{self, SIGNATURE_HEADER};
use sanity_fly_sync::receiver::{Decision, Receiver, ReceiverOptions};
use sanity_fly_sync::signature;
use std::sync::OnceLock;

pub const NOW: u64 = 1_800_000_000_000;
/// Distinctive values, so a leak into a message or a log line is unmistakable.
pub const SYNC_SECRET: &str = "fuzz-sync-secret-Qx7vK2pLm9";
pub const WEBHOOK_SECRET: &str = "fuzz-webhook-secret-Hb4sN8eR";
pub const API_TOKEN: &str = "fm2_fuzz-token-Wd8rT5nJc4";

/// The environment of the event and receiver targets: one valid target with routes for `article` and `page`.
pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        [
            ("FLY_APP_NAME", "web"),
            ("FLY_API_TOKEN", &format!("FlyV1 {API_TOKEN}") as &str),
            ("FLY_SYNC_SECRET", SYNC_SECRET),
            ("SANITY_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("FLY_SYNC_ROUTES", "article=/blog/{slug}|/{locale}/blog/{slug},page=/{slug}|/{market}/{slug}|/p/{id}"),
            ("FLY_SYNC_INCLUDE_DRAFTS", "true"),
            ("FLY_SYNC_INCLUDE_VERSIONS", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    })
}

pub fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| Config::from_env(env()).expect("the fuzz env is valid").targets.remove(0))
}

pub const SECRETS: [&str; 3] = [SYNC_SECRET, WEBHOOK_SECRET, API_TOKEN];

/// `name: value` lines up to the first empty line, then the raw body. Without an empty line it is all body.
/// Values lose HTTP's optional whitespace (space, tab) only, as an HTTP parser would.
pub fn split_request(data: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    let Some(end) = data.windows(2).position(|w| w == b"\n\n") else { return (Vec::new(), data) };
    let mut headers = Vec::new();
    for line in data[..end].split(|b| *b == b'\n') {
        let line = String::from_utf8_lossy(line);
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim_matches([' ', '\t']).to_string(), value.trim_matches([' ', '\t']).to_string()));
        }
    }
    (headers, &data[end + 2..])
}

pub fn lowercase(headers: &[(String, String)]) -> Headers {
    headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect()
}

/// A bad-input error: class `bad_input`, a field named, and the message starting with that field.
pub fn assert_input_error(e: &SyncError) {
    assert_eq!(e.class, ErrorClass::BadInput, "input errors are bad_input: {e:?}");
    let field = e.field.as_deref().unwrap_or_else(|| panic!("an input error names its field: {e:?}"));
    assert!(!field.is_empty(), "empty field name: {e:?}");
    assert!(e.message.starts_with(&format!("`{field}`")), "the message starts with the field: {e:?}");
}

/// `text` (a message, a log line, a reply) holds none of `secrets`.
pub fn assert_no_secret(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "secret {s:?} leaked into {text:?}");
    }
}

/// What holds for every accepted change.
pub fn check_change(c: &ContentChange) {
    assert!(!c.id.is_empty() && c.id.len() <= 256, "id: {:?}", c.id);
    assert!(!c.id.chars().any(|ch| ch.is_whitespace() || ch.is_control()), "id: {:?}", c.id);
    assert!(!c.doc_type.trim().is_empty(), "type: {:?}", c.doc_type);
    assert!(rfc3339_ms(&c.updated_at).is_some(), "updatedAt parses: {:?}", c.updated_at);
    let document: serde_json::Map<String, serde_json::Value> = serde_json::from_str(c.data.get()).expect("the document is a JSON object");
    assert!(!document.contains_key("op") && !document.contains_key("previousSlug"), "control fields removed");
    let at = rfc3339_ms(&c.updated_at).unwrap_or(u64::MAX);
    assert!(at <= NOW + sanity_fly_sync::limits::MAX_FUTURE_SKEW_MS, "updatedAt too far ahead: {:?}", c.updated_at);
    // Both entries derive the key from what was signed or projected, never from a header.
    assert_eq!(c.idempotency_key, ContentChange::derive_idempotency_key(c.op, &c.id, &c.rev));
    for route in protocol::routes(c, target()).invalidate {
        assert!(sanity_fly_sync::routes::is_same_origin_path(&route), "rendered route {route:?}");
    }
}

/// What the Function sends for an accepted change, signed, must be accepted by a receiver: applied (never
/// rejected as malformed). A change the Function accepts and every receiver refuses would fail at every Machine.
pub fn receiver_accepts(c: &ContentChange) {
    static RECEIVER: OnceLock<Receiver> = OnceLock::new();
    let receiver = RECEIVER.get_or_init(|| {
        let options = ReceiverOptions { max_age_ms: 300_000, accept_drafts: true, remember_keys: 16, ..ReceiverOptions::new(SYNC_SECRET, "m-fuzz") };
        Receiver::new(options).expect("receiver options")
    });
    let body = protocol::payload_body(c, target(), None);
    let headers: Headers = [(SIGNATURE_HEADER.to_string(), signature::sign(body.as_bytes(), NOW, SYNC_SECRET))].into();
    match receiver.check(&headers, body.as_bytes(), NOW) {
        Decision::Apply(_) => {}
        other => panic!("the receiver refuses what the Function sends: {other:?}\nbody: {body}"),
    }
}

/// Run an engine's first step: nothing it logs may hold a secret.
pub fn first_step(mut engine: sanity_fly_sync::engine::Engine) {
    match engine.poll(NOW) {
        Action::Send { requests } => {
            for r in requests {
                assert_no_secret(&serde_json::to_string(&r.log).expect("log serialises"), &SECRETS);
            }
        }
        Action::Done { report } => assert_no_secret(&serde_json::to_string(&report).expect("report serialises"), &SECRETS),
        Action::Wait { .. } => {}
    }
}
