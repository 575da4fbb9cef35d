//! `diaspora bench …`: the end-to-end benchmarks. Each runs in its crate
//! (`diaspora_fabric::bench`, `diaspora_stream::bench`,
//! `diaspora_predict::bench`); this turns the flags into its configuration
//! and prints the report.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use diaspora_fabric::bench::FabricBenchConfig;
use diaspora_fabric::FsyncPolicy;
use diaspora_provenance::lineage::{LineageRecorder, RecorderConfig};
use diaspora_provenance::Provenance;
use diaspora_stream::bench::{BenchLineage, StreamBenchConfig};
use diaspora_stream::producer::AckHook;

use super::print_report;

/// The subcommands of `diaspora bench`.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// End-to-end producer → node → consumer over QUIC loopback, with a plain-quinn baseline.
    Fabric(FabricBenchArgs),
    /// The QoS stream layer's overhead against the raw fabric client, in the same run.
    Stream(StreamBenchArgs),
    /// The LSTM forecaster: batched inference per series-step (against
    /// one series per call), and one online training step.
    Predict(super::predict::BenchArgs),
    /// Ptychography: ePIE against NumPy on the same frames, and the
    /// surrogate against ePIE (speed and phase SSIM).
    Ptycho(super::ptycho::BenchArgs),
    /// Compute pools: empty tasks through a pool of worker processes
    /// against the same tasks on a plain consumer group, and the time to
    /// replace a SIGKILLed worker.
    Pool(PoolBenchArgs),
    /// A bridge over an emulated lossy WAN (the twin's relay): goodput
    /// against the link rate and against one Cubic connection, same run.
    Wan(super::wan::WanBenchArgs),
    /// The fabric against NATS JetStream and Redis Streams: one acknowledged
    /// producer → one consumer, same workloads, same run (needs the `peers`
    /// feature and the servers from ./scripts/peers-install).
    Peers(PeersArgs),
    /// Tenant isolation: a quiet tenant's produce throughput alone and
    /// beside a neighbour held to its produce quota, same run.
    Tenants(TenantsBenchArgs),
    /// The Kafka bridge (fabric → Kafka) against a plain Kafka producer
    /// writing the same records to the same broker, same run: items/s and
    /// MB/s at 1 KiB and 1 MiB. Starts a Tansu broker unless --bootstrap.
    KafkaBridge(KafkaBenchArgs),
    /// The Python client (pydiaspora, run as `python -m pydiaspora.bench`)
    /// against the Rust client on the same node, same run: items/s and
    /// MB/s producing and consuming at 128 B and 1 MiB.
    Python(super::pybench::PythonBenchArgs),
}

/// Arguments of `diaspora bench kafka-bridge`.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaBenchArgs {
    /// Items of 1 KiB per round (0: leave this size out).
    #[arg(long, default_value_t = 20_000)]
    pub items_1kib: u64,
    /// Items of 1 MiB per round (0: leave this size out).
    #[arg(long, default_value_t = 200)]
    pub items_1mib: u64,
    /// Rounds; the bridge and the plain producer alternate going first.
    /// Medians (min–max) are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 2)]
    pub partitions: u32,
    /// A Kafka-API broker to bench against (HOST:PORT, plaintext) instead
    /// of a Tansu started for the run.
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// The Tansu binary.
    #[arg(long, env = "DIASPORA_TANSU", default_value = "tansu")]
    pub tansu: std::path::PathBuf,
    /// A run fails when nothing is acknowledged for this long, seconds.
    #[arg(long, default_value_t = 60)]
    pub stall_timeout_s: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `diaspora bench kafka-bridge`.
