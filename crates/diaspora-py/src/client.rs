//! Connections, producers and consumers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diaspora_fabric::item::{meta, AckedItem, ItemRef};
use diaspora_fabric::{
    ensure_topic, AdminClient, ClientConfig, Compression, ConsumerConfig, Delivered as FDelivered,
    FabricError, NodeConfig, ProducerConfig, StartFrom, TopicSettings,
};
use diaspora_provenance::lineage::{LineageRecorder, RecorderConfig};
use diaspora_provenance::Provenance;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tokio::sync::Notify;

use crate::errors::{self, InvalidRequest, ShutDown};
use crate::item::{self, take_kwarg, Extras, Item};
use crate::runtime::{rt, seconds, wait, wait_for};

fn parse_addr(what: &str, s: &str) -> PyResult<SocketAddr> {
    s.parse().map_err(|_| {
        InvalidRequest::new_err(format!("{what} {s:?} is not HOST:PORT with an IP address"))
    })
}

/// A node running inside this process (the embedded mode): for notebooks,
/// tests and examples that need no server started by hand. Its topics live
/// in `data_dir`, as `diaspora serve --data-dir` keeps them.
#[pyclass(module = "pydiaspora._native")]
pub struct Node {
    node: Option<diaspora_fabric::Node>,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    ca: PathBuf,
}

#[pymethods]
impl Node {
    /// Starts a node keeping its data in `data_dir` (created if missing),
    /// listening on `listen` (QUIC) and `admin` (gRPC); port 0 picks a free one.
    #[new]
    #[pyo3(signature = (data_dir, *, listen = "127.0.0.1:0", admin = "127.0.0.1:0"))]
    fn new(py: Python<'_>, data_dir: PathBuf, listen: &str, admin: &str) -> PyResult<Node> {
        let mut cfg = NodeConfig::new(&data_dir);
        cfg.listen = parse_addr("listen", listen)?;
        cfg.admin_listen = Some(parse_addr("admin", admin)?);
        let node = wait(py, diaspora_fabric::Node::start(cfg))?.map_err(errors::fabric)?;
        Ok(Node {
            addr: node.data_addr(),
            admin: node.admin_addr(),
            ca: node.ca_file(),
            node: Some(node),
        })
    }

    /// The QUIC data-plane address, `HOST:PORT`.
    #[getter]
    fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The gRPC admin address, `HOST:PORT`.
    #[getter]
    fn admin_addr(&self) -> Option<String> {
        self.admin.map(|a| a.to_string())
    }

    /// The CA file clients verify the node with.
    #[getter]
    fn ca(&self) -> PathBuf {
        self.ca.clone()
    }

    /// A client of this node.
    fn client(&self, py: Python<'_>) -> PyResult<Client> {
        if self.node.is_none() {
            return Err(ShutDown::new_err("the node is closed"));
        }
        Client::connect(py, ClientConfig::new(self.addr, &self.ca), self.admin)
    }

    /// Creates a topic (or finds it with the same partition count).
    #[pyo3(signature = (name, partitions = 1))]
    fn create_topic(&self, py: Python<'_>, name: &str, partitions: u32) -> PyResult<bool> {
        let node = self
            .node
            .as_ref()
            .ok_or_else(|| ShutDown::new_err("the node is closed"))?;
        let broker = node.broker().clone();
        let r = wait(py, async move {
            ensure_topic(&broker, name, &TopicSettings::with_partitions(partitions)).await
        })?
        .map_err(errors::fabric)?;
        Ok(r == diaspora_fabric::Ensured::Created)
    }

    /// Stops the node (its data stays in the directory).
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(n) = self.node.take() {
            wait(py, n.shutdown())?;
        }
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &mut self,
        py: Python<'_>,
        _t: PyObject,
        _v: PyObject,
        _tb: PyObject,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("<Node quic://{} ca={}>", self.addr, self.ca.display())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(n) = self.node.take() {
            rt().block_on(n.shutdown());
        }
    }
}

/// A connection to a node: its data plane (QUIC) and, given `admin`, its
/// admin plane (topics). Cheap to share between threads.
#[pyclass(module = "pydiaspora._native", frozen)]
pub struct Client {
    client: diaspora_fabric::Client,
    admin_addr: Option<SocketAddr>,
    admin: Arc<tokio::sync::Mutex<Option<AdminClient>>>,
}

