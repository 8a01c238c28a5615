//! Two wasm builds, one per side (Cargo.toml's features): the crates of the receiver's I/O layer — js-sys, web-sys
//! and gloo-net — are in the receiver's build only, never in the Function's. Read from `cargo tree` for the wasm
//! target (offline: `npm test` has built both modules, so every crate is at hand; nothing is compiled here).

use std::collections::BTreeSet;
use std::process::Command;

const RECEIVER_ONLY: [&str; 3] = ["js-sys", "web-sys", "gloo-net"];

/// The names of the crates a wasm build with `feature` links (normal dependencies, every depth).
fn crates_of(feature: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--locked", "--target", "wasm32-unknown-unknown", "--features", feature, "-e", "normal", "--prefix", "none"])
        .args(["--manifest-path", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")])
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "cargo tree --features {feature}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().filter_map(|line| line.split_whitespace().next()).map(String::from).collect()
}

#[test]
fn js_sys_web_sys_and_gloo_net_are_in_the_receivers_build_only() {
    let function = crates_of("function");
    let receiver = crates_of("receiver");
    // Both lists are real: the wasm boundary and the core's own crates are in each.
    for both in ["wasm-bindgen", "serde_json", "hmac"] {
        assert!(function.contains(both) && receiver.contains(both), "{both} in both builds: {function:?} / {receiver:?}");
    }
    for name in RECEIVER_ONLY {
        assert!(!function.contains(name), "{name} is in the Function's build: {function:?}");
        assert!(receiver.contains(name), "{name} is missing from the receiver's build: {receiver:?}");
    }
}
