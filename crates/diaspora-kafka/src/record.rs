//! Items as Kafka records and back (pure).
//!
//! An item becomes one record:
//! - **key** — the item's key (none when empty);
//! - **value** — its payload;
//! - **timestamp** — its timestamp in milliseconds (Kafka's unit);
//! - **headers** —
//!   - `diaspora.item`: the item without key and payload, protobuf-encoded
//!     (metadata, string headers, producer key, lineage, quality, the
//!     timestamp in µs): what makes the way back lossless;
//!   - `diaspora.source`: where the item came from, `topic/partition/offset`
//!     (the Kafka sink finds the last bridged offset of a partition here);
//!   - one header per metadata entry, named by its key, its value as text
//!     (raw bytes as they are): for Kafka-side consumers, which read
//!     headers, not protobuf. Keys under `diaspora.` are left out there.
//!
//! A record back into an item: with a `diaspora.item` header, exactly the
//! item that was sent. Without (a record some other Kafka producer wrote):
//! key, value and timestamp, and each header as a metadata entry — a
//! string when it is UTF-8, raw bytes otherwise; a header without a value
//! is `true`.
//!
//! Limits (a record comes from the network): at most [`HEADERS_MAX`]
//! headers, names of at most [`HEADER_NAME_MAX`] bytes, a `diaspora.item`
//! header of at most [`ITEM_HEADER_MAX`] bytes; anything over, or a header
//! that does not decode, is refused with a clear error and never panics
//! (property tests below; fuzz target `kafka_record`).

use bytes::Bytes;
use diaspora_fabric::item::meta;
use diaspora_fabric::item::{Item, ItemRef};
use prost::Message;

/// The header that carries the item (without key and payload).
pub const ITEM_HEADER: &str = "diaspora.item";
/// The header that names the item's place in the source.
pub const SOURCE_HEADER: &str = "diaspora.source";
/// Most headers on a record taken back.
pub const HEADERS_MAX: usize = 4096;
/// Longest header name, bytes.
pub const HEADER_NAME_MAX: usize = 1024;
/// Largest `diaspora.item` header, bytes.
pub const ITEM_HEADER_MAX: usize = 1 << 20;

/// A Kafka record as the bridge hands it to (or gets it from) the client.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    /// The key (`None`: no key).
    pub key: Option<Bytes>,
    /// The value (`None`: a tombstone).
    pub value: Option<Bytes>,
    /// Timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// Headers in order (a header may have no value).
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// A record that cannot be taken back as an item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Over a limit.
    #[error("a Kafka record with {what}: the limit is {limit}")]
    Limit {
        /// What was over.
        what: String,
        /// The limit.
        limit: usize,
    },
    /// A `diaspora.` header that does not decode.
    #[error("a Kafka record's {header} header does not decode: {why}")]
    Header {
        /// Which header.
        header: &'static str,
        /// Why.
        why: String,
    },
}

/// The record of `item`, which is at `source`.
pub fn to_record(item: &Item, source: &ItemRef) -> Record {
    let mut rest = item.clone();
    rest.key = Bytes::new();
    rest.payload = Bytes::new();
    let mut headers = Vec::with_capacity(item.metadata.len() + 2);
    headers.push((
        ITEM_HEADER.to_string(),
        Some(Bytes::from(rest.encode_to_vec())),
    ));
    headers.push((
        SOURCE_HEADER.to_string(),
        Some(Bytes::from(source.to_string())),
    ));
    for (k, v) in &item.metadata {
        if k.starts_with("diaspora.") {
            continue;
        }
        let value = match v.kind.as_ref() {
            Some(diaspora_proto::v1::value::Kind::Raw(r)) => r.clone(),
            _ => match meta::value_text(v) {
                Some(t) => Bytes::from(t.into_owned()),
                None => continue,
            },
        };
        headers.push((k.clone(), Some(value)));
    }
    Record {
        key: (!item.key.is_empty()).then(|| item.key.clone()),
        value: Some(item.payload.clone()),
        timestamp_ms: Some(item.timestamp_us.div_euclid(1000)),
        headers,
    }
}

