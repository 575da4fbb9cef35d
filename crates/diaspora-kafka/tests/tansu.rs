//! The Kafka bridge against a real Kafka-protocol broker: Tansu (a
//! Kafka-compatible broker in Rust, SQLite storage) as a child process,
//! named by DIASPORA_TEST_TANSU (the binary). Without it these tests say
//! so and pass nothing off as checked: they return at once.
//!
//! Both directions: a fabric topic into Kafka and a Kafka topic into the
//! fabric, with the bridge stopped mid-stream without a commit (as a
//! SIGKILL leaves it) and the broker restarted mid-stream; every source
//! item arrives exactly once, in per-partition order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diaspora_fabric::bridge::Bridge;
use diaspora_fabric::item::{meta, Item};
use diaspora_fabric::{
    Client, ClientConfig, Consumer, ConsumerConfig, Node, NodeConfig, Producer, ProducerConfig,
    StartFrom, TopicSettings,
};
use diaspora_kafka::bridge::{from_kafka, to_kafka, KafkaBridgeConfig};
use diaspora_kafka::config::KafkaConfig;
use diaspora_kafka::record::{from_record, Record};
use diaspora_kafka::testing::{create_topic, Tansu};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Every record of a Kafka topic, per partition, in order (blocking).
fn read_kafka(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    want: usize,
) -> BTreeMap<i32, Vec<Record>> {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    // Until `want` arrived (Tansu may pause between fetches), then 2 s
    // more: anything after `want` is a duplicate the caller sees.
    let t0 = Instant::now();
    let mut done: Option<Instant> = None;
    while done.map_or(true, |d| d.elapsed() < Duration::from_secs(2)) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "reading Kafka stalled"
        );
        if done.is_none() && out.values().map(Vec::len).sum::<usize>() >= want {
            done = Some(Instant::now());
        }
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        out.entry(m.partition())
            .or_default()
            .push(diaspora_kafka::client::record_of(&m));
    }
    out
}

fn item(n: u64) -> Item {
    let mut i = Item {
        key: format!("k{}", n % 7).into_bytes().into(),
        payload: Bytes::from(vec![(n % 251) as u8; 100 + (n % 50) as usize]),
        timestamp_us: 1_700_000_000_000_000 + n as i64,
        ..Default::default()
    };
    i.metadata.insert("n".into(), meta::int(n as i64));
    i
}