impl Client {
    fn connect(py: Python<'_>, cfg: ClientConfig, admin: Option<SocketAddr>) -> PyResult<Client> {
        let client = wait(py, diaspora_fabric::Client::connect(cfg))?.map_err(errors::fabric)?;
        Ok(Client {
            client,
            admin_addr: admin,
            admin: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// Runs `f` with the admin client, connecting it on first use.
    fn with_admin<T, F>(&self, py: Python<'_>, f: F) -> PyResult<T>
    where
        T: Send,
        F: for<'a> FnOnce(
                &'a mut AdminClient,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<T, FabricError>> + Send + 'a>,
            > + Send,
    {
        let Some(addr) = self.admin_addr else {
            return Err(InvalidRequest::new_err(
                "this client has no admin address: pass admin='HOST:PORT' to Client()",
            ));
        };
        let cfg = self.client.config().clone();
        let slot = self.admin.clone();
        wait(py, async move {
            let mut g = slot.lock().await;
            if g.is_none() {
                *g = Some(
                    AdminClient::connect_as(
                        addr,
                        &cfg.ca_file,
                        cfg.identity.as_ref(),
                        cfg.token.as_deref(),
                    )
                    .await?,
                );
            }
            f(g.as_mut().expect("connected above")).await
        })?
        .map_err(errors::fabric)
    }

    async fn partition_ids(
        client: &diaspora_fabric::Client,
        topic: &str,
    ) -> Result<Vec<u32>, FabricError> {
        let m = client.metadata(topic).await?;
        Ok(m.partitions.iter().map(|p| p.partition).collect())
    }
}

#[pymethods]
impl Client {
    /// Connects to the node at `addr` (its QUIC data plane), verifying it
    /// with the CA in `ca`. Authenticate with a client certificate
    /// (`cert` and `key`, from `diaspora certs client`) and/or a bearer
    /// `token` (`diaspora token create`; default: $DIASPORA_TOKEN, as the
    /// command line reads it); `admin` is the node's admin address, needed
    /// for creating and listing topics.
    #[new]
    #[pyo3(signature = (addr = "127.0.0.1:7400", ca = PathBuf::from("diaspora-data/certs/ca.pem"), *,
        admin = None, cert = None, key = None, token = None, server_name = "localhost",
        connections = None, connect_timeout = 5.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        addr: &str,
        ca: PathBuf,
        admin: Option<&str>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        token: Option<String>,
        server_name: &str,
        connections: Option<usize>,
        connect_timeout: f64,
    ) -> PyResult<Client> {
        let mut cfg = ClientConfig::new(parse_addr("addr", addr)?, ca);
        cfg.server_name = server_name.into();
        if let Some(n) = connections {
            if n == 0 || n > 64 {
                return Err(InvalidRequest::new_err("connections must be 1..=64"));
            }
            cfg.connections = n;
        }
        cfg.connect_timeout = seconds(Some(connect_timeout))?.unwrap_or(Duration::from_secs(5));
        cfg.identity = match (cert, key) {
            (Some(cert), Some(key)) => Some(diaspora_fabric::tls::ClientIdentity { cert, key }),
            (None, None) => None,
            _ => {
                return Err(InvalidRequest::new_err(
                    "a client certificate needs both cert= and key=",
                ))
            }
        };
        cfg.token = token.or_else(|| {
            std::env::var("DIASPORA_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
        });
        let admin = admin.map(|a| parse_addr("admin", a)).transpose()?;
        Client::connect(py, cfg, admin)
    }

    /// A producer of `topic`. With `provenance` (a store URL: a SQLite
    /// path or postgres://…), every acknowledged item is recorded there with
    /// its lineage (`sources`, `activity`, `model_versions`), and metadata
    /// values of `tag_keys` as tags.
    #[pyo3(signature = (topic, *, linger_ms = None, batch_bytes = None, buffer_bytes = None,
        compression = None, provenance = None, tag_keys = None))]
    #[allow(clippy::too_many_arguments)]
    fn producer(
        &self,
        py: Python<'_>,
        topic: String,
        linger_ms: Option<f64>,
        batch_bytes: Option<usize>,
        buffer_bytes: Option<usize>,
        compression: Option<&str>,
        provenance: Option<String>,
        tag_keys: Option<Vec<String>>,
    ) -> PyResult<Producer> {
        let mut cfg = ProducerConfig::new(topic.clone());
        if let Some(ms) = linger_ms {
            cfg.linger = seconds(Some(ms / 1000.0))?.unwrap_or_default();
        }
        if let Some(b) = batch_bytes {
            cfg.batch_bytes_max = b.max(1);
        }
        if let Some(b) = buffer_bytes {
            cfg.buffer_bytes_max = b.max(1);
        }
        if let Some(c) = compression {
            cfg.compression = compression_of(c)?;
        }
        let tag_keys = tag_keys.unwrap_or_default();
        let recorder = match provenance {
            None => None,
            Some(url) => {
                let prov = py
                    .allow_threads(|| Provenance::open(&url))
                    .map_err(errors::prov)?;
                let config = RecorderConfig {
                    tag_keys: tag_keys.clone(),
                    ..RecorderConfig::default()
                };
                Some(Arc::new(LineageRecorder::start(prov, config)))
            }
        };
        let client = self.client.clone();
        let p = wait(py, async move {
            diaspora_fabric::Producer::new(&client, cfg).await
        })?
        .map_err(errors::fabric)?;
        Ok(Producer {
            inner: parking_lot::Mutex::new(Some(Arc::new(p))),
            topic,
            recorder,
            tag_keys,
            pending: Arc::new(Pending::default()),
        })
    }

    /// A consumer of `topic`. In a `group`, the node shares the topic's
    /// partitions among the group's members and keeps their committed
    /// positions; without one it reads `partitions` (default: all). A
    /// partition without a committed position starts at `start`:
    /// "earliest", "latest" or an offset.
    #[pyo3(signature = (topic, *, group = None, partitions = None, start = None,
        metadata_only = false, prefetch_bytes = None, session_timeout = None))]
    #[allow(clippy::too_many_arguments)]
    fn consumer(
        &self,
        py: Python<'_>,
        topic: String,
        group: Option<String>,
        partitions: Option<Vec<u32>>,
        start: Option<&Bound<'_, PyAny>>,
        metadata_only: bool,
        prefetch_bytes: Option<usize>,
        session_timeout: Option<f64>,
    ) -> PyResult<Consumer> {
        let mut cfg = ConsumerConfig::new(topic.clone());
        if let Some(s) = start {
            cfg.start = start_from(s)?;
        }
        cfg.metadata_only = metadata_only;
        if let Some(b) = prefetch_bytes {
            cfg.prefetch_bytes_max = b.max(1);
        }
        if let Some(t) = seconds(session_timeout)? {
            cfg.session_timeout = t;
        }
        if group.is_some() && partitions.is_some() {
            return Err(InvalidRequest::new_err(
                "a group consumer gets its partitions from the group: give group= or partitions=, not both",
            ));
        }
        let client = self.client.clone();
        let c = wait(py, async move {
            match group {
                Some(g) => diaspora_fabric::Consumer::subscribe(&client, cfg.group(g)).await,
                None => {
                    let parts = match partitions {
                        Some(p) => p,
                        None => Client::partition_ids(&client, &cfg.topic).await?,
                    };
                    diaspora_fabric::Consumer::assign(&client, cfg, &parts).await
                }
            }
        })?
        .map_err(errors::fabric)?;
        Ok(Consumer {
            inner: Arc::new(tokio::sync::Mutex::new(Some(c))),
            topic,
        })
    }

    /// Creates the three topics a QoS stream on `topic` needs (`topic`,
    /// `topic.qos`, `topic.replay`), skipping those that exist; returns the
    /// names created. Needs the admin address.
    #[pyo3(signature = (topic, partitions = 1))]
    fn init_stream(&self, py: Python<'_>, topic: String, partitions: u32) -> PyResult<Vec<String>> {
        self.with_admin(py, move |a| {
            Box::pin(async move {
                let config = diaspora_proto::v1::TopicConfig {
                    partitions,
                    ..Default::default()
                };
                diaspora_stream::init_topics(a, &topic, config).await
            })
        })
    }

    /// The producer side of a QoS stream on `topic`/`partition`, under the
    /// policy in the TOML file `policy` (None: the defaults). With
    /// `provenance`, accepted items are recorded with their lineage.
    #[pyo3(signature = (topic, *, policy = None, partition = 0, provenance = None, tag_keys = None))]
    fn stream_producer(
        &self,
        py: Python<'_>,
        topic: String,
        policy: Option<PathBuf>,
        partition: u32,
        provenance: Option<String>,
        tag_keys: Option<Vec<String>>,
    ) -> PyResult<crate::stream::StreamProducer> {
        let policy = crate::stream::policy(policy)?;
        let recorder = match provenance {
            None => None,
            Some(url) => {
                let prov = py
                    .allow_threads(|| Provenance::open(&url))
                    .map_err(errors::prov)?;
                let config = RecorderConfig {
                    tag_keys: tag_keys.unwrap_or_default(),
                    ..RecorderConfig::default()
                };
                Some(Arc::new(LineageRecorder::start(prov, config)))
            }
        };
        crate::stream::StreamProducer::start(py, &self.client, topic, partition, policy, recorder)
    }

    /// The consumer side of a QoS stream on `topic` (its `partitions`;
    /// None: all), called `name`, under the policy in the TOML file
    /// `policy`. With `checkpoint` (a file), its position survives a restart.
    #[pyo3(signature = (topic, *, policy = None, partitions = None, name = "python", checkpoint = None))]
    fn stream_consumer(
        &self,
        py: Python<'_>,
        topic: String,
        policy: Option<PathBuf>,
        partitions: Option<Vec<u32>>,
        name: &str,
        checkpoint: Option<PathBuf>,
    ) -> PyResult<crate::stream::StreamConsumer> {
        let policy = crate::stream::policy(policy)?;
        crate::stream::StreamConsumer::start(
            py,
            &self.client,
            topic,
            partitions.unwrap_or_default(),
            name.to_string(),
            policy,
            checkpoint,
        )
    }

    /// A view over topics, joined as `spec` says (a view spec: a TOML file
    /// path or the TOML text). Sources start at `start` ("earliest",
    /// "latest" or an offset); with `invalidations` (a notice topic, e.g.
    /// "prov.invalidations"), invalidated members retract view items.
    #[pyo3(signature = (spec, *, start = None, invalidations = None))]
    fn view(
        &self,
        py: Python<'_>,
        spec: &str,
        start: Option<&Bound<'_, PyAny>>,
        invalidations: Option<String>,
    ) -> PyResult<crate::view::View> {
        let spec = crate::view::spec(spec)?;
        let start = match start {
            Some(s) => start_from(s)?,
            None => StartFrom::Earliest,
        };
        crate::view::View::start(py, &self.client, spec, start, invalidations)
    }

    /// Creates a topic with `partitions` partitions, or finds it with that
    /// count; True if it was created. Needs the admin address.
    #[pyo3(signature = (name, partitions = 1))]
    fn create_topic(&self, py: Python<'_>, name: String, partitions: u32) -> PyResult<bool> {
        let r = self.with_admin(py, move |a| {
            Box::pin(async move {
                ensure_topic(a, &name, &TopicSettings::with_partitions(partitions)).await
            })
        })?;
        Ok(r == diaspora_fabric::Ensured::Created)
    }

    /// The node's topic names. Needs the admin address.
    fn topics(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.with_admin(py, |a| Box::pin(a.list_topics()))
    }

    /// A topic's partitions: {partition: (first retained offset, next offset)}.
    fn partitions(&self, py: Python<'_>, topic: String) -> PyResult<BTreeMap<u32, (u64, u64)>> {
        let client = self.client.clone();
        let m = wait(py, async move { client.metadata(&topic).await })?.map_err(errors::fabric)?;
        Ok(m.partitions
            .iter()
            .map(|p| (p.partition, (p.start_offset, p.next_offset)))
            .collect())
    }

    /// Reads one item's payload by its location (`topic/partition/offset`).
    fn read_payload<'py>(
        &self,
        py: Python<'py>,
        location: &str,
    ) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let r = ItemRef::parse(location).ok_or_else(|| {
            InvalidRequest::new_err(format!("{location:?} is not topic/partition/offset"))
        })?;
        let client = self.client.clone();
        let b = wait(py, async move {
            client.read_payload(&r.topic, r.partition, r.offset).await
        })?
        .map_err(errors::fabric)?;
        Ok(pyo3::types::PyBytes::new(py, &b))
    }

    /// Closes the connections.
    fn close(&self) {
        self.client.close();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, _t: PyObject, _v: PyObject, _tb: PyObject) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        format!("<Client quic://{}>", self.client.config().addr)
    }
}

