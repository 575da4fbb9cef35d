//! The provenance store from Python: lineage, why, invalidate, model_at.
//!
//! Answers are plain Python values (dicts and lists) in the shape of the
//! store's JSON (`diaspora prov … --json`), so what a notebook reads is
//! what the command line prints.

use std::sync::Arc;

use diaspora_provenance::{
    Direction, EdgeKind, Kind, Provenance as Store, Record, TagValue, Target,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::client::Delivered;
use crate::errors::{self, InvalidRequest, NotFound};
use crate::item::Item;
use crate::to_py;

/// A provenance store: a SQLite file or a PostgreSQL database. Records
/// are named by a *target*: a record id (int), an `Item` or `Delivered`,
/// or text — `topic/partition/offset`, `name:NAME`, `key=value` (a tag),
/// `model@version`.
#[pyclass(module = "pydiaspora._native", frozen)]
pub struct Provenance {
    store: Arc<parking_lot::Mutex<Store>>,
    url: String,
}

/// A target from Python.
fn target(t: &Bound<'_, PyAny>) -> PyResult<Target> {
    if let Ok(id) = t.extract::<i64>() {
        return Ok(Target::Record(id));
    }
    let loc = if let Ok(it) = t.downcast::<Item>() {
        Some(it.get().item_ref())
    } else if let Ok(d) = t.downcast::<Delivered>() {
        diaspora_fabric::ItemRef::parse(&d.get().location_text())
    } else {
        None
    };
    if let Some(r) = loc {
        return Ok(Target::Items {
            topic: r.topic.to_string(),
            partition: r.partition,
            from: r.offset,
            to: r.offset,
        });
    }
    let s: String = t.extract().map_err(|_| {
        InvalidRequest::new_err("a target is a record id, an Item, a Delivered or a str")
    })?;
    Target::parse(&s).map_err(errors::prov)
}

impl Provenance {
    /// Runs `f` on the store without the GIL.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Store) -> diaspora_provenance::Result<T> + Send,
    ) -> PyResult<T> {
        let store = self.store.clone();
        py.allow_threads(move || f(&mut store.lock()))
            .map_err(errors::prov)
    }

    /// The one record a target names (the first, for a target naming many).
    fn one(&self, py: Python<'_>, t: &Bound<'_, PyAny>) -> PyResult<i64> {
        let t = target(t)?;
        let shown = t.to_string();
        let ids = self.with(py, move |s| s.resolve(&t))?;
        ids.first()
            .copied()
            .ok_or_else(|| NotFound::new_err(format!("nothing matches {shown}")))
    }
}

#[pymethods]
impl Provenance {
    /// Opens (creating if needed) the store at `store`: a SQLite path or
    /// postgres://USER:PASS@HOST/DB (default: $DIASPORA_PROV_STORE, else
    /// diaspora-prov.sqlite).
    #[new]
    #[pyo3(signature = (store = None))]
    fn new(py: Python<'_>, store: Option<String>) -> PyResult<Provenance> {
        let url = store.unwrap_or_else(diaspora_provenance::default_store);
        let u = url.clone();
        let s = py
            .allow_threads(move || Store::open(&u))
            .map_err(errors::prov)?;
        Ok(Provenance {
            store: Arc::new(parking_lot::Mutex::new(s)),
            url,
        })
    }

    /// The record ids a target names.
    fn resolve(&self, py: Python<'_>, target_: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
        let t = target(target_)?;
        self.with(py, move |s| s.resolve(&t))
    }

