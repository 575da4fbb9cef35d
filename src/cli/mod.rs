//! The library side of the `diaspora` command-line tool: its clap
//! definitions and one module per command family, each holding the
//! family's arguments and the thin code that turns them into calls on the
//! crates (`src/main.rs` only parses and dispatches).
//!
//! - [`Cli`] is the whole command line; a test (or the twin runner's flag
//!   builder) can check an argument list against it with
//!   `diaspora::cli::Cli::try_parse_from([...])`.
//! - One signal helper for every command ([`shutdown_signal`], and [`stop_on_signal`]
//!   built on it) and one tracing and telemetry set-up ([`init_tracing`],
//!   [`finish_tracing`]).
//! - Shared arguments: [`AdminConn`], [`DataConn`], [`StopArgs`],
//!   [`MetricsArgs`].
//!
//! What this module does not do: it runs no service loop of its own. A
//! node, a bridge, a view, a QoS stream, a monitor, a benchmark or the demo
//! runs in its crate; a command here builds that crate's configuration,
//! waits for a signal where the service runs until one, and prints what
//! comes back.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use diaspora_fabric::{AdminClient, Client, ClientConfig, Stop};

pub mod auth;
pub mod bench;
pub mod bridge;
pub mod dashboard;
pub mod data;
pub mod demo;
pub mod kafka;
pub mod pool;
pub mod predict;
pub mod prov;
pub mod ptycho;
pub mod pybench;
pub mod serve;
pub mod stream;
pub mod topic;
pub mod trigger;
pub mod twin;
pub mod view;
pub mod wan;

/// Where `serve` keeps its data by default.
pub const DEFAULT_DATA_DIR: &str = "diaspora-data";
/// The node's default QUIC data-plane address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7400";
/// The node's default gRPC admin address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:7401";
/// The CA a node started with the defaults writes.
pub const DEFAULT_CA: &str = "diaspora-data/certs/ca.pem";

/// The `diaspora` command line.
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
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of `diaspora`.
#[derive(Subcommand)]
pub enum Command {
    /// Run a node: QUIC data plane, gRPC admin plane, durable partitioned logs.
    Serve(serve::ServeArgs),
    /// Make a development CA and node certificate (ca.pem, node.pem, node.key).
    Certs(serve::CertsArgs),
    /// Create, list, describe or delete topics (admin plane).
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce items: lines of a file or stdin, or synthetic payloads.
    Produce(data::ProduceArgs),
    /// Consume items, optionally as a consumer group with committed offsets.
    Consume(data::ConsumeArgs),
    /// Mirror a topic from one node to another (store-and-forward, exactly once).
    Bridge(bridge::BridgeArgs),
    /// Virtual infrastructure twins: run a scenario of real hosts over emulated links.
    #[command(subcommand)]
    Twin(twin::TwinCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The main job on the embedded default: an in-process node, an edge
    /// producer of diffraction frames and an HPC-side consumer.
    Demo(demo::DemoArgs),
    /// QoS streams: buffered, flow-controlled, replayable producer → consumer pairs.
    #[command(subcommand)]
    Stream(stream::StreamCommand),
    /// Provenance: records, lineage, model versions, cascading invalidation with
    /// actions, PROV-JSON/DOT/Mermaid export (SQLite by default, or PostgreSQL).
    #[command(subcommand)]
    Prov(prov::ProvCommand),
    /// Resilient data views: declarative joins over streams (K of A with one
    /// of B by key, windows, all-of/any-of), published as a metastream of
    /// references; healing on replay, pin/discard on invalidation, snapshots.
    #[command(subcommand)]
    View(view::ViewCommand),
    /// Prediction: the LSTM forecaster (candle) and forecast-error anomaly
    /// detector; evaluation on NAB and on twin congestion traces.
    #[command(subcommand)]
    Predict(predict::PredictCommand),
    /// Ptychography: simulate scans, reconstruct them with ePIE, train and
    /// evaluate the PtychoNN-like surrogate.
    #[command(subcommand)]
    Ptycho(ptycho::PtychoCommand),
    /// Elastic compute pools: workers kept alive at local or Slurm sites
    /// through crashes and walltimes, scaled with the task backlog and
    /// predictions, tasks retried, one result per task key.
    #[command(subcommand)]
    Pool(pool::PoolCommand),
    /// Triggers: actions (run a command, publish, submit a pool task, POST
    /// to a URL) on the events of a topic that match a metadata filter;
    /// retried with back-off, a dead-letter topic, the position kept as a
    /// consumer group, every run recorded in provenance.
    #[command(subcommand)]
    Trigger(trigger::TriggerCommand),
    /// Mirror a fabric topic into a Kafka-API service's topic, or one of its
    /// topics into the fabric, exactly once, partition to partition (the
    /// cloud tier: MSK, Confluent Cloud; TLS and SASL).
    KafkaBridge(kafka::KafkaBridgeArgs),
    /// Read a Kafka topic's records as items (a cloud-side consumer), its
    /// position kept as a consumer group on the Kafka service.
    KafkaConsume(kafka::KafkaConsumeArgs),
    /// Users and their groups on a node that requires identities.
    #[command(subcommand)]
    User(auth::UserCommand),
    /// Bearer tokens: create (shown once), list, revoke.
    #[command(subcommand)]
    Token(auth::TokenCommand),
    /// ACL entries: `allow|deny User:NAME|Group:NAME|User:* OPERATION RESOURCE`.
    #[command(subcommand)]
    Acl(auth::AclCommand),
    /// Tenants: topic prefixes of their own, isolation, quotas.
    #[command(subcommand)]
    Tenant(auth::TenantCommand),
    /// Who the node takes this client to be.
    Whoami(AdminConn),
    /// A live web page of a node (topics, rates, lag, bridges, streams,
    /// pools, predictions, lineage), read through its admin and data
    /// planes; `serve --dashboard ADDR` serves the same page from the node.
    ///
    /// Topics and partitions with produce rates (items/s, bytes/s), sizes,
    /// retention and the lag of --dashboard-group groups; bridges, QoS
    /// streams, views and pools as their metric events (--metrics-interval-ms)
    /// describe them; predictions and alerts; the loop's model topics; and a
    /// lineage explorer over --prov-store. Updated every second by
    /// server-sent events; every asset is in the binary.
    ///
    /// It reads the node as a client, through the admin plane (--admin) and
    /// the data plane (--addr), or both on --node HOST, with --ca and, on a
    /// node that requires identities, --token or --cert. The page then asks
    /// for a token the node accepts (open http://ADDR/?token=TOKEN once); on
    /// a development node it is open, and stays on loopback unless
    /// --dashboard-open.
    Dashboard(dashboard::DashboardArgs),
}

impl Command {
    /// The log filter when RUST_LOG is not set: a node logs what it does
    /// (`info`); every other command only warnings.
    pub fn log_default(&self) -> &'static str {
        match self {
            Command::Serve(_) => "info",
            _ => "warn",
        }
    }
}

