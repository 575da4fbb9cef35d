//! Length-prefixed frame codec: `u32` big-endian length, then an encoded [`Frame`].

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

use crate::v1::Frame;

/// Bytes of the length prefix in front of every frame.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The declared length is above the receiver's limit.
    #[error("frame of {len} bytes exceeds frame_bytes_max {max}")]
    TooLarge {
        /// Declared frame length.
        len: u64,
        /// The configured limit.
        max: u64,
    },
    /// The bytes are not a valid `Frame` message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A frame with no body.
    #[error("malformed frame: frame {id} has no body")]
    Empty {
        /// The frame's correlation id.
        id: u64,
    },
}

/// Encodes `frame` with its length prefix into one contiguous buffer.
///
/// ```
/// use diaspora_proto::{encode_frame, decode_frame, v1};
/// let f = v1::Frame { id: 7, body: Some(v1::frame::Body::MetadataRequest(
///     v1::MetadataRequest { topic: "frames".into() })) };
/// let wire = encode_frame(&f);
/// let len = u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
/// assert_eq!(len, wire.len() - 4);
/// assert_eq!(decode_frame(wire.slice(4..), 1 << 20).unwrap(), f);
/// ```
pub fn encode_frame(frame: &Frame) -> Bytes {
    let len = frame.encoded_len();
    let mut buf = BytesMut::with_capacity(FRAME_HEADER_BYTES + len);
    buf.put_u32(len as u32);
    frame
        .encode(&mut buf)
        .expect("buffer was reserved with the exact encoded length");
    buf.freeze()
}

/// Byte fields at least this large are sent as their own chunk, not copied.
pub const ZERO_COPY_MIN_BYTES: usize = 16 << 10;

/// Encodes `frame` as a list of chunks whose concatenation is exactly
/// [`encode_frame`]`(frame)`, without copying large payloads: the record
/// batch of a `ProduceRequest` and the batches of a `FetchResponse` are
/// handed over as the `Bytes` they already are (reference-counted). Other
/// frames come back as one chunk.
///
/// ```
/// use diaspora_proto::{encode_frame, frame::encode_frame_chunks, v1};
/// let batch = bytes::Bytes::from(vec![7u8; 100_000]);
/// let f = v1::Frame { id: 3, body: Some(v1::frame::Body::ProduceRequest(v1::ProduceRequest {
///     topic: "t".into(), partition: 1, batch: batch.clone() })) };
/// let chunks = encode_frame_chunks(&f);
/// assert_eq!(chunks.concat(), encode_frame(&f).to_vec());
/// assert!(chunks.iter().any(|c| c.as_ptr() == batch.as_ptr()), "batch not copied");
/// ```
pub fn encode_frame_chunks(frame: &Frame) -> Vec<Bytes> {
    use crate::v1::{frame::Body, FetchResponse, ProduceRequest};
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

    fn bytes_field_len(tag: u32, len: usize) -> usize {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }
    let id_len = if frame.id != 0 {
        key_len(1) + encoded_len_varint(frame.id)
    } else {
        0
    };
    let put_head = |buf: &mut BytesMut, frame_len: usize, body_tag: u32, body_len: usize| {
        buf.put_u32(frame_len as u32);
        if frame.id != 0 {
            encode_key(1, WireType::Varint, buf);
            encode_varint(frame.id, buf);
        }
        encode_key(body_tag, WireType::LengthDelimited, buf);
        encode_varint(body_len as u64, buf);
    };
    match &frame.body {
        Some(Body::ProduceRequest(p)) if p.batch.len() >= ZERO_COPY_MIN_BYTES => {
            const TAG: u32 = 7;
            let rest = ProduceRequest {
                topic: p.topic.clone(),
                partition: p.partition,
                batch: Bytes::new(),
            };
            let body_len = rest.encoded_len() + bytes_field_len(3, p.batch.len());
            let frame_len = id_len + bytes_field_len(TAG, body_len);
            let mut head = BytesMut::with_capacity(32 + rest.encoded_len());
            put_head(&mut head, frame_len, TAG, body_len);
            rest.encode(&mut head).expect("BytesMut grows");
            encode_key(3, WireType::LengthDelimited, &mut head);
            encode_varint(p.batch.len() as u64, &mut head);
            vec![head.freeze(), p.batch.clone()]
        }
        Some(Body::FetchResponse(f))
            if f.batches.iter().map(Bytes::len).sum::<usize>() >= ZERO_COPY_MIN_BYTES =>
        {
            const TAG: u32 = 10;
            let tail = FetchResponse {
                batches: Vec::new(),
                start_offset: f.start_offset,
                next_offset: f.next_offset,
                items: f.items.clone(),
            };
            let body_len = f
                .batches
                .iter()
                .map(|b| bytes_field_len(1, b.len()))
                .sum::<usize>()
                + tail.encoded_len();
            let frame_len = id_len + bytes_field_len(TAG, body_len);
            let mut chunks = Vec::with_capacity(2 * f.batches.len() + 2);
            let mut head = BytesMut::with_capacity(48);
            put_head(&mut head, frame_len, TAG, body_len);
            for b in &f.batches {
                encode_key(1, WireType::LengthDelimited, &mut head);
                encode_varint(b.len() as u64, &mut head);
                chunks.push(head.split().freeze());
                chunks.push(b.clone());
            }
            tail.encode(&mut head).expect("BytesMut grows");
            if !head.is_empty() {
                chunks.push(head.freeze());
            }
            chunks
        }
        _ => vec![encode_frame(frame)],
    }
}

