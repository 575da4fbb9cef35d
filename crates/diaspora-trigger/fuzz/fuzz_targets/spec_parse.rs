//! The trigger spec parser (a TOML file a user hands the runner) on
//! arbitrary bytes: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| diaspora_trigger::fuzzing::spec_parse(data));
