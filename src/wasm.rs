//! The Function's wasm boundary: the engine exposed to JavaScript, nothing else (the receiver's module is another
//! build: src/wasm_receiver.rs). What comes in crosses as bytes — the environment's and the event's JSON text,
//! answers' headers (JSON) and bodies — and is parsed in Rust with bounded depth and size, so no input can exhaust
//! the module's stack, and no text is re-encoded character by character on the way. What goes out crosses as
//! JSON text (`wire::WireAction`: a fan-out is one batch, its body once, as bytes through `body`). No JavaScript
//! binding crate is needed here (`wasm.ts` turns the text into values); the TypeScript types are generated from
//! the Rust types into `pkg/types/`. Errors cross as the JSON text of a `Rejection`.
//!
//! The process's memory between runs (`known::ProcessMemory`: the configuration read, the Machines last listed)
//! is held here, one per instance: holding it is no policy; how a run uses it is the engine's. When a call traps,
//! `wasm.ts` replaces the instance with a fresh one (`__wbg_reset_state`): this memory is then simply forgotten,
//! and the next run reads its configuration and lists the Machines as a new process's first run would.

use crate::engine::Engine;
use crate::entry::{self, StartError};
use crate::event;
use crate::http::Response;
use crate::known::ProcessMemory;
use crate::wire;
use serde::Serialize;
use std::cell::RefCell;
use std::sync::Arc;
use wasm_bindgen::prelude::*;

thread_local! {
    static MEMORY: RefCell<ProcessMemory> = RefCell::new(ProcessMemory::default());
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| unreachable!("plain data serialises"))
}

fn start_error(e: StartError) -> String {
    json(&e.rejection())
}

/// One sync run. Create it from a Function event or a webhook delivery, then loop: `poll` → send / wait →
/// `handleResponse` / `handleFailure` → `poll` … until `poll` answers `{type: "done", report, webhookStatus}`.
#[wasm_bindgen]
pub struct SyncEngine {
    inner: Engine,
    /// The bodies the last `poll`'s batches name.
    bodies: Vec<Arc<str>>,
}

impl SyncEngine {
    fn new(inner: Engine) -> SyncEngine {
        SyncEngine { inner, bodies: Vec::new() }
    }
}

#[wasm_bindgen]
impl SyncEngine {
    /// `env_json`: the `FLY_*` / `SANITY_*` variables (`{"NAME": "value", …}`); `event_json`: the handler's `event`
    /// (`{data}`); `client_options_json`: its `context.clientOptions` (or `null`) — each as UTF-8 JSON bytes.
    /// Throws a `Rejection` (JSON).
    #[wasm_bindgen(js_name = fromFunctionEvent)]
    pub fn from_function_event(env_json: &[u8], event_json: &[u8], client_options_json: &[u8], now_ms: f64, seed: f64) -> Result<SyncEngine, String> {
        MEMORY
            .with(|m| m.borrow_mut().from_function(env_json, event_json, client_options_json, now_ms as u64, seed as u64))
            .map(SyncEngine::new)
            .map_err(start_error)
    }

    /// `headers_json`: the delivery's headers (`{"name": "value", …}`); `body`: its raw bytes, unparsed.
    #[wasm_bindgen(js_name = fromWebhook)]
    pub fn from_webhook(env_json: &[u8], headers_json: &[u8], body: &[u8], now_ms: f64, seed: f64) -> Result<SyncEngine, String> {
        let headers = event::headers_from_json(headers_json).map_err(|e| start_error(StartError::Input(e)))?;
        MEMORY.with(|m| m.borrow_mut().from_webhook(env_json, &headers, body, now_ms as u64, seed as u64)).map(SyncEngine::new).map_err(start_error)
    }

    /// The next action (JSON, `WireAction`): `{type: "send", batches}`, `{type: "wait", untilMs}` or
    /// `{type: "done", report, webhookStatus}`.
    pub fn poll(&mut self, now_ms: f64) -> String {
        let sent = wire::sent(self.inner.poll(now_ms as u64));
        self.bodies = sent.bodies;
        json(&sent.action)
    }

    /// Body `index` of the last `poll`'s batches, as bytes (empty for an index it did not name).
    pub fn body(&self, index: u32) -> Vec<u8> {
        self.bodies.get(index as usize).map(|b| b.as_bytes().to_vec()).unwrap_or_default()
    }

    /// An HTTP answer to request `id`: `headers` are the ones the core reads (`headersRead`), one `name:value`
    /// per line; `body` the raw bytes.
    #[wasm_bindgen(js_name = handleResponse)]
    pub fn handle_response(&mut self, id: u32, status: u16, headers: &str, body: Vec<u8>, now_ms: f64) {
        let headers = headers.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
        let body = String::from_utf8(body).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        self.inner.handle_response(id, Response::Http { status, headers, body }, now_ms as u64);
        MEMORY.with(|m| m.borrow_mut().learn(&mut self.inner));
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

/// Forget what this instance remembers between runs: the next run starts as a new process's first (for
/// benchmarks and tests that compare the two).
#[wasm_bindgen(js_name = forgetProcess)]
pub fn forget_process() {
    MEMORY.with(|m| m.borrow_mut().forget());
}

/// The largest webhook body the core reads (bytes, `event::MAX_INPUT_BYTES`): the webhook entry stops reading a
/// delivery's body past it.
#[wasm_bindgen(js_name = maxWebhookBodyBytes)]
pub fn max_webhook_body_bytes() -> f64 {
    event::MAX_INPUT_BYTES as f64
}

/// The refusal (a `Rejection`, JSON) of a webhook body over `maxWebhookBodyBytes`: `bytes` is its declared
/// length, or what was read before reading stopped. 413: Sanity does not retry it.
#[wasm_bindgen(js_name = webhookBodyTooLarge)]
pub fn webhook_body_too_large(bytes: f64) -> String {
    json(&entry::webhook_body_too_large(bytes as u64))
}

/// The answer headers the core reads (comma-separated names): the shim passes these alone to `handleResponse`.
#[wasm_bindgen(js_name = headersRead)]
pub fn headers_read() -> String {
    crate::http::HEADERS_READ.join(",")
}

/// The crate version, to check the loaded wasm matches the package.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
