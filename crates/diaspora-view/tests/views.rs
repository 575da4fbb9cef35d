//! Views on a real node: a reconstruction source that crashes and replays,
//! two views healing from the same repaired stream, and a view restored
//! from a snapshot after its node and sources are gone. (Invalidation with
//! the pin and discard policies, whose sources are QoS streams recording
//! lineage, is tested beside the stream: diaspora-stream's
//! `tests/view_invalidation.rs`, since this crate does not depend on it.)

use diaspora_fabric::item::meta::meta_text;
use diaspora_fabric::item::Item;
use diaspora_fabric::{Client, ClientConfig, Producer, ProducerConfig, StartFrom};
use diaspora_view::runner::{Delivery, Restore, View, ViewOptions};
use diaspora_view::snapshot::SnapshotStore;
use diaspora_view::wire::{self, ViewMessage};
use diaspora_view::ViewSpec;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{item, node, pump_until, samples};

async fn produce(client: &Client, topic: &str, items: impl IntoIterator<Item = Item>) {
    let p = Producer::new(client, ProducerConfig::new(topic))
        .await
        .unwrap();
    let mut acks = Vec::new();
    for it in items {
        acks.push(p.send(it).await.unwrap());
    }
    for a in acks {
        a.await.unwrap();
    }
    p.close().await.unwrap();
}

/// Takes view items until `n` arrived (acknowledging each), then checks that
/// nothing more comes.
async fn take(view: &mut View, n: usize) -> Vec<Delivery> {
    let mut got = Vec::new();
    while got.len() < n {
        let d = view
            .next(Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("view {}: {} of {n} items", view.spec().name, got.len()));
        assert!(view.ack(d.id()));
        got.push(d);
    }
    assert!(
        view.next(Duration::from_millis(1500))
            .await
            .unwrap()
            .is_none(),
        "more than {n} items"
    );
    got
}

