//! The `diaspora` command-line tool. Run `diaspora --help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use diaspora::fabric::item::payload_item;
use diaspora::fabric::{
    AdminClient, Client, ClientConfig, Consumer, ConsumerConfig, FsyncPolicy, Node, NodeConfig,
    Producer, ProducerConfig, StartFrom,
};
use diaspora::proto::v1;

mod predict_cmd;
mod prov_cmd;
mod stream_cmd;
mod view_cmd;

const DEFAULT_DATA_DIR: &str = "diaspora-data";
const DEFAULT_ADDR: &str = "127.0.0.1:7400";
const DEFAULT_ADMIN: &str = "127.0.0.1:7401";
const DEFAULT_CA: &str = "diaspora-data/certs/ca.pem";

#[derive(Parser)]
#[command(
    name = "diaspora",
    version,
    about = "Resilient data streaming for real-time scientific workflows (edge ↔ HPC ↔ cloud)",
    long_about = "diaspora streams items (metadata + large payloads) from instruments at the edge to HPC \
and cloud consumers over QUIC, stores them in crash-safe partitioned logs, and keeps every \
acknowledged item.\n\nStart with `diaspora demo` (no server needed), or run a node with \
`diaspora serve` and talk to it with `topic`, `produce` and `consume`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: QUIC data plane, gRPC admin plane, durable partitioned logs.
    Serve(ServeArgs),
    /// Make a development CA and node certificate (ca.pem, node.pem, node.key).
    Certs(CertsArgs),
    /// Create, list, describe or delete topics (admin plane).
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Produce items: lines of a file or stdin, or synthetic payloads.
    Produce(ProduceArgs),
    /// Consume items, optionally as a consumer group with committed offsets.
    Consume(ConsumeArgs),
    /// Mirror a topic from one node to another (store-and-forward, exactly once).
    Bridge(BridgeArgs),
    /// Virtual infrastructure twins: run a scenario of real hosts over emulated links.
    #[command(subcommand)]
    Twin(TwinCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The main job on the embedded default: an in-process node, an edge
    /// producer of diffraction frames and an HPC-side consumer.
    Demo(diaspora::demo::DemoArgs),
    /// QoS streams: buffered, flow-controlled, replayable producer → consumer pairs.
    #[command(subcommand)]
    Stream(stream_cmd::StreamCommand),
    /// Provenance: records, lineage, model versions, cascading invalidation with
    /// actions, PROV-JSON/DOT/Mermaid export (SQLite by default, or PostgreSQL).
    #[command(subcommand)]
    Prov(prov_cmd::ProvCommand),
    /// Resilient data views: declarative joins over streams (K of A with one
    /// of B by key, windows, all-of/any-of), published as a metastream of
    /// references; healing on replay, pin/discard on invalidation, snapshots.
    #[command(subcommand)]
    View(view_cmd::ViewCommand),
    /// Prediction: the LSTM forecaster (candle) and forecast-error anomaly
    /// detector; evaluation on NAB and on twin congestion traces.
    #[command(subcommand)]
    Predict(predict_cmd::PredictCommand),
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Directory for topics, group offsets and (by default) certificates.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// QUIC data-plane address.
    #[arg(long, default_value = DEFAULT_ADDR)]
    listen: SocketAddr,
    /// gRPC admin address.
    #[arg(long, default_value = DEFAULT_ADMIN)]
    admin: SocketAddr,
    /// Certificate directory made by `diaspora certs`; default DATA_DIR/certs, created on first start.
    #[arg(long)]
    certs: Option<PathBuf>,
    /// fsync policy: always (before every ack), interval[:MS] (default 100 ms), or never.
    #[arg(long, default_value = "interval")]
    fsync: FsyncPolicy,
    /// Segment size before a new segment file starts, bytes.
    #[arg(long, default_value_t = 128 << 20)]
    segment_bytes: u64,
    /// Default retention per partition by size, bytes (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    retention_bytes: u64,
    /// Default retention by age, seconds (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    retention_s: u64,
    /// Largest item accepted, bytes.
    #[arg(long, default_value_t = 64 << 20)]
    item_bytes_max: u64,
    /// Largest batch accepted, bytes.
    #[arg(long, default_value_t = 72 << 20)]
    batch_bytes_max: u64,
    /// Requests a client may have queued on one stream.
    #[arg(long, default_value_t = 64)]
    in_flight_max: u32,
    /// Most topics on this node.
    #[arg(long, default_value_t = 1024)]
    topics_max: u32,
    /// Most partitions per topic.
    #[arg(long, default_value_t = 256)]
    partitions_max: u32,
}

