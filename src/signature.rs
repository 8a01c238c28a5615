//! Sanity's webhook signature scheme, both ways: `t=<unix ms>,v1=<base64url(HMAC-SHA256("<t>.<raw body>"))>`.
//!
//! We verify what Sanity sends (GROQ webhooks) and sign what we send to the receiver with the same scheme, so a
//! Fly app can check our requests with `@sanity/webhook` too. Unlike `@sanity/webhook` we compare in constant
//! time and enforce an age window, which is what makes a captured request useless for replay.

use crate::error::SyncError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Sanity refuses timestamps before 2021-01-01 as "not milliseconds"; we agree, so a seconds value is caught.
pub const MIN_TIMESTAMP_MS: u64 = 1_609_459_200_000;

/// Default accepted age of a signature, either way (clock skew counts too).
pub const DEFAULT_MAX_AGE_MS: u64 = 5 * 60 * 1000;

/// A parsed `t=…,v1=…` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp_ms: u64,
    pub mac: Vec<u8>,
}

fn mac_for(timestamp_ms: u64, body: &[u8], secret: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC takes keys of any size"));
    mac.update(timestamp_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` signed at `timestamp_ms`.
pub fn sign(body: &[u8], timestamp_ms: u64, secret: &str) -> String {
    let tag = mac_for(timestamp_ms, body, secret).finalize().into_bytes();
    format!("t={timestamp_ms},v1={}", URL_SAFE_NO_PAD.encode(tag))
}

/// Parse a signature header. `field` names the header in errors.
///
/// Exactly what `@sanity/webhook` accepts: it re-encodes the header from the timestamp it parsed and compares
/// the strings, so only the canonical form `t=<decimal without leading zeros>,v1=<base64url, no padding>`
/// passes there — no spaces, no second separator, no `t=0…`. We refuse the same headers, each with its reason.
pub fn parse_header(field: &str, value: &str) -> Result<SignatureHeader, SyncError> {
    const SHAPE: &str = "`t=<unix milliseconds>,v1=<base64url signature>`";
    if value.trim().is_empty() {
        return Err(SyncError::expected(field, SHAPE, "an empty value"));
    }
    if value.trim() != value {
        return Err(SyncError::expected(field, SHAPE, "surrounding whitespace"));
    }
    let (t_part, v_part) = value
        .split_once(',')
        .ok_or_else(|| SyncError::expected(field, SHAPE, "no `,` between the timestamp and the signature"))?;
    let t = t_part.strip_prefix("t=").ok_or_else(|| SyncError::expected(field, SHAPE, "no `t=` timestamp first"))?;
    let v = v_part
        .strip_prefix("v1=")
        .ok_or_else(|| SyncError::expected(field, SHAPE, "no `v1=` signature right after the `,`"))?;
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SyncError::expected(field, "a timestamp of decimal digits", "other characters"));
    }
    if t.len() > 1 && t.starts_with('0') {
        return Err(SyncError::expected(field, "a timestamp without leading zeros (as @sanity/webhook writes it)", "a leading zero"));
    }
    let timestamp_ms: u64 =
        t.parse().map_err(|_| SyncError::expected(field, "a timestamp that fits in 64 bits", "a longer number"))?;
    if timestamp_ms < MIN_TIMESTAMP_MS {
        return Err(SyncError::expected(
            field,
            "a unix timestamp in milliseconds (>= 1609459200000)",
            "a smaller number (seconds?)",
        ));
    }
    if v.contains([',', ' ']) {
        return Err(SyncError::expected(field, "exactly one `v1=` signature", "more than one"));
    }
    let mac = URL_SAFE_NO_PAD
        .decode(v)
        .map_err(|_| SyncError::expected(field, "a base64url signature without padding", "other characters"))?;
    if mac.len() != 32 {
        return Err(SyncError::expected(field, "a 32-byte HMAC-SHA256 signature", format!("{} bytes", mac.len())));
    }
    Ok(SignatureHeader { timestamp_ms, mac })
}

/// Verify `header` over the raw `body` bytes: the MAC (constant time) and the age (|now − t| ≤ max_age).
/// Errors are bad input: a delivery that fails here must not be retried as is.
pub fn verify(
    field: &str,
    header: &str,
    body: &[u8],
    secret: &str,
    now_ms: u64,
    max_age_ms: u64,
) -> Result<SignatureHeader, SyncError> {
    let parsed = parse_header(field, header)?;
    mac_for(parsed.timestamp_ms, body, secret)
        .verify_slice(&parsed.mac)
        .map_err(|_| SyncError::bad_field(field, "signature does not match the body (wrong secret, or the body was changed)"))?;
    let age = now_ms.abs_diff(parsed.timestamp_ms);
    if age > max_age_ms {
        let when = if parsed.timestamp_ms < now_ms { "old" } else { "in the future" };
        return Err(SyncError::bad_field(
            field,
            format!("signature timestamp is {}s {when}; at most {}s is accepted", age / 1000, max_age_ms / 1000),
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }
    #[derive(Deserialize)]
    struct Vector {
        secret: String,
        body: String,
        timestamp: u64,
        header: String,
    }

    fn vectors() -> Vec<Vector> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sanity-webhook-vectors.json");
        let text = std::fs::read_to_string(path).expect("vectors file");
        serde_json::from_str::<Vectors>(&text).expect("vectors json").vectors
    }

    const H: &str = "sanity-webhook-signature";

    #[test]
    fn signs_like_sanity_webhook() {
        let vs = vectors();
        assert_eq!(vs.len(), 3);
        for v in vs {
            assert_eq!(sign(v.body.as_bytes(), v.timestamp, &v.secret), v.header);
        }
    }

    #[test]
    fn vectors_verify_within_window() {
        for v in vectors() {
            let ok = verify(H, &v.header, v.body.as_bytes(), &v.secret, v.timestamp + 1000, DEFAULT_MAX_AGE_MS);
            assert!(ok.is_ok(), "{:?}", ok);
        }
    }

    #[test]
    fn one_changed_byte_of_body_timestamp_or_secret_fails() {
        for v in vectors() {
            let now = v.timestamp;
            // body: flip each byte position's lowest bit, one at a time
            let body = v.body.as_bytes();
            for i in 0..body.len() {
                let mut changed = body.to_vec();
                changed[i] ^= 1;
                assert!(verify(H, &v.header, &changed, &v.secret, now, DEFAULT_MAX_AGE_MS).is_err(), "byte {i}");
            }
            // timestamp: the same signature with t+1 must fail
            let (_, sig) = v.header.split_once(',').unwrap();
            let moved = format!("t={},{}", v.timestamp + 1, sig);
            let e = verify(H, &moved, body, &v.secret, now, DEFAULT_MAX_AGE_MS).unwrap_err();
            assert!(e.message.contains("does not match"), "{}", e.message);
            // secret: one extra byte
            let secret = format!("{}x", v.secret);
            assert!(verify(H, &v.header, body, &secret, now, DEFAULT_MAX_AGE_MS).is_err());
        }
    }

    #[test]
    fn outside_the_age_window_fails_both_ways() {
        let v = &vectors()[0];
        let body = v.body.as_bytes();
        let max = DEFAULT_MAX_AGE_MS;
        assert!(verify(H, &v.header, body, &v.secret, v.timestamp + max, max).is_ok());
        let old = verify(H, &v.header, body, &v.secret, v.timestamp + max + 1, max).unwrap_err();
        assert!(old.message.contains("old"), "{}", old.message);
        let future = verify(H, &v.header, body, &v.secret, v.timestamp - max - 1, max).unwrap_err();
        assert!(future.message.contains("in the future"), "{}", future.message);
    }

    #[test]
    fn malformed_headers_name_the_header_and_the_shape() {
        let sig = "yYYuYwjcivksnhqlXs2y-Z5fGSY3HlnR0h9vPsW7BKc";
        let cases = [
            ("", "an empty value"),
            ("   ", "an empty value"),
            ("t=1700000000000", "no `,`"),
            (&format!("v1={sig},t=1700000000000"), "no `t=`"),
            (&format!("t=1700000000000,v2={sig}"), "no `v1=`"),
            (&format!("t=17000x0000000,v1={sig}"), "decimal digits"),
            (&format!("t=1700000000,v1={sig}"), "milliseconds"),
            (&format!("t=99999999999999999999999,v1={sig}"), "64 bits"),
            ("t=1700000000000,v1=abc", "32-byte"),
            ("t=1700000000000,v1=***", "base64url"),
            (&format!("t=1700000000000,v1={sig},v1={sig}"), "exactly one"),
            // What @sanity/webhook refuses (it compares against the header it would write), we refuse too.
            (&format!("t=01700000000000,v1={sig}"), "a leading zero"),
            (&format!("t=1700000000000, v1={sig}"), "right after the `,`"),
            (&format!("t=1700000000000 ,v1={sig}"), "decimal digits"),
            (&format!("t=1700000000000 v1={sig}"), "no `,`"),
            (&format!("t=1700000000000,,v1={sig}"), "right after the `,`"),
            (&format!(" t=1700000000000,v1={sig}"), "surrounding whitespace"),
            (&format!("t=1700000000000,v1={sig}\u{a0}"), "surrounding whitespace"),
            (&format!("t=1700000000000,v1={sig}="), "base64url"),
            (&format!("t=1700000000000,v1={}d", &sig[..42]), "base64url"),
        ];
        for (header, fragment) in cases {
            let e = parse_header(H, header).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(H), "{header}");
            assert!(e.message.contains(fragment), "{header:?}: {}", e.message);
            assert!(e.message.starts_with("`sanity-webhook-signature`"), "{}", e.message);
        }
    }
}
