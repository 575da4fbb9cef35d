//! The PostgreSQL store's URL TLS parameters (`sslmode`, `sslrootcert`),
//! as typed by a user or read from the environment, must split or be
//! refused, never panic; what is left for the driver holds neither.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_provenance::fuzzing::pg_tls_url(data);
});
