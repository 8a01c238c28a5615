//! Fly API tokens, accepted as `fly tokens create` prints them (`FlyV1 fm2_…`, possibly several macaroons
//! joined by commas) or bare, and turned into the right `Authorization` value. The token is a secret: it has no
//! `Debug`/`Serialize` output that shows it.

use crate::error::SyncError;
use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct FlyToken {
    authorization: String,
}

impl FlyToken {
    /// `field` names the setting in errors (the value itself is never echoed).
    pub fn parse(field: &str, raw: &str) -> Result<Self, SyncError> {
        let mut token = raw.trim();
        // Strip any scheme, repeatedly and case-insensitively: `Bearer FlyV1 fm2_…` is seen in the wild.
        let is_scheme = |w: &str| w.eq_ignore_ascii_case("bearer") || w.eq_ignore_ascii_case("flyv1");
        loop {
            match token.split_once(char::is_whitespace) {
                Some((word, rest)) if is_scheme(word) => token = rest.trim_start(),
                _ if is_scheme(token) => token = "",
                _ => break,
            }
        }
        if token.is_empty() {
            return Err(SyncError::expected(field, "a Fly API token (`fly tokens create deploy`)", "an empty value"));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SyncError::expected(
                field,
                "a Fly API token without spaces or line breaks inside",
                "a value with whitespace inside",
            ));
        }
        // Macaroon tokens go with the FlyV1 scheme; anything else (OAuth/user tokens) with Bearer.
        let scheme = if ["fm1r_", "fm1a_", "fm2_"].iter().any(|p| token.starts_with(p)) { "FlyV1" } else { "Bearer" };
        Ok(FlyToken { authorization: format!("{scheme} {token}") })
    }

    pub fn authorization(&self) -> &str {
        &self.authorization
    }

    /// The bare token, for scanning logs and reports for leaks.
    pub fn bare(&self) -> &str {
        self.authorization.split_once(' ').map(|(_, t)| t).unwrap_or_default()
    }
}

impl fmt::Debug for FlyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FlyToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_printed_and_bare_forms() {
        for raw in ["FlyV1 fm2_abc,fm2_def", "fm2_abc,fm2_def", "Bearer FlyV1 fm2_abc,fm2_def", "  flyv1   fm2_abc,fm2_def\n"] {
            assert_eq!(FlyToken::parse("FLY_API_TOKEN", raw).unwrap().authorization(), "FlyV1 fm2_abc,fm2_def", "{raw:?}");
        }
        assert_eq!(FlyToken::parse("t", "Bearer oauth123").unwrap().authorization(), "Bearer oauth123");
        assert_eq!(FlyToken::parse("t", "oauth123").unwrap().authorization(), "Bearer oauth123");
    }

    #[test]
    fn rejects_empty_and_broken_tokens_without_echoing_them() {
        let e = FlyToken::parse("FLY_API_TOKEN", "FlyV1 ").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("FLY_API_TOKEN"));
        let e = FlyToken::parse("FLY_API_TOKEN", "fm2_secretpart other").unwrap_err();
        assert!(!e.message.contains("secretpart"), "{}", e.message);
        assert!(!format!("{:?}", FlyToken::parse("x", "fm2_secretpart").unwrap()).contains("secretpart"));
    }
}
