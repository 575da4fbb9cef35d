//! Acceptance: the ptychography loop streams diffraction patterns through
//! the fabric, a reconstruction stage derives reconstructions, training
//! samples pair them, a surrogate model is updated twice, and edge
//! inferences are made by its versions. Lineage of every streamed item is
//! recorded automatically by the stream layer. Then one pattern turns out
//! bad: invalidating it must reach every derived sample, model version and
//! inference, with a why-chain back to it, leave everything else valid, run
//! the registered actions (command, fabric publish, Rust callback), record
//! their outcomes, and publish a notice consumers receive.
//!
//! Runs against SQLite and against PostgreSQL.
#![allow(clippy::field_reassign_with_default)]

#[path = "../../diaspora-provenance/tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use diaspora_fabric::item::Item;
use diaspora_fabric::{Client, ClientConfig, Node, NodeConfig, StartFrom, TopicSettings};
use diaspora_proto::v1;
use diaspora_provenance::fabric::{FabricSink, InvalidationFeed};
use diaspora_provenance::lineage::{LineageRecorder, RecorderConfig};
use diaspora_provenance::*;
use diaspora_stream::control::{self, control_topic, replay_topic};
use diaspora_stream::{Policy, QosConsumer, QosProducer, Sent};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PATTERNS: u64 = 20;

#[test]
fn invalidating_one_pattern_reaches_everything_derived_sqlite() {
    let s = common::sqlite();
    ptycho_loop(&s.url);
}

#[test]
fn invalidating_one_pattern_reaches_everything_derived_postgres() {
    if let Some(s) = common::postgres() {
        ptycho_loop(&s.url);
    }
}

fn pattern(i: u64) -> Item {
    let mut it = diaspora_fabric::item::payload_item(Bytes::from(vec![(i % 251) as u8; 256]));
    it.metadata.insert("id".into(), control::int(i as i64));
    it.metadata
        .insert("scan".into(), control::int(if i < 10 { 17 } else { 18 }));
    it
}

fn derived(sources: Vec<v1::ItemRef>, models: Vec<String>, activity: &str) -> Item {
    let mut it = diaspora_fabric::item::payload_item(Bytes::from_static(&[1, 2, 3]));
    it.lineage = Some(v1::Lineage {
        sources,
        model_versions: models,
        activity: activity.into(),
    });
    it
}

fn policy() -> Policy {
    let mut p = Policy::default();
    p.progress_interval_ms = 50;
    p
}

fn one_id(p: &mut Provenance, name: &str) -> RecordId {
    let ids = p.find_name(name, 10).unwrap();
    assert_eq!(ids.len(), 1, "exactly one record named {name}: {ids:?}");
    ids[0]
}