#[derive(Args)]
struct CertsArgs {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Extra DNS names or IP addresses for the node certificate (localhost, 127.0.0.1 and ::1 are always in).
    #[arg(long = "host")]
    hosts: Vec<String>,
}

#[derive(Args, Clone)]
struct AdminConn {
    /// gRPC admin address of the node.
    #[arg(long, default_value = DEFAULT_ADMIN)]
    admin: SocketAddr,
    /// CA certificate to verify the node with.
    #[arg(long, default_value = DEFAULT_CA)]
    ca: PathBuf,
}

#[derive(Args, Clone)]
struct DataConn {
    /// QUIC data-plane address of the node.
    #[arg(long, default_value = DEFAULT_ADDR)]
    addr: SocketAddr,
    /// CA certificate to verify the node with.
    #[arg(long, default_value = DEFAULT_CA)]
    ca: PathBuf,
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name ([A-Za-z0-9._-], 1-200 characters).
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Retention by size per partition, bytes (0 = node default).
        #[arg(long, default_value_t = 0)]
        retention_bytes: u64,
        /// Retention by age, milliseconds (0 = node default).
        #[arg(long, default_value_t = 0)]
        retention_ms: u64,
        #[command(flatten)]
        conn: AdminConn,
    },
    /// List topics.
    List {
        #[command(flatten)]
        conn: AdminConn,
    },
    /// Show a topic's partitions and offsets.
    Describe {
        /// Topic name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: AdminConn,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
        #[command(flatten)]
        conn: AdminConn,
    },
}

#[derive(Args)]
struct ProduceArgs {
    /// Topic to produce to.
    #[arg(long)]
    topic: String,
    /// Read items from this file, one per line (default: stdin lines).
    #[arg(long, conflicts_with = "synthetic")]
    file: Option<PathBuf>,
    /// Produce N synthetic items of --size bytes instead of reading lines.
    #[arg(long, value_name = "N")]
    synthetic: Option<u64>,
    /// Payload size of synthetic items, bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Send every item to this partition (default: spread over all).
    #[arg(long)]
    partition: Option<u32>,
    /// Compress batches with zstd.
    #[arg(long)]
    zstd: bool,
    /// Pace production at this many items per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Write one JSON line per acknowledged item to FILE:
    /// {"id","partition","offset","acked_us"}. Items carry metadata "id"
    /// (--id-start + their index), so a consumer can match them.
    #[arg(long, value_name = "FILE")]
    acks: Option<PathBuf>,
    /// First item id (give producers sharing a topic disjoint ranges).
    #[arg(long, default_value_t = 0)]
    id_start: u64,
    /// Print a JSON summary (with "acked") at the end.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: DataConn,
}

/// When a consuming command stops (shared by `consume` and `stream consume`).
#[derive(Args, Clone, Copy)]
struct StopArgs {
    /// Stop after N items.
    #[arg(long)]
    count: Option<u64>,
    /// Give up when no item arrives for this long, milliseconds (default: 10000 with --count, else wait forever).
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
}

impl StopArgs {
    fn idle(&self) -> Duration {
        match (self.idle_timeout_ms, self.count) {
            (Some(ms), _) => Duration::from_millis(ms),
            (None, Some(_)) => Duration::from_secs(10),
            (None, None) => Duration::from_secs(u64::MAX / 4),
        }
    }

    fn more(&self, seen: u64) -> bool {
        self.count.is_none_or(|n| seen < n)
    }
}

/// Set once SIGTERM or Ctrl-C arrives; commands finish cleanly (output
/// flushed, offsets committed, buffers drained) instead of dying mid-write.
struct Stop {
    flag: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Stop {
    fn on_signal() -> Result<std::sync::Arc<Stop>> {
        let stop = std::sync::Arc::new(Stop {
            flag: std::sync::atomic::AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
        });
        let s = stop.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            s.flag.store(true, std::sync::atomic::Ordering::SeqCst);
            s.notify.notify_waiters();
        });
        Ok(stop)
    }

    fn stopped(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits up to `d`, or until the signal.
    async fn sleep(&self, d: Duration) {
        let woken = self.notify.notified();
        if !self.stopped() {
            let _ = tokio::time::timeout(d, woken).await;
        }
    }
}

