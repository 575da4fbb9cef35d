//! Twin hosts as plug-ins: one [`HostKind`] per kind of host a scenario
//! declares, each in its own module.
//!
//! | kind | scenario table | command | phase | ready when its log says |
//! |---|---|---|---|---|
//! | [`node`] | `[[nodes]]` | `diaspora serve` | [`Phase::Serve`] | `diaspora node serving` (30 s) |
//! | [`bridge`] | `[[bridges]]` | `diaspora bridge` | [`Phase::Receive`] | — |
//! | [`consumer`] | `[[consumers]]` | `diaspora consume` / `stream consume` | [`Phase::Receive`] | — |
//! | [`monitor`] | `[[monitors]]` | `diaspora predict serve` | [`Phase::Watch`] | `monitor ` (60 s) |
//! | [`producer`] | `[[producers]]` | `diaspora produce` / `stream produce` | [`Phase::Send`] | — |
//! | [`pool`] (`pool`) | `[[pools]]` | `diaspora pool run` | [`Phase::Receive`] | `Ctrl-C stops it` (30 s) |
//! | [`pool`] (`pool-recorder`) | `[[pools]]`, two each | `diaspora consume --payload` of its events and results | [`Phase::Watch`] | — |
//! | [`ptycho`] (`ptycho-service`) | `[ptycho]`: `hpc` and `edge` | `diaspora demo --stage hpc` / `--stage edge` | [`Phase::Receive`] | — (they wait for their inputs) |
//! | [`ptycho`] (`ptycho-detector`) | `[ptycho]`: `detector` | `diaspora demo --stage detector` | [`Phase::Send`] | — |
//! | [`tasks`] | `[[tasks]]`, one per partition of the pool's tasks topic | `diaspora produce --file --partition` of task messages | [`Phase::Send`] | — |
//! | [`kafka`] (`broker`) | `[[brokers]]` | Tansu (`tansu broker`, not the binary) | [`Phase::Serve`] | `ready in` (30 s) |
//! | [`kafka`] (`kafka-bridge`) | `[[kafka_bridges]]` | `diaspora kafka-bridge` | [`Phase::Receive`] | `kafka bridge '` (60 s) |
//! | [`kafka`] (`kafka-consumer`) | `[[kafka_consumers]]` | `diaspora kafka-consume --json` | [`Phase::Watch`] (its topic exists once the bridges are ready) | — |
//!
//! A kind says which hosts a scenario has of it ([`HostKind::plan`]), the
//! command line of each ([`HostKind::command`], built through
//! [`crate::cli_args`]), how to tell one is ready, whether the run waits
//! for it to finish, and when it is stopped. The runner starts the kinds of
//! one phase in the order of [`KINDS`], so a new kind of host (a pool, a
//! pool worker, an edge inference service) is one new module here, its
//! entry in [`KINDS`] and its table in [`Scenario`] — not an edit inside
//! [`crate::run`]. Topics ([`topic`]) are not hosts: they are created by
//! one-shot commands once the nodes serve.
//!
//! [`Hosts`] is the set of running host processes.

pub mod bridge;
pub mod consumer;
pub mod kafka;
pub mod monitor;
pub mod node;
pub mod pool;
mod process;
pub mod producer;
pub mod ptycho;
pub mod tasks;
pub mod topic;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use pool::PoolTopic;
pub use process::Hosts;

use crate::cli_args::Invocation;
use crate::{Scenario, TwinError};

/// When a kind's hosts start, relative to the rest of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// First, before topics and links exist: nodes.
    Serve,
    /// After topics and links, before the clock starts, so they are ready
    /// when items flow: bridges, consumers and pools.
    Receive,
    /// Once the clock has started and the link metrics flow: monitors, and
    /// the recorders of the pools' topics (which the pools have created).
    Watch,
    /// Last: producers and task streams; the run lasts until they are done.
    Send,
}

impl Phase {
    /// Every phase, in start order.
    pub const ALL: [Phase; 4] = [Phase::Serve, Phase::Receive, Phase::Watch, Phase::Send];
}

/// How to tell a started host is ready: a line in its log (of this start)
/// within a time.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    /// Text its log contains once it is ready.
    pub log_line: &'static str,
    /// How long it is given.
    pub within: Duration,
}

