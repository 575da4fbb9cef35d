//! The flow controller: from a latency estimate (the producer's own queue
//! plus acknowledgement latency, and what the consumer reports) to a
//! decision — congested or not, how many reduction stages are engaged, and
//! whether to ask for more consumers. Hysteresis: congestion engages above
//! half the latency bound and releases after `CALM_CHECKS` checks below a
//! quarter of it, one stage at a time.
//!
//! An **advice** ([`FlowController::advise`]) engages stages ahead of the
//! latency: a predictor that sees the link saturating soon asks for a floor
//! of `level` stages until a deadline. The controller's own decisions go on
//! underneath; the level in force is the larger of the two, so an advice
//! never releases a stage the latency needs, and expires by itself.

use serde::Serialize;

use crate::policy::{FlowMode, Policy};

/// Checks below the release threshold before one stage is released.
pub const CALM_CHECKS: u32 = 10;
/// Checks between two escalations.
pub const ESCALATE_CHECKS: u32 = 3;

/// What a consumer reported (its progress event).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Signals {
    /// Latency of the items it is receiving now, µs.
    pub latency_us: u64,
    /// The next sequence number it expects.
    pub next_seq: u64,
    /// Items per second it delivered recently.
    pub rate_hz: f64,
}

/// The controller's decision at a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FlowDecision {
    /// Congested now.
    pub congested: bool,
    /// Reduction stages engaged.
    pub level: usize,
    /// Ask for more consumers (publish a scale-up request).
    pub scale_up: bool,
    /// The latency estimate that led here, µs.
    pub estimate_us: u64,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct FlowController {
    bound_us: u64,
    mode: FlowMode,
    stages: usize,
    level: usize,
    congested: bool,
    calm: u32,
    since_change: u32,
    estimate_at_change: u64,
    consumer: Option<(Signals, u64)>,
    congested_since: Option<u64>,
    last_scale_up: Option<u64>,
    scale_up_enabled: bool,
    acked_in_window: u64,
    window_start: u64,
    ack_rate: f64,
    /// An advised floor: (stages, until µs).
    advice: Option<(usize, u64)>,
}

impl FlowController {
    /// A controller for `policy`.
    pub fn new(policy: &Policy) -> FlowController {
        FlowController {
            bound_us: policy.latency_bound_ms * 1000,
            mode: policy.flow.mode,
            stages: policy.reduce.len(),
            level: 0,
            congested: false,
            calm: 0,
            since_change: u32::MAX,
            estimate_at_change: 0,
            consumer: None,
            congested_since: None,
            last_scale_up: None,
            scale_up_enabled: policy.flow.scale_up_topic.is_some(),
            acked_in_window: 0,
            window_start: 0,
            ack_rate: 0.0,
            advice: None,
        }
    }

    /// Advice from outside (a congestion prediction): keep at least `level`
    /// stages engaged until `until_us` (capped at the chain's length; a later
    /// advice replaces an earlier one). Only a `reduce` stream reduces: under
    /// another flow mode the advice is refused and `false` returned.
    pub fn advise(&mut self, level: usize, until_us: u64) -> bool {
        if self.mode != FlowMode::Reduce || self.stages == 0 {
            return false;
        }
        self.advice = Some((level.min(self.stages), until_us));
        true
    }

    /// The advised floor in force (0 when none).
    pub fn advised(&self) -> usize {
        self.advice.map_or(0, |a| a.0)
    }

    fn expire_advice(&mut self, now_us: u64) {
        if self.advice.is_some_and(|(_, until)| now_us >= until) {
            self.advice = None;
        }
    }

    /// Engage threshold, µs (half the bound).
    pub fn engage_us(&self) -> u64 {
        self.bound_us / 2
    }

    /// Release threshold, µs (a quarter of the bound).
    pub fn release_us(&self) -> u64 {
        self.bound_us / 4
    }

