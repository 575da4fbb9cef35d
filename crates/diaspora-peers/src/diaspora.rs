//! The diaspora fabric: a node with TLS (always on) and fsync every 100 ms,
//! embedded in this process or run as `diaspora serve`; one topic with one
//! partition per run; the fabric's [`Producer`] (batching, pipelined,
//! idempotent) and [`Consumer`].

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use diaspora_fabric::item::payload_item;
use diaspora_fabric::{
    ensure_topic, AdminClient, Client, ClientConfig, Consumer, ConsumerConfig, FsyncPolicy, Node,
    NodeConfig, Producer, ProducerConfig, TopicSettings,
};

use crate::process::{self, ServerProcess, START_TIMEOUT};
use crate::workload::{drive, RunResult, RunSpec};

/// The client library, as the report names it.
pub(crate) const CLIENT: &str = "diaspora-fabric Producer (batching, pipelined) + Consumer; QUIC";

/// What `diaspora serve` prints once it listens.
const SERVING: &str = "diaspora node serving:";

/// A `diaspora` binary to run nodes with (`--diaspora-binary`).
#[derive(Debug, Clone)]
pub(crate) struct DiasporaBinary {
    pub program: PathBuf,
    /// `diaspora --version`'s line.
    pub version_text: String,
}

impl DiasporaBinary {
    pub async fn find(program: &Path) -> Result<DiasporaBinary> {
        let program = process::explicit(program, "--diaspora-binary")?;
        let version_text = process::version_line(&program).await?;
        Ok(DiasporaBinary {
            program,
            version_text,
        })
    }
}

/// The data-plane address, admin address and CA file from `diaspora
/// serve`'s start line (`… data plane quic://A admin https://B fsync=… ca=P`).
pub(crate) fn parse_serving_line(line: &str) -> Result<(SocketAddr, SocketAddr, PathBuf)> {
    let word = |prefix: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(prefix))
            .with_context(|| format!("no {prefix}… in {line:?}"))
    };
    let data = word("quic://")?.parse().context("data-plane address")?;
    let admin = word("https://")?.parse().context("admin address")?;
    // The CA path runs to ` auth=` (the last word group since issue 19) or
    // to the end of the line; it may contain spaces.
    let ca = line
        .split_once(" ca=")
        .map(|(_, rest)| rest.rsplit_once(" auth=").map_or(rest, |(p, _)| p))
        .map(|p| PathBuf::from(p.trim()))
        .with_context(|| format!("no ca=… in {line:?}"))?;
    Ok((data, admin, ca))
}

enum Mode {
    Embedded(Node),
    Process {
        process: ServerProcess,
        admin: SocketAddr,
    },
}

/// A running node with a temporary data directory.
pub(crate) struct DiasporaServer {
    mode: Mode,
    data: SocketAddr,
    ca: PathBuf,
    // Removed after the node is stopped (fields drop in order).
    _dir: tempfile::TempDir,
}

impl DiasporaServer {
    /// Starts a node: in this process, or as `binary serve`.
    pub async fn start(binary: Option<&DiasporaBinary>, fsync: Duration) -> Result<DiasporaServer> {
        let dir = tempfile::tempdir().context("temporary diaspora data directory")?;
        let data_dir = dir.path().join("data");
        let fsync = FsyncPolicy::Interval(fsync);
        match binary {
            None => {
                let mut cfg = NodeConfig::new(&data_dir);
                cfg.fsync = fsync;
                cfg.admin_listen = None;
                let node = Node::start(cfg)
                    .await
                    .context("starting the embedded node")?;
                Ok(DiasporaServer {
                    data: node.data_addr(),
                    ca: node.ca_file(),
                    mode: Mode::Embedded(node),
                    _dir: dir,
                })
            }
            Some(b) => {
                let args: Vec<OsString> = vec![
                    "serve".into(),
                    "--data-dir".into(),
                    data_dir.into_os_string(),
                    "--listen".into(),
                    "127.0.0.1:0".into(),
                    "--admin".into(),
                    "127.0.0.1:0".into(),
                    "--fsync".into(),
                    fsync.to_string().into(),
                ];
                let mut process = ServerProcess::spawn(
                    "diaspora serve",
                    &b.program,
                    &args,
                    &[("RUST_LOG", "warn")],
                    dir.path().join("serve.log"),
                )?;
                let line = process.wait_for_log(SERVING, START_TIMEOUT).await?;
                let (data, admin, ca) = parse_serving_line(&line)?;
                Ok(DiasporaServer {
                    mode: Mode::Process { process, admin },
                    data,
                    ca,
                    _dir: dir,
                })
            }
        }
    }

