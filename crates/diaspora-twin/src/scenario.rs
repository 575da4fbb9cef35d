//! Scenario files (`twins/*.toml`): hosts, links, a fault schedule, a
//! workload and assertions. See `twins/README.md` for the format by example.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use crate::{LinkParams, TwinError};

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What it exercises.
    #[serde(default)]
    pub description: String,
    /// How long producers produce, seconds.
    pub duration_s: f64,
    /// Longest wait after production ends for consumers to catch up, seconds.
    #[serde(default = "default_drain_s")]
    pub drain_s: f64,
    /// Seed of every link's randomness (overridden by `--seed`).
    #[serde(default)]
    pub seed: u64,
    /// Nodes (`diaspora serve`).
    #[serde(default)]
    pub nodes: Vec<NodeHost>,
    /// Topics, created on the nodes named.
    #[serde(default)]
    pub topics: Vec<TopicSpec>,
    /// Emulated links, each a relay in front of a node's data plane.
    #[serde(default)]
    pub links: Vec<LinkSpec>,
    /// Bridges (`diaspora bridge`).
    #[serde(default)]
    pub bridges: Vec<BridgeHost>,
    /// Producers (`diaspora produce`).
    #[serde(default)]
    pub producers: Vec<ProducerHost>,
    /// Consumers (`diaspora consume`).
    #[serde(default)]
    pub consumers: Vec<ConsumerHost>,
    /// Fault schedule.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Publish the links' metrics on a node's metrics topic (see
    /// [`crate::metrics`]).
    #[serde(default)]
    pub metrics: Option<MetricsSpec>,
    /// Monitors (`diaspora predict serve`) reading the metrics topic.
    #[serde(default)]
    pub monitors: Vec<MonitorHost>,
    /// Compute pools (`diaspora pool run`), each with its inline spec.
    #[serde(default)]
    pub pools: Vec<PoolHost>,
    /// Task streams submitted to the pools.
    #[serde(default)]
    pub tasks: Vec<TaskStream>,
    /// The ptychography loop's stages.
    #[serde(default)]
    pub ptycho: Option<PtychoLoop>,
    /// Identities and ACLs (none: every node in development mode).
    #[serde(default)]
    pub auth: Option<AuthSpec>,
    /// Kafka-protocol brokers (Tansu): the cloud tier.
    #[serde(default)]
    pub brokers: Vec<BrokerHost>,
    /// Kafka bridges (`diaspora kafka-bridge`) between a node and a broker.
    #[serde(default)]
    pub kafka_bridges: Vec<KafkaBridgeHost>,
    /// Consumers of a broker's topic (`diaspora kafka-consume`).
    #[serde(default)]
    pub kafka_consumers: Vec<KafkaConsumerHost>,
    /// What must hold.
    #[serde(default)]
    pub assertions: Assertions,
}

/// `[auth]`: every node enforces identities and its ACL. The run makes
/// one CA for all nodes; every host is a user named after itself with a
/// client certificate of that name (bridges use it on both sides, pools
/// hand it to their workers); the twin itself is the superuser `twin`
/// (topics, grants, metrics). Nothing is allowed but what `grants` say.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// `serve --auth`: cert or cert-or-token (the hosts present
    /// certificates).
    #[serde(default = "default_auth_mode")]
    pub mode: String,
    /// ACL entries granted before any host but the nodes starts.
    #[serde(default)]
    pub grants: Vec<AuthGrant>,
}

/// Entries of one node's ACL (`diaspora acl grant` syntax).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthGrant {
    /// The nodes (none: every node).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Entries, e.g. `allow User:det-a write topic:frames`.
    pub acl: Vec<String>,
}

fn default_auth_mode() -> String {
    "cert".into()
}

/// The `[auth]` modes a twin can run (its hosts present certificates).
pub const TWIN_AUTH_MODES: [&str; 2] = ["cert", "cert-or-token"];

/// Where a scenario publishes its link metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSpec {
    /// The node the metrics topic lives on.
    pub node: String,
    /// The topic (default `diaspora.metrics`).
    #[serde(default = "default_metrics_topic")]
    pub topic: String,
    /// Sampling interval, ms (default 500; not scaled by --duration-scale).
    #[serde(default = "default_metrics_interval")]
    pub interval_ms: u64,
}

fn default_metrics_topic() -> String {
    "diaspora.metrics".into()
}
fn default_metrics_interval() -> u64 {
    500
}

