//! The consumer: assign partitions or subscribe as a member of a consumer
//! group, seek, read with a bounded prefetch, and commit offsets durably.
//!
//! One fetcher task per assigned partition long-polls the node on its own
//! lane and hands decoded items to the consumer through a channel; the
//! fetchers together may hold at most `prefetch_bytes_max` of items not yet
//! taken by the application.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diaspora_proto::v1::{self, frame::Body, ErrorCode};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::client::{unexpected, Client};
use crate::error::{FabricError, Result};
use crate::item::{decode_batch_items_into, ConsumedItem};

/// Where to start reading a partition that has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The first retained offset.
    Earliest,
    /// Only items appended from now on.
    Latest,
    /// A given offset.
    Offset(u64),
}

impl std::str::FromStr for StartFrom {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "earliest" => Ok(StartFrom::Earliest),
            "latest" => Ok(StartFrom::Latest),
            n => n
                .parse()
                .map(StartFrom::Offset)
                .map_err(|_| format!("'{s}' is not earliest, latest or an offset")),
        }
    }
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Topic to read.
    pub topic: String,
    /// Consumer group; committed offsets take precedence over `start`.
    pub group: Option<String>,
    /// Start position without a committed offset.
    pub start: StartFrom,
    /// Largest fetch response asked for, bytes.
    pub fetch_bytes_max: u32,
    /// Bytes of fetched items held before fetchers pause.
    pub prefetch_bytes_max: usize,
    /// Long-poll time of one fetch.
    pub fetch_wait: Duration,
    /// Group session timeout; heartbeats go every third of it.
    pub session_timeout: Duration,
    /// Fetch items' metadata and locations without their payloads (the
    /// node leaves them out): for views, triggers and monitors that decide
    /// on metadata. [`ConsumedItem::payload_bytes`] gives each payload's
    /// length and [`crate::Client::read_payload`] reads one by reference.
    pub metadata_only: bool,
}

impl ConsumerConfig {
    /// Defaults for `topic`.
    pub fn new(topic: impl Into<String>) -> Self {
        ConsumerConfig {
            topic: topic.into(),
            group: None,
            start: StartFrom::Earliest,
            fetch_bytes_max: 4 << 20,
            prefetch_bytes_max: 64 << 20,
            fetch_wait: Duration::from_millis(500),
            session_timeout: Duration::from_secs(10),
            metadata_only: false,
        }
    }

    /// Fetches metadata and locations only (see [`ConsumerConfig::metadata_only`]).
    pub fn metadata_only(mut self) -> Self {
        self.metadata_only = true;
        self
    }

    /// Sets the group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets the start position.
    pub fn start(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }
}

struct Chunk {
    partition: u32,
    epoch: u64,
    items: Result<Vec<ConsumedItem>>,
    permits: u32,
}

struct Membership {
    group: String,
    member_id: String,
    generation: u64,
    rebalance: Arc<AtomicBool>,
    heartbeat: JoinHandle<()>,
    /// When the node last confirmed this membership (ms since `since`).
    confirmed_ms: Arc<AtomicU64>,
    since: std::time::Instant,
}

impl Membership {
    /// Whether the node has not confirmed the membership for so long that
    /// it may have dropped it (the process was frozen, say): then nothing
    /// more is handed out before a heartbeat says the member is still in.
    fn unconfirmed(&self, session_timeout: Duration) -> bool {
        let now = self.since.elapsed().as_millis() as u64;
        now.saturating_sub(self.confirmed_ms.load(Ordering::Relaxed))
            > (session_timeout / 2).as_millis() as u64
    }
}

/// Counters of a consumer.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Items handed to the application.
    pub consumed: AtomicU64,
    /// Items skipped because retention removed them before they were read.
    pub skipped_expired: AtomicU64,
    /// Fetches retried after a connection failure.
    pub fetch_retries: AtomicU64,
}

