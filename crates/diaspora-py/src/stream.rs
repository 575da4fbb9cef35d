//! QoS streams from Python: a producer and a consumer that share a policy
//! file (rate, latency bound, buffer tiers, flow mode, reductions, replay;
//! see `diaspora_stream::policy`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use diaspora_fabric::item::ConsumedItem;
use diaspora_stream::{Policy, QosConsumer, QosItem, QosProducer, Sent, StreamError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::errors::{self, InvalidRequest, ShutDown};
use crate::item::{self, Extras, Item};
use crate::runtime::{seconds, wait, wait_bounded};
use crate::to_py;

/// A stream error as a Python exception: fabric errors keep their classes.
pub fn stream_err(e: StreamError) -> PyErr {
    match e {
        StreamError::Fabric(f) => errors::fabric(f),
        StreamError::Policy(p) => InvalidRequest::new_err(format!("policy: {p}")),
        StreamError::TooLarge(t) => errors::LimitExceeded::new_err(t.to_string()),
        StreamError::MissingTopic(..) | StreamError::NoPartition { .. } => {
            errors::UnknownTopic::new_err(e.to_string())
        }
        e => errors::DiasporaError::new_err(e.to_string()),
    }
}

/// Reads a policy: a TOML file path, or None for the defaults.
pub fn policy(path: Option<PathBuf>) -> PyResult<Policy> {
    match path {
        None => Ok(Policy::default()),
        Some(p) => Policy::from_file(&p)
            .map_err(|e| InvalidRequest::new_err(format!("policy {}: {e}", p.display()))),
    }
}

/// The producer side of a QoS stream on one partition: `send` returns what
/// the policy decided — ("accepted", seq), ("aggregating", None),
/// ("decimated", n) or ("shed", n).
#[pyclass(module = "pydiaspora._native", frozen)]
pub struct StreamProducer {
    inner: Arc<tokio::sync::Mutex<Option<QosProducer>>>,
    topic: String,
    _recorder: Option<Arc<diaspora_provenance::lineage::LineageRecorder>>,
}

impl StreamProducer {
    pub fn start(
        py: Python<'_>,
        client: &diaspora_fabric::Client,
        topic: String,
        partition: u32,
        policy: Policy,
        recorder: Option<Arc<diaspora_provenance::lineage::LineageRecorder>>,
    ) -> PyResult<StreamProducer> {
        let client = client.clone();
        let t = topic.clone();
        let hook = recorder.as_ref().map(|r| r.hook());
        let p = wait(py, async move {
            let p = QosProducer::new(&client, &t, partition, policy).await?;
            Ok::<_, StreamError>(match hook {
                Some(h) => p.with_ack_hook(h),
                None => p,
            })
        })?
        .map_err(stream_err)?;
        Ok(StreamProducer {
            inner: Arc::new(tokio::sync::Mutex::new(Some(p))),
            topic,
            _recorder: recorder,
        })
    }
}

fn closed(topic: &str) -> PyErr {
    ShutDown::new_err(format!("the stream on {topic} is closed"))
}

#[pymethods]
impl StreamProducer {
    /// The data topic.
    #[getter]
    fn topic(&self) -> &str {
        &self.topic
    }

    /// Offers one item to the stream (payload and keywords as
    /// `Producer.send`, without `partition`: the stream has one). Waits
    /// only when the policy's flow mode is backpressure and the buffers
    /// are full.
    #[pyo3(signature = (payload, **options),
        text_signature = "(payload, *, metadata=None, headers=None, key=None, sources=None, activity=None, model_versions=None, timestamp_us=None)")]
    fn send<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let it = item::build(payload, Extras::from_kwargs(options)?)?;
        let inner = self.inner.clone();
        let sent = wait(py, async move {
            let mut g = inner.lock().await;
            match g.as_mut() {
                Some(p) => Some(p.send(it).await),
                None => None,
            }
        })?
        .ok_or_else(|| closed(&self.topic))?
        .map_err(stream_err)?;
        let (what, n): (&str, Option<u64>) = match sent {
            Sent::Accepted(s) => ("accepted", Some(s)),
            Sent::Aggregating => ("aggregating", None),
            Sent::Decimated(n) => ("decimated", Some(n)),
            Sent::Shed(n) => ("shed", Some(n)),
        };
        PyTuple::new(
            py,
            [
                what.into_pyobject(py)?.into_any(),
                n.into_pyobject(py)?.into_any(),
            ],
        )
    }

    /// Waits (at most `timeout` seconds) until every accepted item is acknowledged.
    #[pyo3(signature = (timeout = 30.0))]
    fn flush(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let t = seconds(Some(timeout))?.unwrap_or(Duration::from_secs(30));
        let inner = self.inner.clone();
        wait_bounded(py, move || async move {
            let g = inner.lock().await;
            match g.as_ref() {
                Some(p) => Some(p.flush(t).await),
                None => None,
            }
        })
        .ok_or_else(|| closed(&self.topic))?
        .map_err(stream_err)
    }

    /// The producer's figures (accepted, acknowledged, reduced, shed,
    /// spilled, replayed, …) as a dict.
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        let r = wait(py, async move {
            inner.lock().await.as_ref().map(|p| p.report())
        })?
        .ok_or_else(|| closed(&self.topic))?;
        to_py(py, &r)
    }

    /// Flushes (at most `timeout` seconds), stops, and returns the final figures.
    #[pyo3(signature = (timeout = 30.0))]
    fn close<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Option<Bound<'py, PyAny>>> {
        let t = seconds(Some(timeout))?.unwrap_or(Duration::from_secs(30));
        let inner = self.inner.clone();
        let r = wait_bounded(py, move || async move {
            match inner.lock().await.take() {
                Some(p) => Some(p.close(t).await),
                None => None,
            }
        });
        if let Some(rec) = &self._recorder {
            py.allow_threads(|| rec.flush()).map_err(errors::prov)?;
        }
        match r {
            None => Ok(None),
            Some(r) => Ok(Some(to_py(py, &r.map_err(stream_err)?)?)),
        }
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
        self.close(py, 30.0)?;
        Ok(false)
    }
}