fn print_report<T: serde::Serialize + std::fmt::Display>(report: &T, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

#[derive(Args)]
struct ConsumeArgs {
    /// Topic to consume.
    #[arg(long)]
    topic: String,
    /// Consumer group: resume from its committed offsets and commit as items are read.
    #[arg(long)]
    group: Option<String>,
    /// Where to start without a committed offset: earliest, latest, or an offset.
    #[arg(long, default_value = "earliest")]
    from: StartFrom,
    /// Only this partition (default: all, or the group's assignment).
    #[arg(long)]
    partition: Option<u32>,
    #[command(flatten)]
    stop: StopArgs,
    /// Print one JSON object per item.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: DataConn,
}

#[derive(Args)]
struct BridgeArgs {
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
    /// Print counters to stderr this often, seconds (0 = only at exit).
    #[arg(long, default_value_t = 5)]
    stats_interval_s: u64,
    /// Commit the mirrored position to the source at most this often, ms.
    /// After a crash the bridge re-sends what was acknowledged since; the
    /// target recognises those batches, so a longer interval costs only re-sends.
    #[arg(long, default_value_t = 200)]
    commit_interval_ms: u64,
}

/// Publishing this process's metrics on a fabric topic.
#[derive(Args, Clone)]
struct MetricsArgs {
    /// Publish this process's metrics as events on --metrics-topic every
    /// this many ms (0 = off). See crates/diaspora-telemetry for the names.
    #[arg(long, default_value_t = 0)]
    metrics_interval_ms: u64,
    /// Topic for --metrics-interval-ms. `serve` creates it; other commands
    /// need it to exist (`diaspora topic create diaspora.metrics`).
    #[arg(long, default_value = "diaspora.metrics")]
    metrics_topic: String,
}

impl MetricsArgs {
    /// Whether publishing is on.
    fn enabled(&self) -> bool {
        self.metrics_interval_ms > 0
    }

    /// Starts publishing `registry` through `client`, if asked to.
    async fn start(
        &self,
        client: Client,
        source: String,
        registry: diaspora_telemetry::Registry,
        create: diaspora_telemetry::publish::TopicCreation,
    ) -> Result<Option<diaspora_telemetry::publish::MetricsPublisher>> {
        if self.metrics_interval_ms == 0 {
            return Ok(None);
        }
        let mut cfg = diaspora_telemetry::publish::PublisherConfig::new(source);
        cfg.topic = self.metrics_topic.clone();
        cfg.interval = Duration::from_millis(self.metrics_interval_ms.max(10));
        cfg.create_topic = create;
        let p = diaspora_telemetry::publish::MetricsPublisher::start(client, cfg, registry)
            .await
            .with_context(|| format!("publishing metrics on {:?}", self.metrics_topic))?;
        Ok(Some(p))
    }
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

#[derive(Subcommand)]
enum TwinCommand {
    /// Run a scenario file (twins/*.toml): hosts as real processes, links as
    /// user-space relays, faults on a schedule; check its assertions.
    Run {
        /// Scenario file.
        file: PathBuf,
        /// Print the results as JSON (passed, produced, acked, consumed, lost,
        /// duplicated, latency_us_p99, recovery_s, timeline, …).
        #[arg(long)]
        json: bool,
        /// Write results.json and report.html (with the hosts' data and logs) here.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Seed of the links' randomness (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Multiply every time in the scenario by X (e.g. 0.2 to shorten it for CI).
        #[arg(long, default_value_t = 1.0)]
        duration_scale: f64,
        /// Sample every link's metrics (utilisation, delivered and capacity
        /// Mbit/s, bytes held, drops) and append one JSON metric event per
        /// line to FILE.
        #[arg(long, value_name = "FILE")]
        metrics_out: Option<PathBuf>,
        /// Also publish each metric event on this topic of --metrics-node
        /// (what `diaspora predict serve` monitors read).
        #[arg(long, value_name = "TOPIC", requires = "metrics_node")]
        metrics_topic: Option<String>,
        /// The scenario node that --metrics-topic lives on.
        #[arg(long, value_name = "NODE", requires = "metrics_topic")]
        metrics_node: Option<String>,
        /// Metric sampling interval, ms.
        #[arg(long, default_value_t = 500)]
        metrics_interval_ms: u64,
    },
    /// Measure a relay's real delay, throughput and loss against configured values.
    Calibrate {
        /// One-way delay to configure, ms.
        #[arg(long, default_value_t = 20.0)]
        delay_ms: f64,
        /// Bandwidth to configure, Mbit/s.
        #[arg(long, default_value_t = 100.0)]
        bandwidth_mbit: f64,
        /// Random loss to configure, as a fraction (0.01 = 1 %).
        #[arg(long, default_value_t = 0.01)]
        loss: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// End-to-end producer → node → consumer over QUIC loopback, with a plain-quinn baseline.
    Fabric(diaspora::bench::FabricBenchArgs),
    /// The QoS stream layer's overhead against the raw fabric client, in the same run.
    Stream(diaspora::bench_stream::StreamBenchArgs),
    /// The LSTM forecaster: batched inference per series-step (against
    /// one series per call), and one online training step.
    Predict(predict_cmd::BenchArgs),
}

/// The OpenTelemetry guard of this process (flushed at exit).
static TELEMETRY: std::sync::Mutex<Option<diaspora_telemetry::TelemetryGuard>> =
    std::sync::Mutex::new(None);

/// Logging on stderr (RUST_LOG, else `default`), and — when the standard
/// OTEL_EXPORTER_OTLP_* variables ask for it — OTLP export of traces and
/// metrics (service `diaspora`, or OTEL_SERVICE_NAME).
fn init_tracing(default: &str) {
    let mut config = match diaspora_telemetry::OtelConfig::from_env("diaspora") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warning: telemetry export off: {e}");
            diaspora_telemetry::OtelConfig::new("diaspora")
        }
    };
    if std::env::var_os("RUST_LOG").is_none() {
        config.log_filter = default.to_string();
    }
    match diaspora_telemetry::init_with(config) {
        Ok(guard) => *TELEMETRY.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard),
        Err(diaspora_telemetry::TelemetryError::AlreadyInitialized) => {}
        Err(e) => eprintln!("warning: telemetry: {e}"),
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        let r = run(cli).await;
        let guard = TELEMETRY.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(g) = guard {
            if let Err(e) = g.shutdown_async().await {
                eprintln!("warning: telemetry flush: {e}");
            }
        }
        r
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Certs(a) => {
            init_tracing("warn");
            let paths = diaspora::fabric::tls::generate_dev_certs(&a.out, &a.hosts)?;
            println!(
                "wrote {}, {}, {}",
                paths.ca.display(),
                paths.node_cert.display(),
                paths.node_key.display()
            );
            println!(
                "start a node with: diaspora serve --certs {}",
                a.out.display()
            );
            Ok(())
        }
        Command::Topic(t) => {
            init_tracing("warn");
            topic(t).await
        }
        Command::Produce(a) => {
            init_tracing("warn");
            produce(a).await
        }
        Command::Consume(a) => {
            init_tracing("warn");
            consume(a).await
        }
        Command::Bridge(a) => {
            init_tracing("warn");
            bridge(a).await
        }
        Command::Twin(t) => {
            init_tracing("warn");
            twin(t).await
        }
        Command::Bench(BenchCommand::Fabric(a)) => {
            init_tracing("warn");
            print_report(&diaspora::bench::fabric(&a).await?, a.json)
        }
        Command::Stream(s) => {
            init_tracing("warn");
            stream_cmd::run(s).await
        }
        Command::Bench(BenchCommand::Predict(a)) => {
            init_tracing("warn");
            tokio::task::block_in_place(|| predict_cmd::bench(a))
        }
        Command::Bench(BenchCommand::Stream(a)) => {
            init_tracing("warn");
            print_report(&diaspora::bench_stream::stream(&a).await?, a.json)
        }
        Command::Demo(a) => {
            init_tracing("warn");
            diaspora::demo::run(a).await
        }
        Command::View(v) => {
            init_tracing("warn");
            view_cmd::run(v).await
        }
        Command::Predict(p) => {
            init_tracing("warn");
            predict_cmd::run(p).await
        }
        Command::Prov(p) => {
            init_tracing("warn");
            let rt = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || prov_cmd::run(p, rt)).await?
        }
    }
}

