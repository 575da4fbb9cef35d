//! The provenance semantics, run against both stores.

mod common;

use diaspora_provenance::*;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

both_stores!(
    records_round_trip_and_queries,
    cycles_are_refused,
    model_versions_answer_what_a_model_knew,
    cascade_why_and_idempotence,
    ranges_tags_and_names_as_targets,
    actions_run_and_outcomes_are_recorded,
    lineage_walks_respect_depth,
    batches_with_inner_parents_and_missing_parents,
);

/// A clock the test moves.
fn manual_clock(p: &mut Provenance) -> Arc<AtomicI64> {
    let t = Arc::new(AtomicI64::new(1_000_000));
    let c = t.clone();
    p.set_clock(move || c.load(Ordering::SeqCst));
    t
}

fn item(topic: &str, partition: u32, offset: u64) -> Record {
    Record::item(ItemRef {
        topic: topic.into(),
        partition,
        offset,
    })
}

fn records_round_trip_and_queries(p: &mut Provenance) {
    let fact = p
        .add(
            Record::new(Kind::Fact, "detector-calibration")
                .tag("scan", TagValue::Int(17))
                .tag("energy_kev", TagValue::Float(8.5))
                .tag("beamline", TagValue::Str("2-ID-D".into()))
                .tag("flat_field", TagValue::Bool(true))
                .uri("file:///data/calib/17.h5")
                .uri("s3://bucket/calib/17.h5")
                .at(42),
        )
        .unwrap();
    let r = p.get(fact).unwrap();
    assert_eq!(r.kind, Kind::Fact);
    assert_eq!(r.name, "detector-calibration");
    assert_eq!(r.time_us, 42);
    assert_eq!(r.tags["scan"], TagValue::Int(17));
    assert_eq!(r.tags["energy_kev"], TagValue::Float(8.5));
    assert_eq!(r.tags["beamline"], TagValue::Str("2-ID-D".into()));
    assert_eq!(r.tags["flat_field"], TagValue::Bool(true));
    assert_eq!(
        r.uris,
        vec!["file:///data/calib/17.h5", "s3://bucket/calib/17.h5"]
    );
    assert!(r.parents.is_empty());

    let it = p
        .add(item("patterns", 3, 99).parent(fact, EdgeKind::Derived))
        .unwrap();
    let r = p.get(it).unwrap();
    assert_eq!(r.name, "patterns/3/99");
    assert_eq!(r.item.as_ref().unwrap().offset, 99);
    assert_eq!(r.parents, vec![(fact, EdgeKind::Derived)]);
    assert!(r.time_us > 0, "the store sets the time");

    assert_eq!(p.find_name("detector-calibration", 10).unwrap(), vec![fact]);
    assert_eq!(p.find_name("patterns/3/99", 10).unwrap(), vec![it]);
    assert!(p.find_name("patterns/3/98", 10).unwrap().is_empty());
    assert_eq!(
        p.find_tag("scan", &TagValue::Int(17), 10).unwrap(),
        vec![fact]
    );
    assert!(p
        .find_tag("scan", &TagValue::Int(18), 10)
        .unwrap()
        .is_empty());
    assert_eq!(
        p.find_uri("s3://bucket/calib/17.h5", 10).unwrap(),
        vec![fact]
    );
    assert!(matches!(p.get(999_999), Err(ProvError::NotFound(_))));
    let c = p.counts().unwrap();
    assert_eq!((c.records, c.edges, c.invalid), (2, 1, 0));
}

