//! The pure link model: parameters, the per-packet decision, and schedules.
//!
//! Nothing here does I/O or reads a clock. Time is a [`Duration`] since the
//! start of the run, passed in by the caller; randomness comes from a ChaCha
//! generator seeded by the caller. The same parameters, seed and sequence of
//! `(now, size_bytes)` calls always give the same verdicts.
//!
//! # The per-packet pipeline
//!
//! [`LinkModel::on_packet`] takes one packet offered to the link at `now` and
//! decides, in this order:
//!
//! 1. **Blackhole** — during an outage every packet is dropped
//!    ([`DropReason::Blackhole`]).
//! 2. **Queue and serializer** — with a bandwidth limit the link transmits one
//!    packet at a time at `bandwidth_bps`. The packet starts to serialize when
//!    the link becomes free (`max(now, busy_until)`) and departs
//!    `size_bytes * 8 / bandwidth_bps` later. The bytes not yet serialized at
//!    `now` are the queue; if admitting this packet would make it exceed
//!    `queue_bytes_max` the packet is dropped at the tail
//!    ([`DropReason::QueueFull`]) and costs nothing. Without a limit the
//!    packet departs at `now` and there is no queue.
//! 3. **Wire loss** — a packet that was serialized can still be lost on the
//!    wire: independent random loss with probability `loss`
//!    ([`DropReason::Loss`]) and, if configured, a Gilbert–Elliott two-state
//!    burst loss ([`DropReason::BurstLoss`]). Lost packets did use link
//!    capacity, as on a real lossy link, so goodput is
//!    `bandwidth × (1 − loss)`.
//! 4. **Propagation** — delivery is `departure + delay_ms + jitter`, the
//!    jitter drawn uniformly from `[-jitter_ms, +jitter_ms]`, the total delay
//!    clamped at zero, and the delivery time clamped to be no earlier than
//!    the previous delivery. **Reordering is not emulated**: deliveries in
//!    one direction are monotonic non-decreasing, so large jitter on a busy
//!    link raises the mean delay rather than reordering packets.
//!
//! Bandwidth counts the bytes the caller passes as `size_bytes` (the relay
//! passes the UDP payload length; IP and UDP headers are not counted).

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Largest accepted `delay_ms` (one minute).
pub const DELAY_MS_MAX: f64 = 60_000.0;
/// Largest accepted `jitter_ms` (one minute).
pub const JITTER_MS_MAX: f64 = 60_000.0;
/// Smallest accepted bandwidth limit, 1 kbit/s. Use `blackhole` for "no link".
pub const BANDWIDTH_BPS_MIN: u64 = 1_000;
/// Largest accepted bandwidth limit, 1 Tbit/s.
pub const BANDWIDTH_BPS_MAX: u64 = 1_000_000_000_000;
/// Smallest accepted `queue_bytes_max`: one Ethernet-MTU packet must fit.
pub const QUEUE_BYTES_MIN: usize = 1_500;
/// Largest accepted `queue_bytes_max` (1 GiB).
pub const QUEUE_BYTES_MAX: usize = 1 << 30;
/// `queue_bytes_max` when a parameter file does not give one (1 MiB: about
/// 84 ms of queue at 100 Mbit/s, 8 ms at 1 Gbit/s).
pub const QUEUE_BYTES_DEFAULT: usize = 1 << 20;
/// Most steps a [`Change::Ramp`] may have.
pub const RAMP_STEPS_MAX: u32 = 10_000;
/// Most changes a [`Schedule`] may hold.
pub const SCHEDULE_CHANGES_MAX: usize = 10_000;
/// Latest time a schedule entry or duration may name (about 11.6 days).
pub const SCHEDULE_MS_MAX: f64 = 1.0e9;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A parameter (or schedule entry) outside its allowed range.
///
/// The message names the field, the value and the allowed range:
///
/// ```
/// use diaspora_twin::LinkParams;
/// let err = LinkParams { loss: 1.5, ..LinkParams::default() }.validate().unwrap_err();
/// assert_eq!(err.to_string(), "link parameter `loss` = 1.5 is out of range: allowed 0.0..=1.0");
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    /// A numeric field is outside its range (or not finite).
    #[error("link parameter `{field}` = {value} is out of range: allowed {allowed}")]
    OutOfRange {
        /// The field, with its path for nested or schedule fields
        /// (`gilbert_elliott.loss_bad`, `schedule[3].ramp.steps`).
        field: String,
        /// The rejected value, as written.
        value: String,
        /// The allowed range.
        allowed: String,
    },
    /// Both `bandwidth_bps` and `bandwidth_mbit` were given in a parameter file.
    #[error(
        "link parameters give both `bandwidth_bps` = {bps} and `bandwidth_mbit` = {mbit}: give one"
    )]
    BandwidthTwice {
        /// The `bandwidth_bps` value.
        bps: u64,
        /// The `bandwidth_mbit` value.
        mbit: f64,
    },
}

fn out_of_range(
    field: impl Into<String>,
    value: impl ToString,
    allowed: impl ToString,
) -> ParamsError {
    ParamsError::OutOfRange {
        field: field.into(),
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
}

fn check_f64(field: &str, value: f64, min: f64, max: f64) -> Result<(), ParamsError> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(out_of_range(field, value, format!("{min:?}..={max:?}")))
    }
}

fn check_bandwidth(field: &str, bps: u64) -> Result<(), ParamsError> {
    if (BANDWIDTH_BPS_MIN..=BANDWIDTH_BPS_MAX).contains(&bps) {
        Ok(())
    } else {
        Err(out_of_range(
            field,
            bps,
            format!("{BANDWIDTH_BPS_MIN}..={BANDWIDTH_BPS_MAX} (use `blackhole` for no link)"),
        ))
    }
}

