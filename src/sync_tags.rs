//! Sanity's sync tags: what a sync-tag-invalidate event carries (the tags the Live Content API returned with query
//! results, now stale), read and bounded. A run of them pushes the tags, signed, to every started Machine (`op:
//! "tags"` in the protocol) so each process's cache drops what was rendered with them; the shim then calls the
//! event's `done`, which Sanity's clients waiting on live content block on.
//!
//! The tags are opaque to us (Sanity's own format): they are carried as given, only their count, length and
//! characters bounded, so one cannot break a header, a log line or a cache key on the receiving side.

use crate::error::{kind_of, SyncError};
use serde_json::Value;

/// At most this many tags in one event (one transaction's worth is far fewer).
pub const MAX_TAGS: usize = 2_000;
/// At most this many bytes in one tag.
pub const MAX_TAG_BYTES: usize = 256;

/// The tags of one event, and the key each Machine drops a repeat of this run's push by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncTags {
    pub tags: Vec<String>,
    pub idempotency_key: String,
}

impl SyncTags {
    /// `tags` for a run started at `now_ms` with `seed`: retries of the run's pushes share the key; another
    /// event's push (even with the same tags, a later edit) gets its own, so it is never taken for a repeat.
    pub fn new(tags: Vec<String>, now_ms: u64, seed: u64) -> SyncTags {
        SyncTags { tags, idempotency_key: format!("tags:{now_ms:x}-{seed:x}") }
    }
}

/// Read `event.data.syncTags`: a list of visible-ASCII strings, each once (repeats dropped, order kept).
pub fn read(field: &str, value: &Value) -> Result<Vec<String>, SyncError> {
    let Value::Array(items) = value else {
        return Err(SyncError::expected(field, "the list of sync tags", kind_of(value)));
    };
    if items.len() > MAX_TAGS {
        return Err(SyncError::expected(field, format!("at most {MAX_TAGS} sync tags"), format!("{} of them", items.len())));
    }
    let mut tags: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let Value::String(tag) = item else { return Err(SyncError::expected(field, WHAT, kind_of(item))) };
        check_tag(&field, tag)?;
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_string());
        }
    }
    Ok(tags)
}

const WHAT: &str = "a sync tag (1 to 256 visible ASCII characters)";

/// One tag: 1 to `MAX_TAG_BYTES` visible ASCII characters (no spaces or controls).
pub fn check_tag(field: &str, tag: &str) -> Result<(), SyncError> {
    let got = if tag.is_empty() {
        "an empty string"
    } else if tag.len() > MAX_TAG_BYTES {
        "a longer string"
    } else if !tag.bytes().all(|b| b.is_ascii_graphic()) {
        "a string with spaces, controls or non-ASCII characters"
    } else {
        return Ok(());
    };
    Err(SyncError::expected(field, WHAT, got))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tags_are_read_as_given_once_each_and_bounded() {
        assert_eq!(read("syncTags", &json!(["s1:abc", "s1:def", "s1:abc"])).unwrap(), ["s1:abc", "s1:def"]);
        assert_eq!(read("syncTags", &json!([])).unwrap(), Vec::<String>::new());
        let field = |v: Value| read("event.data.syncTags", &v).unwrap_err().field.unwrap();
        assert_eq!(field(json!("s1:abc")), "event.data.syncTags");
        assert_eq!(field(json!(["ok", 7])), "event.data.syncTags[1]");
        assert_eq!(field(json!(["ok", ""])), "event.data.syncTags[1]");
        assert_eq!(field(json!(["a b"])), "event.data.syncTags[0]");
        assert_eq!(field(json!(["x".repeat(257)])), "event.data.syncTags[0]");
        assert_eq!(field(json!(vec!["t"; MAX_TAGS + 1])), "event.data.syncTags");
        let e = read("syncTags", &json!(["s1:ok", "s1:\u{7f}secret"])).unwrap_err();
        assert!(!e.message.contains("secret"), "the value is never echoed: {}", e.message);
    }

    #[test]
    fn each_run_has_its_own_key() {
        let a = SyncTags::new(vec!["t".into()], 1_800_000_000_000, 7);
        assert_eq!(a.idempotency_key, SyncTags::new(vec!["t".into()], 1_800_000_000_000, 7).idempotency_key);
        assert_ne!(a.idempotency_key, SyncTags::new(vec!["t".into()], 1_800_000_000_001, 7).idempotency_key);
        assert_ne!(a.idempotency_key, SyncTags::new(vec!["t".into()], 1_800_000_000_000, 8).idempotency_key);
        assert!(a.idempotency_key.starts_with("tags:") && !a.idempotency_key.contains(' '));
    }
}
