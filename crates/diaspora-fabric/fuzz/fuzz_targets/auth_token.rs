//! A bearer token as a client presents it: a clear error or a principal, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_fabric::auth::fuzzing::token(data);
});