/// A monitor host: `diaspora predict serve --monitor FILE` against a node.
/// Its events (one JSON line each) are kept in its directory as
/// `events.jsonl` and summarised in the results.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorHost {
    /// Host name.
    pub name: String,
    /// Node it reads metrics from and publishes events to.
    pub node: String,
    /// The monitor file (relative to the working directory).
    pub file: std::path::PathBuf,
}

fn default_drain_s() -> f64 {
    60.0
}

/// A compute pool: `diaspora pool run` against a node, its spec inline.
/// Its workers are the pool's own child processes; a site whose `via`
/// names a link reaches the node through that link's relay (the twin sets
/// the site's `fabric_addr`). The pool's events and results topics are
/// recorded by two more hosts, `NAME-events` and `NAME-results`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolHost {
    /// Host name, also the pool's name (its topics are `pool.NAME.*`).
    pub name: String,
    /// The node the pool and its workers use.
    pub node: String,
    /// Link the pool itself uses to reach the node.
    #[serde(default)]
    pub via: Option<String>,
    /// Time between the pool's rounds, ms.
    #[serde(default = "default_pool_tick_ms")]
    pub tick_ms: u64,
    /// The pool spec (the `diaspora pool check` format) without `name`;
    /// `[worker]` defaults to `command = ["diaspora", "pool", "worker"]`,
    /// and each `[[spec.site]]` may say `via = "LINK"`.
    pub spec: toml::Table,
}

fn default_pool_tick_ms() -> u64 {
    200
}

/// What the twin needs to know of a pool's spec to judge it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PoolShape {
    /// Its scaling: only `min_total` is read.
    pub scaling: PoolScalingShape,
    /// Its sites, in spec order.
    #[serde(rename = "site", default)]
    pub sites: Vec<PoolSiteShape>,
}

/// The part of a pool's `[scaling]` the twin reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PoolScalingShape {
    /// Workers kept alive across all sites.
    pub min_total: u32,
    /// Most workers; also the partitions of the pool's tasks topic.
    pub max_total: u32,
}

impl PoolShape {
    /// Partitions of the pool's tasks topic, as `pool run` creates it (one
    /// per possible worker, at most 256).
    pub fn task_partitions(&self) -> u32 {
        self.scaling.max_total.clamp(1, 256)
    }
}

/// The part of a pool's site the twin reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PoolSiteShape {
    /// Site name.
    pub name: String,
    /// Workers kept there while it is reachable.
    #[serde(default)]
    pub min: u32,
    /// The link its workers reach the node through.
    #[serde(default)]
    pub via: Option<String>,
}

impl PoolHost {
    /// The parts of its spec the twin reads.
    pub fn shape(&self) -> Result<PoolShape, TwinError> {
        toml::Value::Table(self.spec.clone())
            .try_into()
            .map_err(|e: toml::de::Error| TwinError::PoolSpec {
                pool: self.name.clone(),
                detail: e.message().to_string(),
            })
    }
}

/// A stream of tasks submitted to a pool: `rate` tasks/s for the
/// scenario's duration, each sleeping `sleep_ms`, keyed `NAME-0`,
/// `NAME-1`, … — `diaspora produce --file` of task messages onto the
/// pool's tasks topic, each acknowledgement recorded. Tasks are spread over
/// the topic's partitions as `pool submit` spreads them by key: one
/// producer per partition (hosts `NAME-p0`, `NAME-p1`, …), task `n` on
/// partition `n mod partitions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskStream {
    /// Host name, also the prefix of its task keys.
    pub name: String,
    /// The pool.
    pub pool: String,
    /// Tasks per second.
    pub rate: f64,
    /// What each task does: sleep this long, ms.
    pub sleep_ms: u64,
    /// Link used to reach the pool's node.
    #[serde(default)]
    pub via: Option<String>,
}

/// A node host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeHost {
    /// Host name.
    pub name: String,
    /// fsync policy (`always`, `interval[:ms]`, `never`).
    #[serde(default = "default_fsync")]
    pub fsync: String,
}

fn default_fsync() -> String {
    "interval".into()
}

/// A topic on some nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partitions.
    #[serde(default = "one")]
    pub partitions: u32,
    /// Nodes that hold it.
    pub nodes: Vec<String>,
    /// A QoS stream topic: also create its control and replay topics
    /// (`diaspora stream init`).
    #[serde(default)]
    pub qos: bool,
}

fn one() -> u32 {
    1
}

/// A link: a relay in front of node `to`; hosts that name it in `via`
/// reach `to` through it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Link name.
    pub name: String,
    /// The node behind the link.
    pub to: String,
    /// Client → node direction.
    pub up: LinkParams,
    /// Node → client direction (default: same as `up`).
    #[serde(default)]
    pub down: Option<LinkParams>,
}

