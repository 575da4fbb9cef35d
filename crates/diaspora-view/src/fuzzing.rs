//! Bodies of the `cargo fuzz` targets in `fuzz/`, kept in the library so
//! ordinary tests run them over random inputs too.
//!
//! Each function panics only when an invariant of the crate is violated;
//! any input bytes whatsoever must be handled without panicking.

use crate::engine::{JoinEngine, Snapshot};
use crate::snapshot::{self, SnapshotHeader};
use crate::spec::ViewSpec;

/// `view_snapshot`: a snapshot file as read from disk. [`snapshot::decode`]
/// returns a header and state or an error, never panics; whatever decodes
/// must encode and decode again to the same header fields and state. A
/// state that parses as an engine [`Snapshot`] is restored into a fixed
/// two-source view (`fuzz`: `a` twice and `b` once per key), which may
/// refuse it but must not panic.
///
/// ```
/// diaspora_view::fuzzing::snapshot_file(b"");
/// diaspora_view::fuzzing::snapshot_file(b"{\"format\":1}\n");
/// let state = br#"{"view":"fuzz","pending":[],"used":[],"stats":{}}"#;
/// let header = diaspora_view::snapshot::SnapshotHeader::for_state("fuzz", 1, 0, state, serde_json::Value::Null);
/// diaspora_view::fuzzing::snapshot_file(&diaspora_view::snapshot::encode(&header, state));
/// ```
pub fn snapshot_file(data: &[u8]) {
    let (header, state) = match snapshot::decode(data) {
        Ok(decoded) => decoded,
        Err(crate::ViewError::Snapshot(msg)) => {
            assert!(!msg.is_empty(), "an empty error message");
            return;
        }
        Err(e) => panic!("decode failed with a non-snapshot error: {e}"),
    };
    // The summary is left out: serde_json may read a float back one ulp off.
    let again = snapshot::encode(&header, state);
    let (header2, state2) = snapshot::decode(&again).expect("a decoded snapshot re-encodes");
    assert_eq!(state2, state, "state round trip");
    assert_eq!(
        key_fields(&header2),
        key_fields(&header),
        "header round trip"
    );

    let Ok(snap) = serde_json::from_slice::<Snapshot>(state) else {
        return;
    };
    let spec = ViewSpec::new("fuzz")
        .source("a", "a", "k", 2)
        .source("b", "b", "k", 1);
    let _ = JoinEngine::restore(spec, snap);
}

fn key_fields(h: &SnapshotHeader) -> (u32, &str, u64, i64, u64, u32) {
    (
        h.format,
        &h.view,
        h.version,
        h.taken_us,
        h.state_bytes,
        h.state_crc32c,
    )
}

/// `view_ref`: a message read from a view's output topic.
/// [`crate::wire::decode`] accepts it or returns an error, never panics;
/// whatever it accepts encodes and decodes again to the same message.
///
/// ```
/// diaspora_view::fuzzing::view_message(b"{\"type\":\"retract\",\"view\":\"v\",\"id\":3,\"cause\":\"x\"}");
/// diaspora_view::fuzzing::view_message(b"\xff");
/// ```
pub fn view_message(data: &[u8]) {
    if let Ok(m) = crate::wire::decode(data) {
        let again =
            crate::wire::decode(&crate::wire::encode(&m)).expect("re-encoded message decodes");
        assert_eq!(again, m, "message round trip");
    }
}

#[cfg(test)]
mod tests {
    use super::{snapshot_file, view_message};
    use crate::snapshot::{encode, SnapshotHeader};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// `bytes` as the state of a well-formed snapshot file, so the fuzz
    /// body reaches the engine's JSON and restore.
    fn framed(state: &[u8]) -> Vec<u8> {
        let h = SnapshotHeader::for_state("fuzz", 1, 0, state, serde_json::Value::Null);
        encode(&h, state)
    }

    /// Unsigned JSON numbers below `max`, often small, sometimes at the edge.
    fn unsigned(max: u64) -> impl Strategy<Value = Value> {
        prop_oneof![
            8 => (0u64..4).prop_map(Value::from),
            1 => Just(Value::from(max)),
            1 => (0..=max).prop_map(Value::from),
        ]
    }

    /// A source index: mostly one of the fixed spec's two, sometimes not.
    fn source() -> impl Strategy<Value = Value> {
        prop_oneof![
            40 => (0u32..2).prop_map(Value::from),
            1 => (2u32..4).prop_map(Value::from),
            1 => Just(Value::from(u32::MAX)),
        ]
    }

    /// Signed JSON numbers, often small, sometimes at the edges.
    fn signed() -> impl Strategy<Value = Value> {
        prop_oneof![
            8 => (-2i64..100).prop_map(Value::from),
            1 => Just(Value::from(i64::MIN)),
            1 => Just(Value::from(i64::MAX)),
        ]
    }

    /// JSON in the shape of an engine snapshot (as of this writing), with
    /// numbers at the edges of their types, so `restore` sees states it must refuse or
    /// absorb: sources out of range, repeated members, huge offsets. If the
    /// shape changes these only exercise the JSON errors; the fuzzer's
    /// corpus covers the rest.
    fn engine_state() -> impl Strategy<Value = Value> {
        let member = (
            source(),
            unsigned(u64::from(u32::MAX)),
            unsigned(u64::MAX),
            proptest::option::of(unsigned(u64::MAX)),
            signed(),
        )
            .prop_map(|(source, partition, offset, ident, time_us)| {
                let mut m = json!({
                    "source": source, "partition": partition, "offset": offset, "time_us": time_us,
                });
                if let Some(ident) = ident {
                    m["ident"] = ident;
                }
                m
            });
        let pending = proptest::collection::vec(
            ("[a-c]{0,2}", member).prop_map(|(key, member)| json!({"key": key, "member": member})),
            0..12,
        );
        let used = proptest::collection::vec(
            (
                source(),
                unsigned(u64::from(u32::MAX)),
                unsigned(u64::MAX),
                unsigned(u64::MAX),
            )
                .prop_map(|(s, l, q, v)| json!([s, l, q, v])),
            0..12,
        );
        let stats = proptest::collection::vec(unsigned(u64::MAX), 6).prop_map(|n| {
            json!({
                "accepted": n[0], "duplicates": n[1], "emitted": n[2],
                "expired": n[3], "invalidated_pending": n[4], "forgotten": n[5],
            })
        });
        (prop_oneof![8 => Just("fuzz"), 1 => Just("other")], pending, used, stats).prop_map(
            |(view, pending, used, stats)| {
                json!({"view": view, "pending": pending, "used": used, "stats": stats})
            },
        )
    }

    proptest! {
        #[test]
        fn snapshot_file_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            snapshot_file(&data);
            snapshot_file(&framed(&data));
        }

        #[test]
        fn view_messages_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), view in "[a-z]{0,4}", id in any::<u64>()) {
            view_message(&data);
            view_message(format!(r#"{{"type":"retract","view":"{view}","id":{id},"cause":""}}"#).as_bytes());
        }

        #[test]
        fn snapshot_file_engine_states_never_panic(state in engine_state()) {
            snapshot_file(&framed(&serde_json::to_vec(&state).unwrap()));
        }
    }
}
