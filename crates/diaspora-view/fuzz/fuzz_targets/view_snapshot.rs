//! A view snapshot file as read from disk must decode or be reported
//! damaged, never panic; a state that parses as an engine snapshot must be
//! restored or refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_view::fuzzing::snapshot_file(data);
});
