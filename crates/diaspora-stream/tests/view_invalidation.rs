//! Invalidation with a view's pin and discard policies, through provenance
//! notices and the lineage two QoS streams record with their ack hook.
//! (Moved here from diaspora-view's tests when the view stopped depending
//! on diaspora-stream: the stream is the one layer this test needs that
//! the view does not.)

use diaspora_provenance::fabric::FabricSink;
use diaspora_provenance::lineage::{LineageRecorder, RecorderConfig};
use diaspora_provenance::{EdgeKind, Kind, Provenance, Record, Target, NOTICE_TOPIC};
use diaspora_stream::control::{control_topic, replay_topic};
use diaspora_stream::{Policy as QosPolicy, QosProducer, Sent};
use diaspora_view::engine::MemberId;
use diaspora_view::runner::{View, ViewOptions};
use diaspora_view::spec::Policy;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

#[path = "../../diaspora-view/tests/common/mod.rs"]
mod common;
use common::{item, node, pump_until, samples};

fn qos() -> QosPolicy {
    QosPolicy {
        progress_interval_ms: 50,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_a_member_reaches_view_items_and_samples_and_pin_holds_members() {
    const SCANS: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let mut topics = vec![(NOTICE_TOPIC, 1)];
    let names: Vec<String> = ["patterns", "recons"]
        .iter()
        .flat_map(|t| [t.to_string(), control_topic(t), replay_topic(t)])
        .collect();
    topics.extend(names.iter().map(|t| (t.as_str(), 1)));
    let (node, client) = node(&dir.path().join("node"), &topics).await;
    let url = dir.path().join("prov.sqlite").display().to_string();
    let recorder = Arc::new(LineageRecorder::start(
        Provenance::open(&url).unwrap(),
        RecorderConfig {
            tag_keys: vec!["scan".into()],
            linger: Duration::from_millis(10),
            ..Default::default()
        },
    ));

    // Patterns, and reconstructions derived from them; the stream layer
    // records the lineage of both.
    let mut p = QosProducer::new(&client, "patterns", 0, qos())
        .await
        .unwrap()
        .with_ack_hook(recorder.hook());
    let mut r = QosProducer::new(&client, "recons", 0, qos())
        .await
        .unwrap()
        .with_ack_hook(recorder.hook());
    for s in 0..SCANS {
        assert!(matches!(
            p.send(item(s, 2048)).await.unwrap(),
            Sent::Accepted(_)
        ));
        let mut rec = item(s, 512);
        rec.lineage = Some(diaspora_proto::v1::Lineage {
            sources: vec![diaspora_proto::v1::ItemRef {
                topic: "patterns".into(),
                partition: 0,
                offset: s,
            }],
            activity: "epie".into(),
            ..Default::default()
        });
        assert!(matches!(r.send(rec).await.unwrap(), Sent::Accepted(_)));
    }
    p.close(Duration::from_secs(20)).await.unwrap();
    r.close(Duration::from_secs(20)).await.unwrap();

    let opts = |lineage: Option<Arc<LineageRecorder>>| ViewOptions {
        lineage,
        invalidations: Some(NOTICE_TOPIC.into()),
        ..Default::default()
    };
    let mut pin = View::start(
        &client,
        samples("pinned", 1).policy(Policy::Pin),
        opts(Some(recorder.clone())),
    )
    .await
    .unwrap();
    let mut discard = View::start(
        &client,
        samples("discarding", 1).policy(Policy::Discard),
        opts(None),
    )
    .await
    .unwrap();
    pump_until(&mut pin, "10 items", |v| v.outbox() == SCANS as usize).await;
    pump_until(&mut discard, "10 items", |v| v.outbox() == SCANS as usize).await;

    // The trainer consumes scans 0..=4 into samples (acknowledged), holds
    // scan 5 (delivered, being used), and has not reached 6..=9.
    recorder.flush().unwrap();
    let mut prov = Provenance::open(&url).unwrap();
    let mut sample_of = BTreeMap::new();
    let mut view_record = BTreeMap::new();
    let mut held5 = None;
    for _ in 0..6 {
        let d = pin.next(Duration::from_secs(5)).await.unwrap().unwrap();
        let scan: u64 = d.item.key.parse().unwrap();
        assert_eq!(
            d.members[0].as_ref().unwrap().offset,
            scan,
            "pattern offset = scan"
        );
        let rec = prov
            .backend()
            .find_items("view:pinned", 0, d.seq, d.seq, 1)
            .unwrap()[0]
            .1;
        let parents: HashSet<i64> = prov.get(rec).unwrap().parents.iter().map(|p| p.0).collect();
        assert_eq!(
            parents.len(),
            3,
            "the view item's record has its two members and the activity as parents"
        );
        view_record.insert(scan, rec);
        let sample = prov
            .add(Record::new(Kind::Data, format!("sample-{scan}")).parent(rec, EdgeKind::Derived))
            .unwrap();
        sample_of.insert(scan, sample);
        if scan == 5 {
            held5 = Some(d);
        } else {
            assert!(pin.ack(d.id()));
        }
    }
    let held5 = held5.expect("scan 5 delivered");

    // Patterns of scans 3 (consumed), 5 (in use) and 7 (not yet delivered)
    // turn out bad.
    let rt = tokio::runtime::Handle::current();
    prov.set_event_sink(
        Arc::new(FabricSink::start(client.clone(), &rt)),
        Some(NOTICE_TOPIC.into()),
    );
    for s in [3, 5, 7] {
        let t = Target::parse(&format!("patterns/0/{s}")).unwrap();
        tokio::task::block_in_place(|| prov.invalidate(&t, "detector glitch", true)).unwrap();
    }
    pump_until(&mut pin, "3 invalidations", |v| {
        v.stats().members_invalidated >= 3
    })
    .await;
    pump_until(&mut discard, "3 invalidations", |v| {
        v.stats().members_invalidated >= 3
    })
    .await;

    // Provenance: the view items and the samples derived from them are
    // invalid, with a why-chain to the pattern; the others are valid.
    for s in 0..6 {
        let bad = s == 3 || s == 5;
        assert_eq!(
            prov.is_invalid(view_record[&s]).unwrap(),
            bad,
            "view item of scan {s}"
        );
        assert_eq!(
            prov.is_invalid(sample_of[&s]).unwrap(),
            bad,
            "sample of scan {s}"
        );
    }
    let why = prov.why(sample_of[&3]).unwrap().unwrap();
    assert_eq!(why.chain.last().unwrap().name, "patterns/0/3");

    // Pin: nothing is freed before its dependants are consumed.
    let member = |source, scan| MemberId {
        source,
        lane: if source == 0 { 0 } else { u32::MAX },
        seq: scan,
    };
    let retracted: HashSet<u64> = pin.take_retractions().iter().map(|r| r.id).collect();
    assert!(retracted.contains(&held5.id()));
    assert!(
        pin.is_held(member(0, 5)) && pin.is_held(member(1, 5)),
        "scan 5 in use: its members stay"
    );
    assert!(
        pin.is_held(member(0, 7)) && pin.is_held(member(1, 7)),
        "scan 7 not consumed: its members stay"
    );
    assert!(pin.ack(held5.id()));
    assert!(!pin.is_held(member(0, 5)) && !pin.is_held(member(1, 5)));
    let mut rest = Vec::new();
    while let Some(d) = pin.next(Duration::from_millis(500)).await.unwrap() {
        rest.push((d.item.key.clone(), d.invalid, d.missing()));
        let id = d.id();
        if d.item.key == "7" {
            assert!(pin.is_held(member(0, 7)));
        }
        pin.ack(id);
    }
    assert_eq!(
        rest,
        vec![
            ("6".into(), false, 0),
            ("7".into(), true, 0),
            ("8".into(), false, 0),
            ("9".into(), false, 0)
        ]
    );
    assert!(!pin.is_held(member(0, 7)));
    assert_eq!(pin.held(), 0);
    assert_eq!(pin.stats().flagged_invalid, 2);

    // Discard: the undelivered items of scans 3, 5 and 7 are dropped and
    // their members released at once.
    assert_eq!(discard.stats().discarded, 3);
    assert!(!discard.is_held(member(0, 3)) && !discard.is_held(member(1, 7)));
    let mut keys = Vec::new();
    while let Some(d) = discard.next(Duration::from_millis(500)).await.unwrap() {
        assert!(!d.invalid);
        keys.push(d.item.key.clone());
        discard.ack(d.id());
    }
    assert_eq!(keys, ["0", "1", "2", "4", "6", "8", "9"]);

    pin.close().await.unwrap();
    discard.close().await.unwrap();
    let (stats, _) = Arc::try_unwrap(recorder).ok().unwrap().close().unwrap();
    assert_eq!(stats.unrecorded_sources, 0, "{stats:?}");
    client.close();
    node.shutdown().await;
}
