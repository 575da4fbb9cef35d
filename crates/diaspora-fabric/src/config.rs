//! Node configuration and limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use diaspora_log::FsyncPolicy;

/// Every bound the node enforces. Hitting one is a clear error naming it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest single item (record) accepted, in bytes. Default 64 MiB.
    pub item_bytes_max: u64,
    /// Largest record batch accepted, in bytes. Default 72 MiB.
    pub batch_bytes_max: u64,
    /// Most produce requests a client may have unacknowledged on one stream. Default 64.
    pub in_flight_max: u32,
    /// Most topics on a node. Default 1024.
    pub topics_max: u32,
    /// Most partitions of one topic. Default 256.
    pub partitions_max: u32,
    /// Largest fetch response, in bytes (at least one batch is always returned). Default 8 MiB.
    pub fetch_bytes_max: u32,
    /// Longest long-poll a fetch may ask for. Default 30 s.
    pub fetch_wait_max: Duration,
    /// Most records in one batch. Default 1,000,000.
    pub records_per_batch_max: u32,
    /// Most members of one consumer group. Default 1024.
    pub group_members_max: u32,
    /// Most concurrent client connections. Default 4096.
    pub connections_max: u32,
    /// Bytes of newly appended batches the node keeps in memory over all
    /// partitions, so that consumers at the head are served without reading
    /// the files (0 turns this off). Default 256 MiB.
    pub tail_bytes_max: u64,
    /// Of those, the most one partition keeps. Default 32 MiB.
    pub tail_partition_bytes_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            item_bytes_max: 64 << 20,
            batch_bytes_max: 72 << 20,
            in_flight_max: 64,
            topics_max: 1024,
            partitions_max: 256,
            fetch_bytes_max: 8 << 20,
            fetch_wait_max: Duration::from_secs(30),
            records_per_batch_max: 1_000_000,
            group_members_max: 1024,
            connections_max: 4096,
            tail_bytes_max: 256 << 20,
            tail_partition_bytes_max: 32 << 20,
        }
    }
}

impl Limits {
    /// Largest frame either side will accept: a full batch plus framing overhead.
    pub fn frame_bytes_max(&self) -> u64 {
        self.batch_bytes_max.max(u64::from(self.fetch_bytes_max)) + (64 << 10)
    }

    pub(crate) fn batch_limits(&self) -> diaspora_log::BatchLimits {
        diaspora_log::BatchLimits {
            batch_bytes_max: self.batch_bytes_max.min(u32::MAX.into()) as u32,
            record_bytes_max: self.item_bytes_max.min(u32::MAX.into()) as u32,
            records_per_batch_max: self.records_per_batch_max,
        }
    }
}

/// Configuration of a node (`diaspora serve`, or embedded).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where topics, group offsets and (by default) certificates live.
    pub data_dir: PathBuf,
    /// QUIC data-plane listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// gRPC admin listen address; `None` disables the admin plane.
    pub admin_listen: Option<SocketAddr>,
    /// Directory made by `diaspora certs`; default `DATA_DIR/certs` (created if absent).
    pub certs_dir: Option<PathBuf>,
    /// fsync policy of every partition log.
    pub fsync: FsyncPolicy,
    /// Segment size before rolling, bytes.
    pub segment_bytes_max: u64,
    /// Default retention by size per partition (None = unlimited).
    pub retention_bytes_max: Option<u64>,
    /// Default retention by age (None = unlimited).
    pub retention_age: Option<Duration>,
    /// How often retention and interval fsync run.
    pub housekeeping_interval: Duration,
    /// Limits.
    pub limits: Limits,
    /// Node id reported to clients; default: a random id kept in `DATA_DIR/node_id`.
    pub node_id: Option<String>,
    /// Congestion controller of the node's sending side (fetch responses).
    pub congestion: Congestion,
    /// Authentication mode and superusers (default: dev — anonymous
    /// clients, no ACL checks; see [`crate::guard`]).
    pub auth: crate::guard::AuthConfig,
}

