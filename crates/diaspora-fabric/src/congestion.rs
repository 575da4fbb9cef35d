//! A loss-tolerant congestion controller for long, lossy paths (the
//! default; [`crate::Congestion::Tolerant`]).
//!
//! Loss-based controllers (Cubic, NewReno) cut their window on every lost
//! packet, so one flow on a path with a little random loss is held to the
//! Mathis limit (≈ MSS/RTT · 1.22/√p: ≈ 2.7 Mbit/s at 50 ms RTT and 1 %
//! loss) whatever the link rate. quinn's BBR ignores loss, but its
//! bandwidth filter takes the rate between two acknowledgements as a
//! sample and quinn paces at 1.25 × window per RTT, so it overshoots: on
//! the lossy-WAN bench it reaches the link rate by sending about twice
//! it, and half its packets die at the bottleneck queue.
//!
//! This controller counts loss per round trip instead of reacting to each
//! loss:
//!
//! - **Growth.** Slow start (the window grows by what is acknowledged)
//!   until the first congested round; then the window grows by
//!   [`GROWTH_PER_ROUND`] of itself per round trip (at least one packet).
//!   An application-limited flow does not grow.
//! - **Congestion** is a round that lost more than [`LOSS_RATIO_CONGESTED`]
//!   of its bytes (and at least [`LOSS_PACKETS_CONGESTED`] packets), or an
//!   ECN mark. Random loss of a few per cent is not congestion; a
//!   bottleneck queue that overflows is, because a window past the queue
//!   loses all its excess every round.
//! - **Back-off** on congestion: to the path's bandwidth-delay product as
//!   measured (the highest delivery rate of the last [`RATE_ROUNDS`]
//!   rounds × the minimum RTT), never above [`BACKOFF`] × the window. The
//!   link stays full while the queue drains — unlike a halving, which
//!   empties the pipe on a long path. Losses of packets sent before a
//!   back-off do not count again.
//! - **Persistent congestion** (an outage) restarts from the minimum
//!   window in slow start.
//!
//! The core ([`Tolerant`]) is pure: it takes times, byte counts and the
//! minimum RTT as arguments, and is tested without a network. The quinn
//! adapter is [`TolerantController`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Window growth per round trip after slow start, as a fraction of it.
pub const GROWTH_PER_ROUND: f64 = 1.0 / 32.0;
/// A round that loses more than this fraction of its bytes is congested.
pub const LOSS_RATIO_CONGESTED: f64 = 0.05;
/// ... and at least this many packets (so one loss in a short round is not).
pub const LOSS_PACKETS_CONGESTED: u64 = 3;
/// The window after a back-off is at most this fraction of the one before.
pub const BACKOFF: f64 = 0.85;
/// Rounds over which the delivery rate's maximum is kept.
pub const RATE_ROUNDS: usize = 10;
/// Largest window, bytes (the connection's send window bounds it anyway).
pub const WINDOW_MAX: u64 = 1 << 30;

/// The controller's state, free of quinn's types.
#[derive(Debug, Clone)]
pub struct Tolerant {
    mtu: u64,
    window: u64,
    slow_start: bool,
    /// Packet number that ends the current round when acknowledged.
    round_end_pn: Option<u64>,
    last_sent_pn: u64,
    round_start: Option<Instant>,
    round_acked: u64,
    round_lost: u64,
    /// Delivery rates (bytes/s) of the last rounds, newest last.
    rates: VecDeque<u64>,
    /// Losses of packets sent before this do not count (a back-off already answered them).
    reduced_at: Option<Instant>,
    app_limited_round: bool,
}

impl Tolerant {
    /// A controller for a path whose current MTU is `mtu`.
    pub fn new(mtu: u16) -> Tolerant {
        let mtu = u64::from(mtu).max(1200);
        Tolerant {
            mtu,
            window: Self::initial(mtu),
            slow_start: true,
            round_end_pn: None,
            last_sent_pn: 0,
            round_start: None,
            round_acked: 0,
            round_lost: 0,
            rates: VecDeque::with_capacity(RATE_ROUNDS + 1),
            reduced_at: None,
            app_limited_round: false,
        }
    }

