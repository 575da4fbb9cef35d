//! `diaspora bench wan`: bridge goodput over an emulated lossy WAN.
//!
//! Two nodes run in this process; the target sits behind the twin's UDP
//! relay ([`diaspora_twin::Relay`]), which applies the link model (rate,
//! one-way delay, random loss, optional Gilbert–Elliott bursts) in both
//! directions. A producer keeps the source topic a bounded backlog ahead
//! of a `diaspora bridge` (the library's [`Bridge`]) that mirrors it to the
//! target through the relay. Goodput is what the target acknowledged to the
//! bridge over the measured window, after a warm-up.
//!
//! Each round measures every configuration in turn (alternating, so drift
//! of the machine hits them alike): the baseline is one connection with
//! Cubic, the loss-based controller most stacks use; the others are the
//! bridge's defaults and any asked for.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use diaspora_fabric::item::payload_item;
use diaspora_fabric::{
    Bridge, BridgeConfig, Client, ClientConfig, Congestion, Node, NodeConfig, Producer,
    ProducerConfig, TopicSettings,
};
use diaspora_pool::bench::Spread;
use diaspora_twin::{GilbertElliott, LinkParams, Relay, RelayConfig};
use serde::Serialize;

/// Arguments of `diaspora bench wan`.
#[derive(Debug, Clone, clap::Args)]
pub struct WanBenchArgs {
    /// Link rate, Mbit/s.
    #[arg(long, default_value_t = 200.0)]
    pub rate_mbit: f64,
    /// One-way delay, ms (the RTT is twice this).
    #[arg(long, default_value_t = 25.0)]
    pub delay_ms: f64,
    /// Random loss per packet, both directions (0.01 = 1 %).
    #[arg(long, default_value_t = 0.01)]
    pub loss: f64,
    /// Add Gilbert–Elliott burst loss on top: bursts of ~`--burst-len`
    /// packets at 50 % loss, entered so that the bursts alone lose
    /// about `--burst-loss` of the packets.
    #[arg(long)]
    pub burst_loss: Option<f64>,
    /// Mean length of a loss burst, packets.
    #[arg(long, default_value_t = 10.0)]
    pub burst_len: f64,
    /// Configurations to measure besides the baseline, as
    /// CONTROLLER:CONNECTIONS (e.g. tolerant:1,tolerant:4,bbr:1,cubic:8).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "bbr:1,tolerant:1,tolerant:4"
    )]
    pub configs: Vec<String>,
    /// The baseline configuration.
    #[arg(long, default_value = "cubic:1")]
    pub baseline: String,
    /// Item size, bytes.
    #[arg(long, default_value_t = 65536)]
    pub size: usize,
    /// Partitions of the mirrored topic (connections above this carry nothing).
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Warm-up before measuring, s (slow start, BBR's startup).
    #[arg(long, default_value_t = 4.0)]
    pub warmup_s: f64,
    /// Measured window per configuration and round, s.
    #[arg(long, default_value_t = 15.0)]
    pub seconds: f64,
    /// Rounds (each measures every configuration once).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Seed of the link's randomness.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// JSON report.
    #[arg(long)]
    pub json: bool,
}

/// One configuration of the bridge's transport.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PathConfig {
    /// Congestion controller.
    #[serde(serialize_with = "as_name")]
    pub congestion: Congestion,
    /// QUIC connections to the target.
    pub connections: usize,
}

fn as_name<S: serde::Serializer>(c: &Congestion, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.name())
}

impl std::str::FromStr for PathConfig {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (c, n) = s.split_once(':').unwrap_or((s, "1"));
        let congestion: Congestion = c.parse().map_err(anyhow::Error::msg)?;
        let connections: usize = n
            .parse()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .with_context(|| format!("'{s}': connections must be 1..=64"))?;
        Ok(PathConfig {
            congestion,
            connections,
        })
    }
}

impl std::fmt::Display for PathConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.congestion, self.connections)
    }
}

