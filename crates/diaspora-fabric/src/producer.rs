//! The producer: batches items per partition by size and linger, pipelines
//! batches with a bounded in-flight window, and retries across connection
//! loss. With `idempotent` (the default) every batch carries
//! `(producer_id, base_sequence)`, so a retried batch is appended once.
//!
//! Memory is bounded: items hold `buffer_bytes_max` permits from `send` until
//! their batch is acknowledged; `send` waits (backpressure) when none are left.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use diaspora_log::{BatchBuilder, Compression};
use diaspora_proto::v1::{self, frame::Body, ErrorCode};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{unexpected, Client, Lane};
use crate::error::{FabricError, Result};
use crate::item::{encode_item_parts, key_hash, Item};

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Topic to produce to.
    pub topic: String,
    /// How long a batch may wait for more items before it is sent. Under
    /// 1 ms (the default, 200 µs) it is an upper bound only: a batch is sent
    /// at once when no other batch of its partition is in flight.
    pub linger: Duration,
    /// Target batch size, bytes (a single larger item makes a batch of its own).
    pub batch_bytes_max: usize,
    /// Unacknowledged batches per partition (≤ 8, the node's duplicate window).
    pub in_flight_max: usize,
    /// Bytes of items held (queued or unacknowledged) before `send` waits.
    pub buffer_bytes_max: usize,
    /// Per-batch compression.
    pub compression: Compression,
    /// Keep retrying a failed batch for this long before failing it.
    pub retry_for: Duration,
    /// Longest pause between retries.
    pub retry_backoff_max: Duration,
    /// Stamp batches with producer id and sequence so retries are deduplicated.
    pub idempotent: bool,
}

impl ProducerConfig {
    /// Defaults for `topic`.
    pub fn new(topic: impl Into<String>) -> Self {
        ProducerConfig {
            topic: topic.into(),
            linger: Duration::from_micros(200),
            batch_bytes_max: 1 << 20,
            in_flight_max: 5,
            buffer_bytes_max: 256 << 20,
            compression: Compression::None,
            retry_for: Duration::from_secs(30),
            retry_backoff_max: Duration::from_secs(1),
            idempotent: true,
        }
    }
}

/// Where an acknowledged item landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
}

/// Resolves when the item is acknowledged (or has failed for good).
pub struct Delivery(oneshot::Receiver<Result<Delivered>>);

impl std::future::Future for Delivery {
    type Output = Result<Delivered>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(FabricError::Shutdown)))
    }
}

/// Counters of a producer.
#[derive(Debug, Default)]
pub struct ProducerStats {
    /// Items acknowledged by the node.
    pub acked: AtomicU64,
    /// Items that failed for good.
    pub failed: AtomicU64,
    /// Batches resent after a failure.
    pub retried_batches: AtomicU64,
    /// Batches the node reported as duplicates (already appended).
    pub duplicate_batches: AtomicU64,
    /// The first permanent error, if any.
    pub first_error: Mutex<Option<String>>,
}

enum Cmd {
    Item {
        head: Vec<u8>,
        payload: Bytes,
        timestamp_us: i64,
        ack: Option<oneshot::Sender<Result<Delivered>>>,
    },
    Flush(oneshot::Sender<()>),
}

/// A producer for one topic. See the module docs.
pub struct Producer {
    topic: String,
    partitions: Vec<mpsc::UnboundedSender<Cmd>>,
    tasks: Vec<JoinHandle<()>>,
    budget: Arc<Semaphore>,
    config: ProducerConfig,
    item_bytes_max: u64,
    stats: Arc<ProducerStats>,
    sticky: AtomicUsize,
    sticky_bytes: AtomicUsize,
}

