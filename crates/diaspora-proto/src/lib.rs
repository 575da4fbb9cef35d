//! # diaspora-proto
//!
//! The wire vocabulary of diaspora: protobuf messages generated from `proto/`
//! (the streamed [`v1::Item`], the data-plane [`v1::Frame`]s and the admin gRPC
//! service), plus the length-prefixed frame codec used on QUIC streams.
//!
//! A frame on the wire is a 4-byte big-endian length `N` followed by `N` bytes of an
//! encoded [`v1::Frame`]. The codec refuses lengths above a configured maximum
//! *before* allocating, so a hostile peer cannot make a node reserve memory it
//! did not send. See `docs/PROTOCOL.md` for the whole protocol.
//!
//! This crate does no I/O of its own beyond the async frame reader/writer helpers,
//! and holds no state.

#![warn(missing_docs)]

/// Generated types of the `diaspora.v1` protobuf package.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("diaspora.v1");
}

pub mod frame;
pub mod fuzzing;

pub use frame::{decode_frame, encode_frame, FrameError, FRAME_HEADER_BYTES};

/// ALPN protocol identifier of the diaspora data plane, version 1.
pub const ALPN: &[u8] = b"diaspora/1";

/// Data-plane protocol version spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;