pub async fn kafka_bridge(a: KafkaBenchArgs) -> Result<()> {
    let workloads: Vec<(usize, u64)> = [(1024, a.items_1kib), (1 << 20, a.items_1mib)]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    anyhow::ensure!(
        !workloads.is_empty(),
        "no items to bench (--items-1kib and --items-1mib are 0)"
    );
    let r = diaspora_kafka::bench::run(&diaspora_kafka::bench::KafkaBenchConfig {
        workloads,
        rounds: a.rounds,
        partitions: a.partitions,
        bootstrap: a.bootstrap.clone(),
        tansu: a.tansu.clone(),
        stall_timeout: std::time::Duration::from_secs(a.stall_timeout_s.max(1)),
    })
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    print_report(&r, a.json, |r| {
        let mut out = format!(
            "kafka bridge vs a plain producer, {}, {} partition(s), {} round(s), medians (min–max):",
            r.broker, r.partitions, r.rounds
        );
        for row in &r.rows {
            out.push_str(&format!(
                "\n  {} B × {}: bridge {} items/s = {} MB/s; plain {} items/s = {} MB/s; bridge/plain {:.2}",
                row.size,
                row.items,
                row.bridge_items_per_s.text(0),
                row.bridge_mb_per_s.text(1),
                row.plain_items_per_s.text(0),
                row.plain_mb_per_s.text(1),
                row.ratio_to_plain
            ));
        }
        out
    })
}

/// Arguments of `diaspora bench tenants`.
#[derive(Debug, Clone, clap::Args)]
pub struct TenantsBenchArgs {
    /// Payload bytes per item.
    #[arg(long, default_value_t = 65536)]
    pub size: usize,
    /// Bytes each tenant produces per round.
    #[arg(long, default_value_t = 100_000_000)]
    pub bytes: u64,
    /// Rounds (quiet alone, then quiet beside noisy), alternating.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// The noisy tenant's produce quota, bytes/s.
    #[arg(long, default_value_t = 20_000_000)]
    pub quota_bytes_per_s: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `diaspora bench tenants`.
pub async fn tenants(a: TenantsBenchArgs) -> Result<()> {
    let r = diaspora_fabric::bench::tenants(&diaspora_fabric::bench::TenantsBenchConfig {
        size: a.size,
        bytes: a.bytes,
        rounds: a.rounds,
        quota_bytes_per_s: a.quota_bytes_per_s,
    })
    .await?;
    print_report(&r, a.json, |r| {
        format!(
            "tenants, {} B items, {} MB per round, noisy quota {:.1} MB/s: quiet alone {:.1} MB/s, beside noisy {:.1} MB/s (medians) → slowdown {:.1} %; noisy got {:.2}× its quota",
            r.size,
            r.bytes / 1_000_000,
            r.quota_bytes_per_s as f64 / 1e6,
            diaspora_fabric::bench::median(&r.quiet_alone_mb_per_s),
            diaspora_fabric::bench::median(&r.quiet_with_noisy_mb_per_s),
            r.quiet_slowdown_pct,
            r.noisy_over_quota
        )
    })
}

/// Arguments of `diaspora bench peers`. They exist in every build (so
/// `--help` shows them); running needs the `peers` feature.
#[derive(Debug, Clone, clap::Args)]
pub struct PeersArgs {
    /// Systems to compare (diaspora, nats, redis), in the first round's order.
    #[arg(long, value_delimiter = ',', default_value = "diaspora,nats,redis")]
    pub systems: Vec<String>,
    /// Workloads as SIZExITEMS, SIZE in B, KiB or MiB.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "128x2000000,1KiBx500000,1MiBx2000"
    )]
    pub workloads: Vec<String>,
    /// Multiplies every workload's item count (e.g. 0.01 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Rounds; each runs every workload on every system with a fresh
    /// server, the systems' order rotating. Medians (min–max) are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Most unacknowledged items of the producer (every system).
    #[arg(long, default_value_t = 5000)]
    pub window_items: usize,
    /// Most unacknowledged payload bytes of the producer (B, KiB or MiB).
    #[arg(long, default_value = "64MiB")]
    pub window_bytes: String,
    /// Most payload bytes one read of the consumer asks for (B, KiB or MiB).
    #[arg(long, default_value = "4MiB")]
    pub fetch_bytes: String,
    /// Items sent in the paced run's first this-many ms are left out of
    /// the latency percentiles (at most half the items).
    #[arg(long, default_value_t = 500)]
    pub warmup_ms: u64,
    /// A run fails when nothing is acknowledged or received for this long.
    #[arg(long, default_value_t = 60)]
    pub stall_timeout_s: u64,
    /// Run each diaspora node as `PATH serve` in its own process instead
    /// of embedded in this one.
    #[arg(long, value_name = "PATH")]
    pub diaspora_binary: Option<std::path::PathBuf>,
    /// nats-server to run (default: the newest on PATH).
    #[arg(long, value_name = "PATH")]
    pub nats_server: Option<std::path::PathBuf>,
    /// redis-server to run (default: the one on PATH).
    #[arg(long, value_name = "PATH")]
    pub redis_server: Option<std::path::PathBuf>,
    /// Run NATS and Redis without TLS (diaspora always has it).
    #[arg(long)]
    pub plain_peers: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(feature = "peers")]