impl Producer {
    /// Creates a producer; fails if the topic does not exist.
    pub async fn new(client: &Client, config: ProducerConfig) -> Result<Producer> {
        let hello = client.hello().await?;
        let meta = client.metadata(&config.topic).await?;
        let n = meta.partitions.len();
        if config.buffer_bytes_max == 0 || config.batch_bytes_max == 0 {
            return Err(FabricError::Invalid(
                "buffer_bytes_max and batch_bytes_max must be > 0".into(),
            ));
        }
        let mut config = config;
        config.in_flight_max = config
            .in_flight_max
            .clamp(1, 8)
            .min(hello.in_flight_max.max(1) as usize);
        let budget = Arc::new(Semaphore::new(
            config.buffer_bytes_max.min(Semaphore::MAX_PERMITS),
        ));
        let stats = Arc::new(ProducerStats::default());
        let mut partitions = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for p in 0..n as u32 {
            let (tx, rx) = mpsc::unbounded_channel();
            partitions.push(tx);
            let task = PartitionTask {
                client: client.clone(),
                topic: config.topic.clone(),
                partition: p,
                config: config.clone(),
                budget: budget.clone(),
                stats: stats.clone(),
                producer_id: if config.idempotent {
                    new_producer_id()
                } else {
                    0
                },
                next_sequence: 0,
                lane: None,
                inflight: VecDeque::new(),
                failing_since: None,
            };
            tasks.push(tokio::spawn(task.run(rx)));
        }
        Ok(Producer {
            topic: config.topic.clone(),
            partitions,
            tasks,
            budget,
            item_bytes_max: hello.item_bytes_max,
            config,
            stats,
            sticky: AtomicUsize::new(0),
            sticky_bytes: AtomicUsize::new(0),
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Counters.
    pub fn stats(&self) -> &ProducerStats {
        &self.stats
    }

    fn pick_partition(&self, len: usize) -> usize {
        let n = self.partitions.len();
        // Sticky round-robin: fill a batch on one partition, then move on.
        let filled = self.sticky_bytes.fetch_add(len, Ordering::Relaxed) + len;
        if filled >= self.config.batch_bytes_max {
            self.sticky_bytes.store(0, Ordering::Relaxed);
            return self.sticky.fetch_add(1, Ordering::Relaxed) % n;
        }
        self.sticky.load(Ordering::Relaxed) % n
    }

    async fn enqueue(
        &self,
        partition: Option<u32>,
        mut item: Item,
        ack: bool,
    ) -> Result<Option<Delivery>> {
        if item.timestamp_us == 0 {
            item.timestamp_us = crate::item::now_us();
        }
        let timestamp_us = item.timestamp_us;
        let key_partition = (partition.is_none() && !item.key.is_empty())
            .then(|| (key_hash(&item.key) % self.partitions.len() as u64) as usize);
        let (head, payload) = encode_item_parts(item);
        let len = head.len() + payload.len();
        if len as u64 > self.item_bytes_max {
            return Err(FabricError::Limit {
                what: "item of".into(),
                unit: " bytes",
                value: len as u64,
                limit_name: "item_bytes_max",
                limit: self.item_bytes_max,
            });
        }
        if len > self.config.buffer_bytes_max {
            return Err(FabricError::Limit {
                what: "item of".into(),
                unit: " bytes",
                value: len as u64,
                limit_name: "buffer_bytes_max",
                limit: self.config.buffer_bytes_max as u64,
            });
        }
        let p = match partition {
            Some(p) if p as usize >= self.partitions.len() => {
                return Err(FabricError::UnknownPartition {
                    topic: self.topic.clone(),
                    partition: p,
                    partitions: self.partitions.len() as u32,
                })
            }
            Some(p) => p as usize,
            None => key_partition.unwrap_or_else(|| self.pick_partition(len)),
        };
        self.budget
            .acquire_many(permits(len))
            .await
            .map_err(|_| FabricError::Shutdown)?
            .forget();
        let (ack_tx, delivery) = if ack {
            let (t, r) = oneshot::channel();
            (Some(t), Some(Delivery(r)))
        } else {
            (None, None)
        };
        self.partitions[p]
            .send(Cmd::Item {
                head,
                payload,
                timestamp_us,
                ack: ack_tx,
            })
            .map_err(|_| FabricError::Shutdown)?;
        Ok(delivery)
    }

    /// Queues an item (partition by key, else sticky round-robin) and returns
    /// a future that resolves when it is acknowledged. Waits while the buffer is full.
    pub async fn send(&self, item: Item) -> Result<Delivery> {
        Ok(self
            .enqueue(None, item, true)
            .await?
            .expect("ack requested"))
    }

    /// Like [`Producer::send`] to a given partition.
    pub async fn send_to(&self, partition: u32, item: Item) -> Result<Delivery> {
        Ok(self
            .enqueue(Some(partition), item, true)
            .await?
            .expect("ack requested"))
    }

    /// Queues an item without a per-item acknowledgement future (cheaper at
    /// high item rates); outcomes are counted in [`Producer::stats`].
    pub async fn send_unacked(&self, partition: Option<u32>, item: Item) -> Result<()> {
        self.enqueue(partition, item, false).await.map(|_| ())
    }

    /// Sends everything queued so far and waits until it is acknowledged or failed.
    pub async fn flush(&self) -> Result<()> {
        let mut waits = Vec::with_capacity(self.partitions.len());
        for tx in &self.partitions {
            let (t, r) = oneshot::channel();
            tx.send(Cmd::Flush(t)).map_err(|_| FabricError::Shutdown)?;
            waits.push(r);
        }
        for w in waits {
            let _ = w.await;
        }
        match self.stats.first_error.lock().clone() {
            Some(e) => Err(FabricError::Invalid(format!("some items failed: {e}"))),
            None => Ok(()),
        }
    }

    /// Flushes and stops the partition tasks.
    pub async fn close(mut self) -> Result<()> {
        let r = self.flush().await;
        self.partitions.clear();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        r
    }
}

fn permits(len: usize) -> u32 {
    u32::try_from(len.max(1)).unwrap_or(u32::MAX)
}

fn new_producer_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

struct InFlight {
    batch: Bytes,
    /// Sequence of the batch's first record under the producer id it carries.
    base_sequence: u64,
    count: u64,
    bytes: usize,
    acks: Vec<Option<oneshot::Sender<Result<Delivered>>>>,
    answer: Option<oneshot::Receiver<Result<Body>>>,
    /// Completes flushes registered before this batch was sealed.
    flushes: Vec<oneshot::Sender<()>>,
}

struct Open {
    builder: BatchBuilder,
    bytes: usize,
    acks: Vec<Option<oneshot::Sender<Result<Delivered>>>>,
    deadline: Instant,
}

struct PartitionTask {
    client: Client,
    topic: String,
    partition: u32,
    config: ProducerConfig,
    budget: Arc<Semaphore>,
    stats: Arc<ProducerStats>,
    producer_id: u64,
    next_sequence: u64,
    lane: Option<Lane>,
    inflight: VecDeque<InFlight>,
    failing_since: Option<Instant>,
}

/// Errors after which re-sending the same batch may succeed.
pub(crate) fn retriable(e: &FabricError) -> bool {
    match e {
        FabricError::Connection { .. } | FabricError::Shutdown => true,
        FabricError::Remote { code, .. } => matches!(
            code,
            ErrorCode::TooManyInFlight
                | ErrorCode::StorageError
                | ErrorCode::Internal
                | ErrorCode::MalformedFrame
        ),
        _ => false,
    }
}

impl PartitionTask {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut open: Option<Open> = None;
        let mut pending_flushes: Vec<oneshot::Sender<()>> = Vec::new();
        let mut closed = false;
        loop {
            if closed && open.is_none() && self.inflight.is_empty() {
                for f in pending_flushes.drain(..) {
                    let _ = f.send(());
                }
                return;
            }
            let can_take = !closed && self.inflight.len() < self.config.in_flight_max;
            let deadline = open.as_ref().map(|o| o.deadline);
            let waiting_answer = self.inflight.front().is_some_and(|f| f.answer.is_some());
            tokio::select! {
                biased;
                answer = async {
                    match self.inflight.front_mut().and_then(|f| f.answer.as_mut()) {
                        Some(a) => a.await,
                        None => std::future::pending().await,
                    }
                }, if waiting_answer => {
                    let answer = answer.unwrap_or_else(|_| Err(FabricError::Connection {
                        addr: self.client.config().addr.to_string(),
                        message: "lane closed".into(),
                    }));
                    self.on_answer(answer).await;
                }
                cmd = rx.recv(), if can_take => match cmd {
                    Some(Cmd::Item { head, payload, timestamp_us, ack }) => {
                        let len = head.len() + payload.len();
                        let full = {
                            let o = open.get_or_insert_with(|| Open {
                                builder: BatchBuilder::with_capacity(
                                    self.config.compression,
                                    len.max(self.config.batch_bytes_max) + 64,
                                ),
                                bytes: 0,
                                acks: Vec::new(),
                                deadline: Instant::now() + self.config.linger,
                            });
                            o.builder.push_parts(&[&head, &payload], timestamp_us);
                            o.bytes += len;
                            o.acks.push(ack);
                            o.bytes >= self.config.batch_bytes_max
                        };
                        if full {
                            let o = open.take().expect("open batch");
                            self.seal_and_send(o, Vec::new()).await;
                        }
                    }
                    Some(Cmd::Flush(done)) => {
                        match open.take() {
                            Some(o) => self.seal_and_send(o, vec![done]).await,
                            None => match self.inflight.back_mut() {
                                Some(last) => last.flushes.push(done),
                                None => { let _ = done.send(()); }
                            },
                        }
                    }
                    None => {
                        closed = true;
                        if let Some(o) = open.take() {
                            self.seal_and_send(o, Vec::new()).await;
                        }
                    }
                },
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                }, if deadline.is_some() && self.inflight.len() < self.config.in_flight_max => {
                    if let Some(o) = open.take() {
                        self.seal_and_send(o, Vec::new()).await;
                    }
                }
            }
            // A lane that failed while sending leaves batches without an answer.
            if self.inflight.front().is_some_and(|f| f.answer.is_none()) {
                self.recover(None).await;
            }
            // A linger under the timer's 1 ms tick cannot be waited for
            // (tokio would round 200 µs up to 1–2 ms), so it works
            // Nagle-style: with nothing in flight and nothing more queued,
            // the open batch goes now. While batches are in flight it keeps
            // growing until an answer comes back, it fills, or the linger
            // passes: batching where there is load, no wait where there is
            // none.
            if self.config.linger < Duration::from_millis(1)
                && self.inflight.is_empty()
                && !closed
                && rx.is_empty()
            {
                if let Some(o) = open.take() {
                    self.seal_and_send(o, Vec::new()).await;
                }
            }
        }
    }

    async fn seal_and_send(&mut self, open: Open, flushes: Vec<oneshot::Sender<()>>) {
        let count = open.acks.len() as u64;
        let mut builder = open.builder;
        let base_sequence = self.next_sequence;
        if self.producer_id != 0 {
            builder = builder.with_producer(self.producer_id, base_sequence);
            self.next_sequence += count;
        }
        let batch = builder.finish();
        let mut f = InFlight {
            batch,
            base_sequence,
            count,
            bytes: open.bytes,
            acks: open.acks,
            answer: None,
            flushes,
        };
        f.answer = self.transmit(&f.batch).await;
        self.inflight.push_back(f);
    }

    async fn transmit(&mut self, batch: &Bytes) -> Option<oneshot::Receiver<Result<Body>>> {
        if self.lane.is_none() {
            self.lane = self.client.lane(self.partition as usize).await.ok();
        }
        let lane = self.lane.as_ref()?;
        match lane
            .send(Body::ProduceRequest(v1::ProduceRequest {
                topic: self.topic.clone(),
                partition: self.partition,
                batch: batch.clone(),
            }))
            .await
        {
            Ok(r) => Some(r),
            Err(_) => {
                self.lane = None;
                None
            }
        }
    }

    async fn on_answer(&mut self, answer: Result<Body>) {
        match answer {
            Ok(Body::ProduceResponse(r)) => {
                let f = self
                    .inflight
                    .pop_front()
                    .expect("answer for the front batch");
                self.failing_since = None;
                if r.duplicate {
                    self.stats.duplicate_batches.fetch_add(1, Ordering::Relaxed);
                }
                self.complete(f, Ok(r.base_offset));
            }
            Ok(other) => {
                self.recover(Some(unexpected("ProduceResponse", &other)))
                    .await
            }
            Err(e) => self.recover(Some(e)).await,
        }
    }

    fn complete(&mut self, f: InFlight, outcome: Result<u64>) {
        match &outcome {
            Ok(_) => self.stats.acked.fetch_add(f.count, Ordering::Relaxed),
            Err(e) => {
                let mut first = self.stats.first_error.lock();
                if first.is_none() {
                    *first = Some(e.to_string());
                }
                self.stats.failed.fetch_add(f.count, Ordering::Relaxed)
            }
        };
        for (i, ack) in f.acks.into_iter().enumerate() {
            if let Some(ack) = ack {
                let r = match &outcome {
                    Ok(base) => Ok(Delivered {
                        partition: self.partition,
                        offset: base + i as u64,
                    }),
                    Err(e) => Err(FabricError::Invalid(e.to_string())),
                };
                let _ = ack.send(r);
            }
        }
        self.budget
            .add_permits(permits(f.bytes).min(Semaphore::MAX_PERMITS as u32) as usize);
        for done in f.flushes {
            let _ = done.send(());
        }
    }

    /// Continues under a fresh producer id (which the node accepts at any
    /// sequence). When the node is known to hold batches of the old id — the
    /// failed batch was not that id's first — every later in-flight batch of
    /// the old id is certain to be refused for the sequence gap, so they are
    /// re-stamped with the new id and re-sent now, in order. Otherwise they
    /// keep awaiting their own answers (they may have been stored).
    async fn restart_sequence(&mut self, resend_in_flight: bool) {
        self.producer_id = new_producer_id();
        self.next_sequence = 0;
        if !resend_in_flight {
            return;
        }
        for i in 0..self.inflight.len() {
            let seq = self.next_sequence;
            match diaspora_log::restamp_producer(&self.inflight[i].batch, self.producer_id, seq) {
                Ok(batch) => {
                    self.next_sequence += self.inflight[i].count;
                    self.inflight[i].base_sequence = seq;
                    self.inflight[i].batch = batch.clone();
                    self.stats.retried_batches.fetch_add(1, Ordering::Relaxed);
                    // The old answer (a refusal) is dropped with its receiver.
                    self.inflight[i].answer = self.transmit(&batch).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot re-stamp an in-flight batch");
                    self.inflight[i].answer = None;
                }
            }
        }
    }

    /// Resends every unacknowledged batch, in order, on a new lane; gives up
    /// after `retry_for`. Permanent errors fail the in-flight batches and start
    /// a new producer id so later batches are not refused for a sequence gap.
    async fn recover(&mut self, error: Option<FabricError>) {
        if let Some(e) = &error {
            if !retriable(e) {
                // The front batch was refused for good. Later in-flight batches keep
                // their own answers (stored, or refused for the sequence gap), so
                // nothing stored is ever reported as failed. Batches sealed from now
                // on use a fresh producer id, which the node accepts at any sequence.
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "batch failed");
                let Some(failed) = self.inflight.pop_front() else {
                    return;
                };
                let node_knows_old_id = failed.base_sequence > 0;
                self.complete(failed, Err(FabricError::Invalid(e.to_string())));
                if self.producer_id != 0 {
                    self.restart_sequence(node_knows_old_id).await;
                }
                return;
            }
        }
        let started = *self.failing_since.get_or_insert_with(Instant::now);
        let mut backoff = Duration::from_millis(20);
        let mut last = error
            .map(|e| e.to_string())
            .unwrap_or_else(|| "lane failed".into());
        loop {
            self.lane = None;
            if started.elapsed() >= self.config.retry_for {
                let msg = format!(
                    "gave up after retrying for {:?} ({} to {}/{}): {last}",
                    self.config.retry_for,
                    self.client.config().addr,
                    self.topic,
                    self.partition
                );
                while let Some(f) = self.inflight.pop_front() {
                    self.complete(f, Err(FabricError::Invalid(msg.clone())));
                }
                self.failing_since = None;
                // Whether the abandoned batches were stored is unknown: a fresh
                // id keeps later batches from being refused for a sequence gap.
                if self.producer_id != 0 {
                    self.restart_sequence(false).await;
                }
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.retry_backoff_max);
            match self.client.lane(self.partition as usize).await {
                Ok(lane) => self.lane = Some(lane),
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            }
            let mut ok = true;
            for i in 0..self.inflight.len() {
                let batch = self.inflight[i].batch.clone();
                self.stats.retried_batches.fetch_add(1, Ordering::Relaxed);
                match self.transmit(&batch).await {
                    Some(r) => self.inflight[i].answer = Some(r),
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                return;
            }
        }
    }
}