impl NodeConfig {
    /// A configuration with defaults for everything but the data directory;
    /// listens on an ephemeral loopback port with the admin plane on another.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            data_dir: data_dir.into(),
            listen: "127.0.0.1:0".parse().expect("literal address"),
            admin_listen: Some("127.0.0.1:0".parse().expect("literal address")),
            certs_dir: None,
            fsync: FsyncPolicy::Interval(Duration::from_millis(100)),
            segment_bytes_max: 128 << 20,
            retention_bytes_max: None,
            retention_age: None,
            housekeeping_interval: Duration::from_millis(50),
            limits: Limits::default(),
            node_id: None,
            congestion: Congestion::default(),
            auth: crate::guard::AuthConfig::default(),
        }
    }
}

/// The QUIC congestion controller of a path's sending side, chosen per
/// path: a client (producer, bridge) sets its own in [`crate::ClientConfig`],
/// a node sets the one it sends fetch responses with in [`NodeConfig`].
///
/// Loss-based control (Cubic, NewReno) halves its window on every loss, so
/// on a long path with a little random loss one flow is held to the Mathis
/// limit (≈ MSS/RTT · 1.22/√p: ≈ 2.7 Mbit/s at 50 ms RTT and 1 % loss)
/// whatever the link rate. BBR paces at the measured bottleneck rate and
/// does not take a lost packet for congestion, but quinn's implementation
/// overshoots (see [`crate::congestion`]). The default, `tolerant`, counts
/// loss per round trip and backs off to the measured bandwidth-delay
/// product only when a round loses more than a few per cent: it keeps a
/// lossy WAN full without flooding its bottleneck queue. Cubic remains for
/// paths shared with other loss-based traffic where fairness matters more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// Loss-tolerant: per-round loss accounting, back-off to the measured
    /// bandwidth-delay product ([`crate::congestion::Tolerant`]).
    #[default]
    Tolerant,
    /// quinn's BBR (model-based: bottleneck rate and minimum RTT).
    Bbr,
    /// CUBIC (loss-based; Linux's TCP default).
    Cubic,
    /// NewReno (loss-based; the classic AIMD).
    NewReno,
}

impl Congestion {
    /// The names accepted by [`std::str::FromStr`].
    pub const NAMES: [&'static str; 4] = ["tolerant", "bbr", "cubic", "new-reno"];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Congestion::Tolerant => "tolerant",
            Congestion::Bbr => "bbr",
            Congestion::Cubic => "cubic",
            Congestion::NewReno => "new-reno",
        }
    }

    /// A controller factory for quinn's transport configuration.
    pub(crate) fn factory(
        self,
    ) -> std::sync::Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> {
        use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
        match self {
            Congestion::Tolerant => std::sync::Arc::new(crate::congestion::TolerantConfig),
            Congestion::Bbr => std::sync::Arc::new(BbrConfig::default()),
            Congestion::Cubic => std::sync::Arc::new(CubicConfig::default()),
            Congestion::NewReno => std::sync::Arc::new(NewRenoConfig::default()),
        }
    }
}

impl std::fmt::Display for Congestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Congestion {
    type Err = String;

    /// Parses `tolerant`, `bbr`, `cubic` or `new-reno` (case-insensitive).
    ///
    /// ```
    /// use diaspora_fabric::Congestion;
    /// assert_eq!("BBR".parse::<Congestion>(), Ok(Congestion::Bbr));
    /// assert!("vegas".parse::<Congestion>().unwrap_err().contains("tolerant, bbr, cubic, new-reno"));
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tolerant" => Ok(Congestion::Tolerant),
            "bbr" => Ok(Congestion::Bbr),
            "cubic" => Ok(Congestion::Cubic),
            "new-reno" | "newreno" => Ok(Congestion::NewReno),
            _ => Err(format!(
                "unknown congestion controller '{s}' (expected one of {})",
                Congestion::NAMES.join(", ")
            )),
        }
    }
}
