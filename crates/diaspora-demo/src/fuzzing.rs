//! Fuzz bodies for what the loop parses from the network: its items
//! (frames, reconstructions, models, notices, the uplink's end marker) and
//! monitors' predictions. Each parser must return a value or an error, never
//! panic; the fuzz target in `fuzz/` calls these, and so do the tests below.

use diaspora_proto::v1::Item;

/// Any bytes as an item (protobuf), given to every parser of the loop.
pub fn item(data: &[u8]) {
    if let Ok(item) = <Item as prost::Message>::decode(data) {
        crate::online::wire::parse_any(&item);
    }
    // The same bytes as an item's payload, with no metadata.
    crate::online::wire::parse_any(&diaspora_fabric::item::payload_item(
        bytes::Bytes::copy_from_slice(data),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn seeds_and_their_truncations_do_not_panic() {
        let mut frame = diaspora_fabric::item::payload_item(bytes::Bytes::from(vec![1u8; 32]));
        for (k, v) in [("scan", "s"), ("notice", "invalidated")] {
            frame
                .metadata
                .insert(k.into(), diaspora_fabric::item::meta::string(v));
        }
        for k in [
            "index",
            "x",
            "y",
            "positions",
            "side",
            "n",
            "crc32c",
            "version",
            "end",
        ] {
            frame
                .metadata
                .insert(k.into(), diaspora_fabric::item::meta::int(4));
        }
        let bytes = frame.encode_to_vec();
        for cut in 0..=bytes.len() {
            item(&bytes[..cut]);
        }
        item(br#"{"kind":"prediction","labels":{"link":"wan"},"threshold":"x"}"#);
    }
}
