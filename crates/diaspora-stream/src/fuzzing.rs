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

/// `qos_wire`: what a QoS consumer reads from the network, on arbitrary
/// bytes. The first byte picks a path:
/// - even: the rest as a control event payload ([`crate::control::Control::from_item`]);
///   whatever parses must round-trip through `to_item`;
/// - odd: the rest as a protobuf item whose QoS headers are read
///   ([`crate::consumer::read_headers`]) and, when valid, fed to a
///   [`crate::core::consumer::ConsumerCore`] with its deadlines run; the core
///   must never hold more than its reorder bound.
///
/// ```
/// diaspora_stream::fuzzing::qos_wire(b"\x00{\"kind\":\"unavailable\",\"partition\":0,\"from\":1,\"to\":2}");
/// diaspora_stream::fuzzing::qos_wire(&[1, 0x0a, 0x00]);
/// ```
pub fn qos_wire(data: &[u8]) {
    use crate::control::Control;
    use prost::Message;
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    if first % 2 == 0 {
        let item = Item {
            payload: bytes::Bytes::copy_from_slice(rest),
            ..Default::default()
        };
        if let Ok(c) = Control::from_item(&item) {
            let again = Control::from_item(&c.to_item()).expect("a control event re-parses");
            assert_eq!(format!("{c:?}"), format!("{again:?}"));
        }
        return;
    }
    let Ok(item) = Item::decode(rest) else {
        return;
    };
    let policy = crate::policy::Policy {
        reorder_items_max: 16,
        ..Default::default()
    };
    let mut core = crate::core::consumer::ConsumerCore::new(&policy);
    for (i, data_partition) in [Some(0), None].into_iter().enumerate() {
        if let Ok((p, a)) = crate::consumer::read_headers(&item, data_partition) {
            core.on_arrival(p, a, i as u64);
            core.on_unavailable(p, 0, a.seq, i as u64);
            core.tick(u64::MAX / 2);
            assert!(core.held() <= 16);
        }
    }
}

#[cfg(test)]
mod qos_wire_tests {
    use super::*;
    use crate::control;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(control::int),
            (0i64..100).prop_map(control::int),
            any::<bool>().prop_map(control::boolean),
            ".{0,8}".prop_map(|s: String| control::string(&s)),
            Just(Value { kind: None }),
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(|b| Value {
                kind: Some(value::Kind::Raw(b.into()))
            }),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            qos_wire(&data);
        }

        /// Items with (often valid, often not) QoS headers of every value type.
        #[test]
        fn items_with_qos_headers(
            headers in proptest::collection::vec(
                (prop_oneof![
                    Just(control::SEQ), Just(control::REDUCED_BEFORE),
                    Just(control::SHED_BEFORE), Just(control::PARTITION)
                ], value()),
                0..6)
        ) {
            use prost::Message;
            let mut item = Item::default();
            for (k, v) in headers {
                item.metadata.insert(k.to_string(), v);
            }
            let mut data = vec![1u8];
            data.extend(item.encode_to_vec());
            qos_wire(&data);
        }

        #[test]
        fn control_events(kind in prop_oneof![Just("progress"), Just("replay"), Just("unavailable"), Just("scale-up")],
                          a in any::<u64>(), b in any::<u64>(), r in any::<f64>()) {
            let text = format!(
                r#"{{"kind":"{kind}","consumer":"c","partition":0,"from":{a},"to":{b},"next_seq":{a},"latency_us":{b},"rate_hz":{r},"topic":"t","estimate_us":1,"lag_items":2}}"#
            );
            let mut data = vec![0u8];
            data.extend(text.into_bytes());
            qos_wire(&data);
        }
    }
}
