//! sanity-fly-sync core: Sanity content changes → every Fly Machine, with rolling restarts when needed.
//!
//! Flow, one module per step: `entry` (the Function and webhook ways in) → `event` (inputs) → `change` (one
//! content change) → `plan` (targets, Machines, restart rule) → `protocol` (the signed payload and the ack) →
//! `engine` (requests, retries, rolling restart, sans-IO) → `report`. `config` reads the environment;
//! `signature` is Sanity's webhook scheme; `limits` bounds every input; `routes` renders and checks routes.
//! No I/O and no clock anywhere in this crate: time comes in as an argument.

pub mod catch_up;
pub mod change;
pub mod config;
pub mod engine;
pub mod entry;
pub mod error;
pub mod event;
pub mod fly_api;
pub mod fly_token;
pub mod http;
pub mod json_pick;
pub mod json_read;
pub mod known;
pub mod limits;
pub mod machines;
pub mod plan;
pub mod protocol;
pub mod receiver;
pub mod receiver_store;
pub mod redact;
pub mod report;
pub mod retry;
pub mod roll;
pub mod routes;
pub mod run;
pub mod sanity_api;
pub mod signature;
pub mod wire;
pub mod sync_tags;

// One wasm build per side: the Function's module (`--features function`) carries the engine's boundary, the
// receiver's (`--features receiver`) the receiver's; neither carries the other (scripts/build-wasm.sh).
#[cfg(all(target_arch = "wasm32", feature = "function", feature = "receiver"))]
compile_error!("build one side at a time: `--features function` or `--features receiver` (scripts/build-wasm.sh)");
#[cfg(all(target_arch = "wasm32", feature = "function"))]
mod wasm;
#[cfg(all(target_arch = "wasm32", feature = "receiver"))]
mod wasm_receiver;

/// Both modules' allocator: a TLSF allocator over the module's memory, growing it as needed, built for size (the
/// standard library's dlmalloc is about 7 KB more code). A module runs on one thread, which is what it requires.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: rlsf::SmallGlobalTlsf = rlsf::SmallGlobalTlsf::new();
