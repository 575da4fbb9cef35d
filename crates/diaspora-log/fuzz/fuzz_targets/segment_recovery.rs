//! `scan_segment` on arbitrary bytes: valid_len <= len, batches contiguous
//! and tiling the valid prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_log::fuzzing::segment_recovery(data);
});