    /// One run on a new one-partition topic named `spec.stream`.
    pub async fn run(&self, spec: &RunSpec, fetch_bytes_max: usize) -> Result<RunResult> {
        let one = TopicSettings::with_partitions(1);
        match &self.mode {
            Mode::Embedded(node) => {
                ensure_topic(node.broker(), &spec.stream, &one).await?;
            }
            Mode::Process { admin, .. } => {
                let mut a = AdminClient::connect(*admin, &self.ca)
                    .await
                    .context("connecting to the node's admin plane")?;
                ensure_topic(&mut a, &spec.stream, &one).await?;
            }
        }
        let config = ClientConfig::new(self.data, &self.ca);
        let producer_client = Client::connect(config.clone()).await?;
        let producer =
            Arc::new(Producer::new(&producer_client, ProducerConfig::new(&spec.stream)).await?);
        let consumer_client = Client::connect(config).await?;
        let mut cc = ConsumerConfig::new(&spec.stream);
        cc.fetch_bytes_max = u32::try_from(fetch_bytes_max).unwrap_or(u32::MAX);
        let mut consumer = Consumer::assign(&consumer_client, cc, &[0]).await?;

        let result = drive(
            "diaspora",
            spec,
            |payload| {
                let producer = producer.clone();
                async move {
                    let delivery = producer.send(payload_item(payload)).await?;
                    Ok(async move {
                        delivery.await?;
                        Ok(())
                    })
                }
            },
            move |mut receiver, clock| async move {
                loop {
                    if let Some(item) = consumer.poll(Duration::from_millis(100)).await? {
                        if receiver.on_payload(item.payload(), clock.now_us())? {
                            drop(consumer_client);
                            return Ok(receiver);
                        }
                    }
                }
            },
        )
        .await;
        if let Ok(p) = Arc::try_unwrap(producer) {
            let _ = p.close().await;
        }
        drop(producer_client);
        match (&self.mode, result) {
            (_, Ok(r)) => Ok(r),
            (Mode::Process { process, .. }, Err(e)) => {
                Err(e.context(format!("log of diaspora serve:\n{}", process.log_tail())))
            }
            (Mode::Embedded(_), Err(e)) => Err(e),
        }
    }

    /// Stops the node and removes its data.
    pub async fn stop(self) {
        match self.mode {
            Mode::Embedded(node) => node.shutdown().await,
            Mode::Process { process, .. } => process.stop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serving_line_gives_addresses_and_ca() {
        let line = "diaspora node serving: data plane quic://127.0.0.1:40001 admin https://127.0.0.1:40002 fsync=interval:100ms ca=/tmp/a b/data/certs/ca.pem auth=dev (DEVELOPMENT MODE: anonymous clients allowed, no ACL checked)";
        let (data, admin, ca) = parse_serving_line(line).unwrap();
        // The line before issue 19 ended with the CA path.
        let old = line.split(" auth=").next().unwrap();
        assert_eq!(parse_serving_line(old).unwrap().2, ca);
        assert_eq!(data, "127.0.0.1:40001".parse().unwrap());
        assert_eq!(admin, "127.0.0.1:40002".parse().unwrap());
        assert_eq!(ca, PathBuf::from("/tmp/a b/data/certs/ca.pem"));
        assert!(parse_serving_line("diaspora node serving: data plane").is_err());
    }
}