    /// Congested (as of the last check).
    pub fn congested(&self) -> bool {
        self.congested
    }

    /// Reduction stages engaged: the controller's own level, or the advised
    /// floor while an advice is in force.
    pub fn level(&self) -> usize {
        self.level.max(self.advised())
    }

    /// Acknowledged bytes per second, recent (0 until measured).
    pub fn ack_bytes_rate(&self) -> f64 {
        self.ack_rate
    }

    /// The consumer's last report, if fresh (within two bounds, at least 2 s).
    pub fn fresh_consumer(&self, now_us: u64) -> Option<Signals> {
        match self.consumer {
            Some((s, at)) if now_us.saturating_sub(at) <= 2 * self.bound_us.max(1_000_000) => {
                Some(s)
            }
            _ => None,
        }
    }

    /// Records a consumer report.
    pub fn record(&mut self, consumer: Option<Signals>, now_us: u64) {
        if let Some(s) = consumer {
            self.consumer = Some((s, now_us));
        }
    }

    /// The last consumer report.
    pub fn consumer(&self) -> Option<Signals> {
        self.consumer.map(|c| c.0)
    }

    /// Counts an acknowledgement of `bytes` for the rate meter (half-second
    /// windows, smoothed).
    pub fn on_acked(&mut self, now_us: u64, bytes: u64) {
        self.acked_in_window += bytes;
        let dt = now_us.saturating_sub(self.window_start);
        if dt >= 500_000 {
            let r = self.acked_in_window as f64 * 1e6 / dt as f64;
            self.ack_rate = if self.ack_rate == 0.0 {
                r
            } else {
                0.5 * self.ack_rate + 0.5 * r
            };
            self.acked_in_window = 0;
            self.window_start = now_us;
        }
    }

    /// A check during an outage: records the consumer's report, changes nothing.
    pub fn hold(&self) -> FlowDecision {
        FlowDecision {
            congested: self.congested,
            level: self.level(),
            scale_up: false,
            estimate_us: 0,
        }
    }