fn cycles_are_refused(p: &mut Provenance) {
    let a = p.add(Record::new(Kind::Data, "a")).unwrap();
    let b = p
        .add(Record::new(Kind::Data, "b").parent(a, EdgeKind::Derived))
        .unwrap();
    let c = p
        .add(Record::new(Kind::Data, "c").parent(b, EdgeKind::Derived))
        .unwrap();
    // a <- b <- c: making a depend on c closes a cycle.
    match p.derive(a, c, EdgeKind::Derived) {
        Err(ProvError::Cycle {
            parent,
            child,
            path,
        }) => {
            assert_eq!((parent, child), (c, a));
            assert_eq!(path, format!("{a} -> {b} -> {c}"));
        }
        other => panic!("expected a cycle refusal, got {other:?}"),
    }
    assert!(matches!(
        p.derive(a, a, EdgeKind::Derived),
        Err(ProvError::Cycle { .. })
    ));
    // Nothing was written by the refusals.
    assert!(p.get(a).unwrap().parents.is_empty());
    // A diamond is fine, and adding it twice is a no-op.
    let d = p
        .add(Record::new(Kind::Data, "d").parent(a, EdgeKind::Derived))
        .unwrap();
    p.derive(c, d, EdgeKind::Derived).unwrap();
    p.derive(c, d, EdgeKind::Derived).unwrap();
    assert_eq!(p.get(c).unwrap().parents.len(), 2);
    assert!(matches!(
        p.derive(c, 12345, EdgeKind::Derived),
        Err(ProvError::NotFound(_))
    ));
    assert_eq!(
        p.lineage(a, Direction::Down, None).unwrap().nodes.len(),
        4,
        "a, b, d and c below a"
    );
}

fn model_versions_answer_what_a_model_knew(p: &mut Provenance) {
    let t = manual_clock(p);
    let d: Vec<RecordId> = (0..4)
        .map(|i| {
            p.add(Record::new(Kind::Data, format!("sample-{i}")))
                .unwrap()
        })
        .collect();
    t.store(2_000_000, Ordering::SeqCst);
    let v1 = p
        .add(Record::new(Kind::Model, "surrogate").tag("arch", TagValue::Str("unet".into())))
        .unwrap();
    assert_eq!(p.get(v1).unwrap().version, Some(1));
    t.store(3_000_000, Ordering::SeqCst);
    let v2 = p.update_model(v1, &[d[0], d[1]]).unwrap();
    t.store(4_000_000, Ordering::SeqCst);
    let v3 = p.update_model(v1, &[d[2]]).unwrap(); // any version names the model
    let r3 = p.get(v3).unwrap();
    assert_eq!(r3.version, Some(3));
    assert_eq!(r3.tags["arch"], TagValue::Str("unet".into()));
    assert!(r3.parents.contains(&(v2, EdgeKind::Revision)));
    assert_eq!(p.model_version("surrogate", 2).unwrap(), Some(v2));
    assert_eq!(p.model_version("surrogate", 9).unwrap(), None);

    assert!(
        p.model_at("surrogate", 1_500_000).unwrap().is_none(),
        "before v1"
    );
    let k = p.model_at("surrogate", 2_500_000).unwrap().unwrap();
    assert_eq!((k.version, k.id), (1, v1));
    assert!(k.records.is_empty());
    let k = p.model_at("surrogate", 3_500_000).unwrap().unwrap();
    assert_eq!((k.version, k.records.clone()), (2, vec![d[0], d[1]]));
    let k = p.model_at("surrogate", 9_000_000).unwrap().unwrap();
    assert_eq!((k.version, k.records), (3, vec![d[0], d[1], d[2]]));

    // A second "version 1" of the same model is refused.
    assert!(matches!(
        p.add(Record::new(Kind::Model, "surrogate")),
        Err(ProvError::Invalid(_))
    ));
    assert!(matches!(
        p.update_model(d[3], &[d[0]]),
        Err(ProvError::Invalid(_))
    ));
    // Invalidating what v2 was trained on invalidates v2, v3 (fine-tuned from v2), not v1.
    p.invalidate(&Target::Record(d[1]), "mislabelled", true)
        .unwrap();
    assert!(!p.is_invalid(v1).unwrap());
    assert!(p.is_invalid(v2).unwrap());
    assert!(p.is_invalid(v3).unwrap());
    let why = p.why(v3).unwrap().unwrap();
    let chain: Vec<RecordId> = why.chain.iter().map(|s| s.record).collect();
    assert_eq!(chain, vec![v3, v2, d[1]]);
}

