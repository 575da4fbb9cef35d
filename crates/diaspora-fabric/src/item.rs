//! The item vocabulary every service shares, and items as the client sees
//! them.
//!
//! - [`ItemRef`]: where an item lives (topic, partition, offset), displayed
//!   `topic/partition/offset`.
//! - [`meta`]: building and reading metadata values, and their one text
//!   form (a view's join key, a provenance tag).
//! - [`AckHook`] / [`AckedItem`]: what a producer tells a provenance
//!   recorder about each acknowledged item.
//! - [`now_us`]: the wall clock items are stamped with; [`IdHasher`]: the
//!   hasher for maps keyed by integers the system assigned.
//! - Building ([`payload_item`]), encoding into batch records
//!   ([`encode_item`], [`encode_item_parts`]) and decoding consumed records
//!   ([`decode_batch_items`]); [`key_hash`], the key → partition hash.

use bytes::Bytes;
use diaspora_proto::v1;
use prost::Message;

use crate::error::{FabricError, Result};

mod ack;
mod location;
pub mod meta;

pub use ack::{AckHook, AckedItem};
pub use diaspora_proto::v1::Item;
pub use location::ItemRef;

/// Wall clock, µs since the Unix epoch (0 if the clock is before it): the
/// time items, metric events and records are stamped with.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A hasher for integers the system assigned (offsets, sequence numbers,
/// record ids, view item ids — never attacker-chosen strings): a rotate,
/// xor and multiply per word instead of SipHash. Use it through
/// [`IdBuildHasher`].
///
/// ```
/// use std::collections::HashMap;
/// let mut m: HashMap<u64, &str, diaspora_fabric::item::IdBuildHasher> = HashMap::default();
/// m.insert(7, "seven");
/// assert_eq!(m[&7], "seven");
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

/// The `BuildHasher` of [`IdHasher`], for `HashMap`s and `HashSet`s.
pub type IdBuildHasher = std::hash::BuildHasherDefault<IdHasher>;

/// An item read from the fabric, with its place.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumedItem {
    /// Topic (shared by every item of a fetch).
    pub topic: std::sync::Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// The item. Its `producer_key` is filled from the batch when the item did not carry one.
    pub item: Item,
    /// Encoded size of the record, bytes.
    pub record_bytes: usize,
    /// Length of the item's payload, bytes. Equal to `item.payload.len()`
    /// unless the item came from a metadata-only fetch, which leaves the
    /// payload out (read it with [`crate::Client::read_payload`]).
    pub payload_bytes: u64,
}

impl ConsumedItem {
    /// Whether the payload was left out (a metadata-only fetch of an item
    /// that has one).
    pub fn payload_left_out(&self) -> bool {
        self.item.payload.len() as u64 != self.payload_bytes
    }

    /// The item as a metadata-only fetch delivers it.
    pub fn from_meta(topic: &std::sync::Arc<str>, partition: u32, m: v1::ItemMeta) -> ConsumedItem {
        ConsumedItem {
            topic: topic.clone(),
            partition,
            offset: m.offset,
            item: m.item.unwrap_or_default(),
            record_bytes: m.record_bytes as usize,
            payload_bytes: m.payload_bytes,
        }
    }

    /// Drops the payload (keeping its length), as a metadata-only fetch would.
    pub fn without_payload(mut self) -> ConsumedItem {
        self.item.payload = Bytes::new();
        self
    }

