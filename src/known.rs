//! What a process remembers between runs (`ProcessMemory`): the configuration read from its environment, and
//! each app's Machines as last listed — when, and that answer's exact text. A run starts from it
//! (`Engine::with_known`): it pushes to the Machines it knows while its own list is in flight, then reconciles
//! with the list (pushes to Machines it did not know, skips the ones gone), and a list answer identical to the
//! remembered one is not read again. Plain data: whoever drives the engines keeps one (the wasm boundary keeps
//! one per process); the engine decides how it is used.

use crate::config::{Config, Target};
use crate::engine::Engine;
use crate::entry::{self, StartError};
use crate::machines::Machine;
use std::sync::Arc;

/// A remembered list is used to push ahead of the list only while it is this recent (5 minutes). The list the run
/// reads itself still decides which Machines end up pushed, skipped or restarted: an older one would only send
/// more pushes to Machines that are gone.
pub const PUSH_AHEAD_MAX_AGE_MS: u64 = 5 * 60 * 1000;

/// One app's Machine list as read at `read_at_ms`.
#[derive(Debug, Clone)]
pub struct KnownList {
    pub read_at_ms: u64,
    /// The list answer's exact text: an answer equal to it is this list again.
    pub body: Arc<str>,
    /// The Machines as read from `body`, in the answer's order.
    pub machines: Arc<[Machine]>,
}

/// The last list read per app (Machines API URL and app name).
#[derive(Debug, Clone, Default)]
pub struct KnownFleets {
    lists: Vec<(String, KnownList)>,
}

/// The key of `target`'s app: the same app through the same Machines API is the same fleet, whatever the target.
pub fn key(target: &Target) -> String {
    format!("{} {}", target.machines_api_url, target.app)
}

impl KnownFleets {
    pub fn get(&self, key: &str) -> Option<&KnownList> {
        self.lists.iter().find(|(k, _)| k == key).map(|(_, l)| l)
    }

    /// Remember `list` for `key`, unless a list read later is remembered already (runs end in any order).
    pub fn learn(&mut self, key: String, list: KnownList) {
        match self.lists.iter_mut().find(|(k, _)| *k == key) {
            Some((_, known)) if known.read_at_ms > list.read_at_ms => {}
            Some((_, known)) => *known = list,
            None => self.lists.push((key, list)),
        }
    }

    pub fn clear(&mut self) {
        self.lists.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }
}

/// Everything a process keeps between runs.
#[derive(Debug, Default)]
pub struct ProcessMemory {
    /// The configuration read from the environment and client options whose JSON texts are `.0` and `.1`: the
    /// same texts, the same settings.
    config: Option<(Box<[u8]>, Box<[u8]>, Arc<Config>)>,
    pub fleets: KnownFleets,
}

impl ProcessMemory {
    /// The configuration of the environment `env_json` (`{"NAME": "value", …}`) with the Function's
    /// `context.clientOptions` (`client_options_json`, JSON text or `null`): read once per pair of texts.
    pub fn config(&mut self, env_json: &[u8], client_options_json: &[u8]) -> Result<Arc<Config>, StartError> {
        if let Some((env, options, config)) = &self.config {
            if **env == *env_json && **options == *client_options_json {
                return Ok(config.clone());
            }
        }
        let env = entry::env_from_json(env_json)?;
        let config = Config::from_env(&env).map_err(StartError::Config)?;
        let config = Arc::new(entry::with_client_options(config, client_options_json)?);
        self.config = Some((env_json.into(), client_options_json.into(), config.clone()));
        Ok(config)
    }

    /// A Function run (`entry::from_function`) that starts from what this process knows.
    pub fn from_function(&mut self, env_json: &[u8], event_json: &[u8], client_options_json: &[u8], now_ms: u64, seed: u64) -> Result<Engine, StartError> {
        let config = self.config(env_json, client_options_json)?;
        Ok(entry::function_run(config, event_json, now_ms, seed)?.with_known(&self.fleets))
    }

    /// A webhook run (`entry::from_webhook`) that starts from what this process knows.
    pub fn from_webhook(&mut self, env_json: &[u8], headers: &crate::event::Headers, body: &[u8], now_ms: u64, seed: u64) -> Result<Engine, StartError> {
        let config = self.config(env_json, b"null")?;
        Ok(entry::webhook_run(config, headers, body, now_ms, seed)?.with_known(&self.fleets))
    }

    /// Keep what `engine` has read since it last handed anything over (call after each answer fed to it).
    pub fn learn(&mut self, engine: &mut Engine) {
        for (key, list) in engine.take_learned() {
            self.fleets.learn(key, list);
        }
    }

    /// Forget everything: the next run starts as a new process's first.
    pub fn forget(&mut self) {
        self.config = None;
        self.fleets.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(at: u64) -> KnownList {
        KnownList { read_at_ms: at, body: "[]".into(), machines: Arc::from(Vec::new()) }
    }

    #[test]
    fn the_newest_list_per_app_is_kept() {
        let mut fleets = KnownFleets::default();
        fleets.learn("api web".into(), list(2));
        fleets.learn("api web".into(), list(1));
        assert_eq!(fleets.get("api web").map(|l| l.read_at_ms), Some(2), "an older read does not replace a newer one");
        fleets.learn("api web".into(), list(3));
        fleets.learn("api other".into(), list(1));
        assert_eq!((fleets.get("api web").map(|l| l.read_at_ms), fleets.get("api other").is_some()), (Some(3), true));
        fleets.clear();
        assert!(fleets.is_empty() && fleets.get("api web").is_none());
    }
}
