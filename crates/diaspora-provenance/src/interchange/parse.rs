//! PROV-JSON parsing into a store-independent [`ProvDocument`] (pure: no
//! store), and reading a document's element as a [`Record`].

use super::vocab::{
    decode_tag_key, is_blank, parse_xsd_datetime, short, xsd_double, DSP_NS, PROV_NS, XSD_NS,
};
use crate::model::*;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Largest document [`parse_prov_json`] reads.
pub const MAX_DOCUMENT_BYTES: usize = 256 << 20;
/// Most records (elements and relations) a document may hold.
pub const MAX_DOCUMENT_ELEMENTS: usize = 50_000_000;

/// An attribute value as a PROV-JSON document writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum ProvValue {
    /// A string (plain, or typed `xsd:string`).
    Str(String),
    /// An integer (a JSON integer, or an integer-typed literal that fits).
    Int(i64),
    /// A float (a JSON number, or `xsd:double` / `xsd:float` / `xsd:decimal`).
    Float(f64),
    /// A boolean (JSON, or `xsd:boolean`).
    Bool(bool),
    /// A qualified name (`xsd:QName`, or a `prov:type` string with a known
    /// prefix).
    QName {
        /// As written.
        text: String,
        /// Expanded.
        iri: String,
    },
    /// Any other typed or language-tagged literal.
    Literal {
        /// The lexical value.
        value: String,
        /// The datatype's IRI.
        datatype: Option<String>,
        /// The language tag.
        lang: Option<String>,
    },
}

impl ProvValue {
    /// The value as text (a qualified name as written).
    pub fn text(&self) -> String {
        match self {
            ProvValue::Str(s) => s.clone(),
            ProvValue::Int(i) => i.to_string(),
            ProvValue::Float(x) => xsd_double(*x),
            ProvValue::Bool(b) => b.to_string(),
            ProvValue::QName { text, .. } => text.clone(),
            ProvValue::Literal { value, .. } => value.clone(),
        }
    }

    /// The value as a boolean, if it is one (`true`/`false`/`1`/`0` as text).
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ProvValue::Bool(b) => Some(*b),
            ProvValue::Int(1) => Some(true),
            ProvValue::Int(0) => Some(false),
            ProvValue::Str(s) | ProvValue::Literal { value: s, .. } => match s.trim() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// The value as an integer, if it is one (or text that parses as one).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ProvValue::Int(i) => Some(*i),
            ProvValue::Str(s) | ProvValue::Literal { value: s, .. } => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The value as a tag value: strings, integers, floats and booleans as
    /// such, anything else as its text.
    pub fn to_tag(&self) -> TagValue {
        match self {
            ProvValue::Str(s) => TagValue::Str(s.clone()),
            ProvValue::Int(i) => TagValue::Int(*i),
            ProvValue::Float(x) => TagValue::Float(*x),
            ProvValue::Bool(b) => TagValue::Bool(*b),
            other => TagValue::Str(other.text()),
        }
    }

    fn iri(&self) -> Option<&str> {
        match self {
            ProvValue::QName { iri, .. } => Some(iri),
            _ => None,
        }
    }
}

/// One attribute of an element or relation.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    /// The name as written (`dsp:time_us`).
    pub key: String,
    /// The name expanded to an IRI.
    pub iri: String,
    /// One value (an attribute written with a list has one entry per value).
    pub value: ProvValue,
}

/// What an element is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementKind {
    /// `entity`.
    Entity,
    /// `activity`.
    Activity,
    /// `agent`.
    Agent,
}

impl ElementKind {
    /// The PROV-JSON section name.
    pub fn key(self) -> &'static str {
        match self {
            ElementKind::Entity => "entity",
            ElementKind::Activity => "activity",
            ElementKind::Agent => "agent",
        }
    }
}

/// An entity, activity or agent.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvElement {
    /// What it is.
    pub kind: ElementKind,
    /// Its id as written.
    pub id: String,
    /// Its id expanded to an IRI (a blank node `_:x` stays as written).
    pub iri: String,
    /// Its attributes, in document order (all instances of the id merged).
    pub attributes: Vec<Attribute>,
}