/// A bridge host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeHost {
    /// Host name (also the bridge's name).
    pub name: String,
    /// Source node.
    pub from: String,
    /// Target node.
    pub to: String,
    /// Topic (on the source; on the target too unless `to_topic`).
    pub topic: String,
    /// The topic on the target, when its name differs.
    #[serde(default)]
    pub to_topic: Option<String>,
    /// Link used to reach the target.
    #[serde(default)]
    pub via: Option<String>,
    /// Congestion controller of the bridge's connections (`tolerant`, `bbr`, `cubic`,
    /// `new-reno`; default: the binary's, tolerant).
    #[serde(default)]
    pub congestion: Option<String>,
    /// QUIC connections to each node, `1..=64` (default: the binary's).
    #[serde(default)]
    pub connections: Option<usize>,
}

/// The congestion controllers `diaspora bridge --congestion` accepts.
pub const CONGESTION_CONTROLLERS: [&str; 4] = ["tolerant", "bbr", "cubic", "new-reno"];

/// The ptychography loop (`[ptycho]`) as three processes of the binary
/// (`diaspora demo --stage`): `hpc` on the HPC node, `edge` and `detector`
/// on the edge node. ePIE runs on the pool host named `epie`; the WAN is
/// whatever links and bridges the scenario declares between the nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtychoLoop {
    /// The edge node.
    pub edge: String,
    /// The HPC node.
    pub hpc: String,
    /// Scans the detector takes.
    pub scans: usize,
    /// Positions (frames) per scan.
    pub positions: usize,
    /// The loop's other flags (`diaspora demo --help`), the same for all.
    #[serde(default)]
    pub args: Vec<String>,
}

/// A producer host: `rate` items/s of `size` bytes for the scenario's duration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerHost {
    /// Host name.
    pub name: String,
    /// Node it produces to.
    pub node: String,
    /// Topic.
    pub topic: String,
    /// Items per second.
    pub rate: f64,
    /// Payload bytes per item.
    pub size: usize,
    /// Link used to reach the node.
    #[serde(default)]
    pub via: Option<String>,
    /// Produce through a QoS stream with this policy (the `diaspora stream`
    /// policy format, inline); its topic must have `qos = true`.
    #[serde(default)]
    pub qos: Option<toml::Table>,
    /// Synthetic payload: `random` (default) or `frame` (u16 detector frames).
    #[serde(default)]
    pub payload: Option<String>,
}

/// A Kafka-protocol broker (`[[brokers]]`): Tansu, its SQLite storage in
/// the host's directory (kept across a restart), on a loopback port. The
/// binary is `DIASPORA_TANSU`, else `tansu` on the `PATH`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerHost {
    /// Host name.
    pub name: String,
}

/// A Kafka bridge (`[[kafka_bridges]]`): `diaspora kafka-bridge` between a
/// fabric topic on a node and a topic on a broker. Towards Kafka it creates
/// the Kafka topic (with the fabric topic's partitions) if absent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaBridgeHost {
    /// Host name (also the bridge's name: its position's group).
    pub name: String,
    /// The node.
    pub node: String,
    /// The fabric topic.
    pub topic: String,
    /// The broker.
    pub broker: String,
    /// The Kafka topic (default: the fabric topic's name).
    #[serde(default)]
    pub kafka_topic: Option<String>,
    /// `to-kafka` (default) or `from-kafka`.
    #[serde(default = "default_kafka_direction")]
    pub direction: String,
}

fn default_kafka_direction() -> String {
    "to-kafka".into()
}

/// A consumer of a broker's topic (`[[kafka_consumers]]`): `diaspora
/// kafka-consume --json`, its position a consumer group on the broker.
/// Its deliveries count as the topic's of the same name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConsumerHost {
    /// Host name.
    pub name: String,
    /// The broker.
    pub broker: String,
    /// The Kafka topic.
    pub topic: String,
    /// Consumer group (default: the host name).
    #[serde(default)]
    pub group: Option<String>,
}

/// A consumer host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerHost {
    /// Host name.
    pub name: String,
    /// Node it reads from.
    pub node: String,
    /// Topic.
    pub topic: String,
    /// Consumer group (default: the host name).
    #[serde(default)]
    pub group: Option<String>,
    /// Link used to reach the node.
    #[serde(default)]
    pub via: Option<String>,
    /// Consume through a QoS stream with this policy (inline); its position
    /// is checkpointed in the host's directory.
    #[serde(default)]
    pub qos: Option<toml::Table>,
}

