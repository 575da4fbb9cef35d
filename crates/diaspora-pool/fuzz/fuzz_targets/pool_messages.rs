//! Bytes read from a pool's topics (tasks, outcomes, results, events,
//! commands) must parse or be refused with an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_pool::messages::fuzz_all(data);
});
