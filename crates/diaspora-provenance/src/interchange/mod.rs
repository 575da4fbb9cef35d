//! W3C PROV-JSON export and import/merge, and Graphviz DOT and Mermaid
//! rendering.
//!
//! # PROV-JSON mapping
//!
//! A document declares `dsp` (`https://diaspora.invalid/ns#`, this crate's
//! vocabulary) and one prefix per record namespace. A store's own records
//! are named `s<ns8>:<id>`, where `s<ns8>` (`s` and the first 8 characters
//! of [`crate::Backend::namespace`]) is bound to `urn:diaspora:<namespace>:`.
//! A record that was itself imported is named by its origin IRI instead,
//! compacted with a prefix bound to the IRI up to and including its last
//! `:`, `#` or `/` (`s<ns8>` again for another diaspora store, else `o1`,
//! `o2`, …), so identity survives export → import → export.
//!
//! | record | PROV-JSON |
//! |---|---|
//! | fact, data | `entity`, `prov:type` `dsp:fact` / `dsp:data` |
//! | model | `entity`, `prov:type` `dsp:model`, `dsp:version` |
//! | activity | `activity`, `prov:startTime` (xsd:dateTime, UTC) |
//! | name | `prov:label` |
//! | time | `dsp:time_us` (µs since the Unix epoch, exact) |
//! | URIs | `dsp:uri` (a string, or a list of them) |
//! | tag `k` | `dsp:tag_<k>`, the key percent-encoded outside `[A-Za-z0-9_-]` (so every PROV reader, and PROV-N, can write the name); strings plain, integers `xsd:long`, floats `xsd:double`, booleans `xsd:boolean` typed literals |
//! | streamed item | `dsp:item` = `topic/partition/offset` |
//! | invalidity | `dsp:invalid` `true`, `dsp:invalidated_at` (µs), `dsp:invalid_cause`, `dsp:invalid_event` (the exporting store's event id), `dsp:invalid_parent` (an `xsd:QName`; absent for a root) |
//!
//! Qualified-name values (`prov:type`, `dsp:invalid_parent`) are written as
//! `{"$": "dsp:fact", "type": "xsd:QName"}`; plain strings are read too.
//!
//! An edge `child → parent` becomes the PROV relation its endpoints allow:
//! entity ← entity `wasDerivedFrom` (`prov:generatedEntity` = child,
//! `prov:usedEntity` = parent), activity ← entity `used`, entity ← activity
//! `wasGeneratedBy`, activity ← activity `wasInformedBy`. `dsp:edge` carries
//! the edge kind on every `wasDerivedFrom` and `wasInformedBy`, and on
//! `used` / `wasGeneratedBy` when it is not `used` / `generated`; a
//! revision also gets `prov:type` `prov:Revision`. Relations are keyed
//! `_:e1`, `_:e2`, …. The document names one agent, `dsp:store_<namespace>`
//! (a `prov:SoftwareAgent`).
//!
//! With [`Scope::Around`], an edge whose other end lies outside the scope is
//! **dropped** (not emitted with a stub element), so importing such a
//! document never creates placeholder records; `dsp:invalid_parent` may
//! still name a record outside the scope (it is only an attribute).
//!
//! # Import and merge
//!
//! Every entity and activity is identified by its full IRI. One in this
//! store's own namespace is that local record (a missing one is skipped);
//! one that [`crate::Backend::find_origin`] knows is that record; anything
//! else is created with `origin` = the IRI. An element that a relation names
//! without declaring it is created too (data for an entity role, an
//! activity for an activity role). Creation is batched ([`PAGE`] records
//! per [`Provenance::add_batch`](crate::Provenance::add_batch)) in a
//! topological order of the document's edges, so edges into new records
//! need no cycle check; every other edge goes through
//! [`Provenance::derive`](crate::Provenance::derive), and a refused one (a
//! cycle) is reported in [`ImportReport::skipped`]. Records the document says are
//! invalid and are valid here are invalidated one by one, without cascade,
//! with the cause `imported: <cause>`; the invalidation's time, event and
//! parent chain are this store's own. Re-importing a document changes
//! nothing. `wasDerivedFrom`, `used`, `wasGeneratedBy` and `wasInformedBy`
//! become edges; other relations, agents and bundles are ignored and
//! counted in `skipped`.
//!
//! # Layout
//!
//! One module per job, re-exported here: `vocab` (namespaces, record
//! IRIs, tag-key and xsd literal encodings both directions share),
//! `scope` ([`Scope`], walking it [`PAGE`] records at a time), `export`
//! ([`export_prov_json`]), `parse` ([`parse_prov_json`] into a
//! [`ProvDocument`]), `import` ([`import_prov_json`], [`import_document`])
//! and `render` ([`export_dot`], [`export_mermaid`]).

