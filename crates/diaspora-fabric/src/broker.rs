//! The node's state without any networking: topics → partitions → logs,
//! consumer-group offsets and membership, counters. The QUIC server and the
//! gRPC admin service are thin shells over [`Broker`].

use crate::group::{Fence, JoinState, Subscription};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diaspora_log::{AppendOutcome, Log, LogConfig};
use diaspora_proto::v1;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::NodeConfig;
use crate::error::{FabricError, Result};

/// Per-topic settings, persisted as `topic.json` in the topic directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicSettings {
    /// Number of partitions (fixed at creation).
    pub partitions: u32,
    /// Retention by size per partition, bytes (None: node default).
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    /// Retention by age, milliseconds (None: node default).
    #[serde(default)]
    pub retention_ms: Option<u64>,
    /// Advisory compression for producers: "none" or "zstd".
    #[serde(default = "default_compression")]
    pub compression: String,
}

fn default_compression() -> String {
    "none".into()
}

impl TopicSettings {
    /// Settings with `partitions` partitions and node defaults otherwise.
    pub fn with_partitions(partitions: u32) -> Self {
        TopicSettings {
            partitions,
            retention_bytes: None,
            retention_ms: None,
            compression: default_compression(),
        }
    }

    /// Settings from the wire's topic configuration: 0 partitions means 1,
    /// 0 retention means the node default, an empty compression `none`.
    pub fn from_config(c: v1::TopicConfig) -> Self {
        TopicSettings {
            partitions: c.partitions.max(1),
            retention_bytes: (c.retention_bytes > 0).then_some(c.retention_bytes),
            retention_ms: (c.retention_ms > 0).then_some(c.retention_ms),
            compression: if c.compression.is_empty() {
                default_compression()
            } else {
                c.compression
            },
        }
    }

    /// The wire's topic configuration of these settings.
    pub fn to_config(&self) -> v1::TopicConfig {
        v1::TopicConfig {
            partitions: self.partitions,
            retention_bytes: self.retention_bytes.unwrap_or(0),
            retention_ms: self.retention_ms.unwrap_or(0),
            compression: self.compression.clone(),
        }
    }
}

/// One partition: its log and a notifier woken on every append.
pub struct Partition {
    /// The partition's durable log.
    pub log: Log,
    appended: Notify,
}

/// A topic and its partitions.
pub struct Topic {
    /// Topic name.
    pub name: String,
    /// Settings.
    pub settings: TopicSettings,
    /// Partitions, indexed by partition number.
    pub partitions: Vec<Arc<Partition>>,
    dir: PathBuf,
}

/// Result of a successful produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    /// Offset of the first record of the batch.
    pub base_offset: u64,
    /// Offset of the last record.
    pub last_offset: u64,
    /// The batch had been appended before (idempotent retry).
    pub duplicate: bool,
}

/// Result of a fetch.
#[derive(Debug, Clone, Default)]
pub struct FetchResult {
    /// Whole raw batches; the first may begin before the requested offset.
    pub batches: Vec<Bytes>,
    /// First offset still retained.
    pub start_offset: u64,
    /// Next offset to be written.
    pub next_offset: u64,
}

/// Monotonic counters of the node.
#[derive(Debug, Default)]
pub struct Counters {
    /// Items appended.
    pub items_appended: AtomicU64,
    /// Bytes appended (batch bytes).
    pub bytes_appended: AtomicU64,
    /// Items served to fetches (counted per batch record count).
    pub items_fetched: AtomicU64,
    /// Bytes served to fetches.
    pub bytes_fetched: AtomicU64,
    /// Open connections.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Malformed frames received.
    pub malformed_frames: AtomicU64,
    /// Duplicate batches (idempotent retries) absorbed.
    pub duplicate_batches: AtomicU64,
}

#[derive(Debug, Default)]
struct GroupState {
    /// Committed offsets: topic → partition → next offset to read.
    offsets: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Membership per topic subscription (see [`crate::group`]).
    subs: HashMap<String, Subscription>,
}

/// Assignment returned to a group member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The member's id.
    pub member_id: String,
    /// Generation of the group.
    pub generation: u64,
    /// Partitions assigned to this member.
    pub partitions: Vec<u32>,
}