/// The item a record carries, and where it came from when a bridge wrote
/// it (`diaspora.source`).
pub fn from_record(r: &Record) -> Result<(Item, Option<ItemRef>), RecordError> {
    if r.headers.len() > HEADERS_MAX {
        return Err(RecordError::Limit {
            what: format!("{} headers", r.headers.len()),
            limit: HEADERS_MAX,
        });
    }
    if let Some((name, _)) = r.headers.iter().find(|(n, _)| n.len() > HEADER_NAME_MAX) {
        return Err(RecordError::Limit {
            what: format!("a header name of {} bytes", name.len()),
            limit: HEADER_NAME_MAX,
        });
    }
    let header = |name: &str| {
        r.headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone().unwrap_or_default())
    };
    let source = match header(SOURCE_HEADER) {
        Some(v) => Some(parse_source(&v)?),
        None => None,
    };
    let key = r.key.clone().unwrap_or_default();
    let payload = r.value.clone().unwrap_or_default();
    let item = match header(ITEM_HEADER) {
        Some(v) => {
            if v.len() > ITEM_HEADER_MAX {
                return Err(RecordError::Limit {
                    what: format!("a {ITEM_HEADER} header of {} bytes", v.len()),
                    limit: ITEM_HEADER_MAX,
                });
            }
            let mut item = Item::decode(v).map_err(|e| RecordError::Header {
                header: ITEM_HEADER,
                why: e.to_string(),
            })?;
            item.key = key;
            item.payload = payload;
            item
        }
        None => {
            let mut item = Item {
                key,
                payload,
                timestamp_us: r.timestamp_ms.unwrap_or(0).saturating_mul(1000),
                ..Default::default()
            };
            for (name, value) in &r.headers {
                let v = match value {
                    None => meta::boolean(true),
                    Some(b) => match std::str::from_utf8(b) {
                        Ok(s) => meta::string(s),
                        Err(_) => meta::raw(b.clone()),
                    },
                };
                item.metadata.insert(name.clone(), v);
            }
            item
        }
    };
    Ok((item, source))
}

