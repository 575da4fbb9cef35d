//! `diaspora bench python`: produce and consume throughput from Python
//! (the `pydiaspora` package, `python -m pydiaspora.bench`) against the
//! Rust client doing the same work on the same node in the same run.
//!
//! One embedded node serves both. Every round gives each client a fresh
//! one-partition topic per size: it produces the items (each sent
//! without waiting, then one flush until every acknowledgement is in) and
//! reads them back from the start. The Rust client runs in this process;
//! Python runs as a child process, timing itself around the same two
//! phases (its start-up is not counted). The order of the two alternates
//! between rounds; medians (min–max) are reported.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use diaspora_fabric::item::payload_item;
use diaspora_fabric::stats::Spread;
use diaspora_fabric::{
    ensure_topic, Client, ClientConfig, Consumer, ConsumerConfig, Node, NodeConfig, Producer,
    ProducerConfig, TopicSettings,
};
use serde::{Deserialize, Serialize};

use super::print_report;

/// Arguments of `diaspora bench python`.
#[derive(Args, Debug, Clone)]
pub struct PythonBenchArgs {
    /// Items of 128 B per round (0: leave this size out).
    #[arg(long, default_value_t = 100_000)]
    pub small_items: u64,
    /// Items of 1 MiB per round (0: leave this size out).
    #[arg(long, default_value_t = 1000)]
    pub large_items: u64,
    /// Rounds; Rust and Python alternate going first.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// The Python interpreter with pydiaspora installed (default: $DIASPORA_PYTHON, else python3).
    #[arg(long, env = "DIASPORA_PYTHON", default_value = "python3")]
    pub python: PathBuf,
    /// Give up when nothing arrives for this long, seconds.
    #[arg(long, default_value_t = 60)]
    pub stall_timeout_s: u64,
    /// Where the node keeps the bench's topics (a fresh directory is made
    /// in it and removed after). Default: the system's temporary directory.
    /// On a tmpfs (/dev/shm) the figures are the clients', not the disk's.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Throughput of one phase over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    /// Items per second.
    pub items_per_s: Spread,
    /// Megabytes (10⁶ B) of payload per second.
    pub mb_per_s: Spread,
}

/// One client at one size.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRates {
    /// Producing, until every acknowledgement is in.
    pub produce: Rate,
    /// Reading back from the start.
    pub consume: Rate,
}

/// One payload size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeRow {
    /// Payload bytes per item.
    pub size: usize,
    /// Items per round and client.
    pub items: u64,
    /// What Python sends and reads: `bytes` or a NumPy `uint8` array.
    pub python_payload: &'static str,
    /// The Rust client.
    pub rust: ClientRates,
    /// Python.
    pub python: ClientRates,
    /// Python's median produce rate over Rust's.
    pub produce_ratio: f64,
    /// Python's median consume rate over Rust's.
    pub consume_ratio: f64,
}

/// The report of `diaspora bench python`.
#[derive(Debug, Clone, Serialize)]
pub struct PythonBenchReport {
    /// `python --version` of the interpreter used.
    pub python: String,
    /// The pydiaspora version it imported.
    pub pydiaspora: String,
    /// Rounds.
    pub rounds: u32,
    /// One row per size.
    pub rows: Vec<SizeRow>,
}

/// What `python -m pydiaspora.bench` prints.
#[derive(Debug, Deserialize)]
struct PyRun {
    produce_s: f64,
    consume_s: f64,
    items: u64,
    bytes: u64,
}

/// Seconds to produce and to consume `items` of `size` with the Rust client.
async fn rust_run(
    client: &Client,
    topic: &str,
    size: usize,
    items: u64,
    stall: Duration,
) -> Result<(f64, f64)> {
    let payload = Bytes::from(vec![0xABu8; size]);
    let producer = Producer::new(client, ProducerConfig::new(topic)).await?;
    let t0 = Instant::now();
    for _ in 0..items {
        // The Delivery is dropped: like Python's loop, one flush waits for all.
        drop(producer.send(payload_item(payload.clone())).await?);
    }
    producer.flush().await?;
    let produce_s = t0.elapsed().as_secs_f64();
    let failed = producer
        .stats()
        .failed
        .load(std::sync::atomic::Ordering::Relaxed);
    producer.close().await?;
    if failed > 0 {
        bail!("the Rust producer had {failed} items fail");
    }
    let mut consumer = Consumer::assign(client, ConsumerConfig::new(topic), &[0]).await?;
    let t0 = Instant::now();
    let mut n = 0u64;
    let mut bytes = 0usize;
    while n < items {
        match consumer.poll(stall).await? {
            Some(it) => {
                n += 1;
                bytes += it.payload().len();
            }
            None => bail!("only {n} of {items} items came back to the Rust consumer"),
        }
    }
    let consume_s = t0.elapsed().as_secs_f64();
    consumer.close().await;
    if bytes != size * items as usize {
        bail!(
            "the Rust consumer read {bytes} B, not {}",
            size * items as usize
        );
    }
    Ok((produce_s, consume_s))
}

