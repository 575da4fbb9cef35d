//! The trigger status parser (statuses are read from the network) on
//! arbitrary bytes: never panics; what it accepts parses back to the same.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| diaspora_trigger::fuzzing::status_parse(data));
