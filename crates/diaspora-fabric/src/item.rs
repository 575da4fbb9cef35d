//! Items as the client sees them: building, encoding into batch records,
//! decoding consumed records.

use bytes::Bytes;
use diaspora_proto::v1;
use prost::Message;

use crate::error::{FabricError, Result};

pub use diaspora_proto::v1::Item;

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
}

impl ConsumedItem {
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
        timestamp_us: crate::broker::now_us(),
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