/// An item from a QoS stream: the `Item`, and what the stream knows of it.
#[pyclass(module = "pydiaspora._native", frozen)]
pub struct StreamItem {
    /// The item (for a reconstructed substitute, which was never stored,
    /// `item.offset` is the offset the original would have had: see `stored`).
    #[pyo3(get)]
    item: Py<Item>,
    /// The stream's sequence number of the item.
    #[pyo3(get)]
    seq: u64,
    /// `"original"`, `"reduced:METHOD"` or `"reconstructed:METHOD"`.
    #[pyo3(get)]
    quality: String,
    /// It came from the producer's replay buffers.
    #[pyo3(get)]
    replayed: bool,
    /// An original delivered after its substitute.
    #[pyo3(get)]
    supersedes: bool,
    /// It was read from the fabric (False for a reconstructed substitute).
    #[pyo3(get)]
    stored: bool,
}

#[pymethods]
impl StreamItem {
    fn __repr__(&self) -> String {
        format!("<StreamItem seq={} {}>", self.seq, self.quality)
    }
}

/// The consumer side of a QoS stream: items in sequence, gaps filled per
/// the policy (reconstructed substitutes, marked as such), replays asked
/// for. With `checkpoint`, the position is kept in that file and a restart
/// resumes from it.
#[pyclass(module = "pydiaspora._native", frozen)]
pub struct StreamConsumer {
    inner: Arc<tokio::sync::Mutex<Option<QosConsumer>>>,
    topic: Arc<str>,
}

impl StreamConsumer {
    pub fn start(
        py: Python<'_>,
        client: &diaspora_fabric::Client,
        topic: String,
        partitions: Vec<u32>,
        name: String,
        policy: Policy,
        checkpoint: Option<PathBuf>,
    ) -> PyResult<StreamConsumer> {
        let client = client.clone();
        let t = topic.clone();
        let c = wait(py, async move {
            QosConsumer::new(
                &client,
                &t,
                &partitions,
                &name,
                policy,
                checkpoint.as_deref(),
            )
            .await
        })?
        .map_err(stream_err)?;
        Ok(StreamConsumer {
            inner: Arc::new(tokio::sync::Mutex::new(Some(c))),
            topic: topic.into(),
        })
    }

    fn wrap(&self, py: Python<'_>, q: QosItem) -> PyResult<StreamItem> {
        let quality = q.quality();
        let c = ConsumedItem {
            topic: self.topic.clone(),
            partition: q.partition,
            offset: q.offset.unwrap_or(0),
            payload_bytes: q.item.payload.len() as u64,
            record_bytes: 0,
            item: q.item,
        };
        Ok(StreamItem {
            item: Py::new(py, Item::new(c))?,
            seq: q.seq,
            quality,
            replayed: q.replayed,
            supersedes: q.supersedes,
            stored: q.offset.is_some(),
        })
    }
}

#[pymethods]
impl StreamConsumer {
    /// The next item in sequence, waiting at most `timeout` seconds; None if none came.
    #[pyo3(signature = (timeout = 1.0))]
    fn poll(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<StreamItem>> {
        let t = seconds(Some(timeout))?.unwrap_or_default();
        let inner = self.inner.clone();
        let r = wait(py, async move {
            match inner.lock().await.as_mut() {
                Some(c) => Some(c.next(t).await),
                None => None,
            }
        })?
        .ok_or_else(|| closed(&self.topic))?
        .map_err(stream_err)?;
        r.map(|q| self.wrap(py, q)).transpose()
    }

    /// The consumer's figures (delivered, gaps, substitutes, replays, …) as a dict.
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        let r = wait(py, async move {
            inner.lock().await.as_ref().map(|c| c.report())
        })?
        .ok_or_else(|| closed(&self.topic))?;
        to_py(py, &r)
    }

    /// Writes the checkpoint now (given `checkpoint`; it is also written on close).
    fn checkpoint(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        wait(py, async move {
            inner.lock().await.as_mut().map(|c| c.write_checkpoint())
        })?
        .ok_or_else(|| closed(&self.topic))?
        .map_err(stream_err)
    }

    /// Stops; returns the final figures.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let inner = self.inner.clone();
        let r = wait(py, async move {
            match inner.lock().await.take() {
                Some(c) => Some(c.close().await),
                None => None,
            }
        })?;
        match r {
            None => Ok(None),
            Some(r) => Ok(Some(to_py(py, &r.map_err(stream_err)?)?)),
        }
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
