//! A Sanity Function event as the shim hands it over — the handler's `event` (`{data}`) as JSON text, any bytes
//! at all — → `event::function_event_from_json`, and the whole Function entry (`entry::from_function`, the
//! engine's first step).
//! Invariants: no panic (deep nesting, huge numbers, odd keys, non-UTF-8 bytes are clear errors or carried
//! as they are); errors are bad input naming their field; an accepted change has a valid id and an instant no
//! further ahead than the skew bound, its payload is accepted by a receiver and its routes are same-origin
//! paths, and nothing logged holds a secret.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sanity_fly_sync::entry::{self, StartError};
use sanity_fly_sync::event;

fuzz_target!(|data: &[u8]| {
    let parsed = event::function_event_from_json(data, common::NOW);
    match &parsed {
        Err(e) => common::assert_input_error(e),
        Ok(event::FunctionEvent::Change(change)) => {
            common::check_change(change);
            common::receiver_accepts(change);
        }
        Ok(event::FunctionEvent::Resume) => {}
        Ok(event::FunctionEvent::SyncTags(tags)) => {
            assert!(tags.len() <= sanity_fly_sync::sync_tags::MAX_TAGS);
            for tag in tags {
                assert!(sanity_fly_sync::sync_tags::check_tag("tag", tag).is_ok(), "a tag the receiver would refuse");
            }
        }
    }
    match entry::from_function(common::env(), data, b"null", common::NOW, 1) {
        Ok(engine) => {
            assert!(parsed.is_ok(), "the entry accepts what the parser refused");
            common::first_step(engine);
        }
        Err(StartError::Input(e)) => assert_eq!(Some(&e), parsed.as_ref().err(), "same error through the entry"),
        Err(StartError::Config(e)) => panic!("the fuzz env is valid, got a config error: {e:?}"),
    }
});
