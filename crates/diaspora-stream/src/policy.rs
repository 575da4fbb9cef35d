//! The declarative QoS policy (serde; TOML in files).
//!
//! ```
//! let p = diaspora_stream::policy::Policy::from_toml(r#"
//!     latency_bound_ms = 500
//!     [buffer]
//!     memory_bytes_max = 67108864
//!     [flow]
//!     mode = "reduce"
//!     [[reduce]]
//!     method = "zstd"
//!     [[reduce]]
//!     method = "decimate"
//!     every = 2
//!     [reconstruct]
//!     method = "linear"
//! "#).unwrap();
//! assert_eq!(p.reduce.len(), 2);
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A policy that does not make sense, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("QoS policy: {0}")]
pub struct PolicyError(pub String);

/// What to do when the consumer lags past the latency bound, or a buffer cap is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FlowMode {
    /// Slow the producer: `send` waits. Nothing is dropped.
    #[default]
    Backpressure,
    /// Apply the reduction chain, stage by stage; when buffers are full anyway, wait.
    Reduce,
    /// Drop new items (counted and reported) while congested or full.
    Shed,
}

/// One stage of the reduction chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Reduction {
    /// zstd-compress the payload (`qos.codec = "zstd"`); the consumer restores it.
    Zstd {
        /// zstd level (1 is fast).
        #[serde(default = "one_i32")]
        level: i32,
    },
    /// Send every k-th item only; the others are accounted as reduced away.
    Decimate {
        /// Keep one item of every `every`.
        every: u32,
    },
    /// Combine `n` items into one with an aggregation function.
    Aggregate {
        /// Items per aggregate.
        n: u32,
        /// `"mean"` (ndarray payloads, element-wise), `"last"`, or `"user"`
        /// (the function given to the producer).
        #[serde(default = "mean")]
        function: String,
    },
}

impl Reduction {
    /// The method string set in the item's quality, e.g. `"decimate:4"`.
    pub fn method(&self) -> String {
        match self {
            Reduction::Zstd { .. } => "zstd".into(),
            Reduction::Decimate { every } => format!("decimate:{every}"),
            Reduction::Aggregate { n, function } => format!("aggregate:{n}:{function}"),
        }
    }
}

fn one_i32() -> i32 {
    1
}
fn mean() -> String {
    "mean".into()
}

/// How a consumer fills a missing or late item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReconstructMethod {
    /// No substitutes: a missing item is reported as lost.
    #[default]
    None,
    /// Repeat the last delivered item.
    HoldLast,
    /// Linear interpolation between the neighbours (ndarray payloads;
    /// other payloads fall back to hold-last).
    Linear,
    /// The reconstructor given to the consumer.
    User,
}

impl ReconstructMethod {
    /// The method string set in the item's quality.
    pub fn name(&self) -> &'static str {
        match self {
            ReconstructMethod::None => "none",
            ReconstructMethod::HoldLast => "hold-last",
            ReconstructMethod::Linear => "linear",
            ReconstructMethod::User => "user",
        }
    }
}

/// Buffer tiers of the producer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BufferPolicy {
    /// Memory tier cap, bytes: queued, in flight and retained history together.
    pub memory_bytes_max: u64,
    /// Local-disk spill directory; none means no disk tier.
    pub spill_dir: Option<PathBuf>,
    /// Disk tier cap, bytes.
    pub spill_bytes_max: u64,
    /// Spill file size, bytes.
    pub spill_segment_bytes: u64,
    /// Bytes sent to the fabric and not yet acknowledged.
    pub in_flight_bytes_max: u64,
}

impl Default for BufferPolicy {
    fn default() -> Self {
        BufferPolicy {
            memory_bytes_max: 256 << 20,
            spill_dir: None,
            spill_bytes_max: 4 << 30,
            spill_segment_bytes: 64 << 20,
            in_flight_bytes_max: 32 << 20,
        }
    }
}

