//! The configuration: an environment map built from the fuzz bytes → `Config::from_env`.
//! Input: one flag byte (bit 0: start from a valid base environment with distinctive secrets, otherwise from
//! nothing), then `NAME=value` lines that set or override variables, then optionally a NUL byte and the
//! `FLY_SYNC_CONFIG` JSON document (the rest of the input).
//! Invariants: no panic; every error is bad input that names its field and never holds a secret from the
//! environment; `FLY_SYNC_CONFIG` next to a per-target simple variable is always refused; an accepted
//! configuration is within its documented bounds, holds its secrets exactly as given, its `Debug` shows no
//! secret, and an engine built from it logs no secret in its first requests.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sanity_fly_sync::config::{Config, Env};
use sanity_fly_sync::entry;

const WORKER_TOKEN: &str = "fm2_fuzz-worker-Zt3mB6qPx1";

/// Secret-bearing variables: the two secrets and every `*_TOKEN` (what a target's `tokenEnv` names).
fn is_secret_var(name: &str) -> bool {
    matches!(name, "FLY_SYNC_SECRET" | "SANITY_WEBHOOK_SECRET") || name.ends_with("_TOKEN")
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let (lines, json) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut env = Env::new();
    if flags & 1 == 1 {
        // The base is the simple form unless a JSON document follows (the two forms do not mix).
        if json.is_none() {
            env.insert("FLY_APP_NAME".into(), "web".into());
        }
        for (k, v) in [
            ("FLY_API_TOKEN", format!("FlyV1 {}", common::API_TOKEN)),
            ("FLY_WORKER_TOKEN", WORKER_TOKEN.to_string()),
            ("FLY_SYNC_SECRET", common::SYNC_SECRET.to_string()),
            ("SANITY_WEBHOOK_SECRET", common::WEBHOOK_SECRET.to_string()),
        ] {
            env.insert(k.into(), v);
        }
    }
    let mut from_input = std::collections::BTreeSet::new();
    for line in String::from_utf8_lossy(lines).lines() {
        if let Some((k, v)) = line.split_once('=') {
            env.insert(k.to_string(), v.to_string());
            from_input.insert(k.to_string());
        }
    }
    if let Some(json) = json {
        env.insert("FLY_SYNC_CONFIG".into(), String::from_utf8_lossy(json).into_owned());
    }

    // The secrets to look for: the harness's markers, and every secret value of the environment that is long
    // enough to be unmistakable and that the input does not also use elsewhere (as a key, a target name…, which
    // messages may legitimately echo).
    let raw = String::from_utf8_lossy(rest);
    let mut secrets: Vec<String> = [common::SYNC_SECRET, common::WEBHOOK_SECRET, common::API_TOKEN, WORKER_TOKEN]
        .iter()
        .filter(|m| !raw.contains(**m))
        .map(|m| m.to_string())
        .collect();
    for (k, v) in env.iter().filter(|(k, _)| is_secret_var(k)) {
        let v = v.trim();
        let bare = v.rsplit(char::is_whitespace).next().unwrap_or(v);
        // A value set by an input line occurs once in the input (its own line); a base value not at all.
        let own = usize::from(from_input.contains(k));
        for value in [v, bare] {
            if value.chars().count() >= 20 && raw.matches(value).count() <= own {
                secrets.push(value.to_string());
            }
        }
    }
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();

    let set = |k: &str| env.get(k).is_some_and(|v| !v.trim().is_empty());
    let simple = ["FLY_APP_NAME", "FLY_SYNC_TYPES", "FLY_SYNC_ROUTES", "FLY_SYNC_PATH", "FLY_SYNC_FAN_OUT", "FLY_RESTART_TYPES",
        "FLY_RESTART_ON_REQUEST", "FLY_MAX_UNAVAILABLE", "FLY_API_URL", "FLY_APP_URL", "FLY_SYNC_INCLUDE_DRAFTS",
        "FLY_SYNC_INCLUDE_VERSIONS", "FLY_RESTART_TIMEOUT_MS"];
    let mixed = set("FLY_SYNC_CONFIG") && simple.iter().any(|k| set(k));
    match Config::from_env(&env) {
        Err(e) => {
            common::assert_input_error(&e);
            common::assert_no_secret(&e.message, &secrets);
            common::assert_no_secret(e.field.as_deref().unwrap_or_default(), &secrets);
        }
        Ok(config) => {
            assert!(!mixed, "FLY_SYNC_CONFIG and a simple variable were accepted together");
            assert_eq!(Some(config.sync_secret.expose()), env.get("FLY_SYNC_SECRET").map(String::as_str), "the secret as given");
            if let Some(s) = &config.webhook_secret {
                assert_eq!(Some(s.expose()), env.get("SANITY_WEBHOOK_SECRET").map(String::as_str), "the secret as given");
            }
            assert!((1_000..=900_000).contains(&config.budget_ms));
            assert!((100..=120_000).contains(&config.request_timeout_ms));
            assert!((1_000..=86_400_000).contains(&config.max_age_ms));
            assert!(config.sync_secret.expose().chars().count() >= 16);
            assert!(!config.targets.is_empty());
            for (i, t) in config.targets.iter().enumerate() {
                assert!(t.max_unavailable.region_cap(1) >= 1 && t.max_unavailable.total_cap() >= 1, "targets[{i}].maxUnavailable");
                assert!(t.sync_path.starts_with('/'), "targets[{i}].syncPath");
                assert!(t.app_url.starts_with("http://") || t.app_url.starts_with("https://"));
                assert!(t.machines_api_url.starts_with("http://") || t.machines_api_url.starts_with("https://"));
                let auth = t.token.authorization();
                assert!(auth.starts_with("FlyV1 ") || auth.starts_with("Bearer "), "authorization scheme");
                assert!(!t.token.bare().is_empty() && !t.token.bare().contains(char::is_whitespace));
                assert!(config.targets[..i].iter().all(|other| other.name != t.name), "target names are unique");
            }
            common::assert_no_secret(&format!("{config:?}"), &secrets);
            // An engine from this configuration: its first requests' log lines hold no secret.
            let event = br#"{"data": {"_id": "article-1", "_type": "article", "_rev": "r1", "_updatedAt": "2026-11-27T10:00:00Z",
                "slug": "hello", "previousSlug": "hi", "locale": "en", "market": "us", "op": "update"}}"#;
            if let Ok(mut engine) = entry::from_function(&env, event, b"null", common::NOW, 1) {
                if let sanity_fly_sync::engine::Action::Send { requests } = engine.poll(common::NOW) {
                    for r in requests {
                        common::assert_no_secret(&serde_json::to_string(&r.log).unwrap(), &secrets);
                    }
                }
            }
        }
    }
});