async fn serve(a: ServeArgs) -> Result<()> {
    init_tracing("info");
    let mut cfg = NodeConfig::new(&a.data_dir);
    cfg.listen = a.listen;
    cfg.admin_listen = Some(a.admin);
    cfg.certs_dir = a.certs;
    cfg.fsync = a.fsync;
    cfg.segment_bytes_max = a.segment_bytes;
    cfg.retention_bytes_max = (a.retention_bytes > 0).then_some(a.retention_bytes);
    cfg.retention_age = (a.retention_s > 0).then(|| Duration::from_secs(a.retention_s));
    cfg.limits.item_bytes_max = a.item_bytes_max;
    cfg.limits.batch_bytes_max = a.batch_bytes_max.max(a.item_bytes_max + 4096);
    cfg.limits.in_flight_max = a.in_flight_max;
    cfg.limits.topics_max = a.topics_max;
    cfg.limits.partitions_max = a.partitions_max;
    let node = Node::start(cfg)
        .await
        .with_context(|| format!("starting node in {}", a.data_dir.display()))?;
    eprintln!(
        "diaspora node serving: data plane quic://{} admin https://{} fsync={} ca={}",
        node.data_addr(),
        node.admin_addr().map(|a| a.to_string()).unwrap_or_default(),
        a.fsync,
        node.ca_file().display()
    );
    let publisher = if a.metrics.metrics_interval_ms > 0 {
        let registry = diaspora_telemetry::Registry::new();
        diaspora_telemetry::collect_broker(&registry, node.broker().clone())?;
        let client = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file())).await?;
        a.metrics
            .start(
                client,
                format!("node:{}", node.data_addr()),
                registry,
                diaspora_telemetry::publish::TopicCreation::Embedded(node.broker().clone()),
            )
            .await?
    } else {
        None
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("shutting down");
    if let Some(p) = publisher {
        p.stop().await;
    }
    node.shutdown().await;
    Ok(())
}

