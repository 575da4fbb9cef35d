//! Redis Streams: a `redis-server` of our own on a free port (append-only
//! file, fsync every second, no RDB snapshots), XADDs in pipelines on one
//! connection ([`write_pipelines`]), and XREAD BLOCK from `0` on a second
//! connection.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use diaspora_fabric::tls::CertPaths;
use redis::Value;
use tokio::sync::{mpsc, oneshot};

use crate::process::{self, ServerProcess, START_TIMEOUT};
use crate::workload::{drive, RunResult, RunSpec};

/// The client library, as the report names it (the workspace's version).
pub(crate) const CLIENT: &str =
    "redis-rs 0.32: XADD pipelines (what queued meanwhile, one on the wire); XREAD BLOCK";

/// An item for the XADD writer, and where its acknowledgement goes.
type Queued = (Bytes, oneshot::Sender<Result<()>>);

/// The producer's side of Redis: XADDs in the order they were sent, as
/// pipelines — everything queued when the previous pipeline's replies
/// came back goes out as the next one (at most the run's window, since
/// the producer holds no more unacknowledged), one pipeline on the wire at
/// a time, as `redis-benchmark -P` does. One writer keeps the order:
/// independent request futures on a multiplexed connection may reach it
/// in another order than they were made, and Redis numbers entries as
/// they arrive.
async fn write_pipelines(
    mut conn: redis::aio::MultiplexedConnection,
    key: String,
    mut queue: mpsc::UnboundedReceiver<Queued>,
) {
    let mut batch: Vec<Queued> = Vec::new();
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while let Ok(more) = queue.try_recv() {
            batch.push(more);
        }
        let mut pipe = redis::pipe();
        for (payload, _) in &batch {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("d")
                .arg(&payload[..]);
        }
        let result: redis::RedisResult<Vec<Value>> = pipe.query_async(&mut conn).await;
        let error = result.err().map(|e| e.to_string());
        for (_, ack) in batch.drain(..) {
            let _ = ack.send(match &error {
                None => Ok(()),
                Some(e) => Err(anyhow::anyhow!("XADD: {e}")),
            });
        }
    }
}

/// Aborts the writer when a run ends (it ends by itself once the queue closes).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a reader's XREAD blocks before it asks again, ms.
const BLOCK_MS: u64 = 1000;
/// Longest a request may wait for its answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A `redis-server` and what it was found to be.
#[derive(Debug, Clone)]
pub(crate) struct RedisBinary {
    pub program: PathBuf,
    /// `redis-server --version`'s line.
    pub version_text: String,
}

impl RedisBinary {
    /// `explicit`, or the first `redis-server` on PATH.
    pub async fn find(explicit: Option<&Path>) -> Result<RedisBinary> {
        let program = match explicit {
            Some(p) => process::explicit(p, "--redis-server")?,
            None => process::on_path("redis-server")
                .into_iter()
                .next()
                .context(
                    "redis-server not found on PATH: install it with ./scripts/peers-install \
                 (or pass --redis-server PATH, or leave redis out with --systems)",
                )?,
        };
        let version_text = process::version_line(&program).await?;
        Ok(RedisBinary {
            program,
            version_text,
        })
    }

    /// `7.0.15` from `Redis server v=7.0.15 sha=…`.
    pub fn version(&self) -> String {
        match process::parse_version(&self.version_text) {
            Some((a, b, c)) => format!("{a}.{b}.{c}"),
            None => self.version_text.clone(),
        }
    }
}