mod export;
mod import;
mod parse;
mod render;
mod scope;
#[cfg(test)]
mod testkit;
mod vocab;

pub use export::export_prov_json;
pub use import::{import_document, import_prov_json, ImportReport, SKIPPED_MAX};
pub use parse::{
    parse_prov_json, Attribute, ElementKind, NameRef, ProvDocument, ProvElement, ProvRelation,
    ProvValue, RelationKind, MAX_DOCUMENT_BYTES, MAX_DOCUMENT_ELEMENTS,
};
pub(crate) use render::{dot_escape, mermaid_escape};
pub use render::{export_dot, export_mermaid};
pub use scope::{Scope, PAGE};
pub use vocab::{
    parse_xsd_datetime, record_iri, store_iri_prefix, xsd_datetime, DSP_NS, PROV_NS, XSD_NS,
};

use crate::model::*;
use export::record_attributes;
use serde_json::{Map, Value};

/// Writes a record as a one-element PROV-JSON document and reads it back
/// (the export and import attribute mappings, without a store).
pub(crate) fn record_roundtrip(r: &Record) -> Result<Record> {
    let mut section = Map::new();
    section.insert("x:1".into(), Value::Object(record_attributes(r)));
    let mut prefixes = Map::new();
    prefixes.insert("dsp".into(), Value::String(DSP_NS.into()));
    prefixes.insert("x".into(), Value::String("urn:x:".into()));
    let mut doc = Map::new();
    doc.insert("prefix".into(), Value::Object(prefixes));
    let key = if r.kind == Kind::Activity {
        "activity"
    } else {
        "entity"
    };
    doc.insert(key.into(), Value::Object(section));
    let bytes =
        serde_json::to_vec(&Value::Object(doc)).map_err(|e| ProvError::Invalid(e.to_string()))?;
    let parsed = parse_prov_json(&bytes)?;
    let mut warnings = Vec::new();
    let back = parsed
        .elements
        .first()
        .and_then(|e| e.to_record(&mut warnings))
        .ok_or_else(|| ProvError::Invalid("the record did not come back".into()))?;
    if !warnings.is_empty() {
        return Err(ProvError::Invalid(format!(
            "warnings on a record's own attributes: {warnings:?}"
        )));
    }
    Ok(back)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::assert_same_record;
    use proptest::prelude::*;

    fn arb_tag() -> impl Strategy<Value = TagValue> {
        prop_oneof![
            any::<bool>().prop_map(TagValue::Bool),
            any::<i64>().prop_map(TagValue::Int),
            any::<f64>().prop_map(TagValue::Float),
            any::<String>().prop_map(TagValue::Str),
        ]
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            prop::sample::select(Kind::ALL.to_vec()),
            any::<String>(),
            any::<i64>(),
            proptest::collection::vec(any::<String>(), 0..3),
            proptest::collection::btree_map(".+", arb_tag(), 0..4),
            proptest::option::of(("\\PC+", any::<u32>(), any::<u64>())),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(kind, name, time_us, uris, tags, item, version)| {
                let mut r = Record::new(kind, name).at(time_us);
                r.uris = uris;
                r.tags = tags;
                r.item = item.map(|(topic, partition, offset)| ItemRef {
                    topic: topic.into(),
                    partition,
                    offset,
                });
                r.version = version.filter(|_| kind == Kind::Model);
                r
            })
    }

    proptest! {

        #[test]
        fn records_survive_the_attribute_mapping(r in arb_record()) {
            let back = record_roundtrip(&r).unwrap();
            assert_same_record(&r, &back);
        }
    }
}