/// Gilbert–Elliott burst loss: a two-state Markov chain advanced once per
/// packet that reaches the wire.
///
/// In the *good* state a packet is lost with probability `loss_good`, in the
/// *bad* state with `loss_bad`. The long-run fraction of packets seen in the
/// bad state is `p_good_to_bad / (p_good_to_bad + p_bad_to_good)`, so the
/// stationary loss rate is `π_good·loss_good + π_bad·loss_bad`
/// ([`GilbertElliott::stationary_loss`]). The mean burst (bad-state sojourn)
/// is `1 / p_bad_to_good` packets.
///
/// ```
/// use diaspora_twin::GilbertElliott;
/// let ge = GilbertElliott { p_good_to_bad: 0.01, p_bad_to_good: 0.25, loss_good: 0.0, loss_bad: 0.5 };
/// assert!((ge.stationary_loss() - 0.01 / 0.26 * 0.5).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GilbertElliott {
    /// Per-packet probability of moving from good to bad, `0..=1`.
    pub p_good_to_bad: f64,
    /// Per-packet probability of moving from bad to good, `0..=1`.
    pub p_bad_to_good: f64,
    /// Loss probability in the good state, `0..=1`.
    #[serde(default)]
    pub loss_good: f64,
    /// Loss probability in the bad state, `0..=1`.
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// The long-run loss rate of the chain alone (without `LinkParams::loss`).
    /// When both transition probabilities are zero the chain never leaves the
    /// good state it starts in, so this is `loss_good`.
    ///
    /// ```
    /// use diaspora_twin::GilbertElliott;
    /// let ge = GilbertElliott { p_good_to_bad: 0.1, p_bad_to_good: 0.1, loss_good: 0.0, loss_bad: 1.0 };
    /// assert_eq!(ge.stationary_loss(), 0.5);
    /// ```
    pub fn stationary_loss(&self) -> f64 {
        let total = self.p_good_to_bad + self.p_bad_to_good;
        if total == 0.0 {
            return self.loss_good;
        }
        let pi_bad = self.p_good_to_bad / total;
        (1.0 - pi_bad) * self.loss_good + pi_bad * self.loss_bad
    }

    /// Checks every probability is in `0..=1`.
    ///
    /// ```
    /// use diaspora_twin::GilbertElliott;
    /// let ge = GilbertElliott { p_good_to_bad: 0.1, p_bad_to_good: 2.0, loss_good: 0.0, loss_bad: 1.0 };
    /// assert!(ge.validate().unwrap_err().to_string().contains("gilbert_elliott.p_bad_to_good"));
    /// ```
    pub fn validate(&self) -> Result<(), ParamsError> {
        check_f64(
            "gilbert_elliott.p_good_to_bad",
            self.p_good_to_bad,
            0.0,
            1.0,
        )?;
        check_f64(
            "gilbert_elliott.p_bad_to_good",
            self.p_bad_to_good,
            0.0,
            1.0,
        )?;
        check_f64("gilbert_elliott.loss_good", self.loss_good, 0.0, 1.0)?;
        check_f64("gilbert_elliott.loss_bad", self.loss_bad, 0.0, 1.0)
    }
}

/// The behaviour of one direction of a link.
///
/// [`LinkParams::default()`] is a perfect link: no delay, no loss, unlimited
/// bandwidth, a [`QUEUE_BYTES_DEFAULT`] queue (unused while unlimited).
///
/// In TOML every field is optional; `bandwidth_mbit` (a float) may be given
/// instead of `bandwidth_bps`, and integers are accepted for float fields.
/// Deserializing validates.
///
/// ```
/// use diaspora_twin::LinkParams;
/// let params: LinkParams = toml::from_str("delay_ms = 20\nbandwidth_mbit = 1000\nloss = 0.001").unwrap();
/// assert_eq!(params.delay_ms, 20.0);
/// assert_eq!(params.bandwidth_bps, Some(1_000_000_000));
/// assert_eq!(params, LinkParams::default().with_delay_ms(20.0).with_bandwidth_mbit(1000.0).with_loss(0.001));
///
/// let err = toml::from_str::<LinkParams>("delay_ms = -1").unwrap_err();
/// assert!(err.to_string().contains("`delay_ms` = -1 is out of range"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LinkParamsSpec", into = "LinkParamsSpec")]
pub struct LinkParams {
    /// One-way propagation delay, `0..=60000` ms.
    pub delay_ms: f64,
    /// Jitter half-width, `0..=60000` ms: each packet's delay is drawn
    /// uniformly from `delay_ms ± jitter_ms` (clamped at zero).
    pub jitter_ms: f64,
    /// Serialization rate in bits per second; `None` is unlimited.
    pub bandwidth_bps: Option<u64>,
    /// Independent per-packet wire loss probability, `0..=1`.
    pub loss: f64,
    /// Optional burst loss, applied in addition to `loss`.
    pub gilbert_elliott: Option<GilbertElliott>,
    /// Bound of the drop-tail queue in front of the serializer, in bytes
    /// (`1500..=2^30`). Only matters with a bandwidth limit.
    pub queue_bytes_max: usize,
    /// Outage: drop every packet.
    pub blackhole: bool,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            delay_ms: 0.0,
            jitter_ms: 0.0,
            bandwidth_bps: None,
            loss: 0.0,
            gilbert_elliott: None,
            queue_bytes_max: QUEUE_BYTES_DEFAULT,
            blackhole: false,
        }
    }
}

impl LinkParams {
    /// Returns these parameters with `delay_ms` set.
    ///
    /// ```
    /// # use diaspora_twin::LinkParams;
    /// assert_eq!(LinkParams::default().with_delay_ms(5.0).delay_ms, 5.0);
    /// ```
    pub fn with_delay_ms(mut self, delay_ms: f64) -> Self {
        self.delay_ms = delay_ms;
        self
    }

    /// Returns these parameters with `jitter_ms` set.
    ///
    /// ```
    /// # use diaspora_twin::LinkParams;
    /// assert_eq!(LinkParams::default().with_jitter_ms(2.0).jitter_ms, 2.0);
    /// ```
    pub fn with_jitter_ms(mut self, jitter_ms: f64) -> Self {
        self.jitter_ms = jitter_ms;
        self
    }

    /// Returns these parameters with a bandwidth limit in bits per second.
    ///
    /// ```
    /// # use diaspora_twin::LinkParams;
    /// assert_eq!(LinkParams::default().with_bandwidth_bps(8_000_000).bandwidth_bps, Some(8_000_000));
    /// ```
    pub fn with_bandwidth_bps(mut self, bandwidth_bps: u64) -> Self {
        self.bandwidth_bps = Some(bandwidth_bps);
        self
    }

