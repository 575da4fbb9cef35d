//! Fixtures the interchange tests share: a store, a graph with every kind
//! of record and edge, and a snapshot of what an export carries.

use super::{record_iri, ImportReport};
use crate::model::*;
use crate::sqlite::SqliteBackend;
use crate::store::{Provenance, Target};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

pub(super) fn store(dir: &Path, name: &str) -> Provenance {
    Provenance::new(Box::new(
        SqliteBackend::open(dir.join(name)).expect("open store"),
    ))
}

pub(super) fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("serializable")
}

/// The ids of [`build`]'s graph.
pub(super) struct Graph {
    pub(super) fact: RecordId,
    pub(super) d1: RecordId,
    pub(super) d2: RecordId,
    pub(super) act: RecordId,
    pub(super) out: RecordId,
    pub(super) model: RecordId,
    pub(super) m2: RecordId,
    pub(super) pred: RecordId,
    pub(super) lone: RecordId,
}

pub(super) const FACT_NAME: &str = "calibration \"v2\"\nsecond line";

/// A fact, two streamed items, an activity that used them and generated
/// an output, a model with two versions (the second trained on the
/// output), a prediction, an unrelated record; then an invalidation
/// cascading from the first item. 9 records, 8 edges, 5 invalid.
pub(super) fn build(p: &mut Provenance) -> Graph {
    let loc = |offset| ItemRef {
        topic: "det/raw".into(),
        partition: 0,
        offset,
    };
    let fact = p
        .add(
            Record::new(Kind::Fact, FACT_NAME)
                .tag("run", TagValue::Int(17))
                .uri("file:///cal/v2.h5"),
        )
        .unwrap();
    let d1 = p
        .add(
            Record::item(loc(5))
                .parent(fact, EdgeKind::Derived)
                .tag("energy", TagValue::Float(1.5))
                .tag("ok", TagValue::Bool(true))
                .tag("det", TagValue::Str("a b".into()))
                .tag("my key:x/y%", TagValue::Str("17".into()))
                .uri("s3://bucket/1")
                .uri("s3://bucket/2"),
        )
        .unwrap();
    let d2 = p
        .add(
            Record::item(loc(6))
                .parent(fact, EdgeKind::Derived)
                .tag("energy", TagValue::Float(-2e-7)),
        )
        .unwrap();
    let act = p
        .add(
            Record::new(Kind::Activity, "reconstruct")
                .parent(d1, EdgeKind::Used)
                .parent(d2, EdgeKind::Used)
                .at(1_700_000_000_123_456),
        )
        .unwrap();
    let out = p
        .add(Record::new(Kind::Data, "recon.h5").parent(act, EdgeKind::Generated))
        .unwrap();
    let model = p
        .add(Record::new(Kind::Model, "surrogate").tag("arch", TagValue::Str("mlp".into())))
        .unwrap();
    let m2 = p.update_model(model, &[out]).unwrap();
    let pred = p
        .add(Record::new(Kind::Data, "prediction").parent(m2, EdgeKind::Inferred))
        .unwrap();
    let lone = p.add(Record::new(Kind::Data, "unrelated")).unwrap();
    let rep = p
        .invalidate(&Target::Record(d1), "detector miscalibrated", true)
        .unwrap();
    assert_eq!(rep.invalidated, 5);
    Graph {
        fact,
        d1,
        d2,
        act,
        out,
        model,
        m2,
        pred,
        lone,
    }
}

/// Everything an export carries, keyed by each record's identity (its
/// origin, else its IRI in its store).
pub(super) type Snapshot = BTreeMap<
    String,
    (
        Kind,
        String,
        i64,
        String,
        Vec<String>,
        Option<ItemRef>,
        Option<i64>,
        bool,
        BTreeSet<(String, EdgeKind)>,
    ),
>;

pub(super) fn snapshot(p: &mut Provenance) -> Snapshot {
    let ns = p.backend().namespace();
    let mut recs = Vec::new();
    let mut after = RecordId::MIN;
    loop {
        let ids = p.backend().ids_after(after, 3).unwrap();
        let Some(&last) = ids.last() else { break };
        after = last;
        recs.extend(p.backend().records(&ids).unwrap());
    }
    let ids: Vec<RecordId> = recs.iter().map(|r| r.id).collect();
    let invalid: HashSet<RecordId> = p
        .backend()
        .invalid(&ids)
        .unwrap()
        .into_iter()
        .map(|i| i.record)
        .collect();
    let iri: HashMap<RecordId, String> = recs
        .iter()
        .map(|r| {
            (
                r.id,
                r.origin.clone().unwrap_or_else(|| record_iri(&ns, r.id)),
            )
        })
        .collect();
    recs.iter()
        .map(|r| {
            (
                iri[&r.id].clone(),
                (
                    r.kind,
                    r.name.clone(),
                    r.time_us,
                    format!("{:?}", r.tags),
                    r.uris.clone(),
                    r.item.clone(),
                    r.version,
                    invalid.contains(&r.id),
                    r.parents
                        .iter()
                        .map(|(p, k)| (iri[p].clone(), *k))
                        .collect(),
                ),
            )
        })
        .collect()
}

pub(super) fn section_keys(doc: &Value, section: &str) -> BTreeSet<String> {
    doc.get(section)
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

pub(super) fn section_len(doc: &Value, section: &str) -> usize {
    section_keys(doc, section).len()
}

/// An import's counts: (created, merged, edges added, invalidations applied).
pub(super) fn tally(rep: &ImportReport) -> (u64, u64, u64, u64) {
    (
        rep.records_created,
        rep.records_merged,
        rep.edges_added,
        rep.invalidations_applied,
    )
}
