//! The QoS producer: the shell around [`ProducerCore`]. It keeps the item
//! bytes (memory map and spill files), sends what the core dispatches with
//! the fabric producer, feeds acknowledgements back, runs the flow
//! controller, and serves replay requests from its history.
//!
//! One QoS producer owns one partition of a topic (a stream); run one per
//! partition for more.

use diaspora_proto::v1;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diaspora_fabric::client::Client;
use diaspora_fabric::consumer::{Consumer, ConsumerConfig, StartFrom};
use diaspora_fabric::item::{meta, Item, ItemRef};
use diaspora_fabric::producer::{Delivery, Producer, ProducerConfig};
use diaspora_fabric::FabricError;
use diaspora_proto::v1::quality::Kind;
use parking_lot::Mutex;
use prost::Message;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::control::{self, control_topic, replay_topic, Control};
use crate::core::flow::{FlowDecision, Signals};
use crate::core::producer::{AckOutcome, Admission, Place, ProducerCore, ProducerCounters};
use crate::policy::{Policy, Reduction};
use crate::reduce::{self, Aggregator};
use crate::spill::{SpillStore, RECORD_HEADER_BYTES};

/// A QoS stream error.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// From the fabric.
    #[error(transparent)]
    Fabric(#[from] FabricError),
    /// From the policy.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// From the spill tier.
    #[error(transparent)]
    Spill(#[from] crate::spill::SpillError),
    /// An item too large for the buffers.
    #[error(transparent)]
    TooLarge(#[from] crate::core::producer::TooLarge),
    /// An aggregation the policy asked for could not be done.
    #[error(transparent)]
    Reduce(#[from] crate::reduce::ReduceError),
    /// A topic the stream needs is missing.
    #[error("topic '{0}' does not exist: create the stream's topics with `diaspora stream init {1}` (or diaspora_stream::init_topics)")]
    MissingTopic(String, String),
    /// The stream's partition is not one of the topic's.
    #[error("partition {partition} of '{topic}' does not exist ({partitions} partitions)")]
    NoPartition {
        /// The data topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many the topic has.
        partitions: u32,
    },
    /// A spilled item could not be read back: it is lost, and the producer
    /// stops accepting items.
    #[error("spill tier lost item {seq}: {source}")]
    ItemLost {
        /// The item's sequence number.
        seq: u64,
        /// Why it could not be read.
        #[source]
        source: Arc<crate::spill::SpillError>,
    },
    /// [`QosProducer::flush`] ran out of time.
    #[error("{items} accepted items still unacknowledged after {timeout:?}")]
    Unacknowledged {
        /// Items still unacknowledged.
        items: usize,
        /// How long it waited.
        timeout: Duration,
    },
    /// A consumer checkpoint could not be read or written.
    #[error("checkpoint {}: {source}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A consumer checkpoint is not valid JSON of a checkpoint.
    #[error("checkpoint {}: {source}", path.display())]
    CheckpointFormat {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        #[source]
        source: serde_json::Error,
    },
}

/// What became of an item given to [`QosProducer::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Accepted under this sequence number; it will be delivered.
    Accepted(u64),
    /// Held for aggregation (part of the next aggregate).
    Aggregating,
    /// Reduced away by decimation (counted).
    Decimated(u64),
    /// Shed by the policy (counted).
    Shed(u64),
}

/// An acknowledgement of an accepted item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Acked {
    /// Sequence number.
    pub seq: u64,
    /// Partition.
    pub partition: u32,
    /// Offset in the fabric.
    pub offset: u64,
    /// The item's `id` metadata, if it had one.
    pub id: Option<u64>,
}

pub use diaspora_fabric::item::{AckHook, AckedItem};

/// Lineage captured per sequence number until its ack: sequence numbers
/// are dense and acks come nearly in order, so a deque indexed from the
/// oldest outstanding sequence does it in O(1).
#[derive(Default)]
struct LineageSlots {
    base: u64,
    slots: std::collections::VecDeque<Option<AckedItem>>,
}

impl LineageSlots {
    fn put(&mut self, seq: u64, a: AckedItem) {
        if self.slots.is_empty() {
            self.base = seq;
        }
        if seq < self.base {
            return; // cannot happen: sequences only grow
        }
        let i = (seq - self.base) as usize;
        while self.slots.len() <= i {
            self.slots.push_back(None);
        }
        self.slots[i] = Some(a);
    }

    fn take(&mut self, seq: u64) -> Option<AckedItem> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        let a = self.slots.get_mut(i)?.take();
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        a
    }
}

