//! Calibration: measure how faithfully a relay on this machine reproduces a
//! configured link.
//!
//! [`calibrate`] runs three passes, each through a fresh [`Relay`] on
//! 127.0.0.1 whose far side is a receiver that records every probe. Probes
//! carry a sequence number and a send timestamp; sender and receiver share
//! one process clock, and the receiver takes each probe's arrival from the
//! kernel's receive timestamp ([`crate::rxtime`]), so one-way times are
//! exact up to the relay's own overhead.
//!
//! 1. **Delay**: `delay_probes` probes of `packet_bytes`, one per
//!    millisecond, through a link with the configured delay only (no
//!    bandwidth limit, whose serialization time would be added, and no
//!    loss). Reported: the median one-way time.
//! 2. **Bandwidth**: for `duration`, the sender offers 20 % more than the
//!    configured rate in `packet_bytes` packets through a link with the
//!    configured delay and bandwidth (no loss, default queue). The queue
//!    saturates and the receiver sees the link rate; reported is the
//!    received payload rate over the last 80 % of the arrival span.
//! 3. **Loss**: enough small (64-byte) probes to expect 400 losses (at least
//!    20 000, at most 2 000 000), at 50 000 probes/s, through a link with the
//!    configured loss only. Loss is decided per packet independently of
//!    size, so small probes measure it without loading the machine.
//!    Reported: the fraction never received.

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::link::LinkParams;
use crate::relay::{Relay, RelayConfig, RelayError, RelayStats};
use crate::rxtime;

/// Probe header: sequence number and send time, both little-endian `u64`.
const PROBE_HEADER_BYTES: usize = 16;
/// Size of a loss probe.
const LOSS_PROBE_BYTES: usize = 64;
/// Loss probes sent per second.
const LOSS_PROBES_PER_S: u64 = 50_000;
/// Expected number of lost loss probes the default probe count aims for.
const LOSS_EXPECTED_DROPS: f64 = 400.0;
/// Bounds of the default loss probe count.
const LOSS_PROBES_MIN: u64 = 20_000;
const LOSS_PROBES_MAX: u64 = 2_000_000;
/// Interval of delay probes.
const DELAY_PROBE_INTERVAL: Duration = Duration::from_millis(1);
/// The bandwidth pass offers this much more than the configured rate.
const OVERLOAD_FACTOR: f64 = 1.2;
/// Part of the arrival span the bandwidth pass discards as warm-up.
const WARMUP_FRACTION: f64 = 0.2;

/// Fidelity target for delay: absolute error in ms.
pub const DELAY_TARGET_MS: f64 = 1.0;
/// Fidelity target for throughput: relative error.
pub const BANDWIDTH_TARGET_FRACTION: f64 = 0.05;
/// Fidelity target for loss: relative error.
pub const LOSS_TARGET_FRACTION: f64 = 0.20;

/// What to calibrate.
///
/// ```
/// use std::time::Duration;
/// use diaspora_twin::CalibrateConfig;
/// let config = CalibrateConfig { bandwidth_mbit: 1000.0, duration: Duration::from_secs(2), ..CalibrateConfig::default() };
/// assert_eq!(config.packet_bytes, 1200);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrateConfig {
    /// Configured one-way delay, ms (`0..=60000`).
    pub delay_ms: f64,
    /// Configured bandwidth, Mbit/s (`0.001..=1e6`).
    pub bandwidth_mbit: f64,
    /// Configured random loss probability (`0..=1`).
    pub loss: f64,
    /// Packet size for the delay and bandwidth passes (`16..=65507`; 1200 by
    /// default, like QUIC).
    pub packet_bytes: usize,
    /// Length of the bandwidth pass (`100ms..=600s`, 3 s by default).
    pub duration: Duration,
    /// Seed of the relay's randomness.
    pub seed: u64,
    /// Number of delay probes (`1..=100000`, 400 by default).
    pub delay_probes: u64,
    /// Number of loss probes; `None` picks enough to expect 400 losses
    /// (`20000..=2000000`).
    pub loss_probes: Option<u64>,
}

