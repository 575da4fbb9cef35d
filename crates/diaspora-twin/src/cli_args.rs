//! Every command line the twin gives the `diaspora` binary, built in one
//! place from typed values.
//!
//! A twin host is a `diaspora` process; its flags are the CLI's flags. So
//! that a renamed flag fails a test instead of a twin run,
//! [`Invocation::argv`] is the only place the twin spells a flag, and
//! [`example_invocations`] gives every command line the shipped scenarios
//! would run — for the CLI's own parser to check (`Cli::try_parse_from`).
//!
//! ```
//! use diaspora_twin::cli_args::{CreateTopic, Invocation};
//! let create = Invocation::CreateTopic(CreateTopic {
//!     topic: "frames".into(),
//!     stream: false,
//!     partitions: Some(2),
//!     admin: "127.0.0.1:7001".parse().unwrap(),
//!     ca: "ca.pem".into(),
//! });
//! assert_eq!(
//!     create.argv().join(" "),
//!     "topic create frames --partitions 2 --admin 127.0.0.1:7001 --ca ca.pem"
//! );
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::{Scenario, TwinError};

/// `diaspora serve`: a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Serve {
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--listen`: the data plane.
    pub listen: SocketAddr,
    /// `--admin`: the admin plane.
    pub admin: SocketAddr,
    /// `--fsync` policy.
    pub fsync: String,
    /// `--auth MODE --superuser twin --certs DIR` (a twin's `[auth]`).
    pub auth: Option<(String, PathBuf)>,
}

/// `diaspora topic create` (or `stream init` for a QoS stream topic).
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTopic {
    /// The topic.
    pub topic: String,
    /// `stream init`: also the stream's control and replay topics.
    pub stream: bool,
    /// `--partitions` (none: the CLI's default).
    pub partitions: Option<u32>,
    /// `--admin` of the node.
    pub admin: SocketAddr,
    /// `--ca` of the node.
    pub ca: PathBuf,
}

/// `diaspora bridge`: forwards a topic from one node to another.
#[derive(Debug, Clone, PartialEq)]
pub struct Bridge {
    /// `--name`.
    pub name: String,
    /// The topic on the source.
    pub topic: String,
    /// The topic on the target.
    pub to_topic: String,
    /// The source node's data plane.
    pub from: SocketAddr,
    /// The target's data plane (or the relay in front of it).
    pub to: SocketAddr,
    /// `--from-ca`.
    pub from_ca: PathBuf,
    /// `--to-ca`.
    pub to_ca: PathBuf,
    /// `--congestion`.
    pub congestion: Option<String>,
    /// `--connections`.
    pub connections: Option<usize>,
}

/// How a consumer reads.
#[derive(Debug, Clone, PartialEq)]
pub enum ConsumeMode {
    /// `diaspora consume --group G`.
    Group(String),
    /// `diaspora stream consume --name N --policy P --checkpoint C`.
    Stream {
        /// `--name`.
        name: String,
        /// `--policy`: the QoS policy file.
        policy: PathBuf,
        /// `--checkpoint`: where its position is kept.
        checkpoint: PathBuf,
    },
}

/// `diaspora consume` / `diaspora stream consume`, printing one JSON line
/// per item (`--json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Consume {
    /// Group or QoS stream.
    pub mode: ConsumeMode,
    /// `--topic`.
    pub topic: String,
    /// `--addr`: the node's data plane (or a relay).
    pub addr: SocketAddr,
    /// `--ca`.
    pub ca: PathBuf,
}

/// A synthetic workload (`--synthetic N --size --rate --acks --id-start
/// --json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Synthetic {
    /// `--synthetic`: items to make.
    pub items: u64,
    /// `--size`: payload bytes per item.
    pub size: usize,
    /// `--rate`: items per second.
    pub rate: f64,
    /// `--acks`: where each acknowledgement is recorded.
    pub acks: PathBuf,
    /// `--id-start`: the first item id.
    pub id_start: u64,
}

