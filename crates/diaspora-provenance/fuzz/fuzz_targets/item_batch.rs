//! The SQLite store's packed item-batch and parents blobs, as read from
//! disk, must decode or be reported corrupt, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_provenance::fuzzing::item_batch(data);
});
