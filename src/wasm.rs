//! The wasm boundary: the engine exposed to JavaScript, nothing else. Untrusted inputs cross as JSON text or raw
//! bytes (the Function event, a webhook's headers and body), parsed in Rust with bounded depth and size, so no
//! input can exhaust the module's stack. Other values cross as plain JS objects (serde-wasm-bindgen,
//! JSON-compatible); their TypeScript types are generated from the Rust types into `pkg/types/`. Errors cross
//! as `Rejection` objects (`{stage, class, field?, message, httpStatus}`).

use crate::config::Env;
use crate::engine::Engine;
use crate::event::{self, Headers};
use crate::http::Response;
use crate::catch_up::{CatchUp, CatchUpOptions};
use crate::receiver::{Receiver, ReceiverOptions};
use crate::entry::{self, StartError};
use serde::Serialize;
use wasm_bindgen::prelude::*;

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(|e| JsValue::from_str(&e.to_string()))
}

fn from_js<T: serde::de::DeserializeOwned>(value: JsValue, what: &str) -> Result<T, JsValue> {
    serde_wasm_bindgen::from_value(value).map_err(|e| JsValue::from_str(&format!("{what}: {e}")))
}

fn start_error(e: StartError) -> JsValue {
    to_js(&e.rejection()).unwrap_or_else(|e| e)
}

/// One sync run. Create it from a Function event or a webhook delivery, then loop: `poll` → send / wait →
/// `handleResponse` / `handleFailure` → `poll` … until `poll` answers `{type: "done", report}`.
#[wasm_bindgen]
pub struct SyncEngine {
    inner: Engine,
}

#[wasm_bindgen]
impl SyncEngine {
    /// `env`: the Function's environment (an object of strings); `event_json`: the handler's `event` (`{data}`)
    /// as JSON text (`JSON.stringify(event)`).
    #[wasm_bindgen(js_name = fromFunctionEvent)]
    pub fn from_function_event(env: JsValue, event_json: &str, now_ms: f64, seed: f64) -> Result<SyncEngine, JsValue> {
        let env: Env = from_js(env, "env")?;
        entry::from_function(&env, event_json.as_bytes(), now_ms as u64, seed as u64).map(|inner| SyncEngine { inner }).map_err(start_error)
    }

    /// `headers_json`: the delivery's headers as JSON text (`{"name": "value", …}`); `body`: its raw bytes, unparsed.
    #[wasm_bindgen(js_name = fromWebhook)]
    pub fn from_webhook(env: JsValue, headers_json: &str, body: &[u8], now_ms: f64, seed: f64) -> Result<SyncEngine, JsValue> {
        let env: Env = from_js(env, "env")?;
        let headers = event::headers_from_json(headers_json.as_bytes()).map_err(|e| start_error(StartError::Input(e)))?;
        entry::from_webhook(&env, &headers, body, now_ms as u64, seed as u64).map(|inner| SyncEngine { inner }).map_err(start_error)
    }

    /// The next action: `{type: "send", requests}`, `{type: "wait", untilMs}` or `{type: "done", report}`.
    pub fn poll(&mut self, now_ms: f64) -> Result<JsValue, JsValue> {
        to_js(&self.inner.poll(now_ms as u64))
    }