    /// Where the item lives.
    pub fn item_ref(&self) -> ItemRef {
        ItemRef {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }

    /// The item's payload (zero-copy slice of the fetched batch for uncompressed batches).
    pub fn payload(&self) -> &Bytes {
        &self.item.payload
    }
}

/// An item with only a payload and a timestamp.
///
/// ```
/// let it = diaspora_fabric::item::payload_item(bytes::Bytes::from_static(b"frame"));
/// assert_eq!(&it.payload[..], b"frame");
/// ```
pub fn payload_item(payload: Bytes) -> Item {
    Item {
        payload,
        timestamp_us: now_us(),
        ..Default::default()
    }
}

/// Encodes an item as a batch record.
pub fn encode_item(item: &Item) -> Vec<u8> {
    item.encode_to_vec()
}

/// Payloads at least this large are not copied by [`encode_item_parts`].
pub const PAYLOAD_ZERO_COPY_MIN_BYTES: usize = 4096;

/// Encodes an item as `(head, payload)` whose concatenation is a valid
/// encoding of the item: the payload field is moved to the end, so a large
/// payload is copied only once, into the batch. (Protobuf decoders accept
/// fields in any order.)
///
/// ```
/// use prost::Message;
/// let item = diaspora_fabric::item::payload_item(bytes::Bytes::from(vec![9u8; 10_000]));
/// let (head, payload) = diaspora_fabric::item::encode_item_parts(item.clone());
/// let joined = [head, payload.to_vec()].concat();
/// assert_eq!(diaspora_fabric::item::Item::decode(&joined[..]).unwrap(), item);
/// ```
pub fn encode_item_parts(mut item: Item) -> (Vec<u8>, Bytes) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    if item.payload.len() < PAYLOAD_ZERO_COPY_MIN_BYTES {
        return (item.encode_to_vec(), Bytes::new());
    }
    let payload = std::mem::take(&mut item.payload);
    let mut head = Vec::with_capacity(item.encoded_len() + 16);
    item.encode(&mut head).expect("Vec grows");
    encode_key(3, WireType::LengthDelimited, &mut head);
    encode_varint(payload.len() as u64, &mut head);
    (head, payload)
}

/// Decodes every record of a raw batch at or after `from_offset`.
pub fn decode_batch_items(
    topic: &str,
    partition: u32,
    batch: &Bytes,
    from_offset: u64,
) -> Result<Vec<ConsumedItem>> {
    let mut out = Vec::new();
    decode_batch_items_into(&topic.into(), partition, batch, from_offset, &mut out)?;
    Ok(out)
}

/// Like [`decode_batch_items`], appending to `out` (no intermediate vector
/// per batch when a fetch returns several).
pub fn decode_batch_items_into(
    topic: &std::sync::Arc<str>,
    partition: u32,
    batch: &Bytes,
    from_offset: u64,
    out: &mut Vec<ConsumedItem>,
) -> Result<()> {
    let header = diaspora_log::decode_header(batch)
        .map_err(|e| FabricError::Invalid(format!("batch from node: {e}")))?;
    // The node validated the batch against its own limits; the client checks
    // structure and CRC, and accepts any size the format allows.
    let records =
        diaspora_log::records_with_limits(batch, &diaspora_log::BatchLimits::format_max())
            .map_err(|e| FabricError::Invalid(format!("batch from node: {e}")))?;
    out.reserve(records.len());
    for r in records {
        if r.offset < from_offset {
            continue;
        }
        let record_bytes = r.data.len();
        let mut item = Item::decode(r.data).map_err(|e| {
            FabricError::Invalid(format!(
                "item at {topic}/{partition}@{} does not decode: {e}",
                r.offset
            ))
        })?;
        if item.producer_key.is_none() && header.producer_id != 0 {
            item.producer_key = Some(v1::ProducerKey {
                producer_id: header.producer_id,
                sequence: header.base_sequence + (r.offset - header.base_offset),
            });
        }
        out.push(ConsumedItem {
            topic: topic.clone(),
            partition,
            offset: r.offset,
            payload_bytes: item.payload.len() as u64,
            item,
            record_bytes,
        });
    }
    Ok(())
}

/// FNV-1a, for stable key → partition mapping across processes and versions.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hasher};

    #[test]
    fn id_hasher_spreads_neighbouring_ids() {
        let b = IdBuildHasher::default();
        let h: std::collections::HashSet<u64> = (0..1000u64).map(|i| b.hash_one(i) >> 57).collect();
        // The top 7 bits (hashbrown's control byte) take many values.
        assert!(h.len() > 64, "{}", h.len());
        let mut a = IdHasher::default();
        a.write_i64(-1);
        let mut c = IdHasher::default();
        c.write_u64(u64::MAX);
        assert_eq!(a.finish(), c.finish());
    }

    #[test]
    fn now_us_is_after_2020() {
        assert!(now_us() > 1_577_836_800_000_000);
    }
}
