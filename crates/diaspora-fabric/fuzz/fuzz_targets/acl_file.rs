//! An ACL file: entries or an error naming the line; what parses prints back to the same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_fabric::auth::fuzzing::acl_file(data);
});