/// A compression from Python: "none", "zstd" or "zstd:LEVEL".
fn compression_of(c: &str) -> PyResult<Compression> {
    let bad = || {
        InvalidRequest::new_err(format!(
            "compression {c:?} is none, zstd or zstd:LEVEL (1..=22)"
        ))
    };
    match c.split_once(':') {
        None if c == "none" => Ok(Compression::None),
        None if c == "zstd" => Ok(Compression::Zstd { level: 3 }),
        Some(("zstd", l)) => match l.parse::<i32>() {
            Ok(level @ 1..=22) => Ok(Compression::Zstd { level }),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// A start position from Python: "earliest", "latest" or an offset.
fn start_from(s: &Bound<'_, PyAny>) -> PyResult<StartFrom> {
    if let Ok(n) = s.extract::<u64>() {
        return Ok(StartFrom::Offset(n));
    }
    let text: String = s
        .extract()
        .map_err(|_| InvalidRequest::new_err("start is 'earliest', 'latest' or an offset"))?;
    text.parse().map_err(InvalidRequest::new_err)
}

/// Where an acknowledged item landed.
#[pyclass(module = "pydiaspora._native", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct Delivered {
    #[pyo3(get)]
    topic: String,
    #[pyo3(get)]
    partition: u32,
    #[pyo3(get)]
    offset: u64,
}

impl Delivered {
    /// `topic/partition/offset`.
    pub fn location_text(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

#[pymethods]
impl Delivered {
    /// `topic/partition/offset`.
    #[getter(r#ref)]
    fn location(&self) -> String {
        self.location_text()
    }

    fn __repr__(&self) -> String {
        format!("<Delivered {}>", self.location_text())
    }
}

/// An acknowledgement as every waiter on it sees it.
type Settled = Result<Delivered, Arc<FabricError>>;
/// The acknowledgement, awaitable by any number of waiters.
type Settle = Shared<BoxFuture<'static, Settled>>;

/// Deliveries not yet recorded in provenance (with a recorder only).
#[derive(Default)]
struct Pending {
    count: AtomicU64,
    settled: Notify,
}

/// The acknowledgement of one sent item: wait for it with `result()`,
/// or `await` it with `wait_async()`.
#[pyclass(module = "pydiaspora._native", frozen)]
pub struct Delivery {
    fut: Settle,
}

#[pymethods]
impl Delivery {
    /// Whether the node has answered (acknowledged or failed).
    fn done(&self) -> bool {
        self.fut.clone().now_or_never().is_some()
    }

    /// Waits for the acknowledgement (at most `timeout` seconds; None:
    /// as long as it takes) and returns where the item landed, or raises
    /// the error the node answered with; `TimeoutError` when time runs out.
    #[pyo3(signature = (timeout = None))]
    fn result(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Delivered> {
        match wait_for(py, seconds(timeout)?, self.fut.clone())? {
            Some(Ok(d)) => Ok(d),
            Some(Err(e)) => Err(errors::fabric_ref(&e)),
            None => Err(pyo3::exceptions::PyTimeoutError::new_err(
                "no acknowledgement within the timeout",
            )),
        }
    }

    /// An awaitable of the acknowledgement (asyncio).
    fn wait_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let fut = self.fut.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            fut.await.map_err(|e| errors::fabric_ref(&e))
        })
    }

    /// `await delivery` is `await delivery.wait_async()`.
    fn __await__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.wait_async(py)?.call_method0("__await__")
    }

    fn __repr__(&self) -> String {
        match self.fut.peek() {
            None => "<Delivery pending>".into(),
            Some(Ok(d)) => format!("<Delivery {}>", d.location_text()),
            Some(Err(e)) => format!("<Delivery failed: {e}>"),
        }
    }
}

/// Sends items to one topic: batched, pipelined and idempotent (a retried
/// batch is never appended twice).
#[pyclass(module = "pydiaspora._native", frozen)]
pub struct Producer {
    inner: parking_lot::Mutex<Option<Arc<diaspora_fabric::Producer>>>,
    topic: String,
    recorder: Option<Arc<LineageRecorder>>,
    tag_keys: Vec<String>,
    pending: Arc<Pending>,
}

impl Producer {
    fn producer(&self) -> PyResult<Arc<diaspora_fabric::Producer>> {
        self.inner
            .lock()
            .clone()
            .ok_or_else(|| ShutDown::new_err(format!("the producer of {} is closed", self.topic)))
    }

    /// Queues one item and returns its acknowledgement. With provenance,
    /// a task records the item as soon as it is acknowledged (whether or
    /// not anyone waits for it), and the acknowledgement settles after that.
    async fn enqueue(
        p: Arc<diaspora_fabric::Producer>,
        partition: Option<u32>,
        it: diaspora_proto::v1::Item,
        recorder: Option<Arc<LineageRecorder>>,
        tags: Vec<(String, String)>,
        pending: Arc<Pending>,
    ) -> Result<Settle, FabricError> {
        let topic: Arc<str> = p.topic().into();
        let lineage = recorder.as_ref().and_then(|_| it.lineage.clone());
        let quality = recorder.as_ref().and_then(|_| it.quality.clone());
        let timestamp_us = it.timestamp_us;
        let delivery = match partition {
            Some(n) => p.send_to(n, it).await?,
            None => p.send(it).await?,
        };
        let place = move |d: FDelivered| Delivered {
            topic: topic.to_string(),
            partition: d.partition,
            offset: d.offset,
        };
        let Some(rec) = recorder else {
            return Ok(async move { delivery.await.map(place).map_err(Arc::new) }
                .boxed()
                .shared());
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<Settled>();
        pending.count.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let r = delivery.await;
            if let Ok(d) = &r {
                let topic: Arc<str> = p.topic().into();
                rec.record(AckedItem {
                    item: ItemRef::new(topic, d.partition, d.offset),
                    timestamp_us,
                    lineage,
                    quality,
                    tags,
                });
            }
            let _ = tx.send(r.map(place).map_err(Arc::new));
            if pending.count.fetch_sub(1, Ordering::SeqCst) == 1 {
                pending.settled.notify_waiters();
            }
        });
        Ok(
            async move { rx.await.unwrap_or(Err(Arc::new(FabricError::Shutdown))) }
                .boxed()
                .shared(),
        )
    }

    fn tags(&self, it: &diaspora_proto::v1::Item) -> Vec<(String, String)> {
        self.tag_keys
            .iter()
            .filter_map(|k| {
                it.metadata
                    .get(k)
                    .and_then(meta::value_text)
                    .map(|v| (k.clone(), v.into_owned()))
            })
            .collect()
    }

    async fn settle_all(pending: Arc<Pending>) {
        loop {
            let n = pending.settled.notified();
            if pending.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            n.await;
        }
    }
}