impl PeersArgs {
    /// The benchmark's configuration (validated).
    pub fn config(&self) -> Result<diaspora_peers::PeersConfig> {
        use diaspora_peers::{parse_size, PeersConfig, Workload};
        let bytes = |flag: &str, v: &str| {
            parse_size(v).with_context(|| format!("--{flag} {v:?}: expected bytes, KiB or MiB"))
        };
        let config = PeersConfig {
            systems: PeersConfig::parse_systems(&self.systems)?,
            workloads: self
                .workloads
                .iter()
                .map(|w| w.parse::<Workload>())
                .collect::<Result<_, _>>()?,
            scale: self.scale,
            rounds: self.rounds,
            window_items_max: self.window_items,
            window_bytes_max: bytes("window-bytes", &self.window_bytes)?,
            fetch_bytes_max: bytes("fetch-bytes", &self.fetch_bytes)?,
            warmup: std::time::Duration::from_millis(self.warmup_ms),
            stall_timeout: std::time::Duration::from_secs(self.stall_timeout_s),
            diaspora_binary: self.diaspora_binary.clone(),
            nats_server: self.nats_server.clone(),
            redis_server: self.redis_server.clone(),
            plain_peers: self.plain_peers,
        };
        config.validate()?;
        Ok(config)
    }
}

/// `diaspora bench peers`; progress lines go to stderr, the report to
/// stdout. SIGTERM or Ctrl-C drops the run, whose guards stop the servers
/// and remove their directories.
#[cfg(feature = "peers")]
pub async fn peers(a: PeersArgs) -> Result<()> {
    let config = a.config()?;
    let stop = super::shutdown_signal()?;
    let mut progress = |line: &str| eprintln!("{line}");
    let report = tokio::select! {
        r = diaspora_peers::run(&config, &mut progress) => r?,
        _ = stop => anyhow::bail!("bench peers interrupted: servers stopped"),
    };
    print_report(&report, a.json, |r| r.to_string())
}

/// `diaspora bench peers` in a build without the `peers` feature.
#[cfg(not(feature = "peers"))]
pub async fn peers(_a: PeersArgs) -> Result<()> {
    anyhow::bail!(
        "bench peers needs the peers feature: cargo run --release --features peers -- bench peers"
    )
}

/// `diaspora bench wan`.
pub async fn wan(a: super::wan::WanBenchArgs) -> Result<()> {
    let r = super::wan::run(&a).await?;
    print_report(&r, a.json, super::wan::text)
}

/// Arguments of `diaspora bench pool`.
#[derive(Debug, Clone, clap::Args)]
pub struct PoolBenchArgs {
    /// Workers in the pool (and members of the baseline group).
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// Empty tasks per round.
    #[arg(long, default_value_t = 5000)]
    pub tasks: u64,
    /// Rounds of each (alternating).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Workers SIGKILLed (one after another) to time their replacement.
    #[arg(long, default_value_t = 5)]
    pub kills: u32,
    /// JSON report.
    #[arg(long)]
    pub json: bool,
}

