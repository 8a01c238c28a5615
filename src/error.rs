//! Errors as values with a class, so every caller (the Function, the webhook entry, the report) can decide
//! what to do without parsing strings: bad input is never retried, retryable errors are, fatal ones stop.

use serde::Serialize;
use std::fmt;

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The input (event, delivery, configuration) is wrong: retrying the same input fails the same way.
    BadInput,
    /// A transient condition (rate limit, 5xx, timeout, budget ran out while waiting): a later attempt may work.
    Retryable,
    /// The other side refused for a reason that will not go away by itself (auth, missing app, ack mismatch).
    Fatal,
}

/// One error. `field` names the input field at fault when there is one; `message` is complete on its own
/// and never carries a secret or a raw input value (we describe values by their kind instead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct SyncError {
    pub class: ErrorClass,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub field: Option<String>,
    pub message: String,
}

impl SyncError {
    /// A bad-input error for `field`: "`field`: expected <expected>, got <got>".
    pub fn expected(field: impl Into<String>, expected: impl fmt::Display, got: impl fmt::Display) -> Self {
        Self::expected_text(field.into(), &expected, &got)
    }

    /// `expected`'s one body, for every argument type (the generic entry only converts).
    fn expected_text(field: String, expected: &dyn fmt::Display, got: &dyn fmt::Display) -> Self {
        let message = format!("`{field}`: expected {expected}, got {got}");
        SyncError { class: ErrorClass::BadInput, field: Some(field), message }
    }

    /// A bad-input error for `field` with a free-form explanation.
    pub fn bad_field(field: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::bad_field_text(field.into(), &message)
    }

    fn bad_field_text(field: String, message: &dyn fmt::Display) -> Self {
        let message = format!("`{field}`: {message}");
        SyncError { class: ErrorClass::BadInput, field: Some(field), message }
    }

    pub fn retryable(message: impl Into<String>) -> Self {
        SyncError { class: ErrorClass::Retryable, field: None, message: message.into() }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        SyncError { class: ErrorClass::Fatal, field: None, message: message.into() }
    }

    /// Prefix the field path, for errors found inside a nested document (`targets[1].` + `app`).
    pub fn within(mut self, prefix: &str) -> Self {
        if let Some(field) = &self.field {
            let full = format!("{prefix}{field}");
            self.message = self.message.replacen(&format!("`{field}`"), &format!("`{full}`"), 1);
            self.field = Some(full);
        }
        self
    }
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SyncError {}

/// `s` cut to at most `max` characters (an ellipsis marks the cut), for messages that quote another party.
pub fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

/// Describe a JSON value by its kind, for error messages that must not echo input.
pub fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(s) if s.is_empty() => "an empty string",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_names_field_and_expectation() {
        let e = SyncError::expected("_id", "a non-empty string", "a number");
        assert_eq!(e.class, ErrorClass::BadInput);
        assert_eq!(e.field.as_deref(), Some("_id"));
        assert_eq!(e.message, "`_id`: expected a non-empty string, got a number");
    }

    #[test]
    fn shorten_cuts_on_characters() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc…");
        assert_eq!(shorten("ééé", 2), "éé…");
    }

    #[test]
    fn within_prefixes_field_and_message() {
        let e = SyncError::expected("app", "a Fly app name", "an empty string").within("targets[1].");
        assert_eq!(e.field.as_deref(), Some("targets[1].app"));
        assert!(e.message.starts_with("`targets[1].app`: expected"), "{}", e.message);
    }
}
