//! `parse_prov_json` on arbitrary bytes must never panic; whatever parses
//! must map to records that survive the export attribute mapping.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_provenance::fuzzing::prov_json(data);
});