impl Default for CalibrateConfig {
    fn default() -> Self {
        CalibrateConfig {
            delay_ms: 20.0,
            bandwidth_mbit: 100.0,
            loss: 0.01,
            packet_bytes: 1200,
            duration: Duration::from_secs(3),
            seed: 1,
            delay_probes: 400,
            loss_probes: None,
        }
    }
}

impl CalibrateConfig {
    fn validate(&self) -> Result<(), CalibrateError> {
        let config_error = |field: &'static str, value: String, allowed: &'static str| {
            Err(CalibrateError::Config {
                field,
                value,
                allowed,
            })
        };
        // Link ranges are checked by LinkParams::validate in the passes.
        if !(PROBE_HEADER_BYTES..=65_507).contains(&self.packet_bytes) {
            return config_error("packet_bytes", self.packet_bytes.to_string(), "16..=65507");
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&self.duration) {
            return config_error("duration", format!("{:?}", self.duration), "100ms..=600s");
        }
        if !(1..=100_000).contains(&self.delay_probes) {
            return config_error("delay_probes", self.delay_probes.to_string(), "1..=100000");
        }
        if let Some(probes) = self.loss_probes {
            if !(1..=LOSS_PROBES_MAX).contains(&probes) {
                return config_error("loss_probes", probes.to_string(), "1..=2000000");
            }
        }
        Ok(())
    }

    fn loss_probes(&self) -> u64 {
        self.loss_probes.unwrap_or_else(|| {
            if self.loss <= 0.0 {
                LOSS_PROBES_MIN
            } else {
                ((LOSS_EXPECTED_DROPS / self.loss).ceil() as u64)
                    .clamp(LOSS_PROBES_MIN, LOSS_PROBES_MAX)
            }
        })
    }
}

/// Configured versus measured link behaviour.
///
/// ```
/// use diaspora_twin::CalibrationReport;
/// let report = CalibrationReport {
///     delay_ms_configured: 20.0, delay_ms_measured: 20.3,
///     bandwidth_mbit_configured: 100.0, bandwidth_mbit_measured: 99.0,
///     loss_configured: 0.01, loss_measured: 0.0105,
///     delay_probes_received: 400, bandwidth_bytes_received: 0, loss_probes_sent: 40_000,
///     notes: vec![],
/// };
/// assert!(report.within_targets());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationReport {
    /// Configured one-way delay, ms.
    pub delay_ms_configured: f64,
    /// Median measured one-way delay, ms.
    pub delay_ms_measured: f64,
    /// Configured bandwidth, Mbit/s.
    pub bandwidth_mbit_configured: f64,
    /// Measured steady-state payload rate at the receiver, Mbit/s.
    pub bandwidth_mbit_measured: f64,
    /// Configured loss probability.
    pub loss_configured: f64,
    /// Measured fraction of loss probes never received.
    pub loss_measured: f64,
    /// Delay probes that arrived.
    pub delay_probes_received: u64,
    /// Payload bytes received in the bandwidth pass.
    pub bandwidth_bytes_received: u64,
    /// Loss probes sent.
    pub loss_probes_sent: u64,
    /// Observations: spreads, drops outside the link model, missed targets.
    pub notes: Vec<String>,
}

impl CalibrationReport {
    /// Measured minus configured delay, ms.
    ///
    /// ```
    /// # let report = diaspora_twin::CalibrationReport { delay_ms_configured: 20.0, delay_ms_measured: 20.5, bandwidth_mbit_configured: 1.0, bandwidth_mbit_measured: 1.0, loss_configured: 0.0, loss_measured: 0.0, delay_probes_received: 1, bandwidth_bytes_received: 0, loss_probes_sent: 1, notes: vec![] };
    /// assert_eq!(report.delay_error_ms(), 0.5);
    /// ```
    pub fn delay_error_ms(&self) -> f64 {
        self.delay_ms_measured - self.delay_ms_configured
    }

