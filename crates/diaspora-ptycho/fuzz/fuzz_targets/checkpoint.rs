//! A surrogate checkpoint must load or be refused with an error naming
//! what is wrong, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_ptycho::fuzzing::checkpoint(data);
});
