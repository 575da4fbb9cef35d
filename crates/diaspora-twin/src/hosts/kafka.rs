//! The cloud tier's hosts: a Kafka-protocol broker (`[[brokers]]`, Tansu),
//! Kafka bridges between a node and a broker (`[[kafka_bridges]]`,
//! `diaspora kafka-bridge`) and consumers of a broker's topic
//! (`[[kafka_consumers]]`, `diaspora kafka-consume --json`).
//!
//! A broker is the one host that is not the `diaspora` binary: Tansu, from
//! `DIASPORA_TANSU` or the `PATH`, with SQLite storage in its directory,
//! so a `kill` and `restart` of it keeps what it held. Its port is picked
//! when the run starts, like a node's, and stays across restarts. The
//! Kafka side is TCP on loopback: links (UDP relays) stand only between
//! nodes.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{HostAt, HostCommand, HostKind, NodeAddrs, Ready, Records};
use crate::cli_args::{self, Invocation};
use crate::{Scenario, TwinError};

/// The variable naming the Tansu binary.
pub const TANSU_VAR: &str = "DIASPORA_TANSU";

/// The Tansu binary: `DIASPORA_TANSU`, else `tansu` (looked up on the
/// `PATH` when it starts).
pub fn tansu() -> PathBuf {
    std::env::var_os(TANSU_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("tansu"))
}

/// What to add to a failure to start `invocation`'s program.
pub(crate) fn missing_hint(invocation: &Invocation) -> &'static str {
    match invocation {
        Invocation::Broker(_) => {
            " (a twin's broker is Tansu: `cargo install tansu --version 0.6.0 --locked \
             --no-default-features --features libsql`, or name it in DIASPORA_TANSU)"
        }
        _ => "",
    }
}

/// A loopback TCP address for every broker of `scenario`, none of the
/// nodes' ports.
pub fn allocate(
    scenario: &Scenario,
    nodes: &HashMap<String, NodeAddrs>,
) -> HashMap<String, SocketAddr> {
    let mut taken: HashSet<u16> = nodes
        .values()
        .flat_map(|n| [n.data.port(), n.admin.port()])
        .collect();
    scenario
        .brokers
        .iter()
        .map(|b| loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("bind an ephemeral TCP port")
                .port();
            if taken.insert(port) {
                break (b.name.clone(), SocketAddr::from(([127, 0, 0, 1], port)));
            }
        })
        .collect()
}

/// The broker kind.
pub struct Broker;

impl HostKind for Broker {
    fn command(&self, at: HostAt<'_>) -> Result<HostCommand, TwinError> {
        let b = &at.scenario.brokers[at.index];
        let dir = at.env.host_dir(&b.name);
        Ok(HostCommand {
            invocation: Invocation::Broker(cli_args::Broker {
                program: tansu(),
                dir: dir.clone(),
                listen: at.env.brokers[&b.name],
            }),
            // Tansu says it is ready on stdout: into the log with the rest.
            stdout: Some(dir.join("log.txt")),
            files: Vec::new(),
            records: Records::None,
        })
    }

    fn ready(&self) -> Option<Ready> {
        Some(Ready {
            log_line: "ready in",
            within: Duration::from_secs(30),
        })
    }

    fn plan(&self, scenario: &Scenario) -> Vec<String> {
        scenario.brokers.iter().map(|b| b.name.clone()).collect()
    }
}

/// The Kafka bridge kind.
pub struct KafkaBridge;

impl HostKind for KafkaBridge {
    fn command(&self, at: HostAt<'_>) -> Result<HostCommand, TwinError> {
        let (scenario, env) = (at.scenario, at.env);
        let k = &scenario.kafka_bridges[at.index];
        Ok(HostCommand {
            invocation: Invocation::KafkaBridge(cli_args::KafkaBridge {
                name: k.name.clone(),
                direction: k.direction.clone(),
                topic: k.topic.clone(),
                addr: env.node(&k.node).data,
                ca: env.node(&k.node).ca.clone(),
                bootstrap: env.brokers[&k.broker],
                kafka_topic: k.kafka_topic.clone().unwrap_or_else(|| k.topic.clone()),
            }),
            stdout: None,
            files: Vec::new(),
            records: Records::None,
        })
    }

    /// Once it says where it bridges, the Kafka topic exists.
    fn ready(&self) -> Option<Ready> {
        Some(Ready {
            log_line: "kafka bridge '",
            within: Duration::from_secs(60),
        })
    }

    fn stop_after_drain(&self) -> Option<u8> {
        Some(1)
    }

    fn plan(&self, scenario: &Scenario) -> Vec<String> {
        scenario
            .kafka_bridges
            .iter()
            .map(|k| k.name.clone())
            .collect()
    }
}

/// The Kafka consumer kind.
pub struct KafkaConsumer;

impl HostKind for KafkaConsumer {
    fn command(&self, at: HostAt<'_>) -> Result<HostCommand, TwinError> {
        let c = &at.scenario.kafka_consumers[at.index];
        let out = at.env.host_dir(&c.name).join("consumed.jsonl");
        Ok(HostCommand {
            invocation: Invocation::KafkaConsume(cli_args::KafkaConsume {
                bootstrap: at.env.brokers[&c.broker],
                topic: c.topic.clone(),
                group: c.group.clone().unwrap_or_else(|| c.name.clone()),
            }),
            stdout: Some(out.clone()),
            files: Vec::new(),
            records: Records::Deliveries {
                topic: c.topic.clone(),
                path: out,
            },
        })
    }

    fn stop_after_drain(&self) -> Option<u8> {
        Some(0)
    }

    fn plan(&self, scenario: &Scenario) -> Vec<String> {
        scenario
            .kafka_consumers
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }
}