/// What a host records for the analysis.
#[derive(Debug, Clone, PartialEq)]
pub enum Records {
    /// Nothing the analysis reads.
    None,
    /// A producer's acknowledgements of `items` items on `topic`; a QoS
    /// producer's summary line (`summary`).
    Acks {
        /// Topic.
        topic: String,
        /// The acknowledgements (`--acks`).
        path: PathBuf,
        /// Items it was asked to make.
        items: u64,
        /// A QoS producer's summary (its stdout).
        summary: Option<PathBuf>,
    },
    /// A consumer's deliveries on `topic` (its stdout).
    Deliveries {
        /// Topic.
        topic: String,
        /// The JSON lines.
        path: PathBuf,
    },
    /// A monitor's events (its stdout).
    Events {
        /// The JSON lines.
        path: PathBuf,
    },
    /// One of a pool's topics as a recorder read it (its stdout).
    PoolTopic {
        /// The pool.
        pool: String,
        /// Which topic.
        topic: PoolTopic,
        /// The JSON lines (`diaspora consume --json --payload`).
        path: PathBuf,
    },
    /// A service's timeline (JSON lines `{t_us, kind, text}`, `--events`)
    /// and its summary (its stdout: one JSON object).
    Timeline {
        /// The timeline.
        events: PathBuf,
        /// The summary.
        summary: PathBuf,
    },
    /// Several of the above (one host, several records).
    Many(Vec<Records>),
    /// A task producer's acknowledgements: item `i` is task
    /// `KEY_PREFIX-{share.task(i)}`.
    Tasks {
        /// The pool.
        pool: String,
        /// The acknowledgements (`--acks`).
        acks: PathBuf,
        /// The tasks' key prefix.
        key_prefix: String,
        /// Which of the stream's tasks it sends.
        share: tasks::TaskShare,
    },
}

/// How to start one host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostCommand {
    /// Its command line.
    pub invocation: Invocation,
    /// Where its stdout goes (none: discarded).
    pub stdout: Option<PathBuf>,
    /// Files to write before it starts (path, contents), e.g. its policy.
    pub files: Vec<(PathBuf, String)>,
    /// What it records for the analysis.
    pub records: Records,
}

/// The host a [`HostKind::command`] is asked for: host `index` (in
/// [`HostKind::plan`]'s order) of `scenario`, given where the run's nodes
/// and links are (`env`).
#[derive(Clone, Copy)]
pub struct HostAt<'a> {
    /// The scenario.
    pub scenario: &'a Scenario,
    /// The host's index in its kind's table.
    pub index: usize,
    /// The run's nodes, links and directories.
    pub env: &'a HostEnv,
}

/// One kind of host: a plug-in of the runner. Its name and phase are its
/// entry in [`KINDS`].
pub trait HostKind: Sync {
    /// The names of its hosts in `scenario`, in table order.
    fn plan(&self, scenario: &Scenario) -> Vec<String>;
    /// The command of one of its hosts.
    fn command(&self, at: HostAt<'_>) -> Result<HostCommand, TwinError>;
    /// How to tell one of its hosts is ready (none: at once). Checked after
    /// every start, restarts included.
    fn ready(&self) -> Option<Ready> {
        None
    }
    /// The run lasts until its hosts exit, and an unclean exit fails it.
    fn completes(&self) -> bool {
        false
    }
    /// Its hosts are stopped gracefully once the drain ends, before the
    /// rest, in this rank (lower first): they flush and commit then. None:
    /// stopped with the rest at the end of the run.
    fn stop_after_drain(&self) -> Option<u8> {
        None
    }
}

/// An entry of [`KINDS`]: a kind's name, when its hosts start, and its
/// builder (which it dereferences to).
pub struct Kind {
    /// The kind's name (`node`, `producer`, ...).
    pub name: &'static str,
    /// When its hosts start.
    pub phase: Phase,
    /// Its builder.
    pub builder: &'static dyn HostKind,
}

impl Kind {
    /// An entry of [`KINDS`].
    pub const fn new(name: &'static str, phase: Phase, builder: &'static dyn HostKind) -> Kind {
        Kind {
            name,
            phase,
            builder,
        }
    }
}

impl std::ops::Deref for Kind {
    type Target = dyn HostKind;

