#![allow(clippy::field_reassign_with_default)]
//! QoS streams end to end on an embedded node over real QUIC: ordered
//! delivery with acknowledgements, and a consumer that crashes, loses its
//! items to the fabric's retention, restarts and gets them replayed from
//! the producer's buffers (or, when those are gone too, substitutes that
//! say so).

use std::time::Duration;

use bytes::Bytes;
use diaspora_fabric::item::Item;
use diaspora_fabric::{Client, ClientConfig, Node, NodeConfig, TopicSettings};
use diaspora_stream::consumer::quality_label;
use diaspora_stream::control::{self, control_topic, replay_topic};
use diaspora_stream::policy::ReconstructMethod;
use diaspora_stream::{Policy, QosConsumer, QosProducer, Sent};

async fn node(dir: &std::path::Path, retention: Option<u64>) -> (Node, Client) {
    let mut cfg = NodeConfig::new(dir);
    cfg.segment_bytes_max = 4096;
    cfg.housekeeping_interval = Duration::from_millis(20);
    let node = Node::start(cfg).await.expect("node starts");
    let b = node.broker();
    let mut s = TopicSettings::with_partitions(1);
    s.retention_bytes = retention;
    b.create_topic("frames", s).unwrap();
    b.create_topic(&control_topic("frames"), TopicSettings::with_partitions(1))
        .unwrap();
    b.create_topic(&replay_topic("frames"), TopicSettings::with_partitions(1))
        .unwrap();
    let c = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file()))
        .await
        .expect("client connects");
    (node, c)
}

fn policy() -> Policy {
    let mut p = Policy::default();
    p.buffer.memory_bytes_max = 16 << 20;
    p.buffer.in_flight_bytes_max = 1 << 20;
    p.progress_interval_ms = 50;
    p.replay.request_timeout_ms = 3000;
    p.reconstruct.deadline_ms = 3000;
    p
}

fn frame(i: u64) -> Item {
    let mut it = diaspora_fabric::item::payload_item(Bytes::from(vec![(i % 251) as u8; 500]));
    it.metadata.insert("id".into(), control::int(i as i64));
    it
}

/// Sends in small flushed groups, so batches (and so log segments) stay small
/// and retention can remove them.
async fn send_all(p: &mut QosProducer, ids: std::ops::Range<u64>) {
    for i in ids {
        assert!(matches!(p.send(frame(i)).await.unwrap(), Sent::Accepted(s) if s == i));
        if i % 10 == 9 {
            p.flush(Duration::from_secs(20)).await.unwrap();
        }
    }
    p.flush(Duration::from_secs(20)).await.unwrap();
}

async fn take(c: &mut QosConsumer, n: usize) -> Vec<diaspora_stream::QosItem> {
    let mut got = Vec::new();
    while got.len() < n {
        match c.next(Duration::from_secs(15)).await.unwrap() {
            Some(x) => got.push(x),
            None => panic!("timed out after {} of {n} items", got.len()),
        }
    }
    got
}