fn cascade_why_and_idempotence(p: &mut Provenance) {
    let t = manual_clock(p);
    let pattern = p.add(item("patterns", 0, 5)).unwrap();
    let other = p.add(item("patterns", 0, 6)).unwrap();
    let run = p.add(Record::new(Kind::Activity, "epie-run-1")).unwrap();
    let recon = p
        .add(
            item("recons", 0, 5)
                .parent(pattern, EdgeKind::Derived)
                .parent(run, EdgeKind::Generated),
        )
        .unwrap();
    let sample = p
        .add(
            Record::new(Kind::Data, "sample-5")
                .parent(pattern, EdgeKind::Derived)
                .parent(recon, EdgeKind::Derived),
        )
        .unwrap();
    let clean = p
        .add(Record::new(Kind::Data, "sample-6").parent(other, EdgeKind::Derived))
        .unwrap();
    let v1 = p.add(Record::new(Kind::Model, "surrogate")).unwrap();
    let v2 = p.update_model(v1, &[sample, clean]).unwrap();
    let inference = p
        .add(item("inferences", 0, 0).parent(v2, EdgeKind::Inferred))
        .unwrap();
    let before = t.load(Ordering::SeqCst);
    t.store(before + 10, Ordering::SeqCst);

    let rep = p
        .invalidate(&Target::Record(pattern), "detector miscalibrated", true)
        .unwrap();
    assert_eq!(rep.roots, vec![pattern]);
    assert_eq!(rep.invalidated, 5, "pattern, recon, sample, v2, inference");
    for id in [pattern, recon, sample, v2, inference] {
        assert!(p.is_invalid(id).unwrap(), "{id} should be invalid");
    }
    for id in [other, run, clean, v1] {
        assert!(!p.is_invalid(id).unwrap(), "{id} should stay valid");
        assert!(p.why(id).unwrap().is_none());
    }
    let why = p.why(inference).unwrap().unwrap();
    let chain: Vec<RecordId> = why.chain.iter().map(|s| s.record).collect();
    assert_eq!(chain.first(), Some(&inference));
    assert_eq!(chain.last(), Some(&pattern));
    assert!(chain.contains(&v2) && chain.contains(&sample));
    assert_eq!(why.event.cause, "detector miscalibrated");
    assert_eq!(why.chain.last().unwrap().name, "patterns/0/5");

    // Validity at a time.
    assert_eq!(p.validity_at(inference, before).unwrap(), Validity::Valid);
    assert!(matches!(
        p.validity_at(inference, before + 10).unwrap(),
        Validity::Invalid { .. }
    ));
    assert_eq!(
        p.validity_at(inference, 1).unwrap(),
        Validity::NotYetRecorded
    );

    // Idempotent: again, nothing new, the first cause stays.
    let again = p
        .invalidate(&Target::Record(pattern), "second opinion", true)
        .unwrap();
    assert_eq!((again.invalidated, again.already_invalid), (0, 5));
    assert_eq!(
        p.why(inference).unwrap().unwrap().event.cause,
        "detector miscalibrated"
    );

    // Opting out of the cascade invalidates only the target.
    let rep = p
        .invalidate(&Target::Record(other), "checked by hand", false)
        .unwrap();
    assert_eq!(rep.invalidated, 1);
    assert!(!p.is_invalid(clean).unwrap());
    let c = p.counts().unwrap();
    assert_eq!((c.invalid, c.events), (6, 3));
    assert!(matches!(
        p.invalidate(&Target::Record(pattern), "  ", true),
        Err(ProvError::Invalid(_))
    ));
}

fn ranges_tags_and_names_as_targets(p: &mut Provenance) {
    let mut ids = Vec::new();
    for o in 0..10u64 {
        let mut r = item("patterns", 1, o);
        if o >= 7 {
            r = r.tag("scan", TagValue::Int(17));
        }
        ids.push(p.add(r).unwrap());
    }
    let derived: Vec<RecordId> = ids
        .iter()
        .map(|&i| {
            p.add(Record::new(Kind::Data, format!("d{i}")).parent(i, EdgeKind::Derived))
                .unwrap()
        })
        .collect();
    let rep = p
        .invalidate(
            &Target::parse("patterns/1/2..5").unwrap(),
            "beam dump",
            true,
        )
        .unwrap();
    assert_eq!(rep.roots, vec![ids[2], ids[3], ids[4]]);
    assert_eq!(rep.invalidated, 6);
    let rep = p
        .invalidate(&Target::parse("scan=17").unwrap(), "bad scan", true)
        .unwrap();
    assert_eq!(rep.roots, vec![ids[7], ids[8], ids[9]]);
    assert_eq!(rep.invalidated, 6);
    for (o, (&i, &d)) in ids.iter().zip(&derived).enumerate() {
        let expect = (2..5).contains(&o) || o >= 7;
        assert_eq!(p.is_invalid(i).unwrap(), expect, "offset {o}");
        assert_eq!(p.is_invalid(d).unwrap(), expect, "derived from offset {o}");
    }
    p.invalidate(&Target::parse("patterns/1/0").unwrap(), "single", false)
        .unwrap();
    assert!(p.is_invalid(ids[0]).unwrap());
    p.invalidate(
        &Target::parse(&format!("name:d{}", ids[1])).unwrap(),
        "by name",
        false,
    )
    .unwrap();
    assert!(p.is_invalid(derived[1]).unwrap() && !p.is_invalid(ids[1]).unwrap());
    assert!(matches!(
        p.invalidate(
            &Target::parse("patterns/1/50..60").unwrap(),
            "nothing there",
            true
        ),
        Err(ProvError::NotFound(_))
    ));
    assert!(matches!(
        p.invalidate(&Target::Record(424242), "x", true),
        Err(ProvError::NotFound(_))
    ));
}