    /// One check with the stream's latency estimate (the producer's queue
    /// and acknowledgement latency plus the consumer's backlog), µs.
    pub fn observe(&mut self, estimate: u64, now_us: u64) -> FlowDecision {
        self.expire_advice(now_us);
        self.since_change = self.since_change.saturating_add(1);
        if estimate > self.engage_us() {
            self.calm = 0;
            if !self.congested {
                self.congested = true;
                self.congested_since = Some(now_us);
            }
            let growing = self.level == 0 || estimate >= self.estimate_at_change;
            if self.mode == FlowMode::Reduce
                && self.level < self.stages
                && self.since_change >= ESCALATE_CHECKS
                && growing
            {
                self.level += 1;
                self.since_change = 0;
                self.estimate_at_change = estimate;
            }
        } else if estimate < self.release_us() {
            self.calm += 1;
            if self.calm >= CALM_CHECKS {
                self.calm = 0;
                if self.level > 0 {
                    self.level -= 1;
                    self.since_change = 0;
                    self.estimate_at_change = estimate;
                } else {
                    self.congested = false;
                    self.congested_since = None;
                }
            }
        } else {
            self.calm = 0;
        }
        let mut scale_up = false;
        if self.scale_up_enabled {
            if let Some(since) = self.congested_since {
                let long = now_us.saturating_sub(since) >= self.bound_us;
                let quiet = self
                    .last_scale_up
                    .map_or(true, |t| now_us.saturating_sub(t) >= 10 * self.bound_us);
                if long && quiet {
                    scale_up = true;
                    self.last_scale_up = Some(now_us);
                }
            }
        }
        FlowDecision {
            congested: self.congested,
            level: self.level(),
            scale_up,
            estimate_us: estimate,
        }
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::policy::Reduction;

    fn reduce_policy() -> Policy {
        let mut p = Policy::default();
        p.latency_bound_ms = 1000;
        p.flow.mode = FlowMode::Reduce;
        p.flow.scale_up_topic = Some("scale".into());
        p.reduce = vec![
            Reduction::Zstd { level: 1 },
            Reduction::Decimate { every: 2 },
        ];
        p
    }

    #[test]
    fn an_advice_engages_stages_ahead_of_the_latency_and_expires() {
        let mut f = FlowController::new(&reduce_policy());
        assert_eq!(f.observe(10_000, 100_000).level, 0);
        assert!(f.advise(1, 1_000_000));
        assert_eq!(f.level(), 1, "engaged at once, before any check");
        // Calm latency does not release an advised stage.
        for t in 1..9 {
            let d = f.observe(10_000, 100_000 + t * 100_000);
            assert_eq!(d.level, 1);
            assert!(!d.congested, "advised, not congested");
        }
        // The controller may go beyond the advice on its own.
        for t in 0..4 {
            f.observe(900_000, 950_000 + t * 10_000);
        }
        assert_eq!(f.level(), 2);
        // Expired, and calm: back to nothing, one stage at a time.
        for t in 0..(2 * CALM_CHECKS as u64) {
            f.observe(10_000, 2_000_000 + t * 100_000);
        }
        assert_eq!(f.level(), 0);
        assert_eq!(f.advised(), 0);
        // More than the chain is capped; another mode refuses.
        assert!(f.advise(9, 9_000_000));
        assert_eq!(f.level(), 2);
        let mut p = reduce_policy();
        p.flow.mode = FlowMode::Backpressure;
        assert!(!FlowController::new(&p).advise(1, 1_000_000));
    }

    #[test]
    fn escalates_stage_by_stage_and_releases_with_hysteresis() {
        let mut f = FlowController::new(&reduce_policy());
        let mut t = 0;
        let mut step = |f: &mut FlowController, est: u64| {
            t += 100_000;
            f.observe(est, t)
        };
        assert!(!step(&mut f, 100_000).congested);
        let d = step(&mut f, 600_000);
        assert!(d.congested);
        assert_eq!(d.level, 1, "first stage at once");
        assert_eq!(step(&mut f, 700_000).level, 1, "waits ESCALATE_CHECKS");
        assert_eq!(step(&mut f, 800_000).level, 1);
        assert_eq!(step(&mut f, 900_000).level, 2);
        assert_eq!(step(&mut f, 950_000).level, 2, "no stage beyond the chain");
        // Between the thresholds: hold.
        for _ in 0..20 {
            assert_eq!(step(&mut f, 300_000).level, 2);
        }
        // Calm: one stage per CALM_CHECKS, then not congested.
        for _ in 0..CALM_CHECKS {
            step(&mut f, 10_000);
        }
        assert_eq!(f.level(), 1);
        for _ in 0..CALM_CHECKS {
            step(&mut f, 10_000);
        }
        assert_eq!(f.level(), 0);
        assert!(f.congested());
        for _ in 0..CALM_CHECKS {
            step(&mut f, 10_000);
        }
        assert!(!f.congested());
    }

    #[test]
    fn consumer_reports_expire_and_scale_up_is_rate_limited() {
        let mut f = FlowController::new(&reduce_policy());
        let s = Signals {
            latency_us: 900_000,
            next_seq: 10,
            rate_hz: 5.0,
        };
        f.record(Some(s), 1_000_000);
        assert_eq!(f.fresh_consumer(2_000_000), Some(s));
        assert_eq!(f.fresh_consumer(3_100_000), None, "stale after 2 s");
        let d = f.observe(900_000, 1_000_000);
        assert!(d.congested);
        let mut ups = 0;
        for i in 1..=300u64 {
            let d = f.observe(900_000, 1_000_000 + i * 100_000);
            ups += u32::from(d.scale_up);
        }
        // Congested 30 s; one request after 1 s, then at most one per 10 s.
        assert_eq!(ups, 3);
    }
}