#[pymethods]
impl Producer {
    /// The topic.
    #[getter]
    fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends one item and returns its `Delivery` at once (it waits only
    /// while the producer's buffer is full). The payload is bytes, a
    /// bytes-like object, a str, None, or a NumPy array (sent with its
    /// dtype and shape as `ndarray.dtype` / `ndarray.shape` metadata, which
    /// `Item.array()` reads back). `metadata` values are str, int, float,
    /// bool or bytes; `sources` are Items or `topic/partition/offset`
    /// strings this item was derived from; `partition` picks one (else
    /// `key` or round robin decides).
    #[pyo3(signature = (payload, **options),
        text_signature = "(payload, *, metadata=None, headers=None, key=None, partition=None, sources=None, activity=None, model_versions=None, timestamp_us=None)")]
    fn send<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Delivery> {
        let partition = take_kwarg(options, "partition")?;
        let it = item::build(payload, Extras::from_kwargs(options)?)?;
        let tags = self.tags(&it);
        let p = self.producer()?;
        let fut = wait(
            py,
            Producer::enqueue(
                p,
                partition,
                it,
                self.recorder.clone(),
                tags,
                self.pending.clone(),
            ),
        )?
        .map_err(errors::fabric)?;
        Ok(Delivery { fut })
    }

    /// Sends one item and waits (at most `timeout` seconds) for its
    /// acknowledgement: the blocking form of `send(...).result()`.
    #[pyo3(signature = (payload, **options),
        text_signature = "(payload, *, metadata=None, headers=None, key=None, partition=None, sources=None, activity=None, model_versions=None, timestamp_us=None, timeout=None)")]
    fn send_wait<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Delivered> {
        let timeout = take_kwarg(options, "timeout")?;
        self.send(py, payload, options)?.result(py, timeout)
    }

    /// The asyncio form of `send_wait`: an awaitable of where the item landed.
    #[pyo3(signature = (payload, **options),
        text_signature = "(payload, *, metadata=None, headers=None, key=None, partition=None, sources=None, activity=None, model_versions=None, timestamp_us=None)")]
    fn send_async<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let partition = take_kwarg(options, "partition")?;
        let it = item::build(payload, Extras::from_kwargs(options)?)?;
        let tags = self.tags(&it);
        let p = self.producer()?;
        let rec = self.recorder.clone();
        let pending = self.pending.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let fut = Producer::enqueue(p, partition, it, rec, tags, pending)
                .await
                .map_err(errors::fabric)?;
            fut.await.map_err(|e| errors::fabric_ref(&e))
        })
    }

    /// Waits until every item sent so far is acknowledged (and, with
    /// provenance, recorded in the store).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let p = self.producer()?;
        let pending = self.pending.clone();
        wait(py, async move {
            p.flush().await?;
            Producer::settle_all(pending).await;
            Ok::<_, FabricError>(())
        })?
        .map_err(errors::fabric)?;
        if let Some(rec) = &self.recorder {
            py.allow_threads(|| rec.flush()).map_err(errors::prov)?;
        }
        Ok(())
    }

    /// Flushes, then stops the producer (sending after it raises ShutDown).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if self.inner.lock().is_none() {
            return Ok(());
        }
        self.flush(py)?;
        let Some(p) = self.inner.lock().take() else {
            return Ok(());
        };
        if let Ok(p) = Arc::try_unwrap(p) {
            wait(py, p.close())?.map_err(errors::fabric)?;
        }
        if let Some(rec) = &self.recorder {
            py.allow_threads(|| rec.close()).map_err(errors::prov)?;
        }
        Ok(())
    }

    /// Counters: items acknowledged and failed, batches retried and found duplicate, the first error.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let p = self.producer()?;
        let s = p.stats();
        let d = PyDict::new(py);
        d.set_item("acked", s.acked.load(Ordering::Relaxed))?;
        d.set_item("failed", s.failed.load(Ordering::Relaxed))?;
        d.set_item("retried_batches", s.retried_batches.load(Ordering::Relaxed))?;
        d.set_item(
            "duplicate_batches",
            s.duplicate_batches.load(Ordering::Relaxed),
        )?;
        d.set_item("first_error", s.first_error.lock().clone())?;
        Ok(d)
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

    fn __repr__(&self) -> String {
        format!("<Producer {}>", self.topic)
    }
}