/// What the producer keeps after acknowledgement, for consumers that must replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayPolicy {
    /// Acknowledged items retained (newest), at most.
    pub window_items: u64,
    /// Acknowledged bytes retained (newest), at most.
    pub window_bytes: u64,
    /// A consumer waits this long for a requested replay before it gives the gap up.
    pub request_timeout_ms: u64,
}

impl Default for ReplayPolicy {
    fn default() -> Self {
        ReplayPolicy {
            window_items: 100_000,
            window_bytes: 64 << 20,
            request_timeout_ms: 5_000,
        }
    }
}

/// Flow control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowPolicy {
    /// What to do under congestion.
    pub mode: FlowMode,
    /// How often the controller decides, ms.
    pub check_interval_ms: u64,
    /// Publish a scale-up request on this topic while the consumer lags
    /// (compute pools act on it).
    pub scale_up_topic: Option<String>,
    /// With items in flight and no acknowledgement for this long, the path
    /// is down (an outage, not congestion): the producer keeps accepting up
    /// to its caps and the flow policy waits for the path to return, ms.
    pub outage_after_ms: u64,
}

impl Default for FlowPolicy {
    fn default() -> Self {
        FlowPolicy {
            mode: FlowMode::Backpressure,
            check_interval_ms: 100,
            scale_up_topic: None,
            outage_after_ms: 2_000,
        }
    }
}

/// Reconstruction on the consumer side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconstructPolicy {
    /// Method.
    pub method: ReconstructMethod,
    /// How long a gap may stay open (replay requested, nothing came) before
    /// substitutes are made, ms. 0 means the latency bound.
    pub deadline_ms: u64,
    /// Also fill items the producer reduced away (decimation, aggregation).
    pub fill_reduced: bool,
    /// When an original arrives after its substitute, deliver it too
    /// (marked `qos.supersedes`); otherwise drop it (counted).
    pub supersede: bool,
}

impl Default for ReconstructPolicy {
    fn default() -> Self {
        ReconstructPolicy {
            method: ReconstructMethod::None,
            deadline_ms: 0,
            fill_reduced: false,
            supersede: true,
        }
    }
}

/// A QoS stream's policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Expected production rate, items/s (0: unknown). Reported beside the measured rate.
    pub target_rate_hz: f64,
    /// End-to-end latency the stream should keep, ms.
    pub latency_bound_ms: u64,
    /// Buffer tiers.
    pub buffer: BufferPolicy,
    /// Replay window.
    pub replay: ReplayPolicy,
    /// Flow control.
    pub flow: FlowPolicy,
    /// Reduction chain, engaged stage by stage under congestion (mode `reduce`).
    pub reduce: Vec<Reduction>,
    /// Reconstruction.
    pub reconstruct: ReconstructPolicy,
    /// Consumer reorder buffer: items held behind a gap, at most.
    pub reorder_items_max: usize,
    /// How often a consumer reports progress and checkpoints, ms.
    pub progress_interval_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            target_rate_hz: 0.0,
            latency_bound_ms: 1_000,
            buffer: BufferPolicy::default(),
            replay: ReplayPolicy::default(),
            flow: FlowPolicy::default(),
            reduce: Vec::new(),
            reconstruct: ReconstructPolicy::default(),
            reorder_items_max: 10_000,
            progress_interval_ms: 100,
        }
    }
}

