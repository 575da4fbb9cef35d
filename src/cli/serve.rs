//! `diaspora serve` and `diaspora certs`: a node, and the development
//! certificates it starts with. The node runs in `diaspora-fabric`
//! ([`Node`]); this waits for the signal to stop it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use diaspora_fabric::{Client, ClientConfig, FsyncPolicy, Node, NodeConfig};

use super::{shutdown_signal, MetricsArgs, DEFAULT_ADDR, DEFAULT_ADMIN, DEFAULT_DATA_DIR};

/// Arguments of `diaspora serve`.
#[derive(Args)]
pub struct ServeArgs {
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
    /// Congestion controller of what the node sends (fetch responses to
    /// consumers and to bridges that pull): tolerant (default), bbr, cubic
    /// or new-reno.
    #[arg(long, default_value_t = diaspora_fabric::Congestion::default())]
    congestion: diaspora_fabric::Congestion,
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
    /// How clients authenticate: cert (a client certificate from
    /// `diaspora certs client`), token (`diaspora token create`),
    /// cert-or-token, cert-and-token, or dev (anonymous clients, no ACL
    /// checks). Default: dev on a loopback address; any other address
    /// needs --auth given, so an open node is never an accident.
    #[arg(long)]
    auth: Option<diaspora_fabric::AuthMode>,
    /// A user allowed everything whatever the ACL says (repeatable): the
    /// administrator who grants the rest, e.g. with a client certificate
    /// from `diaspora certs client --name admin`.
    #[arg(long = "superuser")]
    superusers: Vec<String>,
    /// Also serve the live web dashboard on this address (e.g.
    /// 127.0.0.1:8090): topics, rates, lag, services, lineage. On a
    /// development node (auth=dev) it is open to whoever reaches it, so a
    /// non-loopback address needs --dashboard-open; otherwise it asks for a
    /// token the node accepts. `diaspora dashboard` serves the same page
    /// for a node that runs elsewhere.
    #[arg(long, value_name = "ADDR")]
    dashboard: Option<SocketAddr>,
    #[command(flatten)]
    dashboard_opts: super::dashboard::DashboardOpts,
}

/// The user name of the node's own clients (its metrics publisher): a
/// superuser with a certificate the node issues itself from its CA.
pub const NODE_USER: &str = "diaspora-node";

/// Arguments of `diaspora certs`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CertsArgs {
    /// Output directory for a new CA and node certificate.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the node certificate (localhost, 127.0.0.1 and ::1 are always in).
    #[arg(long = "host")]
    hosts: Vec<String>,
    #[command(subcommand)]
    command: Option<CertsCommand>,
}

