//! Views from Python: a join over topics (a view spec, TOML), delivered as
//! view items whose members are the source items themselves (payloads
//! shared with the fetch, no copies).

use std::path::PathBuf;
use std::sync::Arc;

use diaspora_fabric::item::ConsumedItem;
use diaspora_fabric::StartFrom;
use diaspora_view::runner::{Delivery as VDelivery, View as VView, ViewOptions};
use diaspora_view::{ViewError, ViewSpec};
use pyo3::prelude::*;

use crate::errors::{self, InvalidRequest, LimitExceeded, ShutDown};
use crate::item::Item;
use crate::runtime::{seconds, wait};

fn view_err(e: ViewError) -> PyErr {
    match e {
        ViewError::Fabric { source, context } => {
            let py_err = errors::fabric(source);
            Python::with_gil(|py| {
                let msg = format!("{context}: {}", py_err.value(py));
                PyErr::from_type(py_err.get_type(py), msg)
            })
        }
        ViewError::Spec(_) => InvalidRequest::new_err(e.to_string()),
        ViewError::Limit(_) => LimitExceeded::new_err(e.to_string()),
        ViewError::Closed(_) => ShutDown::new_err(e.to_string()),
        e => errors::DiasporaError::new_err(e.to_string()),
    }
}

/// Reads a view spec: a path to a TOML file, or the TOML text itself.
pub fn spec(spec: &str) -> PyResult<ViewSpec> {
    let path = PathBuf::from(spec);
    let text = if !spec.contains('\n') && path.exists() {
        std::fs::read_to_string(&path).map_err(|e| {
            InvalidRequest::new_err(format!("reading view spec {}: {e}", path.display()))
        })?
    } else {
        spec.to_string()
    };
    ViewSpec::from_toml(&text).map_err(view_err)
}

/// One view item: its join key and members (the source items).
#[pyclass(module = "pydiaspora._native", frozen)]
pub struct ViewItem {
    /// Position in the view's metastream.
    #[pyo3(get)]
    seq: u64,
    /// The view item's stable id (acknowledge it with `View.ack(id)`).
    #[pyo3(get)]
    id: u64,
    /// The join key's value.
    #[pyo3(get)]
    key: String,
    /// A member was invalidated or expired (the spec's liveness policy pins it).
    #[pyo3(get)]
    invalid: bool,
    /// Per member, the name of the source it came from (the spec's `name`).
    #[pyo3(get)]
    sources: Vec<String>,
    /// Per member, where it lives: `topic/partition/offset`.
    #[pyo3(get)]
    refs: Vec<String>,
    /// Per member, the item (None: it could not be read back).
    #[pyo3(get)]
    members: Vec<Option<Py<Item>>>,
}

#[pymethods]
impl ViewItem {
    fn __len__(&self) -> usize {
        self.members.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<ViewItem seq={} key={:?} {} member(s){}>",
            self.seq,
            self.key,
            self.members.len(),
            if self.invalid { " invalid" } else { "" }
        )
    }
}

/// A view running in this process: `poll` for view items, `ack` each once
/// consumed (its members are held until then).
#[pyclass(module = "pydiaspora._native", frozen)]
pub struct View {
    inner: Arc<tokio::sync::Mutex<Option<VView>>>,
    spec: ViewSpec,
}

impl View {
    pub fn start(
        py: Python<'_>,
        client: &diaspora_fabric::Client,
        spec: ViewSpec,
        start: StartFrom,
        invalidations: Option<String>,
    ) -> PyResult<View> {
        let client = client.clone();
        let s = spec.clone();
        let v = wait(py, async move {
            let opts = ViewOptions {
                start,
                invalidations,
                ..ViewOptions::default()
            };
            VView::start(&client, s, opts).await
        })?
        .map_err(view_err)?;
        Ok(View {
            inner: Arc::new(tokio::sync::Mutex::new(Some(v))),
            spec,
        })
    }

    fn wrap(&self, py: Python<'_>, d: VDelivery) -> PyResult<ViewItem> {
        let mut sources = Vec::with_capacity(d.item.members.len());
        let mut refs = Vec::with_capacity(d.item.members.len());
        for m in &d.item.members {
            let src = self.spec.sources.get(m.source as usize);
            sources.push(src.map(|s| s.name.clone()).unwrap_or_default());
            let topic = src.map(|s| s.topic.as_str()).unwrap_or("?");
            refs.push(format!("{topic}/{}/{}", m.partition, m.offset));
        }
        let members = d
            .members
            .into_iter()
            .map(|m| {
                m.map(|c| Py::new(py, Item::new(Arc::unwrap_or_clone(c) as ConsumedItem)))
                    .transpose()
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(ViewItem {
            seq: d.seq,
            id: d.item.id,
            key: d.item.key,
            invalid: d.invalid,
            sources,
            refs,
            members,
        })
    }
}

fn closed() -> PyErr {
    ShutDown::new_err("the view is closed")
}

#[pymethods]
impl View {
    /// The view's name (from its spec).
    #[getter]
    fn name(&self) -> &str {
        &self.spec.name
    }

    /// The next view item, waiting at most `timeout` seconds; None if none was ready.
    #[pyo3(signature = (timeout = 1.0))]
    fn poll(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<ViewItem>> {
        let t = seconds(Some(timeout))?.unwrap_or_default();
        let inner = self.inner.clone();
        let r = wait(py, async move {
            match inner.lock().await.as_mut() {
                Some(v) => Some(v.next(t).await),
                None => None,
            }
        })?
        .ok_or_else(closed)?
        .map_err(view_err)?;
        r.map(|d| self.wrap(py, d)).transpose()
    }

    /// Done with view item `id`: its members are released. False if it was
    /// not delivered (or already acknowledged).
    fn ack(&self, py: Python<'_>, id: u64) -> PyResult<bool> {
        let inner = self.inner.clone();
        wait(
            py,
            async move { inner.lock().await.as_mut().map(|v| v.ack(id)) },
        )?
        .ok_or_else(closed)
    }

    /// View items delivered before that are no longer valid: [(id, cause)].
    fn retractions(&self, py: Python<'_>) -> PyResult<Vec<(u64, String)>> {
        let inner = self.inner.clone();
        wait(py, async move {
            inner.lock().await.as_mut().map(|v| {
                v.take_retractions()
                    .into_iter()
                    .map(|r| (r.id, r.cause))
                    .collect()
            })
        })?
        .ok_or_else(closed)
    }

    /// Stops the view.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        let r = wait(py, async move {
            match inner.lock().await.take() {
                Some(v) => Some(v.close().await),
                None => None,
            }
        })?;
        if let Some(r) = r {
            r.map_err(view_err)?;
        }
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: PyObject,
        _v: PyObject,
        _tb: PyObject,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}