/// The reconstruction service: reads patterns, publishes one
/// reconstruction per scan once its K patterns are in, from scan `from` on.
/// Every 5 scans it "checkpoints" (an atomic standing in for its durable
/// state), so a crash loses up to 5 scans of progress: on restart they are
/// published again, under new offsets.
async fn recon_service(
    addr: std::net::SocketAddr,
    ca: std::path::PathBuf,
    k: u64,
    scans: u64,
    checkpoint: Arc<AtomicU64>,
) {
    // Its own connection: a crash takes it down with the task.
    let client = Client::connect(ClientConfig::new(addr, ca)).await.unwrap();
    let from = checkpoint.load(Ordering::SeqCst);
    let mut c = diaspora_fabric::Consumer::assign(
        &client,
        diaspora_fabric::ConsumerConfig::new("patterns"),
        &[],
    )
    .await
    .unwrap();
    let out = Producer::new(&client, ProducerConfig::new("recons"))
        .await
        .unwrap();
    let mut have: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next = from;
    while next < scans {
        let Some(ci) = c.poll(Duration::from_secs(10)).await.unwrap() else {
            panic!("patterns stopped arriving");
        };
        let scan = diaspora_view::runner::meta_ident(&ci.item, "scan").unwrap();
        *have.entry(scan).or_default() += 1;
        while have.get(&next).copied() == Some(k) {
            out.send(item(next, 1024)).await.unwrap().await.unwrap();
            next += 1;
            if next % 5 == 0 {
                checkpoint.store(next, Ordering::SeqCst);
            }
            // Slow enough that the crash lands mid-stream.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    out.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconstruction_source_that_crashes_and_replays_yields_every_pair_once() {
    const SCANS: u64 = 40;
    const K: u32 = 2;
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = node(
        dir.path(),
        &[("patterns", 2), ("recons", 1), ("view.samples", 1)],
    )
    .await;
    // Two views over the same reconstruction stream.
    let mut samples_view = View::start(
        &client,
        samples("samples", K).output_topic("view.samples"),
        ViewOptions::default(),
    )
    .await
    .unwrap();
    let mut recon_index = View::start(
        &client,
        ViewSpec::new("recon-index")
            .source("recons", "recons", "scan", 1)
            .id_key("scan"),
        ViewOptions::default(),
    )
    .await
    .unwrap();

    // Patterns arrive out of order across two partitions, K per scan.
    let mut pats: Vec<Item> = (0..SCANS)
        .flat_map(|s| (0..K).map(move |_| item(s, 4096)))
        .collect();
    pats.reverse();
    produce(&client, "patterns", pats).await;

    // The reconstruction service crashes mid-stream, then restarts from
    // its checkpoint and replays.
    let checkpoint = Arc::new(AtomicU64::new(0));
    let svc = tokio::spawn(recon_service(
        node.data_addr(),
        node.ca_file(),
        K as u64,
        SCANS,
        checkpoint.clone(),
    ));
    loop {
        let m = client.metadata("recons").await.unwrap();
        if m.partitions[0].next_offset >= 17 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    svc.abort();
    let _ = svc.await;
    let crashed_at = client.metadata("recons").await.unwrap().partitions[0].next_offset;
    let resumed_from = checkpoint.load(Ordering::SeqCst);
    assert!(
        resumed_from < crashed_at,
        "the restart replays: checkpoint {resumed_from}, published {crashed_at}"
    );
    recon_service(
        node.data_addr(),
        node.ca_file(),
        K as u64,
        SCANS,
        checkpoint,
    )
    .await;
    let published = client.metadata("recons").await.unwrap().partitions[0].next_offset;
    assert!(
        published > SCANS,
        "{published} reconstructions published for {SCANS} scans: some twice"
    );

    // Every complete pair, exactly once, in both views.
    let got = take(&mut samples_view, SCANS as usize).await;
    let keys: BTreeSet<String> = got.iter().map(|d| d.item.key.clone()).collect();
    assert_eq!(keys, (0..SCANS).map(|s| s.to_string()).collect());
    let ids: HashSet<u64> = got.iter().map(|d| d.id()).collect();
    assert_eq!(ids.len(), SCANS as usize);
    for d in &got {
        assert_eq!(d.item.members.len(), K as usize + 1);
        assert_eq!(d.missing(), 0);
        // Payloads are the fetched bytes, not copies.
        assert_eq!(d.payload(0).unwrap().len(), 4096);
        assert_eq!(d.payload(K as usize).unwrap().len(), 1024);
        for i in 0..=K as usize {
            assert_eq!(
                meta_text(&d.members[i].as_ref().unwrap().item, "scan").unwrap(),
                d.item.key
            );
        }
    }
    let replayed = published - SCANS;
    assert!(samples_view.engine().stats().duplicates >= replayed);
    assert_eq!(samples_view.stats().payload_bytes_copied, 0);
    let index = take(&mut recon_index, SCANS as usize).await;
    assert_eq!(recon_index.engine().stats().duplicates, replayed);
    assert_eq!(
        index
            .iter()
            .map(|d| d.item.key.clone())
            .collect::<BTreeSet<_>>(),
        keys
    );

    // The metastream on the fabric: 40 items of references, same ids.
    let stats = samples_view.close().await.unwrap();
    assert_eq!(stats.published, SCANS);
    let mut c = diaspora_fabric::Consumer::assign(
        &client,
        diaspora_fabric::ConsumerConfig::new("view.samples"),
        &[],
    )
    .await
    .unwrap();
    let mut published_ids = HashSet::new();
    while let Some(ci) = c.poll(Duration::from_secs(2)).await.unwrap() {
        match wire::decode(ci.payload()).unwrap() {
            ViewMessage::Item {
                id, members, key, ..
            } => {
                assert_eq!(members.len(), K as usize + 1);
                assert!(published_ids.insert(id));
                // A consumer of the metastream reads payloads by reference.
                if published_ids.len() == 1 {
                    for r in &members {
                        let got = diaspora_view::runner::read_ref(
                            &client,
                            &r.item.topic,
                            r.item.partition,
                            r.item.offset,
                            Duration::from_secs(5),
                        )
                        .await
                        .unwrap()
                        .expect("the member is still in its topic");
                        assert_eq!(meta_text(&got.item, "scan").unwrap(), key);
                        assert_eq!(got.item.timestamp_us, r.time_us);
                    }
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(published_ids, ids);
    recon_index.close().await.unwrap();
    client.close();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_restored_from_a_snapshot_continues_without_its_sources() {
    let topics = [("patterns", 1), ("recons", 1)];
    let snaps = tempfile::tempdir().unwrap();
    let store = || SnapshotStore::open(snaps.path()).unwrap();
    let spec = samples("samples", 1);
    let mut acked = Vec::new();
    {
        let dir = tempfile::tempdir().unwrap();
        let (node, client) = node(dir.path(), &topics).await;
        produce(&client, "patterns", (0..10).map(|s| item(s, 1000))).await;
        produce(&client, "recons", (0..5).map(|s| item(s, 100))).await;
        let mut view = View::start(
            &client,
            spec.clone(),
            ViewOptions {
                snapshots: Some(store()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        pump_until(&mut view, "5 items", |v| v.outbox() == 5).await;
        for _ in 0..3 {
            let d = view.next(Duration::from_secs(5)).await.unwrap().unwrap();
            assert_eq!(d.missing(), 0);
            acked.push(d.item.key.clone());
            view.ack(d.id());
        }
        // One in use, one not delivered, five patterns waiting.
        let _in_use = view.next(Duration::from_secs(5)).await.unwrap().unwrap();
        assert_eq!(view.engine().pending(), 5);
        let info = view.snapshot().unwrap();
        assert_eq!(info.version, 1);
        view.close().await.unwrap();
        client.close();
        node.shutdown().await;
        // The node and its data are gone.
    }
    assert_eq!(store().list("samples").unwrap().len(), 1);

    // A new node; the reconstruction service publishes the remaining scans.
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = node(dir.path(), &topics).await;
    let mut view = View::start(
        &client,
        spec.clone(),
        ViewOptions {
            snapshots: Some(store()),
            restore: Restore::Latest,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(view.engine().pending(), 5);
    // The two unacknowledged items come again (at least once), their
    // payloads no longer readable: the source is gone.
    let mut again = Vec::new();
    for _ in 0..2 {
        let d = view.next(Duration::from_secs(10)).await.unwrap().unwrap();
        assert_eq!(
            d.missing(),
            2,
            "members of a gone source are references only"
        );
        again.push(d.item.key.clone());
        view.ack(d.id());
    }
    assert_eq!(again, ["3", "4"]);
    produce(&client, "recons", (5..10).map(|s| item(s, 100))).await;
    let new = take(&mut view, 5).await;
    let new_keys: Vec<String> = new.iter().map(|d| d.item.key.clone()).collect();
    assert_eq!(new_keys, ["5", "6", "7", "8", "9"]);
    for d in &new {
        // The pattern was in the snapshot (reference only), the
        // reconstruction is read now.
        assert!(d.members[0].is_none() && d.members[1].is_some());
    }
    assert!(view.stats().payload_missing >= 4);
    let all: BTreeSet<String> = acked.into_iter().chain(again).chain(new_keys).collect();
    assert_eq!(all.len(), 10);
    // Snapshots are versioned and listable.
    assert_eq!(view.snapshot().unwrap().version, 2);
    let list = store().list("samples").unwrap();
    assert_eq!(list.iter().map(|i| i.version).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(list[1].summary["pending"], 0);
    view.close().await.unwrap();
    client.close();
    node.shutdown().await;
    let _ = StartFrom::Earliest;
}

/// A view whose pattern source leaves its payloads on the node joins on
/// metadata alone, pulls a fraction of the bytes, and still reads any
/// member's payload by reference, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_over_payloads_left_on_the_node_joins_on_metadata_and_reads_by_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = node(dir.path(), &[("patterns", 2), ("recons", 1)]).await;
    const PATTERN: usize = 256 << 10;
    produce(
        &client,
        "patterns",
        (0..20).flat_map(|s| [item(s, PATTERN), item(s, PATTERN)]),
    )
    .await;
    produce(&client, "recons", (0..20).map(|s| item(s, 100))).await;
    // Its own client, so the bytes it pulls are counted alone.
    let reader = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file()))
        .await
        .unwrap();
    let spec = ViewSpec::new("by-reference")
        .source("patterns", "patterns", "scan", 2)
        .payloads_by_reference()
        .source("recons", "recons", "scan", 1)
        .id_key("scan");
    let mut view = View::start(&reader, spec, ViewOptions::default())
        .await
        .unwrap();
    let got = take(&mut view, 20).await;
    let received: u64 = reader
        .open_connections()
        .into_iter()
        .flatten()
        .map(|c| c.stats().udp_rx.bytes)
        .sum();
    let patterns = 40 * PATTERN as u64;
    assert!(
        received < patterns / 20,
        "the view pulled {received} bytes for {patterns} bytes of patterns left on the node"
    );
    for d in &got {
        assert_eq!(d.missing(), 0);
        // Patterns: no payload with the member, its length known; the
        // reconstruction (fetched) carries its own.
        assert!(d.payload(0).is_none() && d.payload(1).is_none());
        assert_eq!(d.members[0].as_ref().unwrap().payload_bytes, PATTERN as u64);
        assert_eq!(d.payload(2).unwrap().len(), 100);
    }
    let d = &got[7];
    let scan: u64 = d.item.key.parse().unwrap();
    let p = view.read_payload(d, 1).await.unwrap().unwrap();
    assert_eq!(p.len(), PATTERN);
    assert!(p.iter().all(|b| u64::from(*b) == scan % 251));
    assert_eq!(view.read_payload(d, 2).await.unwrap().unwrap().len(), 100);
    assert!(view.read_payload(d, 9).await.unwrap().is_none());
    view.close().await.unwrap();
    reader.close();
    client.close();
    node.shutdown().await;
}
