//! The one content-change type every input becomes (a Function event or a GROQ webhook delivery).

use serde::Serialize;
use serde_json::{Map, Value};

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

#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// The projected document as received, without our control fields (`op`, `previousSlug`). Kept on deletes
    /// too (region targeting may need a field), but never sent to the receiver for a delete.
    #[serde(skip)]
    pub data: Map<String, Value>,
    pub idempotency_key: String,
}

impl ContentChange {
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
