//! A scan directory's files as read from disk (`frames.npy`, `meta.jsonl`,
//! `complex64` images) must parse or be refused with an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_ptycho::fuzzing::frames(data);
    diaspora_ptycho::fuzzing::meta(data);
    diaspora_ptycho::fuzzing::complex(data);
});
