//! Import and merge of a PROV-JSON document into a store (see the
//! [module docs](super)).

use super::parse::{parse_prov_json, ElementKind, NameRef, ProvDocument, ProvElement};
use super::scope::PAGE;
use super::vocab::{is_blank, short, store_iri_prefix, DSP_NS};
use crate::model::*;
use crate::store::{Provenance, Target};
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};

/// Warnings kept in [`ImportReport::skipped`] (then a count of the rest).
pub const SKIPPED_MAX: usize = 20;

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// Records created.
    pub records_created: u64,
    /// Document elements that matched a record of the store.
    pub records_merged: u64,
    /// Edges added.
    pub edges_added: u64,
    /// Records newly invalidated.
    pub invalidations_applied: u64,
    /// Warnings (at most [`SKIPPED_MAX`], then a count of the rest): what
    /// was ignored or refused.
    pub skipped: Vec<String>,
}

/// A bounded list of warnings.
#[derive(Default)]
struct Skips {
    list: Vec<String>,
    more: u64,
}

impl Skips {
    fn note(&mut self, f: impl FnOnce() -> String) {
        if self.list.len() < SKIPPED_MAX {
            self.list.push(f());
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.more > 0 {
            self.list.push(format!("… and {} more", self.more));
        }
        self.list
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// To be created.
    Pending,
    /// This local record.
    Local(RecordId),
    /// Not imported.
    Skip,
}

/// One element of the document (declared, or implied by a relation).
struct Node<'a> {
    iri: &'a str,
    id: &'a str,
    el: Option<&'a ProvElement>,
    implied: Kind,
    state: State,
}

fn node_for<'a>(
    nodes: &mut Vec<Node<'a>>,
    index: &mut HashMap<&'a str, usize>,
    r: &'a NameRef,
    implied: Kind,
) -> usize {
    *index.entry(&r.iri).or_insert_with(|| {
        nodes.push(Node {
            iri: &r.iri,
            id: &r.id,
            el: None,
            implied,
            state: State::Pending,
        });
        nodes.len() - 1
    })
}

/// The warning for an edge `c -> p` an end of which was not imported.
fn end_not_imported(nodes: &[Node], c: usize, p: usize) -> String {
    format!(
        "edge {:?} -> {:?} skipped: an end was not imported",
        short(nodes[c].id),
        short(nodes[p].id)
    )
}

/// Parses a PROV-JSON document and merges it into the store (see the
/// module docs). Idempotent: importing the same document again creates,
/// links and invalidates nothing.
pub fn import_prov_json(prov: &mut Provenance, bytes: &[u8]) -> Result<ImportReport> {
    let doc = parse_prov_json(bytes)?;
    import_document(prov, &doc)
}

