//! One validated configuration, read from the Function's environment.
//!
//! Simple form (one app): `FLY_APP_NAME`, `FLY_API_TOKEN`, `FLY_SYNC_SECRET` and a few optional variables.
//! Full form: `FLY_SYNC_CONFIG`, a JSON document with several targets. Secrets live only in environment
//! variables (a target names its token's variable with `tokenEnv`), so the JSON can be committed.

use crate::error::SyncError;
use crate::fly_token::FlyToken;
use crate::json_read::{str_list, Obj};
use crate::routes::RouteTemplate;
use crate::signature::DEFAULT_MAX_AGE_MS;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

pub const DEFAULT_SYNC_PATH: &str = "/internal/content-sync";
pub const DEFAULT_MACHINES_API_URL: &str = "https://api.machines.dev";
pub const DEFAULT_BUDGET_MS: u64 = 25_000;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_RESTART_TIMEOUT_MS: u64 = 60_000;
const MIN_SECRET_LEN: usize = 16;

/// A shared secret; shown nowhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub targets: Vec<Target>,
    /// Signs what we send to the receivers (`FLY_SYNC_SECRET`).
    pub sync_secret: Secret,
    /// Verifies GROQ-powered webhook deliveries (`SANITY_WEBHOOK_SECRET`), for the webhook entry only.
    pub webhook_secret: Option<Secret>,
    /// Everything, retries included, must finish inside this (keep it under the Function's timeout).
    pub budget_ms: u64,
    pub request_timeout_ms: u64,
    /// Accepted age of an incoming webhook signature.
    pub max_age_ms: u64,
    /// Plan and report, but send nothing that changes anything.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanOut {
    /// POST to every started Machine, each pinned with `fly-force-instance-id`.
    Every,
    /// POST once through the app URL: for apps whose Machines share one store.
    One,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmapped {
    /// A document whose region field has no mapping goes everywhere (the safe default: nothing stays stale).
    All,
    /// …or nowhere.
    None,
}

/// Send a document only to the regions its field names (`market: "jp"` → `nrt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionRule {
    pub field: String,
    pub map: BTreeMap<String, Vec<String>>,
    pub unmapped: Unmapped,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartRule {
    /// Document types whose change needs a restart (settings read at boot).
    pub types: Vec<String>,
    /// Restart a Machine whose receiver answers `restart: "required"`.
    pub on_request: bool,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub app: String,
    pub token: FlyToken,
    /// Empty: every type the blueprint lets through.
    pub types: Vec<String>,
    pub routes: BTreeMap<String, Vec<RouteTemplate>>,
    pub sync_path: String,
    pub fan_out: FanOut,
    pub regions: Option<RegionRule>,
    pub restart: RestartRule,
    pub max_unavailable: usize,
    pub machines_api_url: String,
    pub app_url: String,
    pub include_drafts: bool,
    pub include_versions: bool,
    /// How long one Machine may take to be `started` with passing checks after a restart.
    pub restart_timeout_ms: u64,
}

impl Target {
    pub fn accepts_type(&self, doc_type: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == doc_type)
    }
}

pub type Env = BTreeMap<String, String>;

