//! The metastream on the fabric: what a view publishes on its output
//! topic. One JSON message per fabric item — a view item (references to
//! its members, never their payloads) or the retraction of one. Format in
//! docs/PROTOCOL.md §17.
//!
//! ```
//! use diaspora_fabric::item::ItemRef;
//! use diaspora_view::wire::{decode, encode, RefMember, ViewMessage};
//! let m = ViewMessage::Item {
//!     view: "samples".into(),
//!     seq: 3,
//!     id: 0x1234,
//!     key: "17".into(),
//!     members: vec![RefMember {
//!         source: "patterns".into(),
//!         item: ItemRef::new("patterns", 0, 68),
//!         ident: None,
//!         time_us: 1,
//!     }],
//!     invalid: false,
//! };
//! assert_eq!(decode(&encode(&m)).unwrap(), m);
//! assert!(decode(b"{\"type\":\"item\"}").is_err());
//! ```

use crate::ViewError;
use diaspora_fabric::item::ItemRef;
use serde::{Deserialize, Serialize};

/// Largest message accepted.
pub const MESSAGE_BYTES_MAX: usize = 1 << 20;
/// Most members one message may reference.
pub const MESSAGE_MEMBERS_MAX: usize = 65_536;

/// A member reference as published: `{"source":…,"topic":…,"partition":…,
/// "offset":…,"ident":…,"time_us":…}` (the fabric's [`ItemRef`] fields
/// inline, in that place).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefMember {
    /// Source name within the view.
    pub source: String,
    /// Where the member lives in the fabric.
    #[serde(flatten)]
    pub item: ItemRef,
    /// Identity from the source's id key, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ident: Option<u64>,
    /// Item time, µs since the Unix epoch.
    pub time_us: i64,
}

/// One message of a view's metastream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ViewMessage {
    /// A view item.
    Item {
        /// View name.
        view: String,
        /// Position in the view's metastream.
        seq: u64,
        /// Stable view item id (hash of its members).
        id: u64,
        /// Join key.
        key: String,
        /// Member references, by source.
        members: Vec<RefMember>,
        /// A member was invalidated or expired, and the view pins it.
        #[serde(default)]
        invalid: bool,
    },
    /// An earlier view item is no longer valid.
    Retract {
        /// View name.
        view: String,
        /// The view item's id.
        id: u64,
        /// Why.
        cause: String,
    },
}

/// Encodes a message.
pub fn encode(m: &ViewMessage) -> Vec<u8> {
    serde_json::to_vec(m).expect("view messages serialise")
}

