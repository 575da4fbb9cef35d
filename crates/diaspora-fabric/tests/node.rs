//! Integration tests of an embedded node over real QUIC on loopback.

use std::time::Duration;

use bytes::Bytes;
use diaspora_fabric::item::payload_item;
use diaspora_fabric::{
    Client, ClientConfig, Consumer, ConsumerConfig, FabricError, Node, NodeConfig, Producer,
    ProducerConfig, StartFrom, TopicSettings,
};
use diaspora_log::{BatchBuilder, Compression};
use diaspora_proto::v1::{self, frame::Body, ErrorCode};

async fn node_with(dir: &std::path::Path, f: impl FnOnce(&mut NodeConfig)) -> Node {
    let mut cfg = NodeConfig::new(dir);
    f(&mut cfg);
    Node::start(cfg).await.expect("node starts")
}

async fn client(node: &Node) -> Client {
    Client::connect(ClientConfig::new(node.data_addr(), node.ca_file()))
        .await
        .expect("client connects")
}

/// A node (configured by `f`) with topic "t" of `partitions`, and a client.
async fn setup(
    partitions: u32,
    f: impl FnOnce(&mut NodeConfig),
) -> (tempfile::TempDir, Node, Client) {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with(dir.path(), f).await;
    node.broker()
        .create_topic("t", TopicSettings::with_partitions(partitions))
        .unwrap();
    let c = client(&node).await;
    (dir, node, c)
}

