//! Any bytes, as an item of the ptychography loop (a frame, a
//! reconstruction, a model, a notice, an end marker) or as a monitor's
//! prediction: parsed or refused with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_demo::fuzzing::item(data);
});