/// Waits until the fabric's retention has removed offsets below `offset`.
async fn wait_expired(node: &Node, offset: u64) {
    let part = node.broker().partition("frames", 0).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while part.log.start_offset() < offset {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not expire offset {offset} (start {})",
            part.log.start_offset()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_items_arrive_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, c) = node(dir.path(), None).await;
    let mut p = QosProducer::new(&c, "frames", 0, policy()).await.unwrap();
    let mut acks = p.subscribe_acks();
    let mut q = QosConsumer::new(&c, "frames", &[], "hpc", policy(), None)
        .await
        .unwrap();
    send_all(&mut p, 0..300).await;
    let got = take(&mut q, 300).await;
    assert_eq!(
        got.iter().map(|x| x.seq).collect::<Vec<_>>(),
        (0..300).collect::<Vec<_>>()
    );
    assert!(got
        .iter()
        .all(|x| quality_label(&x.item) == "original" && !x.replayed));
    assert_eq!(control::get_u64(&got[7].item, "id"), Some(7));
    let mut n = 0;
    while let Ok(a) = acks.try_recv() {
        assert_eq!(a.id, Some(a.seq));
        n += 1;
    }
    assert_eq!(n, 300, "one acknowledgement per accepted item");
    let r = p.report();
    assert_eq!((r.counters.accepted, r.counters.acked), (300, 300));
    assert!(r.counters.memory_high_water <= 16 << 20);
    assert!(q.next(Duration::from_millis(300)).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_consumer_replays_what_the_fabric_expired_from_the_producer_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let (node, c) = node(dir.path(), Some(16 << 10)).await;
    let cp = dir.path().join("hpc.checkpoint");
    let mut p = QosProducer::new(&c, "frames", 0, policy()).await.unwrap();

    let mut q = QosConsumer::new(&c, "frames", &[], "hpc", policy(), Some(&cp))
        .await
        .unwrap();
    send_all(&mut p, 0..50).await;
    let first = take(&mut q, 50).await;
    assert_eq!(first.last().unwrap().seq, 49);
    // Idle long enough for a progress report and checkpoint, then crash: no close.
    assert!(q.next(Duration::from_millis(300)).await.unwrap().is_none());
    drop(q);

    // The stream goes on; the fabric's retention drops what the consumer still needs.
    send_all(&mut p, 50..450).await;
    wait_expired(&node, 120).await;

    let mut q = QosConsumer::new(&c, "frames", &[], "hpc", policy(), Some(&cp))
        .await
        .unwrap();
    assert_eq!(q.position(0), Some(50), "resumes at its checkpoint");
    let got = take(&mut q, 400).await;
    assert_eq!(
        got.iter().map(|x| x.seq).collect::<Vec<_>>(),
        (50..450).collect::<Vec<_>>(),
        "every item once, in order"
    );
    assert!(got.iter().all(|x| quality_label(&x.item) == "original"));
    let replayed = got.iter().filter(|x| x.replayed).count();
    assert!(
        replayed >= 70,
        "expired items came from the producer's buffers: {replayed}"
    );
    for x in &got {
        assert_eq!(control::get_u64(&x.item, "id"), Some(x.seq));
        assert_eq!(x.item.payload[0], (x.seq % 251) as u8);
    }
    let r = q.report();
    assert_eq!(r.counters.lost, 0);
    assert!(r.counters.replay_requests >= 1);
    assert!(p.report().replay_items >= replayed as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_gone_everywhere_are_reconstructed_and_marked_with_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let (node, c) = node(dir.path(), Some(16 << 10)).await;
    let cp = dir.path().join("hpc.checkpoint");
    let mut pol = policy();
    pol.replay.window_items = 20; // the producer keeps little history
    let mut p = QosProducer::new(&c, "frames", 0, pol.clone())
        .await
        .unwrap();
    let mut cpol = policy();
    cpol.reconstruct.method = ReconstructMethod::HoldLast;
    let mut q = QosConsumer::new(&c, "frames", &[], "hpc", cpol.clone(), Some(&cp))
        .await
        .unwrap();
    send_all(&mut p, 0..10).await;
    take(&mut q, 10).await;
    assert!(q.next(Duration::from_millis(300)).await.unwrap().is_none());
    drop(q);
    send_all(&mut p, 10..400).await;
    wait_expired(&node, 100).await;

    let mut q = QosConsumer::new(&c, "frames", &[], "hpc", cpol, Some(&cp))
        .await
        .unwrap();
    let got = take(&mut q, 390).await;
    assert_eq!(
        got.iter().map(|x| x.seq).collect::<Vec<_>>(),
        (10..400).collect::<Vec<_>>()
    );
    let subs: Vec<_> = got
        .iter()
        .filter(|x| quality_label(&x.item) == "reconstructed:hold-last")
        .collect();
    assert!(
        !subs.is_empty(),
        "the producer no longer had them: substitutes"
    );
    for s in &subs {
        assert_eq!(
            control::get_u64(&s.item, "id"),
            None,
            "a substitute is not the original"
        );
        let lin = s.item.lineage.as_ref().expect("lineage");
        assert_eq!(lin.activity, "qos-reconstruct:hold-last");
        assert!(!lin.sources.is_empty());
    }
    // Everything not substituted is an original with its own id.
    for x in got.iter().filter(|x| quality_label(&x.item) == "original") {
        assert_eq!(control::get_u64(&x.item, "id"), Some(x.seq));
    }
    let r = q.report();
    assert_eq!(r.counters.reconstructed_missing as usize, subs.len());
    assert_eq!(r.counters.lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_consumer_makes_the_producer_ask_for_more_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let (node, c) = node(dir.path(), None).await;
    node.broker()
        .create_topic("pool.scale", TopicSettings::with_partitions(1))
        .unwrap();
    let mut pol = policy();
    pol.latency_bound_ms = 200;
    pol.flow.mode = diaspora_stream::FlowMode::Shed;
    pol.flow.scale_up_topic = Some("pool.scale".into());
    let mut scale = diaspora_fabric::Consumer::assign(
        &c,
        diaspora_fabric::ConsumerConfig::new("pool.scale"),
        &[0],
    )
    .await
    .unwrap();
    let mut p = QosProducer::new(&c, "frames", 0, pol.clone())
        .await
        .unwrap();
    let mut q = QosConsumer::new(&c, "frames", &[], "slow", pol, None)
        .await
        .unwrap();
    for i in 0..200 {
        p.send(frame(i)).await.unwrap();
    }
    p.flush(Duration::from_secs(10)).await.unwrap();
    // A slow consumer: one item per 150 ms, reporting its progress as it goes.
    let mut event = None;
    for _ in 0..60 {
        q.next(Duration::from_millis(150)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        if let Some(got) = scale.poll(Duration::ZERO).await.unwrap() {
            event = Some(got);
            break;
        }
    }
    let got = event.expect("a scale-up request on pool.scale");
    match diaspora_stream::control::Control::from_item(&got.item).unwrap() {
        diaspora_stream::control::Control::ScaleUp {
            topic, lag_items, ..
        } => {
            assert_eq!(topic, "frames");
            assert!(lag_items > 100, "{lag_items}");
        }
        other => panic!("{other:?}"),
    }
    assert!(p.report().scale_up_requests >= 1);
}