/// `diaspora produce` / `diaspora stream produce`.
#[derive(Debug, Clone, PartialEq)]
pub struct Produce {
    /// A QoS stream: `stream produce --policy P --payload K`.
    pub stream: Option<StreamProduce>,
    /// `--topic`.
    pub topic: String,
    /// Synthetic items (none: one item per line of stdin).
    pub synthetic: Option<Synthetic>,
    /// `--addr`: the node's data plane (or a relay).
    pub addr: SocketAddr,
    /// `--ca`.
    pub ca: PathBuf,
}

/// The QoS part of [`Produce`].
#[derive(Debug, Clone, PartialEq)]
pub struct StreamProduce {
    /// `--policy`: the QoS policy file.
    pub policy: PathBuf,
    /// `--payload`: `random` or `frame`.
    pub payload: String,
}

/// `diaspora predict serve`: a monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictServe {
    /// `--monitor`: the monitor file.
    pub monitor: PathBuf,
    /// `--addr`: the node's data plane.
    pub addr: SocketAddr,
    /// `--ca`.
    pub ca: PathBuf,
    /// `--admin`: the node's admin plane.
    pub admin: SocketAddr,
}

/// `diaspora pool run --json`: a compute pool, until SIGTERM.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRun {
    /// `--spec`: the pool spec file.
    pub spec: PathBuf,
    /// `--addr`: the node's data plane (or a relay).
    pub addr: SocketAddr,
    /// `--admin`: the node's admin plane (the pool creates its topics).
    pub admin: SocketAddr,
    /// `--ca`.
    pub ca: PathBuf,
    /// `--log-dir`: its workers' stdout and stderr.
    pub log_dir: PathBuf,
    /// `--tick-ms`: time between its rounds.
    pub tick_ms: u64,
}

/// `diaspora consume --from earliest --json --payload`: every item of a
/// topic from its start, payload included, one JSON line each, until
/// SIGTERM (no group: nothing is committed or taken from anyone).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `--topic`.
    pub topic: String,
    /// `--addr`: the node's data plane.
    pub addr: SocketAddr,
    /// `--ca`.
    pub ca: PathBuf,
}

/// `diaspora produce --file F --partition P --rate R --acks A --json`: one
/// item per line of a file onto one partition, paced, each
/// acknowledgement recorded (item `n` is line `n`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProduceLines {
    /// `--topic`.
    pub topic: String,
    /// `--file`: the lines.
    pub file: PathBuf,
    /// `--partition`.
    pub partition: u32,
    /// `--rate`: items per second.
    pub rate: f64,
    /// `--acks`: where each acknowledgement is recorded.
    pub acks: PathBuf,
    /// `--addr`: the node's data plane (or a relay).
    pub addr: SocketAddr,
    /// `--ca`.
    pub ca: PathBuf,
}

/// A Kafka-protocol broker: Tansu (not the `diaspora` binary), run in its
/// directory with SQLite storage there.
#[derive(Debug, Clone, PartialEq)]
pub struct Broker {
    /// The Tansu binary.
    pub program: PathBuf,
    /// Its working directory (its storage, `tansu.db`, is there).
    pub dir: PathBuf,
    /// `--listener-url` and `--advertised-listener-url` (`tcp://ADDR`).
    pub listen: SocketAddr,
}

/// `diaspora kafka-bridge`: a fabric topic to or from a Kafka topic.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaBridge {
    /// `--name`.
    pub name: String,
    /// `--direction`: `to-kafka` or `from-kafka`.
    pub direction: String,
    /// `--topic`: the fabric topic.
    pub topic: String,
    /// `--addr`: the node's data plane.
    pub addr: SocketAddr,
    /// `--ca`.
    pub ca: PathBuf,
    /// `--kafka BOOTSTRAP/TOPIC`: the broker and the Kafka topic.
    pub bootstrap: SocketAddr,
    /// The Kafka topic.
    pub kafka_topic: String,
}

/// `diaspora kafka-consume --json`: a Kafka topic's records as items.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConsume {
    /// `--kafka BOOTSTRAP/TOPIC`: the broker.
    pub bootstrap: SocketAddr,
    /// The Kafka topic.
    pub topic: String,
    /// `--group`.
    pub group: String,
}