/// A metadata value as a provenance tag: its text
/// ([`meta::value_text`]); `raw` bytes are not passed.
fn tag_text(v: &v1::Value) -> Option<String> {
    match v.kind.as_ref()? {
        v1::value::Kind::Raw(_) => None,
        _ => meta::value_text(v).map(Cow::into_owned),
    }
}

/// Figures of a QoS producer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProducerReport {
    /// The core's counters.
    #[serde(flatten)]
    pub counters: ProducerCounters,
    /// Items compressed with zstd.
    pub compressed: u64,
    /// Encoded bytes of the items accepted, as they go out (after any
    /// reduction): what the stream puts on its link.
    pub accepted_bytes: u64,
    /// Aggregates made.
    pub aggregates: u64,
    /// Scale-up requests published.
    pub scale_up_requests: u64,
    /// Replay requests received.
    pub replay_requests: u64,
    /// Items published to the replay topic.
    pub replay_items: u64,
    /// Spill tier high-water mark, bytes.
    pub spill_high_water: u64,
    /// Memory cap, bytes.
    pub memory_bytes_max: u64,
    /// Largest number of reduction stages engaged.
    pub level_max: usize,
    /// Checks at which the controller found the stream congested.
    pub congested_checks: u64,
    /// Checks in all.
    pub checks: u64,
}

struct State {
    core: ProducerCore,
    mem: BTreeMap<u64, Item>,
    spill: Option<SpillStore>,
    signals: Option<Signals>,
    report: ProducerReport,
    agg: Vec<Item>,
    ids: BTreeMap<u64, u64>,
    /// Lineage captured at admission, by sequence, while an ack hook is set.
    lineage: LineageSlots,
    fatal: Option<Lost>,
}

/// An item the spill tier could not give back: the producer's fatal state.
struct Lost {
    seq: u64,
    source: Arc<crate::spill::SpillError>,
}

impl Lost {
    fn error(&self) -> StreamError {
        StreamError::ItemLost {
            seq: self.seq,
            source: self.source.clone(),
        }
    }
}

struct Shared {
    state: Mutex<State>,
    space: Notify,
    work: Notify,
    policy: Policy,
    topic: String,
    topic_arc: Arc<str>,
    partition: u32,
    origin: Instant,
    acks: Mutex<Option<mpsc::UnboundedSender<Acked>>>,
    hook: std::sync::OnceLock<Arc<dyn AckHook>>,
    closing: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn now(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    fn report(&self) -> ProducerReport {
        let st = self.state.lock();
        let mut r = st.report.clone();
        r.counters = st.core.counters().clone();
        if let Some(s) = &st.spill {
            r.spill_high_water = r.spill_high_water.max(s.used());
        }
        r
    }
}

/// A producer's figures and its state now, as a metrics collector reads
/// them ([`ProducerProbe::figures`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProducerFigures {
    /// The report (counters and high-water marks).
    #[serde(flatten)]
    pub report: ProducerReport,
    /// Memory-tier bytes in use now.
    pub memory_bytes: u64,
    /// `memory_bytes` over the memory cap (0..=1).
    pub memory_fill: f64,
    /// Spill-tier bytes in use now.
    pub spill_bytes: u64,
    /// Items accepted and not yet acknowledged.
    pub unacked: u64,
    /// 1 while the flow controller finds the stream congested, else 0.
    pub congested: u64,
    /// Reduction stages engaged now.
    pub stages: u64,
}