impl ProvElement {
    /// The values of the attribute with this IRI.
    pub fn values<'a>(&'a self, iri: &'a str) -> impl Iterator<Item = &'a ProvValue> + 'a {
        self.attributes
            .iter()
            .filter(move |a| a.iri == iri)
            .map(|a| &a.value)
    }

    /// The first value of the attribute with this IRI.
    pub fn first(&self, iri: &str) -> Option<&ProvValue> {
        self.attributes
            .iter()
            .find(|a| a.iri == iri)
            .map(|a| &a.value)
    }

    /// The record kind it maps to: an activity is an activity; an entity
    /// whose `prov:type` is `dsp:fact` or `dsp:model` is that, any other
    /// entity is data; an agent has none.
    pub fn record_kind(&self) -> Option<Kind> {
        match self.kind {
            ElementKind::Agent => None,
            ElementKind::Activity => Some(Kind::Activity),
            ElementKind::Entity => {
                let ty = format!("{PROV_NS}type");
                for v in self.values(&ty) {
                    match v.iri().and_then(|i| i.strip_prefix(DSP_NS)) {
                        Some("fact") => return Some(Kind::Fact),
                        Some("model") => return Some(Kind::Model),
                        Some("data") => return Some(Kind::Data),
                        _ => {}
                    }
                }
                Some(Kind::Data)
            }
        }
    }

    /// The cause, if the element says it is invalid (`dsp:invalid`).
    pub fn invalid_cause(&self) -> Option<String> {
        let invalid = self.first(&format!("{DSP_NS}invalid"))?.as_bool()?;
        invalid.then(|| {
            self.first(&format!("{DSP_NS}invalid_cause"))
                .map(|c| c.text())
                .filter(|c| !c.trim().is_empty())
                .unwrap_or_else(|| "invalid in the imported document".into())
        })
    }

    /// The record the element describes (id 0, no parents), with `origin`
    /// = its IRI (none for a blank node); `None` for an agent. Attributes
    /// it does not map are reported in `warnings`.
    pub fn to_record(&self, warnings: &mut Vec<String>) -> Option<Record> {
        let kind = self.record_kind()?;
        let mut warn = |what: String| {
            warnings.push(format!("{} {:?}: {what}", self.kind.key(), short(&self.id)))
        };
        let label = self.first(&format!("{PROV_NS}label")).map(|v| v.text());
        let mut r = Record::new(kind, label.clone().unwrap_or_else(|| self.id.clone()));
        r.origin = (!is_blank(&self.iri)).then(|| self.iri.clone());
        let mut time: Option<i64> = None;
        let mut start: Option<i64> = None;
        let mut ignored: BTreeSet<&str> = BTreeSet::new();
        for a in &self.attributes {
            if let Some(local) = a.iri.strip_prefix(DSP_NS) {
                match local {
                    "time_us" => match (a.value.as_i64(), time) {
                        (Some(t), None) => time = Some(t),
                        (Some(_), Some(_)) => {}
                        (None, _) => warn(format!(
                            "dsp:time_us {:?} is not an integer",
                            short(&a.value.text())
                        )),
                    },
                    "uri" => r.uris.push(a.value.text()),
                    "item" => match (parse_loc(&a.value.text()), r.item.is_some()) {
                        (Some(loc), false) => r.item = Some(loc),
                        (Some(_), true) => warn("a second dsp:item is ignored".into()),
                        (None, _) => warn(format!(
                            "dsp:item {:?} is not topic/partition/offset",
                            short(&a.value.text())
                        )),
                    },
                    "version" => match a.value.as_i64() {
                        Some(v) if kind == Kind::Model && r.version.is_none() => {
                            r.version = Some(v)
                        }
                        Some(_) => {}
                        None => warn(format!(
                            "dsp:version {:?} is not an integer",
                            short(&a.value.text())
                        )),
                    },
                    "invalid" | "invalidated_at" | "invalid_cause" | "invalid_event"
                    | "invalid_parent" | "edge" => {}
                    l => match l.strip_prefix("tag_").map(decode_tag_key) {
                        Some(k) if !k.is_empty() => match r.tags.entry(k) {
                            std::collections::btree_map::Entry::Occupied(e) => warn(format!(
                                "a second value of tag {:?} is ignored",
                                short(e.key())
                            )),
                            std::collections::btree_map::Entry::Vacant(e) => {
                                e.insert(a.value.to_tag());
                            }
                        },
                        _ => {
                            ignored.insert(a.key.as_str());
                        }
                    },
                }
            } else if let Some(local) = a.iri.strip_prefix(PROV_NS) {
                match local {
                    "type" | "label" | "endTime" => {}
                    "startTime" => {
                        if start.is_none() {
                            start = parse_xsd_datetime(&a.value.text());
                            if start.is_none() {
                                warn(format!(
                                    "prov:startTime {:?} is not an xsd:dateTime",
                                    short(&a.value.text())
                                ));
                            }
                        }
                    }
                    _ => {
                        ignored.insert(a.key.as_str());
                    }
                }
            } else {
                ignored.insert(a.key.as_str());
            }
        }
        for k in ignored {
            warn(format!("attribute {} ignored", short(k)));
        }
        r.time_us = time.or(start).unwrap_or(0);
        if label.is_none() {
            if let Some(loc) = &r.item {
                r.name = loc.to_string();
            }
        }
        Some(r)
    }
}

/// A PROV relation that diaspora reads as an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelationKind {
    /// `wasDerivedFrom`: generatedEntity (child) ← usedEntity (parent).
    Derivation,
    /// `used`: activity (child) ← entity (parent).
    Usage,
    /// `wasGeneratedBy`: entity (child) ← activity (parent).
    Generation,
    /// `wasInformedBy`: informed (child) ← informant (parent).
    Communication,
}