/// One configuration's results.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigResult {
    /// The configuration.
    pub config: PathConfig,
    /// `CONTROLLER:CONNECTIONS`.
    pub name: String,
    /// Goodput (payload acknowledged by the target), Mbit/s.
    pub goodput_mbit: Spread,
    /// Median goodput ÷ link rate.
    pub fraction_of_link: f64,
    /// Median goodput ÷ the baseline's median goodput.
    pub ratio_to_baseline: f64,
    /// Packets the relay dropped by the link's random or burst loss per
    /// round (both directions).
    pub lost_packets: Vec<u64>,
    /// Packets the relay dropped because the bottleneck queue was full
    /// (the sender outran the link), per round.
    pub queue_drops: Vec<u64>,
    /// Packets the relay carried per round (both directions).
    pub packets: Vec<u64>,
}

/// Report of `diaspora bench wan`.
#[derive(Debug, Clone, Serialize)]
pub struct WanReport {
    /// Link rate, Mbit/s.
    pub rate_mbit: f64,
    /// RTT (twice the one-way delay), ms.
    pub rtt_ms: f64,
    /// Random loss per packet.
    pub loss: f64,
    /// Long-run burst loss of the Gilbert–Elliott chain, if any.
    pub burst_loss: Option<f64>,
    /// Mean burst length, packets (with `burst_loss`).
    pub burst_len: Option<f64>,
    /// The Mathis limit of one loss-based flow at this RTT and total loss
    /// (1 400 B segments), Mbit/s: what Cubic can be expected to reach.
    pub mathis_limit_mbit: f64,
    /// Item size, bytes.
    pub size: usize,
    /// Rounds.
    pub rounds: u32,
    /// Measured window, s.
    pub seconds: f64,
    /// The baseline (first) and the other configurations.
    pub configs: Vec<ConfigResult>,
}

/// The link's parameters in one direction.
fn link(a: &WanBenchArgs, rate: bool) -> LinkParams {
    let mut l = LinkParams::default()
        .with_delay_ms(a.delay_ms)
        .with_loss(a.loss);
    if rate {
        l.bandwidth_bps = Some((a.rate_mbit * 1e6) as u64);
        // One bandwidth-delay product of buffer at the bottleneck.
        let bdp = (a.rate_mbit * 1e6 / 8.0 * 2.0 * a.delay_ms / 1e3) as usize;
        l.queue_bytes_max = bdp.clamp(64 << 10, 64 << 20);
    }
    l.gilbert_elliott = a.burst_loss.map(|b| gilbert_elliott(b, a.burst_len));
    l
}

/// A two-state chain whose bad state loses half its packets, with bursts
/// `len` packets long on average, and `loss` lost overall by the bursts.
fn gilbert_elliott(loss: f64, len: f64) -> GilbertElliott {
    let p_bad_to_good = 1.0 / len.max(1.0);
    // Stationary P(bad) = g2b / (g2b + b2g); loss = 0.5 · P(bad).
    let p_bad = (2.0 * loss).clamp(0.0, 0.99);
    let p_good_to_bad = p_bad * p_bad_to_good / (1.0 - p_bad);
    GilbertElliott {
        p_good_to_bad,
        p_bad_to_good,
        loss_good: 0.0,
        loss_bad: 0.5,
    }
}