/// The node's state. Cheap to share (`Arc<Broker>`); every method is thread-safe.
pub struct Broker {
    config: NodeConfig,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    groups: Mutex<HashMap<String, GroupState>>,
    /// Serialises topic create/delete.
    topic_admin: Mutex<()>,
    /// Counters.
    pub counters: Counters,
    /// Authentication and ACL checks (issue 19).
    pub guard: crate::guard::Guard,
    started: Instant,
    node_id: String,
    /// Memory for the partitions' newest batches (`Limits::tail_bytes_max`).
    tail_budget: Option<Arc<diaspora_log::TailBudget>>,
}

fn valid_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FabricError::Invalid(format!(
            "{kind} name '{name}' must be 1-200 characters of [A-Za-z0-9._-]"
        )))
    }
}

fn fence_error(group: &str, topic: &str, partition: u32, member_id: &str, f: Fence) -> FabricError {
    let what = format!("commit of group '{group}' on {topic}/{partition}");
    FabricError::Fenced(match f {
        Fence::UnknownMember => format!(
            "{what}: member '{member_id}' is not in the group (expired or left); re-join"
        ),
        Fence::StaleGeneration { member, current } => format!(
            "{what}: member '{member_id}' is at generation {member}, the group at {current}; re-join"
        ),
        Fence::NotAssigned => format!(
            "{what}: the partition is not assigned to member '{member_id}' in this generation"
        ),
        Fence::GroupHasMembers => format!(
            "{what}: the group has live members; commit as one of them (or seek through the admin plane)"
        ),
    })
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut f = std::fs::File::create(&tmp).map_err(|e| FabricError::io(ctx("create"), e))?;
    f.write_all(data)
        .map_err(|e| FabricError::io(ctx("write"), e))?;
    f.sync_all().map_err(|e| FabricError::io(ctx("fsync"), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| FabricError::io(format!("rename to {}", path.display()), e))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

impl Broker {
    /// Opens (recovering) every topic under `config.data_dir`.
    pub fn open(config: NodeConfig) -> Result<Broker> {
        let topics_dir = config.data_dir.join("topics");
        let groups_dir = config.data_dir.join("groups");
        for d in [&topics_dir, &groups_dir] {
            std::fs::create_dir_all(d)
                .map_err(|e| FabricError::io(format!("create {}", d.display()), e))?;
        }
        let node_id = match config.node_id.clone() {
            Some(id) => id,
            None => stable_node_id(&config.data_dir)?,
        };
        let guard = crate::guard::Guard::open(&config.data_dir, config.auth.clone())?;
        let tail_budget = (config.limits.tail_bytes_max > 0).then(|| {
            Arc::new(diaspora_log::TailBudget::new(
                config.limits.tail_bytes_max,
                config.limits.tail_partition_bytes_max,
            ))
        });
        let broker = Broker {
            guard,
            config,
            topics: RwLock::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            topic_admin: Mutex::new(()),
            counters: Counters::default(),
            started: Instant::now(),
            node_id,
            tail_budget,
        };
        let entries = std::fs::read_dir(&topics_dir)
            .map_err(|e| FabricError::io(format!("list {}", topics_dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| FabricError::io("list topics", e))?;
            let dir = entry.path();
            let meta = dir.join("topic.json");
            if !meta.exists() {
                // A topic whose creation did not finish, or a deletion in progress.
                tracing::warn!(dir = %dir.display(), "removing incomplete topic directory");
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
            let text = std::fs::read(&meta)
                .map_err(|e| FabricError::io(format!("read {}", meta.display()), e))?;
            let settings: TopicSettings = serde_json::from_slice(&text)
                .map_err(|e| FabricError::Invalid(format!("{}: {e}", meta.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let topic = broker.open_topic(&name, settings, dir)?;
            broker.topics.write().insert(name, Arc::new(topic));
        }
        let groups = std::fs::read_dir(&groups_dir)
            .map_err(|e| FabricError::io(format!("list {}", groups_dir.display()), e))?;
        for entry in groups {
            let entry = entry.map_err(|e| FabricError::io("list groups", e))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read(&path)
                .map_err(|e| FabricError::io(format!("read {}", path.display()), e))?;
            let offsets: BTreeMap<String, BTreeMap<u32, u64>> = serde_json::from_slice(&text)
                .map_err(|e| FabricError::Invalid(format!("{}: {e}", path.display())))?;
            let name = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            broker.groups.lock().entry(name).or_default().offsets = offsets;
        }
        // Membership as of each group's last completed rebalance: members
        // get a fresh session timeout to show they are still there.
        let members_dir = groups_dir.join("members");
        if let Ok(entries) = std::fs::read_dir(&members_dir) {
            let now = Instant::now();
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(name) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                    continue;
                };
                let text = std::fs::read(&path)
                    .map_err(|e| FabricError::io(format!("read {}", path.display()), e))?;
                let subs: BTreeMap<String, crate::group::Persisted> = serde_json::from_slice(&text)
                    .map_err(|e| FabricError::Invalid(format!("{}: {e}", path.display())))?;
                let mut groups = broker.groups.lock();
                let g = groups.entry(name).or_default();
                for (topic, p) in subs {
                    g.subs.insert(topic, Subscription::restore(p, now));
                }
            }
        }
        Ok(broker)
    }

    /// Writes a group's membership (at the end of a rebalance).
    fn persist_members(&self, group: &str, g: &GroupState) -> Result<()> {
        let dir = self.config.data_dir.join("groups").join("members");
        std::fs::create_dir_all(&dir)
            .map_err(|e| FabricError::io(format!("create {}", dir.display()), e))?;
        let subs: BTreeMap<&String, crate::group::Persisted> = g
            .subs
            .iter()
            .filter(|(_, s)| !s.members.is_empty())
            .map(|(t, s)| (t, s.persisted()))
            .collect();
        let json = serde_json::to_vec(&subs).expect("membership serialises");
        write_atomic(&dir.join(format!("{group}.json")), &json)
    }

    fn log_config(&self, settings: &TopicSettings) -> LogConfig {
        LogConfig {
            segment_bytes_max: self.config.segment_bytes_max,
            fsync: self.config.fsync,
            retention_bytes_max: settings.retention_bytes.or(self.config.retention_bytes_max),
            retention_age: settings
                .retention_ms
                .map(Duration::from_millis)
                .or(self.config.retention_age),
            limits: self.config.limits.batch_limits(),
            ..LogConfig::default()
        }
    }

    fn open_topic(&self, name: &str, settings: TopicSettings, dir: PathBuf) -> Result<Topic> {
        let mut partitions = Vec::with_capacity(settings.partitions as usize);
        for p in 0..settings.partitions {
            let pdir = dir.join(format!("p{p}"));
            let (mut log, report) = Log::open(&pdir, self.log_config(&settings))?;
            if let Some(budget) = &self.tail_budget {
                log.hold_tail(budget.clone());
            }
            tracing::info!(topic = name, partition = p, ?report, "partition recovered");
            partitions.push(Arc::new(Partition {
                log,
                appended: Notify::new(),
            }));
        }
        Ok(Topic {
            name: name.to_string(),
            settings,
            partitions,
            dir,
        })
    }

    /// The node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Time since the broker opened.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Creates a topic; fails if it exists or a limit is reached.
    pub fn create_topic(&self, name: &str, settings: TopicSettings) -> Result<()> {
        valid_name("topic", name)?;
        let limits = &self.config.limits;
        if settings.partitions == 0 {
            return Err(FabricError::Invalid(
                "a topic needs at least 1 partition".into(),
            ));
        }
        if settings.partitions > limits.partitions_max {
            return Err(FabricError::Limit {
                what: "partition count".into(),
                unit: "",
                value: settings.partitions.into(),
                limit_name: "partitions_max",
                limit: limits.partitions_max.into(),
            });
        }
        if !matches!(settings.compression.as_str(), "none" | "zstd") {
            return Err(FabricError::Invalid(format!(
                "compression '{}' is not one of none, zstd",
                settings.compression
            )));
        }
        let _admin = self.topic_admin.lock();
        {
            let topics = self.topics.read();
            if topics.contains_key(name) {
                return Err(FabricError::TopicExists(name.into()));
            }
            if topics.len() as u64 >= u64::from(limits.topics_max) {
                return Err(FabricError::Limit {
                    what: "topic count".into(),
                    unit: "",
                    value: topics.len() as u64 + 1,
                    limit_name: "topics_max",
                    limit: limits.topics_max.into(),
                });
            }
        }
        let dir = self.config.data_dir.join("topics").join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| FabricError::io(format!("create {}", dir.display()), e))?;
        let topic = self.open_topic(name, settings.clone(), dir.clone())?;
        // topic.json is written last: its presence marks a complete topic.
        let json = serde_json::to_vec_pretty(&settings).expect("settings serialise");
        write_atomic(&dir.join("topic.json"), &json)?;
        self.topics
            .write()
            .insert(name.to_string(), Arc::new(topic));
        Ok(())
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.topic_admin.lock();
        let topic = self
            .topics
            .write()
            .remove(name)
            .ok_or_else(|| FabricError::UnknownTopic(name.into()))?;
        // Wake long-polls so they notice the topic is gone.
        for p in &topic.partitions {
            p.appended.notify_waiters();
        }
        let meta = topic.dir.join("topic.json");
        std::fs::remove_file(&meta)
            .map_err(|e| FabricError::io(format!("remove {}", meta.display()), e))?;
        std::fs::remove_dir_all(&topic.dir)
            .map_err(|e| FabricError::io(format!("remove {}", topic.dir.display()), e))?;
        Ok(())
    }

    /// Names of all topics, sorted.
    pub fn list_topics(&self) -> Vec<String> {
        let mut names: Vec<String> = self.topics.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| FabricError::UnknownTopic(name.into()))
    }

    /// A partition of a topic.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let t = self.topic(topic)?;
        t.partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| FabricError::UnknownPartition {
                topic: topic.into(),
                partition,
                partitions: t.settings.partitions,
            })
    }

    /// Appends one raw record batch. The log validates it (CRC, limits,
    /// producer sequence) before anything is written.
    pub fn produce(&self, topic: &str, partition: u32, batch: Bytes) -> Result<ProduceAck> {
        let limits = &self.config.limits;
        if batch.len() as u64 > limits.batch_bytes_max {
            return Err(FabricError::Limit {
                what: "batch of".into(),
                unit: " bytes",
                value: batch.len() as u64,
                limit_name: "batch_bytes_max",
                limit: limits.batch_bytes_max,
            });
        }
        let p = self.partition(topic, partition)?;
        let len = batch.len() as u64;
        let outcome = p.log.append_bytes(batch)?;
        let ack = match outcome {
            AppendOutcome::Appended {
                base_offset,
                last_offset,
            } => {
                self.counters
                    .items_appended
                    .fetch_add(last_offset - base_offset + 1, Ordering::Relaxed);
                self.counters
                    .bytes_appended
                    .fetch_add(len, Ordering::Relaxed);
                p.appended.notify_waiters();
                ProduceAck {
                    base_offset,
                    last_offset,
                    duplicate: false,
                }
            }
            AppendOutcome::Duplicate {
                base_offset,
                last_offset,
            } => {
                self.counters
                    .duplicate_batches
                    .fetch_add(1, Ordering::Relaxed);
                ProduceAck {
                    base_offset,
                    last_offset,
                    duplicate: true,
                }
            }
        };
        Ok(ack)
    }

    /// Reads batches at `offset`, waiting up to `wait` for data if there is none yet.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        wait: Duration,
    ) -> Result<FetchResult> {
        let p = self.partition(topic, partition)?;
        let max_bytes = max_bytes.clamp(1, self.config.limits.fetch_bytes_max) as usize;
        let wait = wait.min(self.config.limits.fetch_wait_max);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = p.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = p.log.next_offset();
            if offset < next || wait.is_zero() || offset > next {
                let batches = if offset < next {
                    let part = p.clone();
                    let read = move || part.log.read(offset, max_bytes);
                    // Large reads go to the blocking pool so they never stall the reactor.
                    if max_bytes > (256 << 10) {
                        tokio::task::spawn_blocking(read)
                            .await
                            .map_err(|e| FabricError::Invalid(format!("read task: {e}")))??
                    } else {
                        read()?
                    }
                } else if offset > next {
                    return Err(diaspora_log::LogError::OffsetOutOfRange {
                        requested: offset,
                        start: p.log.start_offset(),
                        next,
                    }
                    .into());
                } else {
                    Vec::new()
                };
                let bytes: u64 = batches.iter().map(|b| b.len() as u64).sum();
                let items: u64 = batches
                    .iter()
                    .filter_map(|b| diaspora_log::decode_header(b).ok())
                    .map(|h| u64::from(h.record_count))
                    .sum();
                self.counters
                    .bytes_fetched
                    .fetch_add(bytes, Ordering::Relaxed);
                self.counters
                    .items_fetched
                    .fetch_add(items, Ordering::Relaxed);
                return Ok(FetchResult {
                    batches,
                    start_offset: p.log.start_offset(),
                    next_offset: p.log.next_offset(),
                });
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(FetchResult {
                    batches: Vec::new(),
                    start_offset: p.log.start_offset(),
                    next_offset: p.log.next_offset(),
                });
            }
            // Topic deleted while waiting?
            self.partition(topic, partition)?;
        }
    }

    /// Sets a group's next offset for a partition, durably (fsync) before
    /// returning, without fencing: an explicit seek (the admin plane's
    /// `CommitGroupOffset`).
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<()> {
        self.commit_checked(group, topic, partition, offset, None)
    }

    /// A consumer's commit, fenced (see [`crate::group`]): from a live
    /// member of the current generation that owns the partition (or, with
    /// an empty `member_id`, from outside a group that has no live members),
    /// and never moving the offset back unless `seek`.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_offset_fenced(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        member_id: &str,
        generation: u64,
        seek: bool,
    ) -> Result<()> {
        self.commit_checked(
            group,
            topic,
            partition,
            offset,
            Some((member_id, generation, seek)),
        )
    }

    fn commit_checked(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        fenced: Option<(&str, u64, bool)>,
    ) -> Result<()> {
        valid_name("group", group)?;
        let part = self.partition(topic, partition)?;
        let next = part.log.next_offset();
        if offset > next {
            return Err(FabricError::Invalid(format!(
                "commit offset {offset} is beyond the end of {topic}/{partition} (next offset {next})"
            )));
        }
        let mut groups = self.groups.lock();
        let g = groups.entry(group.to_string()).or_default();
        if let Some((member_id, generation, seek)) = fenced {
            let sub = g.subs.entry(topic.to_string()).or_default();
            sub.check_commit(member_id, generation, partition, Instant::now())
                .map_err(|f| fence_error(group, topic, partition, member_id, f))?;
            let committed = g
                .offsets
                .get(topic)
                .and_then(|o| o.get(&partition))
                .copied();
            if let Some(c) = committed {
                if offset < c && !seek {
                    return Err(FabricError::Invalid(format!(
                        "commit would move group '{group}' on {topic}/{partition} back from {c} to {offset}; seek explicitly to do that"
                    )));
                }
            }
        }
        g.offsets
            .entry(topic.to_string())
            .or_default()
            .insert(partition, offset);
        let json = serde_json::to_vec(&g.offsets).expect("offsets serialise");
        let path = self
            .config
            .data_dir
            .join("groups")
            .join(format!("{group}.json"));
        write_atomic(&path, &json)
    }

    /// Committed offsets of a group for a topic.
    pub fn group_offsets(&self, group: &str, topic: &str) -> BTreeMap<u32, u64> {
        self.groups
            .lock()
            .get(group)
            .and_then(|g| g.offsets.get(topic).cloned())
            .unwrap_or_default()
    }

    /// Joins (or re-joins) `member_id` (empty: a new member) to `group` for
    /// `topic`; returns the member id. Then ask [`Broker::poll_join`] until
    /// the rebalance completes (see [`crate::group`]).
    pub fn join_group(
        &self,
        group: &str,
        topic: &str,
        member_id: &str,
        session_timeout: Duration,
    ) -> Result<String> {
        valid_name("group", group)?;
        self.topic(topic)?;
        let mut groups = self.groups.lock();
        let g = groups.entry(group.to_string()).or_default();
        let sub = g.subs.entry(topic.to_string()).or_default();
        let now = Instant::now();
        sub.expire(now);
        let member_id = if member_id.is_empty() {
            format!("m-{:016x}", rand::random::<u64>())
        } else {
            member_id.to_string()
        };
        if !sub.members.contains_key(&member_id)
            && sub.members.len() as u64 >= u64::from(self.config.limits.group_members_max)
        {
            return Err(FabricError::Limit {
                what: "group member count".into(),
                unit: "",
                value: sub.members.len() as u64 + 1,
                limit_name: "group_members_max",
                limit: self.config.limits.group_members_max.into(),
            });
        }
        sub.join(&member_id, session_timeout, now);
        Ok(member_id)
    }

    /// A joined member's assignment once the rebalance completes (`None`
    /// while it waits for other members to re-join).
    pub fn poll_join(
        &self,
        group: &str,
        topic: &str,
        member_id: &str,
    ) -> Result<Option<Assignment>> {
        let partitions = self.topic(topic)?.settings.partitions;
        let mut groups = self.groups.lock();
        let g = groups
            .get_mut(group)
            .ok_or_else(|| FabricError::Group(format!("unknown group '{group}'")))?;
        let sub = g.subs.entry(topic.to_string()).or_default();
        let before = sub.generation;
        match sub.poll_join(member_id, partitions, Instant::now()) {
            None => Err(FabricError::Group(format!(
                "member '{member_id}' of group '{group}' did not re-join within the rebalance timeout"
            ))),
            Some(JoinState::Waiting) => Ok(None),
            Some(JoinState::Ready {
                generation,
                partitions,
            }) => {
                if generation != before {
                    self.persist_members(group, g)?;
                }
                Ok(Some(Assignment {
                    member_id: member_id.to_string(),
                    generation,
                    partitions,
                }))
            }
        }
    }

    /// Keeps a member alive; returns the generation it should be at (the
    /// next one while a rebalance is in progress: commit, then re-join).
    pub fn heartbeat(&self, group: &str, topic: &str, member_id: &str) -> Result<u64> {
        let mut groups = self.groups.lock();
        let g = groups
            .get_mut(group)
            .ok_or_else(|| FabricError::Group(format!("unknown group '{group}'")))?;
        g.subs
            .entry(topic.to_string())
            .or_default()
            .heartbeat(member_id, Instant::now())
            .map_err(|_| {
                FabricError::Group(format!(
                    "member '{member_id}' is not in group '{group}' (expired or never joined)"
                ))
            })
    }

    /// Removes a member from a group.
    pub fn leave_group(&self, group: &str, topic: &str, member_id: &str) {
        let mut groups = self.groups.lock();
        if let Some(g) = groups.get_mut(group) {
            if let Some(sub) = g.subs.get_mut(topic) {
                if sub.leave(member_id, Instant::now()) && sub.members.is_empty() {
                    if let Err(e) = self.persist_members(group, g) {
                        tracing::warn!(group, error = %e, "cannot persist group membership");
                    }
                }
            }
        }
    }

    /// Finds which topic a member belongs to (used by leave/heartbeat frames that name only the group).
    pub fn member_topic(&self, group: &str, member_id: &str) -> Option<String> {
        let groups = self.groups.lock();
        let g = groups.get(group)?;
        g.subs
            .iter()
            .find(|(_, s)| s.members.contains_key(member_id))
            .map(|(t, _)| t.clone())
    }

    /// Runs fsync-if-due and retention on every partition.
    pub fn housekeeping(&self) {
        let now_us = now_us();
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        for t in topics {
            for (i, p) in t.partitions.iter().enumerate() {
                if let Err(e) = p.log.sync_if_due() {
                    tracing::error!(topic = %t.name, partition = i, error = %e, "fsync failed");
                }
                if let Err(e) = p.log.apply_retention(now_us) {
                    tracing::error!(topic = %t.name, partition = i, error = %e, "retention failed");
                }
            }
        }
    }

    /// fsyncs every partition (used at shutdown).
    pub fn sync_all(&self) {
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        for t in topics {
            for p in &t.partitions {
                let _ = p.log.sync();
            }
        }
    }

    /// Total bytes on disk over all partitions.
    pub fn storage_bytes(&self) -> u64 {
        self.topics
            .read()
            .values()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.log.size_bytes())
            .sum()
    }

    /// Bytes stored by the topics whose names start with `prefix` (a tenant's).
    pub fn storage_bytes_under(&self, prefix: &str) -> u64 {
        self.topics
            .read()
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .flat_map(|(_, t)| t.partitions.iter())
            .map(|p| p.log.size_bytes())
            .sum()
    }
}

/// The node id kept in `DATA_DIR/node_id`, made on first start.
fn stable_node_id(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) => Err(FabricError::Invalid(format!(
            "{} is empty: delete it to get a new node id",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("node-{:016x}", rand::random::<u64>());
            write_atomic(&path, id.as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(FabricError::io(format!("read {}", path.display()), e)),
    }
}

/// The fabric's one wall clock, [`crate::item::now_us`], also reachable
/// here where callers have long found it.
pub use crate::item::now_us;
