//! Sanity's signature scheme: `signature::parse_header` and `signature::verify`.
//! Input: one flag byte (bit 0: the harness signs the body itself at a timestamp taken from the header line's
//! digits, so `verify` succeeds and the round trip is checked), the header value up to the first newline,
//! then the body.
//! Invariants: no panic; errors are bad input naming the header; a parsed header is the canonical spelling; a
//! verified signature is inside the age window and re-signs to exactly the same header; any changed byte of a
//! signed body, or another secret, fails.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sanity_fly_sync::signature::{self, MIN_TIMESTAMP_MS};

const H: &str = "sanity-webhook-signature";
const SECRET: &str = common::WEBHOOK_SECRET;
const MAX_AGE_MS: u64 = 300_000;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let (line, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let header = String::from_utf8_lossy(line);

    match signature::parse_header(H, &header) {
        Err(e) => {
            common::assert_input_error(&e);
            assert_eq!(e.field.as_deref(), Some(H));
        }
        Ok(parsed) => {
            assert!(parsed.timestamp_ms >= MIN_TIMESTAMP_MS);
            assert_eq!(parsed.mac.len(), 32);
            // Only the canonical spelling parses, as with @sanity/webhook (which compares against the header it
            // would write): no spaces, no leading zeros.
            let v1 = header.split_once(',').unwrap().1.strip_prefix("v1=").unwrap();
            let canonical = format!("t={},v1={v1}", parsed.timestamp_ms);
            assert_eq!(header, canonical, "a non-canonical header parsed");
            // Verified at its own instant: only the MAC decides.
            match signature::verify(H, &header, body, SECRET, parsed.timestamp_ms, MAX_AGE_MS) {
                Ok(v) => {
                    assert_eq!(v, parsed);
                    // A verified signature re-signs to exactly the same header: no second spelling of one MAC.
                    assert_eq!(signature::sign(body, parsed.timestamp_ms, SECRET), canonical, "header {header:?}");
                }
                Err(e) => common::assert_input_error(&e),
            }
        }
    }

    // Verified at a fuzzed instant: the window is enforced both ways.
    let now = common::NOW.wrapping_add(u64::from(flags) * 7_919).wrapping_sub(1_000_000);
    if let Ok(v) = signature::verify(H, &header, body, SECRET, now, MAX_AGE_MS) {
        assert!(now.abs_diff(v.timestamp_ms) <= MAX_AGE_MS);
    }

    if flags & 1 == 1 {
        // The harness signs: a timestamp from the header line's digits (clamped to valid milliseconds).
        let digits: String = header.chars().filter(char::is_ascii_digit).take(18).collect();
        let at = digits.parse::<u64>().unwrap_or(0).max(MIN_TIMESTAMP_MS);
        let signed = signature::sign(body, at, SECRET);
        let v = signature::verify(H, &signed, body, SECRET, at, 0).expect("a fresh signature verifies");
        assert_eq!(v.timestamp_ms, at);
        assert_eq!(signature::sign(body, v.timestamp_ms, SECRET), signed);
        assert!(signature::verify(H, &signed, body, "another-secret", at, 0).is_err());
        if !body.is_empty() {
            let mut changed = body.to_vec();
            let i = usize::from(flags) % changed.len();
            changed[i] ^= 1 << (flags % 8);
            if changed != body {
                assert!(signature::verify(H, &signed, &changed, SECRET, at, 0).is_err(), "a changed byte verifies");
            }
        }
    }
});
