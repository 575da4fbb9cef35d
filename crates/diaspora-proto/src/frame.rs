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