    fn initial(mtu: u64) -> u64 {
        (10 * mtu).max(14_720)
    }

    fn minimum(&self) -> u64 {
        4 * self.mtu
    }

    /// The congestion window, bytes.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Whether the controller is in slow start.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// The highest delivery rate of the last rounds, bytes/s.
    pub fn delivery_rate(&self) -> u64 {
        self.rates.iter().copied().max().unwrap_or(0)
    }

    /// A packet was sent.
    pub fn on_sent(&mut self, now: Instant, packet_number: u64) {
        self.last_sent_pn = packet_number;
        if self.round_start.is_none() {
            self.round_start = Some(now);
            self.round_end_pn = Some(packet_number);
        }
    }

    /// `bytes` of a packet were acknowledged.
    pub fn on_ack(&mut self, bytes: u64, app_limited: bool) {
        self.round_acked += bytes;
        self.app_limited_round |= app_limited;
        if app_limited {
            return;
        }
        let grow = if self.slow_start {
            bytes
        } else {
            ((bytes as f64 * GROWTH_PER_ROUND) as u64)
                .max(bytes.saturating_mul(self.mtu) / self.window.max(1))
        };
        self.window = self.window.saturating_add(grow).min(WINDOW_MAX);
    }

    /// The end of an ACK frame's processing: closes the round when the
    /// packet that ends it is acknowledged.
    pub fn on_end_acks(&mut self, now: Instant, largest_acked: Option<u64>, min_rtt: Duration) {
        let (Some(largest), Some(end)) = (largest_acked, self.round_end_pn) else {
            return;
        };
        if largest < end {
            return;
        }
        let start = self.round_start.unwrap_or(now);
        let elapsed = now
            .saturating_duration_since(start)
            .max(Duration::from_micros(100));
        let rate = (self.round_acked as f64 / elapsed.as_secs_f64()) as u64;
        // An application-limited round says little about the path unless it
        // delivered more than we knew the path could.
        if !self.app_limited_round || rate > self.delivery_rate() {
            self.rates.push_back(rate);
            if self.rates.len() > RATE_ROUNDS {
                self.rates.pop_front();
            }
        }
        let lost = self.round_lost;
        let total = self.round_acked + lost;
        let congested = lost >= LOSS_PACKETS_CONGESTED * self.mtu
            && lost as f64 > LOSS_RATIO_CONGESTED * total as f64;
        if congested {
            self.back_off(now, min_rtt);
        }
        self.round_start = Some(now);
        self.round_end_pn = Some(self.last_sent_pn.max(largest + 1));
        self.round_acked = 0;
        self.round_lost = 0;
        self.app_limited_round = false;
    }

    /// Packets sent at `sent` (the latest of them) were lost; `bytes` in all.
    /// `bytes == 0` is an ECN congestion mark.
    pub fn on_loss(
        &mut self,
        now: Instant,
        sent: Instant,
        persistent: bool,
        bytes: u64,
        min_rtt: Duration,
    ) {
        if persistent {
            self.window = self.minimum();
            self.slow_start = true;
            self.rates.clear();
            self.reduced_at = Some(now);
            return;
        }
        if self.reduced_at.is_some_and(|r| sent <= r) {
            return;
        }
        if bytes == 0 {
            self.back_off(now, min_rtt);
            return;
        }
        self.round_lost += bytes;
    }

    fn back_off(&mut self, now: Instant, min_rtt: Duration) {
        let bdp = (self.delivery_rate() as f64 * min_rtt.as_secs_f64()) as u64;
        let cap = (self.window as f64 * BACKOFF) as u64;
        self.window = bdp.min(cap).max(self.minimum());
        self.slow_start = false;
        self.reduced_at = Some(now);
    }

    /// The path's MTU changed.
    pub fn on_mtu(&mut self, mtu: u16) {
        self.mtu = u64::from(mtu).max(1200);
        self.window = self.window.max(self.minimum());
    }

