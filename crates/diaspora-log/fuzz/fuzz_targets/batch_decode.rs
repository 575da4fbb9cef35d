//! `validate_batch` + `records` on arbitrary bytes must never panic and must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_log::fuzzing::batch_decode(data);
});