impl Config {
    /// Read the configuration from the Function's environment.
    pub fn from_env(env: &Env) -> Result<Config, SyncError> {
        let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let sync_secret = match get("FLY_SYNC_SECRET") {
            None => return Err(SyncError::expected("FLY_SYNC_SECRET", "the shared secret the receivers verify", "nothing")),
            Some(s) if s.chars().count() < MIN_SECRET_LEN => {
                return Err(SyncError::expected(
                    "FLY_SYNC_SECRET",
                    format!("at least {MIN_SECRET_LEN} characters (try `openssl rand -hex 32`)"),
                    format!("{} characters", s.chars().count()),
                ))
            }
            Some(s) => Secret(s.to_string()),
        };
        let webhook_secret = get("SANITY_WEBHOOK_SECRET").map(|s| Secret(s.to_string()));

        let (targets, globals) = match get("FLY_SYNC_CONFIG") {
            Some(json) => {
                let doc: Value = serde_json::from_str(json).map_err(|e| {
                    SyncError::expected("FLY_SYNC_CONFIG", "a JSON document", format!("invalid JSON ({})", e.to_string().split(" at ").next().unwrap_or("syntax error")))
                })?;
                let root = Obj::root(&doc, "FLY_SYNC_CONFIG", "FLY_SYNC_CONFIG")?;
                root.deny_unknown(&["version", "targets", "budgetMs", "requestTimeoutMs", "maxAgeSeconds", "dryRun"])?;
                if let Some(v) = root.u64_opt("version", 1, 1)? {
                    debug_assert_eq!(v, 1);
                }
                let list = match root.get("targets") {
                    Some(Value::Array(items)) if !items.is_empty() => items,
                    Some(other) => {
                        return Err(SyncError::expected(root.field("targets"), "a non-empty list of targets", crate::error::kind_of(other)))
                    }
                    None => return Err(SyncError::expected(root.field("targets"), "a non-empty list of targets", "nothing")),
                };
                let mut targets = Vec::new();
                for (i, item) in list.iter().enumerate() {
                    let obj = Obj::root(item, &format!("{}[{i}]", root.field("targets")), "")?;
                    targets.push(target_from_json(&obj, env)?);
                }
                let globals = Globals {
                    budget_ms: root.u64_opt("budgetMs", 1_000, 900_000)?,
                    request_timeout_ms: root.u64_opt("requestTimeoutMs", 100, 120_000)?,
                    max_age_s: root.u64_opt("maxAgeSeconds", 1, 86_400)?,
                    dry_run: root.bool_opt("dryRun")?,
                };
                (targets, globals)
            }
            None => (vec![target_from_simple_env(env)?], Globals::default()),
        };

        let mut names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(dup) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(SyncError::bad_field("FLY_SYNC_CONFIG.targets", format!("two targets are named `{}`; names must be unique", dup[0])));
        }

        // Environment variables override the JSON's globals: they are the knobs people turn when debugging.
        Ok(Config {
            targets,
            sync_secret,
            webhook_secret,
            budget_ms: env_u64(env, "FLY_SYNC_BUDGET_MS", 1_000, 900_000)?.or(globals.budget_ms).unwrap_or(DEFAULT_BUDGET_MS),
            request_timeout_ms: env_u64(env, "FLY_SYNC_REQUEST_TIMEOUT_MS", 100, 120_000)?
                .or(globals.request_timeout_ms)
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
            max_age_ms: env_u64(env, "FLY_SYNC_MAX_AGE_SECONDS", 1, 86_400)?
                .or(globals.max_age_s)
                .map(|s| s * 1000)
                .unwrap_or(DEFAULT_MAX_AGE_MS),
            dry_run: env_bool(env, "FLY_SYNC_DRY_RUN")?.or(globals.dry_run).unwrap_or(false),
        })
    }
}

#[derive(Default)]
struct Globals {
    budget_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    max_age_s: Option<u64>,
    dry_run: Option<bool>,
}

fn env_u64(env: &Env, key: &str, min: u64, max: u64) -> Result<Option<u64>, SyncError> {
    match env.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(SyncError::expected(key, format!("a whole number from {min} to {max}"), "another value")),
        },
    }
}

fn env_bool(env: &Env, key: &str) -> Result<Option<bool>, SyncError> {
    match env.get(key).map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty()).as_deref() {
        None => Ok(None),
        Some("1" | "true" | "yes" | "on") => Ok(Some(true)),
        Some("0" | "false" | "no" | "off") => Ok(Some(false)),
        Some(_) => Err(SyncError::expected(key, "true or false", "another value")),
    }
}

fn env_list(env: &Env, key: &str) -> Vec<String> {
    env.get(key)
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default()
}

fn token_from_env(env: &Env, var: &str, field: &str) -> Result<FlyToken, SyncError> {
    match env.get(var) {
        Some(raw) => FlyToken::parse(var, raw),
        None => Err(SyncError::expected(
            field,
            format!("a Fly API token in the environment variable `{var}` (`fly tokens create deploy`)"),
            "no such variable",
        )),
    }
}

/// Validated pieces shared by both forms.
fn app_name(field: &str, name: &str) -> Result<String, SyncError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(name.to_string())
    } else {
        Err(SyncError::expected(field, "a Fly app name (lowercase letters, digits and `-`)", "another value"))
    }
}