/// Runs `python -m pydiaspora.bench` against the node.
async fn python_run(
    a: &PythonBenchArgs,
    node: &Node,
    topic: &str,
    size: usize,
    items: u64,
) -> Result<(f64, f64)> {
    let out = tokio::process::Command::new(&a.python)
        .args(["-m", "pydiaspora.bench", "--addr"])
        .arg(node.data_addr().to_string())
        .arg("--ca")
        .arg(node.ca_file())
        .args([
            "--topic",
            topic,
            "--size",
            &size.to_string(),
            "--items",
            &items.to_string(),
        ])
        .args(["--timeout", &a.stall_timeout_s.to_string()])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {} -m pydiaspora.bench", a.python.display()))?;
    if !out.status.success() {
        bail!(
            "python -m pydiaspora.bench failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let run: PyRun = serde_json::from_str(text.trim())
        .with_context(|| format!("reading what pydiaspora.bench printed: {text:?}"))?;
    if run.items != items || run.bytes != size as u64 * items {
        bail!(
            "Python read {} items / {} B, not {items} / {}",
            run.items,
            run.bytes,
            size as u64 * items
        );
    }
    Ok((run.produce_s, run.consume_s))
}

/// Checks the interpreter imports pydiaspora; returns (python version, pydiaspora version).
async fn check_python(python: &Path) -> Result<(String, String)> {
    let out = tokio::process::Command::new(python)
        .args([
            "-c",
            "import sys, pydiaspora; print(sys.version.split()[0], pydiaspora.__version__)",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| {
            format!(
                "running {} (set --python or DIASPORA_PYTHON)",
                python.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "{} cannot import pydiaspora ({}). Build and install the wheel first:\n  \
             pip install maturin && maturin build --release -m crates/diaspora-py/Cargo.toml -o target/wheels\n  \
             pip install target/wheels/pydiaspora-*.whl\n\
             or point --python at a virtual environment that has it.",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    Ok((
        parts.next().unwrap_or("?").to_string(),
        parts.next().unwrap_or("?").to_string(),
    ))
}

fn rate(items: u64, size: usize, secs: &[f64]) -> Rate {
    Rate {
        items_per_s: Spread::of(secs.iter().map(|s| items as f64 / s)),
        mb_per_s: Spread::of(secs.iter().map(|s| (items as f64 * size as f64) / s / 1e6)),
    }
}

/// Runs `diaspora bench python`.
pub async fn python(a: PythonBenchArgs) -> Result<()> {
    let (python, pydiaspora) = check_python(&a.python).await?;
    let dir = match &a.data_dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("making the bench's data directory")?;
    let mut cfg = NodeConfig::new(dir.path());
    cfg.listen = "127.0.0.1:0".parse()?;
    cfg.admin_listen = None;
    cfg.limits.item_bytes_max = 4 << 20;
    let node = Node::start(cfg)
        .await
        .context("starting the bench's node")?;
    let client = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file())).await?;
    let stall = Duration::from_secs(a.stall_timeout_s.max(1));
    let sizes: Vec<(usize, u64)> = [(128usize, a.small_items), (1 << 20, a.large_items)]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    let mut rows = Vec::new();
    for (size, items) in sizes {
        let (mut rp, mut rc, mut pp, mut pc) = (vec![], vec![], vec![], vec![]);
        for round in 0..a.rounds.max(1) {
            let rust_topic = format!("bench.rust.{size}.{round}");
            let py_topic = format!("bench.python.{size}.{round}");
            for t in [&rust_topic, &py_topic] {
                ensure_topic(node.broker(), t, &TopicSettings::with_partitions(1)).await?;
            }
            let rust_first = round % 2 == 0;
            for first in [true, false] {
                if first == rust_first {
                    let (p, c) = rust_run(&client, &rust_topic, size, items, stall).await?;
                    rp.push(p);
                    rc.push(c);
                } else {
                    let (p, c) = python_run(&a, &node, &py_topic, size, items).await?;
                    pp.push(p);
                    pc.push(c);
                }
            }
            if !a.json {
                eprintln!(
                    "round {}: {size} B × {items}: rust produce {:.2} s consume {:.2} s; python produce {:.2} s consume {:.2} s",
                    round + 1,
                    rp[rp.len() - 1],
                    rc[rc.len() - 1],
                    pp[pp.len() - 1],
                    pc[pc.len() - 1]
                );
            }
        }
        let rust = ClientRates {
            produce: rate(items, size, &rp),
            consume: rate(items, size, &rc),
        };
        let py = ClientRates {
            produce: rate(items, size, &pp),
            consume: rate(items, size, &pc),
        };
        rows.push(SizeRow {
            size,
            items,
            python_payload: if size >= 64 << 10 {
                "numpy uint8 array"
            } else {
                "bytes"
            },
            produce_ratio: py.produce.items_per_s.median / rust.produce.items_per_s.median,
            consume_ratio: py.consume.items_per_s.median / rust.consume.items_per_s.median,
            rust,
            python: py,
        });
    }
    client.close();
    node.shutdown().await;
    let report = PythonBenchReport {
        python,
        pydiaspora,
        rounds: a.rounds.max(1),
        rows,
    };
    print_report(&report, a.json, |r| {
        let mut out = format!(
            "Python (pydiaspora {}, CPython {}) against the Rust client, same node, {} round(s), medians (min–max):",
            r.pydiaspora, r.python, r.rounds
        );
        for row in &r.rows {
            out.push_str(&format!(
                "\n  {} B × {} ({}):\n    produce: python {} items/s = {} MB/s; rust {} items/s = {} MB/s; python/rust {:.2}\n    consume: python {} items/s = {} MB/s; rust {} items/s = {} MB/s; python/rust {:.2}",
                row.size,
                row.items,
                row.python_payload,
                row.python.produce.items_per_s.text(0),
                row.python.produce.mb_per_s.text(1),
                row.rust.produce.items_per_s.text(0),
                row.rust.produce.mb_per_s.text(1),
                row.produce_ratio,
                row.python.consume.items_per_s.text(0),
                row.python.consume.mb_per_s.text(1),
                row.rust.consume.items_per_s.text(0),
                row.rust.consume.mb_per_s.text(1),
                row.consume_ratio,
            ));
        }
        out
    })
}
