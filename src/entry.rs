//! The entry: the two ways in, one core. A Sanity Function invocation and a GROQ-powered webhook delivery both
//! become a configured `Engine` — or an error that says whether the configuration or the input is at fault.
//! Inputs arrive as text and bytes (the event's JSON, the delivery's raw body), never as a JavaScript object
//! tree, so their size and depth are bounded here, in Rust, before anything is built from them.

use crate::config::{self, Config, Env};
use crate::engine::Engine;
use crate::error::SyncError;
use crate::sync_tags::SyncTags;
use crate::event::{self, Headers};
use serde::Serialize;
use std::sync::Arc;

/// The largest environment accepted (its JSON text, as the shim hands it over): 256 KiB. The variables the core
/// reads (`FLY_*`, `SANITY_*`) are a few KiB even with a configuration document.
pub const MAX_ENV_BYTES: usize = 256 * 1024;

/// The environment from its JSON text (`{"NAME": "value", …}`, as the shim hands it over).
pub fn env_from_json(json: &[u8]) -> Result<Env, StartError> {
    let wrong = |got: &str| StartError::Config(SyncError::expected("env", "a JSON object of strings", got.to_string()));
    if json.len() > MAX_ENV_BYTES {
        return Err(wrong("more than 256 KiB"));
    }
    // Text first, then the one `&str` reader the other inputs use (a second reader type would compile serde_json twice).
    let text = std::str::from_utf8(json).map_err(|_| wrong("another value"))?;
    serde_json::from_str(text).map_err(|_| wrong("another value"))
}

/// Why no run could start. The webhook entry answers a configuration error with 500 (fix the deployment)
/// and an input error with 4xx (Sanity must not retry it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    Config(SyncError),
    Input(SyncError),
}

impl StartError {
    pub fn error(&self) -> &SyncError {
        match self {
            StartError::Config(e) | StartError::Input(e) => e,
        }
    }

    /// The status a webhook entry answers with: Sanity retries 5xx and 429, never other 4xx.
    pub fn webhook_status(&self) -> u16 {
        match self {
            StartError::Config(_) => 500,
            StartError::Input(e) if e.field.as_deref() == Some(event::WEBHOOK_SIGNATURE_HEADER) => 401,
            StartError::Input(_) => 400,
        }
    }

    pub fn rejection(&self) -> Rejection {
        let stage = match self {
            StartError::Config(_) => "config",
            StartError::Input(_) => "input",
        };
        Rejection { stage, error: self.error().clone(), http_status: self.webhook_status() }
    }
}

/// A `StartError` as it crosses to JavaScript: the error, its stage, and the webhook status for it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    #[cfg_attr(test, ts(type = "\"config\" | \"input\""))]
    pub stage: &'static str,
    #[serde(flatten)]
    pub error: SyncError,
    pub http_status: u16,
}

/// The refusal of a webhook body over `event::MAX_INPUT_BYTES`, for an entry that stops reading it there (`bytes`:
/// its declared length, or what was read before reading stopped). 413: Sanity does not retry it.
pub fn webhook_body_too_large(bytes: u64) -> Rejection {
    let max_kib = event::MAX_INPUT_BYTES / 1024;
    let error = SyncError::expected("body", format!("a webhook body of at most {max_kib} KiB"), format!("{bytes} bytes or more"));
    Rejection { stage: "input", error, http_status: 413 }
}

/// A Function invocation: `event_json` is the handler's `event` (`{data}`) as JSON text — a document's change, or
/// the continuation a run sent to finish a roll (`event::FunctionEvent`); `client_options_json` is its
/// `context.clientOptions` (or `null`), whose project, dataset and token the dependents query uses.
pub fn from_function(env: &Env, event_json: &[u8], client_options_json: &[u8], now_ms: u64, seed: u64) -> Result<Engine, StartError> {
    let config = Config::from_env(env).map_err(StartError::Config)?;
    let config = with_client_options(config, client_options_json)?;
    function_run(Arc::new(config), event_json, now_ms, seed)
}

/// `config` with the Function's `context.clientOptions` (JSON text, or `null`) for the dependents query.
pub fn with_client_options(mut config: Config, client_options_json: &[u8]) -> Result<Config, StartError> {
    let context = config::sanity_from_client_options(client_options_json).map_err(StartError::Input)?;
    config.sanity = config.sanity.with_context(context);
    Ok(config)
}

/// `from_function` with the configuration read already.
pub fn function_run(config: Arc<Config>, event_json: &[u8], now_ms: u64, seed: u64) -> Result<Engine, StartError> {
    match event::function_event_from_json(event_json, now_ms).map_err(StartError::Input)? {
        event::FunctionEvent::Change(change) => Ok(Engine::new(config, *change, now_ms, seed)),
        event::FunctionEvent::Resume => Ok(Engine::resume(config, now_ms, seed)),
        event::FunctionEvent::SyncTags(tags) => Ok(Engine::sync_tags(config, SyncTags::new(tags, now_ms, seed), now_ms, seed)),
    }
}