    /// (measured − configured) / configured bandwidth.
    ///
    /// ```
    /// # let report = diaspora_twin::CalibrationReport { delay_ms_configured: 20.0, delay_ms_measured: 20.5, bandwidth_mbit_configured: 100.0, bandwidth_mbit_measured: 95.0, loss_configured: 0.0, loss_measured: 0.0, delay_probes_received: 1, bandwidth_bytes_received: 0, loss_probes_sent: 1, notes: vec![] };
    /// assert!((report.bandwidth_error_fraction() + 0.05).abs() < 1e-12);
    /// ```
    pub fn bandwidth_error_fraction(&self) -> f64 {
        (self.bandwidth_mbit_measured - self.bandwidth_mbit_configured)
            / self.bandwidth_mbit_configured
    }

    /// (measured − configured) / configured loss; with no configured loss,
    /// the measured loss itself.
    ///
    /// ```
    /// # let report = diaspora_twin::CalibrationReport { delay_ms_configured: 20.0, delay_ms_measured: 20.5, bandwidth_mbit_configured: 100.0, bandwidth_mbit_measured: 95.0, loss_configured: 0.01, loss_measured: 0.011, delay_probes_received: 1, bandwidth_bytes_received: 0, loss_probes_sent: 1, notes: vec![] };
    /// assert!((report.loss_error_fraction() - 0.1).abs() < 1e-9);
    /// ```
    pub fn loss_error_fraction(&self) -> f64 {
        if self.loss_configured > 0.0 {
            (self.loss_measured - self.loss_configured) / self.loss_configured
        } else {
            self.loss_measured
        }
    }

    /// Whether all three figures meet the fidelity targets: delay within
    /// ±1 ms, throughput within ±5 %, loss within ±20 % relative.
    ///
    /// ```
    /// # let report = diaspora_twin::CalibrationReport { delay_ms_configured: 20.0, delay_ms_measured: 22.0, bandwidth_mbit_configured: 100.0, bandwidth_mbit_measured: 100.0, loss_configured: 0.0, loss_measured: 0.0, delay_probes_received: 1, bandwidth_bytes_received: 0, loss_probes_sent: 1, notes: vec![] };
    /// assert!(!report.within_targets());
    /// ```
    pub fn within_targets(&self) -> bool {
        self.delay_error_ms().abs() <= DELAY_TARGET_MS
            && self.bandwidth_error_fraction().abs() <= BANDWIDTH_TARGET_FRACTION
            && self.loss_error_fraction().abs() <= LOSS_TARGET_FRACTION
    }
}

/// Why calibration could not run.
///
/// ```
/// use diaspora_twin::{calibrate, CalibrateConfig};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let err = calibrate(CalibrateConfig { packet_bytes: 8, ..CalibrateConfig::default() }).await.unwrap_err();
/// assert_eq!(err.to_string(), "calibration setting `packet_bytes` = 8 is out of range: allowed 16..=65507");
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    /// A calibration setting is out of range.
    #[error("calibration setting `{field}` = {value} is out of range: allowed {allowed}")]
    Config {
        /// The setting.
        field: &'static str,
        /// The rejected value.
        value: String,
        /// The allowed range.
        allowed: &'static str,
    },
    /// The relay could not start (including invalid link parameters).
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// A probe socket failed.
    #[error("calibration probe socket: {0}")]
    Io(#[from] io::Error),
    /// A pass received nothing, so nothing could be measured.
    #[error("calibration {pass} pass received no probes")]
    NoProbes {
        /// The pass.
        pass: &'static str,
    },
}

/// One received probe.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    seq: u64,
    sent_ns: u64,
    received_ns: u64,
    bytes: usize,
}

struct PassResult {
    arrivals: Vec<Arrival>,
    sent: u64,
    stats: RelayStats,
}

