//! A message read from a view's output topic must decode or be refused
//! with an error, never panic; what decodes must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_view::fuzzing::view_message(data);
});