    /// The window a new connection starts with.
    pub fn initial_window(&self) -> u64 {
        Self::initial(self.mtu)
    }
}

/// [`Tolerant`] as a quinn congestion controller.
#[derive(Debug, Clone)]
pub struct TolerantController {
    core: Tolerant,
    /// The path's minimum RTT, as quinn's estimator last reported it.
    min_rtt: Duration,
}

impl quinn::congestion::Controller for TolerantController {
    fn on_sent(&mut self, now: Instant, _bytes: u64, last_packet_number: u64) {
        self.core.on_sent(now, last_packet_number);
    }

    fn on_ack(
        &mut self,
        _now: Instant,
        _sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.min_rtt = rtt.min();
        self.core.on_ack(bytes, app_limited);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        _in_flight: u64,
        _app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        let min_rtt = self.min_rtt;
        self.core
            .on_end_acks(now, largest_packet_num_acked, min_rtt);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        let min_rtt = self.min_rtt;
        self.core
            .on_loss(now, sent, is_persistent_congestion, lost_bytes, min_rtt);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.core.on_mtu(new_mtu);
    }

    fn window(&self) -> u64 {
        self.core.window()
    }

    fn clone_box(&self) -> Box<dyn quinn::congestion::Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        self.core.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// Builds [`TolerantController`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct TolerantConfig;

impl quinn::congestion::ControllerFactory for TolerantConfig {
    fn build(
        self: Arc<Self>,
        _now: Instant,
        current_mtu: u16,
    ) -> Box<dyn quinn::congestion::Controller> {
        Box::new(TolerantController {
            core: Tolerant::new(current_mtu),
            min_rtt: Duration::from_millis(100),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTU: u64 = 1200;

    /// A round-trip-at-a-time model of one flow through a bottleneck of
    /// `rate` bytes/s with a drop-tail queue of one bandwidth-delay
    /// product, `min_rtt` of propagation, and random loss `p` (every
    /// 1/p-th delivered packet). Returns (delivered ÷ capacity, overflow
    /// ÷ sent) over the last `measure` of `rounds` rounds.
    fn simulate(rate: f64, min_rtt: Duration, p: f64, rounds: usize, measure: usize) -> (f64, f64) {
        let mut c = Tolerant::new(MTU as u16);
        let bdp = rate * min_rtt.as_secs_f64();
        let queue = bdp;
        let mut now = Instant::now();
        let mut pn = 0u64;
        let mut loss_acc = 0.0;
        let (mut delivered_sum, mut capacity_sum, mut overflow_sum, mut sent_sum) =
            (0.0, 0.0, 0.0, 0.0);
        for round in 0..rounds {
            let packets = (c.window() / MTU).max(1);
            let start_pn = pn;
            for _ in 0..packets {
                pn += 1;
                c.on_sent(now, pn);
            }
            let sent = (packets * MTU) as f64;
            let through = sent.min(bdp + queue);
            let overflow = sent - through;
            // The round lasts the propagation delay plus the queue it built.
            let queued = (through - bdp).max(0.0);
            let duration = min_rtt.as_secs_f64() + queued / rate;
            let sent_at = now;
            now += Duration::from_secs_f64(duration);
            let through_packets = (through / MTU as f64) as u64;
            let mut lost_random = 0u64;
            for _ in 0..through_packets {
                loss_acc += p;
                if loss_acc >= 1.0 {
                    loss_acc -= 1.0;
                    lost_random += 1;
                } else {
                    c.on_ack(MTU, false);
                }
            }
            let lost = lost_random * MTU + overflow as u64;
            if lost > 0 {
                c.on_loss(now, sent_at, false, lost, min_rtt);
            }
            c.on_end_acks(now, Some(start_pn + packets), min_rtt);
            if round >= rounds - measure {
                delivered_sum += through - (lost_random * MTU) as f64;
                capacity_sum += rate * duration;
                overflow_sum += overflow;
                sent_sum += sent;
            }
        }
        (delivered_sum / capacity_sum, overflow_sum / sent_sum)
    }

    #[test]
    fn random_loss_of_one_per_cent_keeps_a_long_fat_path_full_without_flooding_its_queue() {
        // 200 Mbit/s, 50 ms RTT, 1 % random loss.
        let (goodput, overflow) = simulate(25e6, Duration::from_millis(50), 0.01, 400, 200);
        assert!(goodput > 0.9, "goodput {goodput:.3} of capacity");
        assert!(
            overflow < 0.03,
            "{:.3} of what was sent overflowed the queue",
            overflow
        );
    }

    #[test]
    fn bursts_of_loss_above_the_threshold_are_answered_by_a_back_off_to_the_path() {
        let mut c = Tolerant::new(MTU as u16);
        let now = Instant::now();
        let min_rtt = Duration::from_millis(50);
        // A round at 100 packets / 50 ms: 2.4 MB/s, bdp 120 kB.
        c.on_sent(now, 1);
        for _ in 0..100 {
            c.on_ack(MTU, false);
        }
        c.on_end_acks(now + min_rtt, Some(1), min_rtt);
        let before = c.window();
        assert!(c.in_slow_start());
        // The next round loses 20 %.
        c.on_sent(now + min_rtt, 2);
        for _ in 0..80 {
            c.on_ack(MTU, false);
        }
        c.on_loss(now + 2 * min_rtt, now + min_rtt, false, 20 * MTU, min_rtt);
        c.on_end_acks(now + 2 * min_rtt, Some(2), min_rtt);
        assert!(!c.in_slow_start());
        let bdp = (c.delivery_rate() as f64 * min_rtt.as_secs_f64()) as u64;
        assert!(c.window() <= ((before + 80 * MTU) as f64 * BACKOFF) as u64);
        assert!(c.window() <= bdp.max(4 * MTU), "{} > bdp {bdp}", c.window());
        // Losses of packets sent before the back-off are not counted again.
        let w = c.window();
        c.on_sent(now + 2 * min_rtt, 3);
        c.on_loss(now + 3 * min_rtt, now + min_rtt, false, 50 * MTU, min_rtt);
        c.on_end_acks(now + 3 * min_rtt, Some(3), min_rtt);
        assert!(c.window() >= w);
    }

    #[test]
    fn a_few_losses_in_a_short_round_are_not_congestion() {
        let mut c = Tolerant::new(MTU as u16);
        let now = Instant::now();
        let min_rtt = Duration::from_millis(40);
        c.on_sent(now, 1);
        for _ in 0..10 {
            c.on_ack(MTU, false);
        }
        c.on_loss(now + min_rtt, now, false, 2 * MTU, min_rtt);
        c.on_end_acks(now + min_rtt, Some(1), min_rtt);
        assert!(
            c.in_slow_start(),
            "two lost packets of twelve are below the packet threshold"
        );
    }

    #[test]
    fn persistent_congestion_restarts_from_the_minimum_window_and_app_limited_flows_do_not_grow() {
        let mut c = Tolerant::new(MTU as u16);
        let now = Instant::now();
        let w = c.window();
        c.on_ack(10 * MTU, true);
        assert_eq!(
            c.window(),
            w,
            "an application-limited ack does not grow the window"
        );
        c.on_ack(10 * MTU, false);
        assert!(c.window() > w);
        c.on_loss(now, now, true, MTU, Duration::from_millis(10));
        assert_eq!(c.window(), 4 * MTU);
        assert!(c.in_slow_start());
        assert_eq!(c.delivery_rate(), 0);
    }

    #[test]
    fn an_ecn_mark_backs_off_at_once() {
        let mut c = Tolerant::new(MTU as u16);
        let now = Instant::now();
        let w = c.window();
        c.on_loss(now, now, false, 0, Duration::from_millis(10));
        assert!(c.window() < w);
        assert!(!c.in_slow_start());
    }
}
