#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_stream::fuzzing::qos_wire(data);
});