async fn bridge(a: BridgeArgs) -> Result<()> {
    let (from_addr, from_topic) = parse_endpoint(&a.from)?;
    let (to_addr, to_topic) = parse_endpoint(&a.to)?;
    let from_ca = a.from_ca.unwrap_or_else(|| a.ca.clone());
    let to_ca = a.to_ca.unwrap_or_else(|| a.ca.clone());
    check_ca(&from_ca)?;
    check_ca(&to_ca)?;
    let name = a
        .name
        .unwrap_or_else(|| format!("{from_topic}-to-{to_topic}"));
    let mut config = diaspora::fabric::BridgeConfig::new(
        &name,
        ClientConfig::new(from_addr, &from_ca),
        &from_topic,
        ClientConfig::new(to_addr, &to_ca),
        &to_topic,
    );
    config.commit_interval = Duration::from_millis(a.commit_interval_ms.max(1));
    let bridge = diaspora::fabric::Bridge::start(config).await?;
    eprintln!(
        "bridge '{name}': {from_addr}/{from_topic} → {to_addr}/{to_topic}, {} partition(s)",
        bridge.partitions()
    );
    let publisher = if a.metrics.metrics_interval_ms > 0 {
        // The bridge's counters, and the QUIC path to the target as a
        // connection of its own sees it (RTT, congestion window, loss).
        let registry = diaspora_telemetry::Registry::new();
        diaspora_telemetry::collect_bridge(&registry, &name, bridge.stats().clone())?;
        let to_client = Client::connect(ClientConfig::new(to_addr, &to_ca)).await?;
        diaspora_telemetry::collect_quic(&registry, &to_addr.to_string(), to_client)?;
        let client = Client::connect(ClientConfig::new(from_addr, &from_ca)).await?;
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
    let stats = bridge.stats().clone();
    let report = move || {
        let o = std::sync::atomic::Ordering::Relaxed;
        format!(
            "bridge '{name}': forwarded {} items, {} duplicate batches absorbed, {} reconnects, {} commits",
            stats.forwarded.load(o),
            stats.duplicates_absorbed.load(o),
            stats.reconnects.load(o),
            stats.commits.load(o)
        )
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let every = Duration::from_secs(a.stats_interval_s.max(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(every), if a.stats_interval_s > 0 => eprintln!("{}", report()),
        }
    }
    let failed = bridge.stats().failed.lock().clone();
    if let Some(p) = publisher {
        p.stop().await;
    }
    bridge.stop().await;
    eprintln!("{}", report());
    if let Some((p, e)) = failed.first() {
        bail!("partition {p} stopped: {e}");
    }
    Ok(())
}

async fn twin(t: TwinCommand) -> Result<()> {
    match t {
        TwinCommand::Run {
            file,
            json,
            report,
            seed,
            duration_scale,
            metrics_out,
            metrics_topic,
            metrics_node,
            metrics_interval_ms,
        } => {
            let scenario = diaspora_twin::Scenario::load(&file).map_err(anyhow::Error::msg)?;
            let metrics = (metrics_out.is_some() || metrics_topic.is_some()).then(|| {
                diaspora_twin::MetricsOptions {
                    interval: std::time::Duration::from_millis(metrics_interval_ms.max(10)),
                    out: metrics_out.clone(),
                    publish: metrics_node.clone().zip(metrics_topic.clone()),
                }
            });
            let tmp = tempfile::tempdir()?;
            let work_dir = match &report {
                Some(dir) => dir.join("hosts"),
                None => tmp.path().to_path_buf(),
            };
            let options = diaspora_twin::RunOptions {
                binary: std::env::current_exe().context("locating the diaspora binary")?,
                seed,
                duration_scale,
                work_dir,
                metrics,
            };
            let bar = indicatif::ProgressBar::new(1000);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {prefix} [{bar:40}] {msg}")
                    .expect("template"),
            );
            bar.set_prefix(scenario.name.clone());
            let progress = |t: f64, total: f64, status: &str| {
                bar.set_position(((t / total.max(1e-9)) * 1000.0).min(1000.0) as u64);
                bar.set_message(format!("{t:.0}/{total:.0} s {status}"));
            };
            let results = diaspora_twin::run(scenario, &options, &progress)
                .await
                .map_err(anyhow::Error::msg)?;
            bar.finish_and_clear();
            let text = serde_json::to_string_pretty(&results)?;
            if let Some(dir) = &report {
                std::fs::create_dir_all(dir)?;
                std::fs::write(dir.join("results.json"), &text)?;
                let html = diaspora_twin::report::html_report(
                    &results.scenario,
                    &results.figures,
                    &results.fault_windows(),
                    &results.report_checks(),
                    &text,
                );
                std::fs::write(dir.join("report.html"), html)?;
                eprintln!("report: {}", dir.join("report.html").display());
            }
            if json {
                println!("{text}");
            } else {
                println!(
                    "{}: {} — produced {}, acked {}, consumed {}, lost {}, duplicated {}, latency p99 {:.1} ms, recovery {:.1} s",
                    results.scenario,
                    if results.passed { "PASSED" } else { "FAILED" },
                    results.produced,
                    results.figures.acked,
                    results.figures.consumed,
                    results.figures.lost,
                    results.figures.duplicated,
                    results.figures.latency_us_p99 as f64 / 1000.0,
                    results.recovery_s
                );
                for c in results.checks.iter().filter(|c| !c.passed) {
                    println!("  failed: {} (measured {})", c.what, c.measured);
                }
            }
            if !results.passed {
                std::process::exit(2);
            }
            Ok(())
        }
        TwinCommand::Calibrate {
            delay_ms,
            bandwidth_mbit,
            loss,
            json,
        } => {
            let report = diaspora_twin::calibrate(diaspora_twin::CalibrateConfig {
                delay_ms,
                bandwidth_mbit,
                loss,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "delay {:.3} ms (configured {delay_ms}), throughput {:.2} Mbit/s (configured {bandwidth_mbit}), loss {:.4} (configured {loss}){}",
                    report.delay_ms_measured,
                    report.bandwidth_mbit_measured,
                    report.loss_measured,
                    if report.within_targets() { "" } else { " — outside the fidelity targets" }
                );
                for n in &report.notes {
                    println!("  note: {n}");
                }
            }
            Ok(())
        }
    }
}

async fn admin(conn: &AdminConn) -> Result<AdminClient> {
    check_ca(&conn.ca)?;
    Ok(AdminClient::connect(conn.admin, &conn.ca).await?)
}

fn check_ca(ca: &std::path::Path) -> Result<()> {
    if !ca.exists() {
        bail!(
            "CA file {} not found: pass --ca (the node prints its CA path at start; `diaspora certs` writes DIR/ca.pem)",
            ca.display()
        );
    }
    Ok(())
}

async fn client(conn: &DataConn) -> Result<Client> {
    check_ca(&conn.ca)?;
    Ok(Client::connect(ClientConfig::new(conn.addr, &conn.ca)).await?)
}

async fn topic(t: TopicCommand) -> Result<()> {
    match t {
        TopicCommand::Create {
            name,
            partitions,
            retention_bytes,
            retention_ms,
            conn,
        } => {
            admin(&conn)
                .await?
                .create_topic(
                    &name,
                    v1::TopicConfig {
                        partitions,
                        retention_bytes,
                        retention_ms,
                        compression: "none".into(),
                    },
                )
                .await?;
            println!("created topic {name} with {partitions} partition(s)");
        }
        TopicCommand::List { conn } => {
            for n in admin(&conn).await?.list_topics().await? {
                println!("{n}");
            }
        }
        TopicCommand::Describe { name, json, conn } => {
            let d = admin(&conn).await?.describe_topic(&name).await?;
            if json {
                let parts: Vec<_> = d
                    .partitions
                    .iter()
                    .map(|p| {
                        serde_json::json!({"partition": p.partition, "start_offset": p.start_offset,
                        "next_offset": p.next_offset, "size_bytes": p.size_bytes, "segments": p.segments})
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"name": d.name, "partitions": parts})
                );
            } else {
                let c = d.config.unwrap_or_default();
                println!(
                    "topic {} partitions={} retention_bytes={} retention_ms={}",
                    d.name, c.partitions, c.retention_bytes, c.retention_ms
                );
                println!(
                    "{:>9} {:>12} {:>12} {:>12} {:>8}",
                    "partition", "start", "next", "bytes", "segments"
                );
                for p in d.partitions {
                    println!(
                        "{:>9} {:>12} {:>12} {:>12} {:>8}",
                        p.partition, p.start_offset, p.next_offset, p.size_bytes, p.segments
                    );
                }
            }
        }
        TopicCommand::Delete { name, conn } => {
            admin(&conn).await?.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

async fn produce(a: ProduceArgs) -> Result<()> {
    let client = client(&a.conn).await?;
    let mut cfg = ProducerConfig::new(&a.topic);
    if a.zstd {
        cfg.compression = diaspora::log::Compression::Zstd { level: 3 };
    }
    let producer = Producer::new(&client, cfg).await?;
    let started = Instant::now();
    let mut items = 0u64;
    let mut bytes = 0u64;
    // With --acks, every item gets a delivery future; a writer task records
    // them in order as they resolve.
    let (ack_tx, ack_writer) = match &a.acks {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("create {}", path.display()))?;
            let (tx, rx) = tokio::sync::mpsc::channel::<(u64, diaspora::fabric::Delivery)>(65_536);
            (Some(tx), Some(tokio::spawn(write_acks(file, rx))))
        }
        None => (None, None),
    };
    let make_item = |i: u64, payload: bytes::Bytes| {
        let mut item = payload_item(payload);
        item.metadata.insert(
            "id".into(),
            v1::Value {
                kind: Some(v1::value::Kind::I((a.id_start + i) as i64)),
            },
        );
        item
    };
    let pace = |i: u64| {
        let due = (a.rate > 0.0).then(|| started + Duration::from_secs_f64(i as f64 / a.rate));
        async move {
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
        }
    };
    let submit = |item: v1::Item| {
        let ack_tx = ack_tx.clone();
        let producer = &producer;
        let partition = a.partition;
        async move {
            match ack_tx {
                Some(tx) => {
                    let id = match item.metadata.get("id").and_then(|v| v.kind.clone()) {
                        Some(v1::value::Kind::I(i)) => i as u64,
                        _ => 0,
                    };
                    let d = match partition {
                        Some(p) => producer.send_to(p, item).await?,
                        None => producer.send(item).await?,
                    };
                    tx.send((id, d))
                        .await
                        .map_err(|_| anyhow::anyhow!("ack writer stopped"))?;
                }
                None => producer.send_unacked(partition, item).await?,
            }
            anyhow::Ok(())
        }
    };
    if let Some(n) = a.synthetic {
        let payload = diaspora::bench::synthetic_payload(a.size);
        for i in 0..n {
            pace(i).await;
            submit(make_item(i, payload.clone())).await?;
            items += 1;
            bytes += a.size as u64;
        }
    } else {
        use tokio::io::AsyncBufReadExt;
        let reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match &a.file {
            Some(f) => Box::new(
                tokio::fs::File::open(f)
                    .await
                    .with_context(|| format!("open {}", f.display()))?,
            ),
            None => Box::new(tokio::io::stdin()),
        };
        let mut lines = tokio::io::BufReader::new(reader).lines();
        while let Some(line) = lines.next_line().await? {
            pace(items).await;
            bytes += line.len() as u64;
            submit(make_item(items, bytes::Bytes::from(line))).await?;
            items += 1;
        }
    }
    drop(ack_tx);
    let flushed = producer.flush().await;
    if let Some(w) = ack_writer {
        w.await.context("ack writer")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = producer.stats();
    let acked = stats.acked.load(std::sync::atomic::Ordering::Relaxed);
    let failed = stats.failed.load(std::sync::atomic::Ordering::Relaxed);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "topic": a.topic, "items": items, "acked": acked, "failed": failed, "bytes": bytes,
                "elapsed_s": elapsed, "items_per_s": items as f64 / elapsed.max(1e-9),
                "mb_per_s": bytes as f64 / 1e6 / elapsed.max(1e-9),
                "error": stats.first_error.lock().clone(),
            })
        );
    } else {
        eprintln!("produced {items} items ({bytes} bytes), {acked} acknowledged, {failed} failed in {elapsed:.2}s");
    }
    flushed?;
    client.close();
    Ok(())
}

