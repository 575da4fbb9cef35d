//! A QoS consumer process is SIGKILLed; while it is down the node's
//! retention drops the items it still needs; restarted from its checkpoint,
//! it gets them replayed from the (still running) producer's buffers — every
//! item, in order, intact — with nothing reconstructed and nothing lost.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ITEMS: u64 = 3000;

fn describe_start(node: &Served) -> u64 {
    let out = cli(node, &["topic", "describe", "frames", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["partitions"][0]["start_offset"].as_u64().unwrap()
}

fn consumer(
    node: &Served,
    cp: &std::path::Path,
    out: &std::path::Path,
    count: Option<u64>,
) -> Reaped {
    let mut c = Command::new(BIN);
    c.args([
        "stream", "consume", "--topic", "frames", "--name", "hpc", "--json",
    ])
    .arg("--checkpoint")
    .arg(cp)
    .args([
        "--ca",
        node.ca.to_str().unwrap(),
        "--addr",
        &node.data.to_string(),
    ]);
    if let Some(n) = count {
        c.args(["--count", &n.to_string(), "--idle-timeout-ms", "30000"]);
    }
    c.env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Reaped::new)
        .expect("spawn stream consume")
}

fn seqs(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| l.ends_with('}'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_killed_consumer_gets_expired_items_replayed_from_the_producer() {
    let dir = tempfile::tempdir().unwrap();
    let data: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut node = serve_with(
        &dir.path().join("node"),
        data,
        admin,
        "interval",
        &["--segment-bytes", "65536"],
    );
    cli(
        &node,
        &["stream", "init", "frames", "--retention-bytes", "262144"],
    );

    let cp = dir.path().join("hpc.checkpoint");
    let first = dir.path().join("first.jsonl");
    let mut c = consumer(&node, &cp, &first, None);
    let producer = Command::new(BIN)
        .args([
            "stream",
            "produce",
            "--topic",
            "frames",
            "--synthetic",
            &ITEMS.to_string(),
        ])
        .args([
            "--size",
            "4096",
            "--rate",
            "600",
            "--linger-s",
            "120",
            "--json",
        ])
        .args([
            "--ca",
            node.ca.to_str().unwrap(),
            "--addr",
            &node.data.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Reaped::new)
        .expect("spawn stream produce");

    // Let the consumer read a few hundred items, then kill it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seqs(&first).len() < 300 {
        assert!(Instant::now() < deadline, "the consumer got nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
    c.kill().unwrap();
    c.wait().unwrap();
    let before = seqs(&first);
    let cp_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cp).expect("a checkpoint was written"))
            .unwrap();
    let (next, offset) = (
        cp_json["partitions"]["0"][0].as_u64().unwrap(),
        cp_json["partitions"]["0"][1].as_u64().unwrap(),
    );
    assert!(
        next > 0 && next <= before.len() as u64 + 1,
        "checkpoint {next} vs {} delivered",
        before.len()
    );

    // The stream goes on; retention drops what the dead consumer still needs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while describe_start(&node) <= offset + 500 {
        assert!(
            Instant::now() < deadline,
            "retention did not pass offset {offset}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Restart from the checkpoint: everything from `next` on, in order, once.
    let second = dir.path().join("second.jsonl");
    let mut c = consumer(&node, &cp, &second, Some(ITEMS - next));
    let status = c.wait().unwrap();
    assert!(status.success(), "the restarted consumer got every item");
    let after = seqs(&second);
    let got: Vec<u64> = after.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        got,
        (next..ITEMS).collect::<Vec<_>>(),
        "resumed at the checkpoint, in order, once"
    );
    let replayed = after.iter().filter(|v| v["replayed"] == true).count();
    assert!(
        replayed >= 500,
        "expired items came from the producer's buffers: {replayed}"
    );
    for v in &after {
        assert_eq!(v["quality"], "original", "{v}");
        assert_eq!(v["id"].as_u64(), v["seq"].as_u64(), "{v}");
        assert_eq!(v["size"], 4096);
    }
    // Together the two runs saw every item; the second repeats at most the
    // few the first delivered after its last checkpoint.
    assert!(before.len() as u64 >= next);

    // SIGTERM ends the producer's linger; it reports what it served.
    let pid = producer.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = producer.take().wait_with_output().unwrap();
    assert!(out.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["acked"], ITEMS);
    assert!(summary["replay_items"].as_u64().unwrap() >= replayed as u64);
    sigkill(&mut node);
}
