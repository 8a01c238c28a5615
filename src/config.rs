//! One validated configuration, read from the Function's environment.
//!
//! Simple form (one app): `FLY_APP_NAME`, `FLY_API_TOKEN`, `FLY_SYNC_SECRET` and a few optional variables.
//! Full form: `FLY_SYNC_CONFIG`, a JSON document with several targets. Secrets live only in environment
//! variables (a target names its token's variable with `tokenEnv`), so the JSON can be committed. Only the
//! variables named `FLY_*` or `SANITY_*` are read, so only those cross into the core (`ENV_PREFIXES`).
//!
//! One path: the simple variables are translated into the JSON form (`TARGET_VARS`), the run-wide variables
//! (`GLOBAL_VARS`) set its top-level keys with either form, and `read_document` alone checks that form, every
//! default and range in one place. An error in a translated field names the variable the user set. Setting
//! `FLY_SYNC_CONFIG` together with a per-target simple variable is an error naming both. Secrets are used
//! exactly as given (`Secret::parse`).

use crate::error::SyncError;
use crate::fly_token::FlyToken;
use crate::json_read::{str_list, Obj};
use crate::roll::{MaxUnavailable, PER_MILLION};
use crate::routes::RouteTemplate;
use crate::signature::DEFAULT_MAX_AGE_MS;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

pub const DEFAULT_SYNC_PATH: &str = "/internal/content-sync";
pub const DEFAULT_MACHINES_API_URL: &str = "https://api.machines.dev";
/// The resume Function's name in the blueprint (`definePubSubFunction`; `sanity-fly-sync/blueprint` makes it).
pub const DEFAULT_RESUME_FUNCTION: &str = "fly-sync-resume";
pub const DEFAULT_BUDGET_MS: u64 = 25_000;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_RESTART_TIMEOUT_MS: u64 = 60_000;
const MIN_SECRET_LEN: usize = 16;

/// A shared secret; shown nowhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret read from `field`: used exactly as given, as `@sanity/webhook` and every receiver use it, so
    /// surrounding whitespace (a pasted newline, a padded value) is a configuration error rather than something
    /// trimmed on one side and not the other. At least `min_chars` characters. The value is never echoed.
    pub fn parse(field: &str, value: &str, min_chars: usize) -> Result<Secret, SyncError> {
        let padding = |c: char| c.is_whitespace() || c == '\u{feff}';
        if value.starts_with(padding) || value.ends_with(padding) {
            return Err(SyncError::expected(
                field,
                "the secret exactly as it is used on the other side, with no surrounding whitespace",
                "a value with leading or trailing whitespace",
            ));
        }
        let len = value.chars().count();
        if len < min_chars {
            return Err(SyncError::expected(
                field,
                format!("at least {min_chars} characters (try `openssl rand -hex 32`)"),
                format!("{len} characters"),
            ));
        }
        Ok(Secret(value.to_string()))
    }

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
    /// The Function a run invokes to finish a roll it could not (`None`: wait for the next run instead).
    pub resume_function: Option<String>,
    /// Where to query Sanity (for dependents).
    pub sanity: SanityApi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanOut {
    /// POST to every started Machine, each pinned with `fly-force-instance-id`.
    Every,
    /// POST once through the app URL: for apps whose Machines share one store.
    One,
    /// LiteFS: POST to every started Machine, as `Every`; the primary applies, each replica answers once the
    /// change has replicated to it (a 503 with `Retry-After` until then, which is retried without reading the
    /// Machine first). Every Machine holds every document, so no region rule applies.
    LiteFs,
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
    /// How many Machines may be down at once during a roll: a count, or a fraction of each region.
    pub max_unavailable: MaxUnavailable,
    pub machines_api_url: String,
    pub app_url: String,
    pub include_drafts: bool,
    pub include_versions: bool,
    /// How long one Machine may take to be `started` with passing checks after a restart.
    pub restart_timeout_ms: u64,
    /// Which documents that reference a changed one are refreshed with it.
    pub dependents: DependentsRule,
    /// The Fly process groups to push to (`fly_process_group` in each Machine's metadata); `None`: every group
    /// that serves the app.
    pub process_groups: Option<Vec<String>>,
}

/// Documents that reference a changed one show it too (a post shows its author): they are looked up in Sanity
/// (`references()`), to `depth` levels (a page showing a post showing its author is depth 2; 0 turns it off),
/// at most `cap` of them (more are covered by their types' tags), of `types` (empty: any type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependentsRule {
    pub depth: u8,
    pub cap: u32,
    pub types: Vec<String>,
}

impl Default for DependentsRule {
    fn default() -> Self {
        DependentsRule { depth: 1, cap: 50, types: Vec::new() }
    }
}

/// Where the run may query Sanity (for dependents): the project and dataset of the change, and a token that may
/// read it. A Function gets them from its context (`context.clientOptions`, with its robot token); the webhook
/// entry from `SANITY_PROJECT_ID`, `SANITY_DATASET`, `SANITY_API_READ_TOKEN`. `SANITY_API_HOST` overrides where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanityApi {
    pub project_id: Option<String>,
    pub dataset: Option<String>,
    pub api_host: Option<String>,
    pub token: Option<Secret>,
}

/// The Sanity API version the run's queries are written for.
pub const SANITY_API_VERSION: &str = "v2025-02-19";

impl SanityApi {
    /// The query endpoint for the published perspective, when the project and dataset are known.
    pub fn query_url(&self) -> Option<String> {
        let (project, dataset) = (self.project_id.as_deref()?, self.dataset.as_deref()?);
        let host = self.api_host.clone().unwrap_or_else(|| format!("https://{project}.api.sanity.io"));
        // The answer need not echo the query back (a few hundred bytes per level).
        Some(format!("{}/{SANITY_API_VERSION}/data/query/{dataset}?perspective=published&returnQuery=false", host.trim_end_matches('/')))
    }