/// One command line: of the `diaspora` binary, or of another program a
/// twin runs ([`Invocation::program`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// A node.
    Serve(Serve),
    /// A topic or QoS stream topic.
    CreateTopic(CreateTopic),
    /// A bridge.
    Bridge(Bridge),
    /// A consumer.
    Consume(Consume),
    /// A producer.
    Produce(Produce),
    /// A monitor.
    PredictServe(PredictServe),
    /// A compute pool.
    PoolRun(PoolRun),
    /// A recorder of a topic's items.
    Record(Record),
    /// A producer of a file's lines (a pool's task stream).
    ProduceLines(ProduceLines),
    /// A stage of the ptychography loop.
    DemoStage(DemoStage),
    /// A Kafka-protocol broker (Tansu).
    Broker(Broker),
    /// A Kafka bridge.
    KafkaBridge(KafkaBridge),
    /// A consumer of a Kafka topic.
    KafkaConsume(KafkaConsume),
}

/// `diaspora demo --stage`: one stage of the ptychography loop.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoStage {
    /// `--stage`: detector, hpc or edge.
    pub stage: String,
    /// `--node`: its node's data plane.
    pub node: SocketAddr,
    /// `--ca`.
    pub ca: PathBuf,
    /// `--provenance`: the store the stages share.
    pub provenance: PathBuf,
    /// `--work-dir`.
    pub work_dir: PathBuf,
    /// `--acks` (detector).
    pub acks: Option<PathBuf>,
    /// `--deliveries` (edge).
    pub deliveries: Option<PathBuf>,
    /// `--events`.
    pub events: PathBuf,
    /// `--scans`.
    pub scans: usize,
    /// `--positions`.
    pub positions: usize,
    /// The loop's other flags, as the scenario gives them.
    pub args: Vec<String>,
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

impl Invocation {
    /// For a program other than the `diaspora` binary: the program and the
    /// directory it runs in.
    pub fn program(&self) -> Option<(&Path, &Path)> {
        match self {
            Invocation::Broker(b) => Some((&b.program, &b.dir)),
            _ => None,
        }
    }

