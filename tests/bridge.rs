//! Bridges between two real `diaspora serve` processes: the bridge process
//! and the target node are each killed with SIGKILL mid-stream and
//! restarted; the target must end with every source item exactly once, in the
//! source's order per partition.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use diaspora::fabric::item::payload_item;
use diaspora::fabric::{Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig};

mod common;
use common::*;

const N: u64 = 20_000;

async fn total_items(client: &Client, topic: &str) -> u64 {
    match client.metadata(topic).await {
        Ok(m) => m.partitions.iter().map(|p| p.next_offset).sum(),
        Err(_) => 0,
    }
}

/// Ids per partition, in offset order.
async fn read_all(client: &Client, topic: &str) -> HashMap<u32, Vec<u64>> {
    let mut consumer = Consumer::assign(client, ConsumerConfig::new(topic), &[])
        .await
        .unwrap();
    let mut out: HashMap<u32, Vec<u64>> = HashMap::new();
    while let Some(it) = consumer.poll(Duration::from_secs(2)).await.unwrap() {
        out.entry(it.partition)
            .or_default()
            .push(check_payload(&it.item.payload));
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Kill {
    Bridge,
    TargetNode,
}

async fn mirror_through(kill: Kill) {
    let (edge_dir, hpc_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let edge = start_node(edge_dir.path(), "interval");
    let mut hpc = start_node(hpc_dir.path(), "interval");
    for n in [&edge, &hpc] {
        cli(n, &["topic", "create", "frames", "--partitions", "2"]);
    }
    let mut bridge = start_bridge(&edge, &hpc, "frames", "edge-hpc");

    let edge_client = Client::connect(ClientConfig::new(edge.data, &edge.ca))
        .await
        .unwrap();
    let producer = Producer::new(&edge_client, ProducerConfig::new("frames"))
        .await
        .unwrap();
    let sender = tokio::spawn(async move {
        for i in 0..N {
            producer
                .send_unacked(None, payload_item(item_payload(i)))
                .await
                .unwrap();
            if i % 500 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        producer.flush().await.unwrap();
        producer
            .stats()
            .acked
            .load(std::sync::atomic::Ordering::Relaxed)
    });

    // Kill mid-stream, once the target holds some but not all items.
    let hpc_client = Client::connect(ClientConfig::new(hpc.data, &hpc.ca))
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let n = total_items(&hpc_client, "frames").await;
        if n >= 3000 {
            assert!(
                n < N,
                "the kill must happen mid-stream (target already has {n})"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "bridge forwarded only {n} items in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match kill {
        Kill::Bridge => {
            bridge.kill().unwrap();
            bridge.wait().unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            bridge = start_bridge(&edge, &hpc, "frames", "edge-hpc");
        }
        Kill::TargetNode => {
            sigkill(&mut hpc);
            tokio::time::sleep(Duration::from_millis(1000)).await;
            hpc = serve(hpc_dir.path(), hpc.data, hpc.admin, "interval");
        }
    }
    assert_eq!(
        sender.await.unwrap(),
        N,
        "every item acknowledged at the edge"
    );

    // Wait for the target to catch up, then compare item by item.
    let hpc_client = Client::connect(ClientConfig::new(hpc.data, &hpc.ca))
        .await
        .unwrap();
    let started = Instant::now();
    while total_items(&hpc_client, "frames").await < N
        && started.elapsed() < Duration::from_secs(90)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let source = read_all(&edge_client, "frames").await;
    let target = read_all(&hpc_client, "frames").await;
    let mut seen = vec![0u32; N as usize];
    for ids in target.values() {
        for &i in ids {
            seen[i as usize] += 1;
        }
    }
    let missing = seen.iter().filter(|c| **c == 0).count();
    let dupes = seen.iter().filter(|c| **c > 1).count();
    assert_eq!(
        (missing, dupes),
        (0, 0),
        "every source item exactly once in the target"
    );
    for (p, ids) in &source {
        assert_eq!(
            target.get(p),
            Some(ids),
            "partition {p} in the source's order"
        );
    }
    let absorbed = stop_bridge(bridge);
    if kill == Kill::Bridge {
        // The restarted bridge resumed from a position committed up to 2 s
        // before the kill, re-sent what the target held, and the target
        // recognised every such batch.
        assert!(
            absorbed > 0,
            "the restarted bridge re-sent batches the target already held"
        );
    }
    let (mut edge, mut hpc) = (edge, hpc);
    sigkill(&mut edge);
    sigkill(&mut hpc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_killed_and_restarted_mid_stream_loses_and_duplicates_nothing() {
    mirror_through(Kill::Bridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_node_killed_and_restarted_mid_stream_loses_and_duplicates_nothing() {
    mirror_through(Kill::TargetNode).await;
}