/// Runs the benchmark.
pub async fn run(a: &WanBenchArgs) -> Result<WanReport> {
    anyhow::ensure!(a.rate_mbit > 0.0, "--rate-mbit must be > 0");
    anyhow::ensure!(a.rounds > 0, "--rounds must be > 0");
    anyhow::ensure!(
        a.seconds > 0.0 && a.warmup_s >= 0.0,
        "--seconds must be > 0"
    );
    anyhow::ensure!(
        (1024..=(8 << 20)).contains(&a.size),
        "--size must be 1 KiB..=8 MiB"
    );
    anyhow::ensure!(
        (1..=64).contains(&a.partitions),
        "--partitions must be 1..=64"
    );
    let baseline: PathConfig = a.baseline.parse()?;
    let mut configs = vec![baseline];
    for c in &a.configs {
        let c: PathConfig = c.parse()?;
        if !configs.contains(&c) {
            configs.push(c);
        }
    }
    let mut goodput: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut dropped: Vec<Vec<u64>> = vec![Vec::new(); configs.len()];
    let mut queue: Vec<Vec<u64>> = vec![Vec::new(); configs.len()];
    let mut packets: Vec<Vec<u64>> = vec![Vec::new(); configs.len()];
    for round in 0..a.rounds {
        for (i, c) in configs.iter().enumerate() {
            let seed = a.seed.wrapping_add(u64::from(round) * 1000 + i as u64);
            let m = measure(a, *c, seed)
                .await
                .with_context(|| format!("round {}, {c}", round + 1))?;
            eprintln!(
                "round {}: {c:<10} {:>8.1} Mbit/s ({} of {} packets lost, {} dropped at a full queue)",
                round + 1,
                m.mbit,
                m.dropped,
                m.packets,
                m.queue_full
            );
            queue[i].push(m.queue_full);
            goodput[i].push(m.mbit);
            dropped[i].push(m.dropped);
            packets[i].push(m.packets);
        }
    }
    let base = Spread::of(goodput[0].clone()).median.max(1e-9);
    let total_loss = a.loss + a.burst_loss.unwrap_or(0.0);
    let mathis = if total_loss > 0.0 {
        1400.0 * 8.0 / (2.0 * a.delay_ms / 1e3).max(1e-3) * 1.22 / total_loss.sqrt() / 1e6
    } else {
        f64::INFINITY
    };
    Ok(WanReport {
        rate_mbit: a.rate_mbit,
        rtt_ms: 2.0 * a.delay_ms,
        loss: a.loss,
        burst_loss: a.burst_loss,
        burst_len: a.burst_loss.map(|_| a.burst_len),
        mathis_limit_mbit: mathis.min(a.rate_mbit),
        size: a.size,
        rounds: a.rounds,
        seconds: a.seconds,
        configs: configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let g = Spread::of(goodput[i].clone());
                ConfigResult {
                    config: *c,
                    name: c.to_string(),
                    goodput_mbit: g,
                    fraction_of_link: g.median / a.rate_mbit,
                    ratio_to_baseline: g.median / base,
                    lost_packets: dropped[i].clone(),
                    queue_drops: queue[i].clone(),
                    packets: packets[i].clone(),
                }
            })
            .collect(),
    })
}

/// The report as text.
pub fn text(r: &WanReport) -> String {
    let mut s = format!(
        "bridge over an emulated WAN: {} Mbit/s, RTT {} ms, {:.2} % random loss{}; \
         {} B items, {} round(s) of {} s (median, min–max)\n\
         Mathis limit of one loss-based flow: {:.1} Mbit/s\n",
        r.rate_mbit,
        r.rtt_ms,
        r.loss * 100.0,
        r.burst_loss
            .map(|b| format!(
                " + {:.2} % in bursts of ~{} packets",
                b * 100.0,
                r.burst_len.unwrap_or(0.0)
            ))
            .unwrap_or_default(),
        r.size,
        r.rounds,
        r.seconds,
        r.mathis_limit_mbit
    );
    for (i, c) in r.configs.iter().enumerate() {
        s.push_str(&format!(
            "{:<11} {:>8.1} Mbit/s ({:.1}–{:.1})  {:>5.1} % of link  {:>6.1}× {}\n",
            c.name,
            c.goodput_mbit.median,
            c.goodput_mbit.min,
            c.goodput_mbit.max,
            c.fraction_of_link * 100.0,
            c.ratio_to_baseline,
            if i == 0 { "(baseline)" } else { "the baseline" }
        ));
    }
    s.pop();
    s
}

struct Measured {
    mbit: f64,
    dropped: u64,
    queue_full: u64,
    packets: u64,
}

