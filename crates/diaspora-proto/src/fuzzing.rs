//! Bodies of the fuzz targets in `crates/diaspora-proto/fuzz`, kept here so
//! ordinary tests run them too.

use bytes::Bytes;
use prost::Message;

use crate::frame::{decode_frame, encode_frame};
use crate::v1::{frame::Body, Item};

/// Decodes arbitrary bytes as a frame body and as an item. Must never panic;
/// whatever decodes must re-encode and decode to the same value.
pub fn frame_decode(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    if let Ok(frame) = decode_frame(body.clone(), 1 << 20) {
        let again = decode_frame(encode_frame(&frame).slice(4..), u64::MAX)
            .expect("a decoded frame re-encodes to a decodable frame");
        assert_eq!(again, frame);
        if let Some(Body::ProduceRequest(p)) = &frame.body {
            assert!(p.batch.len() <= data.len());
        }
    }
    if let Ok(item) = Item::decode(body) {
        let again = Item::decode(item.encode_to_vec().as_slice()).expect("re-decodes");
        assert_eq!(again, item);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn frame_decode_body_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            super::frame_decode(&data);
        }
    }
}