/// `diaspora certs` subcommands.
#[derive(clap::Subcommand)]
pub enum CertsCommand {
    /// Issue a client certificate for a user, signed by a CA made with
    /// `diaspora certs --out DIR`; the node takes its CN as the user.
    Client {
        /// The user (1–128 characters of A–Z a–z 0–9 . _ @ -).
        #[arg(long)]
        name: String,
        /// Directory holding ca.pem and ca.key.
        #[arg(long)]
        ca_dir: PathBuf,
        /// Where to write NAME.pem and NAME.key (default: --ca-dir).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs a node until SIGTERM or Ctrl-C.
pub async fn serve(a: ServeArgs) -> Result<()> {
    let mut cfg = NodeConfig::new(&a.data_dir);
    cfg.listen = a.listen;
    cfg.admin_listen = Some(a.admin);
    cfg.certs_dir = a.certs;
    cfg.fsync = a.fsync;
    cfg.congestion = a.congestion;
    cfg.segment_bytes_max = a.segment_bytes;
    cfg.retention_bytes_max = (a.retention_bytes > 0).then_some(a.retention_bytes);
    cfg.retention_age = (a.retention_s > 0).then(|| Duration::from_secs(a.retention_s));
    cfg.limits.item_bytes_max = a.item_bytes_max;
    cfg.limits.batch_bytes_max = a.batch_bytes_max.max(a.item_bytes_max + 4096);
    cfg.limits.in_flight_max = a.in_flight_max;
    cfg.limits.topics_max = a.topics_max;
    cfg.limits.partitions_max = a.partitions_max;
    cfg.auth.mode = match a.auth {
        Some(m) => m,
        None if a.listen.ip().is_loopback() => diaspora_fabric::AuthMode::Dev,
        None => anyhow::bail!(
            "--listen {} is not a loopback address: choose how clients authenticate with --auth \
             (cert, token, cert-or-token, cert-and-token, or dev for an open development node)",
            a.listen
        ),
    };
    cfg.auth.superusers = a.superusers.clone();
    if a.dashboard.is_none() && a.dashboard_opts.any_given() {
        anyhow::bail!(
            "--prov-store, --dashboard-group, --dashboard-open and --dashboard-interval-ms \
             configure the dashboard: give --dashboard ADDR too"
        );
    }
    let metrics = a.metrics.metrics_interval_ms > 0;
    // The node's own clients (its metrics publisher, its dashboard) are a
    // superuser with a certificate the node issues itself.
    if (metrics || a.dashboard.is_some()) && cfg.auth.mode != diaspora_fabric::AuthMode::Dev {
        cfg.auth.superusers.push(NODE_USER.into());
    }
    let node = Node::start(cfg)
        .await
        .with_context(|| format!("starting node in {}", a.data_dir.display()))?;
    let mode = node.broker().guard.mode();
    eprintln!(
        "diaspora node serving: data plane quic://{} admin https://{} fsync={} ca={} auth={}{}",
        node.data_addr(),
        node.admin_addr().map(|a| a.to_string()).unwrap_or_default(),
        a.fsync,
        node.ca_file().display(),
        mode,
        if mode == diaspora_fabric::AuthMode::Dev {
            " (DEVELOPMENT MODE: anonymous clients allowed, no ACL checked)"
        } else {
            ""
        }
    );
    let mut own = ClientConfig::new(node.data_addr(), node.ca_file());
    if (metrics || a.dashboard.is_some()) && mode != diaspora_fabric::AuthMode::Dev {
        let dir = node.ca_file().parent().unwrap_or(&a.data_dir).to_path_buf();
        own.identity = Some(
            diaspora_fabric::tls::issue_client_cert(&dir, NODE_USER, &dir.join("clients"))
                .context("issuing the node's own client certificate")?,
        );
    }
    let publisher = if metrics {
        let registry = diaspora_telemetry::Registry::new();
        diaspora_telemetry::collect_broker(&registry, node.broker().clone())?;
        let client = Client::connect(own.clone()).await?;
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
    let dashboard = match a.dashboard {
        Some(listen) => {
            let source = diaspora_dashboard::NodeSource {
                admin: node.admin_addr().context("the node has no admin plane")?,
                ca: node.ca_file().to_path_buf(),
                identity: own.identity.clone(),
                token: None,
                data: Some(own.clone()),
                metrics_topic: a.metrics.metrics_topic.clone(),
                groups: Vec::new(),
                interval: Duration::from_secs(1),
            };
            let d =
                diaspora_dashboard::Dashboard::start(a.dashboard_opts.config(listen, source)).await;
            match d {
                Ok(d) => {
                    super::dashboard::announce(&d);
                    Some(d)
                }
                Err(e) => {
                    node.shutdown().await;
                    return Err(anyhow::Error::new(e).context("starting the dashboard"));
                }
            }
        }
        None => None,
    };
    shutdown_signal()?.await;
    eprintln!("shutting down");
    if let Some(d) = dashboard {
        d.stop().await;
    }
    if let Some(p) = publisher {
        p.stop().await;
    }
    node.shutdown().await;
    Ok(())
}

/// Writes a development CA and node certificate.
pub fn certs(a: CertsArgs) -> Result<()> {
    if let Some(CertsCommand::Client { name, ca_dir, out }) = a.command {
        let out = out.unwrap_or_else(|| ca_dir.clone());
        let id = diaspora_fabric::tls::issue_client_cert(&ca_dir, &name, &out)?;
        println!(
            "wrote {} and {} for User:{name}",
            id.cert.display(),
            id.key.display()
        );
        println!(
            "connect with: --cert {} --cert-key {}",
            id.cert.display(),
            id.key.display()
        );
        return Ok(());
    }
    let Some(out) = a.out else {
        anyhow::bail!("pass --out DIR for a new CA and node certificate, or `certs client --name NAME --ca-dir DIR` for a client certificate");
    };
    let paths = diaspora_fabric::tls::generate_dev_certs(&out, &a.hosts)?;
    println!(
        "wrote {}, {}, {}",
        paths.ca.display(),
        paths.node_cert.display(),
        paths.node_key.display()
    );
    println!(
        "start a node with: diaspora serve --certs {}",
        out.display()
    );
    Ok(())
}
