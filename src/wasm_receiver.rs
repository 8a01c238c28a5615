//! The receiver's wasm boundary (its own build: `--features receiver`), for the app on each Fly Machine. It carries
//! the receiving side only: no engine, no Machines API.

use crate::catch_up::{CatchUp, CatchUpOptions};
use crate::event::Headers;
use crate::receiver::{Receiver, ReceiverOptions};
use serde::Serialize;
use wasm_bindgen::prelude::*;

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