impl Policy {
    /// Parses and validates a TOML policy.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let p: Policy = toml::from_str(text).map_err(|e| PolicyError(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Reads a TOML policy file.
    pub fn from_file(path: &std::path::Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError(format!("{}: {e}", path.display())))?;
        Policy::from_toml(&text).map_err(|e| PolicyError(format!("{}: {}", path.display(), e.0)))
    }

    /// Checks that the numbers make sense together.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let e = |s: String| Err(PolicyError(s));
        let b = &self.buffer;
        if self.latency_bound_ms == 0 {
            return e("latency_bound_ms must be > 0".into());
        }
        if !(self.target_rate_hz.is_finite() && self.target_rate_hz >= 0.0) {
            return e(format!(
                "target_rate_hz {} must be ≥ 0",
                self.target_rate_hz
            ));
        }
        if b.memory_bytes_max < 1 << 20 {
            return e(format!(
                "buffer.memory_bytes_max {} must be at least 1 MiB",
                b.memory_bytes_max
            ));
        }
        if b.in_flight_bytes_max == 0 || b.in_flight_bytes_max > b.memory_bytes_max / 2 {
            return e(format!(
                "buffer.in_flight_bytes_max {} must be in 1..={} (half the memory tier)",
                b.in_flight_bytes_max,
                b.memory_bytes_max / 2
            ));
        }
        if b.spill_dir.is_some() && (b.spill_bytes_max == 0 || b.spill_segment_bytes < 1 << 16) {
            return e("buffer.spill_bytes_max must be > 0 and spill_segment_bytes ≥ 64 KiB".into());
        }
        if self.flow.check_interval_ms == 0 || self.progress_interval_ms == 0 {
            return e("flow.check_interval_ms and progress_interval_ms must be > 0".into());
        }
        if self.reorder_items_max == 0 {
            return e("reorder_items_max must be > 0".into());
        }
        for r in &self.reduce {
            match r {
                Reduction::Zstd { level } if !(1..=19).contains(level) => {
                    return e(format!("reduce zstd level {level} must be in 1..=19"))
                }
                Reduction::Decimate { every } if *every < 2 => {
                    return e(format!("reduce decimate every {every} must be ≥ 2"))
                }
                Reduction::Aggregate { n, function } => {
                    if *n < 2 {
                        return e(format!("reduce aggregate n {n} must be ≥ 2"));
                    }
                    if !["mean", "last", "user"].contains(&function.as_str()) {
                        return e(format!(
                            "reduce aggregate function '{function}' is not one of mean, last, user"
                        ));
                    }
                }
                _ => {}
            }
        }
        if self.flow.mode == FlowMode::Reduce && self.reduce.is_empty() {
            return e("flow.mode = \"reduce\" needs at least one [[reduce]] stage".into());
        }
        Ok(())
    }

    /// The latency bound.
    pub fn latency_bound(&self) -> Duration {
        Duration::from_millis(self.latency_bound_ms)
    }

    /// How long a consumer waits on a gap before substitutes or loss.
    pub fn gap_deadline(&self) -> Duration {
        Duration::from_millis(if self.reconstruct.deadline_ms == 0 {
            self.latency_bound_ms
        } else {
            self.reconstruct.deadline_ms
        })
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let p = Policy::default();
        p.validate().unwrap();
        let text = toml::to_string(&p).unwrap();
        assert_eq!(Policy::from_toml(&text).unwrap(), p);
    }

    #[test]
    fn bad_policies_are_refused_with_the_reason() {
        for (text, want) in [
            ("latency_bound_ms = 0", "latency_bound_ms"),
            ("[flow]\nmode = \"reduce\"", "at least one [[reduce]]"),
            ("[[reduce]]\nmethod = \"decimate\"\nevery = 1", "every 1"),
            ("[[reduce]]\nmethod = \"teleport\"", "teleport"),
            ("[buffer]\nmemory_bytes_max = 10", "at least 1 MiB"),
            (
                "[buffer]\nin_flight_bytes_max = 300000000",
                "half the memory",
            ),
            ("bogus = 1", "bogus"),
            (
                "[[reduce]]\nmethod = \"aggregate\"\nn = 4\nfunction = \"median\"",
                "median",
            ),
        ] {
            let err = Policy::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn methods_are_named() {
        assert_eq!(Reduction::Decimate { every: 4 }.method(), "decimate:4");
        assert_eq!(ReconstructMethod::HoldLast.name(), "hold-last");
    }
}