    /// Fill what the environment left open from the Function's context (`context.clientOptions`): its project,
    /// dataset and token are the change's own. The host stays the environment's when set (local tests); the
    /// context's is the API's global host (`https://api.sanity.io`), which, as `@sanity/client` does, takes the
    /// project in front of it.
    pub fn with_context(mut self, context: SanityApi) -> SanityApi {
        self.project_id = context.project_id.or(self.project_id);
        self.dataset = context.dataset.or(self.dataset);
        self.token = context.token.or(self.token);
        if self.api_host.is_none() {
            self.api_host = match (context.api_host, &self.project_id) {
                (Some(host), Some(project)) => Some(project_host(&host, project)),
                _ => None,
            };
        }
        self
    }
}

/// `https://api.sanity.io` with project `abc` → `https://abc.api.sanity.io`.
fn project_host(host: &str, project: &str) -> String {
    let host = host.trim_end_matches('/');
    match host.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{project}.{rest}"),
        None => format!("https://{project}.{host}"),
    }
}

impl Target {
    pub fn accepts_type(&self, doc_type: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == doc_type)
    }
}

pub type Env = BTreeMap<String, String>;

/// How a simple variable's text becomes a value of the JSON form.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    /// Comma-separated.
    List,
    Bool,
    Number,
    /// `type=/a/{slug}|/b/{slug},type2=…`
    Routes,
}

/// The simple form's per-target variables and the target key (in `FLY_SYNC_CONFIG`) each one sets.
const TARGET_VARS: &[(&str, &str, Kind)] = &[
    ("FLY_APP_NAME", "app", Kind::Text),
    ("FLY_SYNC_TYPES", "types", Kind::List),
    ("FLY_SYNC_ROUTES", "routes", Kind::Routes),
    ("FLY_SYNC_PATH", "syncPath", Kind::Text),
    ("FLY_SYNC_FAN_OUT", "fanOut", Kind::Text),
    ("FLY_RESTART_TYPES", "restart.types", Kind::List),
    ("FLY_RESTART_ON_REQUEST", "restart.onRequest", Kind::Bool),
    ("FLY_MAX_UNAVAILABLE", "maxUnavailable", Kind::Number),
    ("FLY_API_URL", "machinesApiUrl", Kind::Text),
    ("FLY_APP_URL", "appUrl", Kind::Text),
    ("FLY_SYNC_INCLUDE_DRAFTS", "includeDrafts", Kind::Bool),
    ("FLY_SYNC_INCLUDE_VERSIONS", "includeVersions", Kind::Bool),
    ("FLY_RESTART_TIMEOUT_MS", "restartTimeoutMs", Kind::Number),
    ("FLY_SYNC_DEPENDENTS_DEPTH", "dependents.depth", Kind::Number),
    ("FLY_SYNC_DEPENDENTS_CAP", "dependents.cap", Kind::Number),
    ("FLY_SYNC_DEPENDENT_TYPES", "dependents.types", Kind::List),
    ("FLY_PROCESS_GROUPS", "processGroups", Kind::List),
];

/// Run-wide variables, read with either form: each sets (and overrides) a top-level key of the JSON form.
/// They are the knobs people turn while debugging, so they win over the document.
const GLOBAL_VARS: [(&str, &str, Kind); 5] = [
    ("FLY_SYNC_RESUME_FUNCTION", "resumeFunction", Kind::Text),
    ("FLY_SYNC_BUDGET_MS", "budgetMs", Kind::Number),
    ("FLY_SYNC_REQUEST_TIMEOUT_MS", "requestTimeoutMs", Kind::Number),
    ("FLY_SYNC_MAX_AGE_SECONDS", "maxAgeSeconds", Kind::Number),
    ("FLY_SYNC_DRY_RUN", "dryRun", Kind::Bool),
];

/// The JSON form as read (from `FLY_SYNC_CONFIG`, or translated from the simple variables), with the
/// variable each translated field came from, so an error names what the user actually set.
struct Document {
    json: Value,
    /// (field path in the JSON form, the variable it came from)
    sources: Vec<(String, &'static str)>,
}

impl Document {
    /// Rename an error's field (and the message's leading mention of it) to the variable it came from.
    fn blame(&self, mut e: SyncError) -> SyncError {
        let Some(field) = e.field.clone() else { return e };
        let within = |path: &str| field == path || field.strip_prefix(path).is_some_and(|r| r.starts_with(['.', '[']));
        if let Some((_, var)) = self.sources.iter().find(|(path, _)| within(path)) {
            e.message = e.message.replacen(&format!("`{field}`"), &format!("`{var}`"), 1);
            e.field = Some(var.to_string());
        }
        e
    }
}

/// Set `path` (`restart.types`) in `obj`, creating the objects on the way.
fn insert_path(obj: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            obj.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let inner = obj.entry(head).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = inner {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// A variable's text as a JSON-form value. Only the syntax is read here; what is allowed (ranges, shapes) is
/// checked once, on the JSON form. Text that is not of its kind stays a string, which that check then refuses.
fn env_value(var: &str, text: &str, kind: Kind) -> Result<Value, SyncError> {
    let list = |text: &str| text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.into())).collect();
    Ok(match kind {
        Kind::Text => Value::String(text.to_string()),
        Kind::List => Value::Array(list(text)),
        Kind::Bool => match text.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Value::Bool(true),
            "0" | "false" | "no" | "off" => Value::Bool(false),
            _ => Value::String(text.to_string()),
        },
        Kind::Number => text.parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::String(text.to_string())),
        Kind::Routes => {
            let mut routes = Map::new();
            for entry in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (doc_type, templates) = entry.split_once('=').ok_or_else(|| {
                    SyncError::expected(var, "entries like `article=/blog/{slug}` separated by commas", "an entry without `=`")
                })?;
                let list = routes.entry(doc_type.trim()).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = list {
                    list.extend(templates.split('|').map(|t| Value::String(t.trim().to_string())));
                }
            }
            Value::Object(routes)
        }
    })
}