/// Reads a producer's figures from another task (a metrics collector)
/// without holding the producer; cheap to clone. It keeps the producer's
/// shared state alive, not its tasks: after the producer closes it reads
/// the final figures.
#[derive(Clone)]
pub struct ProducerProbe(Arc<Shared>);

impl ProducerProbe {
    /// The figures now.
    pub fn figures(&self) -> ProducerFigures {
        let report = self.0.report();
        let st = self.0.state.lock();
        let memory_bytes = st.core.memory_used();
        ProducerFigures {
            memory_fill: memory_bytes as f64 / (report.memory_bytes_max.max(1)) as f64,
            report,
            memory_bytes,
            spill_bytes: st.spill.as_ref().map_or(0, |s| s.used()),
            unacked: st.core.unacked() as u64,
            congested: st.core.flow().congested() as u64,
            stages: st.core.active_stages() as u64,
        }
    }
}

/// A QoS producer. See the module docs.
pub struct QosProducer {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    aggregator: Option<Box<dyn Aggregator>>,
}

fn fabric_config(topic: &str, policy: &Policy) -> ProducerConfig {
    let mut c = ProducerConfig::new(topic);
    c.buffer_bytes_max = policy.buffer.in_flight_bytes_max as usize * 2;
    c.retry_for = Duration::from_secs(10);
    c.in_flight_max = 8;
    c
}