/// Measures delay, bandwidth and loss through a relay configured from
/// `config`; see the [module docs](self) for the method. Takes about
/// `duration` plus one to two seconds. Needs a tokio runtime; the probe
/// sender and receiver run on blocking threads.
///
/// ```no_run
/// use diaspora_twin::{calibrate, CalibrateConfig};
/// # async fn f() {
/// let report = calibrate(CalibrateConfig::default()).await.unwrap();
/// println!("{}", serde_json::to_string_pretty(&report).unwrap());
/// # }
/// ```
pub async fn calibrate(config: CalibrateConfig) -> Result<CalibrationReport, CalibrateError> {
    config.validate()?;
    let full = LinkParams::default()
        .with_delay_ms(config.delay_ms)
        .with_bandwidth_mbit(config.bandwidth_mbit)
        .with_loss(config.loss);
    full.validate().map_err(RelayError::from)?;
    let bandwidth_bps = full.bandwidth_bps.unwrap_or(u64::MAX);
    let mut notes = Vec::new();

    // Pass 1: delay.
    let delay_params = LinkParams::default().with_delay_ms(config.delay_ms);
    let (probes, packet_bytes) = (config.delay_probes, config.packet_bytes);
    let pass = run_pass(
        delay_params,
        config.seed,
        config.delay_ms,
        move |socket, relay, epoch| {
            let mut buf = vec![0u8; packet_bytes];
            for seq in 0..probes {
                send_probe(socket, relay, epoch, seq, &mut buf)?;
                sleep_until(epoch + DELAY_PROBE_INTERVAL * (seq as u32 + 1));
            }
            Ok(probes)
        },
    )
    .await?;
    if pass.arrivals.is_empty() {
        return Err(CalibrateError::NoProbes { pass: "delay" });
    }
    let mut delays_ms: Vec<f64> = pass
        .arrivals
        .iter()
        .map(|a| a.received_ns.saturating_sub(a.sent_ns) as f64 / 1e6)
        .collect();
    delays_ms.sort_by(f64::total_cmp);
    let delay_ms_measured = quantile(&delays_ms, 0.5);
    notes.push(format!(
        "delay: {} of {} probes received; one-way ms p1 {:.3}, median {:.3}, p99 {:.3}",
        delays_ms.len(),
        pass.sent,
        quantile(&delays_ms, 0.01),
        delay_ms_measured,
        quantile(&delays_ms, 0.99),
    ));
    let delay_probes_received = delays_ms.len() as u64;

    // Pass 2: bandwidth.
    let bandwidth_params = LinkParams::default()
        .with_delay_ms(config.delay_ms)
        .with_bandwidth_bps(bandwidth_bps);
    let drain_ms =
        config.delay_ms + bandwidth_params.queue_bytes_max as f64 * 8e3 / bandwidth_bps as f64;
    let (duration, offered_bps) = (config.duration, bandwidth_bps as f64 * OVERLOAD_FACTOR);
    let pass = run_pass(
        bandwidth_params,
        config.seed,
        drain_ms,
        move |socket, relay, epoch| {
            let mut buf = vec![0u8; packet_bytes];
            let bytes_per_ns = offered_bps / 8e9;
            let (mut seq, mut sent_bytes) = (0u64, 0f64);
            loop {
                let elapsed = epoch.elapsed();
                if elapsed >= duration {
                    return Ok(seq);
                }
                let allowed = elapsed.as_nanos() as f64 * bytes_per_ns;
                if sent_bytes >= allowed {
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                }
                while sent_bytes < allowed {
                    send_probe(socket, relay, epoch, seq, &mut buf)?;
                    seq += 1;
                    sent_bytes += packet_bytes as f64;
                }
            }
        },
    )
    .await?;
    let bandwidth_bytes_received: u64 = pass.arrivals.iter().map(|a| a.bytes as u64).sum();
    let bandwidth_mbit_measured = steady_rate_bps(&pass.arrivals)
        .ok_or(CalibrateError::NoProbes { pass: "bandwidth" })?
        / 1e6;
    let up = pass.stats.up;
    let outside_model = pass
        .sent
        .saturating_sub(pass.arrivals.len() as u64)
        .saturating_sub(up.dropped_total().packets - up.dropped_held_full.packets);
    notes.push(format!(
        "bandwidth: offered {:.1} Mbit/s for {:?}; {} packets sent, {} received, {} dropped by the queue, {} lost outside the link model",
        offered_bps / 1e6,
        duration,
        pass.sent,
        pass.arrivals.len(),
        up.dropped_queue_full.packets,
        outside_model,
    ));
    if outside_model > 0 {
        notes.push(format!(
            "bandwidth: {outside_model} packets were lost outside the link model (relay held-bytes limit: {}, the rest in kernel socket buffers): the relay or load generator could not keep up",
            up.dropped_held_full.packets
        ));
    }

    // Pass 3: loss.
    let loss_params = LinkParams::default().with_loss(config.loss);
    let probes = config.loss_probes();
    let pass = run_pass(
        loss_params,
        config.seed,
        0.0,
        move |socket, relay, epoch| {
            let mut buf = vec![0u8; LOSS_PROBE_BYTES];
            let mut seq = 0;
            while seq < probes {
                let allowed = (epoch.elapsed().as_nanos() as u64 * LOSS_PROBES_PER_S
                    / 1_000_000_000)
                    .min(probes);
                if seq >= allowed {
                    std::thread::sleep(Duration::from_micros(200));
                }
                while seq < allowed {
                    send_probe(socket, relay, epoch, seq, &mut buf)?;
                    seq += 1;
                }
            }
            Ok(probes)
        },
    )
    .await?;
    let mut seen = vec![false; pass.sent as usize];
    for arrival in &pass.arrivals {
        if let Some(slot) = seen.get_mut(arrival.seq as usize) {
            *slot = true;
        }
    }
    let received = seen.iter().filter(|seen| **seen).count() as u64;
    let loss_measured = 1.0 - received as f64 / pass.sent as f64;
    let model_drops = pass.stats.up.dropped_loss.packets;
    notes.push(format!(
        "loss: {} probes sent, {received} received, {model_drops} dropped by the link model, {} lost elsewhere",
        pass.sent,
        (pass.sent - received).saturating_sub(model_drops),
    ));

    let report = CalibrationReport {
        delay_ms_configured: config.delay_ms,
        delay_ms_measured,
        bandwidth_mbit_configured: bandwidth_bps as f64 / 1e6,
        bandwidth_mbit_measured,
        loss_configured: config.loss,
        loss_measured,
        delay_probes_received,
        bandwidth_bytes_received,
        loss_probes_sent: pass.sent,
        notes,
    };
    let mut misses = Vec::new();
    if report.delay_error_ms().abs() > DELAY_TARGET_MS {
        misses.push(format!(
            "delay off by {:+.3} ms (target ±{DELAY_TARGET_MS} ms)",
            report.delay_error_ms()
        ));
    }
    if report.bandwidth_error_fraction().abs() > BANDWIDTH_TARGET_FRACTION {
        misses.push(format!(
            "throughput off by {:+.1} % (target ±{} %)",
            report.bandwidth_error_fraction() * 100.0,
            BANDWIDTH_TARGET_FRACTION * 100.0
        ));
    }
    if report.loss_error_fraction().abs() > LOSS_TARGET_FRACTION {
        misses.push(format!(
            "loss off by {:+.1} % relative (target ±{} %)",
            report.loss_error_fraction() * 100.0,
            LOSS_TARGET_FRACTION * 100.0
        ));
    }
    let mut report = report;
    report.notes.extend(
        misses
            .into_iter()
            .map(|miss| format!("target missed: {miss}")),
    );
    Ok(report)
}