    /// Returns these parameters with a bandwidth limit in Mbit/s (10^6 bit/s),
    /// rounded to whole bits per second.
    ///
    /// ```
    /// # use diaspora_twin::LinkParams;
    /// assert_eq!(LinkParams::default().with_bandwidth_mbit(2.5).bandwidth_bps, Some(2_500_000));
    /// ```
    pub fn with_bandwidth_mbit(mut self, bandwidth_mbit: f64) -> Self {
        self.bandwidth_bps = Some(mbit_to_bps(bandwidth_mbit));
        self
    }

    /// Returns these parameters with independent loss probability `loss`.
    ///
    /// ```
    /// # use diaspora_twin::LinkParams;
    /// assert_eq!(LinkParams::default().with_loss(0.01).loss, 0.01);
    /// ```
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// Returns these parameters with the queue bound set.
    ///
    /// ```
    /// # use diaspora_twin::LinkParams;
    /// assert_eq!(LinkParams::default().with_queue_bytes_max(64_000).queue_bytes_max, 64_000);
    /// ```
    pub fn with_queue_bytes_max(mut self, queue_bytes_max: usize) -> Self {
        self.queue_bytes_max = queue_bytes_max;
        self
    }

    /// Returns these parameters with the outage flag set.
    ///
    /// ```
    /// # use diaspora_twin::LinkParams;
    /// assert!(LinkParams::default().with_blackhole(true).blackhole);
    /// ```
    pub fn with_blackhole(mut self, blackhole: bool) -> Self {
        self.blackhole = blackhole;
        self
    }

    /// Checks every field against its allowed range.
    ///
    /// ```
    /// use diaspora_twin::LinkParams;
    /// assert!(LinkParams::default().with_delay_ms(20.0).validate().is_ok());
    /// let err = LinkParams::default().with_bandwidth_bps(0).validate().unwrap_err();
    /// assert!(err.to_string().starts_with("link parameter `bandwidth_bps` = 0 is out of range"));
    /// ```
    pub fn validate(&self) -> Result<(), ParamsError> {
        check_f64("delay_ms", self.delay_ms, 0.0, DELAY_MS_MAX)?;
        check_f64("jitter_ms", self.jitter_ms, 0.0, JITTER_MS_MAX)?;
        if let Some(bps) = self.bandwidth_bps {
            check_bandwidth("bandwidth_bps", bps)?;
        }
        check_f64("loss", self.loss, 0.0, 1.0)?;
        if let Some(ge) = &self.gilbert_elliott {
            ge.validate()?;
        }
        if !(QUEUE_BYTES_MIN..=QUEUE_BYTES_MAX).contains(&self.queue_bytes_max) {
            return Err(out_of_range(
                "queue_bytes_max",
                self.queue_bytes_max,
                format!("{QUEUE_BYTES_MIN}..={QUEUE_BYTES_MAX}"),
            ));
        }
        Ok(())
    }

    /// The long-run fraction of wire packets lost: random loss combined with
    /// the Gilbert–Elliott stationary loss, `1 − (1 − loss)(1 − ge)`.
    ///
    /// ```
    /// # use diaspora_twin::LinkParams;
    /// assert_eq!(LinkParams::default().with_loss(0.25).expected_loss(), 0.25);
    /// ```
    pub fn expected_loss(&self) -> f64 {
        let ge = self.gilbert_elliott.map_or(0.0, |ge| ge.stationary_loss());
        1.0 - (1.0 - self.loss) * (1.0 - ge)
    }
}

fn mbit_to_bps(mbit: f64) -> u64 {
    // `as` saturates (and maps NaN to 0), which validation then rejects.
    (mbit * 1e6).round() as u64
}

/// The on-disk form of [`LinkParams`]: all fields optional, `bandwidth_mbit`
/// accepted. Converted (and validated) by `TryFrom`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkParamsSpec {
    #[serde(default)]
    delay_ms: f64,
    #[serde(default)]
    jitter_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bandwidth_bps: Option<u64>,
    #[serde(default, skip_serializing)]
    bandwidth_mbit: Option<f64>,
    #[serde(default)]
    loss: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gilbert_elliott: Option<GilbertElliott>,
    #[serde(default = "queue_bytes_default")]
    queue_bytes_max: usize,
    #[serde(default)]
    blackhole: bool,
}

fn queue_bytes_default() -> usize {
    QUEUE_BYTES_DEFAULT
}

impl TryFrom<LinkParamsSpec> for LinkParams {
    type Error = ParamsError;

    fn try_from(spec: LinkParamsSpec) -> Result<Self, ParamsError> {
        let bandwidth_bps = match (spec.bandwidth_bps, spec.bandwidth_mbit) {
            (Some(bps), Some(mbit)) => return Err(ParamsError::BandwidthTwice { bps, mbit }),
            (Some(bps), None) => Some(bps),
            (None, Some(mbit)) => {
                check_f64(
                    "bandwidth_mbit",
                    mbit,
                    BANDWIDTH_BPS_MIN as f64 / 1e6,
                    BANDWIDTH_BPS_MAX as f64 / 1e6,
                )?;
                Some(mbit_to_bps(mbit))
            }
            (None, None) => None,
        };
        let params = LinkParams {
            delay_ms: spec.delay_ms,
            jitter_ms: spec.jitter_ms,
            bandwidth_bps,
            loss: spec.loss,
            gilbert_elliott: spec.gilbert_elliott,
            queue_bytes_max: spec.queue_bytes_max,
            blackhole: spec.blackhole,
        };
        params.validate()?;
        Ok(params)
    }
}

impl From<LinkParams> for LinkParamsSpec {
    fn from(params: LinkParams) -> Self {
        LinkParamsSpec {
            delay_ms: params.delay_ms,
            jitter_ms: params.jitter_ms,
            bandwidth_bps: params.bandwidth_bps,
            bandwidth_mbit: None,
            loss: params.loss,
            gilbert_elliott: params.gilbert_elliott,
            queue_bytes_max: params.queue_bytes_max,
            blackhole: params.blackhole,
        }
    }
}

