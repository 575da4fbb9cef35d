//! Data-plane frames and items from arbitrary bytes: never panic, and what
//! decodes round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_proto::fuzzing::frame_decode(data);
});
