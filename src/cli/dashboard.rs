//! `diaspora dashboard` and `serve --dashboard`: the live web page of a
//! node. The page and its poller live in `diaspora-dashboard`; this builds
//! its configuration from the command line and waits for the signal.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use diaspora_dashboard::{Access, Dashboard, DashboardConfig, NodeSource};

use super::{check_ca, shutdown_signal, DataConn, DEFAULT_ADMIN};

/// The default address of the dashboard page.
pub const DEFAULT_DASHBOARD: &str = "127.0.0.1:8090";

/// What the dashboard shows beyond the node's own figures (shared by
/// `serve --dashboard` and `diaspora dashboard`).
#[derive(Args, Clone, Debug, Default)]
pub struct DashboardOpts {
    /// Provenance store for the page's lineage explorer: a SQLite file
    /// (it must exist: the dashboard only reads) or postgres://USER:PASS@HOST/DB.
    /// Without it the explorer says so.
    #[arg(long = "prov-store", value_name = "URL")]
    pub prov_store: Option<String>,
    /// A consumer group whose lag to show on each topic it reads
    /// (repeatable). The node's admin plane cannot list groups, so the
    /// dashboard shows the ones named here.
    #[arg(long = "dashboard-group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Serve the dashboard on a non-loopback address even though the node
    /// lets anyone in (auth=dev): anyone who reaches the address can read
    /// the node's topics and lineage. A node with --auth token gets a
    /// dashboard that asks for a token instead, on any address.
    #[arg(long)]
    pub dashboard_open: bool,
    /// How often the page is brought up to date, milliseconds (rates are
    /// measured over this interval).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub dashboard_interval_ms: u64,
}

impl DashboardOpts {
    /// Whether any of these was given (they need `--dashboard` on `serve`).
    pub fn any_given(&self) -> bool {
        self.prov_store.is_some()
            || !self.groups.is_empty()
            || self.dashboard_open
            || self.dashboard_interval_ms != 1000
    }

    /// The dashboard's configuration for a node read through `source`.
    pub fn config(&self, listen: SocketAddr, mut source: NodeSource) -> DashboardConfig {
        source.groups = self.groups.clone();
        source.interval = Duration::from_millis(self.dashboard_interval_ms.clamp(100, 60_000));
        let mut c = DashboardConfig::new(listen, source);
        c.allow_open = self.dashboard_open;
        c.prov_store = self.prov_store.clone();
        c
    }
}

/// Arguments of `diaspora dashboard`.
#[derive(Args)]
pub struct DashboardArgs {
    /// Address to serve the page on.
    #[arg(long, default_value = DEFAULT_DASHBOARD)]
    listen: SocketAddr,
    /// The node's host: its data plane at HOST:7400 and admin plane at
    /// HOST:7401 (the defaults of `serve`). Use --addr and --admin for other ports.
    #[arg(long, value_name = "HOST", conflicts_with_all = ["admin", "addr"])]
    node: Option<IpAddr>,
    /// gRPC admin address of the node.
    #[arg(long, default_value = DEFAULT_ADMIN)]
    admin: SocketAddr,
    /// The node's data plane, CA and credentials.
    #[command(flatten)]
    conn: DataConn,
    /// Topic the node and services publish their metrics on.
    #[arg(long, default_value = "diaspora.metrics")]
    metrics_topic: String,
    #[command(flatten)]
    opts: DashboardOpts,
}

/// Prints where the page is and how to open it.
pub fn announce(d: &Dashboard) {
    match d.access() {
        Access::Open => eprintln!("dashboard: http://{}/", d.local_addr()),
        Access::Token => eprintln!(
            "dashboard: http://{}/?token=TOKEN (the node requires identities: open it once with \
             a token the node accepts, `diaspora token create`)",
            d.local_addr()
        ),
    }
}

/// Runs `diaspora dashboard` until SIGTERM or Ctrl-C.
pub async fn run(a: DashboardArgs) -> Result<()> {
    check_ca(&a.conn.ca)?;
    let mut conn = a.conn.clone();
    let mut admin = a.admin;
    if let Some(host) = a.node {
        conn.addr = SocketAddr::new(host, conn.addr.port());
        admin = SocketAddr::new(host, admin.port());
    }
    let source = NodeSource {
        admin,
        ca: conn.ca.clone(),
        identity: conn.creds.identity(),
        token: conn.creds.token.clone(),
        data: Some(conn.client_config()),
        metrics_topic: a.metrics_topic.clone(),
        groups: Vec::new(),
        interval: Duration::from_secs(1),
    };
    let d = Dashboard::start(a.opts.config(a.listen, source))
        .await
        .context("starting the dashboard")?;
    announce(&d);
    shutdown_signal()?.await;
    d.stop().await;
    Ok(())
}