/// Why the link dropped a packet.
///
/// ```
/// use diaspora_twin::DropReason;
/// assert_eq!(DropReason::QueueFull.as_str(), "queue_full");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Independent random wire loss (`loss`).
    Loss,
    /// Gilbert–Elliott burst loss.
    BurstLoss,
    /// The drop-tail queue would have exceeded `queue_bytes_max`.
    QueueFull,
    /// The link is in an outage (`blackhole`).
    Blackhole,
}

impl DropReason {
    /// A short snake_case name for logs and metrics.
    ///
    /// ```
    /// # use diaspora_twin::DropReason;
    /// assert_eq!(DropReason::BurstLoss.as_str(), "burst_loss");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Loss => "loss",
            DropReason::BurstLoss => "burst_loss",
            DropReason::QueueFull => "queue_full",
            DropReason::Blackhole => "blackhole",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The link's decision for one packet.
///
/// ```
/// use std::time::Duration;
/// use diaspora_twin::{LinkModel, LinkParams, Verdict};
/// let mut link = LinkModel::new(LinkParams::default().with_delay_ms(10.0), 1).unwrap();
/// let verdict = link.on_packet(Duration::from_millis(5), 1200);
/// assert_eq!(verdict, Verdict::Deliver { at: Duration::from_millis(15) });
/// assert_eq!(verdict.delivery_at(), Some(Duration::from_millis(15)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver the packet at `at` (time since the start of the run).
    Deliver {
        /// Delivery time, never earlier than the previous delivery.
        at: Duration,
    },
    /// Drop the packet.
    Drop(DropReason),
}

impl Verdict {
    /// The delivery time, or `None` for a drop.
    ///
    /// ```
    /// # use diaspora_twin::{DropReason, Verdict};
    /// assert_eq!(Verdict::Drop(DropReason::Loss).delivery_at(), None);
    /// ```
    pub fn delivery_at(self) -> Option<Duration> {
        match self {
            Verdict::Deliver { at } => Some(at),
            Verdict::Drop(_) => None,
        }
    }
}

/// Serialization time of `size_bytes` at `bandwidth_bps`, rounded up to
/// whole nanoseconds so that rounding never makes the link faster than its
/// rate.
fn serialization_nanos(size_bytes: usize, bandwidth_bps: u64) -> u128 {
    let bits = size_bytes as u128 * 8;
    (bits * NANOS_PER_SEC).div_ceil(bandwidth_bps as u128)
}

fn nanos_to_duration(nanos: u128) -> Duration {
    let secs = (nanos / NANOS_PER_SEC).min(u64::MAX as u128) as u64;
    Duration::new(secs, (nanos % NANOS_PER_SEC) as u32)
}

/// One direction of an emulated link: the pure, seedable per-packet decision.
///
/// The caller passes the current time (a [`Duration`] since the start of the
/// run; calls must not go back in time) and the packet size; the model
/// answers with a [`Verdict`]. See the [module docs](self) for the pipeline.
///
/// ```
/// use std::time::Duration;
/// use diaspora_twin::{DropReason, LinkModel, LinkParams, Verdict};
/// // 1 Mbit/s, 20 ms, room for two 1000-byte packets.
/// let params = LinkParams::default()
///     .with_delay_ms(20.0)
///     .with_bandwidth_bps(1_000_000)
///     .with_queue_bytes_max(2_000);
/// let mut link = LinkModel::new(params, 42).unwrap();
/// let t0 = Duration::ZERO;
/// // 1000 bytes take 8 ms to serialize, then 20 ms to propagate.
/// assert_eq!(link.on_packet(t0, 1000), Verdict::Deliver { at: Duration::from_millis(28) });
/// assert_eq!(link.on_packet(t0, 1000), Verdict::Deliver { at: Duration::from_millis(36) });
/// assert_eq!(link.on_packet(t0, 1000), Verdict::Drop(DropReason::QueueFull));
/// assert_eq!(link.queue_bytes(Duration::from_millis(4)), 1500);
/// ```
#[derive(Debug, Clone)]
pub struct LinkModel {
    params: LinkParams,
    rng: ChaCha8Rng,
    /// When the serializer finishes the last admitted packet.
    busy_until: Duration,
    /// The latest delivery time handed out (keeps deliveries in order).
    last_delivery: Duration,
    /// Gilbert–Elliott state: `true` in the bad state.
    burst_bad: bool,
}

impl LinkModel {
    /// A link with `params`, its randomness seeded by `seed`.
    ///
    /// ```
    /// use diaspora_twin::{LinkModel, LinkParams};
    /// assert!(LinkModel::new(LinkParams::default(), 7).is_ok());
    /// assert!(LinkModel::new(LinkParams::default().with_loss(-0.1), 7).is_err());
    /// ```
    pub fn new(params: LinkParams, seed: u64) -> Result<Self, ParamsError> {
        params.validate()?;
        Ok(LinkModel {
            params,
            rng: ChaCha8Rng::seed_from_u64(seed),
            busy_until: Duration::ZERO,
            last_delivery: Duration::ZERO,
            burst_bad: false,
        })
    }

    /// The parameters in force.
    ///
    /// ```
    /// # use diaspora_twin::{LinkModel, LinkParams};
    /// let link = LinkModel::new(LinkParams::default().with_delay_ms(3.0), 7).unwrap();
    /// assert_eq!(link.params().delay_ms, 3.0);
    /// ```
    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    /// Bytes admitted but not yet serialized at `now` (the queue, including
    /// the unsent part of the packet being serialized). Always
    /// `<= queue_bytes_max` right after a packet is admitted.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use diaspora_twin::{LinkModel, LinkParams};
    /// let mut link = LinkModel::new(LinkParams::default().with_bandwidth_bps(8_000), 7).unwrap();
    /// link.on_packet(Duration::ZERO, 1000); // one second at 8 kbit/s
    /// assert_eq!(link.queue_bytes(Duration::from_millis(500)), 500);
    /// assert_eq!(link.queue_bytes(Duration::from_secs(2)), 0);
    /// ```
    pub fn queue_bytes(&self, now: Duration) -> usize {
        match self.params.bandwidth_bps {
            None => 0,
            Some(bps) => backlog_bytes(self.busy_until.saturating_sub(now), bps),
        }
    }

