//! Metrics on a real embedded node: the publisher creates its topic,
//! publishes every 100 ms, a subscriber reads the events back (skipping a
//! malformed item), the node restarts on the same address and publishing
//! resumes.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use diaspora_fabric::item::payload_item;
use diaspora_fabric::{
    Client, ClientConfig, Node, NodeConfig, Producer, ProducerConfig, StartFrom,
};
use diaspora_telemetry::publish::TopicCreation;
use diaspora_telemetry::{
    collect_broker, collect_quic, subscribe, MetricEvent, MetricStream, MetricsPublisher,
    PublisherConfig, Registry,
};

async fn start_node(config: NodeConfig) -> Node {
    // A restarted node binds the address its predecessor just released.
    for attempt in 0.. {
        match Node::start(config.clone()).await {
            Ok(n) => return n,
            Err(e) if attempt < 50 => {
                eprintln!("node start attempt {attempt}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("node does not start: {e}"),
        }
    }
    unreachable!()
}

async fn next_event(stream: &mut MetricStream) -> MetricEvent {
    stream
        .next(Duration::from_secs(20))
        .await
        .unwrap()
        .expect("an event within 20 s")
}

fn value(e: &MetricEvent, name: &str) -> Option<f64> {
    e.samples.iter().find(|s| s.name == name).map(|s| s.value)
}

fn names(e: &MetricEvent) -> BTreeSet<&str> {
    e.samples.iter().map(|s| s.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_and_subscriber_on_a_real_node_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(NodeConfig::new(dir.path())).await;
    let addr = node.data_addr();
    let client = Client::connect(ClientConfig::new(addr, node.ca_file()))
        .await
        .unwrap();

    let registry = Registry::new();
    collect_broker(&registry, node.broker().clone()).unwrap();
    collect_quic(&registry, "test-link", client.clone()).unwrap();
    let app = registry.counter("app.frames", "{frame}", &[]).unwrap();

    // The topic is absent and must exist: a clear error.
    let missing = MetricsPublisher::start(
        client.clone(),
        PublisherConfig::new("test"),
        registry.clone(),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        missing.contains("'diaspora.metrics' does not exist"),
        "{missing}"
    );

    let mut config = PublisherConfig::new("edge-test");
    config.interval = Duration::from_millis(100);
    config.create_topic = TopicCreation::Embedded(node.broker().clone());
    let publisher = MetricsPublisher::start(client.clone(), config.clone(), registry.clone())
        .await
        .unwrap();
    assert!(node
        .broker()
        .list_topics()
        .contains(&"diaspora.metrics".to_string()));

    // A malformed item among the events is skipped and counted.
    let garbage = Producer::new(&client, ProducerConfig::new("diaspora.metrics"))
        .await
        .unwrap();
    garbage
        .send(payload_item(Bytes::from_static(b"{not an event")))
        .await
        .unwrap()
        .await
        .unwrap();
    garbage.close().await.unwrap();

    let mut stream = subscribe(&client, "diaspora.metrics", StartFrom::Earliest)
        .await
        .unwrap();
    let mut events = Vec::new();
    while events.len() < 5 {
        app.add(10);
        events.push(next_event(&mut stream).await);
    }
    let mut times: Vec<i64> = events.iter().map(|e| e.t_us).collect();
    assert_eq!(stream.malformed(), 1);
    for pair in events.windows(2) {
        assert!(pair[1].t_us > pair[0].t_us, "t_us increases");
    }
    for e in &events {
        assert_eq!(e.source, "edge-test");
        assert_eq!(e.interval_ms, 100);
    }
    let last = events.last().unwrap();
    let present = names(last);
    for name in [
        "node.items_appended",
        "node.items_appended.rate",
        "node.bytes_appended",
        "node.items_fetched",
        "node.connections_open",
        "node.storage_bytes",
        "node.topics",
        "quic.rtt_ms",
        "quic.cwnd_bytes",
        "quic.loss_fraction",
        "quic.sent_packets",
        "quic.sent_packets.rate",
        "quic.lost_packets",
        "app.frames",
        "app.frames.rate",
        "telemetry.events_published",
    ] {
        assert!(present.contains(name), "{name} missing from {present:?}");
    }
    // The node appended the events themselves (and the garbage item).
    assert!(value(last, "node.items_appended").unwrap() >= 4.0);
    assert!(value(last, "node.connections_open").unwrap() >= 1.0);
    assert_eq!(value(last, "node.topics"), Some(1.0));
    assert!(value(last, "quic.sent_packets").unwrap() > 0.0);
    let rtt = value(last, "quic.rtt_ms").unwrap();
    assert!(rtt > 0.0 && rtt < 1000.0, "loopback rtt {rtt} ms");
    let loss = value(last, "quic.loss_fraction").unwrap();
    assert!((0.0..=1.0).contains(&loss));
    assert!(value(last, "app.frames").unwrap() >= 40.0);
    // Every event's labels name the node or the link.
    let node_id = node.broker().node_id().to_string();
    let appended = last
        .samples
        .iter()
        .find(|s| s.name == "node.items_appended")
        .unwrap();
    assert_eq!(appended.labels.get("node"), Some(&node_id));
    let rtt_sample = last
        .samples
        .iter()
        .find(|s| s.name == "quic.rtt_ms")
        .unwrap();
    assert_eq!(
        rtt_sample.labels.get("link").map(String::as_str),
        Some("test-link")
    );
    assert!(rtt_sample.labels.contains_key("conn"));

    // Restart the node on the same address and data directory.
    node.shutdown().await;
    let restarted_at_us = diaspora_fabric::item::now_us();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut again = NodeConfig::new(dir.path());
    again.listen = addr;
    let node = start_node(again).await;
    collect_broker(&registry, node.broker().clone()).unwrap(); // the new broker's counters

    // Publishing resumes: an event taken after the restart arrives, and the
    // new node counts the appends it received.
    let resumed = loop {
        let e = next_event(&mut stream).await;
        times.push(e.t_us);
        if e.t_us > restarted_at_us + 600_000 {
            break e;
        }
    };
    let after = loop {
        let e = next_event(&mut stream).await;
        times.push(e.t_us);
        if e.t_us > resumed.t_us && value(&e, "node.items_appended").unwrap_or(0.0) > 0.0 {
            break e;
        }
    };
    assert!(
        value(&after, "node.uptime_s").unwrap() < 30.0,
        "the new node's uptime"
    );
    // Across the outage: in order, none lost in the stream, none duplicated
    // (events retried across the restart were appended once).
    assert!(times.windows(2).all(|w| w[1] > w[0]), "{times:?}");
    stream.close().await;
    let stats = publisher.stats().clone();
    publisher.stop().await;
    let published = stats
        .events_published
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(published >= 7, "published {published}");
    eprintln!(
        "published {published}, failed {}, dropped {}, last error {:?}",
        stats
            .events_failed
            .load(std::sync::atomic::Ordering::Relaxed),
        stats
            .snapshots_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        stats.last_error.lock()
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_creates_its_topic_through_the_admin_plane() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(NodeConfig::new(dir.path())).await;
    let client = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file()))
        .await
        .unwrap();
    let registry = Registry::new();
    registry.gauge("x.g", "", &[]).unwrap().set(1.5);
    let mut config = PublisherConfig::new("admin-test");
    config.topic = "site.metrics".into();
    config.interval = Duration::from_millis(50);
    config.create_topic = TopicCreation::Admin(node.admin_addr().unwrap());
    let publisher = MetricsPublisher::start(client.clone(), config, registry)
        .await
        .unwrap();
    let mut stream = subscribe(&client, "site.metrics", StartFrom::Earliest)
        .await
        .unwrap();
    let e = next_event(&mut stream).await;
    assert_eq!(value(&e, "x.g"), Some(1.5));
    let settings = node
        .broker()
        .topic("site.metrics")
        .unwrap()
        .settings
        .clone();
    assert_eq!(settings.partitions, 1);
    assert_eq!(
        settings.retention_ms,
        Some(diaspora_telemetry::publish::CREATED_RETENTION_MS)
    );
    publisher.stop().await;
    // stop() published a last snapshot and waited for it.
    let mut n = 1;
    while stream
        .next(Duration::from_millis(300))
        .await
        .unwrap()
        .is_some()
    {
        n += 1;
    }
    assert!(n >= 2);
    stream.close().await;
    node.shutdown().await;
}
