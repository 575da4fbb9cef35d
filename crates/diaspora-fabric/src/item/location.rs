//! [`ItemRef`]: where an item lives in the fabric.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Where an item lives in the fabric: topic, partition, offset.
///
/// The one location type of diaspora: the provenance store names item
/// records by it, a view's metastream references its members by it and an
/// acknowledgement hook learns it ([`AckedItem`](super::AckedItem)). The
/// topic is an `Arc<str>`, so the many references to one topic share it and
/// a clone is a reference-count increment. Serialized as
/// `{"topic":…,"partition":…,"offset":…}`; displayed (and parsed by
/// [`ItemRef::parse`]) as `topic/partition/offset`.
///
/// ```
/// use diaspora_fabric::item::ItemRef;
/// let at = ItemRef::new("frames", 2, 41);
/// assert_eq!(at.to_string(), "frames/2/41");
/// assert_eq!(ItemRef::parse("frames/2/41"), Some(at.clone()));
/// assert_eq!(serde_json::to_string(&at).unwrap(), r#"{"topic":"frames","partition":2,"offset":41}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ItemRef {
    /// Topic.
    #[serde(with = "arc_str")]
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
}

impl ItemRef {
    /// The item at `offset` of `partition` of `topic`.
    pub fn new(topic: impl Into<Arc<str>>, partition: u32, offset: u64) -> ItemRef {
        ItemRef {
            topic: topic.into(),
            partition,
            offset,
        }
    }

    /// Parses `topic/partition/offset` (the topic may itself contain `/`;
    /// the last two fields are numbers). `None` when it is not one.
    pub fn parse(s: &str) -> Option<ItemRef> {
        let mut it = s.rsplitn(3, '/');
        let offset = it.next()?.parse().ok()?;
        let partition = it.next()?.parse().ok()?;
        let topic = it.next()?;
        (!topic.is_empty()).then(|| ItemRef::new(topic, partition, offset))
    }
}

/// `Arc<str>` as a plain JSON string (what serde's `rc` feature would do,
/// without turning that feature on for the whole workspace).
mod arc_str {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &Arc<str>, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(d).map(Arc::from)
    }
}

impl fmt::Display for ItemRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn display_parses_back(topic in "[a-z./_-]{1,16}", partition in any::<u32>(), offset in any::<u64>()) {
            let at = ItemRef::new(topic.as_str(), partition, offset);
            prop_assert_eq!(ItemRef::parse(&at.to_string()), Some(at.clone()));
            let json = serde_json::to_string(&at).unwrap();
            prop_assert_eq!(serde_json::from_str::<ItemRef>(&json).unwrap(), at);
        }
    }

    #[test]
    fn malformed_locations_are_none() {
        for bad in ["", "t", "t/1", "/1/2", "t/x/2", "t/1/y", "t/-1/2"] {
            assert_eq!(ItemRef::parse(bad), None, "{bad}");
        }
        assert_eq!(ItemRef::parse("a/b/3/4"), Some(ItemRef::new("a/b", 3, 4)));
    }

    #[test]
    fn serialized_like_a_plain_struct() {
        // The encoding the provenance store and the view metastream had
        // before ItemRef (a String topic): byte-identical.
        #[derive(Serialize)]
        struct Before {
            topic: String,
            partition: u32,
            offset: u64,
        }
        let before = Before {
            topic: "t.x".into(),
            partition: 3,
            offset: u64::MAX,
        };
        assert_eq!(
            serde_json::to_string(&ItemRef::new("t.x", 3, u64::MAX)).unwrap(),
            serde_json::to_string(&before).unwrap()
        );
    }
}
