//! The wasm boundary: the engine and the receiver exposed to JavaScript, nothing else. Untrusted inputs cross as
//! JSON text or raw bytes (the Function event, a webhook's headers and body, the receiver's pushes, pages and
//! options), parsed in Rust with bounded depth and size, so no input can exhaust the module's stack. The engine's
//! own outputs cross as plain JS objects (serde-wasm-bindgen, JSON-compatible); their TypeScript types are
//! generated from the Rust types into `pkg/types/`. Errors cross as `Rejection` objects (`{stage, class, field?,
//! message, httpStatus}`).

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
    pub fn from_function_event(env: JsValue, event_json: &str, client_options_json: &str, now_ms: f64, seed: f64) -> Result<SyncEngine, JsValue> {
        let env: Env = from_js(env, "env")?;
        entry::from_function(&env, event_json.as_bytes(), client_options_json.as_bytes(), now_ms as u64, seed as u64).map(|inner| SyncEngine { inner }).map_err(start_error)
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

/// The receiving side, for the app on each Fly Machine. Values cross as JSON text, never as JS object trees:
/// parsing on this side is bounded in depth (a clear error, never a trap), documents keep their exact text, and
/// the handler (receiver/index.ts) parses what comes back with a parser that keeps large integers exact and
/// `__proto__` an ordinary key. Refusals cross as JSON text too: a thrown string is a `SyncError` or a `Reply`.
///
/// A push: `intake(headers)` → `push(chunk)`… → `finish()` (refusals before the body is held whole), then
/// `verify(headers, body, now)` → a `VerifiedPush` (or a thrown `Reply`), then, under the lock of its document
/// id, `beginVerified(push)` → a `Step`: `{type: "respond", httpStatus, body}` or `{type: "apply", ticket,
/// change}`; run the app's hooks on `change`, then `finish(ticket, …)`.
#[wasm_bindgen]
pub struct SyncReceiver {
    inner: Receiver,
    catch_up: Option<CatchUp>,
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

fn error_json(e: &crate::error::SyncError) -> String {
    json(e)
}

/// Headers as the handler sends them: a JSON object of strings (built by the handler, so never deep).
fn headers_from(text: &str) -> Result<Headers, String> {
    serde_json::from_str(text).map_err(|_| error_json(&crate::error::SyncError::expected("headers", "a JSON object of strings", "another value")))
}

fn not_enabled() -> String {
    error_json(&crate::error::SyncError::fatal("catch-up is not enabled"))
}

/// A push body being read: counted against the cap and MACed chunk by chunk.
#[wasm_bindgen]
pub struct BodyIntake {
    inner: Option<crate::receiver::BodyIntake>,
}

#[wasm_bindgen]
impl BodyIntake {
    /// The next chunk of the body; a `Reply` (JSON) when the body is over the cap: stop reading and answer it.
    pub fn push(&mut self, chunk: &[u8]) -> Option<String> {
        let intake = self.inner.as_mut()?;
        intake.push(chunk).err().map(|reply| json(&reply))
    }

    /// The body is complete; a `Reply` (JSON) when its signature does not match.
    pub fn finish(&mut self) -> Option<String> {
        self.inner.take()?.finish().err().map(|reply| json(&reply))
    }
}

/// A push whose request is verified and payload accepted, waiting for its turn (`beginVerified`).
#[wasm_bindgen]
pub struct VerifiedPush {
    inner: crate::receiver::Verified,
}

#[wasm_bindgen]
impl VerifiedPush {
    /// What the handler holds while it is applied: the document id (one change per document at a time), or a
    /// sync-tag push's key.
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.inner.id().to_string()
    }
}

#[wasm_bindgen]
impl SyncReceiver {
    /// `options`: the JSON of `{secret, machineId, maxAgeSeconds?, acceptDrafts?, rememberKeys?, maxBodyBytes?,
    /// hookTimeoutMs?, syncTags?}`; throws a `SyncError` (JSON).
    #[wasm_bindgen(constructor)]
    pub fn new(options: &str) -> Result<SyncReceiver, String> {
        let options = crate::limits::parse_json("options", options.as_bytes(), "the receiver options (JSON object)").map_err(|e| error_json(&e))?;
        let options = ReceiverOptions::from_json(&options).map_err(|e| error_json(&e))?;
        Receiver::new(options).map(|inner| SyncReceiver { inner, catch_up: None }).map_err(|e| error_json(&e))
    }

    /// `{maxBodyBytes, hookTimeoutMs}` (JSON): what the handler enforces while reading and around each hook.
    pub fn limits(&self) -> String {
        json(&self.inner.limits())
    }

    /// Turn on catch-up: the JSON of `{types, lagSeconds?, pageSize?, maxPages?, projection?, queryTimeoutMs?}`;
    /// throws a `SyncError` (JSON).
    #[wasm_bindgen(js_name = enableCatchUp)]
    pub fn enable_catch_up(&mut self, options: &str) -> Result<(), String> {
        let options = crate::limits::parse_json("catchUp", options.as_bytes(), "the catch-up options (JSON object)").map_err(|e| error_json(&e))?;
        self.catch_up = Some(CatchUp::new(CatchUpOptions::from_json(&options).map_err(|e| error_json(&e))?));
        Ok(())
    }

    /// Begin a catch-up run: the first `Query` (JSON) to run.
    #[wasm_bindgen(js_name = catchUpStart)]
    pub fn catch_up_start(&mut self) -> Result<String, String> {
        Ok(json(&self.catch_up.as_mut().ok_or_else(not_enabled)?.start()))
    }

    /// A page of documents: `text` is the query's result as JSON (or the whole HTTP answer when `enveloped`) →
    /// `Page` (JSON: `{ids, next, skipped}`), its documents staged; throws a `SyncError` (JSON) for a page that
    /// cannot be read (not a list, nested too deep).
    #[wasm_bindgen(js_name = catchUpPage)]
    pub fn catch_up_page(&mut self, text: &str, enveloped: bool, now_ms: f64) -> Result<String, String> {
        let catch_up = self.catch_up.as_mut().ok_or_else(not_enabled)?;
        catch_up.page(&self.inner, text, enveloped, now_ms as u64).map(|p| json(&p)).map_err(|e| error_json(&e))
    }

    /// Begin what the last page or deletions staged (call while holding their ids) → `Step[]` (JSON).
    #[wasm_bindgen(js_name = catchUpBegin)]
    pub fn catch_up_begin(&mut self) -> Result<String, String> {
        let catch_up = self.catch_up.as_mut().ok_or_else(not_enabled)?;
        Ok(json(&catch_up.begin_staged(&mut self.inner)))
    }

    /// The query for every id Sanity still has (`Query`, JSON), asked now.
    #[wasm_bindgen(js_name = catchUpIdsQuery)]
    pub fn catch_up_ids_query(&mut self, now_ms: f64) -> Result<String, String> {
        Ok(json(&self.catch_up.as_mut().ok_or_else(not_enabled)?.ids_query(now_ms as u64)))
    }

    /// The ids (the ids query's result, as `catchUpPage` takes it) → `Deletions` (JSON: `{ids, refused}`), the
    /// tombstones staged.
    #[wasm_bindgen(js_name = catchUpDeletions)]
    pub fn catch_up_deletions(&mut self, text: &str, enveloped: bool, now_ms: f64) -> Result<String, String> {
        let catch_up = self.catch_up.as_mut().ok_or_else(not_enabled)?;
        catch_up.deletions(&self.inner, text, enveloped, now_ms as u64).map(|d| json(&d)).map_err(|e| error_json(&e))
    }

    /// End the run; the mark advances only when `all_applied`. Returns the mark.
    #[wasm_bindgen(js_name = catchUpFinish)]
    pub fn catch_up_finish(&mut self, all_applied: bool) -> Result<Option<String>, String> {
        let catch_up = self.catch_up.as_mut().ok_or_else(not_enabled)?;
        catch_up.finish(all_applied);
        Ok(catch_up.mark())
    }

    /// Step 1 of a push: the headers (JSON object). Throws a `Reply` (JSON) for a request refused before its body
    /// is read (no signature: 401; a declared length over the cap: 413).
    pub fn intake(&self, headers: &str) -> Result<BodyIntake, String> {
        let headers = headers_from(headers)?;
        self.inner.intake(&headers).map(|i| BodyIntake { inner: Some(i) }).map_err(|reply| json(&reply))
    }

    /// Step 2: the whole request. Throws the `Reply` (JSON) that refuses it.
    pub fn verify(&self, headers: &str, body: &[u8], now_ms: f64) -> Result<VerifiedPush, String> {
        let headers = headers_from(headers)?;
        match self.inner.verify(&headers, body, now_ms as u64) {
            Ok(inner) => Ok(VerifiedPush { inner }),
            Err((status, error)) => Err(json(&crate::receiver::error_reply(status, &error))),
        }
    }

    /// Step 3, under the lock of the push's document id → `Step` (JSON).
    #[wasm_bindgen(js_name = beginVerified)]
    pub fn begin_verified(&mut self, push: VerifiedPush) -> String {
        json(&self.inner.begin_verified(push.inner))
    }

    /// The hooks succeeded (`error` undefined) or failed or timed out (`error` = why) → `Reply` (JSON).
    pub fn finish(&mut self, ticket: u32, restart_required: bool, error: Option<String>) -> String {
        let outcome = match error {
            None => Ok(restart_required),
            Some(message) => Err(message),
        };
        json(&self.inner.finish(ticket, outcome))
    }
}