/// Decodes and checks a message; never panics.
pub fn decode(bytes: &[u8]) -> Result<ViewMessage, ViewError> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(ViewError::Wire(format!(
            "message of {} bytes (at most {MESSAGE_BYTES_MAX})",
            bytes.len()
        )));
    }
    let m: ViewMessage =
        serde_json::from_slice(bytes).map_err(|e| ViewError::Wire(format!("message: {e}")))?;
    match &m {
        ViewMessage::Item {
            view, id, members, ..
        } => {
            if view.is_empty() {
                return Err(ViewError::Wire("item without a view name".into()));
            }
            if *id == 0 {
                return Err(ViewError::Wire("view item id 0".into()));
            }
            if members.is_empty() || members.len() > MESSAGE_MEMBERS_MAX {
                return Err(ViewError::Wire(format!(
                    "{} members (1..={MESSAGE_MEMBERS_MAX})",
                    members.len()
                )));
            }
            if members
                .iter()
                .any(|r| r.item.topic.is_empty() || r.source.is_empty())
            {
                return Err(ViewError::Wire("member without topic or source".into()));
            }
        }
        ViewMessage::Retract { view, id, .. } => {
            if view.is_empty() || *id == 0 {
                return Err(ViewError::Wire("retraction without view or id".into()));
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member() -> impl Strategy<Value = RefMember> {
        (
            "[a-z]{1,8}",
            "[a-z./]{1,12}",
            any::<u32>(),
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            any::<i64>(),
        )
            .prop_map(
                |(source, topic, partition, offset, ident, time_us)| RefMember {
                    source,
                    item: ItemRef::new(topic, partition, offset),
                    ident,
                    time_us,
                },
            )
    }

    proptest! {
        #[test]
        fn round_trips(view in "[a-z-]{1,10}", seq in any::<u64>(), id in 1u64.., key in ".{0,12}",
                       members in proptest::collection::vec(member(), 1..6), invalid in any::<bool>()) {
            let m = ViewMessage::Item { view: view.clone(), seq, id, key, members, invalid };
            prop_assert_eq!(decode(&encode(&m)).unwrap(), m);
            let r = ViewMessage::Retract { view, id, cause: "bad".into() };
            prop_assert_eq!(decode(&encode(&r)).unwrap(), r);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn truncations_are_errors(members in proptest::collection::vec(member(), 1..4), cut in any::<prop::sample::Index>()) {
            let bytes = encode(&ViewMessage::Item { view: "v".into(), seq: 1, id: 9, key: "k".into(), members, invalid: false });
            let at = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..at]).is_err());
        }
    }

    /// The encoding the metastream had before `RefMember` held an
    /// [`ItemRef`] (separate `topic`, `partition`, `offset` fields), byte
    /// for byte: docs/PROTOCOL.md §17 is unchanged.
    #[test]
    fn the_encoding_is_the_protocol_one() {
        let m = ViewMessage::Item {
            view: "samples".into(),
            seq: 3,
            id: 0x1234,
            key: "17".into(),
            members: vec![
                RefMember {
                    source: "patterns".into(),
                    item: ItemRef::new("patterns", 2, 68),
                    ident: Some(u64::MAX),
                    time_us: -1,
                },
                RefMember {
                    source: "recons".into(),
                    item: ItemRef::new("a/b", 0, u64::MAX),
                    ident: None,
                    time_us: 1,
                },
            ],
            invalid: true,
        };
        let text = r#"{"type":"item","view":"samples","seq":3,"id":4660,"key":"17","members":[{"source":"patterns","topic":"patterns","partition":2,"offset":68,"ident":18446744073709551615,"time_us":-1},{"source":"recons","topic":"a/b","partition":0,"offset":18446744073709551615,"time_us":1}],"invalid":true}"#;
        assert_eq!(String::from_utf8(encode(&m)).unwrap(), text);
        assert_eq!(decode(text.as_bytes()).unwrap(), m);
        // Fields in another order, as another writer may put them.
        let shuffled = r#"{"type":"item","view":"samples","seq":3,"id":4660,"key":"17","members":[{"offset":68,"time_us":-1,"partition":2,"ident":18446744073709551615,"topic":"patterns","source":"patterns"},{"topic":"a/b","source":"recons","time_us":1,"offset":18446744073709551615,"partition":0}],"invalid":true}"#;
        assert_eq!(decode(shuffled.as_bytes()).unwrap(), m);
        // Every field of a member is still required, and no other is taken.
        for bad in [
            r#"{"source":"s","partition":0,"offset":1,"time_us":1}"#,
            r#"{"source":"s","topic":"t","offset":1,"time_us":1}"#,
            r#"{"source":"s","topic":"t","partition":0,"time_us":1}"#,
            r#"{"source":"s","topic":"t","partition":0,"offset":1}"#,
            r#"{"source":"s","topic":"t","partition":0,"offset":1,"time_us":1,"extra":0}"#,
            r#"{"source":"s","topic":"t","partition":-1,"offset":1,"time_us":1}"#,
        ] {
            let msg = format!(
                r#"{{"type":"item","view":"v","seq":1,"id":5,"key":"k","members":[{bad}]}}"#
            );
            assert!(decode(msg.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_messages_say_what_is_wrong() {
        for (bad, what) in [
            (
                r#"{"type":"item","view":"v","seq":1,"id":0,"key":"k","members":[]}"#,
                "id 0",
            ),
            (
                r#"{"type":"item","view":"v","seq":1,"id":5,"key":"k","members":[]}"#,
                "members",
            ),
            (
                r#"{"type":"retract","view":"","id":5,"cause":""}"#,
                "retraction",
            ),
            (r#"{"type":"other"}"#, "unknown variant"),
            (
                r#"{"type":"retract","view":"v","id":5,"cause":"","extra":1}"#,
                "unknown field",
            ),
        ] {
            let err = decode(bad.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(what), "{bad}: {err}");
        }
        let big = vec![b' '; MESSAGE_BYTES_MAX + 1];
        assert!(decode(&big).unwrap_err().to_string().contains("at most"));
    }
}
