//! The receiving side: `Receiver::begin` (+ `finish`) with fuzzed headers and bodies, several requests per input
//! against one receiver so ordering, duplicates, tombstones and the bounded key memory are exercised.
//! Input: requests separated by a line `~~~`; each request is one flag byte (bit 0: the harness signs the body
//! with the receiver's secret, so the payload parser is reached; bit 1: the app's hook fails; bit 2: the hook asks
//! for a restart; bit 3: also offer the body as a pulled document; bit 4: feed the body through `intake` in
//! chunks first, as the handler does), header lines, an empty line, the body.
//! Invariants: no panic; an unsigned request never reaches the app (401); every answer is JSON with a known
//! status, a 200 names this Machine, an error names its field and never holds the secret; an applied change
//! delivered again is never applied twice; `intake` refuses no body that `verify` accepts; nothing is recorded
//! for a refused request.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sanity_fly_sync::event::Headers;
use sanity_fly_sync::protocol::SIGNATURE_HEADER;
use sanity_fly_sync::receiver::{Receiver, ReceiverOptions, Reply, Step};
use sanity_fly_sync::signature;
use serde_json::Value;

const MACHINE: &str = "m-fuzz-1";

fn check_reply(reply: &Reply, expect_applied: bool) {
    let body: Value = serde_json::from_str(&reply.body).expect("the answer is JSON");
    common::assert_no_secret(&reply.body, &common::SECRETS);
    match reply.http_status {
        200 => {
            assert_eq!(body["machine"], MACHINE);
            assert_eq!(body["protocol"], "sanity-fly-sync/1");
            let status = body["status"].as_str().expect("status");
            if expect_applied {
                assert_eq!(status, "applied");
            } else {
                assert!(status == "duplicate" || status == "stale", "{status}");
            }
        }
        400 | 401 | 413 | 422 | 503 => {
            assert!(body["error"].is_string(), "{}", reply.body);
            if reply.http_status != 503 {
                let field = body["field"].as_str().expect("an error names its field");
                assert!(body["error"].as_str().unwrap().starts_with(&format!("`{field}`")));
            }
        }
        other => panic!("unexpected status {other}: {}", reply.body),
    }
}

fuzz_target!(|data: &[u8]| {
    let options = ReceiverOptions {
        max_age_ms: 300_000,
        accept_drafts: data.first().is_some_and(|b| b & 0x80 != 0),
        remember_keys: 4,
        max_body_bytes: 64 * 1024,
        ..ReceiverOptions::new(common::SYNC_SECRET, MACHINE)
    };
    let mut receiver = Receiver::new(options).expect("options");
    let mut now = common::NOW;
    let mut rest = data;
    while !rest.is_empty() {
        let (request, next) = match rest.windows(5).position(|w| w == b"\n~~~\n") {
            Some(i) => (&rest[..i], &rest[i + 5..]),
            None => (rest, &[][..]),
        };
        rest = next;
        now += 1_000;
        let Some((&flags, request)) = request.split_first() else { continue };
        let (pairs, body) = common::split_request(request);
        let mut headers: Headers = pairs.into_iter().collect();
        let signed = flags & 1 == 1;
        if signed {
            headers.insert(SIGNATURE_HEADER.into(), signature::sign(body, now - 1_000, common::SYNC_SECRET));
        }
        if flags & 16 != 0 {
            // The streaming intake is a filter in front of `verify`: it may refuse only what `verify` refuses.
            let streamed = receiver.intake(&headers).and_then(|mut intake| {
                for chunk in body.chunks(3) {
                    intake.push(chunk)?;
                }
                intake.finish()
            });
            if let Err(reply) = streamed {
                check_reply(&reply, false);
                assert!(receiver.verify(&headers, body, now).is_err(), "intake refused a request verify accepts: {}", reply.body);
                continue;
            }
        }
        match receiver.begin(&headers, body, now) {
            Step::Respond(reply) => {
                check_reply(&reply, false);
                if !signed {
                    assert_eq!(reply.http_status, 401, "an unsigned request got past the signature");
                }
            }
            Step::Apply { ticket, change } => {
                assert!(signed, "an unsigned request reached the app");
                assert!(!change.id.is_empty() && !change.idempotency_key.is_empty());
                for (field, route) in change.routes.named() {
                    assert!(sanity_fly_sync::routes::is_same_origin_path(route), "{field} reached the app: {route:?}");
                }
                let outcome = if flags & 2 != 0 { Err("hook failed".to_string()) } else { Ok(flags & 4 != 0) };
                let failed = outcome.is_err();
                let reply = receiver.finish(ticket, outcome);
                if failed {
                    assert_eq!(reply.http_status, 503);
                    check_reply(&reply, false);
                } else {
                    assert_eq!(reply.http_status, 200);
                    check_reply(&reply, true);
                    assert_eq!(serde_json::from_str::<Value>(&reply.body).unwrap()["restart"].is_string(), flags & 4 != 0);
                    // The same delivery again (a retry whose ack was lost): acknowledged, never applied twice.
                    match receiver.begin(&headers, body, now) {
                        Step::Respond(again) => {
                            assert_eq!(again.http_status, 200, "{}", again.body);
                            check_reply(&again, false);
                        }
                        Step::Apply { .. } | Step::Tags { .. } => panic!("an applied push was applied again"),
                    }
                }
            }
            Step::Tags { ticket, sync_tags } => {
                assert!(signed, "an unsigned request reached the app");
                for tag in &sync_tags {
                    assert!(sanity_fly_sync::sync_tags::check_tag("tag", tag).is_ok(), "a tag the Function would refuse reached the app");
                }
                check_reply(&receiver.finish(ticket, Ok(false)), true);
            }
        }
        if flags & 8 != 0 {
            if let Ok(payload) = sanity_fly_sync::protocol::parse_payload(body) {
                match receiver.begin_pulled(payload, now) {
                    Step::Respond(reply) => check_reply(&reply, false),
                    Step::Apply { ticket, .. } => check_reply(&receiver.finish(ticket, Ok(false)), true),
                    Step::Tags { .. } => panic!("a pulled document became sync tags"),
                }
            }
        }
        assert!(receiver.live_ids().count() <= 64 * 1024);
    }
});
