//! Twin metrics: what each emulated link carried, sampled at a fixed
//! interval, as `diaspora-telemetry` metric events (the same events every
//! other diaspora process publishes on its metrics topic).
//!
//! Per link (label `link`):
//!
//! | name | unit | meaning |
//! |---|---|---|
//! | `link.utilisation` | 1 | bits delivered in the interval over the link's capacity then (what an interface counter of a shared WAN link shows; 1 = saturated; none while the link is dark) |
//! | `link.delivered_mbit` | Mbit/s | bits delivered in the interval, per second |
//! | `link.capacity_mbit` | Mbit/s | the link's scheduled capacity (ground truth, not a predictor input) |
//! | `link.held_bytes` | By | bytes in the link (queued or propagating) at the sample |
//! | `link.dropped_packets` | {packet} | packets dropped so far (all reasons) |
//!
//! And `twin.elapsed_s`: seconds since the run started.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub use diaspora_telemetry::{MetricEvent as Event, MetricSample as Sample};
use tokio::time::Instant;

use crate::Relay;

/// Samples the relays every `interval`.
pub struct LinkSampler {
    source: String,
    interval: Duration,
    t0: Instant,
    next: Instant,
    last: HashMap<String, (Instant, u64)>,
    capacity_bps: HashMap<String, Option<u64>>,
}

impl LinkSampler {
    /// A sampler for a run that started at `t0`.
    pub fn new(scenario: &str, interval: Duration, t0: Instant) -> Self {
        LinkSampler {
            source: format!("twin:{scenario}"),
            interval: interval.max(Duration::from_millis(10)),
            t0,
            next: t0,
            last: HashMap::new(),
            capacity_bps: HashMap::new(),
        }
    }

    /// The link's capacity changed (None: unlimited).
    pub fn set_capacity(&mut self, link: &str, bps: Option<u64>) {
        self.capacity_bps.insert(link.to_string(), bps);
    }

    /// When the next sample is due.
    pub fn next_due(&self) -> Instant {
        self.next
    }

    /// Samples now if due; returns the event.
    pub fn poll(&mut self, relays: &HashMap<String, Relay>) -> Option<Event> {
        let now = Instant::now();
        if now < self.next {
            return None;
        }
        // Keep the grid: the next sample is one interval after this one's slot.
        while self.next <= now {
            self.next += self.interval;
        }
        let mut names: Vec<&String> = relays.keys().collect();
        names.sort();
        let mut samples = vec![Sample {
            name: "twin.elapsed_s".into(),
            value: (now - self.t0).as_secs_f64(),
            unit: "s".into(),
            labels: BTreeMap::new(),
        }];
        for name in names {
            let st = relays[name].stats();
            let bytes = st.up.forwarded.bytes;
            let (t_prev, b_prev) = self
                .last
                .insert(name.clone(), (now, bytes))
                .unwrap_or((self.t0, 0));
            let dt = (now - t_prev).as_secs_f64().max(1e-6);
            let bps = bytes.saturating_sub(b_prev) as f64 * 8.0 / dt;
            let cap = self.capacity_bps.get(name.as_str()).copied().flatten();
            let labels: BTreeMap<String, String> =
                [("link".to_string(), name.clone())].into_iter().collect();
            let mut push = |n: &str, value: f64, unit: &str| {
                samples.push(Sample {
                    name: n.into(),
                    value,
                    unit: unit.into(),
                    labels: labels.clone(),
                })
            };
            if let Some(c) = cap {
                // A dark link (capacity 0, an outage) has no utilisation:
                // the series has a gap there, not an infinity.
                if c > 0 {
                    push("link.utilisation", bps / c as f64, "1");
                }
                push("link.capacity_mbit", c as f64 / 1e6, "Mbit/s");
            }
            push("link.delivered_mbit", bps / 1e6, "Mbit/s");
            push("link.held_bytes", st.up.held.bytes as f64, "By");
            push(
                "link.dropped_packets",
                st.up.dropped_total().packets as f64,
                "{packet}",
            );
        }
        let t_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        Some(Event {
            source: self.source.clone(),
            t_us,
            interval_ms: self.interval.as_millis() as u64,
            samples,
        })
    }
}
