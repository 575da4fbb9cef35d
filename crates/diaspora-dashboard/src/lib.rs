//! # diaspora-dashboard
//!
//! A web page that shows a diaspora node as it runs, served by the node
//! (`diaspora serve --dashboard 127.0.0.1:8090`) or by a process beside a
//! remote node (`diaspora dashboard --addr … --admin …`). Both read the node
//! the same way, as a client: the admin plane (topics, partitions, group
//! offsets, stats) and the data plane (the metrics topic and a few event
//! topics), so what the page shows is what any client could know.
//!
//! ## Model
//!
//! - A **poller** ([`source::Poller`]) samples the node every interval
//!   (default 1 s) and builds one [`source::Frame`]: topics and partitions
//!   with rates (items/s and bytes/s from two successive samples of end
//!   offsets and sizes — [`core::topic_views`]), sizes, retention and the
//!   lag of the consumer groups it was told to watch (the admin plane has
//!   no call that lists groups); the services as their metric events
//!   describe them ([`core::Services`]: bridges, QoS streams, views,
//!   pools); and the last events of the tailed topics
//!   ([`source::tail_role`]: predictions and alerts, pool events, the
//!   loop's model topics, invalidation notices). What no one reports is
//!   shown as "none reported", never invented.
//! - The **server** ([`server`], axum) sends each frame, serialised once,
//!   to every browser as a server-sent event; the page (HTML, plain
//!   JavaScript, CSS) is compiled into the binary — nothing is fetched from
//!   elsewhere at run time.
//! - The **lineage explorer** asks the provenance store (`--prov-store`)
//!   for a record — an id, an item `topic/partition/offset`, `name:NAME`, a
//!   tag or `model@version` — and shows its lineage up and down and, if it
//!   is invalid, its why-chain.
//!
//! ## Access
//!
//! The dashboard follows the node's authentication ([`server::access_for`]):
//! a dev-mode node's dashboard is open and therefore binds only to a
//! loopback address unless told otherwise (`--dashboard-open`); a node that
//! requires identities gets a dashboard that requires a bearer token the
//! node accepts (`Authorization: Bearer`, or `/?token=` once, which sets a
//! cookie). The token is checked by asking the node who it is
//! (`WhoAmI`) and whether it may describe the cluster (the page shows all
//! of it: `allow User:NAME describe cluster`, or a superuser), so a revoked
//! token stops working within [`server::TOKEN_TRUST`]. In `cert` mode the
//! node takes no tokens, so no browser can open the page (a limit).
//!
//! ## Limits
//!
//! [`source::TOPICS_MAX`] topics sampled, [`source::TAILS_MAX`] topics
//! tailed with [`core::TAIL_MAX`] events each, [`core::SOURCES_MAX`]
//! metric sources, [`server::EVENT_CLIENTS_MAX`] browsers,
//! [`server::QUERIES_MAX`] lineage queries at once, each listing at most
//! [`server::LINEAGE_NODES_MAX`] records per direction.
//!
//! - An **in-process loop** (the demo: `diaspora demo --dashboard`) can
//!   hand in a probe ([`source::LoopProbe`]) that the poller asks each
//!   interval for its phase, timeline and latest reconstruction
//!   ([`core::LoopStatus`], a grayscale image of at most
//!   [`core::IMAGE_PIXELS_MAX`] pixels drawn on a canvas).
//!
//! What it does not do: keep history (a rate is the last interval's),
//! change anything on the node, or show images of a loop that runs
//! elsewhere (its model topics are listed by their metadata only).
//!
//! ```no_run
//! # async fn demo() -> Result<(), diaspora_dashboard::DashboardError> {
//! use diaspora_dashboard::{Dashboard, DashboardConfig, NodeSource};
//! let source = NodeSource {
//!     admin: "127.0.0.1:7401".parse().unwrap(),
//!     ca: "diaspora-data/certs/ca.pem".into(),
//!     identity: None,
//!     token: None,
//!     data: None,
//!     metrics_topic: "diaspora.metrics".into(),
//!     groups: vec![],
//!     interval: std::time::Duration::from_secs(1),
//! };
//! let d = Dashboard::start(DashboardConfig::new("127.0.0.1:8090".parse().unwrap(), source)).await?;
//! println!("dashboard on http://{}", d.local_addr());
//! d.stop().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod core;
pub mod server;
pub mod source;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use server::Access;
pub use source::{Frame, NodeSource};

