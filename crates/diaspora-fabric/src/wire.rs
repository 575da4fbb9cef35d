//! Reading and writing length-prefixed frames on quinn streams.

use bytes::{Bytes, BytesMut};
use diaspora_proto::frame::check_frame_len;
use diaspora_proto::v1::Frame;
use diaspora_proto::{decode_frame, FrameError};

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    /// The bytes were not a valid frame; only this stream is affected.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({got} of {want} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced.
        want: usize,
    },
    /// The stream or connection failed.
    #[error("stream: {0}")]
    Stream(String),
}

/// Reads exactly `len` bytes, zero-copy when quinn hands them over in one chunk.
async fn read_bytes(
    recv: &mut quinn::RecvStream,
    len: usize,
) -> Result<Option<Bytes>, ReadFrameError> {
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    let mut got = 0usize;
    while got < len {
        let chunk = recv
            .read_chunk(len - got, true)
            .await
            .map_err(|e| ReadFrameError::Stream(e.to_string()))?;
        let Some(chunk) = chunk else {
            if got == 0 {
                return Ok(None);
            }
            return Err(ReadFrameError::Truncated { got, want: len });
        };
        got += chunk.bytes.len();
        match (&mut first, &mut buf) {
            (None, None) => first = Some(chunk.bytes),
            (Some(f), None) => {
                let mut b = BytesMut::with_capacity(len);
                b.extend_from_slice(f);
                b.extend_from_slice(&chunk.bytes);
                buf = Some(b);
                first = None;
            }
            (_, Some(b)) => b.extend_from_slice(&chunk.bytes),
        }
    }
    Ok(Some(match (first, buf) {
        (_, Some(b)) => b.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    }))
}

/// Reads one frame. `Ok(None)` means the peer finished the stream cleanly
/// between frames.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    frame_bytes_max: u64,
) -> Result<Option<Frame>, ReadFrameError> {
    let Some(header) = read_bytes(recv, 4).await? else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
    let len = check_frame_len(len, frame_bytes_max)?;
    let body = match read_bytes(recv, len).await? {
        Some(b) => b,
        None if len == 0 => Bytes::new(),
        None => return Err(ReadFrameError::Truncated { got: 0, want: len }),
    };
    Ok(Some(decode_frame(body, frame_bytes_max)?))
}

/// Writes an already-encoded frame (see [`diaspora_proto::encode_frame`]).
pub async fn write_frame(
    send: &mut quinn::SendStream,
    wire: Bytes,
) -> Result<(), quinn::WriteError> {
    send.write_chunk(wire).await
}
