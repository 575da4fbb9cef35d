//! Helpers shared by the process-level tests: free ports, `diaspora serve`
//! child processes, SIGKILL, CLI calls and self-checking payloads.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;

pub const BIN: &str = env!("CARGO_BIN_EXE_diaspora");

pub fn free_port() -> u16 {
    // A port free for both UDP (data plane) and TCP (admin) right now.
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Served {
    pub child: Child,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub ca: PathBuf,
}

/// A node is killed and reaped when its test lets go of it — on every
/// path, a failed assertion included — so no `diaspora serve` outlives
/// the test (and its deleted data directory).
impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Any child process of a test, killed and reaped when dropped (on every
/// path, panics included). `take` hands the child over for
/// `wait_with_output`, which reaps it itself.
pub struct Reaped(Option<Child>);

impl Reaped {
    pub fn new(child: Child) -> Reaped {
        Reaped(Some(child))
    }

    pub fn take(mut self) -> Child {
        self.0.take().expect("a child not yet taken")
    }
}

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a child not yet taken")
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a child not yet taken")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn serve(dir: &Path, data: SocketAddr, admin: SocketAddr, fsync: &str) -> Served {
    serve_with(dir, data, admin, fsync, &[])
}

/// `serve` with extra arguments (e.g. `--segment-bytes`).
pub fn serve_with(
    dir: &Path,
    data: SocketAddr,
    admin: SocketAddr,
    fsync: &str,
    extra: &[&str],
) -> Served {
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args([
            "--listen",
            &data.to_string(),
            "--admin",
            &admin.to_string(),
            "--fsync",
            fsync,
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn diaspora serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("diaspora node serving") {
                let _ = tx.send(());
            }
            eprintln!("[node] {line}");
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("node did not report serving within 60 s");
    Served {
        child,
        data,
        admin,
        ca: dir.join("certs/ca.pem"),
    }
}

pub fn sigkill(s: &mut Served) {
    s.child.kill().expect("SIGKILL");
    s.child.wait().unwrap();
}

/// Asserts that a finished command succeeded, showing its stderr if not.
#[track_caller]
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn cli(s: &Served, args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN)
        .args(args)
        .args(["--ca", s.ca.to_str().unwrap()])
        .args(if args[0] == "topic" || args[..2] == ["stream", "init"] {
            vec!["--admin".to_string(), s.admin.to_string()]
        } else {
            vec!["--addr".to_string(), s.data.to_string()]
        })
        .output()
        .expect("run diaspora");
    assert!(
        out.status.success(),
        "diaspora {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a data-plane command that must fail; returns its stderr.
pub fn cli_fails(s: &Served, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .args([
            "--ca",
            s.ca.to_str().unwrap(),
            "--addr",
            &s.data.to_string(),
        ])
        .output()
        .expect("run diaspora");
    assert!(!out.status.success(), "diaspora {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

pub fn item_payload(i: u64) -> Bytes {
    // Index, then a body derived from it, then the body's checksum.
    let mut v = i.to_le_bytes().to_vec();
    v.extend((0..200u64).map(|k| (i.wrapping_mul(31).wrapping_add(k * 7) % 251) as u8));
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    Bytes::from(v)
}

pub fn check_payload(p: &[u8]) -> u64 {
    let (body, crc) = p.split_at(p.len() - 4);
    assert_eq!(
        crc32c::crc32c(body),
        u32::from_le_bytes(crc.try_into().unwrap()),
        "payload intact"
    );
    u64::from_le_bytes(body[..8].try_into().unwrap())
}

/// A node on fresh loopback ports.
pub fn start_node(dir: &Path, fsync: &str) -> Served {
    let data: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    serve(dir, data, admin, fsync)
}

/// Starts `diaspora bridge` from `from/topic` to `to/topic`.
pub fn start_bridge(from: &Served, to: &Served, topic: &str, name: &str) -> Reaped {
    Reaped::new(
        Command::new(BIN)
            // A long commit interval makes a restarted bridge re-send many
            // batches the target already holds: the dedupe path is exercised.
            .args(["bridge", "--name", name, "--stats-interval-s", "0"])
            .args(["--commit-interval-ms", "2000"])
            .args(["--from", &format!("{}/{topic}", from.data)])
            .args(["--to", &format!("{}/{topic}", to.data)])
            .args(["--from-ca", from.ca.to_str().unwrap()])
            .args(["--to-ca", to.ca.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn diaspora bridge"),
    )
}

/// Stops a bridge with SIGTERM (so it commits and reports) and returns the
/// number of duplicate batches it says it absorbed.
pub fn stop_bridge(bridge: Reaped) -> u64 {
    let pid = bridge.id().to_string();
    let ok = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "SIGTERM to the bridge");
    let out = bridge.take().wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bridge exit: {err}");
    let line = err
        .lines()
        .rev()
        .find(|l| l.contains("duplicate batches absorbed"))
        .unwrap_or_else(|| panic!("no final report from the bridge: {err}"));
    line.split(", ")
        .find_map(|part| part.strip_suffix(" duplicate batches absorbed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the report: {line}"))
}

/// Metric events on the node's `diaspora.metrics` topic from its start: up
/// to `max`, stopping once `idle` passes without one.
pub fn metric_events(
    data: SocketAddr,
    ca: &Path,
    max: usize,
    idle: Duration,
) -> Vec<diaspora_telemetry::MetricEvent> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = diaspora_fabric::Client::connect(diaspora_fabric::ClientConfig::new(data, ca))
            .await
            .unwrap();
        let mut stream = diaspora_telemetry::subscribe(
            &client,
            "diaspora.metrics",
            diaspora_fabric::StartFrom::Earliest,
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        while got.len() < max {
            match stream.next(idle).await.unwrap() {
                Some(e) => got.push(e),
                None => break,
            }
        }
        got
    })
}

/// `diaspora kafka-bridge --direction to-kafka` of `topic` on `node` into
/// the Kafka topic of the same name at `bootstrap`, as bridge `cloud`,
/// with `extra` flags.
pub fn start_kafka_bridge(node: &Served, bootstrap: &str, topic: &str, extra: &[&str]) -> Reaped {
    Reaped::new(
        Command::new(BIN)
            .args(["kafka-bridge", "--direction", "to-kafka", "--topic", topic])
            .args(["--kafka", &format!("{bootstrap}/{topic}")])
            .args(["--name", "cloud", "--commit-interval-ms", "1000"])
            .args(["--ca", node.ca.to_str().unwrap()])
            .args(["--addr", &node.data.to_string()])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Records in the Kafka topic `topic` (its partitions `0..partitions`),
/// from the watermarks.
pub fn kafka_count(bootstrap: &str, topic: &str, partitions: i32) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(5))
                .map_or(0, |(lo, hi)| hi - lo)
        })
        .sum()
}

/// Waits (at most `within`) until the Kafka topic holds `n` records.
pub fn wait_kafka_count(bootstrap: &str, topic: &str, partitions: i32, n: i64, within: Duration) {
    let t0 = std::time::Instant::now();
    loop {
        let got = kafka_count(bootstrap, topic, partitions);
        if got >= n {
            return;
        }
        assert!(
            t0.elapsed() < within,
            "{got} of {n} in Kafka topic {topic} after {within:?}"
        );
        // Not more often: each look costs a broker such as Tansu a scan.
        std::thread::sleep(Duration::from_millis(500));
    }
}