impl RelationKind {
    /// All of them.
    pub const ALL: [RelationKind; 4] = [
        RelationKind::Derivation,
        RelationKind::Usage,
        RelationKind::Generation,
        RelationKind::Communication,
    ];

    /// The PROV-JSON section name.
    pub fn key(self) -> &'static str {
        match self {
            RelationKind::Derivation => "wasDerivedFrom",
            RelationKind::Usage => "used",
            RelationKind::Generation => "wasGeneratedBy",
            RelationKind::Communication => "wasInformedBy",
        }
    }

    /// The local names (in `prov:`) of the child's and the parent's attribute.
    pub fn roles(self) -> (&'static str, &'static str) {
        match self {
            RelationKind::Derivation => ("generatedEntity", "usedEntity"),
            RelationKind::Usage => ("activity", "entity"),
            RelationKind::Generation => ("entity", "activity"),
            RelationKind::Communication => ("informed", "informant"),
        }
    }

    /// The record kinds of an undeclared child and parent.
    pub(super) fn implied_kinds(self) -> (Kind, Kind) {
        match self {
            RelationKind::Derivation => (Kind::Data, Kind::Data),
            RelationKind::Usage => (Kind::Activity, Kind::Data),
            RelationKind::Generation => (Kind::Data, Kind::Activity),
            RelationKind::Communication => (Kind::Activity, Kind::Activity),
        }
    }
}

/// A reference to an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRef {
    /// As written.
    pub id: String,
    /// Expanded.
    pub iri: String,
}

/// A relation that diaspora reads as an edge.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvRelation {
    /// Which relation.
    pub kind: RelationKind,
    /// Its id as written (often a blank node).
    pub id: String,
    /// The dependent element (generated entity, using activity, …).
    pub child: Option<NameRef>,
    /// What it depends on.
    pub parent: Option<NameRef>,
    /// Other attributes.
    pub attributes: Vec<Attribute>,
}

impl ProvRelation {
    /// The edge kind: `dsp:edge` if it names one, else revision for a
    /// `wasDerivedFrom` typed `prov:Revision`, else the relation's own
    /// (derived, used, generated; derived for `wasInformedBy`).
    pub fn edge_kind(&self) -> EdgeKind {
        let edge = format!("{DSP_NS}edge");
        if let Some(k) = self
            .attributes
            .iter()
            .filter(|a| a.iri == edge)
            .find_map(|a| a.value.text().parse::<EdgeKind>().ok())
        {
            return k;
        }
        let revision = format!("{PROV_NS}Revision");
        let ty = format!("{PROV_NS}type");
        match self.kind {
            RelationKind::Derivation
                if self
                    .attributes
                    .iter()
                    .any(|a| a.iri == ty && a.value.iri() == Some(revision.as_str())) =>
            {
                EdgeKind::Revision
            }
            RelationKind::Derivation | RelationKind::Communication => EdgeKind::Derived,
            RelationKind::Usage => EdgeKind::Used,
            RelationKind::Generation => EdgeKind::Generated,
        }
    }
}

/// A PROV-JSON document in a store-independent form: the elements and the
/// relations diaspora reads, with every name expanded to an IRI.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProvDocument {
    /// Declared prefixes (`default` for the default namespace).
    pub prefixes: BTreeMap<String, String>,
    /// Entities, activities and agents, in document order per section.
    pub elements: Vec<ProvElement>,
    /// `wasDerivedFrom`, `used`, `wasGeneratedBy` and `wasInformedBy`.
    pub relations: Vec<ProvRelation>,
    /// What was left out (other relation kinds, bundles, unknown keys) and
    /// how many of each.
    pub ignored: BTreeMap<String, u64>,
}

/// The relations PROV-JSON defines that diaspora does not read.
const OTHER_RELATIONS: [&str; 11] = [
    "wasStartedBy",
    "wasEndedBy",
    "wasInvalidatedBy",
    "wasAttributedTo",
    "wasAssociatedWith",
    "actedOnBehalfOf",
    "wasInfluencedBy",
    "specializationOf",
    "alternateOf",
    "hadMember",
    "mentionOf",
];

/// Expands qualified names with a document's prefixes.
struct Namespaces {
    map: BTreeMap<String, String>,
}

impl Namespaces {
    fn lookup(&self, prefix: &str) -> Option<&str> {
        if let Some(ns) = self.map.get(prefix) {
            return Some(ns);
        }
        match prefix {
            "prov" => Some(PROV_NS),
            "xsd" => Some(XSD_NS),
            "dsp" => Some(DSP_NS),
            _ => None,
        }
    }

    /// `p:local` with `p` declared (or `prov`, `xsd`, `dsp`) → namespace +
    /// local; a name without a prefix → default namespace + name; anything
    /// else (a blank node, an IRI such as `urn:x:1`) as written.
    fn expand(&self, q: &str) -> String {
        match q.split_once(':') {
            Some(("_", _)) => q.to_string(),
            Some((p, local)) => match self.lookup(p) {
                Some(ns) => format!("{ns}{local}"),
                None => q.to_string(),
            },
            None => match self.map.get("default") {
                Some(d) => format!("{d}{q}"),
                None => q.to_string(),
            },
        }
    }

