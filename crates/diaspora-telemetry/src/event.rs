//! The metric model and its codec: what one snapshot of a process's metrics
//! looks like on the fabric.
//!
//! An event is JSON (self-describing, easy to read with `diaspora consume`,
//! cheap enough at one event per second per process):
//!
//! ```json
//! {"source":"edge-1","t_us":1700000000000000,"interval_ms":1000,
//!  "samples":[{"name":"node.items_appended","value":42.0,"unit":"{item}",
//!              "labels":{"node":"n1"}}]}
//! ```
//!
//! `unit` and `labels` are left out when empty. Unknown fields are ignored,
//! so later versions may add fields.
//!
//! Decoding puts a limit on everything (see the `*_MAX` constants) and
//! refuses non-finite values; an encoder that breaks a limit is caught by
//! [`validate_event`], and [`split_event`] cuts a large snapshot into events
//! that each fit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TelemetryError};

/// Largest encoded event, bytes.
pub const EVENT_BYTES_MAX: usize = 1 << 20;
/// Most samples in one event.
pub const SAMPLES_MAX: usize = 4096;
/// Longest sample name, characters.
pub const NAME_CHARS_MAX: usize = 200;
/// Longest unit, characters (OpenTelemetry's limit for instrument units).
pub const UNIT_CHARS_MAX: usize = 63;
/// Most labels on one sample.
pub const LABELS_MAX: usize = 32;
/// Longest label key, characters.
pub const LABEL_KEY_CHARS_MAX: usize = 100;
/// Longest label value, characters.
pub const LABEL_VALUE_CHARS_MAX: usize = 200;
/// Longest event source, characters.
pub const SOURCE_CHARS_MAX: usize = 200;

/// One value of one series at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    /// Series name, dotted, e.g. `quic.rtt_ms` (see the crate docs' table).
    pub name: String,
    /// The value; always finite.
    pub value: f64,
    /// Unit in UCUM-like notation (`ms`, `By`, `{item}`, `{item}/s`); may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    /// Labels that tell series of the same name apart, e.g. `node`, `link`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One snapshot of a process's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricEvent {
    /// Who measured: a process or site name, stable across restarts.
    pub source: String,
    /// When the snapshot was taken, microseconds since the Unix epoch.
    pub t_us: i64,
    /// The publishing interval, milliseconds (rates are computed over the
    /// time since the previous snapshot, nominally this long).
    pub interval_ms: u64,
    /// The samples, sorted by name then labels.
    pub samples: Vec<MetricSample>,
}

/// Encodes an event as JSON.
///
/// The event is expected to be valid ([`validate_event`]): a non-finite
/// value would encode as `null` and the event would not decode.
///
/// ```
/// use diaspora_telemetry::{decode_event, encode_event, MetricEvent, MetricSample};
/// let event = MetricEvent {
///     source: "edge-1".into(),
///     t_us: 1_700_000_000_000_000,
///     interval_ms: 1000,
///     samples: vec![MetricSample {
///         name: "quic.rtt_ms".into(),
///         value: 12.5,
///         unit: "ms".into(),
///         labels: [("link".to_string(), "edge-hpc".to_string())].into(),
///     }],
/// };
/// assert_eq!(decode_event(&encode_event(&event)).unwrap(), event);
/// ```
pub fn encode_event(event: &MetricEvent) -> Vec<u8> {
    debug_assert!(
        validate_event(event).is_ok(),
        "encoding an invalid event: {:?}",
        validate_event(event)
    );
    serde_json::to_vec(event).expect("a MetricEvent always serialises")
}

/// Decodes and validates an event.
///
/// Refuses (with an error naming the field and the limit) anything over
/// [`EVENT_BYTES_MAX`] bytes, anything that is not an event, and events
/// that break a limit or carry a non-finite value. Never panics.
pub fn decode_event(bytes: &[u8]) -> Result<MetricEvent> {
    if bytes.len() > EVENT_BYTES_MAX {
        return Err(TelemetryError::InvalidEvent(format!(
            "event of {} bytes exceeds EVENT_BYTES_MAX {EVENT_BYTES_MAX}",
            bytes.len()
        )));
    }
    let event: MetricEvent = serde_json::from_slice(bytes).map_err(|e| {
        let kind = if e.is_eof() { "truncated" } else { "invalid" };
        TelemetryError::Malformed(format!("{kind} JSON: {e}"))
    })?;
    validate_event(&event)?;
    Ok(event)
}

fn check_chars(what: &str, s: &str, max: usize) -> Result<()> {
    let n = s.chars().count();
    if n > max {
        return Err(TelemetryError::InvalidEvent(format!(
            "{what} of {n} characters exceeds {max}"
        )));
    }
    Ok(())
}

