//! `diaspora bridge`: mirror a topic from one node to another. The bridge
//! runs in `diaspora-fabric` ([`Bridge`]); this starts it, prints its
//! counters and stops it at the signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use diaspora_fabric::{Bridge, BridgeConfig, Client, ClientConfig, Congestion};

use super::{check_ca, stop_on_signal, MetricsArgs, DEFAULT_CA};

/// Arguments of `diaspora bridge`.
#[derive(Args)]
pub struct BridgeArgs {
    /// `bridge.*` and QUIC path metrics.
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Source, as HOST:PORT/TOPIC (data-plane address of the source node).
    #[arg(long, value_name = "ADDR/TOPIC")]
    from: String,
    /// Target, as HOST:PORT/TOPIC; the topic must exist with at least the source's partitions.
    #[arg(long, value_name = "ADDR/TOPIC")]
    to: String,
    /// Bridge name: its position is kept on the source as group `bridge.NAME`.
    /// Keep it stable across restarts (default: derived from the topics).
    #[arg(long)]
    name: Option<String>,
    /// CA of the source node (default: --ca).
    #[arg(long)]
    from_ca: Option<PathBuf>,
    /// CA of the target node (default: --ca).
    #[arg(long)]
    to_ca: Option<PathBuf>,
    /// CA for both nodes when they share one.
    #[arg(long, default_value = DEFAULT_CA)]
    ca: PathBuf,
    /// The bridge's client certificate at the source (needs --from-cert-key).
    #[arg(long, requires = "from_cert_key", env = "DIASPORA_FROM_CERT")]
    from_cert: Option<PathBuf>,
    /// Private key of --from-cert.
    #[arg(long, requires = "from_cert", env = "DIASPORA_FROM_CERT_KEY")]
    from_cert_key: Option<PathBuf>,
    /// The bridge's bearer token at the source (it reads the topic and
    /// commits group `bridge.NAME` there).
    #[arg(long, env = "DIASPORA_FROM_TOKEN", hide_env_values = true)]
    from_token: Option<String>,
    /// The bridge's client certificate at the target (needs --to-cert-key).
    #[arg(long, requires = "to_cert_key", env = "DIASPORA_TO_CERT")]
    to_cert: Option<PathBuf>,
    /// Private key of --to-cert.
    #[arg(long, requires = "to_cert", env = "DIASPORA_TO_CERT_KEY")]
    to_cert_key: Option<PathBuf>,
    /// The bridge's bearer token at the target (it writes the topic there).
    #[arg(long, env = "DIASPORA_TO_TOKEN", hide_env_values = true)]
    to_token: Option<String>,
    /// Print counters to stderr this often, seconds (0 = only at exit).
    #[arg(long, default_value_t = 5)]
    stats_interval_s: u64,
    /// Commit the mirrored position to the source at most this often, ms.
    /// After a crash the bridge re-sends what was acknowledged since; the
    /// target recognises those batches, so a longer interval costs only re-sends.
    #[arg(long, default_value_t = 200)]
    commit_interval_ms: u64,
    /// Congestion controller of the bridge's connections: tolerant (the
    /// default: keeps a long path with random or bursty loss full, where
    /// Cubic is held to a few Mbit/s), bbr, cubic or new-reno. See
    /// BENCHMARKS.md "WAN goodput".
    #[arg(long, default_value_t = Congestion::default())]
    congestion: Congestion,
    /// QUIC connections to each node; the partitions are spread over them.
    /// More than one helps where a single flow is held back by loss or by
    /// one core (default: cores, 2..=4).
    #[arg(long)]
    connections: Option<usize>,
}

fn parse_endpoint(s: &str) -> Result<(SocketAddr, String)> {
    let (addr, topic) = s
        .split_once('/')
        .with_context(|| format!("'{s}' is not HOST:PORT/TOPIC"))?;
    use std::net::ToSocketAddrs;
    let addr = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("cannot resolve '{addr}' in '{s}' (expected HOST:PORT/TOPIC)"))?;
    anyhow::ensure!(!topic.is_empty(), "'{s}' names no topic after the '/'");
    Ok((addr, topic.to_string()))
}

