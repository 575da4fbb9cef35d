//! Quickstart: an embedded node, a producer and a consumer in one program.
//!
//! Run with `cargo run --release --example quickstart`.

use std::time::Duration;

use bytes::Bytes;
use diaspora::fabric::item::payload_item;
use diaspora::fabric::{
    Client, ClientConfig, Consumer, ConsumerConfig, Node, NodeConfig, Producer, ProducerConfig,
    TopicSettings,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The same node `diaspora serve` runs, in-process, on an ephemeral port.
    let node = Node::start(NodeConfig::new(dir.path())).await?;
    node.broker()
        .create_topic("readings", TopicSettings::with_partitions(2))?;

    let client = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file())).await?;
    let producer = Producer::new(&client, ProducerConfig::new("readings")).await?;
    for i in 0..10 {
        let delivered = producer
            .send(payload_item(Bytes::from(format!("reading {i}"))))
            .await?
            .await?;
        println!(
            "acked: partition {} offset {}",
            delivered.partition, delivered.offset
        );
    }

    let mut consumer =
        Consumer::subscribe(&client, ConsumerConfig::new("readings").group("analysis")).await?;
    while let Some(item) = consumer.poll(Duration::from_millis(500)).await? {
        println!(
            "consumed {}/{}@{}: {}",
            item.topic,
            item.partition,
            item.offset,
            String::from_utf8_lossy(item.payload())
        );
    }
    consumer.commit().await?;
    consumer.close().await;
    node.shutdown().await;
    Ok(())
}
