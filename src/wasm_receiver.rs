//! The receiver's wasm module (its own build: `--features receiver`): the I/O layer over the sans-IO receiver and
//! catch-up, as quinn drives quinn-proto. `Receiver` (src/receiver.rs) and `CatchUp` (src/catch_up.rs) decide
//! everything — what a request is, whether a change applies, what a failed query means, when the mark moves; this
//! module only does what they say, with JavaScript's I/O:
//!
//! - `web-sys` `Request` / `Response` / `Headers` and body streams for the Web-standard handler (the body read
//!   chunk by chunk into the core's intake, the chunks kept on the JavaScript side until the MAC matches);
//! - `gloo-net` for the catch-up queries to Sanity's HTTP query API (or the app's own client, through the
//!   adapter), read up to their size bound and aborted at their timeout;
//! - `js-sys` for bytes, promises and timers: hook timeouts, the per-document order, the catch-up interval.
//!
//! The app's hooks stay JavaScript: `receiver/index.ts` hands over an adapter that parses each change exactly
//! (large integers as BigInt, `__proto__` an own key) and runs them. Tasks run on a small executor whose turns the
//! adapter starts (`setScheduler` / `runTasks`), so a trap in the module surfaces in a JavaScript call the adapter
//! guards, and it can replace the instance (receiver/wasm.ts) instead of leaving requests unanswered.

use crate::catch_up::{CatchUp, CatchUpSettings, HookOutcome, Query, QueryOutcome, QuerySource, RunResult, RunStep};
use crate::error::SyncError;
use crate::event::Headers;
use crate::http::Response as CoreResponse;
use crate::protocol::SyncPayload;
use crate::receiver::{error_reply, HandlerLimits, Incoming, Receiver, ReceiverOptions, Reply, Step, Verified};
use crate::receiver_store::{self, LiteFs, Statement, StoreOptions};
use js_sys::{Array, Function, Promise, Reflect, Uint8Array};
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// The crate version, to check the loaded wasm matches the package.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

// ── the executor ─────────────────────────────────────────────────────────────────────────────────────────────

type Task = Pin<Box<dyn Future<Output = ()>>>;

thread_local! {
    static TASKS: RefCell<HashMap<u64, Option<Task>>> = RefCell::new(HashMap::new());
    static READY: RefCell<VecDeque<u64>> = const { RefCell::new(VecDeque::new()) };
    static NEXT_TASK: Cell<u64> = const { Cell::new(1) };
    static SCHEDULED: Cell<bool> = const { Cell::new(false) };
    static SCHEDULER: RefCell<Option<Function>> = const { RefCell::new(None) };
    static WAKE: RefCell<Option<Function>> = const { RefCell::new(None) };
    static CURRENT: Cell<u64> = const { Cell::new(0) };
}

struct TaskWaker(u64);

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        ready(self.0);
    }
}

fn ready(id: u64) {
    READY.with(|r| r.borrow_mut().push_back(id));
    if !SCHEDULED.with(|s| s.replace(true)) {
        SCHEDULER.with(|s| {
            if let Some(f) = s.borrow().as_ref() {
                let _ = f.call0(&JsValue::UNDEFINED);
            }
        });
    }
}

fn spawn(task: impl Future<Output = ()> + 'static) {
    let id = NEXT_TASK.with(|n| n.replace(n.get() + 1));
    TASKS.with(|t| t.borrow_mut().insert(id, Some(Box::pin(task))));
    ready(id);
}

/// How the module's tasks get their turns: `schedule()` is called (from inside the module) when a task is ready,
/// and must arrange for `runTasks()` to be called soon, from JavaScript, where a trap can be caught; `wake` is this
/// module's `wake` export, which settled promises call (JavaScript functions only: no callback into the module
/// outlives an instance that was replaced).
#[wasm_bindgen(js_name = setScheduler)]
pub fn set_scheduler(schedule: Function, wake: Function) {
    SCHEDULER.with(|s| *s.borrow_mut() = Some(schedule));
    WAKE.with(|w| *w.borrow_mut() = Some(wake));
}

/// A promise a task waits for has settled: the task runs at the next turn. An unknown task is ignored.
#[wasm_bindgen]
pub fn wake(task: f64) {
    ready(task as u64);
}

/// Run every task that is ready.
#[wasm_bindgen(js_name = runTasks)]
pub fn run_tasks() {
    SCHEDULED.with(|s| s.set(false));
    while let Some(id) = READY.with(|r| r.borrow_mut().pop_front()) {
        let Some(mut task) = TASKS.with(|t| t.borrow_mut().get_mut(&id).and_then(Option::take)) else { continue };
        let waker = Waker::from(Arc::new(TaskWaker(id)));
        CURRENT.with(|c| c.set(id));
        let polled = task.as_mut().poll(&mut Context::from_waker(&waker));
        CURRENT.with(|c| c.set(0));
        match polled {
            Poll::Ready(()) => {
                TASKS.with(|t| t.borrow_mut().remove(&id));
            }
            Poll::Pending => TASKS.with(|t| {
                if let Some(slot) = t.borrow_mut().get_mut(&id) {
                    *slot = Some(task);
                }
            }),
        }
    }
}

// ── promises and timers (js-sys) ─────────────────────────────────────────────────────────────────────────────

fn global_fn(name: &str) -> Function {
    Reflect::get(&js_sys::global(), &JsValue::from_str(name)).map(JsCast::unchecked_into).unwrap_or_else(|_| Function::new_no_args(""))
}

/// Small JavaScript functions over promises and timers (made once, with `js_sys::Function`), so that nothing
/// JavaScript calls back later is a closure of this module: after a trap the adapter replaces the instance, and
/// a late callback into the old one would throw where nobody catches it.
struct Js {
    /// `(p, task, wake)` → a slot `{done, ok, value}` filled when `p` settles, which then calls `wake(task)`.
    watch: Function,
    /// `(p, ms)` → a promise of `[true, value]` / `[false, reason]` when `p` settles, or `null` once `ms` passed.
    within: Function,
    /// `(p)`: mark a promise whose rejection nobody needs as handled.
    quiet: Function,
    /// `(tails, keys, released)` → the promise of every earlier holder of `keys` releasing them; this holder's
    /// place is `released`, and `tails` (a `Map`) forgets it once it is over.
    hold: Function,
    /// `(controller, ms, flag)` → a timer that sets `flag.fired` and aborts `controller` after `ms`.
    abort_after: Function,
    /// `(p, f)` → a promise that settles once `p` has and `f()` ran (its failure ignored).
    after: Function,
}