/// What can go wrong starting a dashboard.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The address could not be bound.
    #[error("dashboard address {addr}: {message}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What went wrong, and what to do.
        message: String,
    },
    /// An open dashboard on a non-loopback address.
    #[error(
        "dashboard address {addr} is not a loopback address and the node lets anyone in \
         (auth=dev), so anyone who reaches it could read the node: bind to 127.0.0.1, run \
         the node with --auth token, or pass --dashboard-open to mean it"
    )]
    OpenOnNetwork {
        /// The address.
        addr: SocketAddr,
    },
    /// The provenance store could not be opened.
    #[error("provenance store {url}: {message}")]
    Store {
        /// The store (its password left out).
        url: String,
        /// Why.
        message: String,
    },
    /// The node could not be reached.
    #[error("reading the node at {admin}: {source}")]
    Node {
        /// Its admin address.
        admin: SocketAddr,
        /// Why.
        source: diaspora_fabric::FabricError,
    },
}

/// How to run a dashboard.
#[derive(Clone)]
pub struct DashboardConfig {
    /// Where to serve the page.
    pub listen: SocketAddr,
    /// Serve an open dashboard (dev-mode node) on a non-loopback address.
    pub allow_open: bool,
    /// The provenance store for the lineage explorer (`None`: no explorer).
    pub prov_store: Option<String>,
    /// The node.
    pub source: NodeSource,
    /// An in-process loop to ask for its phase, events and latest image
    /// each interval (the demo's; `None` elsewhere).
    pub loop_probe: Option<source::LoopProbe>,
}

impl DashboardConfig {
    /// Serves on `listen`, reading `source`; no explorer, loopback only when open.
    pub fn new(listen: SocketAddr, source: NodeSource) -> DashboardConfig {
        DashboardConfig {
            listen,
            allow_open: false,
            prov_store: None,
            source,
            loop_probe: None,
        }
    }
}

/// Opens the store once, so that a wrong URL is an error at start rather
/// than on the first query; a SQLite path must exist (the dashboard only
/// reads: an empty new store would hide a typo).
pub async fn check_store(url: &str) -> Result<(), DashboardError> {
    let err = |message: String| DashboardError::Store {
        url: diaspora_provenance::redact_url(url),
        message,
    };
    let is_pg = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !is_pg {
        let path = url.strip_prefix("sqlite:").unwrap_or(url);
        if !std::path::Path::new(path).is_file() {
            return Err(err(format!(
                "no SQLite file at {path} (give the file `diaspora prov` writes, or postgres://USER:PASS@HOST/DB)"
            )));
        }
    }
    let u = url.to_string();
    tokio::task::spawn_blocking(move || diaspora_provenance::Provenance::open(&u).map(drop))
        .await
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(e.to_string()))
}

/// A running dashboard.
pub struct Dashboard {
    addr: SocketAddr,
    access: Access,
    poller: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Dashboard {
    /// Checks the store, asks the node its auth mode, binds, and starts
    /// polling and serving.
    pub async fn start(config: DashboardConfig) -> Result<Dashboard, DashboardError> {
        if let Some(url) = &config.prov_store {
            check_store(url).await?;
        }
        let node_err = |source| DashboardError::Node {
            admin: config.source.admin,
            source,
        };
        let mut admin = config.source.admin().await.map_err(node_err)?;
        let mode = admin.who_am_i().await.map_err(node_err)?.mode;
        drop(admin);
        let access = server::access_for(config.listen, &mode, config.allow_open)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| DashboardError::Bind {
                addr: config.listen,
                message: match e.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        "already in use (another dashboard or program listens there): choose another port".into()
                    }
                    std::io::ErrorKind::AddrNotAvailable => {
                        "not an address of this machine".into()
                    }
                    _ => e.to_string(),
                },
            })?;
        let addr = listener.local_addr().map_err(|e| DashboardError::Bind {
            addr: config.listen,
            message: e.to_string(),
        })?;
        let (tx, rx) = tokio::sync::watch::channel::<Arc<str>>(Arc::from("{}"));
        let poller = source::Poller::new(
            config.source.clone(),
            config.prov_store.is_some(),
            config.loop_probe.clone(),
        );
        let poller = tokio::spawn(poller.run(tx));
        let state = Arc::new(server::AppState::new(
            rx,
            access,
            config.source.admin,
            config.source.ca.clone(),
            config.prov_store.clone(),
        ));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let app = server::router(state);
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!("dashboard server: {e}");
            }
        });
        Ok(Dashboard {
            addr,
            access,
            poller,
            server,
            stop,
        })
    }

    /// The address it serves on (the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Who may open it.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Stops polling and serving: browsers' event streams end, and
    /// connections still open after a second are dropped.
    pub async fn stop(mut self) {
        self.poller.abort();
        let _ = (&mut self.poller).await;
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(1), &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
        }
    }
}

/// A dashboard dropped without [`Dashboard::stop`] (an error path) stops
/// polling and serving at once.
impl Drop for Dashboard {
    fn drop(&mut self) {
        self.poller.abort();
        self.server.abort();
    }
}