    /// One record, as a dict (id, kind, name, time_us, tags, item, parents, ...).
    fn get<'py>(
        &self,
        py: Python<'py>,
        target_: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = self.one(py, target_)?;
        let r = self.with(py, move |s| s.get(id))?;
        to_py(py, &r)
    }

    /// Adds a record: `kind` is fact, data, model or activity; `parents`
    /// (targets) become derivation edges. Returns its id.
    #[pyo3(signature = (name, kind = "data", *, tags = None, uris = None, parents = None))]
    fn add(
        &self,
        py: Python<'_>,
        name: String,
        kind: &str,
        tags: Option<Bound<'_, PyDict>>,
        uris: Option<Vec<String>>,
        parents: Option<Vec<Bound<'_, PyAny>>>,
    ) -> PyResult<i64> {
        let kind: Kind = kind.parse().map_err(errors::prov)?;
        let mut rec = Record::new(kind, name);
        if let Some(tags) = tags {
            for (k, v) in tags.iter() {
                let k: String = k.extract()?;
                let text: String = v.str()?.extract()?;
                rec = rec.tag(k, TagValue::infer(&text));
            }
        }
        for u in uris.unwrap_or_default() {
            rec = rec.uri(u);
        }
        let parents = parents
            .unwrap_or_default()
            .iter()
            .map(|p| self.one(py, p))
            .collect::<PyResult<Vec<_>>>()?;
        self.with(py, move |s| {
            let id = s.add(rec)?;
            for p in parents {
                s.derive(id, p, EdgeKind::Derived)?;
            }
            Ok(id)
        })
    }

    /// Records that `child` was derived from `parent` (both targets);
    /// refused if it would close a cycle.
    fn derive(
        &self,
        py: Python<'_>,
        child: &Bound<'_, PyAny>,
        parent: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let c = self.one(py, child)?;
        let p = self.one(py, parent)?;
        self.with(py, move |s| s.derive(c, p, EdgeKind::Derived))
    }

    /// Lineage of a record: `direction` "up" (what it came from) or
    /// "down" (what came from it), to `depth` levels (None: all). Returns
    /// {"root", "records": [record dicts with "level"], "edges":
    /// [{"parent", "child", "kind"}], "truncated"}.
    #[pyo3(signature = (target_, direction = "up", depth = None))]
    fn lineage<'py>(
        &self,
        py: Python<'py>,
        target_: &Bound<'py, PyAny>,
        direction: &str,
        depth: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let dir = match direction {
            "up" => Direction::Up,
            "down" => Direction::Down,
            d => {
                return Err(InvalidRequest::new_err(format!(
                    "direction {d:?} is up or down"
                )))
            }
        };
        let id = self.one(py, target_)?;
        let (lin, recs) = self.with(py, move |s| {
            let lin = s.lineage(id, dir, depth)?;
            let mut recs = Vec::with_capacity(lin.nodes.len());
            for (rid, level) in &lin.nodes {
                recs.push((s.get(*rid)?, *level));
            }
            Ok((lin, recs))
        })?;
        let records: Vec<serde_json::Value> = recs
            .into_iter()
            .map(|(r, level)| {
                let mut v = serde_json::to_value(&r).unwrap_or(serde_json::Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.insert("level".into(), level.into());
                }
                v
            })
            .collect();
        let out = serde_json::json!({
            "root": id,
            "direction": direction,
            "records": records,
            "edges": lin.edges,
            "truncated": lin.truncated,
        });
        to_py(py, &out)
    }

    /// Whether a record is invalid now.
    fn is_invalid(&self, py: Python<'_>, target_: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = self.one(py, target_)?;
        self.with(py, move |s| s.is_invalid(id))
    }

    /// Why a record is invalid: None if it is valid, else {"chain": [{record,
    /// name, kind}, … from it back to the root], "event": {id, time_us,
    /// cause, target, cascade, invalidated}}.
    fn why<'py>(
        &self,
        py: Python<'py>,
        target_: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let id = self.one(py, target_)?;
        match self.with(py, move |s| s.why(id))? {
            None => Ok(None),
            Some(w) => Ok(Some(to_py(py, &w)?)),
        }
    }

    /// Invalidates what `target` names, with `cause`; with `cascade`,
    /// everything derived from it too. Returns the report (event id,
    /// roots, how many were newly invalidated, actions run, notices).
    #[pyo3(signature = (target_, cause, *, cascade = true))]
    fn invalidate<'py>(
        &self,
        py: Python<'py>,
        target_: &Bound<'py, PyAny>,
        cause: String,
        cascade: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = target(target_)?;
        let r = self.with(py, move |s| s.invalidate(&t, &cause, cascade))?;
        to_py(py, &r)
    }

    /// Makes a new version of model `model` (a target naming its model
    /// record) trained on `records` (targets); returns the new version's id.
    fn update_model(
        &self,
        py: Python<'_>,
        model: &Bound<'_, PyAny>,
        records: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<i64> {
        let m = self.one(py, model)?;
        let recs = records
            .iter()
            .map(|r| self.one(py, r))
            .collect::<PyResult<Vec<_>>>()?;
        self.with(py, move |s| s.update_model(m, &recs))
    }

    /// What model `name` knew at `t_us` (µs since the Unix epoch; None:
    /// now): {"version", "id", "time_us", "records"}, or None if it had no
    /// version yet.
    #[pyo3(signature = (name, t_us = None))]
    fn model_at<'py>(
        &self,
        py: Python<'py>,
        name: String,
        t_us: Option<i64>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let t = t_us.unwrap_or_else(diaspora_fabric::item::now_us);
        match self.with(py, move |s| s.model_at(&name, t))? {
            None => Ok(None),
            Some(k) => Ok(Some(to_py(py, &k)?)),
        }
    }

    /// The store's URL as given (with its password, if any: keep it private).
    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    fn __repr__(&self) -> String {
        let shown = diaspora_provenance::redact_url(&self.url);
        format!("<Provenance {shown}>")
    }
}