fn actions_run_and_outcomes_are_recorded(p: &mut Provenance) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("actions.log");
    let root = p.add(Record::new(Kind::Fact, "calibration")).unwrap();
    let child = p
        .add(
            Record::new(Kind::Data, "frame")
                .parent(root, EdgeKind::Derived)
                .tag("scan", TagValue::Int(3)),
        )
        .unwrap();
    let grandchild = p
        .add(
            Record::new(Kind::Data, "recon")
                .parent(child, EdgeKind::Derived)
                .tag("scan", TagValue::Int(3)),
        )
        .unwrap();
    let cmd = p
        .register_action(
            ActionTarget::Record(root),
            ActionKind::Command {
                program: "/bin/sh".into(),
                args: vec![
                    "-c".into(),
                    format!("echo \"$0 $1\" >> {}", log.display()),
                    "{id}".into(),
                    "{cause}".into(),
                ],
            },
        )
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    p.register_callback("retrain", move |ctx| {
        seen.fetch_add(1, Ordering::SeqCst);
        Ok(format!(
            "retrain queued for {} (root {})",
            ctx.record.name, ctx.root
        ))
    });
    let cb = p
        .register_action(
            ActionTarget::Tag {
                key: "scan".into(),
                value: "3".into(),
            },
            ActionKind::Callback {
                name: "retrain".into(),
            },
        )
        .unwrap();
    let failing = p
        .register_action(
            ActionTarget::Record(grandchild),
            ActionKind::Command {
                program: "/bin/false".into(),
                args: vec![],
            },
        )
        .unwrap();
    let unsent = p
        .register_action(
            ActionTarget::Record(child),
            ActionKind::Publish {
                topic: "alerts".into(),
                message: "{\"invalid\": {id}}".into(),
            },
        )
        .unwrap();
    let missing_cb = p
        .register_action(
            ActionTarget::Record(child),
            ActionKind::Callback {
                name: "nobody".into(),
            },
        )
        .unwrap();
    assert!(p
        .register_action(
            ActionTarget::Record(777_777),
            ActionKind::Callback { name: "x".into() }
        )
        .is_err());

    let rep = p
        .invalidate(&Target::Record(root), "bad gain map", true)
        .unwrap();
    assert_eq!(rep.invalidated, 3);
    assert_eq!(
        rep.actions_run, 6,
        "command, 2 callbacks, false, publish, missing callback"
    );
    assert_eq!(rep.actions_failed, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().trim(),
        format!("{root} bad gain map")
    );

    let runs = p.action_runs(None, 100).unwrap();
    assert_eq!(runs.len(), 6);
    let find = |a: i64, r: RecordId| {
        runs.iter()
            .find(|x| x.action == a && x.record == r)
            .unwrap()
    };
    assert!(find(cmd, root).ok);
    assert!(find(cb, child).ok && find(cb, grandchild).ok);
    assert!(find(cb, grandchild)
        .detail
        .contains(&format!("root {root}")));
    assert!(!find(failing, grandchild).ok);
    assert!(find(failing, grandchild).detail.contains("exit status: 1"));
    assert!(!find(unsent, child).ok && find(unsent, child).detail.contains("no event sink"));
    assert!(!find(missing_cb, child).ok && find(missing_cb, child).detail.contains("nobody"));
    assert!(runs.iter().all(|r| r.event == rep.event));
    assert_eq!(p.action_runs(Some(child), 100).unwrap().len(), 3);

    // Actions run once: re-invalidating runs nothing.
    let again = p.invalidate(&Target::Record(root), "again", true).unwrap();
    assert_eq!(again.actions_run, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

fn lineage_walks_respect_depth(p: &mut Provenance) {
    let mut chain = vec![p.add(Record::new(Kind::Fact, "n0")).unwrap()];
    for i in 1..12 {
        let prev = *chain.last().unwrap();
        chain.push(
            p.add(Record::new(Kind::Data, format!("n{i}")).parent(prev, EdgeKind::Derived))
                .unwrap(),
        );
    }
    let down = p.lineage(chain[0], Direction::Down, Some(3)).unwrap();
    assert_eq!(
        down.nodes,
        vec![(chain[0], 0), (chain[1], 1), (chain[2], 2), (chain[3], 3)]
    );
    let up = p.lineage(chain[11], Direction::Up, None).unwrap();
    assert_eq!(up.nodes.len(), 12);
    assert_eq!(up.nodes.last(), Some(&(chain[0], 11)));
    assert_eq!(up.edges.len(), 11);
    p.limits.lineage_records_max = 5;
    let cut = p.lineage(chain[11], Direction::Up, None).unwrap();
    assert!(cut.truncated && cut.nodes.len() == 5);
    assert!(matches!(
        p.lineage(99_999_999, Direction::Up, None),
        Err(ProvError::NotFound(_))
    ));
}

fn batches_with_inner_parents_and_missing_parents(p: &mut Provenance) {
    let src = p.add(Record::new(Kind::Fact, "source")).unwrap();
    let mut batch = Vec::new();
    for o in 0..5000u64 {
        let mut r = item("frames", 0, o).parent(src, EdgeKind::Derived);
        if o > 0 {
            r = r.parent(-(o as i64), EdgeKind::Derived); // the previous one in this batch
        }
        batch.push(r);
    }
    let ids = p.add_batch(batch).unwrap();
    assert_eq!(ids.len(), 5000);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(
        p.get(ids[10]).unwrap().parents,
        vec![(src, EdgeKind::Derived), (ids[9], EdgeKind::Derived)]
    );
    let c = p.counts().unwrap();
    assert_eq!((c.records, c.edges), (5001, 5000 + 4999));
    // A missing parent refuses the whole batch.
    let bad = vec![
        Record::new(Kind::Data, "ok"),
        Record::new(Kind::Data, "dangling").parent(987_654_321, EdgeKind::Derived),
    ];
    assert!(matches!(p.add_batch(bad), Err(ProvError::NotFound(_))));
    let forward = vec![
        Record::new(Kind::Data, "x").parent(-2, EdgeKind::Derived),
        Record::new(Kind::Data, "y"),
    ];
    assert!(matches!(p.add_batch(forward), Err(ProvError::Invalid(_))));
    assert_eq!(p.counts().unwrap().records, 5001);
    // The cascade reaches the whole chain.
    let rep = p
        .invalidate(&Target::Record(src), "contaminated", true)
        .unwrap();
    assert_eq!(rep.invalidated, 5001);
    let why = p.why(ids[4999]).unwrap().unwrap();
    assert_eq!(
        why.chain.len(),
        2,
        "breadth-first: reached from the source directly"
    );
}

#[test]
fn targets_parse() {
    assert_eq!(Target::parse("42").unwrap(), Target::Record(42));
    assert_eq!(
        Target::parse("patterns/0/10..20").unwrap(),
        Target::Items {
            topic: "patterns".into(),
            partition: 0,
            from: 10,
            to: 19
        }
    );
    assert_eq!(
        Target::parse("a/b/0/10..=20").unwrap(),
        Target::Items {
            topic: "a/b".into(),
            partition: 0,
            from: 10,
            to: 20
        }
    );
    assert_eq!(
        Target::parse("scan=17").unwrap(),
        Target::Tag {
            key: "scan".into(),
            value: "17".into()
        }
    );
    assert_eq!(
        Target::parse("surrogate@3").unwrap(),
        Target::ModelVersion {
            name: "surrogate".into(),
            version: 3
        }
    );
    for bad in [
        "patterns/0/20..10",
        "patterns/0/5..5",
        "what",
        "",
        "t/x/1..2",
    ] {
        assert!(Target::parse(bad).is_err(), "{bad:?} should not parse");
    }
}