/// The configuration document: `FLY_SYNC_CONFIG`, or the simple variables translated into that form. Setting
/// both is an error naming both, so nothing is silently ignored.
fn document(env: &Env) -> Result<Document, SyncError> {
    let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut sources = Vec::new();
    let mut json = match get("FLY_SYNC_CONFIG") {
        Some(text) => {
            let simple: Vec<&str> = TARGET_VARS.iter().map(|(var, ..)| *var).filter(|var| get(var).is_some()).collect();
            if !simple.is_empty() {
                return Err(SyncError::bad_field(
                    "FLY_SYNC_CONFIG",
                    format!(
                        "is set together with {}: use one form. Move those settings into FLY_SYNC_CONFIG's targets, \
                         or unset FLY_SYNC_CONFIG (the blueprint's `env` sets the simple variables: remove them there)",
                        simple.join(", ")
                    ),
                ));
            }
            crate::limits::parse_json("FLY_SYNC_CONFIG", text.as_bytes(), "a JSON document")?
        }
        None => {
            let Some(_) = get("FLY_APP_NAME") else {
                return Err(SyncError::expected("FLY_APP_NAME", "the Fly app to sync (or a FLY_SYNC_CONFIG document)", "nothing"));
            };
            let mut target = Map::new();
            for &(var, key, kind) in TARGET_VARS {
                if let Some(text) = get(var) {
                    insert_path(&mut target, key, env_value(var, text, kind)?);
                    sources.push((format!("FLY_SYNC_CONFIG.targets[0].{key}"), var));
                }
            }
            sources.push(("FLY_SYNC_CONFIG.targets[0].tokenEnv".into(), "FLY_API_TOKEN"));
            let mut root = Map::new();
            root.insert("targets".to_string(), Value::Array(vec![Value::Object(target)]));
            Value::Object(root)
        }
    };
    if let Value::Object(root) = &mut json {
        for (var, key, kind) in GLOBAL_VARS {
            if let Some(text) = get(var) {
                root.insert(key.to_string(), env_value(var, text, kind)?);
                sources.push((format!("FLY_SYNC_CONFIG.{key}"), var));
            }
        }
    }
    Ok(Document { json, sources })
}

impl Config {
    /// Read the configuration from the Function's environment: secrets from their variables, everything else
    /// from one JSON form (`FLY_SYNC_CONFIG`, or the simple variables translated into it), validated once.
    pub fn from_env(env: &Env) -> Result<Config, SyncError> {
        let secret = |var: &str, min: usize| env.get(var).filter(|v| !v.is_empty()).map(|v| Secret::parse(var, v, min)).transpose();
        let sync_secret = secret("FLY_SYNC_SECRET", MIN_SECRET_LEN)?
            .ok_or_else(|| SyncError::expected("FLY_SYNC_SECRET", "the shared secret the receivers verify", "nothing"))?;
        let webhook_secret = secret("SANITY_WEBHOOK_SECRET", 1)?;
        let doc = document(env)?;
        let (targets, run) = read_document(&doc.json, env).map_err(|e| doc.blame(e))?;
        Ok(Config {
            targets,
            sync_secret,
            webhook_secret,
            budget_ms: run.budget_ms.unwrap_or(DEFAULT_BUDGET_MS),
            request_timeout_ms: run.request_timeout_ms.unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
            max_age_ms: run.max_age_s.map(|s| s * 1000).unwrap_or(DEFAULT_MAX_AGE_MS),
            dry_run: run.dry_run.unwrap_or(false),
            resume_function: match run.resume_function {
                None => Some(DEFAULT_RESUME_FUNCTION.to_string()),
                Some(name) if name == "none" => None,
                Some(name) => Some(name),
            },
            sanity: sanity_from_env(env)?,
        })
    }
}

/// `SANITY_PROJECT_ID`, `SANITY_DATASET`, `SANITY_API_HOST`, `SANITY_API_READ_TOKEN` (each optional).
fn sanity_from_env(env: &Env) -> Result<SanityApi, SyncError> {
    let get = |k: &str| env.get(k).map(String::as_str).filter(|v| !v.is_empty());
    Ok(SanityApi {
        project_id: get("SANITY_PROJECT_ID").map(|p| project_id("SANITY_PROJECT_ID", p)).transpose()?,
        dataset: get("SANITY_DATASET").map(|d| dataset_name("SANITY_DATASET", d)).transpose()?,
        api_host: get("SANITY_API_HOST").map(|u| base_url("SANITY_API_HOST", u)).transpose()?,
        token: get("SANITY_API_READ_TOKEN").map(|t| Secret::parse("SANITY_API_READ_TOKEN", t, 1)).transpose()?,
    })
}

/// The Function's `context.clientOptions` (JSON text; `null` when the runtime gives none): its project, dataset,
/// host and token, each optional (a local `functions test` passes none of the host and token). Other keys the
/// runtime adds (`apiVersion`, `organizationId`…) are not ours to check.
pub fn sanity_from_client_options(json: &[u8]) -> Result<SanityApi, SyncError> {
    const FIELD: &str = "context.clientOptions";
    let doc = crate::limits::parse_json(FIELD, json, "a JSON object or null")?;
    if doc.is_null() {
        return Ok(SanityApi::default());
    }
    let o = Obj::root(&doc, FIELD, FIELD)?;
    let text = |key: &str| o.str_opt(key).map(|v| v.filter(|v| !v.is_empty()));
    Ok(SanityApi {
        project_id: text("projectId")?.map(|p| project_id(&o.field("projectId"), p)).transpose()?,
        dataset: text("dataset")?.map(|d| dataset_name(&o.field("dataset"), d)).transpose()?,
        api_host: text("apiHost")?.map(|u| base_url(&o.field("apiHost"), u)).transpose()?,
        token: text("token")?.map(|t| Secret::parse(&o.field("token"), t, 1)).transpose()?,
    })
}