/// Checks a frame length prefix against the limit before any allocation.
pub fn check_frame_len(len: u32, frame_bytes_max: u64) -> Result<usize, FrameError> {
    if u64::from(len) > frame_bytes_max {
        return Err(FrameError::TooLarge {
            len: len.into(),
            max: frame_bytes_max,
        });
    }
    Ok(len as usize)
}

/// Decodes a frame body (without its length prefix). `bytes` fields of the result
/// are zero-copy slices of `body`.
pub fn decode_frame(body: Bytes, frame_bytes_max: u64) -> Result<Frame, FrameError> {
    check_frame_len(
        u32::try_from(body.len()).unwrap_or(u32::MAX),
        frame_bytes_max,
    )?;
    let frame = Frame::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if frame.body.is_none() {
        return Err(FrameError::Empty { id: frame.id });
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{self, frame::Body};
    use proptest::prelude::*;

    fn produce(id: u64, topic: String, partition: u32, batch: Vec<u8>) -> Frame {
        Frame {
            id,
            body: Some(Body::ProduceRequest(v1::ProduceRequest {
                topic,
                partition,
                batch: batch.into(),
            })),
        }
    }

    proptest! {
        #[test]
        fn roundtrip(id in any::<u64>(), topic in ".{0,40}", partition in any::<u32>(),
                     batch in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let f = produce(id, topic, partition, batch);
            let wire = encode_frame(&f);
            prop_assert_eq!(wire.len(), FRAME_HEADER_BYTES + f.encoded_len());
            let back = decode_frame(wire.slice(FRAME_HEADER_BYTES..), u64::MAX).unwrap();
            prop_assert_eq!(back, f);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame(Bytes::from(bytes), 1 << 20);
        }

        #[test]
        fn truncation_is_an_error_or_a_different_valid_frame(
            batch in proptest::collection::vec(any::<u8>(), 1..256), cut in 0usize..64) {
            let f = produce(1, "t".into(), 0, batch);
            let wire = encode_frame(&f);
            let body = wire.slice(FRAME_HEADER_BYTES..);
            let cut = cut.min(body.len() - 1);
            if let Ok(g) = decode_frame(body.slice(..cut), u64::MAX) {
                prop_assert_ne!(g, f);
            }
        }
    }

    fn fetch(id: u64, batches: Vec<Vec<u8>>, start: u64, next: u64) -> Frame {
        Frame {
            id,
            body: Some(Body::FetchResponse(v1::FetchResponse {
                batches: batches.into_iter().map(Bytes::from).collect(),
                start_offset: start,
                next_offset: next,
                items: Vec::new(),
            })),
        }
    }

    proptest! {
        #[test]
        fn chunked_encoding_is_byte_identical(
            id in prop_oneof![Just(0u64), any::<u64>()], topic in "[a-z]{0,12}", partition in any::<u32>(),
            len in prop_oneof![0usize..64, ZERO_COPY_MIN_BYTES..ZERO_COPY_MIN_BYTES + 300],
            batches in proptest::collection::vec(
                prop_oneof![0usize..32, 6000usize..9000], 0..5),
            start in any::<u64>(), next in any::<u64>()) {
            let f = produce(id, topic, partition, vec![0xAB; len]);
            prop_assert_eq!(encode_frame_chunks(&f).concat(), encode_frame(&f).to_vec());
            let g = fetch(id, batches.into_iter().map(|n| vec![0x5A; n]).collect(), start, next);
            prop_assert_eq!(encode_frame_chunks(&g).concat(), encode_frame(&g).to_vec());
        }
    }

    #[test]
    fn oversized_length_is_refused_before_allocation() {
        let err = check_frame_len(u32::MAX, 1024).unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame of 4294967295 bytes exceeds frame_bytes_max 1024"
        );
    }

    #[test]
    fn empty_body_is_refused() {
        let err = decode_frame(Bytes::from_static(&[0x08, 0x05]), 1024).unwrap_err();
        assert_eq!(err, FrameError::Empty { id: 5 });
    }
}