thread_local! {
    static JS: Js = Js {
        watch: Function::new_with_args(
            "p, task, wake",
            "const slot = {done: false, ok: false, value: undefined}; \
             const settle = (ok, value) => { slot.done = true; slot.ok = ok; slot.value = value; try { wake(task) } catch {} }; \
             Promise.resolve(p).then((v) => settle(true, v), (e) => settle(false, e)); return slot",
        ),
        within: Function::new_with_args(
            "p, ms",
            "return new Promise((resolve) => { const t = setTimeout(() => resolve(null), ms); \
             Promise.resolve(p).then((v) => { clearTimeout(t); resolve([true, v]) }, (e) => { clearTimeout(t); resolve([false, e]) }) })",
        ),
        quiet: Function::new_with_args("p", "Promise.resolve(p).catch(() => {})"),
        hold: Function::new_with_args(
            "tails, keys, released",
            "const before = Promise.all(keys.map((k) => tails.get(k))); \
             const tail = Promise.all([before, released]).then(() => {}, () => {}); \
             for (const k of keys) tails.set(k, tail); \
             tail.then(() => { for (const k of keys) if (tails.get(k) === tail) tails.delete(k) }); return before",
        ),
        abort_after: Function::new_with_args(
            "controller, ms, flag",
            "return setTimeout(() => { flag.fired = true; controller.abort() }, ms)",
        ),
        after: Function::new_with_args("p, f", "return Promise.resolve(p).then(() => { try { f() } catch {} })"),
    };
}

/// A JavaScript promise as a future of this module's executor: `Ok` fulfilled, `Err` rejected.
struct Settled {
    promise: Promise,
    slot: Option<JsValue>,
}

impl Future for Settled {
    type Output = Result<JsValue, JsValue>;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        if self.slot.is_none() {
            let task = JsValue::from_f64(CURRENT.with(Cell::get) as f64);
            let wake = WAKE.with(|w| w.borrow().clone()).map_or(JsValue::UNDEFINED, JsValue::from);
            let slot = JS.with(|js| js.watch.call3(&JsValue::UNDEFINED, &self.promise, &task, &wake)).unwrap_or(JsValue::UNDEFINED);
            self.slot = Some(slot);
        }
        let slot = self.slot.as_ref().expect("set above");
        if !get(slot, "done").is_truthy() {
            return Poll::Pending;
        }
        let value = get(slot, "value");
        Poll::Ready(if get(slot, "ok").is_truthy() { Ok(value) } else { Err(value) })
    }
}

fn settled(promise: Promise) -> Settled {
    Settled { promise, slot: None }
}

/// A promise that may reject nobody listens to (a cancelled stream's), marked handled.
fn ignore(promise: Promise) {
    JS.with(|js| {
        let _ = js.quiet.call1(&JsValue::UNDEFINED, &promise);
    });
}

/// A promise and the function that resolves it.
fn deferred() -> (Promise, Function) {
    let mut resolve = None;
    let promise = Promise::new(&mut |res, _| resolve = Some(res));
    (promise, resolve.expect("the executor runs at once"))
}

/// A timer: a promise that resolves (to `undefined`) after `ms`, and its id for `clearTimeout`.
fn timer(ms: u64) -> (Promise, JsValue) {
    let (promise, resolve) = deferred();
    let id = global_fn("setTimeout").call2(&JsValue::UNDEFINED, &resolve, &JsValue::from_f64(ms as f64)).unwrap_or(JsValue::UNDEFINED);
    (promise, id)
}

fn clear_timer(id: &JsValue) {
    let _ = global_fn("clearTimeout").call1(&JsValue::UNDEFINED, id);
}

async fn sleep(ms: u64) {
    let _ = settled(timer(ms).0).await;
}