/// A Sanity project id: lowercase letters and digits.
pub fn project_id(field: &str, id: &str) -> Result<String, SyncError> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        Ok(id.to_string())
    } else {
        Err(SyncError::expected(field, "a Sanity project id (lowercase letters and digits)", "another value"))
    }
}

/// A Sanity dataset name: lowercase letters, digits, `_` and `-`, at most 64 characters.
pub fn dataset_name(field: &str, name: &str) -> Result<String, SyncError> {
    let ok = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(name.to_string())
    } else {
        Err(SyncError::expected(field, "a Sanity dataset name (lowercase letters, digits, `_`, `-`)", "another value"))
    }
}

/// The run-wide settings of the JSON form.
struct RunSettings {
    budget_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    max_age_s: Option<u64>,
    dry_run: Option<bool>,
    resume_function: Option<String>,
}

/// The one reader of the JSON form: its targets and run-wide settings, every range checked here.
fn read_document(doc: &Value, env: &Env) -> Result<(Vec<Target>, RunSettings), SyncError> {
    let root = Obj::root(doc, "FLY_SYNC_CONFIG", "FLY_SYNC_CONFIG")?;
    root.deny_unknown(&["version", "targets", "budgetMs", "requestTimeoutMs", "maxAgeSeconds", "dryRun", "resumeFunction"])?;
    root.u64_opt("version", 1, 1)?;
    let list = match root.get("targets") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(other) => return Err(SyncError::expected(root.field("targets"), "a non-empty list of targets", crate::error::kind_of(other))),
        None => return Err(SyncError::expected(root.field("targets"), "a non-empty list of targets", "nothing")),
    };
    let mut targets = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let obj = Obj::root(item, &format!("{}[{i}]", root.field("targets")), "")?;
        targets.push(target_from_json(&obj, env)?);
    }
    // The first name (in sort order) that two targets share. A pairwise scan, not a sort: a target list is short.
    let names = || targets.iter().map(|t| t.name.as_str());
    if let Some(dup) = names().enumerate().filter(|&(i, n)| names().skip(i + 1).any(|m| m == n)).map(|(_, n)| n).min() {
        return Err(SyncError::bad_field(root.field("targets"), format!("two targets are named `{dup}`; names must be unique")));
    }
    let run = RunSettings {
        budget_ms: root.u64_opt("budgetMs", 1_000, 900_000)?,
        request_timeout_ms: root.u64_opt("requestTimeoutMs", 100, 120_000)?,
        max_age_s: root.u64_opt("maxAgeSeconds", 1, 86_400)?,
        dry_run: root.bool_opt("dryRun")?,
        resume_function: root.str_opt("resumeFunction")?.map(|name| function_name(&root.field("resumeFunction"), name)).transpose()?,
    };
    Ok((targets, run))
}

/// A Sanity Function's name as a blueprint declares it (letters, digits, `-`, `_`), or `none`.
fn function_name(field: &str, name: &str) -> Result<String, SyncError> {
    let ok = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(name.to_string())
    } else {
        Err(SyncError::expected(field, "a Function name from the blueprint (letters, digits, `-`), or `none`", "another value"))
    }
}

/// The prefixes of every variable the core reads: the shim hands over those alone.
pub const ENV_PREFIXES: [&str; 2] = ["FLY_", "SANITY_"];

fn token_from_env(env: &Env, var: &str, field: &str) -> Result<FlyToken, SyncError> {
    if !ENV_PREFIXES.iter().any(|p| var.starts_with(p)) {
        return Err(SyncError::expected(field, "the name of a `FLY_*` or `SANITY_*` variable (only those reach the Function's core)", "another name"));
    }
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

pub(crate) fn base_url(field: &str, url: &str) -> Result<String, SyncError> {
    // Trimmed first: `http:///` has no host (found by fuzzing: it was accepted as `http:`).
    let url = url.trim_end_matches('/');
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') && !host.contains(['?', '#', ' ']) => Ok(url.to_string()),
        _ => Err(SyncError::expected(field, "an http:// or https:// base URL", "another value")),
    }
}