/// Checks an event against every limit: the source, the sample count, and
/// per sample the name (non-empty), unit, labels and a finite value.
/// Does not check the encoded size (see [`decode_event`], [`split_event`]).
pub fn validate_event(event: &MetricEvent) -> Result<()> {
    check_chars("source", &event.source, SOURCE_CHARS_MAX)?;
    if event.samples.len() > SAMPLES_MAX {
        return Err(TelemetryError::InvalidEvent(format!(
            "{} samples exceed SAMPLES_MAX {SAMPLES_MAX}",
            event.samples.len()
        )));
    }
    for (i, s) in event.samples.iter().enumerate() {
        validate_sample(s).map_err(|e| match e {
            TelemetryError::InvalidEvent(m) => {
                TelemetryError::InvalidEvent(format!("sample {i}: {m}"))
            }
            e => e,
        })?;
    }
    Ok(())
}

/// Checks one sample: name non-empty and at most [`NAME_CHARS_MAX`], unit,
/// at most [`LABELS_MAX`] labels of bounded length, a finite value.
pub fn validate_sample(s: &MetricSample) -> Result<()> {
    if s.name.is_empty() {
        return Err(TelemetryError::InvalidEvent("empty sample name".into()));
    }
    check_chars("name", &s.name, NAME_CHARS_MAX)?;
    if !s.value.is_finite() {
        return Err(TelemetryError::InvalidEvent(format!(
            "'{}' has the non-finite value {}",
            s.name, s.value
        )));
    }
    check_chars("unit", &s.unit, UNIT_CHARS_MAX)?;
    if s.labels.len() > LABELS_MAX {
        return Err(TelemetryError::InvalidEvent(format!(
            "'{}' has {} labels; LABELS_MAX is {LABELS_MAX}",
            s.name,
            s.labels.len()
        )));
    }
    for (k, v) in &s.labels {
        check_chars("label key", k, LABEL_KEY_CHARS_MAX)?;
        check_chars("label value", v, LABEL_VALUE_CHARS_MAX)?;
    }
    Ok(())
}

