//! A Kafka record (key, value, headers cut from arbitrary bytes) taken
//! back as an item: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| diaspora_kafka::fuzzing::kafka_record(data));