/// Runs one pass: a relay with `params` in front of a recording receiver,
/// `sender` on a blocking thread, then `drain_ms` (plus a margin) for the
/// relay to empty before the receiver stops.
async fn run_pass<F>(
    params: LinkParams,
    seed: u64,
    drain_ms: f64,
    sender: F,
) -> Result<PassResult, CalibrateError>
where
    F: FnOnce(&StdUdpSocket, SocketAddr, Instant) -> io::Result<u64> + Send + 'static,
{
    let localhost: SocketAddr = (std::net::Ipv4Addr::LOCALHOST, 0).into();
    let receiver = probe_socket(localhost)?;
    receiver.set_read_timeout(Some(Duration::from_millis(20)))?;
    let relay = Relay::start(RelayConfig {
        up: params,
        seed,
        ..RelayConfig::new(localhost, receiver.local_addr()?)
    })
    .await?;
    let relay_addr = relay.local_addr();
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));

    let receive = {
        let stop = Arc::clone(&stop);
        tokio::task::spawn_blocking(move || receive_probes(&receiver, epoch, &stop))
    };
    let send = tokio::task::spawn_blocking(move || {
        let socket = probe_socket(localhost)?;
        sender(&socket, relay_addr, epoch)
    });
    let sent = send.await.map_err(io::Error::other)??;
    tokio::time::sleep(
        Duration::from_secs_f64(drain_ms.max(0.0) / 1e3) + Duration::from_millis(100),
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let arrivals = receive.await.map_err(io::Error::other)?;
    let stats = relay.stats();
    relay.shutdown().await;
    Ok(PassResult {
        arrivals,
        sent,
        stats,
    })
}