type SharedConsumer = Arc<tokio::sync::Mutex<Option<diaspora_fabric::Consumer>>>;

/// Reads items from one topic; iterate over it (`for item in consumer`),
/// or `async for` in asyncio.
#[pyclass(module = "pydiaspora._native", frozen)]
pub struct Consumer {
    inner: SharedConsumer,
    topic: String,
}

fn closed(_topic: &str) -> FabricError {
    FabricError::Shutdown
}

async fn poll_one(
    c: SharedConsumer,
    topic: String,
    timeout: Option<Duration>,
) -> Result<Option<diaspora_fabric::item::ConsumedItem>, FabricError> {
    let mut g = c.lock().await;
    let c = g.as_mut().ok_or_else(|| closed(&topic))?;
    match timeout {
        Some(t) => c.poll(t).await,
        None => c.next().await.map(Some),
    }
}

#[pymethods]
impl Consumer {
    /// The topic.
    #[getter]
    fn topic(&self) -> &str {
        &self.topic
    }

    /// The next item, waiting at most `timeout` seconds (None: until one
    /// comes); None when none came in time.
    #[pyo3(signature = (timeout = None))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Item>> {
        let t = seconds(timeout)?;
        let r = wait(py, poll_one(self.inner.clone(), self.topic.clone(), t))?;
        Ok(r.map_err(errors::fabric)?.map(Item::new))
    }

    /// Up to `max_items` items: waits at most `timeout` seconds for the
    /// first, then takes what has arrived already (fewer Python round trips
    /// than `poll` at high rates).
    #[pyo3(signature = (max_items = 1024, timeout = None))]
    fn poll_many<'py>(
        &self,
        py: Python<'py>,
        max_items: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let t = seconds(timeout)?;
        let c = self.inner.clone();
        let topic = self.topic.clone();
        let items = wait(py, async move {
            let mut g = c.lock().await;
            let c = g.as_mut().ok_or_else(|| closed(&topic))?;
            let mut out = Vec::new();
            let first = match t {
                Some(t) => c.poll(t).await?,
                None => Some(c.next().await?),
            };
            if let Some(f) = first {
                out.push(f);
                while out.len() < max_items {
                    match c.poll(Duration::ZERO).await? {
                        Some(i) => out.push(i),
                        None => break,
                    }
                }
            }
            Ok::<_, FabricError>(out)
        })?
        .map_err(errors::fabric)?;
        item::items_list(py, items)
    }

    /// The asyncio form of `poll`.
    #[pyo3(signature = (timeout = None))]
    fn poll_async<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = seconds(timeout)?;
        let c = self.inner.clone();
        let topic = self.topic.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let r = poll_one(c, topic, t).await.map_err(errors::fabric)?;
            Ok(r.map(Item::new))
        })
    }

    /// Commits the positions of what was handed out so far (in a group:
    /// to the group, so a restarted member resumes after it).
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.inner.clone();
        let topic = self.topic.clone();
        wait(py, async move {
            let mut g = c.lock().await;
            g.as_mut().ok_or_else(|| closed(&topic))?.commit().await
        })?
        .map_err(errors::fabric)
    }

    /// The asyncio form of `commit`.
    fn commit_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        let topic = self.topic.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let mut g = c.lock().await;
            g.as_mut()
                .ok_or_else(|| closed(&topic))
                .map_err(errors::fabric)?
                .commit()
                .await
                .map_err(errors::fabric)
        })
    }

    /// Moves a partition's position: to an offset, or "earliest" / "latest".
    fn seek(&self, py: Python<'_>, partition: u32, to: &Bound<'_, PyAny>) -> PyResult<()> {
        let to = start_from(to)?;
        let c = self.inner.clone();
        let topic = self.topic.clone();
        wait(py, async move {
            let mut g = c.lock().await;
            let c = g.as_mut().ok_or_else(|| closed(&topic))?;
            match to {
                StartFrom::Offset(o) => c.seek(partition, o),
                to => c.seek_to(partition, to).await,
            }
        })?
        .map_err(errors::fabric)
    }

    /// The partitions this consumer reads now.
    fn assignment(&self, py: Python<'_>) -> PyResult<Vec<u32>> {
        let c = self.inner.clone();
        let topic = self.topic.clone();
        wait(py, async move {
            let g = c.lock().await;
            g.as_ref()
                .map(|c| c.assignment())
                .ok_or_else(|| closed(&topic))
        })?
        .map_err(errors::fabric)
    }

    /// The next offset to hand out, per partition.
    fn positions(&self, py: Python<'_>) -> PyResult<BTreeMap<u32, u64>> {
        let c = self.inner.clone();
        let topic = self.topic.clone();
        wait(py, async move {
            let g = c.lock().await;
            g.as_ref()
                .map(|c| c.positions().clone())
                .ok_or_else(|| closed(&topic))
        })?
        .map_err(errors::fabric)
    }

    /// Leaves the group (if any) and stops fetching. It does not commit:
    /// call `commit()` first to keep the position.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.inner.clone();
        wait(py, async move {
            if let Some(c) = c.lock().await.take() {
                c.close().await;
            }
        })
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Item>> {
        match wait(py, poll_one(self.inner.clone(), self.topic.clone(), None))? {
            Ok(it) => Ok(it.map(Item::new)),
            // Closed: the iteration ends (None makes StopIteration).
            Err(FabricError::Shutdown) => Ok(None),
            Err(e) => Err(errors::fabric(e)),
        }
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        let topic = self.topic.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            match poll_one(c, topic, None).await {
                Ok(Some(it)) => Ok(Item::new(it)),
                Ok(None) => Err(PyStopAsyncIteration::new_err(())),
                Err(FabricError::Shutdown) => Err(PyStopAsyncIteration::new_err(())),
                Err(e) => Err(errors::fabric(e)),
            }
        })
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

    fn __repr__(&self) -> String {
        format!("<Consumer {}>", self.topic)
    }
}