/// The Machines API base URL. Fly's documentation writes it with its version (`https://api.machines.dev/v1`)
/// while our paths carry it (`/v1/apps/…`): one trailing `/v1` is dropped, so both spellings work.
fn machines_api_url(field: &str, url: &str) -> Result<String, SyncError> {
    let url = base_url(field, url)?;
    match url.strip_suffix("/v1").filter(|base| base_url(field, base).is_ok()) {
        Some(base) => Ok(base.to_string()),
        None => Ok(url),
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

const TARGET_KEYS: &[&str] = &[
    "name", "app", "tokenEnv", "types", "routes", "syncPath", "fanOut", "regions", "restart", "maxUnavailable",
    "machinesApiUrl", "appUrl", "includeDrafts", "includeVersions", "restartTimeoutMs", "dependents", "processGroups",
];

/// `dependents`: `false` (none), or `{depth, cap, types}` (each optional: 1, 50, any type).
fn dependents_rule(obj: &Obj) -> Result<DependentsRule, SyncError> {
    match obj.get("dependents") {
        None => Ok(DependentsRule::default()),
        Some(Value::Bool(false)) => Ok(DependentsRule { depth: 0, ..DependentsRule::default() }),
        Some(Value::Object(_)) => {
            let d = obj.obj("dependents")?.expect("checked object");
            d.deny_unknown(&["depth", "cap", "types"])?;
            let default = DependentsRule::default();
            Ok(DependentsRule {
                depth: d.u64_opt("depth", 0, 3)?.map_or(default.depth, |n| n as u8),
                cap: d.u64_opt("cap", 1, 1_000)?.map_or(default.cap, |n| n as u32),
                types: d.str_list_opt("types")?.unwrap_or_default(),
            })
        }
        Some(_) => Err(SyncError::expected(obj.field("dependents"), "false, or {\"depth\": 0-3, \"cap\": 1-1000, \"types\": [...]}", "another value")),
    }
}

/// `processGroups`: a non-empty list of Fly process group names (`app`, `web`, `worker`: what fly.toml's
/// `[processes]` names, lowercase letters, digits, `-` and `_`).
fn process_groups(obj: &Obj) -> Result<Option<Vec<String>>, SyncError> {
    const EXPECTED: &str = "a non-empty list of Fly process group names (as fly.toml's [processes] names them, e.g. [\"app\"])";
    let Some(value) = obj.get("processGroups") else { return Ok(None) };
    let field = obj.field("processGroups");
    let names = str_list(&field, value)?;
    if names.is_empty() {
        return Err(SyncError::expected(&field, EXPECTED, "an empty list"));
    }
    for (i, name) in names.iter().enumerate() {
        let ok = !name.is_empty() && name.len() <= 63 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(SyncError::expected(format!("{field}[{i}]"), EXPECTED, "another value"));
        }
    }
    Ok(Some(names))
}

/// `maxUnavailable`: a count (1 to 1000), or a fraction of each region's Machines as a number between 0 and 1
/// (`0.33`) or a percentage (`"33%"`), as flyctl's rolling strategy takes either.
fn max_unavailable(obj: &Obj) -> Result<MaxUnavailable, SyncError> {
    const EXPECTED: &str = "a whole number from 1 to 1000, or a fraction such as 0.33 or \"33%\"";
    // Strictly between none and all of a region.
    let fraction = |ppm: u64| (ppm > 0 && ppm < PER_MILLION).then_some(MaxUnavailable::Fraction(ppm as u32));
    let parsed = match obj.get("maxUnavailable") {
        None => return Ok(MaxUnavailable::Count(1)),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(c) if (1..=1000).contains(&c) => Some(MaxUnavailable::Count(c as usize)),
            Some(_) => None,
            None => decimal_parts(&n.to_string(), PER_MILLION).and_then(fraction),
        },
        Some(Value::String(s)) => match s.trim().strip_suffix('%') {
            Some(p) => decimal_parts(p.trim(), PER_MILLION / 100).and_then(fraction),
            None => decimal_parts(s.trim(), PER_MILLION).and_then(fraction),
        },
        Some(_) => None,
    };
    let got = match obj.get("maxUnavailable") {
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => crate::error::kind_of(other).to_string(),
        None => "nothing".into(),
    };
    parsed.ok_or_else(|| SyncError::expected(obj.field("maxUnavailable"), EXPECTED, got))
}