/// `diaspora bench pool`.
pub async fn pool(a: PoolBenchArgs) -> Result<()> {
    let program = std::env::current_exe().context("locating this binary for the workers")?;
    let r = diaspora_pool::bench::run(diaspora_pool::bench::PoolBenchConfig {
        program,
        workers: a.workers,
        tasks: a.tasks,
        rounds: a.rounds,
        kills: a.kills,
    })
    .await
    .map_err(|e| anyhow::anyhow!("bench pool: {e}"))?;
    print_report(&r, a.json, |r| {
        format!(
            "{} empty tasks, {} workers, {} rounds each (median, min–max)\n\
             pool            {:>9.0} tasks/s ({:.0}–{:.0})\n\
             consumer group  {:>9.0} tasks/s ({:.0}–{:.0})\n\
             pool ÷ group    {:>9.2}\n\
             replace a SIGKILLed worker: {:.0} ms ({:.0}–{:.0})",
            r.tasks,
            r.workers,
            r.rounds,
            r.pool_tasks_per_s.median,
            r.pool_tasks_per_s.min,
            r.pool_tasks_per_s.max,
            r.group_tasks_per_s.median,
            r.group_tasks_per_s.min,
            r.group_tasks_per_s.max,
            r.pool_vs_group,
            r.replace_ms.median,
            r.replace_ms.min,
            r.replace_ms.max
        )
    })
}

/// Arguments of `diaspora bench fabric`.
#[derive(Debug, Clone, clap::Args)]
pub struct FabricBenchArgs {
    /// Payload bytes per item.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Items in total.
    #[arg(long, default_value_t = 100_000)]
    pub items: u64,
    /// Producer clients (each with its own connections).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumer clients; partitions are split between them.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Partitions of the benchmark topic (default: 2 × max(producers, consumers)).
    #[arg(long)]
    pub partitions: Option<u32>,
    /// QUIC connections per client (default: 2..=4 by cores).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Offered load in items/s over all producers (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// fsync policy of the node.
    #[arg(long, default_value = "interval")]
    pub fsync: FsyncPolicy,
    /// Producer batch size, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_bytes: usize,
    /// Producer linger, microseconds.
    #[arg(long, default_value_t = 200)]
    pub linger_us: u64,
    /// Items sent during the first this-many milliseconds (connection set-up,
    /// congestion-window growth) are left out of the latency percentiles.
    #[arg(long, default_value_t = 500)]
    pub warmup_ms: u64,
    /// Skip the plain-quinn baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// Congestion controller of the node, the clients and the baseline
    /// (tolerant, bbr, cubic, new-reno).
    #[arg(long, default_value_t = diaspora_fabric::Congestion::default())]
    pub congestion: diaspora_fabric::Congestion,
    /// Run with authentication and ACLs on (token mode, a 100-entry ACL).
    #[arg(long)]
    pub auth: bool,
    /// Measure the cost of authentication: ROUNDS pairs of runs, auth off
    /// then on, alternating, without the quinn baselines; reports medians
    /// and the overhead of on against off.
    #[arg(long, value_name = "ROUNDS", conflicts_with = "auth")]
    pub auth_compare: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl FabricBenchArgs {
    /// The benchmark's configuration.
    pub fn config(&self) -> FabricBenchConfig {
        FabricBenchConfig {
            size: self.size,
            items: self.items,
            producers: self.producers,
            consumers: self.consumers,
            partitions: self.partitions,
            connections: self.connections,
            rate: self.rate,
            fsync: self.fsync,
            batch_bytes: self.batch_bytes,
            linger_us: self.linger_us,
            warmup_ms: self.warmup_ms,
            no_baseline: self.no_baseline,
            congestion: self.congestion,
            auth: self.auth,
        }
    }
}

/// `bench fabric --auth-compare`: throughput with authentication off and on.
#[derive(Debug, serde::Serialize)]
pub struct AuthCompareReport {
    /// Payload bytes per item.
    pub size: usize,
    /// Items per run.
    pub items: u64,
    /// Rounds (pairs of runs).
    pub rounds: u32,
    /// End-to-end MB/s of each run with auth off, in order.
    pub off_mb_per_s: Vec<f64>,
    /// The same with auth on.
    pub on_mb_per_s: Vec<f64>,
    /// Median with auth off.
    pub off_median_mb_per_s: f64,
    /// Median with auth on.
    pub on_median_mb_per_s: f64,
    /// `1 - on/off` of the medians, per cent (negative: on was faster).
    pub overhead_pct: f64,
}

async fn auth_compare(a: &FabricBenchArgs, rounds: u32) -> Result<AuthCompareReport> {
    let mut cfg = a.config();
    cfg.no_baseline = true;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        for auth in [false, true] {
            cfg.auth = auth;
            let r = diaspora_fabric::bench::fabric(&cfg).await?;
            if auth { &mut on } else { &mut off }.push(r.mb_per_s);
        }
    }
    let (m_off, m_on) = (
        diaspora_fabric::bench::median(&off),
        diaspora_fabric::bench::median(&on),
    );
    Ok(AuthCompareReport {
        size: a.size,
        items: a.items,
        rounds: rounds.max(1),
        off_mb_per_s: off,
        on_mb_per_s: on,
        off_median_mb_per_s: m_off,
        on_median_mb_per_s: m_on,
        overhead_pct: (1.0 - m_on / m_off) * 100.0,
    })
}

