//! A monitor event read from the fabric must decode or be refused; what decodes round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_predict::fuzzing::monitor_event(data);
});