/// One configuration once: fresh nodes, relay and bridge.
async fn measure(a: &WanBenchArgs, c: PathConfig, seed: u64) -> Result<Measured> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let node = |name: &str| {
        let mut cfg = NodeConfig::new(dir.path().join(name));
        cfg.admin_listen = None;
        cfg.congestion = c.congestion;
        cfg
    };
    let source = Node::start(node("edge")).await?;
    let target = Node::start(node("hpc")).await?;
    let settings = TopicSettings::with_partitions(a.partitions);
    diaspora_fabric::ensure_topic(source.broker(), "wan", &settings).await?;
    diaspora_fabric::ensure_topic(target.broker(), "wan", &settings).await?;

    let mut relay_cfg = RelayConfig::new("127.0.0.1:0".parse()?, target.data_addr());
    relay_cfg.up = link(a, true);
    relay_cfg.down = link(a, false);
    relay_cfg.seed = seed;
    let relay = Relay::start(relay_cfg).await?;

    // The producer keeps the source at most `backlog` items ahead of the
    // bridge, so the WAN, not the source, is the bottleneck.
    let local = Client::connect(ClientConfig::new(source.data_addr(), source.ca_file())).await?;
    let producer = Producer::new(&local, ProducerConfig::new("wan")).await?;
    let payload = diaspora_fabric::pipe::synthetic_payload(a.size);

    let mut to = ClientConfig::new(relay.local_addr(), target.ca_file());
    to.congestion = c.congestion;
    to.connections = c.connections;
    let mut from = ClientConfig::new(source.data_addr(), source.ca_file());
    from.congestion = c.congestion;
    let bridge = Bridge::start(BridgeConfig::new("wan-bench", from, "wan", to, "wan")).await?;
    let stats = bridge.stats().clone();

    let backlog = ((64usize << 20) / a.size).max(64) as u64;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if sent >= stats.forwarded.load(Ordering::Relaxed) + backlog {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                producer
                    .send_unacked(None, payload_item(payload.clone()))
                    .await?;
                sent += 1;
            }
            producer.flush().await?;
            producer.close().await?;
            anyhow::Ok(())
        })
    };

    tokio::time::sleep(Duration::from_secs_f64(a.warmup_s)).await;
    let (f0, s0, t0) = (
        stats.forwarded.load(Ordering::Relaxed),
        relay.stats(),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs_f64(a.seconds)).await;
    let (f1, s1, elapsed) = (
        stats.forwarded.load(Ordering::Relaxed),
        relay.stats(),
        t0.elapsed().as_secs_f64(),
    );
    stop.store(true, Ordering::Relaxed);
    if let Some((p, e)) = stats.failed.lock().first().cloned() {
        anyhow::bail!("bridge partition {p} stopped: {e}");
    }
    let feed = feeder.await.context("feeder task")?;
    bridge.stop().await;
    relay.shutdown().await;
    drop(local);
    source.shutdown().await;
    target.shutdown().await;
    feed?;
    let dropped = |s: &diaspora_twin::RelayStats| {
        s.up.dropped_loss.packets
            + s.up.dropped_burst_loss.packets
            + s.down.dropped_loss.packets
            + s.down.dropped_burst_loss.packets
    };
    let queue_full = |s: &diaspora_twin::RelayStats| {
        s.up.dropped_queue_full.packets
            + s.up.dropped_held_full.packets
            + s.down.dropped_queue_full.packets
            + s.down.dropped_held_full.packets
    };
    let carried = |s: &diaspora_twin::RelayStats| s.up.received.packets + s.down.received.packets;
    Ok(Measured {
        mbit: (f1 - f0) as f64 * a.size as f64 * 8.0 / elapsed / 1e6,
        dropped: dropped(&s1) - dropped(&s0),
        queue_full: queue_full(&s1) - queue_full(&s0),
        packets: carried(&s1) - carried(&s0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_configs_parse_and_refuse_nonsense() {
        let c: PathConfig = "bbr:4".parse().unwrap();
        assert_eq!((c.congestion, c.connections), (Congestion::Bbr, 4));
        let c: PathConfig = "cubic".parse().unwrap();
        assert_eq!((c.congestion, c.connections), (Congestion::Cubic, 1));
        assert!("bbr:0".parse::<PathConfig>().is_err());
        assert!("vegas:1".parse::<PathConfig>().is_err());
    }

    #[test]
    fn the_burst_chain_loses_what_was_asked_in_bursts_of_the_asked_length() {
        let ge = gilbert_elliott(0.003, 10.0);
        assert!((ge.stationary_loss() - 0.003).abs() < 1e-9);
        assert!((1.0 / ge.p_bad_to_good - 10.0).abs() < 1e-9);
    }
}
