//! Helpers the view's tests share with the view tests that live beside the
//! stream (`crates/diaspora-stream/tests/view_invalidation.rs` includes this
//! file by path: the view does not depend on the stream).
#![allow(dead_code)] // each test binary uses a part

use bytes::Bytes;
use diaspora_fabric::item::{meta, Item};
use diaspora_fabric::{ensure_topic, Client, ClientConfig, Node, NodeConfig, TopicSettings};
use diaspora_view::runner::View;
use diaspora_view::ViewSpec;
use std::time::Duration;

/// An embedded node with `topics` (name, partitions) and a client of it.
pub async fn node(dir: &std::path::Path, topics: &[(&str, u32)]) -> (Node, Client) {
    let node = Node::start(NodeConfig::new(dir)).await.unwrap();
    for (t, p) in topics {
        ensure_topic(node.broker(), t, &TopicSettings::with_partitions(*p))
            .await
            .unwrap();
    }
    let client = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file()))
        .await
        .unwrap();
    (node, client)
}

/// An item of scan `scan` with a payload of `bytes` bytes.
pub fn item(scan: u64, bytes: usize) -> Item {
    let mut it = diaspora_fabric::item::payload_item(Bytes::from(vec![(scan % 251) as u8; bytes]));
    it.metadata.insert("scan".into(), meta::int(scan as i64));
    it
}

/// The training-samples view: `k` patterns and one reconstruction per scan.
pub fn samples(name: &str, k: u32) -> ViewSpec {
    ViewSpec::new(name)
        .source("patterns", "patterns", "scan", k)
        .source("recons", "recons", "scan", 1)
        .id_key("scan")
}

/// Runs `view` until `done` holds (30 s at most).
pub async fn pump_until(view: &mut View, what: &str, mut done: impl FnMut(&View) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(view) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: waited 30 s for {what}",
            view.spec().name
        );
        view.pump(Duration::from_millis(100)).await.unwrap();
    }
}