async fn wait_forwarded(b: &Bridge, n: u64) {
    let t0 = Instant::now();
    while b
        .stats()
        .forwarded
        .load(std::sync::atomic::Ordering::Relaxed)
        < n
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "bridge stalled: {:?}",
            b.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fabric_to_kafka_and_back_exactly_once_through_bridge_kills_and_a_broker_restart() {
    let Some(bin) = Tansu::from_env("the Kafka bridge tests") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut tansu = Tansu::start(&bin, &dir.path().join("tansu")).unwrap();
    let node = Node::start(NodeConfig::new(dir.path().join("node")))
        .await
        .unwrap();
    for t in ["frames", "back"] {
        node.broker()
            .create_topic(t, TopicSettings::with_partitions(2))
            .unwrap();
    }
    create_topic(&tansu.bootstrap(), "frames", 2).await.unwrap();
    let fabric = ClientConfig::new(node.data_addr(), node.ca_file());
    let client = Client::connect(fabric.clone()).await.unwrap();
    const N: u64 = 3000;
    let p = Producer::new(&client, ProducerConfig::new("frames"))
        .await
        .unwrap();
    let mut pending = Vec::new();
    for n in 0..N {
        pending.push(p.send(item(n)).await.unwrap());
    }
    for d in pending {
        d.await.unwrap();
    }
    let kafka = KafkaConfig::new(tansu.bootstrap());
    let mut cfg =
        KafkaBridgeConfig::new("cloud", fabric.clone(), "frames", kafka.clone(), "frames");
    cfg.commit_interval = Duration::from_secs(3600); // a stop mid-stream leaves nothing committed

    // Out: killed (no commit) a third of the way, the broker restarted, a
    // fresh bridge finishes.
    let b = to_kafka(cfg.clone()).await.unwrap();
    wait_forwarded(&b, N / 3).await;
    drop(b); // aborts the partition tasks: no commit, as a SIGKILL
    tansu.restart().unwrap();
    cfg.commit_interval = Duration::from_millis(200);
    let b = to_kafka(cfg.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tansu.restart().unwrap();
    wait_forwarded(&b, 1).await;
    let bs = tansu.bootstrap();
    let got = tokio::task::spawn_blocking(move || read_kafka(&bs, "frames", 2, N as usize))
        .await
        .unwrap();
    b.stop().await;
    let mut seen = 0;
    for (p, records) in &got {
        let mut last = None;
        for r in records {
            let (mut it, src) = from_record(r).unwrap();
            // The fabric names each item's producer; the rest is the item sent.
            assert!(it.producer_key.take().is_some());
            let src = src.expect("a diaspora.source header");
            assert_eq!(src.partition as i32, *p);
            assert!(
                last.map_or(true, |l| src.offset == l + 1),
                "partition {p}: {last:?} then {}",
                src.offset
            );
            last = Some(src.offset);
            let n = meta::get_i64(&it, "n").unwrap() as u64;
            assert_eq!(it, item(n), "item {n} intact");
            seen += 1;
        }
    }
    assert_eq!(seen, N, "every fabric item once in Kafka");

    // Back: Kafka → the fabric topic "back", with a plain Kafka producer's
    // records too; the bridge aborted once mid-stream, and the broker
    // restarted under the bridge that finishes.
    let plain: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .create()
        .unwrap();
    for n in 0..100u64 {
        plain
            .send(
                FutureRecord::to("frames")
                    .partition((n % 2) as i32)
                    .key("plain")
                    .payload(&format!("p{n}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let mut back = KafkaBridgeConfig::new("home", fabric.clone(), "back", kafka, "frames");
    back.commit_interval = Duration::from_secs(3600);
    let b = from_kafka(back.clone()).await.unwrap();
    wait_forwarded(&b, N / 2).await;
    drop(b); // aborts the partition tasks: no commit, as a SIGKILL
    back.commit_interval = Duration::from_millis(200);
    let b = from_kafka(back).await.unwrap();
    // Past the re-sent half (absorbed, not counted), new items flowing.
    wait_forwarded(&b, 1).await;
    tansu.restart().unwrap();
    let mut c = Consumer::assign(
        &client,
        ConsumerConfig::new("back").start(StartFrom::Earliest),
        &[],
    )
    .await
    .unwrap();
    let mut per: BTreeMap<u32, Vec<Item>> = BTreeMap::new();
    let mut total = 0;
    while let Some(ci) = c.poll(Duration::from_secs(10)).await.unwrap() {
        per.entry(ci.partition).or_default().push(ci.item);
        total += 1;
        if total == N + 100 {
            // Anything more would be a duplicate: give it a moment to show.
            if c.poll(Duration::from_secs(2)).await.unwrap().is_some() {
                panic!("more than {} items came back", N + 100);
            }
            break;
        }
    }
    b.stop().await;
    assert_eq!(total, N + 100);
    let mut ns = Vec::new();
    for (p, items) in &per {
        let mut last_n = None;
        for it in items {
            if let Some(n) = meta::get_i64(it, "n") {
                let mut it = it.clone();
                it.producer_key = None;
                assert_eq!(it, item(n as u64));
                assert!(last_n.map_or(true, |l| n > l), "partition {p} out of order");
                last_n = Some(n);
                ns.push(n);
            } else {
                assert_eq!(it.key.as_ref(), b"plain");
            }
        }
    }
    ns.sort_unstable();
    ns.dedup();
    assert_eq!(ns.len() as u64, N);
    client.close();
    node.shutdown().await;
}