    fn known_prefix(&self, q: &str) -> bool {
        q.split_once(':')
            .is_some_and(|(p, _)| p != "_" && self.lookup(p).is_some())
    }
}

fn doc_err(msg: String) -> ProvError {
    ProvError::Document(msg)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a PROV-JSON document (pure: no store). Malformed input is a
/// [`ProvError::Document`] naming the section, id and attribute; a document
/// over [`MAX_DOCUMENT_BYTES`] or [`MAX_DOCUMENT_ELEMENTS`] is refused.
pub fn parse_prov_json(bytes: &[u8]) -> Result<ProvDocument> {
    parse_with_limits(bytes, MAX_DOCUMENT_BYTES, MAX_DOCUMENT_ELEMENTS)
}

pub(crate) fn parse_with_limits(
    bytes: &[u8],
    max_bytes: usize,
    max_elements: usize,
) -> Result<ProvDocument> {
    if bytes.len() > max_bytes {
        return Err(doc_err(format!(
            "the document is {} bytes, over the limit of {max_bytes} bytes",
            bytes.len()
        )));
    }
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| doc_err(format!("not valid JSON: {e}")))?;
    let mut top = match v {
        Value::Object(m) => m,
        other => {
            return Err(doc_err(format!(
                "a PROV-JSON document is a JSON object; this one is {}",
                json_type(&other)
            )))
        }
    };
    let mut doc = ProvDocument::default();
    if let Some(p) = top.remove("prefix") {
        let Value::Object(p) = p else {
            return Err(doc_err(format!(
                "\"prefix\" must be an object mapping prefixes to namespace IRIs; it is {}",
                json_type(&p)
            )));
        };
        for (k, v) in p {
            match v {
                Value::String(s) => {
                    doc.prefixes.insert(k, s);
                }
                other => {
                    return Err(doc_err(format!(
                        "prefix {:?}: the namespace must be a string; it is {}",
                        short(&k),
                        json_type(&other)
                    )))
                }
            }
        }
    }
    let ns = Namespaces {
        map: doc.prefixes.clone(),
    };
    let mut p = Parser {
        ns: &ns,
        doc: &mut doc,
        count: 0,
        max: max_elements,
    };
    for (key, section) in top {
        match key.as_str() {
            "entity" => p.elements(ElementKind::Entity, section)?,
            "activity" => p.elements(ElementKind::Activity, section)?,
            "agent" => p.elements(ElementKind::Agent, section)?,
            k => match RelationKind::ALL.into_iter().find(|r| r.key() == k) {
                Some(r) => p.relations(r, section)?,
                None => {
                    let n = match &section {
                        Value::Object(m) => m.len(),
                        _ => 1,
                    };
                    p.add_count(n, &key)?;
                    let what = if k == "bundle" {
                        "bundle".to_string()
                    } else if OTHER_RELATIONS.contains(&k) {
                        k.to_string()
                    } else {
                        format!("unknown key {:?}", short(k))
                    };
                    *p.doc.ignored.entry(what).or_default() += n as u64;
                }
            },
        }
    }
    Ok(doc)
}

struct Parser<'a> {
    ns: &'a Namespaces,
    doc: &'a mut ProvDocument,
    count: usize,
    max: usize,
}

