//! A GROQ-powered webhook delivery: headers and raw body → `event::from_webhook` and `entry::from_webhook`.
//! Input: one flag byte (bit 0: the harness signs the body with the webhook secret, so the body parser is
//! reached; otherwise only the fuzzed headers sign it), then `name: value` header lines, an empty line, the body.
//! Invariants: no panic; errors are bad input naming their field and never holding the secret; an unsigned body
//! is never accepted; a signed one never fails on its signature; an accepted change comes from the signed body
//! alone (its id, revision, time and idempotency key are the body's, whatever the headers say) and its payload
//! is accepted by a receiver; the entry answers 401 exactly for signature errors, 400 for the others.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sanity_fly_sync::event::{self, Headers, WEBHOOK_SIGNATURE_HEADER};
use sanity_fly_sync::signature;
use sanity_fly_sync::entry::{self, StartError};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let (pairs, body) = common::split_request(rest);
    let mut headers: Headers = common::lowercase(&pairs);
    let signed = flags & 1 == 1;
    if signed {
        // Signed up to 255 s ago: inside the 300 s window.
        let at = common::NOW - u64::from(flags >> 1) * 2_000;
        headers.insert(WEBHOOK_SIGNATURE_HEADER.into(), signature::sign(body, at, common::WEBHOOK_SECRET));
    }
    let parsed = event::from_webhook(&headers, body, common::WEBHOOK_SECRET, common::NOW, 300_000);
    match &parsed {
        Err(e) => {
            common::assert_input_error(e);
            common::assert_no_secret(&e.message, &common::SECRETS);
            if signed {
                assert_ne!(e.field.as_deref(), Some(WEBHOOK_SIGNATURE_HEADER), "a correctly signed delivery failed its signature: {e:?}");
            }
        }
        Ok(change) => {
            assert!(signed, "an unsigned delivery was accepted");
            let doc: Value = serde_json::from_slice(body).expect("an accepted body is JSON");
            for (field, got) in [("_id", &change.id), ("_rev", &change.rev), ("_updatedAt", &change.updated_at)] {
                assert_eq!(doc.get(field).and_then(Value::as_str), Some(got.as_str()), "{field} comes from the signed body");
            }
            common::check_change(change);
            common::receiver_accepts(change);
        }
    }
    // The entry, with header names in whatever case they came.
    let mixed: Headers = if signed { headers.clone() } else { pairs.into_iter().collect() };
    match entry::from_webhook(common::env(), &mixed, body, common::NOW, 1) {
        Ok(engine) => {
            assert!(parsed.is_ok(), "the entry accepts what the parser refused");
            common::first_step(engine);
        }
        Err(StartError::Config(e)) => panic!("the fuzz env is valid, got a config error: {e:?}"),
        Err(err @ StartError::Input(_)) => {
            let e = err.error();
            let status = err.webhook_status();
            let sig = e.field.as_deref() == Some(WEBHOOK_SIGNATURE_HEADER);
            assert_eq!(status, if sig { 401 } else { 400 }, "{e:?}");
            common::assert_no_secret(&e.message, &common::SECRETS);
        }
    }
});
