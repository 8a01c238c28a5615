//! Bounds on everything that enters from outside (Function events, webhook deliveries, pushes, reconciliation
//! pages, Machines API answers): size, nesting depth and how far in the future a revision time may be. Checked
//! before anything is recorded, so one hostile input can neither crash a run nor freeze a document.

use crate::error::SyncError;
use serde_json::Value;

/// JSON nested deeper than this is refused. It is serde_json's own recursion limit: a parse either succeeds
/// within it or fails with a clear error, never by exhausting the stack (which traps a wasm module).
pub const MAX_JSON_DEPTH: usize = 128;

/// A revision time (`_updatedAt`) may be at most this far ahead of our clock. Sanity sets it when a transaction
/// commits, before any Function, webhook, push or query sees it; only clock skew can put it in the future. A
/// time beyond this would rank above every later real edit and freeze the document, so it is refused.
pub const MAX_FUTURE_SKEW_MS: u64 = 120_000;

/// Parse untrusted bytes as JSON: UTF-8 first, then serde_json (whose recursion limit bounds the depth).
/// `expected` says what the JSON should be ("a sync payload (JSON object)").
pub fn parse_json(field: &str, bytes: &[u8], expected: &str) -> Result<Value, SyncError> {
    let text = std::str::from_utf8(bytes).map_err(|_| SyncError::expected(field, "UTF-8 JSON", "bytes that are not UTF-8"))?;
    serde_json::from_str(text).map_err(|e| json_error(field, expected, &e))
}

/// How deep `text` nests (JSON arrays and objects, outside strings), counting no further than `cap`: a cheap
/// look before reading a value whose inner values are only carried, not parsed (serde_json bounds the depth of
/// what it parses, not of what it skips).
pub fn nesting_depth(text: &str, cap: usize) -> usize {
    let (mut depth, mut most, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                most = most.max(depth);
                if most > cap {
                    return most;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    most
}

/// A serde_json error as a bad-input error for `field`, naming the position but never the content.
pub fn json_error(field: &str, expected: &str, e: &serde_json::Error) -> SyncError {
    if e.to_string().starts_with("recursion limit exceeded") {
        return SyncError::expected(field, format!("{expected} nested at most {MAX_JSON_DEPTH} levels deep"), "deeper nesting");
    }
    SyncError::expected(field, expected, format!("invalid JSON at line {} column {}", e.line(), e.column()))
}

/// Milliseconds since the epoch of an RFC 3339 UTC time as Sanity writes it (`2026-11-27T10:00:00Z`, any
/// fractional precision). Receivers order revisions by this instant, so it must parse, not just look right.
pub fn rfc3339_ms(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as u64)
}

/// A document's revision time (`_updatedAt`), checked: an RFC 3339 UTC time no further ahead of `now_ms` than
/// `MAX_FUTURE_SKEW_MS`.
pub fn revision_ms(field: &str, text: &str, now_ms: u64) -> Result<u64, SyncError> {
    let ms = rfc3339_ms(text)
        .ok_or_else(|| SyncError::expected(field, "an RFC 3339 UTC time such as 2026-11-27T10:00:00Z", "another value"))?;
    if ms > now_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
        return Err(SyncError::expected(
            field,
            format!("a revision time at most {} s ahead of this clock", MAX_FUTURE_SKEW_MS / 1000),
            format!("a time {} s in the future", (ms - now_ms) / 1000),
        ));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn rfc3339_instants() {
        assert_eq!(rfc3339_ms("2026-01-01T00:00:10Z"), Some(1_767_225_610_000));
        assert_eq!(rfc3339_ms("2026-01-01T00:00:10.5Z"), Some(1_767_225_610_500));
        assert!(rfc3339_ms("2026-01-01T00:00:10.5Z") > rfc3339_ms("2026-01-01T00:00:10Z"), "ordering is by instant, not text");
        for bad in ["2026-11-27", "yesterday", "2026-11-27T10:00:00Zjunk", "2026-13-01T00:00:00Z"] {
            assert_eq!(rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn revision_times_in_the_future_are_refused_beyond_the_skew() {
        assert_eq!(revision_ms("updatedAt", "2026-01-01T00:02:00Z", NOW), Ok(NOW + MAX_FUTURE_SKEW_MS));
        let e = revision_ms("updatedAt", "2026-01-01T00:02:01Z", NOW).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("updatedAt"));
        assert!(e.message.contains("121 s in the future"), "{}", e.message);
        let e = revision_ms("updatedAt", "2099-01-01T00:00:00Z", NOW).unwrap_err();
        assert!(e.message.starts_with("`updatedAt`: expected a revision time at most 120 s ahead"), "{}", e.message);
        assert!(revision_ms("updatedAt", "1999-01-01T00:00:00Z", NOW).is_ok(), "the past is fine");
        assert!(revision_ms("updatedAt", "soon", NOW).unwrap_err().message.contains("RFC 3339"));
    }

    #[test]
    fn nesting_depth_counts_brackets_outside_strings() {
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":"]]]"}],"c":"\\"}"#, 10), 3);
        assert_eq!(nesting_depth(r#"{"a":"\"[[["}"#, 10), 1, "an escaped quote does not end the string");
        assert_eq!(nesting_depth("1", 10), 0);
        assert_eq!(nesting_depth(&"[".repeat(10_000), 128), 129, "counting stops past the cap");
    }

    #[test]
    fn deep_json_is_a_clear_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = parse_json("body", deep.as_bytes(), "a JSON object").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        assert!(e.message.contains("nested at most 128 levels deep"), "{}", e.message);
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse_json("body", ok.as_bytes(), "JSON").is_ok());
        assert!(parse_json("body", &[0xff, b'{'], "JSON").unwrap_err().message.contains("not UTF-8"));
        assert!(parse_json("body", b"{", "JSON").unwrap_err().message.contains("line 1 column 1"));
    }
}
