//! `diaspora kafka-bridge` as a process against a real Kafka-protocol
//! broker (Tansu, named by DIASPORA_TEST_TANSU; without it the test says it
//! did not run): SIGKILLed mid-stream and restarted, the broker restarted,
//! every item of the fabric topic once in Kafka, in order per partition.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cli, start_kafka_bridge, start_node, wait_kafka_count, Reaped, Served, BIN};
use diaspora_kafka::testing::{create_topic, Tansu};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

fn bridge(node: &Served, bootstrap: &str) -> Reaped {
    start_kafka_bridge(node, bootstrap, "frames", &[])
}

/// Records of the Kafka topic per partition: their `diaspora.source` offsets.
fn sources(bootstrap: &str, partitions: i32) -> BTreeMap<i32, Vec<u64>> {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset("frames", p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out: BTreeMap<i32, Vec<u64>> = BTreeMap::new();
    // Read up to the high watermarks (Tansu may pause between fetches).
    let want = kafka_count(bootstrap, partitions) as usize;
    let t0 = Instant::now();
    while out.values().map(Vec::len).sum::<usize>() < want {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "reading Kafka back stalled"
        );
        let Some(m) = c.poll(Duration::from_secs(1)) else {
            continue;
        };
        let m = m.unwrap();
        let src = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "diaspora.source"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .expect("a diaspora.source header");
        let offset = src.rsplit('/').next().unwrap().parse().unwrap();
        out.entry(m.partition()).or_default().push(offset);
    }
    out
}

fn kafka_count(bootstrap: &str, partitions: i32) -> i64 {
    common::kafka_count(bootstrap, "frames", partitions)
}

/// A Tansu broker and a node (in `dir`) whose topic `frames` of
/// `partitions` partitions holds `n` synthetic items of `size` bytes.
fn broker_and_node(
    bin: &std::path::Path,
    dir: &std::path::Path,
    partitions: u32,
    n: u64,
    size: usize,
) -> (Tansu, Served) {
    let tansu = Tansu::start(bin, &dir.join("tansu")).unwrap();
    let node = start_node(&dir.join("node"), "interval");
    let parts = partitions.to_string();
    cli(
        &node,
        &["topic", "create", "frames", "--partitions", &parts],
    );
    let (n, size) = (n.to_string(), size.to_string());
    cli(
        &node,
        &[
            "produce",
            "--topic",
            "frames",
            "--synthetic",
            &n,
            "--size",
            &size,
        ],
    );
    (tansu, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_kafka_bridge_process_and_a_restarted_broker_lose_and_duplicate_nothing() {
    let Some(bin) = Tansu::from_env("the Kafka bridge CLI test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    const N: i64 = 6000;
    let (mut tansu, node) = broker_and_node(&bin, dir.path(), 3, N as u64, 1024);
    let bootstrap = tansu.bootstrap();
    create_topic(&bootstrap, "frames", 3).await.unwrap();

    let mut b = bridge(&node, &bootstrap);
    let t0 = Instant::now();
    while kafka_count(&bootstrap, 3) < N / 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the bridge did not start forwarding"
        );
        assert!(b.try_wait().unwrap().is_none(), "the bridge exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    b.kill().unwrap(); // SIGKILL
    b.wait().unwrap();
    tansu.restart().unwrap();
    let _b = bridge(&node, &bootstrap);
    std::thread::sleep(Duration::from_millis(300));
    tansu.restart().unwrap();
    let t0 = Instant::now();
    while kafka_count(&bootstrap, 3) < N {
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "{} of {N} in Kafka after 180 s",
            kafka_count(&bootstrap, 3)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing more arrives: no duplicates.
    std::thread::sleep(Duration::from_secs(2));
    let got = sources(&bootstrap, 3);
    let mut total = 0;
    for (p, offsets) in &got {
        let want: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(
            offsets, &want,
            "partition {p}: each source offset once, in order"
        );
        total += offsets.len() as i64;
    }
    assert_eq!(total, N);
}

/// `diaspora kafka-consume --json` of `count` records (or until 3 s idle)
/// for `group`: the item ids it printed.
fn kafka_consume(bootstrap: &str, group: &str, count: Option<u64>) -> Vec<u64> {
    let mut cmd = Command::new(BIN);
    cmd.args(["kafka-consume", "--kafka", &format!("{bootstrap}/frames")])
        .args(["--group", group, "--json", "--idle-timeout-ms", "3000"]);
    if let Some(n) = count {
        cmd.args(["--count", &n.to_string()]);
    }
    let out = cmd.env("RUST_LOG", "warn").output().unwrap();
    common::assert_success(&out);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["source"].as_str().unwrap().starts_with("frames/"), "{v}");
            assert_eq!(v["size"], 100, "{v}");
            v["id"].as_u64().unwrap()
        })
        .collect()
}

/// A bridge that creates its Kafka topic, and a cloud-side reader of it in
/// three runs of one group: each run resumes after what the last
/// committed, so together they print every item once.
#[test]
fn kafka_consume_resumes_its_group_on_a_topic_the_bridge_created() {
    let Some(bin) = Tansu::from_env("the kafka-consume test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    const N: u64 = 500;
    let (tansu, node) = broker_and_node(&bin, dir.path(), 2, N, 100);
    let bootstrap = tansu.bootstrap();
    let _b = start_kafka_bridge(&node, &bootstrap, "frames", &["--create-topic"]);
    wait_kafka_count(&bootstrap, "frames", 2, N as i64, Duration::from_secs(120));
    let mut ids = kafka_consume(&bootstrap, "cloud", Some(300));
    assert_eq!(ids.len(), 300);
    ids.extend(kafka_consume(&bootstrap, "cloud", Some(200)));
    assert!(kafka_consume(&bootstrap, "cloud", None).is_empty());
    ids.sort_unstable();
    assert_eq!(ids, (0..N).collect::<Vec<_>>());
    // Another group reads it all again.
    assert_eq!(kafka_consume(&bootstrap, "other", None).len(), N as usize);
}

/// `diaspora bench kafka-bridge --json` on a small load: both sizes, the
/// bridge and the plain producer each measured, rates consistent with the
/// item counts (speed itself is for BENCHMARKS.md, not asserted).
#[test]
fn bench_kafka_bridge_reports_the_bridge_and_a_plain_producer_at_both_sizes() {
    let Some(bin) = Tansu::from_env("the Kafka bridge bench test") else {
        return;
    };
    let out = Command::new(BIN)
        .args(["bench", "kafka-bridge", "--items-1kib", "300"])
        .args(["--items-1mib", "3", "--rounds", "2", "--json"])
        .arg("--tansu")
        .arg(&bin)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    common::assert_success(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["broker"].as_str().unwrap().starts_with("tansu"), "{r}");
    let rows = r["rows"].as_array().unwrap();
    let sizes: Vec<u64> = rows.iter().map(|w| w["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [1024, 1 << 20], "{r}");
    for w in rows {
        for side in ["bridge", "plain"] {
            let items = w[format!("{side}_items_per_s")]["median"].as_f64().unwrap();
            let mb = w[format!("{side}_mb_per_s")]["median"].as_f64().unwrap();
            assert!(items > 0.0, "{w}");
            let size = w["size"].as_f64().unwrap();
            assert!((mb - items * size / 1e6).abs() <= 1e-6 * mb.max(1.0), "{w}");
        }
        assert!(w["ratio_to_plain"].as_f64().unwrap() > 0.0, "{w}");
    }
}
