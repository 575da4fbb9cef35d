//! `decode_record` on arbitrary bytes (and on them framed as a record body)
//! must never panic, and whatever decodes must re-encode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_stream::fuzzing::spill_record(data);
});