/// A consumer of one topic. See the module docs.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    tx: mpsc::Sender<Chunk>,
    rx: mpsc::Receiver<Chunk>,
    budget: Arc<Semaphore>,
    fetchers: HashMap<u32, (u64, JoinHandle<()>)>,
    epoch: u64,
    current: VecDeque<ConsumedItem>,
    current_permits: u32,
    positions: BTreeMap<u32, u64>,
    committed: BTreeMap<u32, u64>,
    membership: Option<Membership>,
    /// A re-join that failed (node unreachable), retried at the next poll.
    rejoin: Option<(String, String)>,
    /// Partitions moved by [`Consumer::seek`] since their last commit: the
    /// next commit may move their offset back.
    sought: std::collections::BTreeSet<u32>,
    stats: Arc<ConsumerStats>,
}

impl Consumer {
    fn empty(client: &Client, config: ConsumerConfig) -> Consumer {
        let (tx, rx) = mpsc::channel(256);
        let budget = Arc::new(Semaphore::new(
            config.prefetch_bytes_max.clamp(1, Semaphore::MAX_PERMITS),
        ));
        Consumer {
            client: client.clone(),
            config,
            tx,
            rx,
            budget,
            fetchers: HashMap::new(),
            epoch: 0,
            current: VecDeque::new(),
            current_permits: 0,
            positions: BTreeMap::new(),
            committed: BTreeMap::new(),
            membership: None,
            rejoin: None,
            sought: Default::default(),
            stats: Arc::new(ConsumerStats::default()),
        }
    }

    /// A consumer reading exactly `partitions` (empty = all partitions).
    pub async fn assign(
        client: &Client,
        config: ConsumerConfig,
        partitions: &[u32],
    ) -> Result<Consumer> {
        let mut c = Consumer::empty(client, config);
        let meta = client.metadata(&c.config.topic).await?;
        let parts: Vec<u32> = if partitions.is_empty() {
            (0..meta.partitions.len() as u32).collect()
        } else {
            partitions.to_vec()
        };
        c.start_partitions(&parts).await?;
        Ok(c)
    }

    /// A consumer that joins `config.group` and reads the partitions the
    /// group assigns it, rebalancing as members come and go.
    pub async fn subscribe(client: &Client, config: ConsumerConfig) -> Result<Consumer> {
        let group = config
            .group
            .clone()
            .ok_or_else(|| FabricError::Invalid("subscribe needs a consumer group".into()))?;
        let mut c = Consumer::empty(client, config);
        c.join(&group, String::new()).await?;
        Ok(c)
    }