    /// Decides the fate of one packet of `size_bytes` offered at `now`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use diaspora_twin::{DropReason, LinkModel, LinkParams, Verdict};
    /// let mut link = LinkModel::new(LinkParams::default().with_blackhole(true), 7).unwrap();
    /// assert_eq!(link.on_packet(Duration::ZERO, 100), Verdict::Drop(DropReason::Blackhole));
    /// ```
    pub fn on_packet(&mut self, now: Duration, size_bytes: usize) -> Verdict {
        if self.params.blackhole {
            return Verdict::Drop(DropReason::Blackhole);
        }

        // Queue and serializer.
        let departure = match self.params.bandwidth_bps {
            None => now,
            Some(bps) => {
                let start = now.max(self.busy_until);
                let finish = start + nanos_to_duration(serialization_nanos(size_bytes, bps));
                if backlog_bytes(finish - now, bps) > self.params.queue_bytes_max {
                    return Verdict::Drop(DropReason::QueueFull);
                }
                self.busy_until = finish;
                finish
            }
        };

        // Wire loss: the packet has used the link's capacity either way.
        if self.params.loss > 0.0 && self.rng.gen::<f64>() < self.params.loss {
            self.step_burst_chain();
            return Verdict::Drop(DropReason::Loss);
        }
        if self.step_burst_chain() {
            return Verdict::Drop(DropReason::BurstLoss);
        }

        // Propagation, jitter, and in-order delivery.
        let mut delay_ms = self.params.delay_ms;
        if self.params.jitter_ms > 0.0 {
            let jitter_ms = self.params.jitter_ms;
            delay_ms += self.rng.gen_range(-jitter_ms..=jitter_ms);
        }
        // Round to whole nanoseconds (`from_secs_f64` would truncate 0.03 s
        // to 29.999999 ms).
        let delay = Duration::from_nanos((delay_ms.max(0.0) * 1e6).round() as u64);
        let at = (departure + delay).max(self.last_delivery);
        self.last_delivery = at;
        Verdict::Deliver { at }
    }

    /// Advances the Gilbert–Elliott chain by one wire packet; returns whether
    /// that packet is lost. Draws randomness only when the chain is configured.
    fn step_burst_chain(&mut self) -> bool {
        let Some(ge) = self.params.gilbert_elliott else {
            return false;
        };
        let loss = if self.burst_bad {
            ge.loss_bad
        } else {
            ge.loss_good
        };
        let lost = self.rng.gen::<f64>() < loss;
        let flip = if self.burst_bad {
            ge.p_bad_to_good
        } else {
            ge.p_good_to_bad
        };
        if self.rng.gen::<f64>() < flip {
            self.burst_bad = !self.burst_bad;
        }
        lost
    }

    /// Changes the parameters from `now` on, keeping the queue: bytes not yet
    /// serialized at `now` drain at the new rate (instantly when the new rate
    /// is unlimited). Packets already given a verdict keep it, and deliveries
    /// stay in order.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use diaspora_twin::{LinkModel, LinkParams};
    /// let mut link = LinkModel::new(LinkParams::default().with_bandwidth_bps(8_000), 7).unwrap();
    /// link.on_packet(Duration::ZERO, 1000);
    /// link.set_params(Duration::from_millis(500), LinkParams::default().with_bandwidth_bps(4_000)).unwrap();
    /// // 500 bytes were left; at half the rate they now take one more second.
    /// assert_eq!(link.queue_bytes(Duration::from_millis(1000)), 250);
    /// ```
    pub fn set_params(&mut self, now: Duration, params: LinkParams) -> Result<(), ParamsError> {
        params.validate()?;
        self.apply_params(now, params);
        Ok(())
    }

    /// [`LinkModel::set_params`] for parameters already known to be valid.
    pub(crate) fn apply_params(&mut self, now: Duration, params: LinkParams) {
        let remaining = self.busy_until.saturating_sub(now);
        self.busy_until = match (self.params.bandwidth_bps, params.bandwidth_bps) {
            (Some(old_bps), Some(new_bps)) if old_bps != new_bps => {
                let bits = remaining.as_nanos() * old_bps as u128;
                now + nanos_to_duration(bits.div_ceil(new_bps as u128))
            }
            (Some(_), Some(_)) => self.busy_until,
            _ => now,
        };
        if params.gilbert_elliott.is_none() {
            self.burst_bad = false;
        }
        self.params = params;
    }
}

/// Bytes still to serialize when the serializer has `remaining` time of work
/// at `bandwidth_bps`.
fn backlog_bytes(remaining: Duration, bandwidth_bps: u64) -> usize {
    let bits = remaining.as_nanos() * bandwidth_bps as u128 / NANOS_PER_SEC;
    (bits / 8).min(usize::MAX as u128) as usize
}

/// Serde helper: a [`Duration`] written as (integer or float) milliseconds.
mod duration_ms {
    use super::SCHEDULE_MS_MAX;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        let ms = value.as_secs_f64() * 1e3;
        if ms.fract() == 0.0 && ms <= u64::MAX as f64 {
            serializer.serialize_u64(ms as u64)
        } else {
            serializer.serialize_f64(ms)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(deserializer)?;
        if !(ms.is_finite() && (0.0..=SCHEDULE_MS_MAX).contains(&ms)) {
            return Err(D::Error::custom(format!(
                "duration {ms} ms is out of range: allowed 0..={SCHEDULE_MS_MAX} ms"
            )));
        }
        Ok(Duration::from_secs_f64(ms / 1e3))
    }
}

