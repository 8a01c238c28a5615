//! A Sanity Function invocation (`{context, event: {data}}`) as JSON bytes → `event::from_function_event`, and the
//! whole Function entry (`start::from_function`, the engine's first step).
//! Invariants: no panic; errors are bad input naming their field; an accepted change has a valid id and instant,
//! its payload is accepted by a receiver, and nothing logged holds a secret.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sanity_fly_sync::start::{self, StartError};
use sanity_fly_sync::event;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = serde_json::from_slice::<Value>(data) else { return };
    let parsed = event::from_function_event(&envelope);
    match &parsed {
        Err(e) => common::assert_input_error(e),
        Ok(change) => {
            common::check_change(change);
            common::receiver_accepts(change);
        }
    }
    match start::from_function(common::env(), &envelope, common::NOW, 1) {
        Ok(engine) => {
            assert!(parsed.is_ok(), "the entry accepts what the parser refused");
            common::first_step(engine);
        }
        Err(StartError::Input(e)) => assert_eq!(Some(&e), parsed.as_ref().err(), "same error through the entry"),
        Err(StartError::Config(e)) => panic!("the fuzz env is valid, got a config error: {e:?}"),
    }
});
