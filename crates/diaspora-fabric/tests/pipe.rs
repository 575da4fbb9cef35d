//! The produce and consume pipes on an embedded node: lines in, each item
//! acknowledged and logged, JSON lines out with the ids in order; an idle
//! consumer short of its count fails with the counts; a stop ends a
//! consumer that would otherwise wait.

use std::time::Duration;

use diaspora_fabric::pipe::{self, ConsumeOptions, PipeError, ProduceOptions, Source};
use diaspora_fabric::{
    ensure_topic, Client, ClientConfig, Consumer, ConsumerConfig, Node, NodeConfig, Producer,
    ProducerConfig, Stop, TopicSettings,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_go_through_a_node_and_come_out_as_json_lines_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig::new(dir.path().join("node")))
        .await
        .unwrap();
    ensure_topic(node.broker(), "lines", &TopicSettings::with_partitions(1))
        .await
        .unwrap();
    let client = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file()))
        .await
        .unwrap();
    let producer = Producer::new(&client, ProducerConfig::new("lines"))
        .await
        .unwrap();
    let text: String = (0..20).map(|i| format!("line {i}\n")).collect();
    let acks = dir.path().join("acks.jsonl");
    let opts = ProduceOptions {
        partition: Some(0),
        id_start: 100,
        acks: Some(acks.clone()),
        ..Default::default()
    };
    let (done, flushed) = pipe::produce(
        &producer,
        Source::Lines(Box::new(std::io::Cursor::new(text.into_bytes()))),
        &opts,
    )
    .await
    .unwrap();
    flushed.unwrap();
    assert_eq!(done.items, 20);
    assert_eq!(
        done.bytes,
        (0..20)
            .map(|i| format!("line {i}").len() as u64)
            .sum::<u64>()
    );
    let logged: Vec<serde_json::Value> = std::fs::read_to_string(&acks)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<u64> = logged.iter().map(|v| v["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (100..120).collect::<Vec<_>>());
    let offsets: Vec<u64> = logged
        .iter()
        .map(|v| v["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (0..20).collect::<Vec<_>>());

    let mut consumer = Consumer::assign(&client, ConsumerConfig::new("lines"), &[0])
        .await
        .unwrap();
    let stop = Stop::new();
    let mut out = Vec::new();
    let copts = ConsumeOptions {
        count: Some(20),
        idle: Duration::from_secs(10),
        json: true,
        payload: true,
        commit: false,
    };
    let seen = pipe::consume(&mut consumer, &mut out, &copts, &stop)
        .await
        .unwrap();
    assert_eq!(seen, 20);
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["id"].as_u64(), Some(100 + i as u64));
        assert_eq!(l["offset"].as_u64(), Some(i as u64));
        let payload = format!("line {i}");
        assert_eq!(l["size"].as_u64(), Some(payload.len() as u64));
        assert_eq!(l["payload"].as_str(), Some(payload.as_str()));
        assert_eq!(
            l["crc32c"].as_u64(),
            Some(crc32c::crc32c(payload.as_bytes()) as u64)
        );
    }

    // Asking for more than there is: the idle timeout ends it with the counts.
    let mut again = Consumer::assign(&client, ConsumerConfig::new("lines"), &[0])
        .await
        .unwrap();
    let short = ConsumeOptions {
        count: Some(25),
        idle: Duration::from_millis(300),
        json: false,
        payload: false,
        commit: false,
    };
    let mut text_out = Vec::new();
    match pipe::consume(&mut again, &mut text_out, &short, &stop).await {
        Err(PipeError::Incomplete { seen, wanted, .. }) => assert_eq!((seen, wanted), (20, 25)),
        other => panic!("expected Incomplete, got {other:?}"),
    }
    let text_out = String::from_utf8(text_out).unwrap();
    assert_eq!(text_out.lines().count(), 20);
    assert!(text_out.starts_with("lines/0@0 6B line 0"), "{text_out}");

    // A stop ends a consumer with no count and no idle limit.
    let mut waiting = Consumer::assign(&client, ConsumerConfig::new("lines"), &[0])
        .await
        .unwrap();
    let forever = ConsumeOptions {
        count: None,
        idle: Duration::from_secs(3600),
        json: false,
        payload: false,
        commit: false,
    };
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.trigger();
    });
    let seen = tokio::time::timeout(
        Duration::from_secs(20),
        pipe::consume(&mut waiting, &mut Vec::new(), &forever, &stop),
    )
    .await
    .expect("the stop ended the consumer")
    .unwrap();
    assert_eq!(seen, 20);
    client.close();
}