impl QosProducer {
    /// Starts a QoS producer on `topic`/`partition` with `policy`. The
    /// stream's control and replay topics must exist (see [`crate::init_topics`]).
    pub async fn new(
        client: &Client,
        topic: &str,
        partition: u32,
        policy: Policy,
    ) -> Result<QosProducer, StreamError> {
        policy.validate()?;
        for t in [topic.to_string(), control_topic(topic), replay_topic(topic)] {
            client.metadata(&t).await.map_err(|e| match e {
                FabricError::Remote { .. } | FabricError::UnknownTopic(_) => {
                    StreamError::MissingTopic(t.clone(), topic.into())
                }
                e => e.into(),
            })?;
        }
        let data = Arc::new(Producer::new(client, fabric_config(topic, &policy)).await?);
        if partition >= data.partition_count() {
            return Err(StreamError::NoPartition {
                topic: topic.into(),
                partition,
                partitions: data.partition_count(),
            });
        }
        let mut ctl_cfg = ProducerConfig::new(control_topic(topic));
        ctl_cfg.retry_for = Duration::from_secs(5);
        let ctl = Arc::new(Producer::new(client, ctl_cfg).await?);
        let replay =
            Arc::new(Producer::new(client, fabric_config(&replay_topic(topic), &policy)).await?);
        let scale = match &policy.flow.scale_up_topic {
            Some(t) => Some(Arc::new(
                Producer::new(client, ProducerConfig::new(t)).await?,
            )),
            None => None,
        };
        let ctl_in = Consumer::assign(
            client,
            ConsumerConfig::new(control_topic(topic)).start(StartFrom::Latest),
            &[0],
        )
        .await?;
        let spill = match &policy.buffer.spill_dir {
            Some(d) => Some(SpillStore::open(
                &d.join(format!("{topic}-{partition}")),
                policy.buffer.spill_bytes_max,
                policy.buffer.spill_segment_bytes,
            )?),
            None => None,
        };
        let report = ProducerReport {
            memory_bytes_max: policy.buffer.memory_bytes_max,
            ..Default::default()
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                core: ProducerCore::new(&policy),
                mem: BTreeMap::new(),
                spill,
                signals: None,
                report,
                agg: Vec::new(),
                ids: BTreeMap::new(),
                lineage: LineageSlots::default(),
                fatal: None,
            }),
            space: Notify::new(),
            work: Notify::new(),
            policy,
            topic: topic.to_string(),
            topic_arc: Arc::from(topic),
            partition,
            origin: Instant::now(),
            acks: Mutex::new(None),
            hook: std::sync::OnceLock::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
        });
        let (dtx, drx) = mpsc::channel::<(u64, Delivery)>(4096);
        let tasks = vec![
            tokio::spawn(pump(shared.clone(), data.clone(), dtx)),
            tokio::spawn(collect(shared.clone(), drx)),
            tokio::spawn(ticker(shared.clone(), scale)),
            tokio::spawn(control_loop(shared.clone(), ctl_in, ctl, replay)),
        ];
        Ok(QosProducer {
            shared,
            tasks,
            aggregator: None,
        })
    }

    /// Uses `f` for `aggregate` stages with `function = "user"`.
    pub fn with_aggregator(mut self, f: Box<dyn Aggregator>) -> Self {
        self.aggregator = Some(f);
        self
    }

    /// Calls `hook` for every item acknowledged from now on, with its
    /// location and lineage (set once; a second call is ignored).
    pub fn with_ack_hook(self, hook: Arc<dyn AckHook>) -> Self {
        let _ = self.shared.hook.set(hook);
        self
    }

    /// Acknowledgements of accepted items, in the order they arrive.
    pub fn subscribe_acks(&self) -> mpsc::UnboundedReceiver<Acked> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.shared.acks.lock() = Some(tx);
        rx
    }

    /// The figures so far.
    pub fn report(&self) -> ProducerReport {
        self.shared.report()
    }

    /// A handle a metrics collector keeps to read this producer's figures
    /// (see [`ProducerProbe`]).
    pub fn probe(&self) -> ProducerProbe {
        ProducerProbe(self.shared.clone())
    }

    /// Memory-tier bytes in use now.
    pub fn memory_used(&self) -> u64 {
        self.shared.state.lock().core.memory_used()
    }

    /// Items accepted and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.shared.state.lock().core.unacked()
    }

    /// Engages `level` reduction stages now and keeps them at least for
    /// `hold`, whatever the latency says — for a prediction that the link
    /// will saturate (the predictor's lead time is what makes reducing
    /// *before* the saturation possible). Returns the stages engaged, or an
    /// error if the stream's flow mode is not `reduce`.
    pub fn advise(&self, level: usize, hold: Duration) -> Result<usize, StreamError> {
        let mut st = self.shared.state.lock();
        let until = self.shared.now() + hold.as_micros() as u64;
        if !st.core.advise(level, until) {
            return Err(StreamError::Policy(crate::policy::PolicyError(
                "an advice to reduce needs flow mode \"reduce\" and a reduce chain".into(),
            )));
        }
        Ok(st.core.active_stages())
    }

    /// The flow controller's last decision inputs: (congested, stages engaged).
    pub fn flow_state(&self) -> (bool, usize) {
        let st = self.shared.state.lock();
        (st.core.flow().congested(), st.core.active_stages())
    }

    /// Offers an item. Waits while the policy says so (backpressure, or full
    /// buffers under `reduce`); otherwise returns at once with what became of it.
    pub async fn send(&mut self, mut item: Item) -> Result<Sent, StreamError> {
        let sh = self.shared.clone();
        // Reductions engaged now.
        let (stages, chain) = {
            let st = sh.state.lock();
            if let Some(f) = &st.fatal {
                return Err(f.error());
            }
            (st.core.active_stages(), sh.policy.reduce.clone())
        };
        let mut compressed = false;
        for stage in chain.iter().take(stages) {
            match stage {
                Reduction::Zstd { level } => compressed |= reduce::zstd_compress(&mut item, *level),
                Reduction::Aggregate { n, function } => {
                    let group = {
                        let mut st = sh.state.lock();
                        st.agg.push(item);
                        if st.agg.len() < *n as usize {
                            return Ok(Sent::Aggregating);
                        }
                        std::mem::take(&mut st.agg)
                    };
                    let k = group.len() as u64;
                    item = match (function.as_str(), self.aggregator.as_mut()) {
                        ("user", Some(f)) => f.aggregate(&group),
                        ("user", None) => Err(reduce::ReduceError(
                            "aggregate function 'user' needs QosProducer::with_aggregator".into(),
                        )),
                        (name, _) => reduce::aggregate_builtin(name, &group),
                    }?;
                    reduce::mark(&mut item, Kind::Reduced, &stage.method());
                    let mut st = sh.state.lock();
                    st.core.reduce_away(k - 1);
                    st.report.aggregates += 1;
                }
                Reduction::Decimate { .. } => {}
            }
        }
        let encoded = item.encoded_len() as u64;
        let size = encoded + 64;
        loop {
            let waiter = sh.space.notified();
            {
                let mut st = sh.state.lock();
                let now = sh.now();
                let spill_free = st.spill.as_ref().map_or(0, |s| s.cap() - s.used());
                let factor = st.core.decimation();
                match st
                    .core
                    .admit(size, spill_free, RECORD_HEADER_BYTES as u64, now)?
                {
                    Admission::Accept {
                        seq,
                        place,
                        evictions,
                        reduced_before,
                        shed_before,
                    } => {
                        let st = &mut *st;
                        for v in evictions.to_disk {
                            let it = st.mem.remove(&v).expect("history in memory");
                            st.spill.as_mut().expect("disk tier").put(v, &it)?;
                        }
                        for v in evictions.dropped {
                            st.mem.remove(&v);
                            if let Some(s) = st.spill.as_mut().filter(|s| s.contains(v)) {
                                s.remove(v)?;
                            }
                        }
                        if let Some(id) = control::get_u64(&item, "id") {
                            st.ids.insert(seq, id);
                        }
                        if let Some(h) = sh.hook.get() {
                            let tags = h
                                .tag_keys()
                                .iter()
                                .filter_map(|k| Some((k.clone(), tag_text(item.metadata.get(k)?)?)))
                                .collect();
                            st.lineage.put(
                                seq,
                                AckedItem {
                                    item: ItemRef::new(sh.topic_arc.clone(), sh.partition, 0),
                                    timestamp_us: item.timestamp_us,
                                    lineage: item.lineage.clone(),
                                    quality: item.quality.clone(),
                                    tags,
                                },
                            );
                        }
                        item.metadata
                            .insert(control::SEQ.into(), control::int(seq as i64));
                        if factor > 1 && item.quality.is_none() {
                            reduce::mark(&mut item, Kind::Reduced, &format!("decimate:{factor}"));
                        }
                        if reduced_before > 0 {
                            item.metadata.insert(
                                control::REDUCED_BEFORE.into(),
                                control::int(reduced_before as i64),
                            );
                        }
                        if shed_before > 0 {
                            item.metadata.insert(
                                control::SHED_BEFORE.into(),
                                control::int(shed_before as i64),
                            );
                        }
                        match place {
                            Place::Memory => {
                                st.mem.insert(seq, item);
                            }
                            Place::Disk => {
                                let s = st.spill.as_mut().expect("disk tier");
                                s.put(seq, &item)?;
                                st.report.spill_high_water =
                                    st.report.spill_high_water.max(s.used());
                            }
                        }
                        if compressed {
                            st.report.compressed += 1;
                        }
                        st.report.accepted_bytes += encoded;
                        sh.work.notify_one();
                        return Ok(Sent::Accepted(seq));
                    }
                    Admission::Decimated { seq } => return Ok(Sent::Decimated(seq)),
                    Admission::Shed { seq } => return Ok(Sent::Shed(seq)),
                    Admission::Wait(_) => {}
                }
            }
            // Woken by acknowledgements and controller ticks.
            let _ = tokio::time::timeout(
                Duration::from_millis(sh.policy.flow.check_interval_ms),
                waiter,
            )
            .await;
        }
    }

    /// Waits until every accepted item is acknowledged, or `timeout` passes
    /// (then an error says how many are still unacknowledged).
    pub async fn flush(&self, timeout: Duration) -> Result<(), StreamError> {
        let end = Instant::now() + timeout;
        loop {
            let n = self.unacked();
            if n == 0 {
                return Ok(());
            }
            if let Some(f) = &self.shared.state.lock().fatal {
                return Err(f.error());
            }
            if Instant::now() >= end {
                return Err(StreamError::Unacknowledged { items: n, timeout });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Flushes (up to `timeout`) and stops. History is dropped with the producer.
    pub async fn close(self, timeout: Duration) -> Result<ProducerReport, StreamError> {
        let flushed = self.flush(timeout).await;
        self.shared
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.work.notify_one();
        for t in &self.tasks {
            t.abort();
        }
        let report = self.report();
        flushed.map(|_| report)
    }
}

impl Drop for QosProducer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Sends what the core dispatches, in order.
async fn pump(sh: Arc<Shared>, data: Arc<Producer>, out: mpsc::Sender<(u64, Delivery)>) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let waiter = sh.work.notified();
        let next = {
            let mut st = sh.state.lock();
            let now = sh.now();
            match st.core.dispatch(now) {
                None => None,
                Some((seq, Place::Memory)) => Some((seq, Ok(st.mem[&seq].clone()))),
                Some((seq, Place::Disk)) => {
                    let r = st.spill.as_ref().expect("disk tier").get(seq);
                    Some((seq, r))
                }
            }
        };
        let Some((seq, item)) = next else {
            if sh.closing.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), waiter).await;
            continue;
        };
        let item = match item {
            Ok(i) => i,
            Err(e) => {
                // A spill record we cannot read back: that item is lost here — say so, loudly.
                let lost = Lost {
                    seq,
                    source: Arc::new(e),
                };
                tracing::error!("{}", lost.error());
                sh.state.lock().fatal = Some(lost);
                return;
            }
        };
        match data.send_to(sh.partition, item).await {
            Ok(d) => {
                backoff = Duration::from_millis(20);
                if out.send((seq, d)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, seq, "send failed; queued again");
                sh.state.lock().core.on_failed(seq);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Feeds acknowledgements (in dispatch order) back to the core.
async fn collect(sh: Arc<Shared>, mut rx: mpsc::Receiver<(u64, Delivery)>) {
    while let Some((seq, d)) = rx.recv().await {
        let r = d.await;
        let mut acked_lineage = None;
        let mut st = sh.state.lock();
        let now = sh.now();
        match r {
            Ok(at) => {
                if let AckOutcome::Acked { retired, .. } = st.core.on_ack(seq, now) {
                    let id = st.ids.remove(&seq);
                    if let Some(mut a) = st.lineage.take(seq) {
                        a.item.partition = at.partition;
                        a.item.offset = at.offset;
                        acked_lineage = Some(a);
                    }
                    let st = &mut *st;
                    for r in retired {
                        st.mem.remove(&r);
                        if let Some(s) = st.spill.as_mut().filter(|s| s.contains(r)) {
                            let _ = s.remove(r);
                        }
                    }
                    if let Some(tx) = sh.acks.lock().as_ref() {
                        let _ = tx.send(Acked {
                            seq,
                            partition: at.partition,
                            offset: at.offset,
                            id,
                        });
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, seq, "delivery failed; queued again");
                st.core.on_failed(seq);
            }
        }
        drop(st);
        if let (Some(a), Some(h)) = (acked_lineage, sh.hook.get()) {
            h.acked(a);
        }
        sh.space.notify_waiters();
        sh.work.notify_one();
    }
}

/// The flow controller's clock.
async fn ticker(sh: Arc<Shared>, scale: Option<Arc<Producer>>) {
    let every = Duration::from_millis(sh.policy.flow.check_interval_ms);
    let mut iv = tokio::time::interval(every);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        iv.tick().await;
        let (d, lag): (FlowDecision, u64) = {
            let mut st = sh.state.lock();
            let now = sh.now();
            let sig = st.signals.take();
            let d = st.core.tick(sig, now);
            st.report.checks += 1;
            st.report.congested_checks += u64::from(d.congested);
            st.report.level_max = st.report.level_max.max(d.level);
            if st.report.checks % 10 == 0 {
                tracing::debug!(
                    memory = st.core.memory_used(),
                    pending = st.core.pending(),
                    unacked = st.core.unacked(),
                    in_flight = st.core.in_flight_bytes(),
                    history = st.core.history_len(),
                    congested = d.congested,
                    level = d.level,
                    estimate_us = d.estimate_us,
                    "qos producer"
                );
            }
            let lag = st
                .core
                .flow()
                .consumer()
                .map_or(0, |c| st.core.next_seq().saturating_sub(c.next_seq));
            (d, lag)
        };
        sh.space.notify_waiters();
        if d.scale_up {
            if let Some(p) = &scale {
                let ev = Control::ScaleUp {
                    topic: sh.topic.clone(),
                    partition: sh.partition,
                    estimate_us: d.estimate_us,
                    lag_items: lag,
                };
                if p.send_unacked(None, ev.to_item()).await.is_ok() {
                    sh.state.lock().report.scale_up_requests += 1;
                }
            }
        }
    }
}

/// Reads consumer progress and replay requests; serves replays.
async fn control_loop(
    sh: Arc<Shared>,
    mut input: Consumer,
    ctl: Arc<Producer>,
    replay: Arc<Producer>,
) {
    loop {
        let got = match input.poll(Duration::from_millis(500)).await {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "control topic read failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let ev = match Control::from_item(&got.item) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, offset = got.offset, "malformed control event skipped");
                continue;
            }
        };
        match ev {
            Control::Progress {
                partition,
                next_seq,
                latency_us,
                rate_hz,
                ..
            } if partition == sh.partition => {
                sh.state.lock().signals = Some(Signals {
                    latency_us,
                    next_seq,
                    rate_hz,
                });
            }
            Control::Replay {
                partition,
                from,
                to,
                ..
            } if partition == sh.partition => {
                let (items, unavailable) = {
                    let mut st = sh.state.lock();
                    st.report.replay_requests += 1;
                    let plan = st.core.replay(from, to);
                    let mut items = Vec::with_capacity(plan.serve.len());
                    for (seq, place) in plan.serve {
                        let it = match place {
                            Place::Memory => st.mem.get(&seq).cloned(),
                            Place::Disk => st.spill.as_ref().and_then(|s| s.get(seq).ok()),
                        };
                        if let Some(it) = it {
                            items.push(it);
                        }
                    }
                    (items, plan.unavailable)
                };
                for (from, to) in unavailable {
                    let ev = Control::Unavailable {
                        partition: sh.partition,
                        from,
                        to,
                    };
                    let _ = ctl.send_unacked(Some(0), ev.to_item()).await;
                }
                let n = items.len() as u64;
                for mut it in items {
                    it.metadata
                        .insert(control::REPLAY.into(), control::boolean(true));
                    it.metadata.insert(
                        control::PARTITION.into(),
                        control::int(i64::from(sh.partition)),
                    );
                    if let Err(e) = replay.send_unacked(Some(0), it).await {
                        tracing::warn!(error = %e, "replay send failed");
                    }
                }
                let _ = replay.flush().await;
                sh.state.lock().report.replay_items += n;
            }
            _ => {}
        }
    }
}
