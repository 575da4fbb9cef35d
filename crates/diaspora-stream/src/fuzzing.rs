//! Bodies of the `cargo fuzz` targets in `fuzz/`, kept in the library so
//! ordinary tests run them over random inputs too.
//!
//! Each function panics only when an invariant of the crate is violated;
//! any input bytes whatsoever must be handled without panicking.

use diaspora_proto::v1::{value, Item, Value};

use crate::spill::{decode_record, encode_record, frame_record, RECORD_HEADER_BYTES};

/// `spill_record`: [`decode_record`] on arbitrary bytes, and on the bytes
/// framed as the body of a record with a correct header (the CRC would
/// otherwise keep almost every input away from the item decoder). Whatever
/// decodes must re-encode with [`encode_record`] into a record that decodes
/// to the same seq and item. (The re-encoded bytes may differ from the input:
/// prost drops unknown fields and duplicate map keys, and field order varies.)
///
/// ```
/// diaspora_stream::fuzzing::spill_record(b"SPIL\x05\0\0\0 not a record");
/// diaspora_stream::fuzzing::spill_record(&[0x1a, 0x02, b'h', b'i']);
/// ```
pub fn spill_record(data: &[u8]) {
    check_record(data);
    let seq = data
        .iter()
        .take(8)
        .fold(0u64, |a, &b| a << 8 | u64::from(b));
    let framed = frame_record(seq, data);
    if let Some((s, _, used)) = check_record(&framed) {
        assert_eq!((s, used), (seq, framed.len()));
    }
}

/// Decodes `buf` and, when it is a record, checks the re-encoding round trip.
fn check_record(buf: &[u8]) -> Option<(u64, Item, usize)> {
    let (seq, item, used) = decode_record(buf).ok()?;
    assert!(
        (RECORD_HEADER_BYTES..=buf.len()).contains(&used),
        "consumed {used} of {}",
        buf.len()
    );
    let prefix = decode_record(&buf[..used]).expect("the consumed prefix decodes alone");
    assert!(prefix.0 == seq && same_item(&prefix.1, &item));
    let again = encode_record(seq, &item);
    let (seq2, item2, used2) = decode_record(&again).expect("a re-encoded record decodes");
    assert_eq!((seq2, used2), (seq, again.len()));
    assert!(same_item(&item, &item2), "{item:?} re-decoded as {item2:?}");
    Some((seq, item, used))
}

/// `a == b`, except that float metadata compares by bits (so NaN equals itself).
fn same_item(a: &Item, b: &Item) -> bool {
    let rest = |i: &Item| Item {
        metadata: Default::default(),
        ..i.clone()
    };
    a.metadata.len() == b.metadata.len()
        && a.metadata
            .iter()
            .all(|(k, v)| b.metadata.get(k).is_some_and(|w| same_value(v, w)))
        && rest(a) == rest(b)
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (&a.kind, &b.kind) {
        (Some(value::Kind::F(x)), Some(value::Kind::F(y))) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}