/// Mirrors a topic until SIGTERM or Ctrl-C.
pub async fn run(a: BridgeArgs) -> Result<()> {
    let (from_addr, from_topic) = parse_endpoint(&a.from)?;
    let (to_addr, to_topic) = parse_endpoint(&a.to)?;
    let from_ca = a.from_ca.unwrap_or_else(|| a.ca.clone());
    let to_ca = a.to_ca.unwrap_or_else(|| a.ca.clone());
    check_ca(&from_ca)?;
    check_ca(&to_ca)?;
    let name = a
        .name
        .unwrap_or_else(|| format!("{from_topic}-to-{to_topic}"));
    anyhow::ensure!(
        a.connections.is_none_or(|n| (1..=64).contains(&n)),
        "--connections must be 1..=64"
    );
    // Each side sees the bridge as its own identity there.
    let identity = |cert: &Option<PathBuf>, key: &Option<PathBuf>| match (cert, key) {
        (Some(cert), Some(key)) => Some(diaspora_fabric::tls::ClientIdentity {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let from_identity = identity(&a.from_cert, &a.from_cert_key);
    let to_identity = identity(&a.to_cert, &a.to_cert_key);
    let client_config = |addr, ca: &PathBuf, id: &Option<_>, token: &Option<String>| {
        let mut c = ClientConfig::new(addr, ca);
        c.congestion = a.congestion;
        if let Some(n) = a.connections {
            c.connections = n;
        }
        c.identity = id.clone();
        c.token = token.clone();
        c
    };
    let from_config = client_config(from_addr, &from_ca, &from_identity, &a.from_token);
    let to_config = client_config(to_addr, &to_ca, &to_identity, &a.to_token);
    let mut config = BridgeConfig::new(
        &name,
        from_config.clone(),
        &from_topic,
        to_config.clone(),
        &to_topic,
    );
    config.commit_interval = Duration::from_millis(a.commit_interval_ms.max(1));
    let bridge = Bridge::start(config).await?;
    eprintln!(
        "bridge '{name}': {from_addr}/{from_topic} → {to_addr}/{to_topic}, {} partition(s), congestion {}",
        bridge.partitions(),
        a.congestion
    );
    let publisher = if a.metrics.metrics_interval_ms > 0 {
        // The bridge's counters, and the QUIC path to the target as a
        // connection of its own sees it (RTT, congestion window, loss).
        let registry = diaspora_telemetry::Registry::new();
        diaspora_telemetry::collect_bridge(&registry, &name, bridge.stats().clone())?;
        let to_client = Client::connect(to_config).await?;
        diaspora_telemetry::collect_quic(&registry, &to_addr.to_string(), to_client)?;
        let client = Client::connect(from_config).await?;
        a.metrics
            .start(
                client,
                format!("bridge:{name}"),
                registry,
                diaspora_telemetry::publish::TopicCreation::MustExist,
            )
            .await?
    } else {
        None
    };
    let label = format!("bridge '{name}'");
    let failed = wait_for_signal(&bridge, &label, a.stats_interval_s).await?;
    if let Some(p) = publisher {
        p.stop().await;
    }
    finish(bridge, &label, failed).await
}

/// One line of a bridge's counters, `LABEL: forwarded …`.
fn report_line(label: &str, stats: &diaspora_fabric::BridgeStats) -> String {
    let o = std::sync::atomic::Ordering::Relaxed;
    format!(
        "{label}: forwarded {} items, {} duplicate batches absorbed, {} reconnects, {} commits",
        stats.forwarded.load(o),
        stats.duplicates_absorbed.load(o),
        stats.reconnects.load(o),
        stats.commits.load(o)
    )
}

/// Keeps a started bridge running until SIGTERM or Ctrl-C, printing its
/// counters every `stats_interval_s` (never when 0); returns the first
/// partition that stopped on an error, if any.
pub async fn wait_for_signal(
    bridge: &Bridge,
    label: &str,
    stats_interval_s: u64,
) -> Result<Option<(u32, String)>> {
    let stop = stop_on_signal()?;
    let every = (stats_interval_s > 0).then(|| Duration::from_secs(stats_interval_s));
    bridge
        .run_until(&stop, every, |s| eprintln!("{}", report_line(label, s)))
        .await;
    Ok(bridge.stats().failed.lock().first().cloned())
}

/// Stops a bridge (it commits its acknowledged position), prints its
/// counters, and fails if a partition had stopped.
pub async fn finish(bridge: Bridge, label: &str, failed: Option<(u32, String)>) -> Result<()> {
    let stats = bridge.stats().clone();
    bridge.stop().await;
    eprintln!("{}", report_line(label, &stats));
    if let Some((p, e)) = failed {
        bail!("partition {p} stopped: {e}");
    }
    Ok(())
}
