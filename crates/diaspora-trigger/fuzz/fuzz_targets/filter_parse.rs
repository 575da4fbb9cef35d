//! The trigger filter language's parser on arbitrary bytes: never panics; what
//! it accepts prints to text that parses back to the same filter.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| diaspora_trigger::fuzzing::filter_parse(data));
