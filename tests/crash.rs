//! Crash safety of a real `diaspora serve` process: SIGKILL mid-stream, restart,
//! and check that every acknowledged item is there exactly once, intact, and
//! that consumer groups resume from their committed offsets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use diaspora::fabric::item::payload_item;
use diaspora::fabric::{Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig};

mod common;
use common::*;

async fn kill_mid_stream(fsync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut node = serve(dir.path(), data, admin, fsync);
    cli(&node, &["topic", "create", "frames", "--partitions", "2"]);

    let client = Client::connect(ClientConfig::new(data, &node.ca))
        .await
        .unwrap();
    let mut pc = ProducerConfig::new("frames");
    pc.retry_for = Duration::from_secs(60);
    pc.batch_bytes_max = 16 << 10;
    let producer = Producer::new(&client, pc).await.unwrap();
    const N: u64 = 20_000;
    let sender = tokio::spawn(async move {
        let mut deliveries = Vec::with_capacity(N as usize);
        for i in 0..N {
            deliveries.push(producer.send(payload_item(item_payload(i))).await.unwrap());
            if i % 500 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let mut acked = Vec::new();
        for (i, d) in deliveries.into_iter().enumerate() {
            if let Ok(d) = d.await {
                acked.push((i as u64, d));
            }
        }
        let stats = producer.stats();
        let retried = stats
            .retried_batches
            .load(std::sync::atomic::Ordering::Relaxed);
        producer.close().await.ok();
        (acked, retried)
    });

    // Kill the node while items are flowing, then bring it back on the same address.
    let started = Instant::now();
    loop {
        let out = cli(&node, &["topic", "describe", "frames", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let n: u64 = v["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["next_offset"].as_u64().unwrap())
            .sum();
        if n >= 3000 || started.elapsed() > Duration::from_secs(60) {
            assert!(n < N, "the kill must happen mid-stream (already {n} items)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigkill(&mut node);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut node = serve(dir.path(), data, admin, fsync);

    let (acked, retried) = tokio::time::timeout(Duration::from_secs(120), sender)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        acked.len() as u64,
        N,
        "the producer recovers and every item is acknowledged"
    );
    assert!(retried > 0, "some batches were retried across the crash");

    let mut consumer = Consumer::assign(&client, ConsumerConfig::new("frames"), &[])
        .await
        .unwrap();
    let mut seen = vec![0u32; N as usize];
    let mut place = std::collections::HashMap::new();
    while let Some(it) = consumer.poll(Duration::from_secs(3)).await.unwrap() {
        let i = check_payload(&it.item.payload);
        seen[i as usize] += 1;
        place.insert(i, (it.partition, it.offset));
    }
    let missing = seen.iter().filter(|c| **c == 0).count();
    let dupes = seen.iter().filter(|c| **c > 1).count();
    assert_eq!(
        (missing, dupes),
        (0, 0),
        "every acknowledged item exactly once"
    );
    for (i, d) in &acked {
        assert_eq!(
            place[i],
            (d.partition, d.offset),
            "item {i} is where its ack said"
        );
    }
    client.close();
    sigkill(&mut node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_fsync_always() {
    kill_mid_stream("always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_fsync_interval() {
    kill_mid_stream("interval").await;
}

/// The acceptance sequence of the README, through the CLI only.
#[test]
fn cli_produce_kill_restart_consume_and_group_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut node = serve(dir.path(), data, admin, "interval");
    cli(&node, &["topic", "create", "t"]);
    let out = cli(
        &node,
        &[
            "produce",
            "--topic",
            "t",
            "--synthetic",
            "20000",
            "--size",
            "1024",
            "--json",
        ],
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["acked"], 20000, "{summary}");

    sigkill(&mut node);
    let mut node = serve(dir.path(), data, admin, "interval");

    let out = cli(
        &node,
        &[
            "consume", "--topic", "t", "--from", "earliest", "--count", "20000", "--json",
        ],
    );
    let items = json_lines(&out);
    assert_eq!(items.len(), 20000);
    for (i, it) in items.iter().enumerate() {
        assert_eq!(it["offset"], i as u64);
        assert_eq!(it["size"], 1024);
        assert_eq!(it["topic"], "t");
        assert_eq!(it["partition"], 0);
    }
    let crc = items[0]["crc32c"].clone();
    assert!(
        items.iter().all(|it| it["crc32c"] == crc),
        "payloads intact"
    );
    // Metadata only: the same items and sizes, the payloads left on the node.
    let out = cli(
        &node,
        &[
            "consume",
            "--topic",
            "t",
            "--count",
            "100",
            "--json",
            "--metadata-only",
        ],
    );
    let meta = json_lines(&out);
    assert_eq!(meta.len(), 100);
    for (i, it) in meta.iter().enumerate() {
        assert_eq!(it["offset"], i as u64);
        assert_eq!(it["size"], 1024);
        assert_eq!(it["payload_left_out"], true);
        assert!(it["crc32c"].is_null());
    }

    let out = cli(
        &node,
        &[
            "consume", "--topic", "t", "--group", "g", "--count", "5000", "--json",
        ],
    );
    assert_eq!(json_lines(&out).last().unwrap()["offset"], 4999);
    // The group's commit is durable: survive another SIGKILL.
    sigkill(&mut node);
    let mut node = serve(dir.path(), data, admin, "interval");
    let out = cli(
        &node,
        &[
            "consume", "--topic", "t", "--group", "g", "--count", "1", "--json",
        ],
    );
    assert_eq!(
        json_lines(&out)[0]["offset"],
        5000,
        "group resumes at its committed offset"
    );

    // Clear one-line errors for an unknown topic and an unreachable node.
    let err = cli_fails(&node, &["consume", "--topic", "nope", "--count", "1"]);
    assert!(err.contains("unknown topic 'nope'"), "{err}");
    sigkill(&mut node);
    let err = cli_fails(&node, &["produce", "--topic", "t", "--synthetic", "1"]);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("is the node running?"), "{err}");
}

/// `produce --acks FILE --rate R` records where every item landed; `consume
/// --json` reports each item's id and latency: the two agree item by item.
#[test]
fn cli_acks_file_matches_consumed_items() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_node(dir.path(), "interval");
    cli(&node, &["topic", "create", "t", "--partitions", "3"]);
    let acks = dir.path().join("acks.jsonl");
    let started = std::time::Instant::now();
    // A first run without --acks shares the topic (same ids, other places).
    let produce = [
        "produce",
        "--topic",
        "t",
        "--synthetic",
        "600",
        "--size",
        "64",
        "--rate",
        "3000",
    ];
    cli(&node, &produce);
    let with_acks = [&produce[..], &["--acks", acks.to_str().unwrap(), "--json"]].concat();
    let out = cli(&node, &with_acks);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["acked"], 600);
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "--rate paces production"
    );
    let acked: Vec<serde_json::Value> = std::fs::read_to_string(&acks)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(acked.len(), 600);
    let consumed = json_lines(&cli(
        &node,
        &["consume", "--topic", "t", "--count", "1200", "--json"],
    ));
    let place: std::collections::HashMap<(u64, u64), u64> = consumed
        .iter()
        .map(|c| {
            assert!(c["latency_us"].as_i64().unwrap() >= 0);
            (
                (
                    c["partition"].as_u64().unwrap(),
                    c["offset"].as_u64().unwrap(),
                ),
                c["id"].as_u64().unwrap(),
            )
        })
        .collect();
    for (k, a) in acked.iter().enumerate() {
        assert_eq!(a["id"], k as u64, "acks are written in send order");
        let at = (
            a["partition"].as_u64().unwrap(),
            a["offset"].as_u64().unwrap(),
        );
        assert_eq!(
            place[&at], k as u64,
            "the item at the acked place has the acked id"
        );
    }
    sigkill(&mut node);
}
