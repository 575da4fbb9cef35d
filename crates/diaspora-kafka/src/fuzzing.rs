//! Fuzz target bodies (run by `cargo fuzz` in `fuzz/` and, on a few odd
//! inputs, by this crate's tests).

use bytes::Bytes;

use crate::record::{from_record, Record};

/// A Kafka record built from arbitrary bytes (key, value and headers cut
/// out of them) taken back as an item: never panics.
pub fn kafka_record(data: &[u8]) {
    let mut parts = data.split(|b| *b == 0xfe);
    let key = parts.next().map(Bytes::copy_from_slice);
    let value = parts.next().map(Bytes::copy_from_slice);
    let mut headers = Vec::new();
    while let Some(name) = parts.next() {
        let name = String::from_utf8_lossy(name).into_owned();
        headers.push((name, parts.next().map(Bytes::copy_from_slice)));
    }
    let r = Record {
        key,
        value,
        timestamp_ms: data.first().map(|b| i64::from(*b) << 40),
        headers,
    };
    let _ = from_record(&r);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzz_body_takes_odd_input() {
        for s in [
            &b""[..],
            b"\xfe\xfe\xfe",
            b"k\xfev\xfediaspora.item\xfe\xff\xff\xff",
            b"k\xfev\xfediaspora.source\xfe/1/2",
            b"k\xfev\xfediaspora.source\xfet/1/2\xfediaspora.item\xfe\x0a\x00",
            b"\xff\xfe\xfe\xfeh",
        ] {
            super::kafka_record(s);
        }
    }
}