/// One scheduled fault. (No `deny_unknown_fields` here: serde cannot combine
/// it with the flattened, tagged `kind`.)
#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    /// When, seconds from the start.
    pub at_s: f64,
    /// What.
    #[serde(flatten)]
    pub kind: FaultKind,
}

/// The faults a scenario can inject.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Blackhole both directions of a link for `duration_s`.
    Outage {
        /// Link name.
        link: String,
        /// Seconds.
        duration_s: f64,
    },
    /// Congestion: bandwidth falls linearly to `to_fraction` of the link's
    /// configured bandwidth over `ramp_s`, holds for `hold_s`, and recovers
    /// linearly over `ramp_s`.
    Congestion {
        /// Link name.
        link: String,
        /// Fraction of the base bandwidth at the bottom, (0, 1].
        to_fraction: f64,
        /// Ramp time each way, seconds.
        ramp_s: f64,
        /// Time at the bottom, seconds.
        hold_s: f64,
    },
    /// Set a link's bandwidth (both directions), Mbit/s.
    Bandwidth {
        /// Link name.
        link: String,
        /// New bandwidth.
        mbit: f64,
    },
    /// SIGKILL a host.
    Kill {
        /// Host name.
        host: String,
    },
    /// Start a killed host again (same data directory and ports).
    Restart {
        /// Host name.
        host: String,
    },
    /// SIGSTOP a host.
    Stop {
        /// Host name.
        host: String,
    },
    /// SIGCONT a host.
    Cont {
        /// Host name.
        host: String,
    },
    /// SIGKILL one child process of a pool host — one of its workers, the
    /// oldest (the pool sees its job end and replaces it).
    KillChild {
        /// The pool host.
        host: String,
    },
}

/// What must hold at the end of a run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assertions {
    /// Most acknowledged items allowed to be missing at the consumers.
    #[serde(default)]
    pub lost_max: u64,
    /// Most extra deliveries allowed.
    #[serde(default)]
    pub duplicated_max: u64,
    /// Most deliveries a consumer makes after it is resumed (SIGCONT) of
    /// items another consumer delivered too: with a consumer group, the
    /// fence that keeps a member frozen past its session timeout from
    /// processing what was handed to another.
    #[serde(default)]
    pub duplicated_after_resume_max: Option<u64>,
    /// Bound on the p99 producer → consumer latency, µs.
    #[serde(default)]
    pub latency_us_p99_max: Option<u64>,
    /// Bound on the time after each fault until everything produced before
    /// it ended has arrived, seconds.
    #[serde(default)]
    pub recovery_s_max: Option<f64>,
    /// Fewest items that must be acknowledged (so an idle run cannot pass).
    #[serde(default = "one_u64")]
    pub acked_min: u64,
    /// After each outage, the backlog must drain at this multiple of the
    /// producers' rate at least (items received during the recovery / its
    /// duration / the rate).
    #[serde(default)]
    pub catchup_ratio_min: Option<f64>,
    /// Assertions on one topic's producers and consumers.
    #[serde(default)]
    pub topics: std::collections::BTreeMap<String, TopicAssertions>,
    /// Assertions on one pool. Every pool is held to one result per
    /// submitted task, these or not.
    #[serde(default)]
    pub pools: std::collections::BTreeMap<String, PoolAssertions>,
    /// An elastic pool against a fixed one under the same tasks and faults.
    #[serde(default)]
    pub pool_catch_up: Option<CatchUpAssertion>,
    /// With `[auth]`: exactly these principals (e.g. `User:intruder`) were
    /// refused something, by the nodes' audit logs; every other host did
    /// all it tried.
    #[serde(default)]
    pub refused_exactly: Option<Vec<String>>,
}

/// What must hold for one pool. Its bounds are not scaled by
/// `--duration-scale`: they rest on the pool's own timers (heartbeat
/// time-out, start time), which a shorter run does not shorten.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolAssertions {
    /// Every task acknowledged on the tasks topic has exactly one result,
    /// and it succeeded; no result names a task never submitted.
    #[serde(default = "yes")]
    pub results_exact: bool,
    /// Fewest tasks submitted (so an idle run cannot pass).
    #[serde(default = "one_u64")]
    pub tasks_min: u64,
    /// After each worker SIGKILL (`kill_child`): seconds until the pool's
    /// live workers are back at its minimum (every site's `min` and
    /// `min_total`).
    #[serde(default)]
    pub recovery_s_max: Option<f64>,
    /// After a site's link goes down: seconds until the pool's live
    /// workers elsewhere number `min_total`.
    #[serde(default)]
    pub covered_s_max: Option<f64>,
    /// After a site's link comes back: seconds until every site has its
    /// `min` live workers again (and the pool `min_total`).
    #[serde(default)]
    pub min_restored_s_max: Option<f64>,
    /// After the pool host restarts: seconds until its backlog is level
    /// again (no larger than before it was killed).
    #[serde(default)]
    pub level_s_max: Option<f64>,
}

