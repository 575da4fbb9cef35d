//! A client certificate's DER: a principal from its CN or a clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_fabric::auth::fuzzing::certificate(data);
});
