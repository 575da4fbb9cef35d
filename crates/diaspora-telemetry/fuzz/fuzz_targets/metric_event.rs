//! A metric event read from the fabric must decode or be refused with an
//! error, never panic; what decodes is valid and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = diaspora_telemetry::decode_event(data) {
        diaspora_telemetry::event::validate_event(&event).expect("decoded events are valid");
        let again = diaspora_telemetry::encode_event(&event);
        let back = diaspora_telemetry::decode_event(&again).expect("an encoded event decodes");
        assert_eq!(back, event);
    }
});