/// One change a [`Schedule`] applies to the base parameters.
///
/// In TOML a change is a table with `kind` and the variant's fields;
/// durations are in milliseconds (`duration_ms`, `over_ms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Replace all parameters from this time on (until the next `Params`).
    /// Outages still overlay them.
    Params {
        /// The new parameters.
        params: LinkParams,
    },
    /// Blackhole the link for `duration`, then restore whatever the other
    /// changes say (the outage is an overlay, it ends exactly at
    /// `at + duration`).
    Outage {
        /// How long the outage lasts.
        #[serde(rename = "duration_ms", with = "duration_ms")]
        duration: Duration,
    },
    /// Set the bandwidth limit (`None`: unlimited).
    Bandwidth {
        /// New limit in bits per second.
        #[serde(default)]
        bps: Option<u64>,
    },
    /// Move the bandwidth from `from_bps` to `to_bps` in `steps` equal steps
    /// spread over `over`: at `at` the rate is `from_bps`, at `at + over` it
    /// is exactly `to_bps`, and it stays there.
    Ramp {
        /// Rate at the start of the ramp.
        from_bps: u64,
        /// Rate at the end of the ramp.
        to_bps: u64,
        /// Length of the ramp.
        #[serde(rename = "over_ms", with = "duration_ms")]
        over: Duration,
        /// Number of steps, `1..=10000`.
        steps: u32,
    },
}

impl Change {
    fn validate(&self, index: usize) -> Result<(), ParamsError> {
        let with_path = |e: ParamsError| match e {
            ParamsError::OutOfRange {
                field,
                value,
                allowed,
            } => ParamsError::OutOfRange {
                field: format!("schedule[{index}].{field}"),
                value,
                allowed,
            },
            other => other,
        };
        match self {
            Change::Params { params } => params.validate().map_err(|e| {
                with_path(match e {
                    ParamsError::OutOfRange {
                        field,
                        value,
                        allowed,
                    } => ParamsError::OutOfRange {
                        field: format!("params.{field}"),
                        value,
                        allowed,
                    },
                    other => other,
                })
            }),
            Change::Outage { .. } => Ok(()),
            Change::Bandwidth { bps } => match bps {
                Some(bps) => check_bandwidth("bandwidth.bps", *bps).map_err(with_path),
                None => Ok(()),
            },
            Change::Ramp {
                from_bps,
                to_bps,
                steps,
                ..
            } => {
                check_bandwidth("ramp.from_bps", *from_bps).map_err(with_path)?;
                check_bandwidth("ramp.to_bps", *to_bps).map_err(with_path)?;
                if !(1..=RAMP_STEPS_MAX).contains(steps) {
                    return Err(with_path(out_of_range(
                        "ramp.steps",
                        steps,
                        format!("1..={RAMP_STEPS_MAX}"),
                    )));
                }
                Ok(())
            }
        }
    }
}

/// A [`Change`] and the time it takes effect.
///
/// ```
/// use std::time::Duration;
/// use diaspora_twin::{Change, ScheduledChange};
/// let change: ScheduledChange = toml::from_str("at_ms = 5000\nkind = \"outage\"\nduration_ms = 2000").unwrap();
/// assert_eq!(change, ScheduledChange {
///     at: Duration::from_secs(5),
///     change: Change::Outage { duration: Duration::from_secs(2) },
/// });
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledChange {
    /// When the change takes effect (since the start of the run).
    #[serde(rename = "at_ms", with = "duration_ms")]
    pub at: Duration,
    /// What changes.
    #[serde(flatten)]
    pub change: Change,
}

/// A time-ordered fault and congestion schedule for one link direction.
///
/// A schedule is applied on top of *base* parameters: [`Schedule::params_at`]
/// is a pure function of the base and the time, so the parameters in force at
/// any instant can be computed (and tested) without running anything.
/// Changes at the same instant apply in the order given.
///
/// Congestion example: bandwidth falls to 20 % over 10 s, stays there 60 s,
/// and recovers over 10 s:
///
/// ```
/// use std::time::Duration;
/// use diaspora_twin::{LinkParams, Schedule};
/// let base = LinkParams::default().with_bandwidth_bps(100_000_000);
/// let schedule = Schedule::congestion(
///     Duration::from_secs(30),   // starts at t = 30 s
///     100_000_000, 0.2,          // from 100 Mbit/s down to 20 %
///     Duration::from_secs(10),   // falling over 10 s
///     Duration::from_secs(60),   // held for 60 s
///     10,                        // in 10 steps each way
/// ).unwrap();
/// let bps = |s: u64| schedule.params_at(&base, Duration::from_secs(s)).bandwidth_bps;
/// assert_eq!(bps(0), Some(100_000_000));
/// assert_eq!(bps(35), Some(60_000_000));
/// assert_eq!(bps(40), Some(20_000_000));
/// assert_eq!(bps(99), Some(20_000_000));
/// assert_eq!(bps(110), Some(100_000_000));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<ScheduledChange>", into = "Vec<ScheduledChange>")]
pub struct Schedule {
    /// Sorted by `at`, stable.
    changes: Vec<ScheduledChange>,
}

impl TryFrom<Vec<ScheduledChange>> for Schedule {
    type Error = ParamsError;

    fn try_from(changes: Vec<ScheduledChange>) -> Result<Self, ParamsError> {
        Schedule::new(changes)
    }
}

impl From<Schedule> for Vec<ScheduledChange> {
    fn from(schedule: Schedule) -> Self {
        schedule.changes
    }
}

impl Schedule {
    /// A schedule from changes in any order (sorted stably by time). Checks
    /// every change and at most [`SCHEDULE_CHANGES_MAX`] changes.
    ///
    /// ```
    /// use std::time::Duration;
    /// use diaspora_twin::{Change, Schedule, ScheduledChange};
    /// let err = Schedule::new(vec![ScheduledChange {
    ///     at: Duration::ZERO,
    ///     change: Change::Ramp { from_bps: 1_000_000, to_bps: 2_000_000, over: Duration::from_secs(1), steps: 0 },
    /// }]).unwrap_err();
    /// assert_eq!(err.to_string(), "link parameter `schedule[0].ramp.steps` = 0 is out of range: allowed 1..=10000");
    /// ```
    pub fn new(mut changes: Vec<ScheduledChange>) -> Result<Self, ParamsError> {
        if changes.len() > SCHEDULE_CHANGES_MAX {
            return Err(out_of_range(
                "schedule.len",
                changes.len(),
                format!("0..={SCHEDULE_CHANGES_MAX}"),
            ));
        }
        for (index, change) in changes.iter().enumerate() {
            change.change.validate(index)?;
        }
        changes.sort_by_key(|change| change.at);
        Ok(Schedule { changes })
    }

