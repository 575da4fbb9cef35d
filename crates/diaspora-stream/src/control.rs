//! Control events of a QoS stream, carried on the fabric itself: consumers
//! report progress and ask for replays on `TOPIC.qos`; the producer answers
//! what it cannot replay there, serves replays on `TOPIC.replay`, and asks
//! for more consumers on the policy's scale-up topic. Each event is one item
//! whose payload is a small JSON object (metadata `qos.control = 1`).

use bytes::Bytes;
use diaspora_fabric::item::Item;
use serde::{Deserialize, Serialize};

/// Control events are at most this large, bytes.
pub const CONTROL_BYTES_MAX: usize = 64 << 10;

/// Metadata key: the stream sequence number (int).
pub const SEQ: &str = "qos.seq";
/// Metadata key: sequence numbers reduced away just before this one (int).
pub const REDUCED_BEFORE: &str = "qos.reduced_before";
/// Metadata key: sequence numbers shed just before this one (int).
pub const SHED_BEFORE: &str = "qos.shed_before";
/// Metadata key: payload codec (`"zstd"`).
pub const CODEC: &str = "qos.codec";
/// Metadata key: the item is a replay (bool).
pub const REPLAY: &str = "qos.replay";
/// Metadata key: the data partition of a replayed item (int).
pub const PARTITION: &str = "qos.partition";
/// Metadata key: an original delivered after its substitute (bool).
pub const SUPERSEDES: &str = "qos.supersedes";

/// The control topic of a stream on `topic`.
pub fn control_topic(topic: &str) -> String {
    format!("{topic}.qos")
}

/// The replay topic of a stream on `topic`.
pub fn replay_topic(topic: &str) -> String {
    format!("{topic}.replay")
}

/// One control event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Control {
    /// A consumer's progress on a partition.
    Progress {
        /// Consumer name.
        consumer: String,
        /// Partition.
        partition: u32,
        /// Next sequence number it expects.
        next_seq: u64,
        /// Latency of what it receives now, µs.
        latency_us: u64,
        /// Items per second it delivers.
        rate_hz: f64,
    },
    /// A consumer asks for `from..=to` of a partition again.
    Replay {
        /// Consumer name.
        consumer: String,
        /// Partition.
        partition: u32,
        /// First.
        from: u64,
        /// Last (inclusive).
        to: u64,
    },
    /// The producer no longer holds `from..=to`.
    Unavailable {
        /// Partition.
        partition: u32,
        /// First.
        from: u64,
        /// Last (inclusive).
        to: u64,
    },
    /// The consumers lag past the latency bound: add consumers.
    ScaleUp {
        /// The data topic.
        topic: String,
        /// Partition of the lagging stream.
        partition: u32,
        /// The latency estimate, µs.
        estimate_us: u64,
        /// Items sent and not yet consumed, as far as the producer knows.
        lag_items: u64,
    },
}

/// A control event that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("control event: {0}")]
pub struct ControlError(pub String);

impl Control {
    /// As an item for the fabric.
    pub fn to_item(&self) -> Item {
        let mut it = Item {
            payload: Bytes::from(serde_json::to_vec(self).expect("control events serialize")),
            timestamp_us: diaspora_fabric::item::now_us(),
            ..Default::default()
        };
        it.metadata.insert("qos.control".into(), int(1));
        it
    }

    /// Reads a control event from an item; anything else is an error (never a panic).
    pub fn from_item(item: &Item) -> Result<Control, ControlError> {
        if item.payload.len() > CONTROL_BYTES_MAX {
            return Err(ControlError(format!(
                "{} bytes exceeds {CONTROL_BYTES_MAX}",
                item.payload.len()
            )));
        }
        let c: Control =
            serde_json::from_slice(&item.payload).map_err(|e| ControlError(e.to_string()))?;
        match &c {
            Control::Replay { from, to, .. } | Control::Unavailable { from, to, .. }
                if from > to =>
            {
                Err(ControlError(format!("range {from}..={to} is empty")))
            }
            Control::Progress { rate_hz, .. } if !rate_hz.is_finite() => {
                Err(ControlError("rate is not finite".into()))
            }
            _ => Ok(c),
        }
    }
}

// The metadata builders and readers the stream uses, from the fabric's one
// set (re-exported: `control::int`, `control::get_u64`, … stay valid).
pub use diaspora_fabric::item::meta::{boolean, get_bool, get_str, get_u64, int, string};

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_every_kind() {
        for c in [
            Control::Progress {
                consumer: "a".into(),
                partition: 1,
                next_seq: 5,
                latency_us: 10,
                rate_hz: 2.5,
            },
            Control::Replay {
                consumer: "a".into(),
                partition: 0,
                from: 1,
                to: 9,
            },
            Control::Unavailable {
                partition: 0,
                from: 1,
                to: 1,
            },
            Control::ScaleUp {
                topic: "t".into(),
                partition: 0,
                estimate_us: 1,
                lag_items: 2,
            },
        ] {
            assert_eq!(Control::from_item(&c.to_item()).unwrap(), c);
        }
    }

    #[test]
    fn bad_events_are_errors() {
        let item = |s: &str| Item {
            payload: Bytes::from(s.to_string()),
            ..Default::default()
        };
        for (text, want) in [
            ("{}", "kind"),
            (
                r#"{"kind":"replay","consumer":"a","partition":0,"from":5,"to":1}"#,
                "empty",
            ),
            (r#"{"kind":"launch"}"#, "launch"),
            ("\u{0}", "expected"),
        ] {
            let e = Control::from_item(&item(text)).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let it = Item { payload: Bytes::from(data), ..Default::default() };
            let _ = Control::from_item(&it);
        }

        #[test]
        fn metadata_readers_take_any_value(i in any::<i64>(), s in ".*", b in any::<bool>()) {
            let mut it = Item::default();
            it.metadata.insert(SEQ.into(), int(i));
            it.metadata.insert(CODEC.into(), string(&s));
            it.metadata.insert(REPLAY.into(), boolean(b));
            prop_assert_eq!(get_u64(&it, SEQ), (i >= 0).then_some(i as u64));
            prop_assert_eq!(get_str(&it, CODEC), Some(s.as_str()));
            prop_assert_eq!(get_bool(&it, REPLAY), b);
            prop_assert_eq!(get_u64(&it, CODEC), None);
        }
    }
}