/// The server's command line: our port (TLS-only when `tls` is given),
/// durability as asked, nothing else of the machine's configuration.
pub(crate) fn server_args(port: u16, dir: &Path, tls: Option<&CertPaths>) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut kv = |k: &str, v: OsString| {
        a.push(format!("--{k}").into());
        a.push(v);
    };
    kv("bind", "127.0.0.1".into());
    match tls {
        Some(c) => {
            kv("port", "0".into());
            kv("tls-port", port.to_string().into());
            kv("tls-cert-file", c.node_cert.clone().into());
            kv("tls-key-file", c.node_key.clone().into());
            kv("tls-ca-cert-file", c.ca.clone().into());
            kv("tls-auth-clients", "no".into());
        }
        None => kv("port", port.to_string().into()),
    }
    kv("dir", dir.into());
    kv("appendonly", "yes".into());
    kv("appendfsync", "everysec".into());
    kv("save", "".into());
    kv("daemonize", "no".into());
    kv("protected-mode", "no".into());
    kv("logfile", "".into());
    a
}

/// A running `redis-server` with a temporary directory.
pub(crate) struct RedisServer {
    process: ServerProcess,
    port: u16,
    /// The CA to trust (PEM); `None`: no TLS.
    ca_pem: Option<Vec<u8>>,
    // Removed after the process is stopped (fields drop in order).
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server in a new temporary directory, TLS with `certs` if given.
    pub async fn start(binary: &RedisBinary, certs: Option<&CertPaths>) -> Result<RedisServer> {
        let dir = tempfile::tempdir().context("temporary Redis directory")?;
        let port = process::free_port()?;
        let mut process = ServerProcess::spawn(
            "redis-server",
            &binary.program,
            &server_args(port, dir.path(), certs),
            &[],
            dir.path().join("redis.log"),
        )?;
        process
            .wait_for_log("Ready to accept connections", START_TIMEOUT)
            .await?;
        let ca_pem = match certs {
            Some(c) => {
                Some(std::fs::read(&c.ca).with_context(|| format!("reading {}", c.ca.display()))?)
            }
            None => None,
        };
        Ok(RedisServer {
            process,
            port,
            ca_pem,
            _dir: dir,
        })
    }

    async fn connect(&self) -> Result<redis::aio::MultiplexedConnection> {
        let client = match &self.ca_pem {
            Some(ca) => redis::Client::build_with_tls(
                format!("rediss://127.0.0.1:{}/", self.port),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            )?,
            None => redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?,
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Duration::from_secs(10))
            .set_response_timeout(RESPONSE_TIMEOUT);
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .with_context(|| format!("connecting to redis-server on port {}", self.port))
    }

    /// One run on a new stream (key) named `spec.stream`.
    pub async fn run(&self, spec: &RunSpec) -> Result<RunResult> {
        let producer = self.connect().await?;
        let mut reader = self.connect().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_pipelines(producer, spec.stream.clone(), rx));
        let _writer = AbortOnDrop(writer);
        let read_key = spec.stream.clone();
        let count = spec.fetch_items;
        let result = drive(
            "redis",
            spec,
            |payload| {
                let (ack, acked) = oneshot::channel();
                let queued = tx.send((payload, ack));
                async move {
                    queued.map_err(|_| anyhow::anyhow!("the XADD writer stopped"))?;
                    Ok(async move {
                        acked
                            .await
                            .map_err(|_| anyhow::anyhow!("the XADD writer stopped"))?
                    })
                }
            },
            move |mut receiver, clock| async move {
                let mut last_id = b"0".to_vec();
                loop {
                    let reply: Value = redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(count)
                        .arg("BLOCK")
                        .arg(BLOCK_MS)
                        .arg("STREAMS")
                        .arg(&read_key)
                        .arg(&last_id[..])
                        .query_async(&mut reader)
                        .await
                        .context("XREAD")?;
                    let now = clock.now_us();
                    for (id, payload) in xread_entries(reply)? {
                        if receiver.on_payload(&payload, now)? {
                            return Ok(receiver);
                        }
                        last_id = id;
                    }
                }
            },
        )
        .await;
        result.map_err(|e| e.context(format!("log of redis-server:\n{}", self.process.log_tail())))
    }

    /// Stops the server and removes its directory.
    pub fn stop(self) {
        self.process.stop();
    }
}