impl Default for PoolAssertions {
    fn default() -> Self {
        PoolAssertions {
            results_exact: true,
            tasks_min: 1,
            recovery_s_max: None,
            covered_s_max: None,
            min_restored_s_max: None,
            level_s_max: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// An elastic pool must be level again after its restart at least
/// `speedup_min` times sooner than a fixed-size one in the same run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatchUpAssertion {
    /// The elastic pool.
    pub elastic: String,
    /// The fixed-size pool.
    pub fixed: String,
    /// Least ratio of the fixed pool's level time to the elastic one's.
    pub speedup_min: f64,
}

/// What must hold for one topic.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicAssertions {
    /// Most acknowledged items allowed to be missing.
    #[serde(default)]
    pub lost_max: u64,
    /// Bound on the p99 latency of the topic's items (originals, reduced
    /// and reconstructed), µs.
    #[serde(default)]
    pub latency_us_p99_max: Option<u64>,
    /// The QoS producers' achieved rate must be at most this fraction of
    /// their target (backpressure slowed them down).
    #[serde(default)]
    pub producer_rate_ratio_max: Option<f64>,
    /// Fewest items delivered marked reduced or reconstructed.
    #[serde(default)]
    pub substituted_or_reduced_min: u64,
}

fn one_u64() -> u64 {
    1
}

impl Default for Assertions {
    fn default() -> Self {
        Assertions {
            lost_max: 0,
            duplicated_max: 0,
            duplicated_after_resume_max: None,
            latency_us_p99_max: None,
            recovery_s_max: None,
            acked_min: 1,
            catchup_ratio_min: None,
            topics: Default::default(),
            pools: Default::default(),
            pool_catch_up: None,
            refused_exactly: None,
        }
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, TwinError> {
        let text = std::fs::read_to_string(path).map_err(TwinError::io("read", path))?;
        Self::parse(&text).map_err(|e| TwinError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> Result<Scenario, TwinError> {
        let s: Scenario = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// Every host of the scenario, of every kind, in start order within a
    /// kind: (kind, name).
    pub fn hosts(&self) -> Vec<(&'static str, String)> {
        crate::hosts::KINDS
            .iter()
            .flat_map(|k| k.plan(self).into_iter().map(|n| (k.name, n)))
            .collect()
    }

    /// Every name refers to something declared; times and rates are sane.
    pub fn validate(&self) -> Result<(), TwinError> {
        let mut names = HashSet::new();
        let hosts = self.hosts();
        for (_, h) in &hosts {
            if !names.insert(h.as_str()) {
                return Err(TwinError::DuplicateHost { name: h.clone() });
            }
        }
        let node = |n: &str, what: &str| -> Result<(), TwinError> {
            if self.nodes.iter().any(|x| x.name == n) {
                Ok(())
            } else {
                Err(TwinError::Undeclared {
                    what: what.to_string(),
                    kind: "node",
                    name: n.to_string(),
                    where_: " under [[nodes]]",
                })
            }
        };
        let link = |l: &Option<String>, what: &str| -> Result<(), TwinError> {
            match l {
                Some(l) if !self.links.iter().any(|x| &x.name == l) => Err(TwinError::Undeclared {
                    what: what.to_string(),
                    kind: "link",
                    name: l.clone(),
                    where_: " under [[links]]",
                }),
                _ => Ok(()),
            }
        };
        if !(self.duration_s > 0.0 && self.duration_s.is_finite()) {
            return Err(TwinError::out_of_range(
                "duration_s",
                self.duration_s,
                "> 0",
            ));
        }
        for t in &self.topics {
            for n in &t.nodes {
                node(n, &format!("topic '{}'", t.name))?;
            }
        }
        if let Some(a) = &self.auth {
            if !TWIN_AUTH_MODES.contains(&a.mode.as_str()) {
                return Err(TwinError::OutOfRange {
                    field: "auth.mode".into(),
                    value: format!("'{}'", a.mode),
                    allowed: "cert or cert-or-token (a twin's hosts present certificates)",
                });
            }
            for g in &a.grants {
                for n in &g.nodes {
                    node(n, "an [[auth.grants]] entry")?;
                }
            }
        }
        if self.assertions.refused_exactly.is_some() && self.auth.is_none() {
            return Err(TwinError::OutOfRange {
                field: "assertions.refused_exactly".into(),
                value: "set".into(),
                allowed: "only with [auth] (a development-mode node refuses nothing)",
            });
        }
        for l in &self.links {
            node(&l.to, &format!("link '{}'", l.name))?;
        }
        for b in &self.bridges {
            node(&b.from, &format!("bridge '{}'", b.name))?;
            node(&b.to, &format!("bridge '{}'", b.name))?;
            link(&b.via, &format!("bridge '{}'", b.name))?;
            if let Some(c) = &b.congestion {
                if !CONGESTION_CONTROLLERS.contains(&c.as_str()) {
                    return Err(TwinError::OutOfRange {
                        field: format!("bridge '{}': congestion", b.name),
                        value: format!("'{c}'"),
                        allowed: "one of tolerant, bbr, cubic, new-reno",
                    });
                }
            }
            if let Some(n) = b.connections {
                if !(1..=64).contains(&n) {
                    return Err(TwinError::OutOfRange {
                        field: format!("bridge '{}': connections", b.name),
                        value: n.to_string(),
                        allowed: "1..=64",
                    });
                }
            }
        }
        let qos_topic = |t: &str, what: &str| -> Result<(), TwinError> {
            if self.topics.iter().any(|x| x.name == t && x.qos) {
                Ok(())
            } else {
                Err(TwinError::NotQosTopic {
                    what: what.to_string(),
                    topic: t.to_string(),
                })
            }
        };
        for p in &self.producers {
            node(&p.node, &format!("producer '{}'", p.name))?;
            if p.qos.is_some() {
                qos_topic(&p.topic, &format!("producer '{}'", p.name))?;
            }
            if let Some(k) = p
                .payload
                .as_deref()
                .filter(|k| !["random", "frame"].contains(k))
            {
                return Err(TwinError::UnknownPayload {
                    producer: p.name.clone(),
                    payload: k.to_string(),
                });
            }
            link(&p.via, &format!("producer '{}'", p.name))?;
            if p.rate.is_nan() || p.rate <= 0.0 {
                return Err(TwinError::out_of_range(
                    format!("producer '{}': rate", p.name),
                    p.rate,
                    "> 0",
                ));
            }
        }
        for c in &self.consumers {
            node(&c.node, &format!("consumer '{}'", c.name))?;
            if c.qos.is_some() {
                qos_topic(&c.topic, &format!("consumer '{}'", c.name))?;
            }
            link(&c.via, &format!("consumer '{}'", c.name))?;
        }
        let broker = |b: &str, what: &str| -> Result<(), TwinError> {
            if self.brokers.iter().any(|x| x.name == b) {
                Ok(())
            } else {
                Err(TwinError::Undeclared {
                    what: what.to_string(),
                    kind: "broker",
                    name: b.to_string(),
                    where_: " under [[brokers]]",
                })
            }
        };
        for k in &self.kafka_bridges {
            let what = format!("kafka bridge '{}'", k.name);
            node(&k.node, &what)?;
            broker(&k.broker, &what)?;
            if !["to-kafka", "from-kafka"].contains(&k.direction.as_str()) {
                return Err(TwinError::OutOfRange {
                    field: format!("{what}: direction"),
                    value: format!("'{}'", k.direction),
                    allowed: "to-kafka or from-kafka",
                });
            }
        }
        for c in &self.kafka_consumers {
            broker(&c.broker, &format!("kafka consumer '{}'", c.name))?;
        }
        if let Some(m) = &self.metrics {
            node(&m.node, "[metrics]")?;
            if m.interval_ms < 10 {
                return Err(TwinError::out_of_range(
                    "[metrics] interval_ms",
                    m.interval_ms,
                    "≥ 10",
                ));
            }
        }
        for m in &self.monitors {
            node(&m.node, &format!("monitor '{}'", m.name))?;
            if self.metrics.is_none() {
                return Err(TwinError::MonitorWithoutMetrics {
                    monitor: m.name.clone(),
                });
            }
        }
        self.validate_pools()?;
        if let Some(p) = &self.ptycho {
            node(&p.edge, "[ptycho] edge")?;
            node(&p.hpc, "[ptycho] hpc")?;
            if !self
                .pools
                .iter()
                .any(|x| x.name == "epie" && x.node == p.hpc)
            {
                return Err(TwinError::Undeclared {
                    what: "[ptycho]".into(),
                    kind: "pool",
                    name: "epie".into(),
                    where_: " under [[pools]] on the HPC node",
                });
            }
        }
        for t in self.assertions.topics.keys() {
            if !self.topics.iter().any(|x| &x.name == t) {
                return Err(TwinError::Undeclared {
                    what: format!("[assertions.topics.{t}]"),
                    kind: "topic",
                    name: t.clone(),
                    where_: " under [[topics]]",
                });
            }
        }
        for f in &self.faults {
            if f.at_s.is_nan() || f.at_s < 0.0 {
                return Err(TwinError::out_of_range("fault at_s", f.at_s, "≥ 0"));
            }
            match &f.kind {
                FaultKind::Outage { link: l, .. }
                | FaultKind::Congestion { link: l, .. }
                | FaultKind::Bandwidth { link: l, .. } => link(&Some(l.clone()), "a fault")?,
                FaultKind::KillChild { host } => {
                    if !self.pools.iter().any(|p| &p.name == host) {
                        return Err(TwinError::Undeclared {
                            what: "a kill_child fault".into(),
                            kind: "pool",
                            name: host.clone(),
                            where_: " under [[pools]]",
                        });
                    }
                }
                FaultKind::Kill { host }
                | FaultKind::Restart { host }
                | FaultKind::Stop { host }
                | FaultKind::Cont { host } => {
                    if !names.contains(host.as_str()) {
                        return Err(TwinError::Undeclared {
                            what: "a fault".into(),
                            kind: "host",
                            name: host.clone(),
                            where_: "",
                        });
                    }
                }
            }
            if let FaultKind::Congestion { to_fraction, .. } = &f.kind {
                if !(*to_fraction > 0.0 && *to_fraction <= 1.0) {
                    return Err(TwinError::out_of_range(
                        "congestion to_fraction",
                        to_fraction,
                        "in (0, 1]",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The pools, their task streams and their assertions refer to what is
    /// declared; each pool's spec has a `min_total` and sites whose links
    /// lead to the pool's node.
    fn validate_pools(&self) -> Result<(), TwinError> {
        let link = |l: &Option<String>, what: &str| match l {
            Some(l) if !self.links.iter().any(|x| &x.name == l) => Err(TwinError::Undeclared {
                what: what.to_string(),
                kind: "link",
                name: l.clone(),
                where_: " under [[links]]",
            }),
            _ => Ok(()),
        };
        let undeclared = |what: String, kind: &'static str, name: &str, where_: &'static str| {
            TwinError::Undeclared {
                what,
                kind,
                name: name.to_string(),
                where_,
            }
        };
        for p in &self.pools {
            let what = format!("pool '{}'", p.name);
            if !self.nodes.iter().any(|n| n.name == p.node) {
                return Err(undeclared(what, "node", &p.node, " under [[nodes]]"));
            }
            link(&p.via, &what)?;
            if p.tick_ms < 10 {
                return Err(TwinError::out_of_range(
                    format!("{what}: tick_ms"),
                    p.tick_ms,
                    "≥ 10",
                ));
            }
            let shape = p.shape()?;
            if shape.sites.is_empty() {
                return Err(TwinError::PoolSpec {
                    pool: p.name.clone(),
                    detail: "no [[spec.site]]".into(),
                });
            }
            for site in &shape.sites {
                let what = format!("pool '{}' site '{}'", p.name, site.name);
                link(&site.via, &what)?;
                if let Some(l) = &site.via {
                    let to = &self
                        .links
                        .iter()
                        .find(|x| &x.name == l)
                        .expect("checked")
                        .to;
                    if to != &p.node {
                        return Err(TwinError::WrongLink {
                            link: l.clone(),
                            to: to.clone(),
                            node: p.node.clone(),
                        });
                    }
                }
            }
        }
        for t in &self.tasks {
            let what = format!("tasks '{}'", t.name);
            if !self.pools.iter().any(|p| p.name == t.pool) {
                return Err(undeclared(what, "pool", &t.pool, " under [[pools]]"));
            }
            link(&t.via, &what)?;
            if t.rate.is_nan() || t.rate <= 0.0 {
                return Err(TwinError::out_of_range(
                    format!("{what}: rate"),
                    t.rate,
                    "> 0",
                ));
            }
        }
        let pool = |name: &str, what: String| {
            if self.pools.iter().any(|p| p.name == name) {
                Ok(())
            } else {
                Err(undeclared(what, "pool", name, " under [[pools]]"))
            }
        };
        for name in self.assertions.pools.keys() {
            pool(name, format!("[assertions.pools.{name}]"))?;
        }
        if let Some(c) = &self.assertions.pool_catch_up {
            pool(&c.elastic, "[assertions.pool_catch_up] elastic".into())?;
            pool(&c.fixed, "[assertions.pool_catch_up] fixed".into())?;
        }
        Ok(())
    }

    /// Multiplies every time in the scenario by `x` (rates and sizes stay):
    /// a shortened run for CI keeps the scenario's shape.
    pub fn scale_durations(&mut self, x: f64) {
        self.duration_s *= x;
        self.drain_s = (self.drain_s * x).max(10.0);
        for f in &mut self.faults {
            f.at_s *= x;
            match &mut f.kind {
                FaultKind::Outage { duration_s, .. } => *duration_s *= x,
                FaultKind::Congestion { ramp_s, hold_s, .. } => {
                    *ramp_s *= x;
                    *hold_s *= x;
                }
                _ => {}
            }
        }
        if let Some(r) = &mut self.assertions.recovery_s_max {
            *r *= x.max(0.25);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
name = "t"
duration_s = 10
[[nodes]]
name = "edge"
[[nodes]]
name = "hpc"
[[topics]]
name = "frames"
partitions = 2
nodes = ["edge", "hpc"]
[[links]]
name = "wan"
to = "hpc"
up = { delay_ms = 20, bandwidth_mbit = 1000 }
[[bridges]]
name = "b"
from = "edge"
to = "hpc"
topic = "frames"
via = "wan"
[[producers]]
name = "p"
node = "edge"
topic = "frames"
rate = 100
size = 1024
[[consumers]]
name = "c"
node = "hpc"
topic = "frames"
[[faults]]
at_s = 4
kind = "outage"
link = "wan"
duration_s = 2
[[faults]]
at_s = 5
kind = "kill"
host = "hpc"
[assertions]
recovery_s_max = 8
"#;

    #[test]
    fn parses_and_scales() {
        let mut s = Scenario::parse(SMALL).unwrap();
        assert_eq!(s.links[0].up.delay_ms, 20.0);
        assert!(
            matches!(s.faults[0].kind, FaultKind::Outage { duration_s, .. } if duration_s == 2.0)
        );
        s.scale_durations(0.5);
        assert_eq!((s.duration_s, s.faults[0].at_s), (5.0, 2.0));
        assert!(
            matches!(s.faults[0].kind, FaultKind::Outage { duration_s, .. } if duration_s == 1.0)
        );
        assert_eq!(s.assertions.lost_max, 0);
    }

    #[test]
    fn unknown_names_are_clear_errors() {
        let e = Scenario::parse(&SMALL.replace("via = \"wan\"", "via = \"lan\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("link 'lan'"), "{e}");
        let e = Scenario::parse(&SMALL.replace("host = \"hpc\"", "host = \"cloud\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("host 'cloud'"), "{e}");
        let e = Scenario::parse(&SMALL.replace("kind = \"kill\"", "kind = \"explode\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("explode"), "{e}");
    }

    #[test]
    fn the_cloud_tier_names_its_broker_and_a_known_direction() {
        let cloud = format!(
            "{SMALL}\n[[brokers]]\nname = \"cloud\"\n[[kafka_bridges]]\nname = \"k\"\n\
             node = \"hpc\"\ntopic = \"frames\"\nbroker = \"cloud\"\n\
             [[kafka_consumers]]\nname = \"a\"\nbroker = \"cloud\"\ntopic = \"frames\"\n"
        );
        let s = Scenario::parse(&cloud).unwrap();
        assert_eq!(s.kafka_bridges[0].direction, "to-kafka");
        let e =
            Scenario::parse(&cloud.replace("broker = \"cloud\"\ntopic", "broker = \"sky\"\ntopic"))
                .unwrap_err()
                .to_string();
        assert_eq!(
            e,
            "kafka consumer 'a' names broker 'sky', which is not declared under [[brokers]]"
        );
        let e = Scenario::parse(&cloud.replace(
            "broker = \"cloud\"\n[[kafka_consumers]]",
            "broker = \"cloud\"\ndirection = \"sideways\"\n[[kafka_consumers]]",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sideways") && e.contains("to-kafka or from-kafka"),
            "{e}"
        );
    }
}