/// `promise`'s outcome (`Ok` fulfilled, `Err` rejected), or `None` once `ms` have passed (it keeps running).
async fn within(promise: &Promise, ms: u64) -> Option<Result<JsValue, JsValue>> {
    let raced = JS.with(|js| js.within.call2(&JsValue::UNDEFINED, promise, &JsValue::from_f64(ms as f64)));
    let outcome = settled(raced.ok()?.unchecked_into()).await.ok()?;
    if outcome.is_null() {
        return None;
    }
    let pair: Array = outcome.unchecked_into();
    Some(if pair.get(0).is_truthy() { Ok(pair.get(1)) } else { Err(pair.get(1)) })
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

fn get(value: &JsValue, key: &str) -> JsValue {
    Reflect::get(value, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// What a thrown value says, shortly (an Error's message, a string, …).
fn message_of(value: &JsValue) -> String {
    let text = value.as_string().or_else(|| get(value, "message").as_string()).unwrap_or_else(|| String::from(js_sys::JSON::stringify(value).map(String::from).unwrap_or_else(|_| "an error".into())));
    crate::error::shorten(&text, 300)
}

// ── one change per document at a time ────────────────────────────────────────────────────────────────────────

/// Changes of one document run one at a time, in arrival order; other documents' alongside. A holder that gives
/// up waiting keeps its place, so nobody after it overtakes what it waited for. The queue of each document is a
/// chain of promises in a JavaScript `Map`.
struct Locks {
    tails: js_sys::Map,
}

/// Documents held: `release` them once `after` settles (a late hook may still be running).
struct Held {
    release: Function,
}

impl Held {
    fn release(self, after: &Promise) {
        let _ = self.release.call1(&JsValue::UNDEFINED, after);
    }
}

impl Locks {
    /// Hold every one of `ids`, once every earlier holder of any of them has released it; `None` when that takes
    /// longer than `wait_ms` (the place is given back).
    async fn hold(&self, ids: &[String], wait_ms: u64) -> Option<Held> {
        let mut keys: Vec<&String> = ids.iter().collect();
        keys.sort();
        keys.dedup();
        let keys: Array = keys.into_iter().map(|k| JsValue::from_str(k)).collect();
        let (released, release) = deferred();
        let before = JS.with(|js| js.hold.call3(&JsValue::UNDEFINED, &self.tails, &keys, &released)).ok()?;
        match within(&before.unchecked_into(), wait_ms).await {
            Some(_) => Some(Held { release }),
            None => {
                let _ = release.call1(&JsValue::UNDEFINED, &JsValue::UNDEFINED);
                None
            }
        }
    }
}

// ── the driver ───────────────────────────────────────────────────────────────────────────────────────────────

/// What the adapter (receiver/index.ts) hands over: the app's hooks, wrapped so they never throw or reject.
struct Hooks {
    /// `(changeJson, signal) → Promise<{restart} | {error}>`
    apply: Function,
    /// The same for `invalidate`; absent when the app has none.
    invalidate: Option<Function>,
    /// `(tagsJson, signal) → Promise<{} | {error}>`: the sync tags of a sync-tag push; absent when the app has none
    /// (the core then refuses such pushes).
    sync_tags: Option<Function>,
    /// The app's query client: `(query, paramsJson) → Promise<{text} | {error, status?}>`.
    query: Option<Function>,
    /// Told every run's result (JSON).
    on_run: Option<Function>,
    /// The store's statements runner (receiver/store.ts), when the state is kept in one.
    store: Option<Store>,
    /// `(path) → string | null`: a file's content (null: absent), for LiteFS's `.primary` file.
    read_file: Option<Function>,
}

/// A SQL store, synchronous (`node:sqlite`): `exec(statementsJson)`, `all(statementJson) → rowsJson`, and the
/// transaction's `begin`, `commit`, `rollback`.
struct Store {
    exec: Function,
    all: Function,
    begin: Function,
    commit: Function,
    rollback: Function,
}

impl Store {
    fn from(value: &JsValue) -> Option<Store> {
        Some(Store { exec: function(value, "exec")?, all: function(value, "all")?, begin: function(value, "begin")?, commit: function(value, "commit")?, rollback: function(value, "rollback")? })
    }

    fn call(f: &Function, arg: Option<&str>) -> Result<JsValue, String> {
        let result = match arg {
            Some(text) => f.call1(&JsValue::UNDEFINED, &JsValue::from_str(text)),
            None => f.call0(&JsValue::UNDEFINED),
        };
        result.map_err(|e| message_of(&e))
    }

    fn exec(&self, statements: &[Statement]) -> Result<(), String> {
        Store::call(&self.exec, Some(&json(&statements))).map(drop)
    }

    fn all(&self, statement: &Statement) -> Result<String, String> {
        Store::call(&self.all, Some(&json(statement)))?.as_string().ok_or_else(|| "the store answered no rows".into())
    }
}

/// The store's own place in the queue of `Locks`: one transaction at a time on its connection (no document id
/// holds a NUL).
const STORE_KEY: &str = "\u{0}store";

struct Inner {
    core: RefCell<Receiver>,
    catch_up: RefCell<Option<CatchUp>>,
    source: Option<QuerySource>,
    interval_ms: u64,
    hooks: Hooks,
    locks: Locks,
    limits: HandlerLimits,
    /// The run under way, joined by whoever asks for one meanwhile.
    running: RefCell<Option<Promise>>,
    interval: RefCell<Option<JsValue>>,
    closed: Cell<bool>,
    litefs: Option<LiteFs>,
}

fn function(hooks: &JsValue, name: &str) -> Option<Function> {
    get(hooks, name).dyn_into::<Function>().ok()
}

/// The receiver for one app: the Web-standard handler (`handle`) and catch-up (`catchUp`, `start`, `close`).
#[wasm_bindgen]
pub struct ReceiverDriver {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl ReceiverDriver {
    /// `options`: the JSON of the receiver's options (`{secret, machineId, …}`); `catch_up`: the JSON of the
    /// `catchUp` option as the adapter passes it, or empty; `store`: the JSON of `{store, litefs}`; `hooks`: the
    /// adapter's functions (and the store's). Reads the state a store holds. Throws a `SyncError` (JSON) for a bad
    /// option or a store that cannot be read.
    #[wasm_bindgen(constructor)]
    pub fn new(options: &str, catch_up: &str, store: &str, hooks: JsValue) -> Result<ReceiverDriver, String> {
        let error = |e: SyncError| json(&e);
        let value = crate::limits::parse_json("options", options.as_bytes(), "the receiver options (JSON object)").map_err(error)?;
        let core = Receiver::new(ReceiverOptions::from_json(&value).map_err(error)?).map_err(error)?;
        let value = crate::limits::parse_json("store", store.as_bytes(), "the store options (JSON object)").map_err(error)?;
        let store_options = StoreOptions::from_json(&value).map_err(error)?;
        let store = if store_options.durable {
            let store = Store::from(&get(&hooks, "store")).ok_or_else(|| error(SyncError::expected("store", "a store made by sqliteStore()", "another value")))?;
            Some(store)
        } else {
            None
        };
        let settings = if catch_up.is_empty() {
            None
        } else {
            let value = crate::limits::parse_json("catchUp", catch_up.as_bytes(), "the catch-up options (JSON object)").map_err(error)?;
            Some(CatchUpSettings::from_json(&value).map_err(error)?)
        };
        let Some(apply) = function(&hooks, "apply") else {
            return Err(error(SyncError::expected("apply", "a function that stores a change", "another value")));
        };
        let limits = core.limits();
        let inner = Inner {
            core: RefCell::new(core),
            source: settings.as_ref().map(|s| s.source.clone()),
            interval_ms: settings.as_ref().map_or(0, |s| s.interval_ms),
            catch_up: RefCell::new(settings.map(|s| CatchUp::new(s.options).redacting(s.source.redactor()))),
            hooks: Hooks {
                apply,
                invalidate: function(&hooks, "invalidate"),
                sync_tags: function(&hooks, "syncTags"),
                query: function(&hooks, "query"),
                on_run: function(&hooks, "onRun"),
                store,
                read_file: function(&hooks, "readFile"),
            },
            locks: Locks { tails: js_sys::Map::new() },
            limits,
            running: RefCell::new(None),
            interval: RefCell::new(None),
            closed: Cell::new(false),
            litefs: store_options.litefs,
        };
        if let Some(store) = &inner.hooks.store {
            load(&inner, store).map_err(error)?;
        }
        if matches!(inner.source, Some(QuerySource::Client)) && inner.hooks.query.is_none() {
            return Err(error(SyncError::expected("catchUp.client", "a Sanity client (with a `fetch` method)", "another value")));
        }
        Ok(ReceiverDriver { inner: Rc::new(inner) })
    }

    /// Answer one request (a Web `Request`) → a promise of its `Response`.
    pub fn handle(&self, request: web_sys::Request) -> Promise {
        let (answer, resolve) = deferred();
        let inner = Rc::clone(&self.inner);
        spawn(async move {
            let response = receive(&inner, request).await;
            let _ = resolve.call1(&JsValue::UNDEFINED, &response);
        });
        answer
    }

    /// Reconcile now (joins a run under way) → a promise of the run's result (JSON). Throws when catch-up is off.
    #[wasm_bindgen(js_name = catchUp)]
    pub fn catch_up(&self) -> Result<Promise, String> {
        if self.inner.catch_up.borrow().is_none() {
            return Err(json(&SyncError::fatal("catch-up is not enabled (pass `catchUp` to createReceiver)")));
        }
        Ok(run_catch_up(&self.inner))
    }

    /// Start reconciling every interval: `tick` (the adapter's, which asks for a run) is called each time. Returns
    /// the timer (for `clearInterval`), or `undefined` when catch-up is off.
    pub fn every(&self, tick: &Function) -> JsValue {
        if self.inner.catch_up.borrow().is_none() || self.inner.closed.get() {
            return JsValue::UNDEFINED;
        }
        let id = global_fn("setInterval").call2(&JsValue::UNDEFINED, tick, &JsValue::from_f64(self.inner.interval_ms as f64)).unwrap_or(JsValue::UNDEFINED);
        // A Node timer that does not keep the process alive on its own.
        if let Ok(unref) = get(&id, "unref").dyn_into::<Function>() {
            let _ = unref.call0(&id);
        }
        *self.inner.interval.borrow_mut() = Some(id.clone());
        id
    }

    /// This driver replaced one whose module faulted (it holds nothing): whether to read everything again now, as
    /// at boot (`catch_up::recover_after_fault`). `last`: when the last such run began (ms), if one did. Returns
    /// the time of this one when a run is to start now (then call `catchUp`), else `undefined` (or catch-up is off).
    #[wasm_bindgen(js_name = recoveryRun)]
    pub fn recovery_run(&self, last: Option<f64>) -> Option<f64> {
        if self.inner.catch_up.borrow().is_none() || self.inner.closed.get() {
            return None;
        }
        let now = now_ms();
        let last = last.filter(|l| l.is_finite() && *l >= 0.0).map(|l| l as u64);
        crate::catch_up::recover_after_fault(last, now, self.inner.interval_ms).then_some(now as f64)
    }

    /// Stop the catch-up timer.
    pub fn close(&self) {
        self.inner.closed.set(true);
        if let Some(id) = self.inner.interval.borrow_mut().take() {
            let _ = global_fn("clearInterval").call1(&JsValue::UNDEFINED, &id);
        }
    }
}

// ── the store ────────────────────────────────────────────────────────────────────────────────────────────────

/// Make the store's tables if missing and start from what it holds: marks, keys, the catch-up mark.
fn load(inner: &Inner, store: &Store) -> Result<(), SyncError> {
    let failed = |what: &str, why: String| SyncError::fatal(format!("the receiver's store could not be {what}: {why}"));
    if inner.litefs.is_none() || primary_of(inner).is_none() {
        // A LiteFS replica cannot write: its tables come from the primary.
        store.exec(&receiver_store::schema()).map_err(|e| failed("set up", e))?;
    }
    let [marks, keys, meta] = receiver_store::load_queries();
    let read = |q: &Statement| store.all(q).map_err(|e| failed("read", e));
    let (marks, keys, meta) = match (read(&marks), read(&keys), read(&meta)) {
        (Ok(m), Ok(k), Ok(t)) => (m, k, t),
        // A replica whose primary has not made the tables yet holds nothing yet.
        _ if inner.litefs.is_some() => ("[]".into(), "[]".into(), "[]".into()),
        (m, k, t) => return Err(m.and(k).and(t).expect_err("one failed")),
    };
    let (snapshot, mark) = receiver_store::snapshot(&marks, &keys, &meta)?;
    inner.core.borrow_mut().restore(snapshot);
    if let (Some(mark), Some(c)) = (mark, inner.catch_up.borrow_mut().as_mut()) {
        c.restore_mark(mark, now_ms());
    }
    Ok(())
}

/// Under LiteFS: the primary's name when this Machine is a replica (`.primary` exists), `None` on the primary.
fn primary_of(inner: &Inner) -> Option<String> {
    let (litefs, read) = (inner.litefs.as_ref()?, inner.hooks.read_file.as_ref()?);
    let content = read.call1(&JsValue::UNDEFINED, &JsValue::from_str(&litefs.primary_file)).ok()?.as_string()?;
    Some(receiver_store::primary_name(&content)).filter(|n| !n.is_empty())
}

/// Run `statements` in a transaction of their own (the catch-up mark), under the store's place in the queue.
async fn write_alone(inner: &Inner, statements: &[Statement]) -> Result<(), String> {
    let Some(store) = &inner.hooks.store else { return Ok(()) };
    let Some(held) = inner.locks.hold(&[STORE_KEY.to_string()], inner.limits.hook_timeout_ms).await else {
        return Err("the store is busy".into());
    };
    let written = Store::call(&store.begin, None).and_then(|_| store.exec(statements)).and_then(|_| Store::call(&store.commit, None).map(drop));
    if written.is_err() {
        let _ = Store::call(&store.rollback, None);
    }
    held.release(&Promise::resolve(&JsValue::UNDEFINED));
    written
}

/// The push of a revision catch-up applied first: only its purge (`invalidate`), then, with a store, its record
/// (the push's key; the mark no longer from a read) written on its own.
async fn refresh_change(inner: &Inner, ticket: u32, change: &SyncPayload) -> (HookOutcome, Promise) {
    let (outcome, released) = invalidate_only(inner, change).await;
    if let (HookOutcome::Done { .. }, Some(_)) = (&outcome, &inner.hooks.store) {
        let commit = inner.core.borrow().pending_commit(ticket);
        let remember = inner.core.borrow().remember_keys();
        if let Some(c) = commit {
            if let Err(why) = write_alone(inner, &receiver_store::commit(&c, remember)).await {
                return (HookOutcome::Failed(format!("the store could not record the change: {why}")), released);
            }
        }
    }
    (outcome, released)
}

/// The app's hooks on one change, and with a store, everything in one transaction: the app's own writes (through
/// the same database) and the receiver's record of the change commit together, or not at all.
async fn apply_change(inner: &Inner, ticket: u32, change: &SyncPayload) -> (HookOutcome, Promise) {
    let Some(store) = &inner.hooks.store else { return run_hooks(inner, change).await };
    let done = || Promise::resolve(&JsValue::UNDEFINED);
    let Some(held) = inner.locks.hold(&[STORE_KEY.to_string()], inner.limits.hook_timeout_ms).await else {
        return (HookOutcome::Failed("the store is busy with another change; retry".into()), done());
    };
    if let Err(why) = Store::call(&store.begin, None) {
        held.release(&done());
        return (HookOutcome::Failed(format!("the store could not begin a transaction: {why}")), done());
    }
    let (outcome, released) = run_hooks(inner, change).await;
    match outcome {
        HookOutcome::Done { restart } => {
            let commit = inner.core.borrow().pending_commit(ticket);
            let remember = inner.core.borrow().remember_keys();
            let written = match commit {
                Some(c) => store.exec(&receiver_store::commit(&c, remember)).and_then(|_| Store::call(&store.commit, None).map(drop)),
                None => Err("no such change".into()),
            };
            let outcome = match written {
                Ok(()) => HookOutcome::Done { restart },
                Err(why) => {
                    let _ = Store::call(&store.rollback, None);
                    HookOutcome::Failed(format!("the store could not record the change: {why}"))
                }
            };
            held.release(&released);
            (outcome, released)
        }
        HookOutcome::TimedOut(_) => {
            // The late hook may still write: its transaction is rolled back once it settles (or one more
            // timeout), and only then may the next change use the store.
            let after: Promise = JS.with(|js| js.after.call2(&JsValue::UNDEFINED, &released, &store.rollback)).map(JsCast::unchecked_into).unwrap_or_else(|_| done());
            held.release(&after);
            (outcome, after)
        }
        HookOutcome::Failed(_) => {
            let _ = Store::call(&store.rollback, None);
            held.release(&released);
            (outcome, released)
        }
    }
}

/// A LiteFS replica: wait (up to the bound) until what the primary recorded covers `incoming`; only then are the
/// Machine's caches purged. `Err` with the answer when it does not arrive in time.
async fn replicated(store: &Store, litefs: &LiteFs, primary: &str, incoming: &Incoming) -> Result<(), Reply> {
    let deadline = now_ms() + litefs.replication_wait_ms;
    let query = receiver_store::mark_query(incoming.id());
    for _ in 0..100_000 {
        let held = store.all(&query).ok().and_then(|rows| receiver_store::one_mark(&rows).ok().flatten());
        if Receiver::replicated(incoming, held.as_ref()) {
            return Ok(());
        }
        if now_ms() >= deadline {
            break;
        }
        sleep(REPLICA_POLL_MS.min(deadline.saturating_sub(now_ms())).max(1)).await;
    }
    let error = SyncError::retryable(format!(
        "this Machine is a LiteFS replica (the primary is {primary}) and does not hold revision {} of {} yet (waited {} ms for replication); retry",
        incoming.payload.rev,
        incoming.id(),
        litefs.replication_wait_ms
    ));
    Err(error_reply(503, &error))
}

/// How often a replica looks for a change the primary is replicating.
const REPLICA_POLL_MS: u64 = 25;

// ── pushes ───────────────────────────────────────────────────────────────────────────────────────────────────

fn respond(reply: &Reply, extra: &[(&str, &str)]) -> JsValue {
    let init = web_sys::ResponseInit::new();
    init.set_status(reply.http_status);
    if let Ok(headers) = web_sys::Headers::new() {
        let _ = headers.set("content-type", "application/json");
        for (name, value) in extra {
            let _ = headers.set(name, value);
        }
        init.set_headers_headers(&headers);
    }
    web_sys::Response::new_with_opt_str_and_init(Some(&reply.body), &init).map(JsValue::from).unwrap_or(JsValue::UNDEFINED)
}

/// A refusal the handler makes itself (405, 503), in the core's error shape.
fn handler_reply(status: u16, error: SyncError) -> Reply {
    error_reply(status, &error)
}

fn headers_of(request: &web_sys::Request) -> Headers {
    let mut headers = Headers::new();
    if let Ok(Some(entries)) = js_sys::try_iter(&request.headers()) {
        for entry in entries.flatten() {
            let pair: Array = entry.unchecked_into();
            if let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                headers.insert(name, value);
            }
        }
    }
    headers
}

fn cancel_body(request: &web_sys::Request) {
    if let Some(body) = request.body() {
        ignore(body.cancel());
    }
}

/// The largest piece of a chunk copied into the module at once, to feed the MAC.
const SLICE: u32 = 64 * 1024;

/// Read the body through the core's intake: refused as soon as it is over the cap, and unless its MAC matches.
/// The chunks stay JavaScript's until then; only a body signed with our secret is copied into the module whole.
async fn read_body(inner: &Inner, request: &web_sys::Request, headers: &Headers) -> Result<Vec<u8>, Reply> {
    let mut intake = match inner.core.borrow().intake(headers) {
        Ok(intake) => intake,
        Err(reply) => {
            cancel_body(request);
            return Err(reply);
        }
    };
    let chunks = Array::new();
    let mut size: usize = 0;
    if let Some(stream) = request.body() {
        let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
        let mut piece = Vec::new();
        loop {
            let next = match settled(reader.read()).await {
                Ok(next) => next,
                Err(e) => return Err(handler_reply(400, SyncError::bad_field("body", format!("could not be read ({})", message_of(&e))))),
            };
            if get(&next, "done").is_truthy() {
                break;
            }
            let chunk: Uint8Array = get(&next, "value").unchecked_into();
            let mut at = 0;
            while at < chunk.length() {
                let end = (at + SLICE).min(chunk.length());
                piece.resize((end - at) as usize, 0);
                chunk.subarray(at, end).copy_to(&mut piece);
                if let Err(reply) = intake.push(&piece) {
                    ignore(reader.cancel());
                    return Err(reply);
                }
                at = end;
            }
            size += chunk.length() as usize;
            chunks.push(&chunk);
        }
    }
    intake.finish()?;
    let mut body = vec![0u8; size];
    let mut at = 0;
    for chunk in chunks.iter() {
        let chunk: Uint8Array = chunk.unchecked_into();
        let len = chunk.length() as usize;
        chunk.copy_to(&mut body[at..at + len]);
        at += len;
    }
    Ok(body)
}

async fn receive(inner: &Rc<Inner>, request: web_sys::Request) -> JsValue {
    if request.method() != "POST" {
        cancel_body(&request);
        return respond(&handler_reply(405, SyncError::expected("method", "POST (the sync endpoint takes POST)", "another method")), &[("allow", "POST")]);
    }
    let headers = headers_of(&request);
    let body = match read_body(inner, &request, &headers).await {
        Ok(body) => body,
        Err(reply) => return respond(&reply, &[]),
    };
    let verified = match inner.core.borrow().verify(&headers, &body, now_ms()) {
        Ok(verified) => verified,
        Err((status, error)) => return respond(&error_reply(status, &error), &[]),
    };
    drop(body);
    let id = verified.id().to_string();
    let Some(held) = inner.locks.hold(std::slice::from_ref(&id), inner.limits.hook_timeout_ms).await else {
        let error = SyncError::retryable(format!("another change of {id} is still being applied; retry"));
        return respond(&handler_reply(503, error), &[]);
    };
    // Under LiteFS only the primary writes; a replica purges its caches once the change has replicated to it.
    let replica = match (&inner.litefs, &inner.hooks.store, &verified) {
        (Some(litefs), Some(store), Verified::Change(incoming)) => match primary_of(inner) {
            Some(primary) => {
                if let Err(reply) = replicated(store, litefs, &primary, incoming).await {
                    held.release(&Promise::resolve(&JsValue::UNDEFINED));
                    return respond(&reply, &[("retry-after", "1")]);
                }
                true
            }
            None => false,
        },
        _ => false,
    };
    let step = inner.core.borrow_mut().begin_verified(verified);
    let (reply, released) = match step {
        Step::Respond(reply) => (reply, Promise::resolve(&JsValue::UNDEFINED)),
        Step::Tags { ticket, sync_tags } => {
            let (outcome, released) = match &inner.hooks.sync_tags {
                Some(run) => hook(inner, "syncTags", run, &json(&sync_tags)).await,
                None => (HookOutcome::Failed("this receiver has no syncTags hook".into()), Promise::resolve(&JsValue::UNDEFINED)),
            };
            (inner.core.borrow_mut().finish(ticket, outcome.into_result()), released)
        }
        // A replica holds the change through LiteFS; a Machine whose catch-up applied it before this push holds it
        // too: either way only its purge is left.
        Step::Apply { ticket, change } | Step::Refresh { ticket, change } if replica => {
            let (outcome, released) = invalidate_only(inner, &change).await;
            (inner.core.borrow_mut().finish(ticket, outcome.into_result()), released)
        }
        Step::Refresh { ticket, change } => {
            let (outcome, released) = refresh_change(inner, ticket, &change).await;
            (inner.core.borrow_mut().finish(ticket, outcome.into_result()), released)
        }
        Step::Apply { ticket, change } => {
            let (outcome, released) = apply_change(inner, ticket, &change).await;
            (inner.core.borrow_mut().finish(ticket, outcome.into_result()), released)
        }
    };
    held.release(&released);
    respond(&reply, &[])
}

// ── the app's hooks ──────────────────────────────────────────────────────────────────────────────────────────

/// Run one hook under its timeout: its outcome, and a promise that settles when it has (a late hook keeps the
/// document held until it settles, or one more timeout).
async fn hook(inner: &Inner, which: &str, run: &Function, change: &str) -> (HookOutcome, Promise) {
    let ms = inner.limits.hook_timeout_ms;
    let controller = web_sys::AbortController::new().ok();
    let signal: JsValue = controller.as_ref().map_or(JsValue::UNDEFINED, |c| c.signal().into());
    let work: Promise = match run.call2(&JsValue::UNDEFINED, &JsValue::from_str(change), &signal) {
        Ok(p) => p.dyn_into().unwrap_or_else(|v| Promise::resolve(&v)),
        Err(e) => Promise::reject(&e),
    };
    match within(&work, ms).await {
        None => {
            let why = format!("the {which} hook did not settle within {ms} ms");
            if let Some(c) = &controller {
                c.abort_with_reason(&js_sys::Error::new(&why).into());
            }
            // Held until the late hook settles, or one more timeout.
            let late = JS.with(|js| js.within.call2(&JsValue::UNDEFINED, &work, &JsValue::from_f64(ms as f64))).map(JsCast::unchecked_into);
            (HookOutcome::TimedOut(why), late.unwrap_or_else(|_| Promise::resolve(&JsValue::UNDEFINED)))
        }
        Some(Ok(value)) => {
            let done = Promise::resolve(&JsValue::UNDEFINED);
            match get(&value, "error").as_string() {
                Some(error) => (HookOutcome::Failed(error), done),
                None => (HookOutcome::Done { restart: get(&value, "restart").is_truthy() }, done),
            }
        }
        Some(Err(e)) => (HookOutcome::Failed(message_of(&e)), Promise::resolve(&JsValue::UNDEFINED)),
    }
}

/// A LiteFS replica's part: the change is in its replica already; purge what shows it.
async fn invalidate_only(inner: &Inner, change: &SyncPayload) -> (HookOutcome, Promise) {
    match &inner.hooks.invalidate {
        Some(invalidate) => match hook(inner, "invalidate", invalidate, &json(change)).await {
            (HookOutcome::Done { .. }, released) => (HookOutcome::Done { restart: false }, released),
            other => other,
        },
        None => (HookOutcome::Done { restart: false }, Promise::resolve(&JsValue::UNDEFINED)),
    }
}

/// `apply`, then `invalidate`; the first that fails or times out ends it.
async fn run_hooks(inner: &Inner, change: &SyncPayload) -> (HookOutcome, Promise) {
    let text = json(change);
    let (outcome, released) = hook(inner, "apply", &inner.hooks.apply, &text).await;
    let HookOutcome::Done { restart } = outcome else { return (outcome, released) };
    let Some(invalidate) = &inner.hooks.invalidate else { return (outcome, released) };
    match hook(inner, "invalidate", invalidate, &text).await {
        (HookOutcome::Done { .. }, released) => (HookOutcome::Done { restart }, released),
        other => other,
    }
}

// ── catch-up ─────────────────────────────────────────────────────────────────────────────────────────────────

fn run_catch_up(inner: &Rc<Inner>) -> Promise {
    if let Some(running) = inner.running.borrow().as_ref() {
        return running.clone();
    }
    let (result, resolve) = deferred();
    *inner.running.borrow_mut() = Some(result.clone());
    let inner = Rc::clone(inner);
    spawn(async move {
        let run = reconcile(&inner).await;
        let text = json(&run);
        *inner.running.borrow_mut() = None;
        if let Some(on_run) = &inner.hooks.on_run {
            let _ = on_run.call1(&JsValue::UNDEFINED, &JsValue::from_str(&text));
        }
        let _ = resolve.call1(&JsValue::UNDEFINED, &JsValue::from_str(&text));
    });
    result
}

/// One run, as `CatchUp` directs it.
async fn reconcile(inner: &Rc<Inner>) -> RunResult {
    let before = inner.catch_up.borrow().as_ref().and_then(CatchUp::mark_ms);
    // Under LiteFS a replica reads nothing from Sanity: it purges its caches for what the primary recorded and it
    // has not purged for yet (a push it missed).
    let replica = match (&inner.litefs, &inner.hooks.store, primary_of(inner)) {
        (Some(_), Some(store), Some(primary)) => {
            let [marks, ..] = receiver_store::load_queries();
            let marks = store.all(&marks).ok().and_then(|rows| receiver_store::snapshot(&rows, "[]", "[]").ok()).map(|(s, _)| s.marks).unwrap_or_default();
            let core = inner.core.borrow();
            if let Some(c) = inner.catch_up.borrow_mut().as_mut() {
                c.begin_replica(&core, marks, primary, now_ms(), inner.limits.hook_timeout_ms);
            }
            true
        }
        _ => {
            if let Some(c) = inner.catch_up.borrow_mut().as_mut() {
                c.begin(now_ms(), inner.limits.hook_timeout_ms);
            }
            false
        }
    };
    if inner.catch_up.borrow().is_none() {
        return RunResult { error: Some("catch-up is not enabled".into()), ..RunResult::default() };
    }
    for _ in 0..1_000_000 {
        let step = inner.catch_up.borrow_mut().as_mut().map(|c| c.next(now_ms()));
        match step {
            None => break,
            Some(RunStep::Done(mut result)) => {
                let after = inner.catch_up.borrow().as_ref().and_then(CatchUp::mark_ms);
                if let Some(mark) = after.filter(|m| Some(*m) != before) {
                    if let Err(why) = write_alone(inner, &[receiver_store::catch_up_mark(mark)]).await {
                        result.error.get_or_insert(format!("the store could not record the mark: {why}"));
                    }
                }
                return result;
            }
            Some(RunStep::Wait { until_ms }) => sleep(until_ms.saturating_sub(now_ms())).await,
            Some(RunStep::Query(query)) => {
                let outcome = run_query(inner, &query).await;
                let core = inner.core.borrow();
                if let Some(c) = inner.catch_up.borrow_mut().as_mut() {
                    c.answered(&core, outcome, now_ms());
                }
            }
            Some(RunStep::Apply { ids, wait_ms }) => match inner.locks.hold(&ids, wait_ms).await {
                None => {
                    if let Some(c) = inner.catch_up.borrow_mut().as_mut() {
                        c.unit_blocked();
                    }
                }
                Some(held) => {
                    let lingering = Array::new();
                    loop {
                        let next = {
                            let mut core = inner.core.borrow_mut();
                            inner.catch_up.borrow_mut().as_mut().and_then(|c| c.unit_next(&mut core, now_ms()))
                        };
                        let Some((ticket, change)) = next else { break };
                        let (outcome, released) = if replica { invalidate_only(inner, &change).await } else { apply_change(inner, ticket, &change).await };
                        lingering.push(&released);
                        let mut core = inner.core.borrow_mut();
                        if let Some(c) = inner.catch_up.borrow_mut().as_mut() {
                            c.unit_done(&mut core, ticket, outcome);
                        }
                    }
                    held.release(&Promise::all(&lingering));
                }
            },
        }
    }
    RunResult { error: Some("catch-up is not enabled".into()), ..RunResult::default() }
}

/// Run one query, within its time and size; what happened, for `CatchUp::answered` to judge.
async fn run_query(inner: &Inner, query: &Query) -> QueryOutcome {
    match &inner.source {
        Some(QuerySource::Http { url, token }) => query_http(url, token.as_deref(), query).await,
        _ => query_client(inner, query).await,
    }
}

/// Through the app's own client (the adapter turns its answer into JSON text).
async fn query_client(inner: &Inner, query: &Query) -> QueryOutcome {
    let Some(run) = &inner.hooks.query else { return QueryOutcome::Client { message: "no query client".into(), status: Some(400) } };
    let work: Promise = match run.call2(&JsValue::UNDEFINED, &JsValue::from_str(&query.query), &JsValue::from_str(&query.params.to_string())) {
        Ok(p) => p.dyn_into().unwrap_or_else(|v| Promise::resolve(&v)),
        Err(e) => return QueryOutcome::Client { message: message_of(&e), status: None },
    };
    match within(&work, query.timeout_ms).await {
        None => QueryOutcome::Failed(CoreResponse::Timeout),
        Some(Err(e)) => QueryOutcome::Client { message: message_of(&e), status: None },
        Some(Ok(answer)) => match get(&answer, "text").as_string() {
            // At least one byte per UTF-16 unit: what is plainly over is refused here, the rest by the core.
            Some(text) if text.len() as u64 > query.max_bytes => QueryOutcome::TooLarge,
            Some(text) => QueryOutcome::Answer { text, enveloped: false },
            None => match get(&answer, "unreadable").as_string() {
                Some(why) => QueryOutcome::Unreadable(why),
                None => QueryOutcome::Client {
                    message: get(&answer, "error").as_string().unwrap_or_else(|| "the client answered nothing".into()),
                    status: get(&answer, "status").as_f64().map(|s| s as u16),
                },
            },
        },
    }
}

/// The most of a refusing answer's body read, for its error detail.
const ERROR_BODY_BYTES: u64 = 4 * 1024;

/// Sanity's HTTP query API through gloo-net: POST `{query, params}`, aborted at the query's timeout, the answer
/// read only up to its size bound.
async fn query_http(url: &str, token: Option<&str>, query: &Query) -> QueryOutcome {
    let controller = web_sys::AbortController::new().ok();
    let flag = js_sys::Object::new();
    let id = match &controller {
        Some(c) => JS.with(|js| js.abort_after.call3(&JsValue::UNDEFINED, c, &JsValue::from_f64(query.timeout_ms as f64), &flag)).unwrap_or(JsValue::UNDEFINED),
        None => JsValue::UNDEFINED,
    };
    let fired = || get(&flag, "fired").is_truthy();
    let outcome = async {
        let body = serde_json::json!({"query": query.query, "params": query.params}).to_string();
        let mut builder = gloo_net::http::Request::post(url).header("content-type", "application/json");
        if let Some(token) = token {
            builder = builder.header("authorization", &format!("Bearer {token}"));
        }
        let signal = controller.as_ref().map(|c| c.signal());
        let request: web_sys::Request = match builder.abort_signal(signal.as_ref()).body(body) {
            Ok(request) => request.into(),
            Err(e) => return QueryOutcome::Client { message: e.to_string(), status: None },
        };
        // gloo-net built the request; it is sent with the global `fetch` and awaited on this module's executor
        // (gloo-net's own `send` awaits through callbacks into the module, see `Js`).
        let sent: Promise = match global_fn("fetch").call1(&JsValue::UNDEFINED, &request) {
            Ok(p) => p.unchecked_into(),
            Err(e) => return failed(fired(), message_of(&e)),
        };
        let response = match settled(sent).await {
            Ok(r) => gloo_net::http::Response::from(r.unchecked_into::<web_sys::Response>()),
            Err(e) => return failed(fired(), message_of(&e)),
        };
        let status = response.status();
        let ok = response.ok();
        let bound = if ok { query.max_bytes } else { ERROR_BODY_BYTES };
        let read = read_bounded(response.body(), bound).await;
        if !ok {
            let body = read.map(|(bytes, _)| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default();
            let headers = response.headers().get("retry-after").into_iter().map(|v| ("retry-after".to_string(), v)).collect();
            return QueryOutcome::Failed(CoreResponse::Http { status, headers, body });
        }
        match read {
            Ok((_, true)) => QueryOutcome::TooLarge,
            Ok((bytes, false)) => match String::from_utf8(bytes) {
                Ok(text) => QueryOutcome::Answer { text, enveloped: true },
                Err(_) => QueryOutcome::Unreadable("the answer is not UTF-8".into()),
            },
            Err(message) => failed(fired(), message),
        }
    }
    .await;
    clear_timer(&id);
    outcome
}

fn failed(timed_out: bool, message: String) -> QueryOutcome {
    if timed_out {
        QueryOutcome::Failed(CoreResponse::Timeout)
    } else {
        QueryOutcome::Failed(CoreResponse::Network { message })
    }
}

/// A body read up to `bound` bytes: the bytes, and whether there was more (the stream is then cancelled).
async fn read_bounded(stream: Option<web_sys::ReadableStream>, bound: u64) -> Result<(Vec<u8>, bool), String> {
    let Some(stream) = stream else { return Ok((Vec::new(), false)) };
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut bytes = Vec::new();
    loop {
        let next = settled(reader.read()).await.map_err(|e| message_of(&e))?;
        if get(&next, "done").is_truthy() {
            return Ok((bytes, false));
        }
        let chunk: Uint8Array = get(&next, "value").unchecked_into();
        if bytes.len() as u64 + chunk.length() as u64 > bound {
            let room = bound.saturating_sub(bytes.len() as u64) as u32;
            let at = bytes.len();
            bytes.resize(at + room as usize, 0);
            chunk.subarray(0, room).copy_to(&mut bytes[at..]);
            ignore(reader.cancel());
            return Ok((bytes, true));
        }
        let at = bytes.len();
        bytes.resize(at + chunk.length() as usize, 0);
        chunk.copy_to(&mut bytes[at..]);
    }
}