/// A plain decimal (`0.25`, `33`, `33.3`) times `unit`, its digits past what `unit` can hold dropped (`None`:
/// not a plain non-negative decimal, or too large).
fn decimal_parts(text: &str, unit: u64) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) || whole.len() > 9 {
        return None;
    }
    let mut value = whole.parse::<u64>().unwrap_or(0).checked_mul(unit)?;
    let mut scale = unit;
    for b in fraction.bytes() {
        scale /= 10;
        value += u64::from(b - b'0') * scale;
    }
    Some(value)
}

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
            Some("litefs") if regions.is_some() => {
                return Err(SyncError::expected(
                    obj.field("fanOut"),
                    "a fan-out that goes with `regions` (`every` or `one`): with `litefs` every Machine's replica holds every document, so the primary must get each change",
                    "`litefs`",
                ))
            }
            Some("litefs") => FanOut::LiteFs,
            Some(_) => return Err(SyncError::expected(obj.field("fanOut"), "`every`, `one` or `litefs`", "another value")),
        },
        regions,
        restart,
        max_unavailable: max_unavailable(obj)?,
        machines_api_url: obj
            .str_opt("machinesApiUrl")?
            .map(|u| machines_api_url(&obj.field("machinesApiUrl"), u))
            .transpose()?
            .unwrap_or(DEFAULT_MACHINES_API_URL.into()),
        app_url: obj.str_opt("appUrl")?.map(|u| base_url(&obj.field("appUrl"), u)).transpose()?.unwrap_or(format!("https://{app}.fly.dev")),
        include_drafts: obj.bool_opt("includeDrafts")?.unwrap_or(false),
        include_versions: obj.bool_opt("includeVersions")?.unwrap_or(false),
        restart_timeout_ms: obj.u64_opt("restartTimeoutMs", 1_000, 900_000)?.unwrap_or(DEFAULT_RESTART_TIMEOUT_MS),
        dependents: dependents_rule(obj)?,
        process_groups: process_groups(obj)?,
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
        assert_eq!(t.max_unavailable, MaxUnavailable::Count(1));
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
        assert_eq!(t.max_unavailable, MaxUnavailable::Count(2));
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
        // Only `FLY_*` and `SANITY_*` variables reach the core: a token in any other is named as such.
        let other = json.replace("FLY_WORKER_TOKEN", "WORKER_TOKEN");
        let e = Config::from_env(&env(&[("FLY_SYNC_CONFIG", &other), ("FLY_API_TOKEN", "fm2_web"), ("WORKER_TOKEN", "fm2_worker"), ("FLY_SYNC_SECRET", SECRET)])).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("FLY_SYNC_CONFIG.targets[1].tokenEnv"));
        assert!(e.message.contains("`FLY_*` or `SANITY_*` variable") && !e.message.contains("fm2_worker"), "{}", e.message);
    }

    fn config_error(pairs: &[(&str, &str)]) -> SyncError {
        Config::from_env(&env(pairs)).unwrap_err()
    }

    #[test]
    fn the_simple_form_is_the_json_form_translated() {
        let simple = Config::from_env(&env(&[
            ("FLY_APP_NAME", "my-site"),
            ("FLY_API_TOKEN", "fm2_abc"),
            ("FLY_SYNC_SECRET", SECRET),
            ("FLY_SYNC_TYPES", "article, page"),
            ("FLY_SYNC_ROUTES", "article=/blog/{slug}|/{locale}/blog/{slug},page=/{slug},article=/a/{id}"),
            ("FLY_SYNC_PATH", "/sync"),
            ("FLY_SYNC_FAN_OUT", "one"),
            ("FLY_RESTART_TYPES", "siteSettings"),
            ("FLY_RESTART_ON_REQUEST", "off"),
            ("FLY_MAX_UNAVAILABLE", "2"),
            ("FLY_API_URL", "http://127.0.0.1:4280"),
            ("FLY_APP_URL", "http://127.0.0.1:8080"),
            ("FLY_SYNC_INCLUDE_DRAFTS", "1"),
            ("FLY_RESTART_TIMEOUT_MS", "9000"),
        ]))
        .unwrap();
        let json = r#"{"targets":[{"app":"my-site","types":["article","page"],
            "routes":{"article":["/blog/{slug}","/{locale}/blog/{slug}","/a/{id}"],"page":["/{slug}"]},
            "syncPath":"/sync","fanOut":"one","restart":{"types":["siteSettings"],"onRequest":false},"maxUnavailable":2,
            "machinesApiUrl":"http://127.0.0.1:4280","appUrl":"http://127.0.0.1:8080","includeDrafts":true,"restartTimeoutMs":9000}]}"#;
        let full = Config::from_env(&env(&[("FLY_SYNC_CONFIG", json), ("FLY_API_TOKEN", "fm2_abc"), ("FLY_SYNC_SECRET", SECRET)])).unwrap();
        assert_eq!(format!("{:?}", simple.targets), format!("{:?}", full.targets));
        assert_eq!(simple.targets[0].routes["article"].len(), 3, "a type named twice keeps all its templates");
    }

    #[test]
    fn the_functions_client_options_are_read_field_by_field() {
        let read = |text: &str| sanity_from_client_options(text.as_bytes());
        let got = read(r#"{"projectId":"abc123","dataset":"production","apiHost":"https://api.sanity.io","token":"sk-robot","apiVersion":"vX","organizationId":"o1"}"#).unwrap();
        assert_eq!((got.project_id.as_deref(), got.dataset.as_deref()), (Some("abc123"), Some("production")));
        assert_eq!(got.token.unwrap().expose(), "sk-robot");
        assert_eq!(read("null").unwrap(), SanityApi::default(), "no context: nothing known");
        assert_eq!(read(r#"{"projectId":"","dataset":"production"}"#).unwrap().project_id, None, "an empty id is none (local runs)");
        for (text, field) in [
            (r#"{"projectId":"Not A Project"}"#, "context.clientOptions.projectId"),
            (r#"{"dataset":7}"#, "context.clientOptions.dataset"),
            (r#"{"token":"sk-padded\n"}"#, "context.clientOptions.token"),
            ("[]", "context.clientOptions"),
        ] {
            let e = read(text).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{text}: {e:?}");
            assert!(!e.message.contains("sk-padded"), "the token is never echoed");
        }
    }

    #[test]
    fn dependents_default_to_one_level_and_fifty_and_can_be_turned_off() {
        let base = [("FLY_APP_NAME", "web"), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET)];
        let c = Config::from_env(&env(&base)).unwrap();
        assert_eq!(c.targets[0].dependents, DependentsRule { depth: 1, cap: 50, types: vec![] });
        let mut more = base.to_vec();
        more.extend([("FLY_SYNC_DEPENDENTS_DEPTH", "2"), ("FLY_SYNC_DEPENDENTS_CAP", "10"), ("FLY_SYNC_DEPENDENT_TYPES", "post,page")]);
        let c = Config::from_env(&env(&more)).unwrap();
        assert_eq!(c.targets[0].dependents, DependentsRule { depth: 2, cap: 10, types: vec!["post".into(), "page".into()] });
        let off = r#"{"targets":[{"app":"web","dependents":false}]}"#;
        let c = Config::from_env(&env(&[("FLY_SYNC_CONFIG", off), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET)])).unwrap();
        assert_eq!(c.targets[0].dependents.depth, 0);
        let mut deep = base.to_vec();
        deep.push(("FLY_SYNC_DEPENDENTS_DEPTH", "9"));
        assert_eq!(Config::from_env(&env(&deep)).unwrap_err().field.as_deref(), Some("FLY_SYNC_DEPENDENTS_DEPTH"));
    }

    #[test]
    fn sanity_api_from_the_environment_and_the_functions_context() {
        let base = [("FLY_APP_NAME", "web"), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET)];
        let c = Config::from_env(&env(&base)).unwrap();
        assert_eq!(c.sanity.query_url(), None, "nothing known: no queries");
        let mut with = base.to_vec();
        with.extend([("SANITY_PROJECT_ID", "abc123"), ("SANITY_DATASET", "production"), ("SANITY_API_READ_TOKEN", "sk-read")]);
        let c = Config::from_env(&env(&with)).unwrap();
        assert_eq!(c.sanity.query_url().unwrap(), "https://abc123.api.sanity.io/v2025-02-19/data/query/production?perspective=published&returnQuery=false");
        let context = SanityApi { project_id: Some("ctx1".into()), dataset: Some("staging".into()), api_host: Some("https://api.sanity.io".into()), token: None };
        let merged = c.sanity.clone().with_context(context);
        assert_eq!(
            merged.query_url().unwrap(),
            "https://ctx1.api.sanity.io/v2025-02-19/data/query/staging?perspective=published&returnQuery=false",
            "the context's global host takes the project in front, as @sanity/client does"
        );
        assert_eq!(merged.token.unwrap().expose(), "sk-read", "the environment's token where the context has none");
        let mut local = with.clone();
        local.push(("SANITY_API_HOST", "http://127.0.0.1:4281"));
        let context = SanityApi { project_id: Some("ctx1".into()), api_host: Some("https://api.sanity.io/".into()), ..SanityApi::default() };
        let merged = Config::from_env(&env(&local)).unwrap().sanity.with_context(context);
        assert!(merged.query_url().unwrap().starts_with("http://127.0.0.1:4281/v2025-02-19/data/query/production?"), "the environment's host as given");
        let mut bad = base.to_vec();
        bad.push(("SANITY_PROJECT_ID", "ABC 1"));
        assert_eq!(Config::from_env(&env(&bad)).unwrap_err().field.as_deref(), Some("SANITY_PROJECT_ID"));
    }

    #[test]
    fn max_unavailable_is_a_count_or_a_fraction() {
        let read = |v: &str| {
            let c = Config::from_env(&env(&[("FLY_APP_NAME", "web"), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET), ("FLY_MAX_UNAVAILABLE", v)]));
            c.map(|c| c.targets[0].max_unavailable).map_err(|e| e.message)
        };
        assert_eq!(read("3"), Ok(MaxUnavailable::Count(3)));
        assert_eq!(read("0.25"), Ok(MaxUnavailable::Fraction(250_000)));
        assert_eq!(read("33%"), Ok(MaxUnavailable::Fraction(330_000)));
        assert_eq!(read("33.3%"), Ok(MaxUnavailable::Fraction(333_000)));
        assert_eq!(read("0.3333333333"), Ok(MaxUnavailable::Fraction(333_333)), "digits past a millionth are dropped");
        for bad in ["0", "1.5", "100%", "0%", "-1", "lots", ".", "1e-1", "0.5.5", "%"] {
            let e = read(bad).unwrap_err();
            assert!(e.starts_with("`FLY_MAX_UNAVAILABLE`: expected a whole number from 1 to 1000, or a fraction"), "{bad}: {e}");
        }
        let json = r#"{"targets":[{"app":"web","maxUnavailable":0.5},{"name":"b","app":"web","maxUnavailable":"10%"}]}"#;
        let c = Config::from_env(&env(&[("FLY_SYNC_CONFIG", json), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET)])).unwrap();
        assert_eq!((c.targets[0].max_unavailable, c.targets[1].max_unavailable), (MaxUnavailable::Fraction(500_000), MaxUnavailable::Fraction(100_000)));
        assert_eq!(c.targets[1].max_unavailable.to_string(), "10%");
        let third = r#"{"targets":[{"app":"web","maxUnavailable":0.333333}]}"#;
        let c = Config::from_env(&env(&[("FLY_SYNC_CONFIG", third), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET)])).unwrap();
        assert_eq!((c.targets[0].max_unavailable, c.targets[0].max_unavailable.to_string().as_str()), (MaxUnavailable::Fraction(333_333), "33%"));
    }

    #[test]
    fn errors_in_translated_settings_name_the_variable() {
        let base = [("FLY_APP_NAME", "web"), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET)];
        for (var, value, fragment) in [
            ("FLY_MAX_UNAVAILABLE", "0", "a whole number from 1 to 1000"),
            ("FLY_MAX_UNAVAILABLE", "two", "a whole number from 1 to 1000"),
            ("FLY_RESTART_ON_REQUEST", "maybe", "true or false"),
            ("FLY_RESTART_TIMEOUT_MS", "10", "a whole number from 1000 to 900000"),
            ("FLY_SYNC_ROUTES", "page=/{title}", "unknown placeholder"),
            ("FLY_API_URL", "ftp://x", "http:// or https://"),
            ("FLY_SYNC_FAN_OUT", "all", "`every`, `one` or `litefs`"),
            ("FLY_SYNC_BUDGET_MS", "5", "a whole number from 1000"),
            ("FLY_SYNC_DRY_RUN", "perhaps", "true or false"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((var, value));
            let e = config_error(&pairs);
            assert_eq!(e.field.as_deref(), Some(var), "{var}={value}: {}", e.message);
            assert!(e.message.starts_with(&format!("`{var}`: expected")), "{}", e.message);
            assert!(e.message.contains(fragment), "{var}={value}: {}", e.message);
        }
        let e = config_error(&[("FLY_APP_NAME", "web"), ("FLY_SYNC_SECRET", SECRET)]);
        assert_eq!(e.field.as_deref(), Some("FLY_API_TOKEN"));
    }

    #[test]
    fn mixing_the_two_forms_is_an_error_naming_both() {
        // Before, the blueprint's FLY_APP_NAME and FLY_RESTART_TYPES were silently ignored next to FLY_SYNC_CONFIG.
        let json = r#"{"targets":[{"app":"other"}]}"#;
        let e = config_error(&[
            ("FLY_SYNC_CONFIG", json),
            ("FLY_APP_NAME", "my-fly-app"),
            ("FLY_RESTART_TYPES", "siteSettings"),
            ("FLY_API_TOKEN", "fm2_x"),
            ("FLY_SYNC_SECRET", SECRET),
        ]);
        assert_eq!(e.field.as_deref(), Some("FLY_SYNC_CONFIG"));
        assert!(e.message.contains("is set together with FLY_APP_NAME, FLY_RESTART_TYPES: use one form"), "{}", e.message);
        // Blank simple variables are unset, and the run-wide ones work with either form, over the JSON's values.
        let c = Config::from_env(&env(&[
            ("FLY_SYNC_CONFIG", r#"{"budgetMs":9000,"dryRun":false,"targets":[{"app":"other"}]}"#),
            ("FLY_APP_NAME", " "),
            ("FLY_SYNC_BUDGET_MS", "8000"),
            ("FLY_SYNC_DRY_RUN", "true"),
            ("FLY_API_TOKEN", "fm2_x"),
            ("FLY_SYNC_SECRET", SECRET),
        ]))
        .unwrap();
        assert_eq!((c.targets[0].app.as_str(), c.budget_ms, c.dry_run), ("other", 8000, true));
    }

    #[test]
    fn secrets_are_used_exactly_as_given_and_padding_is_an_error() {
        let base = [("FLY_APP_NAME", "web"), ("FLY_API_TOKEN", "fm2_x")];
        for (var, value) in [
            ("FLY_SYNC_SECRET", " 0123456789abcdef-sync"),
            ("FLY_SYNC_SECRET", "0123456789abcdef-sync\n"),
            ("FLY_SYNC_SECRET", "\u{feff}0123456789abcdef-sync"),
            ("SANITY_WEBHOOK_SECRET", "whsec-value\t"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push(("FLY_SYNC_SECRET", SECRET));
            pairs.push((var, value));
            let e = config_error(&pairs);
            assert_eq!(e.field.as_deref(), Some(var));
            assert!(e.message.contains("no surrounding whitespace"), "{}", e.message);
            assert!(!e.message.contains(value.trim()), "the secret is never echoed: {}", e.message);
        }
        let inner = "0123456789 abcdef sync";
        let c = Config::from_env(&env(&[("FLY_APP_NAME", "web"), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", inner)])).unwrap();
        assert_eq!(c.sync_secret.expose(), inner, "inner spaces are part of the secret");
        assert_eq!(Secret::parse("secret", " x", 1).unwrap_err().field.as_deref(), Some("secret"));
    }

    #[test]
    fn fan_out_litefs_is_every_machine_and_refuses_a_region_rule() {
        let base = [("FLY_APP_NAME", "web"), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET), ("FLY_SYNC_FAN_OUT", "litefs")];
        assert_eq!(Config::from_env(&env(&base)).unwrap().targets[0].fan_out, FanOut::LiteFs);
        let json = r#"{"targets":[{"app":"web","fanOut":"litefs","regions":{"field":"market","map":{"jp":"nrt"}}}]}"#;
        let e = Config::from_env(&env(&[("FLY_SYNC_CONFIG", json), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET)])).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("FLY_SYNC_CONFIG.targets[0].fanOut"));
        assert!(e.message.contains("the primary must get each change"), "{}", e.message);
    }

    #[test]
    fn process_groups_are_a_list_of_group_names() {
        let base = [("FLY_APP_NAME", "web"), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET)];
        let read = |groups: Option<&str>| {
            let mut pairs = base.to_vec();
            pairs.extend(groups.map(|g| ("FLY_PROCESS_GROUPS", g)));
            Config::from_env(&env(&pairs)).map(|c| c.targets[0].process_groups.clone())
        };
        assert_eq!(read(None).unwrap(), None, "none named: every group that serves the app");
        assert_eq!(read(Some("web, app")).unwrap(), Some(vec!["web".to_string(), "app".to_string()]));
        let e = read(Some("Web")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("FLY_PROCESS_GROUPS"));
        assert!(e.message.contains("a non-empty list of Fly process group names"), "{}", e.message);
        let json = r#"{"targets":[{"app":"web","processGroups":[]}]}"#;
        let e = Config::from_env(&env(&[("FLY_SYNC_CONFIG", json), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET)])).unwrap_err();
        assert_eq!((e.field.as_deref(), e.message.ends_with("got an empty list")), (Some("FLY_SYNC_CONFIG.targets[0].processGroups"), true), "{}", e.message);
        let json = r#"{"targets":[{"app":"web","processGroups":"worker"}]}"#;
        let c = Config::from_env(&env(&[("FLY_SYNC_CONFIG", json), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET)])).unwrap();
        assert_eq!(c.targets[0].process_groups, Some(vec!["worker".to_string()]));
    }

    #[test]
    fn machines_api_url_may_end_in_v1() {
        // Fly's documentation writes the base with its version; ours adds `/v1/apps/…`, which made `/v1/v1/…`.
        for url in ["https://api.machines.dev/v1", "https://api.machines.dev/v1/", "https://api.machines.dev/"] {
            let c = Config::from_env(&env(&[("FLY_APP_NAME", "web"), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET), ("FLY_API_URL", url)]))
                .unwrap();
            assert_eq!(c.targets[0].machines_api_url, "https://api.machines.dev", "{url}");
        }
        let json = r#"{"targets":[{"app":"web","machinesApiUrl":"http://127.0.0.1:4280/v1"}]}"#;
        let c = Config::from_env(&env(&[("FLY_SYNC_CONFIG", json), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET)])).unwrap();
        assert_eq!(c.targets[0].machines_api_url, "http://127.0.0.1:4280");
        let e = config_error(&[("FLY_APP_NAME", "web"), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET), ("FLY_API_URL", "https:///v1")]);
        assert_eq!(e.field.as_deref(), Some("FLY_API_URL"));
        let c = Config::from_env(&env(&[("FLY_APP_NAME", "web"), ("FLY_API_TOKEN", "fm2_x"), ("FLY_SYNC_SECRET", SECRET), ("FLY_API_URL", "http://v1")]))
            .unwrap();
        assert_eq!(c.targets[0].machines_api_url, "http://v1", "a host named v1 is a host");
    }
}