fn remote_code(e: &FabricError) -> Option<ErrorCode> {
    match e {
        FabricError::Remote { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_consume_every_item_in_order() {
    let (_dir, _node, c) = setup(3, |_| {}).await;
    let producer = Producer::new(&c, ProducerConfig::new("t")).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..3000u32 {
        let mut item = payload_item(Bytes::from(i.to_le_bytes().to_vec()));
        item.key = Bytes::from(format!("k{}", i % 17));
        deliveries.push(producer.send(item).await.unwrap());
    }
    let mut placed = Vec::new();
    for d in deliveries {
        placed.push(d.await.unwrap());
    }
    let mut consumer = Consumer::assign(&c, ConsumerConfig::new("t"), &[])
        .await
        .unwrap();
    let mut got = std::collections::HashMap::new();
    let mut last_offset = std::collections::HashMap::new();
    while got.len() < 3000 {
        let it = consumer
            .poll(Duration::from_secs(10))
            .await
            .unwrap()
            .expect("item arrives");
        let i = u32::from_le_bytes(it.item.payload[..4].try_into().unwrap());
        if let Some(prev) = last_offset.insert(it.partition, it.offset) {
            assert!(it.offset > prev, "per-partition order holds");
        }
        assert!(it.item.producer_key.is_some(), "producer key is filled in");
        assert!(
            got.insert(i, (it.partition, it.offset)).is_none(),
            "item {i} delivered twice"
        );
    }
    for (i, d) in placed.iter().enumerate() {
        assert_eq!(
            got[&(i as u32)],
            (d.partition, d.offset),
            "ack offsets match the log"
        );
    }
    // Same key → same partition.
    let p0 = placed[0].partition;
    assert!(placed.iter().step_by(17).all(|d| d.partition == p0));
    // Nothing more.
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_batch_is_appended_once() {
    let (_dir, node, c) = setup(1, |_| {}).await;
    let lane = c.lane(0).await.unwrap();
    let mut b = BatchBuilder::new(Compression::None).with_producer(42, 0);
    b.push(b"a", 1);
    b.push(b"b", 1);
    let batch = b.finish();
    let produce = |batch: Bytes| {
        Body::ProduceRequest(v1::ProduceRequest {
            topic: "t".into(),
            partition: 0,
            batch,
        })
    };
    let first = lane.call(produce(batch.clone())).await.unwrap();
    let again = lane.call(produce(batch.clone())).await.unwrap();
    let (Body::ProduceResponse(first), Body::ProduceResponse(again)) = (first, again) else {
        panic!("expected produce responses");
    };
    assert!(!first.duplicate);
    assert!(again.duplicate, "the retry is recognised");
    assert_eq!(
        (first.base_offset, first.last_offset),
        (again.base_offset, again.last_offset)
    );
    assert_eq!(
        node.broker().partition("t", 0).unwrap().log.next_offset(),
        2
    );
    // A gap in the sequence is refused with a clear code.
    let mut gap = BatchBuilder::new(Compression::None).with_producer(42, 10);
    gap.push(b"c", 1);
    let e = lane.call(produce(gap.finish())).await.unwrap_err();
    assert_eq!(remote_code(&e), Some(ErrorCode::OutOfOrderSequence), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_stream_closes_only_that_stream() {
    let (_dir, node, c) = setup(1, |_| {}).await;
    // A healthy lane opened before the garbage.
    let healthy = c.lane(0).await.unwrap();

    // Raw quinn: a length prefix followed by bytes that are not a Frame.
    let conn = c.connection(0).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let garbage = [0u8, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    send.write_all(&garbage).await.unwrap();
    let reply = diaspora_fabric::wire::read_frame(&mut recv, 1 << 20)
        .await
        .unwrap()
        .unwrap();
    match reply.body {
        Some(Body::Error(e)) => {
            assert_eq!(e.code, ErrorCode::MalformedFrame as i32);
            assert!(e.message.contains("malformed frame"), "{}", e.message);
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
    // The stream is closed after the reason...
    let end = diaspora_fabric::wire::read_frame(&mut recv, 1 << 20).await;
    assert!(
        matches!(end, Ok(None) | Err(_)),
        "stream ends after the error"
    );

    // A frame announcing more than frame_bytes_max is refused before allocation.
    let (mut send2, mut recv2) = conn.open_bi().await.unwrap();
    send2.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let reply = diaspora_fabric::wire::read_frame(&mut recv2, 1 << 20)
        .await
        .unwrap()
        .unwrap();
    let Some(Body::Error(e)) = reply.body else {
        panic!("expected error")
    };
    assert!(
        e.message.contains("exceeds frame_bytes_max"),
        "{}",
        e.message
    );

    // ...while the connection, the earlier lane and new lanes keep working.
    for lane in [healthy, c.lane(0).await.unwrap()] {
        let r = lane
            .call(Body::MetadataRequest(v1::MetadataRequest {
                topic: "t".into(),
            }))
            .await
            .unwrap();
        assert!(matches!(r, Body::MetadataResponse(_)));
    }
    assert!(conn.close_reason().is_none(), "connection survives");
    assert_eq!(
        node.broker()
            .counters
            .malformed_frames
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_item_and_unknown_topic_get_clear_errors() {
    let (_dir, _node, c) = setup(1, |c| {
        c.limits.item_bytes_max = 1000;
        c.limits.batch_bytes_max = 64 << 10;
    })
    .await;
    let producer = Producer::new(&c, ProducerConfig::new("t")).await.unwrap();
    // Client-side check, from the limits the node announced.
    let e = producer
        .send(payload_item(Bytes::from(vec![0u8; 5000])))
        .await
        .err()
        .unwrap();
    let msg = e.to_string();
    assert_eq!(msg, "item of 5012 bytes exceeds item_bytes_max 1000");
    // Node-side check, for a client that does not look.
    let mut b = BatchBuilder::new(Compression::None);
    b.push(&[0u8; 4000], 1);
    let lane = c.lane(0).await.unwrap();
    let e = lane
        .call(Body::ProduceRequest(v1::ProduceRequest {
            topic: "t".into(),
            partition: 0,
            batch: b.finish(),
        }))
        .await
        .unwrap_err();
    assert_eq!(remote_code(&e), Some(ErrorCode::ItemTooLarge), "{e}");
    assert!(e.to_string().contains("record_bytes_max 1000"), "{e}");
    // Unknown topic.
    let e = Producer::new(&c, ProducerConfig::new("nope"))
        .await
        .err()
        .unwrap();
    assert_eq!(remote_code(&e), Some(ErrorCode::UnknownTopic));
    assert!(e.to_string().contains("unknown topic 'nope'"), "{e}");
    // The node keeps serving the same lane.
    let d = producer
        .send(payload_item(Bytes::from_static(b"ok")))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(d.offset, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_and_partition_limits_name_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with(dir.path(), |c| {
        c.limits.topics_max = 2;
        c.limits.partitions_max = 4;
    })
    .await;
    let b = node.broker();
    let e = b
        .create_topic("big", TopicSettings::with_partitions(5))
        .unwrap_err();
    assert_eq!(e.to_string(), "partition count 5 exceeds partitions_max 4");
    b.create_topic("a", TopicSettings::with_partitions(1))
        .unwrap();
    b.create_topic("b", TopicSettings::with_partitions(1))
        .unwrap();
    let e = b
        .create_topic("c", TopicSettings::with_partitions(1))
        .unwrap_err();
    assert_eq!(e.to_string(), "topic count 3 exceeds topics_max 2");
    assert!(matches!(
        b.create_topic("a", TopicSettings::with_partitions(1)),
        Err(FabricError::TopicExists(_))
    ));
    assert!(b
        .create_topic("../escape", TopicSettings::with_partitions(1))
        .is_err());
    b.delete_topic("a").unwrap();
    b.create_topic("c", TopicSettings::with_partitions(1))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_limit_is_enforced_by_the_node() {
    let (_dir, _node, c) = setup(1, |c| {
        c.limits.in_flight_max = 2;
        c.fsync = diaspora_log::FsyncPolicy::Always;
    })
    .await;
    let lane = c.lane(0).await.unwrap();
    // Fire many fetches that long-poll (each holds the worker) so requests queue up.
    let mut answers = Vec::new();
    for _ in 0..16 {
        answers.push(
            lane.send(Body::FetchRequest(v1::FetchRequest {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_bytes: 1024,
                max_wait_ms: 300,
                metadata_only: false,
            }))
            .await
            .unwrap(),
        );
    }
    let mut refused = 0;
    for a in answers {
        match a.await.unwrap() {
            Err(e) => {
                assert_eq!(remote_code(&e), Some(ErrorCode::TooManyInFlight), "{e}");
                assert!(e.to_string().contains("in_flight_max 2"), "{e}");
                refused += 1;
            }
            Ok(Body::FetchResponse(_)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(refused > 0, "some requests beyond the window are refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_offsets_survive_restart_and_members_share_partitions() {
    let (dir, node, c) = setup(4, |_| {}).await;
    let producer = Producer::new(&c, ProducerConfig::new("t")).await.unwrap();
    for i in 0..400u32 {
        producer
            .send_to(i % 4, payload_item(Bytes::from(i.to_le_bytes().to_vec())))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();

    let cfg = ConsumerConfig::new("t")
        .group("g")
        .start(StartFrom::Earliest);
    let mut a = Consumer::subscribe(&c, cfg.clone()).await.unwrap();
    assert_eq!(a.assignment(), vec![0, 1, 2, 3]);
    for _ in 0..100 {
        a.poll(Duration::from_secs(5)).await.unwrap().unwrap();
    }
    a.commit().await.unwrap();
    let committed: u64 = node.broker().group_offsets("g", "t").values().sum();
    assert_eq!(committed, 100);

    // A second member joins: the first rebalances onto half of the partitions.
    let mut short = cfg.clone();
    short.session_timeout = Duration::from_millis(600);
    let mut a = {
        a.close().await;
        Consumer::subscribe(&c, short.clone()).await.unwrap()
    };
    // b's join completes once a, polling on, has seen the rebalance,
    // committed what it read in its generation, and re-joined.
    let b_join = tokio::spawn({
        let c = c.clone();
        let short = short.clone();
        async move { Consumer::subscribe(&c, short).await.unwrap() }
    });
    while !b_join.is_finished() {
        let _ = a.poll(Duration::from_millis(50)).await.unwrap();
    }
    let b = b_join.await.unwrap();
    assert_eq!(b.assignment().len(), 2);
    assert_eq!(a.assignment().len(), 2, "rebalanced to half");
    let mut all: Vec<u32> = a.assignment().into_iter().chain(b.assignment()).collect();
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2, 3]);
    drop(a);
    drop(b);
    let committed: u64 = node.broker().group_offsets("g", "t").values().sum();
    assert!(committed >= 100, "{committed}");

    // Committed offsets are durable across a restart.
    node.shutdown().await;
    let node = node_with(dir.path(), |_| {}).await;
    assert_eq!(
        node.broker().group_offsets("g", "t").values().sum::<u64>(),
        committed
    );
    let c = client(&node).await;
    let mut again = Consumer::subscribe(&c, cfg).await.unwrap();
    let mut n = 0;
    while again
        .poll(Duration::from_millis(500))
        .await
        .unwrap()
        .is_some()
    {
        n += 1;
    }
    assert_eq!(n, 400 - committed, "resumes after the committed offsets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_a_node_signed_by_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with(dir.path(), |_| {}).await;
    let other = tempfile::tempdir().unwrap();
    let other_ca = diaspora_fabric::tls::generate_dev_certs(other.path(), &[])
        .unwrap()
        .ca;
    let e = Client::connect(ClientConfig::new(node.data_addr(), other_ca))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, FabricError::Connection { .. }), "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_node_is_a_prompt_error() {
    let dir = tempfile::tempdir().unwrap();
    let certs = diaspora_fabric::tls::generate_dev_certs(dir.path(), &[]).unwrap();
    let mut cfg = ClientConfig::new("127.0.0.1:9".parse().unwrap(), certs.ca);
    cfg.connect_timeout = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let e = Client::connect(cfg).await.err().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(e, FabricError::Connection { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_plane_manages_topics_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with(dir.path(), |_| {}).await;
    let mut admin =
        diaspora_fabric::AdminClient::connect(node.admin_addr().unwrap(), &node.ca_file())
            .await
            .unwrap();
    assert!(admin.health().await.unwrap().serving);
    admin
        .create_topic(
            "x",
            v1::TopicConfig {
                partitions: 3,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(admin.list_topics().await.unwrap(), vec!["x".to_string()]);
    let d = admin.describe_topic("x").await.unwrap();
    assert_eq!(d.partitions.len(), 3);
    let e = admin.describe_topic("y").await.unwrap_err();
    assert!(e.to_string().contains("unknown topic 'y'"), "{e}");
    admin.commit_group_offset("g", "x", 1, 0).await.unwrap();
    assert_eq!(
        admin.group_offsets("g", "x").await.unwrap().offsets.len(),
        1
    );
    let e = admin
        .commit_group_offset("g", "x", 1, 99)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("beyond the end"), "{e}");
    admin.delete_topic("x").await.unwrap();
    assert!(admin.list_topics().await.unwrap().is_empty());
    let stats = admin.stats().await.unwrap();
    assert_eq!(stats.topics, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_batches_roundtrip_and_seek_works() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with(dir.path(), |_| {}).await;
    node.broker()
        .create_topic("z", TopicSettings::with_partitions(1))
        .unwrap();
    let c = client(&node).await;
    let mut pc = ProducerConfig::new("z");
    pc.compression = Compression::Zstd { level: 3 };
    let producer = Producer::new(&c, pc).await.unwrap();
    for i in 0..500u32 {
        producer
            .send_unacked(None, payload_item(Bytes::from(vec![(i % 251) as u8; 2048])))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    let on_disk = node.broker().partition("z", 0).unwrap().log.size_bytes();
    assert!(on_disk < 500 * 2048 / 4, "compressed on disk: {on_disk}");
    let mut consumer = Consumer::assign(&c, ConsumerConfig::new("z"), &[0])
        .await
        .unwrap();
    consumer.seek(0, 250).unwrap();
    let first = consumer
        .poll(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.offset, 250);
    assert_eq!(first.item.payload[..], vec![250u8; 2048][..]);
    consumer.seek_to(0, StartFrom::Earliest).await.unwrap();
    let first = consumer
        .poll(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.offset, 0);
    consumer.seek_to(0, StartFrom::Latest).await.unwrap();
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_none());
    producer
        .send_to(0, payload_item(Bytes::from_static(b"new")))
        .await
        .unwrap()
        .await
        .unwrap();
    let next = consumer
        .poll(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((next.offset, &next.item.payload[..]), (500, &b"new"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_expires_old_segments_and_consumers_skip_them_visibly() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with(dir.path(), |c| {
        c.segment_bytes_max = 4096;
        c.retention_bytes_max = Some(16 << 10);
        c.housekeeping_interval = Duration::from_millis(20);
    })
    .await;
    node.broker()
        .create_topic("r", TopicSettings::with_partitions(1))
        .unwrap();
    let c = client(&node).await;
    let mut pc = ProducerConfig::new("r");
    pc.batch_bytes_max = 1024;
    let producer = Producer::new(&c, pc).await.unwrap();
    for i in 0..400u32 {
        producer
            .send_unacked(None, payload_item(Bytes::from(vec![(i % 256) as u8; 500])))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    let part = node.broker().partition("r", 0).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Retained: at most the limit plus the active segment (a segment may
    // overshoot its size by one batch).
    let bound = (16 << 10) + 4096 + 1024;
    while part.log.size_bytes() > bound && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        part.log.size_bytes() <= bound,
        "size bounded: {}",
        part.log.size_bytes()
    );
    let start = part.log.start_offset();
    assert!(start > 0, "retention removed old segments");

    let mut consumer = Consumer::assign(
        &c,
        ConsumerConfig::new("r").start(StartFrom::Offset(0)),
        &[0],
    )
    .await
    .unwrap();
    let first = consumer
        .poll(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.offset, start,
        "continues at the first retained offset"
    );
    assert_eq!(
        consumer
            .stats()
            .skipped_expired
            .load(std::sync::atomic::Ordering::Relaxed),
        start,
        "skipped items are counted, not silent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_fails_alone_and_later_items_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    // The node refuses batches over 6 KiB, so any batch holding the 7 KiB item.
    let node = node_with(dir.path(), |c| {
        c.limits.item_bytes_max = 10 << 10;
        c.limits.batch_bytes_max = 6 << 10;
    })
    .await;
    node.broker()
        .create_topic("t", TopicSettings::with_partitions(1))
        .unwrap();
    let c = client(&node).await;
    let mut pc = ProducerConfig::new("t");
    pc.batch_bytes_max = 4 << 10;
    pc.linger = Duration::from_millis(50);
    let producer = Producer::new(&c, pc).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..600u32 {
        let size = if i == 300 { 7 << 10 } else { 100 };
        let mut payload = vec![0u8; size];
        payload[..4].copy_from_slice(&i.to_le_bytes());
        deliveries.push(
            producer
                .send(payload_item(Bytes::from(payload)))
                .await
                .unwrap(),
        );
    }
    let mut failed = Vec::new();
    let mut acked = Vec::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        match d.await {
            Ok(d) => acked.push((i as u32, d.offset)),
            Err(e) => {
                assert!(e.to_string().contains("batch_bytes_max"), "{e}");
                failed.push(i as u32);
            }
        }
    }
    assert!(failed.contains(&300), "the oversized batch is refused");
    let (lo, hi) = (failed[0], *failed.last().unwrap());
    assert_eq!(
        failed.len() as u32,
        hi - lo + 1,
        "only one contiguous batch fails: {failed:?}"
    );
    // One batch is ~37 items; failing the batches in flight behind it too
    // (instead of re-sending them under a fresh producer id) would exceed this.
    assert!(failed.len() < 50, "{failed:?}");
    // Everything else is stored exactly once, in send order, where its ack said.
    let mut consumer = Consumer::assign(&c, ConsumerConfig::new("t"), &[0])
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(it) = consumer.poll(Duration::from_millis(500)).await.unwrap() {
        let i = u32::from_le_bytes(it.item.payload[..4].try_into().unwrap());
        seen.push((i, it.offset));
    }
    assert_eq!(seen, acked, "acked items exactly once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_only_fetch_leaves_payloads_on_the_node_and_reads_one_by_reference() {
    let (_dir, _node, c) = setup(2, |_| {}).await;
    let producer = Producer::new(&c, ProducerConfig::new("t")).await.unwrap();
    const N: u32 = 200;
    const SIZE: usize = 64 << 10;
    for i in 0..N {
        let mut item = payload_item(Bytes::from(vec![(i % 251) as u8; SIZE]));
        item.metadata.insert(
            "scan".into(),
            v1::Value {
                kind: Some(v1::value::Kind::I(i64::from(i))),
            },
        );
        producer.send_unacked(None, item).await.unwrap();
    }
    producer.flush().await.unwrap();

    // A fresh client, so its connections' byte counts are this read's alone.
    let reader = client(&_node).await;
    let mut consumer = Consumer::assign(&reader, ConsumerConfig::new("t").metadata_only(), &[])
        .await
        .unwrap();
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < N as usize {
        let it = consumer
            .poll(Duration::from_secs(10))
            .await
            .unwrap()
            .expect("item arrives");
        assert!(it.item.payload.is_empty(), "the payload stays on the node");
        assert_eq!(it.payload_bytes, SIZE as u64);
        assert!(it.payload_left_out());
        assert!(it.item.producer_key.is_some(), "producer key is filled in");
        let Some(v1::value::Kind::I(scan)) = it.item.metadata["scan"].kind else {
            panic!("metadata kept: {:?}", it.item.metadata);
        };
        assert!(seen.insert(scan, (it.partition, it.offset)).is_none());
    }
    let received: u64 = reader
        .open_connections()
        .into_iter()
        .flatten()
        .map(|c| c.stats().udp_rx.bytes)
        .sum();
    let payloads = u64::from(N) * SIZE as u64;
    assert!(
        received < payloads / 50,
        "read {received} bytes for {payloads} bytes of payload left on the node"
    );
    // Any payload by reference, byte for byte.
    for scan in [0i64, 77, i64::from(N) - 1] {
        let (partition, offset) = seen[&scan];
        let payload = reader.read_payload("t", partition, offset).await.unwrap();
        assert_eq!(payload.len(), SIZE);
        assert!(payload.iter().all(|b| *b == (scan % 251) as u8));
    }
    // A reference past the end is a clear error, and the connection lives on.
    let e = reader.read_payload("t", 0, 1 << 40).await.unwrap_err();
    assert_eq!(remote_code(&e), Some(ErrorCode::OffsetOutOfRange), "{e}");
    let e = reader.read_payload("nope", 0, 0).await.unwrap_err();
    assert_eq!(remote_code(&e), Some(ErrorCode::UnknownTopic), "{e}");
    assert_eq!(
        reader
            .read_payload("t", seen[&5].0, seen[&5].1)
            .await
            .unwrap()
            .len(),
        SIZE
    );
}

fn join(group: &str, member: &str, timeout_ms: u32) -> Body {
    Body::JoinGroupRequest(v1::JoinGroupRequest {
        group: group.into(),
        topic: "t".into(),
        member_id: member.into(),
        session_timeout_ms: timeout_ms,
    })
}

fn commit(member: &str, generation: u64, partition: u32, offset: u64, seek: bool) -> Body {
    Body::OffsetCommitRequest(v1::OffsetCommitRequest {
        group: "g".into(),
        topic: "t".into(),
        partition,
        offset,
        member_id: member.into(),
        generation,
        seek,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_generation_commit_is_refused_and_membership_survives_a_restart() {
    let (dir, node, c) = setup(2, |_| {}).await;
    let producer = Producer::new(&c, ProducerConfig::new("t")).await.unwrap();
    for i in 0..100u32 {
        producer
            .send_to(i % 2, payload_item(Bytes::from(i.to_le_bytes().to_vec())))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    // x joins and commits in generation 1, then freezes (no heartbeats).
    let Body::JoinGroupResponse(x) = c.call(join("g", "", 500)).await.unwrap() else {
        panic!()
    };
    assert_eq!((x.generation, x.partitions.clone()), (1, vec![0, 1]));
    c.call(commit(&x.member_id, 1, 0, 10, false)).await.unwrap();
    // A commit from outside the membership is fenced while x is live.
    let e = c.call(commit("", 0, 0, 20, false)).await.unwrap_err();
    assert_eq!(remote_code(&e), Some(ErrorCode::Fenced), "{e}");

    // y joins: the rebalance waits for x, which never re-joins; after the
    // rebalance timeout y has the group to itself (a forced rebalance).
    let Body::JoinGroupResponse(y) = c.call(join("g", "", 500)).await.unwrap() else {
        panic!()
    };
    assert_eq!((y.generation, y.partitions.clone()), (2, vec![0, 1]));
    // x wakes up: its commit at generation 1 is refused and changes nothing.
    let e = c
        .call(commit(&x.member_id, 1, 0, 50, false))
        .await
        .unwrap_err();
    assert_eq!(remote_code(&e), Some(ErrorCode::Fenced), "{e}");
    assert!(e.to_string().contains("not in the group"), "{e}");
    assert_eq!(node.broker().group_offsets("g", "t")[&0], 10);
    // y commits; a wrong generation, a move back without seek, are refused.
    c.call(commit(&y.member_id, 2, 0, 30, false)).await.unwrap();
    let e = c
        .call(commit(&y.member_id, 1, 0, 40, false))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("generation 1, the group at 2"),
        "{e}"
    );
    let e = c
        .call(commit(&y.member_id, 2, 0, 5, false))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("back from 30 to 5"), "{e}");
    c.call(commit(&y.member_id, 2, 0, 5, true)).await.unwrap();
    assert_eq!(node.broker().group_offsets("g", "t")[&0], 5);

    // The membership survives a restart of the node: y's heartbeat and
    // commit at generation 2 go on as before.
    node.shutdown().await;
    let node = node_with(dir.path(), |_| {}).await;
    let c = client(&node).await;
    let hb = c
        .call(Body::HeartbeatRequest(v1::HeartbeatRequest {
            group: "g".into(),
            member_id: y.member_id.clone(),
            generation: 2,
            topic: "t".into(),
        }))
        .await
        .unwrap();
    assert!(matches!(hb, Body::HeartbeatResponse(h) if h.generation == 2));
    c.call(commit(&y.member_id, 2, 1, 7, false)).await.unwrap();
    let e = c
        .call(commit(&x.member_id, 1, 1, 8, false))
        .await
        .unwrap_err();
    assert_eq!(remote_code(&e), Some(ErrorCode::Fenced), "{e}");
}