impl Parser<'_> {
    fn add_count(&mut self, n: usize, section: &str) -> Result<()> {
        self.count = self.count.saturating_add(n);
        if self.count > self.max {
            return Err(doc_err(format!(
                "the document has more than {} elements and relations (limit reached in {:?})",
                self.max,
                short(section)
            )));
        }
        Ok(())
    }

    /// The instances of one id: an object, or a list of objects.
    fn instances(section: &str, id: &str, content: Value) -> Result<Vec<Map<String, Value>>> {
        match content {
            Value::Object(m) => Ok(vec![m]),
            Value::Array(items) => items
                .into_iter()
                .map(|i| match i {
                    Value::Object(m) => Ok(m),
                    other => Err(doc_err(format!(
                        "{section} {:?}: a list of instances must hold objects; one is {}",
                        short(id),
                        json_type(&other)
                    ))),
                })
                .collect(),
            other => Err(doc_err(format!(
                "{section} {:?}: expected an object of attributes (or a list of them); found {}",
                short(id),
                json_type(&other)
            ))),
        }
    }

    fn section(section: &str, v: Value) -> Result<Map<String, Value>> {
        match v {
            Value::Object(m) => Ok(m),
            other => Err(doc_err(format!(
                "{section:?} must be an object mapping ids to attributes; it is {}",
                json_type(&other)
            ))),
        }
    }

    fn elements(&mut self, kind: ElementKind, v: Value) -> Result<()> {
        let key = kind.key();
        let m = Self::section(key, v)?;
        for (id, content) in m {
            if id.is_empty() {
                return Err(doc_err(format!("{key}: an element has an empty id")));
            }
            let instances = Self::instances(key, &id, content)?;
            self.add_count(instances.len().max(1), key)?;
            let mut attributes = Vec::new();
            for inst in instances {
                for (k, v) in inst {
                    self.attribute(key, &id, k, v, &mut attributes)?;
                }
            }
            self.doc.elements.push(ProvElement {
                kind,
                iri: self.ns.expand(&id),
                id,
                attributes,
            });
        }
        Ok(())
    }

    fn relations(&mut self, kind: RelationKind, v: Value) -> Result<()> {
        let key = kind.key();
        let (child_attr, parent_attr) = kind.roles();
        let (child_iri, parent_iri) = (
            format!("{PROV_NS}{child_attr}"),
            format!("{PROV_NS}{parent_attr}"),
        );
        let m = Self::section(key, v)?;
        for (id, content) in m {
            let instances = Self::instances(key, &id, content)?;
            self.add_count(instances.len().max(1), key)?;
            for inst in instances {
                let mut rel = ProvRelation {
                    kind,
                    id: id.clone(),
                    child: None,
                    parent: None,
                    attributes: Vec::new(),
                };
                for (k, v) in inst {
                    let iri = self.ns.expand(&k);
                    if iri == child_iri {
                        rel.child = self.name_ref(key, &id, &k, v)?;
                    } else if iri == parent_iri {
                        rel.parent = self.name_ref(key, &id, &k, v)?;
                    } else {
                        self.attribute(key, &id, k, v, &mut rel.attributes)?;
                    }
                }
                self.doc.relations.push(rel);
            }
        }
        Ok(())
    }

    /// A formal attribute naming an element: a string (or a one-element
    /// list of one, or a value object holding one).
    fn name_ref(&self, section: &str, id: &str, attr: &str, v: Value) -> Result<Option<NameRef>> {
        let s = match v {
            Value::Null => return Ok(None),
            Value::String(s) => s,
            Value::Array(mut items) if items.len() == 1 => match items.pop() {
                Some(Value::String(s)) => s,
                Some(Value::Null) | None => return Ok(None),
                Some(other) => return Err(self.bad_name(section, id, attr, &other)),
            },
            Value::Object(mut m) => match m.remove("$") {
                Some(Value::String(s)) => s,
                Some(other) => return Err(self.bad_name(section, id, attr, &other)),
                None => {
                    return Err(self.bad_name(
                        section,
                        id,
                        &format!("{attr}\" (a value object without \"$\")"),
                        &Value::Null,
                    ))
                }
            },
            other => return Err(self.bad_name(section, id, attr, &other)),
        };
        if s.is_empty() {
            return Ok(None);
        }
        Ok(Some(NameRef {
            iri: self.ns.expand(&s),
            id: s,
        }))
    }

    fn bad_name(&self, section: &str, id: &str, attr: &str, v: &Value) -> ProvError {
        doc_err(format!(
            "{section} {:?}, attribute {:?}: expected a qualified name (a string); found {}",
            short(id),
            short(attr),
            json_type(v)
        ))
    }

    fn attribute(
        &self,
        section: &str,
        id: &str,
        key: String,
        v: Value,
        out: &mut Vec<Attribute>,
    ) -> Result<()> {
        let iri = self.ns.expand(&key);
        let is_type = iri.strip_prefix(PROV_NS) == Some("type");
        let mut push = |value: Option<ProvValue>| {
            if let Some(mut value) = value {
                // A prov:type string with a known prefix is a qualified name.
                if let (true, ProvValue::Str(s)) = (is_type, &value) {
                    if self.ns.known_prefix(s) {
                        value = ProvValue::QName {
                            iri: self.ns.expand(s),
                            text: s.clone(),
                        };
                    }
                }
                out.push(Attribute {
                    key: key.clone(),
                    iri: iri.clone(),
                    value,
                });
            }
        };
        match v {
            Value::Array(items) => {
                for item in items {
                    push(self.value(section, id, &key, item)?);
                }
            }
            v => push(self.value(section, id, &key, v)?),
        }
        Ok(())
    }

    fn value(&self, section: &str, id: &str, key: &str, v: Value) -> Result<Option<ProvValue>> {
        let here = || format!("{section} {:?}, attribute {:?}", short(id), short(key));
        Ok(Some(match v {
            Value::Null => return Ok(None),
            Value::Bool(b) => ProvValue::Bool(b),
            Value::String(s) => ProvValue::Str(s),
            Value::Number(n) => match n.as_i64() {
                Some(i) => ProvValue::Int(i),
                None => match n.as_f64() {
                    Some(x) => ProvValue::Float(x),
                    None => ProvValue::Literal {
                        value: n.to_string(),
                        datatype: None,
                        lang: None,
                    },
                },
            },
            Value::Array(_) => return Err(doc_err(format!("{}: a list inside a list", here()))),
            Value::Object(mut m) => {
                let lexical = match m.remove("$") {
                    Some(Value::String(s)) => s,
                    Some(Value::Number(n)) => n.to_string(),
                    Some(Value::Bool(b)) => b.to_string(),
                    Some(other) => {
                        return Err(doc_err(format!(
                            "{}: the value object's \"$\" must be a string; it is {}",
                            here(),
                            json_type(&other)
                        )))
                    }
                    None => {
                        return Err(doc_err(format!(
                            "{}: a value object needs \"$\" (the value)",
                            here()
                        )))
                    }
                };
                let mut text_field = |name: &str| -> Result<Option<String>> {
                    match m.remove(name) {
                        None | Some(Value::Null) => Ok(None),
                        Some(Value::String(s)) => Ok(Some(s)),
                        Some(other) => Err(doc_err(format!(
                            "{}: the value object's {name:?} must be a string; it is {}",
                            here(),
                            json_type(&other)
                        ))),
                    }
                };
                let datatype = text_field("type")?.map(|t| self.ns.expand(&t));
                let lang = text_field("lang")?;
                self.typed_value(lexical, datatype, lang)
            }
        }))
    }

    fn typed_value(
        &self,
        lexical: String,
        datatype: Option<String>,
        lang: Option<String>,
    ) -> ProvValue {
        let literal = |value: String, datatype: Option<String>| ProvValue::Literal {
            value,
            datatype,
            lang: None,
        };
        if lang.is_some() {
            return ProvValue::Literal {
                value: lexical,
                datatype,
                lang,
            };
        }
        let xsd = datatype.as_deref().and_then(|d| d.strip_prefix(XSD_NS));
        match xsd {
            Some(
                "long" | "int" | "integer" | "short" | "byte" | "unsignedLong" | "unsignedInt"
                | "unsignedShort" | "unsignedByte" | "nonNegativeInteger" | "positiveInteger"
                | "negativeInteger" | "nonPositiveInteger",
            ) => match lexical.trim().parse::<i64>() {
                Ok(i) => ProvValue::Int(i),
                Err(_) => literal(lexical, datatype),
            },
            Some("double" | "float" | "decimal") => match lexical.trim().parse::<f64>() {
                Ok(x) => ProvValue::Float(x),
                Err(_) => literal(lexical, datatype),
            },
            Some("boolean") => match lexical.trim() {
                "true" | "1" => ProvValue::Bool(true),
                "false" | "0" => ProvValue::Bool(false),
                _ => literal(lexical, datatype),
            },
            Some("string") => ProvValue::Str(lexical),
            Some("QName") => ProvValue::QName {
                iri: self.ns.expand(&lexical),
                text: lexical,
            },
            _ if datatype.as_deref().and_then(|d| d.strip_prefix(PROV_NS))
                == Some("QUALIFIED_NAME") =>
            {
                ProvValue::QName {
                    iri: self.ns.expand(&lexical),
                    text: lexical,
                }
            }
            _ => literal(lexical, datatype),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing;
    use proptest::prelude::*;

    /// A document with every construct the reader handles.
    const SAMPLE: &str = r#"{
      "prefix": {"dsp": "https://diaspora.invalid/ns#", "sabc": "urn:diaspora:abc:", "ex": "http://example.org/"},
      "entity": {
        "sabc:1": {"prov:type": {"$": "dsp:fact", "type": "xsd:QName"}, "prov:label": "cal", "dsp:time_us": {"$": "17", "type": "xsd:long"},
                   "dsp:uri": ["file:/a", "file:/b"], "dsp:tag_run": {"$": "3", "type": "xsd:long"}, "dsp:tag_e": {"$": "1.5", "type": "xsd:double"},
                   "dsp:tag_ok": {"$": "true", "type": "xsd:boolean"}, "dsp:tag_s%20k": "v"},
        "sabc:2": {"prov:type": "dsp:data", "dsp:item": "det/0/5", "dsp:invalid": true, "dsp:invalidated_at": {"$": "99", "type": "xsd:long"},
                   "dsp:invalid_cause": "bad", "dsp:invalid_event": {"$": "1", "type": "xsd:long"}},
        "sabc:4": {"prov:type": {"$": "dsp:model", "type": "xsd:QName"}, "prov:label": "m", "dsp:version": {"$": "2", "type": "xsd:long"},
                   "dsp:invalid": true, "dsp:invalid_parent": {"$": "sabc:2", "type": "xsd:QName"}},
        "ex:chart": [{"prov:label": {"$": "chart", "lang": "en"}}, {"ex:color": ["red", 3, 2.5, null]}]
      },
      "activity": {"sabc:3": {"prov:startTime": "2024-01-02T03:04:05.123456Z", "prov:label": "run", "dsp:time_us": 1}},
      "agent": {"dsp:store_abc": {"prov:type": {"$": "prov:SoftwareAgent", "type": "xsd:QName"}}},
      "wasDerivedFrom": {"_:e1": {"prov:generatedEntity": "sabc:2", "prov:usedEntity": "sabc:1", "dsp:edge": "derived"},
                         "_:e4": {"prov:generatedEntity": "sabc:4", "prov:usedEntity": "ex:chart", "prov:type": {"$": "prov:Revision", "type": "xsd:QName"}}},
      "used": {"_:e2": {"prov:activity": "sabc:3", "prov:entity": "sabc:2"}},
      "wasGeneratedBy": {"_:e3": {"prov:entity": "ex:chart", "prov:activity": "sabc:3", "prov:time": "2024-01-02T03:04:05Z"}},
      "wasInformedBy": {"_:e5": {"prov:informed": "sabc:3", "prov:informant": "ex:other"}},
      "wasAttributedTo": {"_:e6": {"prov:entity": "ex:chart", "prov:agent": "dsp:store_abc"}},
      "bundle": {"ex:b": {}}
    }"#;

    #[test]
    fn the_sample_parses_as_expected() {
        let doc = parse_prov_json(SAMPLE.as_bytes()).unwrap();
        assert_eq!(doc.elements.len(), 6);
        assert_eq!(doc.relations.len(), 5);
        assert_eq!(doc.ignored.get("wasAttributedTo"), Some(&1));
        assert_eq!(doc.ignored.get("bundle"), Some(&1));
        let el = |id: &str| doc.elements.iter().find(|e| e.id == id).unwrap();
        let mut w = Vec::new();
        let fact = el("sabc:1").to_record(&mut w).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(fact.kind, Kind::Fact);
        assert_eq!(fact.origin.as_deref(), Some("urn:diaspora:abc:1"));
        assert_eq!(fact.time_us, 17);
        assert_eq!(fact.uris, ["file:/a", "file:/b"]);
        assert_eq!(fact.tags["run"], TagValue::Int(3));
        assert_eq!(fact.tags["e"], TagValue::Float(1.5));
        assert_eq!(fact.tags["ok"], TagValue::Bool(true));
        assert_eq!(fact.tags["s k"], TagValue::Str("v".into()));
        let item = el("sabc:2").to_record(&mut w).unwrap();
        assert_eq!((item.kind, item.name.as_str()), (Kind::Data, "det/0/5"));
        assert_eq!(el("sabc:2").invalid_cause().as_deref(), Some("bad"));
        let model = el("sabc:4").to_record(&mut w).unwrap();
        assert_eq!((model.kind, model.version), (Kind::Model, Some(2)));
        assert_eq!(
            el("sabc:4").invalid_cause().as_deref(),
            Some("invalid in the imported document")
        );
        let act = el("sabc:3").to_record(&mut w).unwrap();
        assert_eq!((act.kind, act.time_us), (Kind::Activity, 1));
        let chart = el("ex:chart").to_record(&mut w).unwrap();
        assert_eq!(
            (chart.kind, chart.name.as_str(), chart.origin.as_deref()),
            (Kind::Data, "chart", Some("http://example.org/chart"))
        );
        assert_eq!(w, ["entity \"ex:chart\": attribute ex:color ignored"]);
        assert!(el("dsp:store_abc").to_record(&mut w).is_none());
        let kinds: BTreeMap<&str, EdgeKind> = doc
            .relations
            .iter()
            .map(|r| (r.id.as_str(), r.edge_kind()))
            .collect();
        assert_eq!(kinds["_:e1"], EdgeKind::Derived);
        assert_eq!(kinds["_:e2"], EdgeKind::Used);
        assert_eq!(kinds["_:e3"], EdgeKind::Generated);
        assert_eq!(kinds["_:e4"], EdgeKind::Revision);
        assert_eq!(kinds["_:e5"], EdgeKind::Derived);
        fuzzing::prov_json(SAMPLE.as_bytes());
    }

    #[test]
    fn malformed_documents_are_document_errors_naming_the_place() {
        let cases: &[(&str, &str)] = &[
            ("", "not valid JSON"),
            ("[]", "an array"),
            (r#"{"prefix": []}"#, "\"prefix\""),
            (r#"{"prefix": {"ex": 5}}"#, "prefix \"ex\""),
            (r#"{"entity": []}"#, "\"entity\""),
            (r#"{"entity": {"ex:a": 5}}"#, "entity \"ex:a\""),
            (r#"{"entity": {"ex:a": [{}, 5]}}"#, "entity \"ex:a\""),
            (r#"{"entity": {"": {}}}"#, "empty id"),
            (
                r#"{"entity": {"ex:a": {"ex:v": {"type": "xsd:int"}}}}"#,
                "attribute \"ex:v\"",
            ),
            (
                r#"{"entity": {"ex:a": {"ex:v": {"$": [1]}}}}"#,
                "attribute \"ex:v\"",
            ),
            (
                r#"{"entity": {"ex:a": {"ex:v": {"$": "1", "type": 5}}}}"#,
                "\"type\"",
            ),
            (
                r#"{"entity": {"ex:a": {"ex:v": [[1]]}}}"#,
                "a list inside a list",
            ),
            (
                r#"{"used": {"_:u": {"prov:entity": 5}}}"#,
                "used \"_:u\", attribute \"prov:entity\"",
            ),
            (
                r#"{"used": {"_:u": {"prov:entity": ["a", "b"]}}}"#,
                "prov:entity",
            ),
        ];
        for (doc, want) in cases {
            match parse_prov_json(doc.as_bytes()) {
                Err(ProvError::Document(m)) => {
                    assert!(m.contains(want), "{doc}: {m:?} lacks {want:?}")
                }
                other => panic!("{doc}: {other:?}"),
            }
        }
    }

    #[test]
    fn limits_are_enforced() {
        let doc = br#"{"entity": {"a:1": {}, "a:2": {}}, "used": {"_:1": [{}, {}]}}"#;
        assert!(parse_with_limits(doc, doc.len(), 4).is_ok());
        match parse_with_limits(doc, doc.len(), 3) {
            Err(ProvError::Document(m)) => assert!(m.contains("more than 3"), "{m}"),
            other => panic!("{other:?}"),
        }
        match parse_with_limits(doc, doc.len() - 1, 10) {
            Err(ProvError::Document(m)) => assert!(m.contains("over the limit"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    // ----- property tests: parse never panics -----

    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("$".to_string()),
            Just("type".to_string()),
            Just("lang".to_string()),
            Just("prov:type".to_string()),
            Just("prov:label".to_string()),
            Just("prov:startTime".to_string()),
            Just("dsp:time_us".to_string()),
            Just("dsp:item".to_string()),
            Just("dsp:version".to_string()),
            Just("dsp:tag_x%2".to_string()),
            Just("dsp:invalid".to_string()),
            Just("prov:entity".to_string()),
            Just("prov:activity".to_string()),
            Just("prov:generatedEntity".to_string()),
            Just("entity".to_string()),
            Just("prefix".to_string()),
            "[a-z:_%$#/ ]{0,10}",
        ]
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z0-9:_$#/%. \"\\\\-]{0,12}".prop_map(Value::String),
            any::<String>().prop_map(Value::String),
            Just(serde_json::json!({"$": "1", "type": "xsd:long"})),
            Just(serde_json::json!({"$": "dsp:model", "type": "xsd:QName"})),
            Just(serde_json::json!({"$": "2012-03-02T24:00:00Z", "type": "xsd:dateTime"})),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec((arb_key(), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    #[derive(Debug, Clone)]
    enum Op {
        Replace(Value),
        Rename(String),
        Insert(String, Value),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            arb_json().prop_map(Op::Replace),
            arb_key().prop_map(Op::Rename),
            (arb_key(), arb_json()).prop_map(|(k, v)| Op::Insert(k, v)),
        ]
    }

    fn count_nodes(v: &Value) -> usize {
        1 + match v {
            Value::Array(a) => a.iter().map(count_nodes).sum(),
            Value::Object(m) => m.values().map(count_nodes).sum(),
            _ => 0,
        }
    }

    /// Applies `op` to the `target`-th node (pre-order).
    fn mutate(v: &mut Value, target: &mut usize, op: &Op) -> bool {
        if *target == 0 {
            match (op, &mut *v) {
                (Op::Replace(new), v) => *v = new.clone(),
                (Op::Rename(key), Value::Object(m)) => {
                    if let Some(k) = m.keys().next().cloned() {
                        if let Some(x) = m.remove(&k) {
                            m.insert(key.clone(), x);
                        }
                    }
                }
                (Op::Insert(k, x), Value::Object(m)) => {
                    m.insert(k.clone(), x.clone());
                }
                _ => {}
            }
            return true;
        }
        *target -= 1;
        match v {
            Value::Array(a) => a.iter_mut().any(|x| mutate(x, target, op)),
            Value::Object(m) => m.values_mut().any(|x| mutate(x, target, op)),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            fuzzing::prov_json(&data);
        }

        #[test]
        fn arbitrary_json_never_panics(v in arb_json()) {
            fuzzing::prov_json(&serde_json::to_vec(&v).unwrap());
        }

        #[test]
        fn byte_mutations_of_a_document_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..6)
        ) {
            let mut b = SAMPLE.as_bytes().to_vec();
            for (at, op, byte) in edits {
                if b.is_empty() {
                    break;
                }
                let i = at.index(b.len());
                match op {
                    0 => b[i] = byte,
                    1 => b.insert(i, byte),
                    2 => {
                        b.remove(i);
                    }
                    _ => b.truncate(i),
                }
            }
            fuzzing::prov_json(&b);
        }

        #[test]
        fn structural_mutations_of_a_document_never_panic(
            ops in proptest::collection::vec((any::<prop::sample::Index>(), arb_op()), 1..5)
        ) {
            let mut v: Value = serde_json::from_str(SAMPLE).unwrap();
            for (at, op) in ops {
                let mut target = at.index(count_nodes(&v));
                mutate(&mut v, &mut target, &op);
            }
            fuzzing::prov_json(&serde_json::to_vec(&v).unwrap());
        }

    }
}