fn base_url(field: &str, url: &str) -> Result<String, SyncError> {
    // Trimmed first: `http:///` has no host (found by fuzzing: it was accepted as `http:`).
    let url = url.trim_end_matches('/');
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') && !host.contains(['?', '#', ' ']) => Ok(url.to_string()),
        _ => Err(SyncError::expected(field, "an http:// or https:// base URL", "another value")),
    }
}

fn sync_path(field: &str, path: &str) -> Result<String, SyncError> {
    if path.starts_with('/') && !path.contains(['?', '#', ' ']) {
        Ok(path.to_string())
    } else {
        Err(SyncError::expected(field, "a path starting with `/`", "another value"))
    }
}

fn region_code(field: &str, code: &str) -> Result<String, SyncError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_lowercase()) {
        Ok(code.to_string())
    } else {
        Err(SyncError::expected(field, "a Fly region code such as `ord`", "another value"))
    }
}

fn parse_routes(field: &str, value: &Value) -> Result<BTreeMap<String, Vec<RouteTemplate>>, SyncError> {
    let obj = Obj::root(value, field, field)?;
    let mut routes = BTreeMap::new();
    for (doc_type, list) in obj.map {
        let f = obj.field(doc_type);
        let templates = str_list(&f, list)?
            .iter()
            .enumerate()
            .map(|(i, t)| RouteTemplate::parse(&format!("{f}[{i}]"), t))
            .collect::<Result<Vec<_>, _>>()?;
        routes.insert(doc_type.clone(), templates);
    }
    Ok(routes)
}

/// `article=/blog/{slug}|/{locale}/blog/{slug},page=/{slug}`
fn parse_routes_env(value: &str) -> Result<BTreeMap<String, Vec<RouteTemplate>>, SyncError> {
    let mut routes: BTreeMap<String, Vec<RouteTemplate>> = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (doc_type, templates) = entry.split_once('=').ok_or_else(|| {
            SyncError::expected("FLY_SYNC_ROUTES", "entries like `article=/blog/{slug}` separated by commas", "an entry without `=`")
        })?;
        let list = routes.entry(doc_type.trim().to_string()).or_default();
        for t in templates.split('|') {
            list.push(RouteTemplate::parse("FLY_SYNC_ROUTES", t.trim())?);
        }
    }
    Ok(routes)
}

fn target_from_simple_env(env: &Env) -> Result<Target, SyncError> {
    let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let app = app_name(
        "FLY_APP_NAME",
        get("FLY_APP_NAME").ok_or_else(|| {
            SyncError::expected("FLY_APP_NAME", "the Fly app to sync (or a FLY_SYNC_CONFIG document)", "nothing")
        })?,
    )?;
    let restart_types = env_list(env, "FLY_RESTART_TYPES");
    Ok(Target {
        name: app.clone(),
        token: token_from_env(env, "FLY_API_TOKEN", "FLY_API_TOKEN")?,
        types: env_list(env, "FLY_SYNC_TYPES"),
        routes: get("FLY_SYNC_ROUTES").map(parse_routes_env).transpose()?.unwrap_or_default(),
        sync_path: get("FLY_SYNC_PATH").map(|p| sync_path("FLY_SYNC_PATH", p)).transpose()?.unwrap_or(DEFAULT_SYNC_PATH.into()),
        fan_out: match get("FLY_SYNC_FAN_OUT") {
            None | Some("every") => FanOut::Every,
            Some("one") => FanOut::One,
            Some(_) => return Err(SyncError::expected("FLY_SYNC_FAN_OUT", "`every` or `one`", "another value")),
        },
        regions: None,
        restart: RestartRule { types: restart_types, on_request: env_bool(env, "FLY_RESTART_ON_REQUEST")?.unwrap_or(true) },
        max_unavailable: env_u64(env, "FLY_MAX_UNAVAILABLE", 1, 1000)?.unwrap_or(1) as usize,
        machines_api_url: get("FLY_API_URL")
            .map(|u| base_url("FLY_API_URL", u))
            .transpose()?
            .unwrap_or(DEFAULT_MACHINES_API_URL.into()),
        app_url: get("FLY_APP_URL").map(|u| base_url("FLY_APP_URL", u)).transpose()?.unwrap_or(format!("https://{app}.fly.dev")),
        include_drafts: env_bool(env, "FLY_SYNC_INCLUDE_DRAFTS")?.unwrap_or(false),
        include_versions: env_bool(env, "FLY_SYNC_INCLUDE_VERSIONS")?.unwrap_or(false),
        restart_timeout_ms: env_u64(env, "FLY_RESTART_TIMEOUT_MS", 1_000, 900_000)?.unwrap_or(DEFAULT_RESTART_TIMEOUT_MS),
        app,
    })
}