    fn deref(&self) -> &Self::Target {
        self.builder
    }
}

/// Every host kind, in start order within a phase.
pub static KINDS: &[Kind] = &[
    Kind::new("node", Phase::Serve, &node::Node),
    Kind::new("broker", Phase::Serve, &kafka::Broker),
    Kind::new("kafka-bridge", Phase::Receive, &kafka::KafkaBridge),
    Kind::new("bridge", Phase::Receive, &bridge::Bridge),
    Kind::new("consumer", Phase::Receive, &consumer::Consumer),
    Kind::new("pool", Phase::Receive, &pool::Pool),
    Kind::new("ptycho-service", Phase::Receive, &ptycho::Service),
    Kind::new("monitor", Phase::Watch, &monitor::Monitor),
    Kind::new("pool-recorder", Phase::Watch, &pool::PoolRecorder),
    Kind::new("kafka-consumer", Phase::Watch, &kafka::KafkaConsumer),
    Kind::new("producer", Phase::Send, &producer::Producer),
    Kind::new("tasks", Phase::Send, &tasks::Tasks),
    Kind::new("ptycho-detector", Phase::Send, &ptycho::Detector),
];

/// A host of a scenario: its kind, index in its kind's table and name.
pub struct PlannedHost {
    /// Its kind.
    pub kind: &'static Kind,
    /// Its index in [`HostKind::plan`].
    pub index: usize,
    /// Its name.
    pub name: String,
}

/// The hosts that start in `phase`, in start order.
pub fn planned(scenario: &Scenario, phase: Phase) -> Vec<PlannedHost> {
    KINDS
        .iter()
        .filter(|k| k.phase == phase)
        .flat_map(|kind| {
            kind.plan(scenario)
                .into_iter()
                .enumerate()
                .map(move |(index, name)| PlannedHost { kind, index, name })
        })
        .collect()
}

/// Where a node listens.
#[derive(Debug, Clone)]
pub struct NodeAddrs {
    /// The data plane.
    pub data: SocketAddr,
    /// The admin plane.
    pub admin: SocketAddr,
    /// Its CA certificate (written by the node when it starts).
    pub ca: PathBuf,
}

/// What a host's command may refer to: the run's directory, its nodes'
/// addresses and its links' relays.
#[derive(Debug, Clone)]
pub struct HostEnv {
    /// Where hosts keep their directories.
    pub work_dir: PathBuf,
    /// Every node's addresses.
    pub nodes: HashMap<String, NodeAddrs>,
    /// Every started link's relay address.
    pub links: HashMap<String, SocketAddr>,
    /// Every broker's address.
    pub brokers: HashMap<String, SocketAddr>,
}

impl HostEnv {
    /// An environment with stand-in addresses (loopback, ports from 7000 for
    /// nodes and 9000 for links), to list command lines without a run.
    pub fn stand_in(scenario: &Scenario, work_dir: &Path) -> HostEnv {
        let addr = |port: usize| SocketAddr::from(([127, 0, 0, 1], port as u16));
        let mut env = HostEnv {
            work_dir: work_dir.to_path_buf(),
            nodes: HashMap::new(),
            links: HashMap::new(),
            brokers: HashMap::new(),
        };
        for (i, n) in scenario.nodes.iter().enumerate() {
            let addrs = NodeAddrs {
                data: addr(7000 + 2 * i),
                admin: addr(7001 + 2 * i),
                ca: match &scenario.auth {
                    Some(_) => crate::auth::certs_dir(work_dir).join("ca.pem"),
                    None => node::ca_path(&env.host_dir(&n.name)),
                },
            };
            env.nodes.insert(n.name.clone(), addrs);
        }
        for (i, l) in scenario.links.iter().enumerate() {
            env.links.insert(l.name.clone(), addr(9000 + i));
        }
        for (i, b) in scenario.brokers.iter().enumerate() {
            env.brokers.insert(b.name.clone(), addr(9092 + i));
        }
        env
    }

    /// A host's directory (its data, log and records).
    pub fn host_dir(&self, name: &str) -> PathBuf {
        self.work_dir.join(name)
    }

    /// A node's addresses (the scenario is validated: it exists).
    pub fn node(&self, name: &str) -> &NodeAddrs {
        &self.nodes[name]
    }

    /// The address a host uses to reach `node`: its data plane, or the
    /// relay of link `via`, which must lead to it.
    pub fn addr_of(
        &self,
        scenario: &Scenario,
        node: &str,
        via: &Option<String>,
    ) -> Result<SocketAddr, TwinError> {
        match via {
            None => Ok(self.node(node).data),
            Some(l) => {
                let spec = scenario
                    .links
                    .iter()
                    .find(|x| &x.name == l)
                    .expect("validated");
                if spec.to != node {
                    return Err(TwinError::WrongLink {
                        link: l.clone(),
                        to: spec.to.clone(),
                        node: node.to_string(),
                    });
                }
                Ok(self.links[l])
            }
        }
    }
}

/// A host's inline QoS policy as the file `dir/policy.toml` (path, text);
/// a relative `buffer.spill_dir` is taken relative to the host's directory.
pub(crate) fn policy_file(
    host: &str,
    dir: &Path,
    policy: &toml::Table,
) -> Result<(PathBuf, String), TwinError> {
    let mut policy = policy.clone();
    if let Some(toml::Value::Table(b)) = policy.get_mut("buffer") {
        if let Some(toml::Value::String(d)) = b.get_mut("spill_dir") {
            if Path::new(d.as_str()).is_relative() {
                *d = dir.join(&*d).display().to_string();
            }
        }
    }
    let text = toml::to_string(&policy).map_err(|source| TwinError::Policy {
        host: host.to_string(),
        source,
    })?;
    Ok((dir.join("policy.toml"), text))
}