/// How to reach a node's admin plane.
#[derive(Args, Clone)]
pub struct AdminConn {
    /// gRPC admin address of the node.
    #[arg(long, default_value = DEFAULT_ADMIN)]
    pub admin: SocketAddr,
    /// CA certificate to verify the node with.
    #[arg(long, default_value = DEFAULT_CA)]
    pub ca: PathBuf,
    /// Who this client is.
    #[command(flatten)]
    pub creds: Credentials,
}

/// Who this client is to a node that requires identities (`serve --auth`).
#[derive(Args, Clone, Default)]
pub struct Credentials {
    /// Client certificate to present (`diaspora certs client --name NAME`);
    /// the node takes its CN as this client's user. Needs --cert-key.
    #[arg(long, requires = "cert_key", env = "DIASPORA_CERT")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert.
    #[arg(long, requires = "cert", env = "DIASPORA_CERT_KEY")]
    pub cert_key: Option<PathBuf>,
    /// Bearer token (`diaspora token create`); better given in the
    /// environment than on the command line, where `ps` shows it.
    #[arg(long, env = "DIASPORA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Never prints the token itself.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("cert", &self.cert)
            .field("cert_key", &self.cert_key)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Credentials {
    /// The client certificate, if given.
    pub fn identity(&self) -> Option<diaspora_fabric::tls::ClientIdentity> {
        match (&self.cert, &self.cert_key) {
            (Some(cert), Some(key)) => Some(diaspora_fabric::tls::ClientIdentity {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }
}

/// How to reach a node's data plane.
#[derive(Args, Clone)]
pub struct DataConn {
    /// QUIC data-plane address of the node.
    #[arg(long, default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// CA certificate to verify the node with.
    #[arg(long, default_value = DEFAULT_CA)]
    pub ca: PathBuf,
    /// Who this client is.
    #[command(flatten)]
    pub creds: Credentials,
}

impl DataConn {
    /// The client configuration these flags describe.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(self.addr, &self.ca);
        c.identity = self.creds.identity();
        c.token = self.creds.token.clone();
        c
    }
}

/// When a consuming command stops (shared by `consume` and `stream consume`).
#[derive(Args, Clone, Copy)]
pub struct StopArgs {
    /// Stop after N items.
    #[arg(long)]
    pub count: Option<u64>,
    /// Give up when no item arrives for this long, milliseconds (default: 10000 with --count, else wait forever).
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
}

impl StopArgs {
    /// How long to wait for an item before giving up.
    pub fn idle(&self) -> Duration {
        match (self.idle_timeout_ms, self.count) {
            (Some(ms), _) => Duration::from_millis(ms),
            (None, Some(_)) => Duration::from_secs(10),
            (None, None) => Duration::from_secs(u64::MAX / 4),
        }
    }

    /// Whether to read another item after `seen`.
    pub fn more(&self, seen: u64) -> bool {
        self.count.is_none_or(|n| seen < n)
    }
}

/// Publishing this process's metrics on a fabric topic.
#[derive(Args, Clone)]
pub struct MetricsArgs {
    /// Publish this process's metrics as events on --metrics-topic every
    /// this many ms (0 = off). See crates/diaspora-telemetry for the names.
    #[arg(long, default_value_t = 0)]
    pub metrics_interval_ms: u64,
    /// Topic for --metrics-interval-ms. `serve` creates it; other commands
    /// need it to exist (`diaspora topic create diaspora.metrics`).
    #[arg(long, default_value = "diaspora.metrics")]
    pub metrics_topic: String,
}

impl MetricsArgs {
    /// Whether publishing is on.
    pub fn enabled(&self) -> bool {
        self.metrics_interval_ms > 0
    }

    /// Starts publishing `registry` through `client`, if asked to.
    pub async fn start(
        &self,
        client: Client,
        source: String,
        registry: diaspora_telemetry::Registry,
        create: diaspora_telemetry::publish::TopicCreation,
    ) -> Result<Option<diaspora_telemetry::publish::MetricsPublisher>> {
        if !self.enabled() {
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

    /// Publishes, if asked to, one component's figures as metrics
    /// (`prefix.FIELD`, counters in `{item}` but for `gauges`, see
    /// [`diaspora_telemetry::collect_fields`]) under `source`, on a topic
    /// that must exist.
    pub async fn publish_fields<T, F>(
        &self,
        client: &Client,
        source: String,
        prefix: &str,
        labels: &[(&str, &str)],
        gauges: &[(&str, &str)],
        read: F,
    ) -> Result<Option<diaspora_telemetry::publish::MetricsPublisher>>
    where
        T: serde::Serialize,
        F: Fn() -> Option<T> + Send + Sync + 'static,
    {
        if !self.enabled() {
            return Ok(None);
        }
        let registry = diaspora_telemetry::Registry::new();
        diaspora_telemetry::collect_fields(&registry, prefix, labels, "{item}", gauges, read)?;
        self.start(
            client.clone(),
            source,
            registry,
            diaspora_telemetry::publish::TopicCreation::MustExist,
        )
        .await
    }
}

/// The one signal helper of every command: a future that completes at the
/// first SIGTERM or Ctrl-C. The SIGTERM handler is installed when this is
/// called (so a signal that arrives before the future is first polled is
/// not lost to the default action, which would kill the process).
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
}

/// A [`Stop`] set at the first SIGTERM or Ctrl-C ([`shutdown_signal`]):
/// commands hand it to their service loop, which then finishes cleanly
/// (output flushed, offsets committed, buffers drained) instead of dying
/// mid-write.
pub fn stop_on_signal() -> Result<Arc<Stop>> {
    Ok(Stop::when(shutdown_signal()?))
}

/// The one tracing set-up of every command: logging on stderr (RUST_LOG,
/// else `default`), and — when the standard OTEL_EXPORTER_OTLP_* variables
/// ask for it — OTLP export of traces and metrics (service `diaspora`, or
/// OTEL_SERVICE_NAME). Give the guard to [`finish_tracing`] at exit.
pub fn init_tracing(default: &str) -> Option<diaspora_telemetry::TelemetryGuard> {
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
        Ok(guard) => Some(guard),
        Err(diaspora_telemetry::TelemetryError::AlreadyInitialized) => None,
        Err(e) => {
            eprintln!("warning: telemetry: {e}");
            None
        }
    }
}

/// Flushes what [`init_tracing`] exports (a failure is a warning).
pub async fn finish_tracing(guard: Option<diaspora_telemetry::TelemetryGuard>) {
    if let Some(g) = guard {
        if let Err(e) = g.shutdown_async().await {
            eprintln!("warning: telemetry flush: {e}");
        }
    }
}

/// Prints a report as pretty JSON, or as the text `text` makes of it.
pub fn print_report<T: serde::Serialize>(
    report: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{}", text(report));
    }
    Ok(())
}

/// Connects to a node's admin plane.
pub async fn admin(conn: &AdminConn) -> Result<AdminClient> {
    check_ca(&conn.ca)?;
    Ok(AdminClient::connect_as(
        conn.admin,
        &conn.ca,
        conn.creds.identity().as_ref(),
        conn.creds.token.as_deref(),
    )
    .await?)
}

/// Refuses a CA path that does not exist, saying where one comes from.
pub fn check_ca(ca: &std::path::Path) -> Result<()> {
    if !ca.exists() {
        bail!(
            "CA file {} not found: pass --ca (the node prints its CA path at start; `diaspora certs` writes DIR/ca.pem)",
            ca.display()
        );
    }
    Ok(())
}

/// Connects to a node's data plane.
pub async fn client(conn: &DataConn) -> Result<Client> {
    check_ca(&conn.ca)?;
    Ok(Client::connect(conn.client_config()).await?)
}
