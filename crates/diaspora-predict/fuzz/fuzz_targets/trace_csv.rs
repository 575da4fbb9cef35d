//! A metric trace CSV must parse or be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_predict::fuzzing::trace_csv(data);
});