/// The place a `diaspora.source` header names, `topic/partition/offset`.
pub fn parse_source(v: &[u8]) -> Result<ItemRef, RecordError> {
    let bad = |why: String| RecordError::Header {
        header: SOURCE_HEADER,
        why,
    };
    let s = std::str::from_utf8(v).map_err(|_| bad("not UTF-8".into()))?;
    let (rest, offset) = s
        .rsplit_once('/')
        .ok_or_else(|| bad(format!("{s:?} is not topic/partition/offset")))?;
    let (topic, partition) = rest
        .rsplit_once('/')
        .ok_or_else(|| bad(format!("{s:?} is not topic/partition/offset")))?;
    if topic.is_empty() {
        return Err(bad(format!("{s:?} has no topic")));
    }
    Ok(ItemRef {
        topic: topic.into(),
        partition: partition
            .parse()
            .map_err(|_| bad(format!("{s:?}: bad partition")))?,
        offset: offset
            .parse()
            .map_err(|_| bad(format!("{s:?}: bad offset")))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn source() -> ItemRef {
        ItemRef {
            topic: "frames".into(),
            partition: 3,
            offset: 41,
        }
    }

    #[test]
    fn an_item_goes_and_comes_back_whole_with_readable_headers() {
        let mut item = Item {
            key: Bytes::from_static(b"scan-7"),
            payload: Bytes::from_static(b"\x00\x01pixels"),
            timestamp_us: 1_700_000_000_123_456,
            ..Default::default()
        };
        item.metadata.insert("energy_kev".into(), meta::float(6.2));
        item.metadata
            .insert("scan.kind".into(), meta::string("fly"));
        item.metadata
            .insert("mask".into(), meta::raw(vec![0xff, 0]));
        item.metadata
            .insert("diaspora.internal".into(), meta::int(1));
        item.headers.insert("trace".into(), "abc".into());
        let r = to_record(&item, &source());
        assert_eq!(r.key.as_deref(), Some(&b"scan-7"[..]));
        assert_eq!(r.timestamp_ms, Some(1_700_000_000_123));
        let h = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone().unwrap())
        };
        assert_eq!(h("scan.kind").as_deref(), Some(&b"fly"[..]));
        assert_eq!(h("mask").as_deref(), Some(&[0xff, 0][..]));
        assert_eq!(h(SOURCE_HEADER).as_deref(), Some(&b"frames/3/41"[..]));
        assert!(h("diaspora.internal").is_none());
        let (back, src) = from_record(&r).unwrap();
        assert_eq!(back, item);
        assert_eq!(src, Some(source()));
    }

    #[test]
    fn a_plain_kafka_record_becomes_an_item_of_its_headers() {
        let r = Record {
            key: None,
            value: Some(Bytes::from_static(b"v")),
            timestamp_ms: Some(5),
            headers: vec![
                ("kind".into(), Some(Bytes::from_static(b"fly"))),
                ("bin".into(), Some(Bytes::from_static(&[0xc3, 0x28]))),
                ("flag".into(), None),
            ],
        };
        let (item, src) = from_record(&r).unwrap();
        assert_eq!(src, None);
        assert_eq!(item.timestamp_us, 5000);
        assert_eq!(meta::get_str(&item, "kind"), Some("fly"));
        assert!(meta::get_bool(&item, "flag"));
        assert!(matches!(
            meta::get(&item, "bin"),
            Some(diaspora_proto::v1::value::Kind::Raw(_))
        ));
    }

    #[test]
    fn bad_diaspora_headers_and_limits_are_refused_clearly() {
        let with = |name: &str, v: &[u8]| Record {
            headers: vec![(name.into(), Some(Bytes::copy_from_slice(v)))],
            ..Default::default()
        };
        for bad in [
            &b"frames/x/1"[..],
            b"frames/1",
            b"/1/2",
            b"\xff/1/2",
            b"t/1/-1",
        ] {
            let e = from_record(&with(SOURCE_HEADER, bad)).unwrap_err();
            assert!(e.to_string().contains(SOURCE_HEADER), "{e}");
        }
        let e = from_record(&with(ITEM_HEADER, &[0xff, 0xff, 0xff])).unwrap_err();
        assert!(e.to_string().contains("does not decode"), "{e}");
        let many = Record {
            headers: vec![("h".into(), None); HEADERS_MAX + 1],
            ..Default::default()
        };
        assert!(matches!(from_record(&many), Err(RecordError::Limit { .. })));
        let long = with(&"n".repeat(HEADER_NAME_MAX + 1), b"");
        assert!(matches!(from_record(&long), Err(RecordError::Limit { .. })));
    }

    fn value() -> impl Strategy<Value = diaspora_proto::v1::Value> {
        prop_oneof![
            any::<i64>().prop_map(meta::int),
            any::<f64>()
                .prop_filter("NaN never equals itself", |f| !f.is_nan())
                .prop_map(meta::float),
            any::<bool>().prop_map(meta::boolean),
            ".{0,12}".prop_map(|s| meta::string(&s)),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(meta::raw),
        ]
    }

    proptest! {
        #[test]
        fn any_item_round_trips(
            key in proptest::collection::vec(any::<u8>(), 0..16),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            ts in any::<i64>(),
            md in proptest::collection::btree_map("[a-z.]{1,8}", value(), 0..6),
            topic in "[a-z]{1,8}", partition in any::<u32>(), offset in any::<u64>(),
        ) {
            let mut item = Item {
                key: key.into(),
                payload: payload.into(),
                timestamp_us: ts,
                ..Default::default()
            };
            item.metadata = md.into_iter().collect();
            let src = ItemRef { topic: topic.into(), partition, offset };
            let (back, s) = from_record(&to_record(&item, &src)).unwrap();
            prop_assert_eq!(back, item);
            prop_assert_eq!(s, Some(src));
        }

        #[test]
        fn any_headers_decode_or_fail_cleanly(
            headers in proptest::collection::vec(
                (prop_oneof![Just(ITEM_HEADER.to_string()), Just(SOURCE_HEADER.to_string()), "[a-z]{0,6}"],
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))),
                0..8),
        ) {
            let r = Record {
                headers: headers.into_iter().map(|(n, v)| (n, v.map(Bytes::from))).collect(),
                ..Default::default()
            };
            let _ = from_record(&r);
        }
    }
}