    /// The arguments after the binary's name.
    pub fn argv(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        fn flag(a: &mut Vec<String>, name: &str, value: String) {
            a.push(name.to_string());
            a.push(value);
        }
        match self {
            Invocation::Serve(s) => {
                a.push("serve".into());
                flag(&mut a, "--data-dir", path(&s.data_dir));
                flag(&mut a, "--listen", s.listen.to_string());
                flag(&mut a, "--admin", s.admin.to_string());
                flag(&mut a, "--fsync", s.fsync.clone());
                if let Some((mode, certs)) = &s.auth {
                    flag(&mut a, "--auth", mode.clone());
                    flag(&mut a, "--superuser", crate::auth::TWIN_USER.into());
                    flag(&mut a, "--certs", path(certs));
                }
            }
            Invocation::CreateTopic(t) => {
                let sub = if t.stream { "stream" } else { "topic" };
                let verb = if t.stream { "init" } else { "create" };
                a.extend([sub.into(), verb.into(), t.topic.clone()]);
                if let Some(n) = t.partitions {
                    flag(&mut a, "--partitions", n.to_string());
                }
                flag(&mut a, "--admin", t.admin.to_string());
                flag(&mut a, "--ca", path(&t.ca));
            }
            Invocation::Bridge(b) => {
                a.push("bridge".into());
                flag(&mut a, "--name", b.name.clone());
                flag(&mut a, "--from", format!("{}/{}", b.from, b.topic));
                flag(&mut a, "--to", format!("{}/{}", b.to, b.to_topic));
                flag(&mut a, "--from-ca", path(&b.from_ca));
                flag(&mut a, "--to-ca", path(&b.to_ca));
                if let Some(c) = &b.congestion {
                    flag(&mut a, "--congestion", c.clone());
                }
                if let Some(n) = b.connections {
                    flag(&mut a, "--connections", n.to_string());
                }
            }
            Invocation::DemoStage(d) => {
                a.push("demo".into());
                flag(&mut a, "--stage", d.stage.clone());
                flag(&mut a, "--node", d.node.to_string());
                flag(&mut a, "--ca", path(&d.ca));
                flag(&mut a, "--provenance", path(&d.provenance));
                flag(&mut a, "--work-dir", path(&d.work_dir));
                if let Some(p) = &d.acks {
                    flag(&mut a, "--acks", path(p));
                }
                if let Some(p) = &d.deliveries {
                    flag(&mut a, "--deliveries", path(p));
                }
                flag(&mut a, "--events", path(&d.events));
                flag(&mut a, "--scans", d.scans.to_string());
                flag(&mut a, "--positions", d.positions.to_string());
                a.extend(d.args.iter().cloned());
            }
            Invocation::Consume(c) => {
                match &c.mode {
                    ConsumeMode::Stream {
                        name,
                        policy,
                        checkpoint,
                    } => {
                        a.extend(["stream".into(), "consume".into()]);
                        flag(&mut a, "--name", name.clone());
                        flag(&mut a, "--policy", path(policy));
                        flag(&mut a, "--checkpoint", path(checkpoint));
                    }
                    ConsumeMode::Group(g) => {
                        a.push("consume".into());
                        flag(&mut a, "--group", g.clone());
                    }
                }
                flag(&mut a, "--topic", c.topic.clone());
                a.push("--json".into());
                flag(&mut a, "--addr", c.addr.to_string());
                flag(&mut a, "--ca", path(&c.ca));
            }
            Invocation::Produce(p) => {
                match &p.stream {
                    Some(s) => {
                        a.extend(["stream".into(), "produce".into()]);
                        flag(&mut a, "--policy", path(&s.policy));
                        flag(&mut a, "--payload", s.payload.clone());
                    }
                    None => a.push("produce".into()),
                }
                flag(&mut a, "--topic", p.topic.clone());
                if let Some(s) = &p.synthetic {
                    flag(&mut a, "--synthetic", s.items.to_string());
                    flag(&mut a, "--size", s.size.to_string());
                    flag(&mut a, "--rate", s.rate.to_string());
                    flag(&mut a, "--acks", path(&s.acks));
                    flag(&mut a, "--id-start", s.id_start.to_string());
                    a.push("--json".into());
                }
                flag(&mut a, "--addr", p.addr.to_string());
                flag(&mut a, "--ca", path(&p.ca));
            }
            Invocation::PredictServe(m) => {
                a.extend(["predict".into(), "serve".into()]);
                flag(&mut a, "--monitor", path(&m.monitor));
                flag(&mut a, "--addr", m.addr.to_string());
                flag(&mut a, "--ca", path(&m.ca));
                flag(&mut a, "--admin", m.admin.to_string());
            }
            Invocation::PoolRun(p) => {
                a.extend(["pool".into(), "run".into()]);
                flag(&mut a, "--spec", path(&p.spec));
                flag(&mut a, "--addr", p.addr.to_string());
                flag(&mut a, "--admin", p.admin.to_string());
                flag(&mut a, "--ca", path(&p.ca));
                flag(&mut a, "--log-dir", path(&p.log_dir));
                flag(&mut a, "--tick-ms", p.tick_ms.to_string());
                a.push("--json".into());
            }
            Invocation::Record(r) => {
                a.push("consume".into());
                flag(&mut a, "--topic", r.topic.clone());
                flag(&mut a, "--from", "earliest".into());
                a.push("--json".into());
                a.push("--payload".into());
                flag(&mut a, "--addr", r.addr.to_string());
                flag(&mut a, "--ca", path(&r.ca));
            }
            Invocation::Broker(b) => {
                let url = format!("tcp://{}", b.listen);
                a.push("broker".into());
                flag(&mut a, "--listener-url", url.clone());
                flag(&mut a, "--advertised-listener-url", url);
                flag(&mut a, "--storage-engine", "sqlite://tansu.db".into());
            }
            Invocation::KafkaBridge(k) => {
                a.push("kafka-bridge".into());
                flag(&mut a, "--name", k.name.clone());
                flag(&mut a, "--direction", k.direction.clone());
                flag(&mut a, "--topic", k.topic.clone());
                flag(&mut a, "--addr", k.addr.to_string());
                flag(&mut a, "--ca", path(&k.ca));
                flag(
                    &mut a,
                    "--kafka",
                    format!("{}/{}", k.bootstrap, k.kafka_topic),
                );
                if k.direction == "to-kafka" {
                    a.push("--create-topic".into());
                }
            }
            Invocation::KafkaConsume(k) => {
                a.push("kafka-consume".into());
                flag(&mut a, "--kafka", format!("{}/{}", k.bootstrap, k.topic));
                flag(&mut a, "--group", k.group.clone());
                a.push("--json".into());
            }
            Invocation::ProduceLines(p) => {
                a.push("produce".into());
                flag(&mut a, "--topic", p.topic.clone());
                flag(&mut a, "--file", path(&p.file));
                flag(&mut a, "--partition", p.partition.to_string());
                flag(&mut a, "--rate", p.rate.to_string());
                flag(&mut a, "--acks", path(&p.acks));
                a.push("--json".into());
                flag(&mut a, "--addr", p.addr.to_string());
                flag(&mut a, "--ca", path(&p.ca));
            }
        }
        a
    }
}