/// Arguments of `diaspora bench stream`.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamBenchArgs {
    /// Payload bytes per item.
    #[arg(long, default_value_t = 1 << 20)]
    pub size: usize,
    /// Items per run.
    #[arg(long, default_value_t = 2000)]
    pub items: u64,
    /// Rounds (each: one baseline run and one QoS run); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// fsync policy of the node.
    #[arg(long, default_value = "interval")]
    pub fsync: FsyncPolicy,
    /// QoS policy file (default: the default policy).
    #[arg(long)]
    pub policy: Option<std::path::PathBuf>,
    /// Also run each round with per-item lineage recorded into an embedded
    /// provenance store (SQLite, in a temporary directory) and report the
    /// overhead against the plain QoS run of the same round.
    #[arg(long)]
    pub lineage: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl StreamBenchArgs {
    /// The benchmark's configuration.
    pub fn config(&self) -> StreamBenchConfig {
        StreamBenchConfig {
            size: self.size,
            items: self.items,
            rounds: self.rounds,
            fsync: self.fsync,
            policy: self.policy.clone(),
        }
    }
}

/// Runs `diaspora bench fabric`.
pub async fn fabric(a: FabricBenchArgs) -> Result<()> {
    if let Some(rounds) = a.auth_compare {
        let r = auth_compare(&a, rounds).await?;
        return print_report(&r, a.json, |r| {
            format!(
                "fabric {} items × {} B, {} round(s) alternating: auth off {:.1} MB/s, on (token + {}-entry ACL) {:.1} MB/s (medians) → overhead {:.1} %",
                r.items,
                r.size,
                r.rounds,
                r.off_median_mb_per_s,
                diaspora_fabric::bench::BENCH_ACL_ENTRIES,
                r.on_median_mb_per_s,
                r.overhead_pct
            )
        });
    }
    let report = diaspora_fabric::bench::fabric(&a.config()).await?;
    print_report(&report, a.json, |r| r.to_string())
}

/// Runs `diaspora bench stream`; with `--lineage`, into a provenance store
/// (SQLite) in a temporary directory.
pub async fn stream(a: StreamBenchArgs) -> Result<()> {
    let dir = tempfile::tempdir().context("temporary provenance directory")?;
    let lineage: Option<Arc<dyn BenchLineage>> = if a.lineage {
        let store = dir.path().join("prov.sqlite");
        let prov = Provenance::open(&store.display().to_string())?;
        Some(Arc::new(Recorder(Arc::new(LineageRecorder::start(
            prov,
            RecorderConfig::default(),
        )))))
    } else {
        None
    };
    let report = diaspora_stream::bench::stream(&a.config(), lineage).await?;
    print_report(&report, a.json, |r| r.to_string())
}

/// A provenance lineage recorder as the stream benchmark's lineage.
struct Recorder(Arc<LineageRecorder>);

impl BenchLineage for Recorder {
    fn hook(&self) -> Arc<dyn AckHook> {
        self.0.hook()
    }

    fn flush(&self) -> Result<()> {
        Ok(self.0.flush()?)
    }

    fn close(&self) -> Result<(u64, u64)> {
        let (stats, _prov) = self.0.close()?;
        Ok((stats.recorded, stats.lost))
    }
}