    /// The congestion episode of the type docs: starting at `start`, the
    /// bandwidth ramps from `base_bps` to `base_bps × floor_fraction` over
    /// `ramp`, holds for `hold`, then ramps back to `base_bps` over `ramp`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use diaspora_twin::Schedule;
    /// let s = Schedule::congestion(Duration::ZERO, 10_000_000, 0.5, Duration::from_secs(1), Duration::from_secs(1), 1).unwrap();
    /// assert_eq!(s.changes().len(), 2);
    /// ```
    pub fn congestion(
        start: Duration,
        base_bps: u64,
        floor_fraction: f64,
        ramp: Duration,
        hold: Duration,
        steps: u32,
    ) -> Result<Self, ParamsError> {
        check_f64("congestion.floor_fraction", floor_fraction, 0.0, 1.0)?;
        let floor_bps = (base_bps as f64 * floor_fraction).round() as u64;
        Schedule::new(vec![
            ScheduledChange {
                at: start,
                change: Change::Ramp {
                    from_bps: base_bps,
                    to_bps: floor_bps,
                    over: ramp,
                    steps,
                },
            },
            ScheduledChange {
                at: start + ramp + hold,
                change: Change::Ramp {
                    from_bps: floor_bps,
                    to_bps: base_bps,
                    over: ramp,
                    steps,
                },
            },
        ])
    }

    /// The changes, sorted by time.
    ///
    /// ```
    /// # use diaspora_twin::Schedule;
    /// assert!(Schedule::default().changes().is_empty());
    /// ```
    pub fn changes(&self) -> &[ScheduledChange] {
        &self.changes
    }

    /// Whether the schedule has no changes.
    ///
    /// ```
    /// # use diaspora_twin::Schedule;
    /// assert!(Schedule::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The parameters in force at `t`: `base` with every change at or
    /// before `t` applied in order, and active outages overlaid.
    ///
    /// ```
    /// use std::time::Duration;
    /// use diaspora_twin::{Change, LinkParams, Schedule, ScheduledChange};
    /// let schedule = Schedule::new(vec![ScheduledChange {
    ///     at: Duration::from_secs(5),
    ///     change: Change::Outage { duration: Duration::from_secs(2) },
    /// }]).unwrap();
    /// let base = LinkParams::default();
    /// assert!(!schedule.params_at(&base, Duration::from_millis(4_999)).blackhole);
    /// assert!(schedule.params_at(&base, Duration::from_secs(5)).blackhole);
    /// assert!(!schedule.params_at(&base, Duration::from_secs(7)).blackhole);
    /// ```
    pub fn params_at(&self, base: &LinkParams, t: Duration) -> LinkParams {
        let mut params = base.clone();
        let mut outage = false;
        for entry in self.changes.iter().take_while(|entry| entry.at <= t) {
            match &entry.change {
                Change::Params { params: new } => params = new.clone(),
                Change::Outage { duration } => outage |= t < entry.at + *duration,
                Change::Bandwidth { bps } => params.bandwidth_bps = *bps,
                Change::Ramp {
                    from_bps,
                    to_bps,
                    over,
                    steps,
                } => {
                    params.bandwidth_bps =
                        Some(ramp_bps(*from_bps, *to_bps, *over, *steps, t - entry.at));
                }
            }
        }
        params.blackhole |= outage;
        params
    }

    /// The first instant after `t` at which [`Schedule::params_at`] may
    /// change (a change's start, an outage's end, a ramp step), or `None`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use diaspora_twin::{Change, Schedule, ScheduledChange};
    /// let schedule = Schedule::new(vec![ScheduledChange {
    ///     at: Duration::from_secs(1),
    ///     change: Change::Ramp { from_bps: 4_000_000, to_bps: 2_000_000, over: Duration::from_secs(2), steps: 2 },
    /// }]).unwrap();
    /// assert_eq!(schedule.next_change_after(Duration::ZERO), Some(Duration::from_secs(1)));
    /// assert_eq!(schedule.next_change_after(Duration::from_secs(1)), Some(Duration::from_secs(2)));
    /// assert_eq!(schedule.next_change_after(Duration::from_secs(2)), Some(Duration::from_secs(3)));
    /// assert_eq!(schedule.next_change_after(Duration::from_secs(3)), None);
    /// ```
    pub fn next_change_after(&self, t: Duration) -> Option<Duration> {
        self.changes
            .iter()
            .filter_map(|entry| {
                if entry.at > t {
                    return Some(entry.at);
                }
                match &entry.change {
                    Change::Outage { duration } => {
                        Some(entry.at + *duration).filter(|end| *end > t)
                    }
                    Change::Ramp { over, steps, .. } if t < entry.at + *over => {
                        let over_ns = over.as_nanos();
                        let steps = u128::from(*steps);
                        let next_step = (t - entry.at).as_nanos() * steps / over_ns + 1;
                        Some(entry.at + nanos_to_duration((next_step * over_ns).div_ceil(steps)))
                    }
                    _ => None,
                }
            })
            .min()
    }

    /// The schedule unrolled: `(time, parameters in force from then)` for
    /// time zero and every instant the parameters change, in time order.
    /// Consecutive equal parameter sets are merged. The length is bounded by
    /// the number of changes, outage ends and ramp steps.
    ///
    /// ```
    /// use std::time::Duration;
    /// use diaspora_twin::{Change, LinkParams, Schedule, ScheduledChange};
    /// let schedule = Schedule::new(vec![ScheduledChange {
    ///     at: Duration::from_secs(5),
    ///     change: Change::Outage { duration: Duration::from_secs(2) },
    /// }]).unwrap();
    /// let timeline = schedule.timeline(&LinkParams::default());
    /// let times: Vec<u64> = timeline.iter().map(|(t, _)| t.as_secs()).collect();
    /// assert_eq!(times, [0, 5, 7]);
    /// assert!(timeline[1].1.blackhole && !timeline[2].1.blackhole);
    /// ```
    pub fn timeline(&self, base: &LinkParams) -> Vec<(Duration, LinkParams)> {
        let mut timeline = vec![(Duration::ZERO, self.params_at(base, Duration::ZERO))];
        let mut t = Duration::ZERO;
        while let Some(next) = self.next_change_after(t) {
            let params = self.params_at(base, next);
            if timeline.last().map(|(_, last)| last) != Some(&params) {
                timeline.push((next, params));
            }
            t = next;
        }
        timeline
    }
}