fn probe_socket(addr: SocketAddr) -> io::Result<StdUdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(8 << 20);
    let _ = socket.set_send_buffer_size(8 << 20);
    socket.bind(&addr.into())?;
    let socket: StdUdpSocket = socket.into();
    let _ = rxtime::enable(&socket);
    Ok(socket)
}

fn send_probe(
    socket: &StdUdpSocket,
    to: SocketAddr,
    epoch: Instant,
    seq: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
    socket.send_to(buf, to).map(drop)
}

fn receive_probes(socket: &StdUdpSocket, epoch: Instant, stop: &AtomicBool) -> Vec<Arrival> {
    let mut arrivals = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let fd = socket.as_raw_fd();
    loop {
        match rxtime::recv_from(fd, &mut buf) {
            Ok(rxtime::Received { len, age, .. }) if len >= PROBE_HEADER_BYTES => {
                // Arrival is when the kernel received the probe, not when
                // this thread woke to read it.
                let received_ns = epoch.elapsed().saturating_sub(age).as_nanos() as u64;
                let word =
                    |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or([0; 8]));
                arrivals.push(Arrival {
                    seq: word(0),
                    sent_ns: word(8),
                    received_ns,
                    bytes: len,
                });
            }
            Ok(_) => {}
            // Timed out (or failed): stop once told to and the socket is quiet.
            Err(_) if stop.load(Ordering::SeqCst) => return arrivals,
            Err(_) => {}
        }
    }
}

fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Received payload rate over the arrivals after the warm-up part of the
/// arrival span, in bit/s: bytes after the first windowed arrival divided by
/// the time from it to the last arrival.
fn steady_rate_bps(arrivals: &[Arrival]) -> Option<f64> {
    let first = arrivals.first()?.received_ns;
    let last = arrivals.last()?.received_ns;
    let window_start = first + ((last - first) as f64 * WARMUP_FRACTION) as u64;
    let window: Vec<&Arrival> = arrivals
        .iter()
        .filter(|a| a.received_ns >= window_start)
        .collect();
    let (head, rest) = window.split_first()?;
    let span_ns = last
        .checked_sub(head.received_ns)
        .filter(|span| *span > 0)?;
    let bytes: u64 = rest.iter().map(|a| a.bytes as u64).sum();
    Some(bytes as f64 * 8e9 / span_ns as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_of_evenly_spaced_arrivals() {
        // 1000-byte packets every 80 µs: 100 Mbit/s.
        let arrivals: Vec<Arrival> = (0..1000)
            .map(|i| Arrival {
                seq: i,
                sent_ns: 0,
                received_ns: i * 80_000,
                bytes: 1000,
            })
            .collect();
        let rate = steady_rate_bps(&arrivals).unwrap();
        assert!((rate - 100e6).abs() < 1.0, "{rate}");
    }

    #[test]
    fn loss_probe_count_follows_loss() {
        let config = |loss| CalibrateConfig {
            loss,
            ..CalibrateConfig::default()
        };
        assert_eq!(config(0.01).loss_probes(), 40_000);
        assert_eq!(config(0.001).loss_probes(), 400_000);
        assert_eq!(config(0.05).loss_probes(), 20_000);
        assert_eq!(config(0.0).loss_probes(), 20_000);
    }

    #[test]
    fn quantile_nearest_rank() {
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.5), 2.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