    /// An HTTP answer to request `id`; `headers` as `[name, value]` pairs.
    #[wasm_bindgen(js_name = handleResponse)]
    pub fn handle_response(&mut self, id: u32, status: u16, headers: JsValue, body: String, now_ms: f64) -> Result<(), JsValue> {
        let headers: Vec<(String, String)> = from_js(headers, "headers")?;
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

/// The receiving side, for the app on each Fly Machine: `begin` a request (→ `{type: "respond", httpStatus,
/// body}` or `{type: "apply", ticket, change}`), run the app's hooks on `change`, then `finish(ticket, …)`.
#[wasm_bindgen]
pub struct SyncReceiver {
    inner: Receiver,
    catch_up: Option<CatchUp>,
}

fn error_js(e: crate::error::SyncError) -> JsValue {
    to_js(&e).unwrap_or_else(|e| e)
}

#[wasm_bindgen]
impl SyncReceiver {
    /// `options`: `{secret, machineId, maxAgeSeconds?, acceptDrafts?, rememberKeys?}`; throws a `SyncError`.
    #[wasm_bindgen(constructor)]
    pub fn new(options: JsValue) -> Result<SyncReceiver, JsValue> {
        let options: serde_json::Value = from_js(options, "options")?;
        let options = ReceiverOptions::from_json(&options).map_err(error_js)?;
        Receiver::new(options).map(|inner| SyncReceiver { inner, catch_up: None }).map_err(error_js)
    }

    /// Turn on catch-up: `{types, lagSeconds?, pageSize?, maxPages?, projection?}`; throws a `SyncError`.
    #[wasm_bindgen(js_name = enableCatchUp)]
    pub fn enable_catch_up(&mut self, options: JsValue) -> Result<(), JsValue> {
        let options: serde_json::Value = from_js(options, "catchUp")?;
        self.catch_up = Some(CatchUp::new(CatchUpOptions::from_json(&options).map_err(error_js)?));
        Ok(())
    }

    fn catch_up(&mut self) -> Result<&mut CatchUp, JsValue> {
        self.catch_up.as_mut().ok_or_else(|| JsValue::from_str("catch-up is not enabled"))
    }

    /// Begin a catch-up run: the first `{query, params}` to run.
    #[wasm_bindgen(js_name = catchUpStart)]
    pub fn catch_up_start(&mut self) -> Result<JsValue, JsValue> {
        to_js(&self.catch_up()?.start())
    }

    /// A page of documents (the query's result) → `{steps, next, skipped}`.
    #[wasm_bindgen(js_name = catchUpPage)]
    pub fn catch_up_page(&mut self, result: JsValue) -> Result<JsValue, JsValue> {
        let result: serde_json::Value = from_js(result, "result")?;
        let catch_up = self.catch_up.as_mut().ok_or_else(|| JsValue::from_str("catch-up is not enabled"))?;
        to_js(&catch_up.page(&mut self.inner, &result).map_err(error_js)?)
    }

    /// The query for every id Sanity still has.
    #[wasm_bindgen(js_name = catchUpIdsQuery)]
    pub fn catch_up_ids_query(&mut self) -> Result<JsValue, JsValue> {
        to_js(&self.catch_up()?.ids_query())
    }

    /// The ids (the ids query's result) → `{steps, refused}` tombstones for what Sanity no longer has.
    #[wasm_bindgen(js_name = catchUpDeletions)]
    pub fn catch_up_deletions(&mut self, result: JsValue) -> Result<JsValue, JsValue> {
        let result: serde_json::Value = from_js(result, "result")?;
        let catch_up = self.catch_up.as_ref().ok_or_else(|| JsValue::from_str("catch-up is not enabled"))?;
        to_js(&catch_up.deletions(&mut self.inner, &result).map_err(error_js)?)
    }

    /// End the run; the mark advances only when `all_applied`. Returns the mark.
    #[wasm_bindgen(js_name = catchUpFinish)]
    pub fn catch_up_finish(&mut self, all_applied: bool) -> Result<Option<String>, JsValue> {
        let catch_up = self.catch_up()?;
        catch_up.finish(all_applied);
        Ok(catch_up.mark())
    }

    /// A pushed request: headers as an object, the raw body bytes.
    pub fn begin(&mut self, headers: JsValue, body: &[u8], now_ms: f64) -> Result<JsValue, JsValue> {
        let headers: Headers = from_js(headers, "headers")?;
        to_js(&self.inner.begin(&headers, body, now_ms as u64))
    }

    /// A document pulled from Sanity (catch-up), shaped as a sync payload.
    #[wasm_bindgen(js_name = beginPulled)]
    pub fn begin_pulled(&mut self, payload: JsValue) -> Result<JsValue, JsValue> {
        let payload: serde_json::Value = from_js(payload, "payload")?;
        to_js(&self.inner.begin_pulled(payload))
    }

    /// The hooks succeeded (`error` undefined) or failed (`error` = their message).
    pub fn finish(&mut self, ticket: u32, restart_required: bool, error: Option<String>) -> Result<JsValue, JsValue> {
        let outcome = match error {
            None => Ok(restart_required),
            Some(message) => Err(message),
        };
        to_js(&self.inner.finish(ticket, outcome))
    }
}