/// One command line the twin would run for a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleInvocation {
    /// The scenario's name.
    pub scenario: String,
    /// What the process is: a host kind (`node`, `bridge`, `consumer`,
    /// `monitor`, `producer`, `pool`, `pool-recorder`, `tasks`) or a setup
    /// step (`topic`, `metrics-topic`, `metrics-publisher`).
    pub kind: &'static str,
    /// The arguments after the binary's name.
    pub argv: Vec<String>,
}

/// Every command line a run of `scenario` would give the `diaspora`
/// binary, in the order the run starts them, with the hosts' directories
/// under `work_dir` and stand-in loopback addresses for the ports a run
/// picks when it starts. Writes nothing and starts nothing.
///
/// The metrics publisher's lines appear when the scenario has `[metrics]`
/// (a run may also be given metrics options on the command line).
pub fn scenario_invocations(
    scenario: &Scenario,
    work_dir: &Path,
) -> Result<Vec<ExampleInvocation>, TwinError> {
    let env = crate::hosts::HostEnv::stand_in(scenario, work_dir);
    let mut out = Vec::new();
    let mut push = |kind: &'static str, inv: &Invocation| {
        out.push(ExampleInvocation {
            scenario: scenario.name.clone(),
            kind,
            argv: inv.argv(),
        })
    };
    for phase in crate::hosts::Phase::ALL {
        for h in crate::hosts::planned(scenario, phase) {
            let inv = h
                .kind
                .command(crate::hosts::HostAt {
                    scenario,
                    index: h.index,
                    env: &env,
                })?
                .invocation;
            // Another program's command line (a broker) is not the binary's.
            if inv.program().is_none() {
                push(h.kind.name, &inv);
            }
        }
        if phase == crate::hosts::Phase::Serve {
            for (_, _, inv) in crate::hosts::topic::create_topics(scenario, &env) {
                push("topic", &inv);
            }
        }
        if phase == crate::hosts::Phase::Receive {
            if let Some(m) = &scenario.metrics {
                let (create, publish) =
                    crate::metrics_sink::publisher_invocations(&env, &m.node, &m.topic)?;
                push("metrics-topic", &create);
                push("metrics-publisher", &publish);
            }
        }
    }
    Ok(out)
}

/// Every command line the scenarios in `dir` (`*.toml`, e.g. the shipped
/// `twins/`) would run, in file-name order; see [`scenario_invocations`].
/// A test hands each `argv` to the CLI's own parser, so a flag the twin
/// uses and the CLI no longer has fails there.
pub fn example_invocations(dir: &Path) -> Result<Vec<ExampleInvocation>, TwinError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(TwinError::io("read", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let s = Scenario::load(&f)?;
        let work = Path::new("/tmp/twin").join(&s.name);
        out.extend(scenario_invocations(&s, &work)?);
    }
    Ok(out)
}
