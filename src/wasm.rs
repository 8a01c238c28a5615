//! The Function's wasm boundary: the engine exposed to JavaScript, nothing else (the receiver's module is another
//! build: src/wasm_receiver.rs). Everything crosses as JSON text or raw bytes — the Function event, a webhook's
//! headers and body, the environment, the engine's actions and answers — parsed in Rust with bounded depth and size,
//! so no input can exhaust the module's stack, and no JavaScript binding crate is needed here (`wasm.ts` turns the
//! text into values). Their TypeScript types are generated from the Rust types into `pkg/types/`. Errors cross as
//! the JSON text of a `Rejection` (`{stage, class, field?, message, httpStatus}`).

use crate::config::Env;
use crate::engine::Engine;
use crate::entry::{self, StartError};
use crate::error::SyncError;
use crate::event;
use crate::http::Response;
use serde::Serialize;
use wasm_bindgen::prelude::*;

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

fn start_error(e: StartError) -> String {
    json(&e.rejection())
}

/// The environment as the shim sends it: a JSON object of strings.
fn env_from(text: &str) -> Result<Env, String> {
    serde_json::from_str(text).map_err(|_| start_error(StartError::Config(SyncError::expected("env", "a JSON object of strings", "another value"))))
}

/// One sync run. Create it from a Function event or a webhook delivery, then loop: `poll` → send / wait →
/// `handleResponse` / `handleFailure` → `poll` … until `poll` answers `{type: "done", report}`.
#[wasm_bindgen]
pub struct SyncEngine {
    inner: Engine,
}

#[wasm_bindgen]
impl SyncEngine {
    /// `env_json`: the Function's environment (`{"NAME": "value", …}`); `event_json`: the handler's `event`
    /// (`{data}`) as JSON text (`JSON.stringify(event)`). Throws a `Rejection` (JSON).
    #[wasm_bindgen(js_name = fromFunctionEvent)]
    pub fn from_function_event(env_json: &str, event_json: &str, client_options_json: &str, now_ms: f64, seed: f64) -> Result<SyncEngine, String> {
        let env = env_from(env_json)?;
        entry::from_function(&env, event_json.as_bytes(), client_options_json.as_bytes(), now_ms as u64, seed as u64).map(|inner| SyncEngine { inner }).map_err(start_error)
    }

    /// `headers_json`: the delivery's headers as JSON text (`{"name": "value", …}`); `body`: its raw bytes, unparsed.
    #[wasm_bindgen(js_name = fromWebhook)]
    pub fn from_webhook(env_json: &str, headers_json: &str, body: &[u8], now_ms: f64, seed: f64) -> Result<SyncEngine, String> {
        let env = env_from(env_json)?;
        let headers = event::headers_from_json(headers_json.as_bytes()).map_err(|e| start_error(StartError::Input(e)))?;
        entry::from_webhook(&env, &headers, body, now_ms as u64, seed as u64).map(|inner| SyncEngine { inner }).map_err(start_error)
    }

    /// The next action (JSON): `{type: "send", requests}`, `{type: "wait", untilMs}` or `{type: "done", report}`.
    pub fn poll(&mut self, now_ms: f64) -> String {
        json(&self.inner.poll(now_ms as u64))
    }

    /// An HTTP answer to request `id`; `headers_json`: `[[name, value], …]`.
    #[wasm_bindgen(js_name = handleResponse)]
    pub fn handle_response(&mut self, id: u32, status: u16, headers_json: &str, body: String, now_ms: f64) -> Result<(), String> {
        let headers: Vec<(String, String)> =
            serde_json::from_str(headers_json).map_err(|_| json(&SyncError::expected("headers", "a JSON list of [name, value] pairs", "another value")))?;
        self.inner.handle_response(id, Response::Http { status, headers, body }, now_ms as u64);
        Ok(())
    }

    /// The status a webhook entry answers with, once `poll` has said done.
    #[wasm_bindgen(js_name = webhookStatus)]
    pub fn webhook_status(&self) -> u16 {
        self.inner.report().map_or(500, |r| r.webhook_status())
    }

    /// No answer to request `id`: `timedOut` when the shim aborted it at its timeout, else a network error.
    #[wasm_bindgen(js_name = handleFailure)]
    pub fn handle_failure(&mut self, id: u32, timed_out: bool, message: String, now_ms: f64) {
        let response = if timed_out { Response::Timeout } else { Response::Network { message } };
        self.inner.handle_response(id, response, now_ms as u64);
    }
}

/// The crate version, to check the loaded wasm matches the package.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