/// Cuts an event into events that each hold at most [`SAMPLES_MAX`] samples
/// and encode within [`EVENT_BYTES_MAX`] bytes, in sample order, each with
/// the same source, time and interval. A consumer that needs the whole
/// snapshot merges events with equal `(source, t_us)`.
///
/// Always returns at least one event (an empty snapshot is one empty
/// event). Every valid sample fits an event on its own: its size is bounded
/// by the limits on name, unit and labels (about 10 KiB).
///
/// ```
/// use diaspora_telemetry::event::{split_event, SAMPLES_MAX};
/// use diaspora_telemetry::{MetricEvent, MetricSample};
/// let sample = MetricSample { name: "x".into(), value: 1.0, unit: String::new(), labels: Default::default() };
/// let big = MetricEvent { source: "s".into(), t_us: 1, interval_ms: 1000, samples: vec![sample; SAMPLES_MAX + 1] };
/// let parts = split_event(big);
/// assert_eq!(parts.len(), 2);
/// assert_eq!(parts[0].samples.len() + parts[1].samples.len(), SAMPLES_MAX + 1);
/// ```
pub fn split_event(event: MetricEvent) -> Vec<MetricEvent> {
    let MetricEvent {
        source,
        t_us,
        interval_ms,
        samples,
    } = event;
    let empty = |samples| MetricEvent {
        source: source.clone(),
        t_us,
        interval_ms,
        samples,
    };
    // Envelope and per-sample sizes are measured by encoding: exact, and
    // cheap next to the publishing interval.
    let envelope = serde_json::to_vec(&empty(Vec::new()))
        .expect("serialises")
        .len();
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut bytes = envelope;
    for s in samples {
        let n = serde_json::to_vec(&s).expect("serialises").len() + 1; // + separator
        if !current.is_empty() && (current.len() == SAMPLES_MAX || bytes + n > EVENT_BYTES_MAX) {
            parts.push(empty(std::mem::take(&mut current)));
            bytes = envelope;
        }
        bytes += n;
        current.push(s);
    }
    parts.push(empty(current));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(name: &str, value: f64) -> MetricSample {
        MetricSample {
            name: name.into(),
            value,
            unit: String::new(),
            labels: BTreeMap::new(),
        }
    }

    fn event(samples: Vec<MetricSample>) -> MetricEvent {
        MetricEvent {
            source: "test".into(),
            t_us: 1,
            interval_ms: 1000,
            samples,
        }
    }

    #[test]
    fn empty_unit_and_labels_are_left_out_of_the_encoding() {
        let bytes = encode_event(&event(vec![sample("a", 1.5)]));
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"source":"test","t_us":1,"interval_ms":1000,"samples":[{"name":"a","value":1.5}]}"#
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let e =
            decode_event(br#"{"source":"s","t_us":5,"interval_ms":1,"samples":[],"version":2}"#)
                .unwrap();
        assert_eq!(e.t_us, 5);
    }

    #[test]
    fn limits_are_enforced_with_errors_that_name_them() {
        let err = |e: MetricEvent| {
            decode_event(&serde_json::to_vec(&e).unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(err(event(vec![sample("", 1.0)])).contains("empty sample name"));
        assert!(
            err(event(vec![sample(&"n".repeat(NAME_CHARS_MAX + 1), 1.0)]))
                .contains("name of 201 characters exceeds 200")
        );
        let mut s = sample("a", 1.0);
        s.labels = (0..=LABELS_MAX)
            .map(|i| (i.to_string(), String::new()))
            .collect();
        assert!(err(event(vec![s])).contains("33 labels; LABELS_MAX is 32"));
        assert!(err(event(vec![sample("a", 0.0); SAMPLES_MAX + 1])).contains("4097 samples"));
        let mut s = sample("a", 1.0);
        s.unit = "u".repeat(UNIT_CHARS_MAX + 1);
        assert!(err(event(vec![s])).contains("unit of 64"));
        let mut e = event(vec![]);
        e.source = "s".repeat(SOURCE_CHARS_MAX + 1);
        assert!(err(e).contains("source of 201"));
        // Non-finite values encode as null: refused as a type error.
        let nan = serde_json::to_vec(&event(vec![sample("a", f64::NAN)])).unwrap();
        assert!(decode_event(&nan).is_err());
        // A value too large for f64 in the text is refused by the parser.
        assert!(decode_event(
            br#"{"source":"s","t_us":1,"interval_ms":1,"samples":[{"name":"a","value":1e999}]}"#
        )
        .is_err());
        let huge = vec![b' '; EVENT_BYTES_MAX + 1];
        assert!(decode_event(&huge)
            .unwrap_err()
            .to_string()
            .contains("exceeds EVENT_BYTES_MAX 1048576"));
    }

    #[test]
    fn a_truncated_event_is_reported_as_truncated() {
        let bytes = encode_event(&event(vec![sample("a", 1.0)]));
        let e = decode_event(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn split_respects_the_byte_limit() {
        let mut s = sample(&"n".repeat(NAME_CHARS_MAX), 1.0);
        s.labels = (0..LABELS_MAX)
            .map(|i| (format!("{i:0>100}"), "v".repeat(LABEL_VALUE_CHARS_MAX)))
            .collect();
        let one = serde_json::to_vec(&s).unwrap().len();
        let n = SAMPLES_MAX;
        assert!(
            one * n > EVENT_BYTES_MAX,
            "the test must need several parts"
        );
        let parts = split_event(event(vec![s; n]));
        assert!(parts.len() > 1);
        let mut total = 0;
        for p in &parts {
            let bytes = encode_event(p);
            assert!(bytes.len() <= EVENT_BYTES_MAX, "{}", bytes.len());
            assert_eq!(decode_event(&bytes).unwrap(), *p);
            total += p.samples.len();
        }
        assert_eq!(total, n);
        assert_eq!(split_event(event(vec![])).len(), 1);
    }

    fn arb_text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..=max.min(24))
            .prop_map(|c| c.into_iter().collect())
    }

    fn arb_sample() -> impl Strategy<Value = MetricSample> {
        (
            arb_text(NAME_CHARS_MAX).prop_filter("non-empty", |s| !s.is_empty()),
            prop_oneof![
                any::<f64>().prop_filter("finite", |v| v.is_finite()),
                Just(0.0),
                Just(-0.0),
                Just(f64::MAX),
                Just(f64::MIN_POSITIVE),
            ],
            arb_text(UNIT_CHARS_MAX),
            proptest::collection::btree_map(arb_text(20), arb_text(20), 0..5),
        )
            .prop_map(|(name, value, unit, labels)| MetricSample {
                name,
                value,
                unit,
                labels,
            })
    }

    fn arb_event() -> impl Strategy<Value = MetricEvent> {
        (
            arb_text(SOURCE_CHARS_MAX),
            any::<i64>(),
            any::<u64>(),
            proptest::collection::vec(arb_sample(), 0..20),
        )
            .prop_map(|(source, t_us, interval_ms, samples)| MetricEvent {
                source,
                t_us,
                interval_ms,
                samples,
            })
    }

    proptest! {
        #[test]
        fn round_trip(e in arb_event()) {
            let bytes = encode_event(&e);
            let back = decode_event(&bytes).unwrap();
            // Bit-exact values (PartialEq would equate 0.0 and -0.0).
            for (a, b) in e.samples.iter().zip(&back.samples) {
                prop_assert_eq!(a.value.to_bits(), b.value.to_bits());
            }
            prop_assert_eq!(back, e);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_event(&bytes);
        }

        #[test]
        fn every_strict_prefix_is_refused(e in arb_event(), cut in any::<prop::sample::Index>()) {
            let bytes = encode_event(&e);
            let n = cut.index(bytes.len());
            prop_assert!(decode_event(&bytes[..n]).is_err());
        }

        #[test]
        fn split_keeps_every_sample_in_order(samples in proptest::collection::vec(arb_sample(), 0..50)) {
            let e = event(samples.clone());
            let parts = split_event(e);
            let joined: Vec<_> = parts.into_iter().flat_map(|p| p.samples).collect();
            prop_assert_eq!(joined, samples);
        }
    }
}