/// Merges a parsed document into the store (see [`import_prov_json`]).
pub fn import_document(prov: &mut Provenance, doc: &ProvDocument) -> Result<ImportReport> {
    let mut rep = ImportReport::default();
    let mut skips = Skips::default();
    for (what, n) in &doc.ignored {
        skips.note(|| format!("ignored {n} × {what}"));
    }
    let own = prov.backend().namespace();
    let own_prefix = store_iri_prefix(&own);
    let agent_prefix = format!("{DSP_NS}store_");

    // 1. The elements, one node per IRI.
    let mut nodes: Vec<Node> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut agents = 0u64;
    for el in &doc.elements {
        if el.kind == ElementKind::Agent {
            if !el.iri.starts_with(&agent_prefix) {
                agents += 1;
            }
            continue;
        }
        if index.contains_key(el.iri.as_str()) {
            skips.note(|| {
                format!(
                    "{} {:?} is declared twice; the first declaration is used",
                    el.kind.key(),
                    short(&el.id)
                )
            });
            continue;
        }
        index.insert(&el.iri, nodes.len());
        nodes.push(Node {
            iri: &el.iri,
            id: &el.id,
            el: Some(el),
            implied: Kind::Data,
            state: State::Pending,
        });
    }
    if agents > 0 {
        skips.note(|| format!("ignored {agents} × agent"));
    }
    let mut edges: Vec<(usize, usize, EdgeKind)> = Vec::new();
    for rel in &doc.relations {
        let (Some(c), Some(p)) = (&rel.child, &rel.parent) else {
            let (ca, pa) = rel.kind.roles();
            skips.note(|| {
                format!(
                    "{} {:?} lacks prov:{ca} or prov:{pa}; ignored",
                    rel.kind.key(),
                    short(&rel.id)
                )
            });
            continue;
        };
        let (ck, pk) = rel.kind.implied_kinds();
        let ci = node_for(&mut nodes, &mut index, c, ck);
        let pi = node_for(&mut nodes, &mut index, p, pk);
        if ci == pi {
            skips.note(|| {
                format!(
                    "{} {:?} relates {:?} to itself; ignored",
                    rel.kind.key(),
                    short(&rel.id),
                    short(&c.id)
                )
            });
            continue;
        }
        edges.push((ci, pi, rel.edge_kind()));
    }

    // 2. Which exist here already.
    let mut own_ids: Vec<(usize, RecordId)> = Vec::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        if is_blank(n.iri) {
            skips.note(|| format!("{:?} is a blank node: it has no identity outside the document, so importing it again creates it again", short(n.id)));
            continue;
        }
        if let Some(rest) = n.iri.strip_prefix(&own_prefix) {
            match rest.parse::<RecordId>() {
                Ok(id) => own_ids.push((i, id)),
                Err(_) => {
                    n.state = State::Skip;
                    skips.note(|| {
                        format!(
                            "{:?} is in this store's namespace but names no record id; skipped",
                            short(n.id)
                        )
                    });
                }
            }
            continue;
        }
        if let Some(id) = prov.backend().find_origin(n.iri)? {
            n.state = State::Local(id);
        }
    }
    for chunk in own_ids.chunks(PAGE) {
        let ids: Vec<RecordId> = chunk.iter().map(|x| x.1).collect();
        let found: HashSet<RecordId> = prov.backend().existing(&ids)?.into_iter().collect();
        for &(i, id) in chunk {
            if found.contains(&id) {
                nodes[i].state = State::Local(id);
            } else {
                nodes[i].state = State::Skip;
                skips.note(|| {
                    format!(
                        "{:?} names record {id} of this store, which does not exist; skipped",
                        short(nodes[i].id)
                    )
                });
            }
        }
    }
    rep.records_merged = nodes
        .iter()
        .filter(|n| matches!(n.state, State::Local(_)))
        .count() as u64;

    // 3. Create the new records in a topological order of their edges.
    let mut parents: HashMap<usize, Vec<(usize, EdgeKind)>> = HashMap::new();
    let mut deferred: Vec<(usize, usize, EdgeKind)> = Vec::new();
    for &(c, p, k) in &edges {
        match (nodes[c].state, nodes[p].state) {
            (State::Skip, _) | (_, State::Skip) => {
                skips.note(|| end_not_imported(&nodes, c, p));
            }
            (State::Pending, _) => {
                let list = parents.entry(c).or_default();
                if !list.iter().any(|x| x.0 == p) {
                    list.push((p, k));
                }
            }
            (State::Local(_), _) => deferred.push((c, p, k)),
        }
    }
    let pending: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].state == State::Pending)
        .collect();
    let mut indeg: HashMap<usize, usize> = HashMap::new();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    for (&c, ps) in &parents {
        for &(p, _) in ps {
            if nodes[p].state == State::Pending {
                *indeg.entry(c).or_default() += 1;
                children.entry(p).or_default().push(c);
            }
        }
    }
    let mut queue: VecDeque<usize> = pending
        .iter()
        .copied()
        .filter(|n| !indeg.contains_key(n))
        .collect();
    let mut order: Vec<usize> = Vec::with_capacity(pending.len());
    let mut placed: HashSet<usize> = HashSet::with_capacity(pending.len());
    while let Some(n) = queue.pop_front() {
        order.push(n);
        placed.insert(n);
        for &ch in children.get(&n).map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(d) = indeg.get_mut(&ch) {
                *d -= 1;
                if *d == 0 {
                    queue.push_back(ch);
                }
            }
        }
    }
    // Records on a cycle of the document (and below one) go last; their
    // edges among themselves are tried with derive, which refuses one.
    order.extend(pending.iter().copied().filter(|n| !placed.contains(n)));
    let pos: HashMap<usize, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut models: HashMap<String, (Vec<i64>, i64)> = HashMap::new();
    for (page_no, chunk) in order.chunks(PAGE).enumerate() {
        let start = page_no * PAGE;
        let mut recs = Vec::with_capacity(chunk.len());
        let mut linked = 0u64;
        for (j, &n) in chunk.iter().enumerate() {
            let node = &nodes[n];
            let mut rec = match node.el {
                Some(el) => {
                    let mut warnings = Vec::new();
                    let rec = el
                        .to_record(&mut warnings)
                        .unwrap_or_else(|| Record::new(Kind::Data, node.id));
                    for w in warnings {
                        skips.note(|| w);
                    }
                    rec
                }
                None => {
                    let mut r = Record::new(node.implied, node.id);
                    r.origin = (!is_blank(node.iri)).then(|| node.iri.to_string());
                    r
                }
            };
            if rec.kind == Kind::Model {
                if !models.contains_key(&rec.name) {
                    let have: Vec<i64> = prov
                        .backend()
                        .model_versions(&rec.name)?
                        .into_iter()
                        .map(|v| v.0)
                        .collect();
                    let max = have.iter().copied().max().unwrap_or(0);
                    models.insert(rec.name.clone(), (have, max));
                }
                if let Some((have, max)) = models.get_mut(&rec.name) {
                    match rec.version {
                        None => {
                            *max += 1;
                            rec.version = Some(*max);
                        }
                        Some(v) => {
                            if have.contains(&v) {
                                skips.note(|| format!("model {:?} version {v} exists here already; the imported one is another record with the same name and version", short(&rec.name)));
                            }
                            *max = (*max).max(v);
                        }
                    }
                }
            }
            for &(p, k) in parents.get(&n).map(Vec::as_slice).unwrap_or(&[]) {
                let pid = match nodes[p].state {
                    State::Local(id) => id,
                    State::Pending
                        if pos.get(&p).is_some_and(|&pp| pp >= start && pp < start + j) =>
                    {
                        -((pos[&p] - start) as i64 + 1)
                    }
                    _ => {
                        deferred.push((n, p, k));
                        continue;
                    }
                };
                rec.parents.push((pid, k));
                linked += 1;
            }
            recs.push(rec);
        }
        let ids = prov.add_batch(recs)?;
        for (&n, id) in chunk.iter().zip(ids) {
            nodes[n].state = State::Local(id);
        }
        rep.records_created += chunk.len() as u64;
        rep.edges_added += linked;
    }

    // 4. Edges into records that existed (or sit on a cycle): derive.
    let mut kids: Vec<RecordId> = deferred
        .iter()
        .filter_map(|&(c, _, _)| match nodes[c].state {
            State::Local(id) => Some(id),
            _ => None,
        })
        .collect();
    kids.sort_unstable();
    kids.dedup();
    let mut have: HashSet<(RecordId, RecordId)> = HashSet::new();
    for chunk in kids.chunks(PAGE) {
        for e in prov.backend().parents(chunk)? {
            have.insert((e.child, e.parent));
        }
    }
    for (c, p, k) in deferred {
        let (State::Local(cid), State::Local(pid)) = (nodes[c].state, nodes[p].state) else {
            skips.note(|| end_not_imported(&nodes, c, p));
            continue;
        };
        if have.contains(&(cid, pid)) {
            continue;
        }
        match prov.derive(cid, pid, k) {
            Ok(()) => {
                rep.edges_added += 1;
                have.insert((cid, pid));
            }
            Err(
                e @ (ProvError::Cycle { .. }
                | ProvError::NotFound(_)
                | ProvError::Invalid(_)
                | ProvError::Limit(_)),
            ) => {
                skips.note(|| {
                    format!(
                        "edge {:?} -> {:?} ({}) refused: {e}",
                        short(nodes[c].id),
                        short(nodes[p].id),
                        k.name()
                    )
                });
            }
            Err(e) => return Err(e),
        }
    }

    // 5. Invalidity: each record the document says is invalid, no cascade.
    let mut inv: Vec<(RecordId, String)> = Vec::new();
    let mut inv_seen: HashSet<RecordId> = HashSet::new();
    for n in &nodes {
        if let (Some(el), State::Local(id)) = (n.el, n.state) {
            if let Some(cause) = el.invalid_cause() {
                if inv_seen.insert(id) {
                    inv.push((id, cause));
                }
            }
        }
    }
    let mut already: HashSet<RecordId> = HashSet::new();
    for chunk in inv.chunks(PAGE) {
        let ids: Vec<RecordId> = chunk.iter().map(|x| x.0).collect();
        already.extend(prov.backend().invalid(&ids)?.into_iter().map(|i| i.record));
    }
    for (id, cause) in inv {
        if already.contains(&id) {
            continue;
        }
        let cause = if cause.starts_with("imported: ") {
            cause
        } else {
            format!("imported: {cause}")
        };
        let r = prov.invalidate(&Target::Record(id), &cause, false)?;
        rep.invalidations_applied += r.invalidated;
    }
    rep.skipped = skips.finish();
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interchange::testkit::store;
    use std::fmt::Write as _;

    /// A document as another PROV tool writes it (after the PROV-JSON
    /// submission's examples).
    const GENERIC: &str = r#"{
      "prefix": {"ex": "http://example.org/", "dcterms": "http://purl.org/dc/terms/", "foaf": "http://xmlns.com/foaf/0.1/"},
      "entity": {
        "ex:article": {"dcterms:title": "Crime rises in cities", "prov:type": "ex:Article"},
        "ex:dataSet1": {"prov:type": {"$": "prov:Collection", "type": "xsd:QName"}, "ex:size": 3},
        "ex:regionList": {},
        "ex:composition": {"prov:value": {"$": "42", "type": "xsd:int"}},
        "ex:chart1": [{"prov:label": "chart one"}, {"ex:color": ["red", "blue"]}],
        "ex:loopA": {}, "ex:loopB": {}
      },
      "activity": {
        "ex:compile": {"prov:startTime": "2012-03-02T10:30:00Z", "prov:endTime": "2012-03-02T11:00:00.5+01:00"},
        "ex:compose": {"prov:startTime": {"$": "2012-03-02T09:00:00+01:00", "type": "xsd:dateTime"}}
      },
      "agent": {"ex:derek": {"prov:type": {"$": "prov:Person", "type": "xsd:QName"}, "foaf:givenName": "Derek"}},
      "used": {
        "_:u1": {"prov:activity": "ex:compose", "prov:entity": "ex:dataSet1"},
        "_:u2": {"prov:activity": "ex:compose", "prov:entity": "ex:regionList"}
      },
      "wasGeneratedBy": {
        "_:g1": {"prov:entity": "ex:composition", "prov:activity": "ex:compose"},
        "_:g2": {"prov:entity": "ex:chart1", "prov:activity": "ex:compile", "prov:time": "2012-03-02T10:30:00Z"}
      },
      "wasDerivedFrom": {
        "_:d1": {"prov:generatedEntity": "ex:chart2", "prov:usedEntity": "ex:chart1", "prov:type": {"$": "prov:Revision", "type": "xsd:QName"}},
        "_:d2": {"prov:generatedEntity": "ex:loopA", "prov:usedEntity": "ex:loopB"},
        "_:d3": {"prov:generatedEntity": "ex:loopB", "prov:usedEntity": "ex:loopA"},
        "_:d4": {"prov:generatedEntity": "ex:article"}
      },
      "wasInformedBy": {"_:i1": {"prov:informed": "ex:compile", "prov:informant": "ex:compose"}},
      "wasAssociatedWith": {"_:a1": {"prov:activity": "ex:compose", "prov:agent": "ex:derek"}},
      "wasAttributedTo": {"_:t1": {"prov:entity": "ex:chart1", "prov:agent": "ex:derek"}, "_:t2": {"prov:entity": "ex:chart2", "prov:agent": "ex:derek"}}
    }"#;

    #[test]
    fn generic_prov_json_imports() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = store(dir.path(), "g.sqlite");
        let rep = import_prov_json(&mut p, GENERIC.as_bytes()).unwrap();
        // 7 entities, 2 activities, ex:chart2 implied by a derivation.
        assert_eq!(rep.records_created, 10, "{rep:?}");
        // u1 u2 g1 g2 d1 i1 and one of the loop: the other closes a cycle.
        assert_eq!(rep.edges_added, 7, "{rep:?}");
        let text = rep.skipped.join("\n");
        assert!(text.contains("would close a cycle"), "{text}");
        assert!(text.contains("ignored 2 × wasAttributedTo"), "{text}");
        assert!(text.contains("ignored 1 × wasAssociatedWith"), "{text}");
        assert!(text.contains("ignored 1 × agent"), "{text}");
        assert!(text.contains("_:d4"), "{text}");
        assert!(text.contains("dcterms:title"), "{text}");
        let find =
            |p: &mut Provenance, iri: &str| p.backend().find_origin(iri).unwrap().expect(iri);
        let chart1 = find(&mut p, "http://example.org/chart1");
        let chart2 = find(&mut p, "http://example.org/chart2");
        let compile = find(&mut p, "http://example.org/compile");
        let compose = find(&mut p, "http://example.org/compose");
        let ds = find(&mut p, "http://example.org/dataSet1");
        let r = p.get(chart1).unwrap();
        assert_eq!((r.kind, r.name.as_str()), (Kind::Data, "chart one"));
        assert_eq!(r.parents, vec![(compile, EdgeKind::Generated)]);
        assert_eq!(
            p.get(chart2).unwrap().parents,
            vec![(chart1, EdgeKind::Revision)]
        );
        assert_eq!(p.get(chart2).unwrap().name, "ex:chart2");
        let c = p.get(compile).unwrap();
        assert_eq!(c.kind, Kind::Activity);
        assert_eq!(c.time_us, 1_330_684_200_000_000);
        assert_eq!(c.parents, vec![(compose, EdgeKind::Derived)]);
        assert_eq!(p.get(compose).unwrap().time_us, 1_330_675_200_000_000);
        assert_eq!(p.get(compose).unwrap().parents.len(), 2);
        assert_eq!(p.get(ds).unwrap().kind, Kind::Data);
        let rep = import_prov_json(&mut p, GENERIC.as_bytes()).unwrap();
        assert_eq!(
            (rep.records_created, rep.records_merged, rep.edges_added),
            (0, 10, 0),
            "{rep:?}"
        );
    }

    #[test]
    fn skipped_is_bounded() {
        let mut doc = String::from(r#"{"prefix": {"ex": "http://example.org/"}, "entity": {"#);
        for i in 0..100 {
            let _ = write!(doc, r#""ex:e{i}": {{"ex:unknown": {i}}},"#);
        }
        doc.push_str(r#""ex:last": {}}}"#);
        let dir = tempfile::tempdir().unwrap();
        let mut p = store(dir.path(), "g.sqlite");
        let rep = import_prov_json(&mut p, doc.as_bytes()).unwrap();
        assert_eq!(rep.records_created, 101);
        assert_eq!(rep.skipped.len(), SKIPPED_MAX + 1);
        assert_eq!(rep.skipped.last().unwrap(), "… and 80 more");
    }

    #[test]
    fn records_named_in_this_store_that_do_not_exist_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = store(dir.path(), "s.sqlite");
        let ns = p.backend().namespace();
        let a = p.add(Record::new(Kind::Data, "a")).unwrap();
        let doc = format!(
            r#"{{"prefix": {{"me": "{}"}}, "entity": {{"me:{a}": {{}}, "me:777": {{}}, "me:x": {{}}, "_:b": {{"prov:label": "blank"}}}},
               "wasDerivedFrom": {{"_:1": {{"prov:generatedEntity": "_:b", "prov:usedEntity": "me:{a}"}},
                                  "_:2": {{"prov:generatedEntity": "me:777", "prov:usedEntity": "me:{a}"}}}}}}"#,
            store_iri_prefix(&ns)
        );
        let rep = import_prov_json(&mut p, doc.as_bytes()).unwrap();
        assert_eq!(
            (rep.records_created, rep.records_merged, rep.edges_added),
            (1, 1, 1),
            "{rep:?}"
        );
        let text = rep.skipped.join("\n");
        assert!(text.contains("777"), "{text}");
        assert!(text.contains("blank node"), "{text}");
    }

    #[test]
    fn imported_models_get_versions() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = store(dir.path(), "m.sqlite");
        let local = p.add(Record::new(Kind::Model, "net")).unwrap();
        let doc = r#"{"prefix": {"ex": "http://example.org/"}, "entity": {
            "ex:m": {"prov:type": "dsp:model", "prov:label": "net"},
            "ex:n": {"prov:type": {"$": "dsp:model", "type": "xsd:QName"}, "prov:label": "other", "dsp:version": 4}}}"#;
        let rep = import_prov_json(&mut p, doc.as_bytes()).unwrap();
        assert_eq!(rep.records_created, 2, "{rep:?}");
        let m = p
            .backend()
            .find_origin("http://example.org/m")
            .unwrap()
            .unwrap();
        assert_eq!(p.get(m).unwrap().version, Some(2));
        assert_eq!(p.model_version("net", 1).unwrap(), Some(local));
        assert!(p.model_version("other", 4).unwrap().is_some());
    }
}