const TARGET_KEYS: &[&str] = &[
    "name", "app", "tokenEnv", "types", "routes", "syncPath", "fanOut", "regions", "restart", "maxUnavailable",
    "machinesApiUrl", "appUrl", "includeDrafts", "includeVersions", "restartTimeoutMs",
];

fn target_from_json(obj: &Obj, env: &Env) -> Result<Target, SyncError> {
    obj.deny_unknown(TARGET_KEYS)?;
    let app = app_name(&obj.field("app"), obj.str_req("app", "a Fly app name")?)?;
    let token_env = obj.str_opt("tokenEnv")?.unwrap_or("FLY_API_TOKEN");
    let restart = match obj.get("restart") {
        None => RestartRule { types: vec![], on_request: true },
        Some(Value::String(s)) if s == "never" => RestartRule::default(),
        Some(Value::String(s)) if s == "onRequest" => RestartRule { types: vec![], on_request: true },
        Some(Value::Object(_)) => {
            let r = obj.obj("restart")?.expect("checked object");
            r.deny_unknown(&["types", "onRequest"])?;
            RestartRule { types: r.str_list_opt("types")?.unwrap_or_default(), on_request: r.bool_opt("onRequest")?.unwrap_or(true) }
        }
        Some(_) => {
            return Err(SyncError::expected(
                obj.field("restart"),
                "`never`, `onRequest`, or {\"types\": [...], \"onRequest\": true|false}",
                "another value",
            ))
        }
    };
    let regions = match obj.obj("regions")? {
        None => None,
        Some(r) => {
            r.deny_unknown(&["field", "map", "unmapped"])?;
            let field = r.str_req("field", "the document field that names the market (e.g. `market`)")?.to_string();
            let map_obj = r.obj("map")?.ok_or_else(|| SyncError::expected(r.field("map"), "an object of value → region codes", "nothing"))?;
            let mut map = BTreeMap::new();
            for (value, codes) in map_obj.map {
                let f = map_obj.field(value);
                let codes = str_list(&f, codes)?
                    .iter()
                    .enumerate()
                    .map(|(i, c)| region_code(&format!("{f}[{i}]"), c))
                    .collect::<Result<Vec<_>, _>>()?;
                map.insert(value.clone(), codes);
            }
            let unmapped = match r.str_opt("unmapped")? {
                None | Some("all") => Unmapped::All,
                Some("none") => Unmapped::None,
                Some(_) => return Err(SyncError::expected(r.field("unmapped"), "`all` or `none`", "another value")),
            };
            Some(RegionRule { field, map, unmapped })
        }
    };
    Ok(Target {
        name: obj.str_opt("name")?.map(String::from).unwrap_or_else(|| app.clone()),
        token: token_from_env(env, token_env, &obj.field("tokenEnv"))?,
        types: obj.str_list_opt("types")?.unwrap_or_default(),
        routes: obj.get("routes").map(|v| parse_routes(&obj.field("routes"), v)).transpose()?.unwrap_or_default(),
        sync_path: obj.str_opt("syncPath")?.map(|p| sync_path(&obj.field("syncPath"), p)).transpose()?.unwrap_or(DEFAULT_SYNC_PATH.into()),
        fan_out: match obj.str_opt("fanOut")? {
            None | Some("every") => FanOut::Every,
            Some("one") => FanOut::One,
            Some(_) => return Err(SyncError::expected(obj.field("fanOut"), "`every` or `one`", "another value")),
        },
        regions,
        restart,
        max_unavailable: obj.u64_opt("maxUnavailable", 1, 1000)?.unwrap_or(1) as usize,
        machines_api_url: obj
            .str_opt("machinesApiUrl")?
            .map(|u| base_url(&obj.field("machinesApiUrl"), u))
            .transpose()?
            .unwrap_or(DEFAULT_MACHINES_API_URL.into()),
        app_url: obj.str_opt("appUrl")?.map(|u| base_url(&obj.field("appUrl"), u)).transpose()?.unwrap_or(format!("https://{app}.fly.dev")),
        include_drafts: obj.bool_opt("includeDrafts")?.unwrap_or(false),
        include_versions: obj.bool_opt("includeVersions")?.unwrap_or(false),
        restart_timeout_ms: obj.u64_opt("restartTimeoutMs", 1_000, 900_000)?.unwrap_or(DEFAULT_RESTART_TIMEOUT_MS),
        app,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    pub const SECRET: &str = "0123456789abcdef-sync";

    #[test]
    fn simple_form_with_defaults() {
        let c = Config::from_env(&env(&[
            ("FLY_APP_NAME", "my-site"),
            ("FLY_API_TOKEN", "FlyV1 fm2_abc"),
            ("FLY_SYNC_SECRET", SECRET),
        ]))
        .unwrap();
        let t = &c.targets[0];
        assert_eq!((t.name.as_str(), t.app.as_str()), ("my-site", "my-site"));
        assert_eq!(t.app_url, "https://my-site.fly.dev");
        assert_eq!(t.machines_api_url, "https://api.machines.dev");
        assert_eq!(t.sync_path, "/internal/content-sync");
        assert_eq!(t.fan_out, FanOut::Every);
        assert_eq!(t.max_unavailable, 1);
        assert!(t.restart.on_request && t.restart.types.is_empty());
        assert!(!c.dry_run && c.budget_ms == DEFAULT_BUDGET_MS && c.max_age_ms == 300_000);
        assert!(t.accepts_type("anything"));
    }

    #[test]
    fn simple_form_with_every_variable() {
        let c = Config::from_env(&env(&[
            ("FLY_APP_NAME", "my-site"),
            ("FLY_API_TOKEN", "fm2_abc"),
            ("FLY_SYNC_SECRET", SECRET),
            ("FLY_SYNC_TYPES", "article, page"),
            ("FLY_SYNC_ROUTES", "article=/blog/{slug}|/{locale}/blog/{slug},page=/{slug}"),
            ("FLY_RESTART_TYPES", "siteSettings"),
            ("FLY_RESTART_ON_REQUEST", "false"),
            ("FLY_MAX_UNAVAILABLE", "2"),
            ("FLY_API_URL", "http://127.0.0.1:4280/"),
            ("FLY_APP_URL", "http://127.0.0.1:8080"),
            ("FLY_SYNC_DRY_RUN", "yes"),
            ("FLY_SYNC_BUDGET_MS", "8000"),
        ]))
        .unwrap();
        let t = &c.targets[0];
        assert_eq!(t.types, ["article", "page"]);
        assert_eq!(t.routes["article"].len(), 2);
        assert_eq!(t.restart, RestartRule { types: vec!["siteSettings".into()], on_request: false });
        assert_eq!(t.max_unavailable, 2);
        assert_eq!(t.machines_api_url, "http://127.0.0.1:4280");
        assert!(c.dry_run);
        assert_eq!(c.budget_ms, 8000);
        assert!(!t.accepts_type("author"));
    }

    #[test]
    fn json_form_with_several_targets() {
        let json = r#"{"version":1,"budgetMs":9000,"targets":[
            {"app":"web","routes":{"article":["/blog/{slug}"]},"regions":{"field":"market","map":{"us":["ord","iad"],"jp":"nrt"}},
             "restart":{"types":["siteSettings"]},"maxUnavailable":3},
            {"name":"worker","app":"feed-worker","tokenEnv":"FLY_WORKER_TOKEN","fanOut":"one","restart":"never","types":"article"}]}"#;
        let c = Config::from_env(&env(&[
            ("FLY_SYNC_CONFIG", json),
            ("FLY_API_TOKEN", "fm2_web"),
            ("FLY_WORKER_TOKEN", "fm2_worker"),
            ("FLY_SYNC_SECRET", SECRET),
        ]))
        .unwrap();
        assert_eq!(c.budget_ms, 9000);
        let web = &c.targets[0];
        let regions = web.regions.as_ref().unwrap();
        assert_eq!(regions.map["jp"], ["nrt"]);
        assert_eq!(regions.unmapped, Unmapped::All);
        assert!(web.restart.on_request);
        let worker = &c.targets[1];
        assert_eq!(worker.name, "worker");
        assert_eq!(worker.token.authorization(), "FlyV1 fm2_worker");
        assert_eq!(worker.fan_out, FanOut::One);
        assert_eq!(worker.restart, RestartRule::default());
    }
}