/// A webhook delivery: headers (any case) and the raw body bytes, verified with `SANITY_WEBHOOK_SECRET`.
pub fn from_webhook(env: &Env, headers: &Headers, body: &[u8], now_ms: u64, seed: u64) -> Result<Engine, StartError> {
    let config = Config::from_env(env).map_err(StartError::Config)?;
    webhook_run(Arc::new(config), headers, body, now_ms, seed)
}

/// `from_webhook` with the configuration read already.
pub fn webhook_run(config: Arc<Config>, headers: &Headers, body: &[u8], now_ms: u64, seed: u64) -> Result<Engine, StartError> {
    let secret = config.webhook_secret.as_ref().ok_or_else(|| {
        StartError::Config(SyncError::expected(
            "SANITY_WEBHOOK_SECRET",
            "the secret set on the GROQ-powered webhook (unsigned deliveries are never accepted)",
            "nothing",
        ))
    })?;
    let mut lowered = Headers::new();
    for (k, v) in headers {
        lowered.insert(k.to_ascii_lowercase(), v.clone());
    }
    let headers = lowered;
    let change = event::from_webhook(&headers, body, secret.expose(), now_ms, config.max_age_ms).map_err(StartError::Input)?;
    Ok(Engine::new(config, change, now_ms, seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{env, SECRET};
    use crate::signature;

    fn webhook_env() -> Env {
        env(&[("FLY_APP_NAME", "web"), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET), ("SANITY_WEBHOOK_SECRET", "whsec")])
    }

    #[test]
    fn webhook_statuses_follow_sanitys_retry_rules() {
        let body = br#"{"_id":"a","_type":"t","_rev":"r","_updatedAt":"2026-11-27T10:00:00Z"}"#;
        let now = 1_800_000_000_000;
        let signed = |secret: &str| -> Headers { [("Sanity-Webhook-Signature".to_string(), signature::sign(body, now, secret))].into() };
        let status = |env: &Env, headers: &Headers, body: &[u8]| from_webhook(env, headers, body, now, 1).err().map(|e| e.webhook_status());
        assert_eq!(status(&webhook_env(), &signed("whsec"), body), None, "header names are case-insensitive");
        assert_eq!(status(&webhook_env(), &signed("other"), body), Some(401));
        assert_eq!(status(&webhook_env(), &Headers::new(), body), Some(401));
        assert_eq!(status(&webhook_env(), &signed("whsec"), b"{}"), Some(401), "the signature covers the body");
        let junk = b"{";
        let h: Headers = [("sanity-webhook-signature".to_string(), signature::sign(junk, now, "whsec"))].into();
        assert_eq!(status(&webhook_env(), &h, junk), Some(400));
        let mut no_secret = webhook_env();
        no_secret.remove("SANITY_WEBHOOK_SECRET");
        let e = from_webhook(&no_secret, &signed("whsec"), body, now, 1).err().unwrap();
        assert_eq!((e.webhook_status(), e.rejection().stage), (500, "config"));
        // A padded secret is a configuration error (500), whichever secret the delivery was signed with.
        let mut padded = webhook_env();
        padded.insert("SANITY_WEBHOOK_SECRET".into(), "whsec\n".into());
        let e = from_webhook(&padded, &signed("whsec\n"), body, now, 1).err().unwrap();
        assert_eq!((e.webhook_status(), e.error().field.as_deref()), (500, Some("SANITY_WEBHOOK_SECRET")));
    }

    #[test]
    fn a_webhook_body_cut_off_at_the_bound_is_refused_413_naming_the_body() {
        let r = webhook_body_too_large(5_000_000);
        assert_eq!((r.stage, r.http_status, r.error.field.as_deref()), ("input", 413, Some("body")));
        assert!(r.error.message.contains("at most 4096 KiB") && r.error.message.contains("5000000 bytes or more"), "{}", r.error.message);
    }

    #[test]
    fn the_machines_api_url_as_fly_writes_it_lists_at_v1_once() {
        let mut env = webhook_env();
        env.insert("FLY_API_URL".into(), "https://api.machines.dev/v1/".into());
        let event = br#"{"data":{"_id":"a","_type":"t","_rev":"r","_updatedAt":"2026-11-27T10:00:00Z"}}"#;
        let mut engine = from_function(&env, event, b"null", 1_800_000_000_000, 1).unwrap();
        let crate::engine::Action::Send { requests } = engine.poll(1_800_000_000_000) else { panic!("a list request first") };
        assert_eq!(requests[0].url, "https://api.machines.dev/v1/apps/web/machines");
    }
}