async fn consume(a: ConsumeArgs) -> Result<()> {
    let client = client(&a.conn).await?;
    let mut cfg = ConsumerConfig::new(&a.topic).start(a.from);
    cfg.group = a.group.clone();
    let mut consumer = match (&a.group, a.partition) {
        (Some(_), None) => Consumer::subscribe(&client, cfg).await?,
        (_, p) => Consumer::assign(&client, cfg, &p.map(|p| vec![p]).unwrap_or_default()).await?,
    };
    let idle = a.stop.idle();
    let mut seen = 0u64;
    let mut last_commit = Instant::now();
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // SIGTERM or Ctrl-C ends consumption cleanly: output flushed, offsets committed.
    let stop = Stop::on_signal()?;
    let tick = Duration::from_millis(100);
    let mut idle_for = Duration::ZERO;
    let mut last_flush = Instant::now();
    while a.stop.more(seen) && !stop.stopped() {
        let Some(item) = consumer.poll(tick.min(idle)).await? else {
            // Readers of the output (a twin runner, a pipe) see items promptly.
            out.flush()?;
            idle_for += tick;
            if idle_for < idle {
                continue;
            }
            if a.group.is_some() {
                consumer.commit().await?;
            }
            if let Some(n) = a.stop.count {
                bail!("only {seen} of {n} items arrived within the idle timeout of {idle:?}");
            }
            break;
        };
        idle_for = Duration::ZERO;
        if last_flush.elapsed() >= tick {
            out.flush()?;
            last_flush = Instant::now();
        }
        seen += 1;
        if a.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "topic": &*item.topic, "partition": item.partition, "offset": item.offset,
                    "size": item.item.payload.len(), "timestamp_us": item.item.timestamp_us,
                    "latency_us": diaspora::fabric::broker::now_us() - item.item.timestamp_us,
                    "id": match item.item.metadata.get("id").and_then(|v| v.kind.as_ref()) {
                        Some(v1::value::Kind::I(i)) => serde_json::json!(i),
                        _ => serde_json::Value::Null,
                    },
                    "crc32c": crc32c_of(&item.item.payload),
                })
            )?;
        } else {
            let preview =
                String::from_utf8_lossy(&item.item.payload[..item.item.payload.len().min(80)])
                    .into_owned();
            writeln!(
                out,
                "{}/{}@{} {}B {}",
                item.topic,
                item.partition,
                item.offset,
                item.item.payload.len(),
                preview.escape_debug()
            )?;
        }
        if a.group.is_some() && last_commit.elapsed() > Duration::from_secs(1) {
            // A node that is down now is retried at the next commit; the
            // items keep flowing when it returns.
            if let Err(e) = consumer.commit().await {
                tracing::warn!(error = %e, "commit failed; will retry");
            }
            last_commit = Instant::now();
        }
    }
    out.flush()?;
    drop(out);
    if a.group.is_some() {
        consumer.commit().await?;
    }
    consumer.close().await;
    client.close();
    Ok(())
}

/// Writes `{"id","partition","offset","acked_us"}` for each acknowledged item, in send order.
async fn write_acks(
    file: std::fs::File,
    mut rx: tokio::sync::mpsc::Receiver<(u64, diaspora::fabric::Delivery)>,
) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(file);
    let mut last_flush = Instant::now();
    while let Some((id, delivery)) = rx.recv().await {
        if let Ok(d) = delivery.await {
            let acked_us = diaspora::fabric::broker::now_us();
            writeln!(
                out,
                r#"{{"id":{id},"partition":{},"offset":{},"acked_us":{acked_us}}}"#,
                d.partition, d.offset
            )?;
        }
        if last_flush.elapsed() > Duration::from_millis(100) {
            out.flush()?;
            last_flush = Instant::now();
        }
    }
    out.flush()?;
    Ok(())
}

fn crc32c_of(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}
