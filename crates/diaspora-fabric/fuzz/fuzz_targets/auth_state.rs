//! The node's auth state document: a state or an error saying why.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_fabric::auth::fuzzing::state(data);
});