fn ptycho_loop(url: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = rt.block_on(async {
        let node = Node::start(NodeConfig::new(dir.path().join("node")))
            .await
            .unwrap();
        let b = node.broker();
        for t in ["patterns", "recons", "inferences"] {
            b.create_topic(t, TopicSettings::with_partitions(1))
                .unwrap();
            b.create_topic(&control_topic(t), TopicSettings::with_partitions(1))
                .unwrap();
            b.create_topic(&replay_topic(t), TopicSettings::with_partitions(1))
                .unwrap();
        }
        b.create_topic(NOTICE_TOPIC, TopicSettings::with_partitions(1))
            .unwrap();
        b.create_topic("alerts", TopicSettings::with_partitions(1))
            .unwrap();
        let c = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file()))
            .await
            .unwrap();
        (node, c)
    });

    // 1. Stream patterns and reconstructions; the stream layer records lineage.
    let recorder = Arc::new(LineageRecorder::start(
        Provenance::open(url).unwrap(),
        RecorderConfig {
            tag_keys: vec!["scan".into()],
            ..Default::default()
        },
    ));
    rt.block_on(async {
        let mut patterns = QosProducer::new(&client, "patterns", 0, policy())
            .await
            .unwrap()
            .with_ack_hook(recorder.hook());
        for i in 0..PATTERNS {
            assert!(matches!(
                patterns.send(pattern(i)).await.unwrap(),
                Sent::Accepted(_)
            ));
        }
        patterns.close(Duration::from_secs(20)).await.unwrap();

        // The reconstruction stage: reads patterns, derives reconstructions.
        let mut reader = QosConsumer::new(&client, "patterns", &[0], "epie", policy(), None)
            .await
            .unwrap();
        let mut recons = QosProducer::new(&client, "recons", 0, policy())
            .await
            .unwrap()
            .with_ack_hook(recorder.hook());
        for _ in 0..PATTERNS {
            let got = reader
                .next(Duration::from_secs(20))
                .await
                .unwrap()
                .expect("a pattern");
            let src = v1::ItemRef {
                topic: "patterns".into(),
                partition: got.partition,
                offset: got.offset.expect("read from the fabric"),
            };
            recons
                .send(derived(vec![src], vec![], "epie-reconstruct"))
                .await
                .unwrap();
        }
        recons.close(Duration::from_secs(20)).await.unwrap();
        reader.close().await.unwrap();
    });
    let (stats, mut prov) = recorder.close().unwrap();
    assert_eq!(stats.recorded, 2 * PATTERNS);
    assert_eq!((stats.unrecorded_sources, stats.lost), (0, 0));

    // Every reconstruction is linked to its pattern and the activity.
    let pats: Vec<RecordId> = (0..PATTERNS)
        .map(|o| one_id(&mut prov, &format!("patterns/0/{o}")))
        .collect();
    let recs: Vec<RecordId> = (0..PATTERNS)
        .map(|o| one_id(&mut prov, &format!("recons/0/{o}")))
        .collect();
    let r5 = prov.get(recs[5]).unwrap();
    assert!(r5.parents.contains(&(pats[5], EdgeKind::Derived)), "{r5:?}");
    assert!(r5.parents.iter().any(|(_, k)| *k == EdgeKind::Generated));
    assert_eq!(prov.get(pats[3]).unwrap().tags["scan"], TagValue::Int(17));

    // 2. Training samples pair pattern and reconstruction; the surrogate learns.
    let config = prov
        .add(Record::new(Kind::Fact, "training-config").uri("file:///cfg/surrogate.toml"))
        .unwrap();
    let samples: Vec<RecordId> = (0..PATTERNS as usize)
        .map(|k| {
            prov.add(
                Record::new(Kind::Data, format!("sample-{k}"))
                    .parent(pats[k], EdgeKind::Derived)
                    .parent(recs[k], EdgeKind::Derived),
            )
            .unwrap()
        })
        .collect();
    let v1 = prov
        .add(Record::new(Kind::Model, "surrogate").parent(config, EdgeKind::Derived))
        .unwrap();
    let v2 = prov.update_model(v1, &samples[..10]).unwrap();
    let v3 = prov.update_model(v2, &samples[10..]).unwrap();

    // 3. Edge inferences by v1 and v2, streamed, lineage recorded.
    let recorder = Arc::new(LineageRecorder::start(prov, RecorderConfig::default()));
    rt.block_on(async {
        let mut inf = QosProducer::new(&client, "inferences", 0, policy())
            .await
            .unwrap()
            .with_ack_hook(recorder.hook());
        for i in 0..10 {
            let model = if i < 5 { "surrogate@1" } else { "surrogate@2" };
            inf.send(derived(vec![], vec![model.into()], "edge-inference"))
                .await
                .unwrap();
        }
        inf.close(Duration::from_secs(20)).await.unwrap();
    });
    let (stats, mut prov) = recorder.close().unwrap();
    assert_eq!((stats.recorded, stats.unknown_models), (10, 0));
    let infs: Vec<RecordId> = (0..10)
        .map(|o| one_id(&mut prov, &format!("inferences/0/{o}")))
        .collect();

    // 4. Actions and the fabric.
    let marks = tempfile::tempdir().unwrap();
    let cmd = prov
        .register_action(
            ActionTarget::Record(pats[5]),
            ActionKind::Command {
                program: "/usr/bin/touch".into(),
                args: vec![format!(
                    "{}/invalid-{{id}}-scan{{tag.scan}}",
                    marks.path().display()
                )],
            },
        )
        .unwrap();
    let notified = Arc::new(AtomicUsize::new(0));
    let n2 = notified.clone();
    prov.register_callback("notify-beamline", move |ctx| {
        n2.fetch_add(1, Ordering::SeqCst);
        Ok(format!(
            "beamline told about {} ({})",
            ctx.record.name, ctx.event.cause
        ))
    });
    let cb = prov
        .register_action(
            ActionTarget::Tag {
                key: "scan".into(),
                value: "17".into(),
            },
            ActionKind::Callback {
                name: "notify-beamline".into(),
            },
        )
        .unwrap();
    let rollback = prov
        .register_action(
            ActionTarget::Tag {
                key: "quality".into(),
                value: "never-matches".into(),
            },
            ActionKind::Callback {
                name: "unused".into(),
            },
        )
        .unwrap();
    let publish = prov
        .register_action(
            ActionTarget::Record(v2),
            ActionKind::Publish {
                topic: "alerts".into(),
                message: r#"{"rollback": "{name}@{version}", "cause": "{cause}"}"#.into(),
            },
        )
        .unwrap();
    prov.set_event_sink(
        Arc::new(FabricSink::start(client.clone(), rt.handle())),
        Some(NOTICE_TOPIC.into()),
    );
    let mut feed = rt
        .block_on(InvalidationFeed::subscribe(
            &client,
            NOTICE_TOPIC,
            StartFrom::Earliest,
        ))
        .unwrap();

    // 5. The detector was miscalibrated for pattern 5.
    let rep = prov
        .invalidate(
            &Target::parse("patterns/0/5").unwrap(),
            "detector miscalibrated",
            true,
        )
        .unwrap();
    assert_eq!(rep.roots, vec![pats[5]]);

    let must_be_invalid: Vec<RecordId> = [pats[5], recs[5], samples[5], v2, v3]
        .into_iter()
        .chain(infs[5..].iter().copied())
        .collect();
    assert_eq!(rep.invalidated, must_be_invalid.len() as u64);
    for &id in &must_be_invalid {
        assert!(
            prov.is_invalid(id).unwrap(),
            "{id} ({}) should be invalid",
            prov.get(id).unwrap().name
        );
        let why = prov.why(id).unwrap().expect("a why-chain");
        assert_eq!(why.chain.first().unwrap().record, id);
        assert_eq!(
            why.chain.last().unwrap().record,
            pats[5],
            "the chain ends at the bad pattern"
        );
        assert_eq!(why.event.cause, "detector miscalibrated");
    }
    let why = prov.why(infs[7]).unwrap().unwrap();
    let names: Vec<&str> = why.chain.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["inferences/0/7", "surrogate", "sample-5", "patterns/0/5"]
    );

    let unrelated: Vec<RecordId> = pats
        .iter()
        .chain(&recs)
        .chain(&samples)
        .chain(&infs)
        .copied()
        .chain([v1, config])
        .filter(|id| !must_be_invalid.contains(id))
        .collect();
    assert_eq!(unrelated.len(), 3 * 20 + 10 + 2 - 8);
    for id in unrelated {
        assert!(!prov.is_invalid(id).unwrap(), "{id} should stay valid");
    }
    // What the model knew: v1 nothing from the bad scan, v3 everything.
    assert!(prov
        .model_at("surrogate", i64::MAX)
        .unwrap()
        .unwrap()
        .records
        .contains(&samples[5]));

    // The actions ran and their outcomes are recorded.
    assert_eq!(rep.actions_run, 3, "command, callback (scan=17), publish");
    assert_eq!(
        rep.actions_failed,
        0,
        "{:?}",
        prov.action_runs(None, 10).unwrap()
    );
    let runs = prov.action_runs(None, 100).unwrap();
    let ran = |a: i64, r: RecordId| {
        runs.iter()
            .find(|x| x.action == a && x.record == r)
            .expect("a recorded run")
    };
    assert!(ran(cmd, pats[5]).ok);
    assert!(marks
        .path()
        .join(format!("invalid-{}-scan17", pats[5]))
        .exists());
    assert!(ran(cb, pats[5]).ok && ran(cb, pats[5]).detail.contains("patterns/0/5"));
    assert_eq!(notified.load(Ordering::SeqCst), 1);
    assert!(ran(publish, v2).ok);
    assert!(!runs.iter().any(|r| r.action == rollback));

    // The notice reached the fabric, and so did the published rollback.
    rt.block_on(async {
        let notice = feed
            .poll(Duration::from_secs(10))
            .await
            .unwrap()
            .expect("a notice");
        assert_eq!(notice.event, rep.event);
        assert_eq!(notice.records.len(), must_be_invalid.len());
        let loc = |t: &str, o: u64| ItemRef {
            topic: t.into(),
            partition: 0,
            offset: o,
        };
        assert!(feed.is_invalid(&loc("patterns", 5)));
        assert!(feed.is_invalid(&loc("recons", 5)));
        assert!(feed.is_invalid(&loc("inferences", 7)));
        assert!(!feed.is_invalid(&loc("patterns", 4)));
        assert!(!feed.is_invalid(&loc("inferences", 2)));
        let mut alerts = diaspora_fabric::Consumer::assign(
            &client,
            diaspora_fabric::ConsumerConfig::new("alerts").start(StartFrom::Earliest),
            &[],
        )
        .await
        .unwrap();
        let got = alerts
            .poll(Duration::from_secs(10))
            .await
            .unwrap()
            .expect("an alert");
        let msg: serde_json::Value = serde_json::from_slice(got.payload()).unwrap();
        assert_eq!(msg["rollback"], "surrogate@2");
        assert_eq!(msg["cause"], "detector miscalibrated");
    });
    drop(node);
}
