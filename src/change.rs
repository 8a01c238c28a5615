//! The one content-change type every input becomes (a Function event or a GROQ webhook delivery).

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// What the receiver should do with the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Upsert,
    Delete,
}

/// Sanity's name for what happened, as far as the input told us (`delta::operation()` can be null locally).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Function,
    Webhook,
}

/// Which perspective an id belongs to: only published documents sync unless a target opts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    Published,
    Draft,
    Version,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentChange {
    pub op: Op,
    pub operation: Operation,
    pub source: Source,
    pub id: String,
    pub doc_type: String,
    pub rev: String,
    pub updated_at: String,
    pub slug: Option<String>,
    pub previous_slug: Option<String>,
    pub cache_tags: Vec<String>,
    pub locale: Option<String>,
    pub market: Option<String>,
    /// The projected document as received, without our control fields (`op`, `previousSlug`): a JSON object's
    /// exact text, its values as they came (numbers digit for digit). Kept on deletes too (region targeting may
    /// need a field), but never sent to the receiver for a delete.
    #[serde(skip)]
    pub data: Box<RawValue>,
    pub idempotency_key: String,
}

impl ContentChange {
    /// One top-level field of the document, read from its text (`None`: absent, or the text is not an object).
    pub fn field(&self, key: &str) -> Option<Value> {
        let fields: std::collections::BTreeMap<std::borrow::Cow<str>, &RawValue> = serde_json::from_str(self.data.get()).ok()?;
        serde_json::from_str(fields.get(key)?.get()).ok()
    }

    pub fn id_kind(&self) -> IdKind {
        if self.id.starts_with("drafts.") {
            IdKind::Draft
        } else if self.id.starts_with("versions.") {
            IdKind::Version
        } else {
            IdKind::Published
        }
    }

    /// The default idempotency key when the input carries none: one per document revision and operation (a
    /// delete's projection carries the last revision, so the op keeps it apart from that revision's upsert).
    pub fn derive_idempotency_key(op: Op, id: &str, rev: &str) -> String {
        let op = match op {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        };
        format!("{op}:{id}:{rev}")
    }
}