/// The entries (id, value of the first field) of an XREAD reply on one
/// key, RESP2 or RESP3; no entries when the BLOCK timed out.
pub(crate) fn xread_entries(reply: Value) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let per_key = match reply {
        Value::Nil => return Ok(Vec::new()),
        // RESP2: [[key, entries]]
        Value::Array(keys) => keys
            .into_iter()
            .map(|k| match k {
                Value::Array(mut kv) if kv.len() == 2 => Ok(kv.pop().expect("two elements")),
                other => bail!("XREAD: unexpected key reply {other:?}"),
            })
            .collect::<Result<Vec<_>>>()?,
        // RESP3: {key: entries}
        Value::Map(keys) => keys.into_iter().map(|(_, v)| v).collect(),
        other => bail!("XREAD: unexpected reply {other:?}"),
    };
    let mut out = Vec::new();
    for entries in per_key {
        let Value::Array(entries) = entries else {
            bail!("XREAD: entries are not an array: {entries:?}");
        };
        out.reserve(entries.len());
        for entry in entries {
            let Value::Array(mut e) = entry else {
                bail!("XREAD: an entry is not an array: {entry:?}");
            };
            if e.len() != 2 {
                bail!("XREAD: an entry has {} elements, expected 2", e.len());
            }
            let fields = e.pop().expect("two elements");
            let id = e.pop().expect("two elements");
            let (Value::BulkString(id), Value::Array(mut fields)) = (id, fields) else {
                bail!("XREAD: an entry is not [id, [field, value]]");
            };
            if fields.len() != 2 {
                bail!(
                    "XREAD: entry has {} field elements, expected 2",
                    fields.len()
                );
            }
            let Some(Value::BulkString(value)) = fields.pop() else {
                bail!("XREAD: a field value is not a bulk string");
            };
            out.push((id, value));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    fn entry(id: &[u8], v: &[u8]) -> Value {
        Value::Array(vec![bulk(id), Value::Array(vec![bulk(b"d"), bulk(v)])])
    }

    #[test]
    fn xread_replies_parse_in_both_protocols() {
        assert!(xread_entries(Value::Nil).unwrap().is_empty());
        let entries = Value::Array(vec![entry(b"1-0", b"a"), entry(b"1-1", b"b")]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk(b"k"), entries.clone()])]);
        let want = vec![
            (b"1-0".to_vec(), b"a".to_vec()),
            (b"1-1".to_vec(), b"b".to_vec()),
        ];
        assert_eq!(xread_entries(resp2).unwrap(), want);
        let resp3 = Value::Map(vec![(bulk(b"k"), entries)]);
        assert_eq!(xread_entries(resp3).unwrap(), want);
    }

    #[test]
    fn malformed_xread_replies_are_errors() {
        assert!(xread_entries(Value::Int(3)).is_err());
        let bad = Value::Array(vec![Value::Array(vec![
            bulk(b"k"),
            Value::Array(vec![Value::Array(vec![bulk(b"1-0")])]),
        ])]);
        assert!(xread_entries(bad).is_err());
    }

    #[test]
    fn the_command_line_is_tls_only_with_aof_everysec() {
        let certs = CertPaths::in_dir(Path::new("/c"));
        let args: Vec<String> = server_args(7000, Path::new("/d"), Some(&certs))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("--port 0 --tls-port 7000"), "{joined}");
        assert!(joined.contains("--tls-auth-clients no"), "{joined}");
        assert!(
            joined.contains("--appendonly yes --appendfsync everysec"),
            "{joined}"
        );
        // `--save ""`: no RDB snapshots.
        let save = args.iter().position(|a| a == "--save").unwrap();
        assert_eq!(args[save + 1], "");
        let plain: Vec<String> = server_args(7000, Path::new("/d"), None)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(plain.join(" ").contains("--port 7000"));
        assert!(!plain.iter().any(|a| a.starts_with("--tls")));
    }

    #[test]
    fn versions_read_from_the_version_line() {
        let b = RedisBinary {
            program: "redis-server".into(),
            version_text: "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0".into(),
        };
        assert_eq!(b.version(), "7.0.15");
    }
}