    async fn join(&mut self, group: &str, member_id: String) -> Result<()> {
        let resp = self
            .client
            .call(Body::JoinGroupRequest(v1::JoinGroupRequest {
                group: group.into(),
                topic: self.config.topic.clone(),
                member_id,
                session_timeout_ms: self.config.session_timeout.as_millis() as u32,
            }))
            .await?;
        let Body::JoinGroupResponse(j) = resp else {
            return Err(unexpected("JoinGroupResponse", &resp));
        };
        let rebalance = Arc::new(AtomicBool::new(false));
        let since = std::time::Instant::now();
        let confirmed_ms = Arc::new(AtomicU64::new(0));
        let hb = {
            let confirmed = confirmed_ms.clone();
            let client = self.client.clone();
            let group = group.to_string();
            let member_id = j.member_id.clone();
            let generation = j.generation;
            let flag = rebalance.clone();
            let topic = self.config.topic.clone();
            let every = self.config.session_timeout / 3;
            tokio::spawn(async move {
                let Ok(lane) = client.lane(0).await else {
                    flag.store(true, Ordering::Relaxed);
                    return;
                };
                loop {
                    tokio::time::sleep(every).await;
                    let r = lane
                        .call(Body::HeartbeatRequest(v1::HeartbeatRequest {
                            group: group.clone(),
                            member_id: member_id.clone(),
                            generation,
                            topic: topic.clone(),
                        }))
                        .await;
                    match r {
                        Ok(Body::HeartbeatResponse(h)) if h.generation == generation => {
                            confirmed.store(since.elapsed().as_millis() as u64, Ordering::Relaxed);
                        }
                        _ => {
                            flag.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            })
        };
        self.membership = Some(Membership {
            group: group.into(),
            member_id: j.member_id,
            generation: j.generation,
            rebalance,
            heartbeat: hb,
            confirmed_ms,
            since,
        });
        self.start_partitions(&j.partitions).await
    }

    async fn rebalance(&mut self) -> Result<()> {
        if let Some(m) = &self.membership {
            m.heartbeat.abort();
            // What was handed out in this generation, committed while it is
            // still current (the node holds the new one back until every
            // member has re-joined) — as this member, so the fence lets it.
            if let Err(e) = self.commit().await {
                tracing::info!(error = %e, "commit before re-joining refused");
            }
        }
        let (group, member_id) = match self.membership.take() {
            Some(m) => {
                self.stop_all();
                tracing::info!(group = %m.group, member = %m.member_id, generation = m.generation, "rebalancing");
                (m.group, m.member_id)
            }
            None => match self.rejoin.take() {
                Some(r) => r,
                None => return Ok(()),
            },
        };
        if let Err(e) = self.join(&group, member_id.clone()).await {
            self.rejoin = Some((group, member_id));
            return Err(e);
        }
        Ok(())
    }

    /// Stops every fetcher and drops prefetched items. Positions are kept:
    /// a partition this consumer gets back continues where it was, so a
    /// reconnect does not re-deliver what was read since the last commit.
    fn stop_all(&mut self) {
        for (_, (_, h)) in self.fetchers.drain() {
            h.abort();
        }
        self.current.clear();
        self.budget.add_permits(self.current_permits as usize);
        self.current_permits = 0;
    }

    async fn start_partitions(&mut self, partitions: &[u32]) -> Result<()> {
        let meta = self.client.metadata(&self.config.topic).await?;
        let previous = std::mem::take(&mut self.positions);
        let committed: BTreeMap<u32, u64> = match &self.config.group {
            Some(g) => match self
                .client
                .call(Body::OffsetFetchRequest(v1::OffsetFetchRequest {
                    group: g.clone(),
                    topic: self.config.topic.clone(),
                }))
                .await?
            {
                Body::OffsetFetchResponse(r) => r
                    .offsets
                    .into_iter()
                    .map(|o| (o.partition, o.offset))
                    .collect(),
                other => return Err(unexpected("OffsetFetchResponse", &other)),
            },
            None => BTreeMap::new(),
        };
        for &p in partitions {
            let info =
                meta.partitions
                    .get(p as usize)
                    .ok_or_else(|| FabricError::UnknownPartition {
                        topic: self.config.topic.clone(),
                        partition: p,
                        partitions: meta.partitions.len() as u32,
                    })?;
            if let Some(&o) = committed.get(&p) {
                self.committed.insert(p, o);
            }
            // Where this consumer was, or where the group committed — the
            // later: a partition it gets back may have been read further by
            // another member meanwhile, and what lies before either was
            // handed out already.
            let offset = match previous.get(&p).max(committed.get(&p)) {
                Some(&o) => o,
                None => match self.config.start {
                    StartFrom::Earliest => info.start_offset,
                    StartFrom::Latest => info.next_offset,
                    StartFrom::Offset(o) => o,
                },
            };
            self.spawn_fetcher(p, offset);
        }
        Ok(())
    }

    fn spawn_fetcher(&mut self, partition: u32, offset: u64) {
        if let Some((_, h)) = self.fetchers.remove(&partition) {
            h.abort();
        }
        self.epoch += 1;
        self.positions.insert(partition, offset);
        let f = Fetcher {
            client: self.client.clone(),
            topic: self.config.topic.clone(),
            partition,
            epoch: self.epoch,
            offset,
            fetch_bytes_max: self.config.fetch_bytes_max,
            wait_ms: self.config.fetch_wait.as_millis() as u32,
            budget: self.budget.clone(),
            budget_max: self
                .config
                .prefetch_bytes_max
                .clamp(1, Semaphore::MAX_PERMITS),
            tx: self.tx.clone(),
            stats: self.stats.clone(),
            metadata_only: self.config.metadata_only,
        };
        self.fetchers
            .insert(partition, (self.epoch, tokio::spawn(f.run())));
    }

    /// Partitions currently read.
    pub fn assignment(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.fetchers.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Counters.
    pub fn stats(&self) -> &ConsumerStats {
        &self.stats
    }

    /// Next offset to be returned per partition.
    pub fn positions(&self) -> &BTreeMap<u32, u64> {
        &self.positions
    }

    /// Moves a partition's position; items already prefetched for it are dropped.
    pub fn seek(&mut self, partition: u32, offset: u64) -> Result<()> {
        if !self.fetchers.contains_key(&partition) {
            return Err(FabricError::Invalid(format!(
                "partition {partition} is not assigned to this consumer"
            )));
        }
        self.current.retain(|i| i.partition != partition);
        self.spawn_fetcher(partition, offset);
        self.sought.insert(partition);
        Ok(())
    }

    /// Moves a partition to its first retained offset, to the end (only new
    /// items), or to a given offset.
    pub async fn seek_to(&mut self, partition: u32, to: StartFrom) -> Result<()> {
        let offset = match to {
            StartFrom::Offset(o) => o,
            edge => {
                let meta = self.client.metadata(&self.config.topic).await?;
                let info = meta.partitions.get(partition as usize).ok_or_else(|| {
                    FabricError::UnknownPartition {
                        topic: self.config.topic.clone(),
                        partition,
                        partitions: meta.partitions.len() as u32,
                    }
                })?;
                if edge == StartFrom::Earliest {
                    info.start_offset
                } else {
                    info.next_offset
                }
            }
        };
        self.seek(partition, offset)
    }

    /// Waits up to `timeout` for the next item. `Ok(None)` on timeout.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Option<ConsumedItem>> {
        // The clock is read only when the consumer has to wait.
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if self.rejoin.is_some()
                || self
                    .membership
                    .as_ref()
                    .is_some_and(|m| m.rebalance.load(Ordering::Relaxed))
            {
                match self.rebalance().await {
                    Ok(()) => {}
                    // The node is unreachable: keep trying at the next poll.
                    Err(e @ (FabricError::Connection { .. } | FabricError::Shutdown)) => {
                        tracing::warn!(error = %e, "rejoin failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if tokio::time::Instant::now()
                            >= *deadline
                                .get_or_insert_with(|| tokio::time::Instant::now() + timeout)
                        {
                            return Ok(None);
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !self.current.is_empty()
                && self
                    .membership
                    .as_ref()
                    .is_some_and(|m| m.unconfirmed(self.config.session_timeout))
            {
                self.confirm_membership().await;
                continue;
            }
            if let Some(item) = self.current.pop_front() {
                if self.current.is_empty() {
                    self.budget.add_permits(self.current_permits as usize);
                    self.current_permits = 0;
                }
                self.positions.insert(item.partition, item.offset + 1);
                self.stats.consumed.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(item));
            }
            // Something may be ready already: no clock, no timer.
            let chunk = match self.rx.try_recv() {
                Ok(c) => c,
                Err(mpsc::error::TryRecvError::Disconnected) => return Err(FabricError::Shutdown),
                Err(mpsc::error::TryRecvError::Empty) => {
                    let now = tokio::time::Instant::now();
                    let deadline = *deadline.get_or_insert(now + timeout);
                    // Wake at least every 200 ms to notice a rebalance.
                    let tick = deadline.min(now + Duration::from_millis(200));
                    match tokio::time::timeout_at(tick, self.rx.recv()).await {
                        Ok(Some(c)) => c,
                        Ok(None) => return Err(FabricError::Shutdown),
                        Err(_) if tokio::time::Instant::now() >= deadline => return Ok(None),
                        Err(_) => continue,
                    }
                }
            };
            let live = self.fetchers.get(&chunk.partition).map(|(e, _)| *e) == Some(chunk.epoch);
            if !live {
                self.budget.add_permits(chunk.permits as usize);
                continue;
            }
            match chunk.items {
                Ok(items) => {
                    // `current` is empty here: take the Vec's buffer as it is.
                    self.current = VecDeque::from(items);
                    self.current_permits = chunk.permits;
                }
                Err(e) => {
                    self.budget.add_permits(chunk.permits as usize);
                    return Err(e);
                }
            }
        }
    }

    /// Asks the node whether this member is still in its generation; if
    /// not (or the node cannot say), flags a rebalance, which drops what
    /// was prefetched before anything more is handed out.
    async fn confirm_membership(&mut self) {
        let Some(m) = &self.membership else { return };
        let r = self
            .client
            .call(Body::HeartbeatRequest(v1::HeartbeatRequest {
                group: m.group.clone(),
                member_id: m.member_id.clone(),
                generation: m.generation,
                topic: self.config.topic.clone(),
            }))
            .await;
        match r {
            Ok(Body::HeartbeatResponse(h)) if h.generation == m.generation => {
                m.confirmed_ms
                    .store(m.since.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            _ => {
                tracing::info!(group = %m.group, member = %m.member_id, "membership not confirmed; re-joining before handing out more");
                m.rebalance.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Waits for the next item (no timeout).
    pub async fn next(&mut self) -> Result<ConsumedItem> {
        loop {
            if let Some(i) = self.poll(Duration::from_secs(3600)).await? {
                return Ok(i);
            }
        }
    }

    /// Commits the position of every partition that moved since the last
    /// commit. The node fsyncs the offsets before answering.
    pub async fn commit(&mut self) -> Result<()> {
        let Some(group) = self.config.group.clone() else {
            return Err(FabricError::Invalid("commit needs a consumer group".into()));
        };
        let lane = self.client.lane(0).await?;
        let moved: Vec<(u32, u64)> = self
            .positions
            .iter()
            .filter(|(p, o)| self.committed.get(p) != Some(o))
            .map(|(p, o)| (*p, *o))
            .collect();
        for (p, o) in moved {
            match lane
                .call(Body::OffsetCommitRequest(v1::OffsetCommitRequest {
                    group: group.clone(),
                    topic: self.config.topic.clone(),
                    partition: p,
                    offset: o,
                    member_id: self
                        .membership
                        .as_ref()
                        .map(|m| m.member_id.clone())
                        .unwrap_or_default(),
                    generation: self.membership.as_ref().map_or(0, |m| m.generation),
                    seek: self.sought.contains(&p),
                }))
                .await
            {
                Ok(Body::OffsetCommitResponse(_)) => {
                    self.committed.insert(p, o);
                    self.sought.remove(&p);
                }
                Err(
                    e @ FabricError::Remote {
                        code: v1::ErrorCode::Fenced,
                        ..
                    },
                ) => {
                    // Out of the generation: re-join at the next poll.
                    if let Some(m) = &self.membership {
                        m.rebalance.store(true, Ordering::Relaxed);
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
                Ok(other) => return Err(unexpected("OffsetCommitResponse", &other)),
            }
        }
        Ok(())
    }

    /// Leaves the group (if any) and stops the fetchers. Does not commit.
    pub async fn close(mut self) {
        if let Some(m) = self.membership.take() {
            m.heartbeat.abort();
            let _ = self
                .client
                .call(Body::LeaveGroupRequest(v1::LeaveGroupRequest {
                    group: m.group,
                    member_id: m.member_id,
                    topic: self.config.topic.clone(),
                }))
                .await;
        }
        self.stop_all();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for (_, (_, h)) in self.fetchers.drain() {
            h.abort();
        }
        if let Some(m) = &self.membership {
            m.heartbeat.abort();
        }
    }
}

struct Fetcher {
    client: Client,
    topic: String,
    partition: u32,
    epoch: u64,
    offset: u64,
    fetch_bytes_max: u32,
    wait_ms: u32,
    budget: Arc<Semaphore>,
    budget_max: usize,
    tx: mpsc::Sender<Chunk>,
    stats: Arc<ConsumerStats>,
    metadata_only: bool,
}

impl Fetcher {
    async fn run(mut self) {
        let topic: Arc<str> = self.topic.as_str().into();
        let mut lane = None;
        let mut backoff = Duration::from_millis(20);
        loop {
            if lane.is_none() {
                match self.client.lane(self.partition as usize).await {
                    Ok(l) => lane = Some(l),
                    Err(e) => {
                        tracing::debug!(error = %e, "fetch lane unavailable; retrying");
                        self.stats.fetch_retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                }
            }
            let l = lane.as_ref().expect("lane set above");
            let r = l
                .call(Body::FetchRequest(v1::FetchRequest {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    offset: self.offset,
                    max_bytes: self.fetch_bytes_max,
                    max_wait_ms: self.wait_ms,
                    metadata_only: self.metadata_only,
                }))
                .await;
            let resp = match r {
                Ok(Body::FetchResponse(f)) => f,
                Ok(other) => {
                    let _ = self.send(Err(unexpected("FetchResponse", &other)), 0).await;
                    return;
                }
                Err(FabricError::Remote {
                    code: ErrorCode::OffsetOutOfRange,
                    message,
                }) => {
                    // Retention removed what we wanted: continue at the first retained offset.
                    match self.client.metadata(&self.topic).await {
                        Ok(m) => {
                            let start = m
                                .partitions
                                .get(self.partition as usize)
                                .map_or(0, |p| p.start_offset);
                            if start > self.offset {
                                tracing::warn!(%message, skipped = start - self.offset, "items expired before they were read");
                                self.stats
                                    .skipped_expired
                                    .fetch_add(start - self.offset, Ordering::Relaxed);
                                self.offset = start;
                                continue;
                            }
                            let _ = self
                                .send(
                                    Err(FabricError::Remote {
                                        code: ErrorCode::OffsetOutOfRange,
                                        message,
                                    }),
                                    0,
                                )
                                .await;
                            return;
                        }
                        Err(_) => {
                            lane = None;
                            continue;
                        }
                    }
                }
                Err(e @ FabricError::Remote { .. }) => {
                    let _ = self.send(Err(e), 0).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "fetch failed; reconnecting");
                    self.stats.fetch_retries.fetch_add(1, Ordering::Relaxed);
                    lane = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            backoff = Duration::from_millis(20);
            let mut items = Vec::new();
            for b in &resp.batches {
                if let Err(e) =
                    decode_batch_items_into(&topic, self.partition, b, self.offset, &mut items)
                {
                    let _ = self.send(Err(e), 0).await;
                    return;
                }
            }
            if self.metadata_only {
                // A node that predates metadata-only fetches sent batches:
                // drop their payloads here, so callers see one behaviour.
                items = items
                    .into_iter()
                    .map(ConsumedItem::without_payload)
                    .collect();
                let had_metadata = !resp.items.is_empty();
                items.extend(
                    resp.items
                        .into_iter()
                        .filter(|m| m.offset >= self.offset)
                        .map(|m| ConsumedItem::from_meta(&topic, self.partition, m)),
                );
                if items.is_empty() && had_metadata {
                    self.offset = self.offset.max(resp.next_offset.min(self.offset + 1));
                    continue;
                }
            }
            if let Some(last) = items.last() {
                self.offset = last.offset + 1;
            } else if !resp.batches.is_empty() {
                // Batches entirely below our offset cannot come back; guard against a loop.
                self.offset = self.offset.max(resp.next_offset.min(self.offset + 1));
                continue;
            }
            if items.is_empty() {
                continue;
            }
            // What the items hold in memory here: a payload left out costs nothing.
            let bytes: usize = items
                .iter()
                .map(|i| {
                    let left_out = i.payload_bytes as usize
                        - i.item.payload.len().min(i.payload_bytes as usize);
                    i.record_bytes.saturating_sub(left_out)
                })
                .sum();
            let permits = bytes.clamp(1, self.budget_max) as u32;
            let Ok(p) = self.budget.acquire_many(permits).await else {
                return;
            };
            p.forget();
            if self.send(Ok(items), permits).await.is_err() {
                return;
            }
        }
    }

    async fn send(
        &self,
        items: Result<Vec<ConsumedItem>>,
        permits: u32,
    ) -> std::result::Result<(), ()> {
        self.tx
            .send(Chunk {
                partition: self.partition,
                epoch: self.epoch,
                items,
                permits,
            })
            .await
            .map_err(|_| ())
    }
}