fn ramp_bps(from_bps: u64, to_bps: u64, over: Duration, steps: u32, elapsed: Duration) -> u64 {
    let steps = i128::from(steps);
    let step = if elapsed >= over {
        steps
    } else {
        // `over` is non-zero here because `elapsed < over`.
        (elapsed.as_nanos() * steps as u128 / over.as_nanos()) as i128
    };
    let from = i128::from(from_bps);
    let to = i128::from(to_bps);
    (from + (to - from) * step / steps) as u64
}

/// A [`LinkModel`] driven by a [`Schedule`] over base parameters: before each
/// packet it applies, at their exact times, the parameter changes the
/// schedule makes up to `now`. This is what the relay runs per direction.
///
/// ```
/// use std::time::Duration;
/// use diaspora_twin::{Change, DropReason, LinkParams, Schedule, ScheduledChange, ScheduledLink, Verdict};
/// let schedule = Schedule::new(vec![ScheduledChange {
///     at: Duration::from_secs(1),
///     change: Change::Outage { duration: Duration::from_secs(1) },
/// }]).unwrap();
/// let mut link = ScheduledLink::new(LinkParams::default(), schedule, 7).unwrap();
/// assert!(matches!(link.on_packet(Duration::from_millis(999), 100), Verdict::Deliver { .. }));
/// assert_eq!(link.on_packet(Duration::from_millis(1500), 100), Verdict::Drop(DropReason::Blackhole));
/// assert!(matches!(link.on_packet(Duration::from_secs(2), 100), Verdict::Deliver { .. }));
/// ```
#[derive(Debug, Clone)]
pub struct ScheduledLink {
    model: LinkModel,
    base: LinkParams,
    schedule: Schedule,
    /// Time of the next parameter change not yet applied to `model`.
    next_change: Option<Duration>,
}

impl ScheduledLink {
    /// A scheduled link starting at time zero.
    ///
    /// ```
    /// # use diaspora_twin::{LinkParams, Schedule, ScheduledLink};
    /// assert!(ScheduledLink::new(LinkParams::default(), Schedule::default(), 1).is_ok());
    /// ```
    pub fn new(base: LinkParams, schedule: Schedule, seed: u64) -> Result<Self, ParamsError> {
        base.validate()?;
        let model = LinkModel::new(schedule.params_at(&base, Duration::ZERO), seed)?;
        let next_change = schedule.next_change_after(Duration::ZERO);
        Ok(ScheduledLink {
            model,
            base,
            schedule,
            next_change,
        })
    }

    /// Applies every schedule change up to and including `now`, each at its
    /// own time.
    fn advance(&mut self, now: Duration) {
        while let Some(at) = self.next_change.filter(|at| *at <= now) {
            // Valid by construction: a valid base, validated changes, and
            // ramps that stay between two validated rates.
            self.model
                .apply_params(at, self.schedule.params_at(&self.base, at));
            self.next_change = self.schedule.next_change_after(at);
        }
    }

    /// [`LinkModel::on_packet`] after applying the schedule up to `now`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use diaspora_twin::{LinkParams, Schedule, ScheduledLink, Verdict};
    /// let mut link = ScheduledLink::new(LinkParams::default().with_delay_ms(1.0), Schedule::default(), 1).unwrap();
    /// assert_eq!(link.on_packet(Duration::ZERO, 10), Verdict::Deliver { at: Duration::from_millis(1) });
    /// ```
    pub fn on_packet(&mut self, now: Duration, size_bytes: usize) -> Verdict {
        self.advance(now);
        self.model.on_packet(now, size_bytes)
    }

    /// Replaces the base parameters at `now` (runtime control: fault
    /// injection); the schedule keeps overlaying the new base.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use diaspora_twin::{DropReason, LinkParams, Schedule, ScheduledLink, Verdict};
    /// let mut link = ScheduledLink::new(LinkParams::default(), Schedule::default(), 1).unwrap();
    /// link.set_base(Duration::ZERO, LinkParams::default().with_blackhole(true)).unwrap();
    /// assert_eq!(link.on_packet(Duration::ZERO, 10), Verdict::Drop(DropReason::Blackhole));
    /// ```
    pub fn set_base(&mut self, now: Duration, base: LinkParams) -> Result<(), ParamsError> {
        base.validate()?;
        self.advance(now);
        self.base = base;
        self.model
            .apply_params(now, self.schedule.params_at(&self.base, now));
        Ok(())
    }

    /// The base parameters (without the schedule).
    ///
    /// ```
    /// # use diaspora_twin::{LinkParams, Schedule, ScheduledLink};
    /// let link = ScheduledLink::new(LinkParams::default(), Schedule::default(), 1).unwrap();
    /// assert_eq!(link.base(), &LinkParams::default());
    /// ```
    pub fn base(&self) -> &LinkParams {
        &self.base
    }

    /// The parameters the model last applied (the schedule is applied lazily,
    /// at the next packet or `set_base`).
    ///
    /// ```
    /// # use diaspora_twin::{LinkParams, Schedule, ScheduledLink};
    /// let link = ScheduledLink::new(LinkParams::default(), Schedule::default(), 1).unwrap();
    /// assert_eq!(link.params(), &LinkParams::default());
    /// ```
    pub fn params(&self) -> &LinkParams {
        self.model.params()
    }

    /// [`LinkModel::queue_bytes`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use diaspora_twin::{LinkParams, Schedule, ScheduledLink};
    /// let link = ScheduledLink::new(LinkParams::default(), Schedule::default(), 1).unwrap();
    /// assert_eq!(link.queue_bytes(Duration::ZERO), 0);
    /// ```
    pub fn queue_bytes(&self, now: Duration) -> usize {
        self.model.queue_bytes(now)
    }
}
