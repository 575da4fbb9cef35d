//! The shell that reads the node: every interval it samples the topics
//! through the admin plane (describe, group offsets, stats), reads what
//! arrived on the metrics topic and on the tailed event topics through the
//! data plane, and hands the page a [`Frame`] (serialised once, shared by
//! every browser).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use diaspora_fabric::item::meta::value_text;
use diaspora_fabric::{AdminClient, Client, ClientConfig, Consumer, ConsumerConfig, StartFrom};
use serde::Serialize;
use tokio::sync::watch;

use crate::core::{
    summarise, topic_views, PartitionSample, Sample, Services, ServicesView, Tail, TailEntry,
    TopicSample, TopicView,
};

/// Most topics sampled per interval (the rest are counted, not shown).
pub const TOPICS_MAX: usize = 500;
/// Most items read from one tailed topic (or the metrics topic) per interval.
pub const TAIL_READ_MAX: usize = 500;
/// Items of history a tail starts with.
pub const TAIL_HISTORY: u64 = 20;

/// Where the node is and how to read it.
#[derive(Debug, Clone)]
pub struct NodeSource {
    /// The node's admin address.
    pub admin: SocketAddr,
    /// The CA to verify it with.
    pub ca: PathBuf,
    /// A client certificate to present, if any.
    pub identity: Option<diaspora_fabric::tls::ClientIdentity>,
    /// A bearer token to present, if any.
    pub token: Option<String>,
    /// The data plane (for the metrics and event topics); `None`: admin only.
    pub data: Option<ClientConfig>,
    /// The metrics topic services publish on (`--metrics-interval-ms`).
    pub metrics_topic: String,
    /// Consumer groups whose lag to show (the admin plane cannot list groups).
    pub groups: Vec<String>,
    /// How often to sample.
    pub interval: Duration,
}

impl NodeSource {
    /// Connects to the admin plane as this source's identity.
    pub async fn admin(&self) -> Result<AdminClient, diaspora_fabric::FabricError> {
        AdminClient::connect_as(
            self.admin,
            &self.ca,
            self.identity.as_ref(),
            self.token.as_deref(),
        )
        .await
    }
}

/// The node's own figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeView {
    /// Node id.
    pub node_id: String,
    /// The node's auth mode.
    pub auth: String,
    /// Uptime, s.
    pub uptime_s: f64,
    /// Topics.
    pub topics: u32,
    /// Partitions.
    pub partitions: u32,
    /// Items appended per second, the whole node.
    pub items_per_s: f64,
    /// Bytes appended per second.
    pub bytes_per_s: f64,
    /// Items fetched per second.
    pub fetched_items_per_s: f64,
    /// Open connections.
    pub connections_open: u64,
    /// Bytes on disk.
    pub storage_bytes: u64,
}

/// What one tailed topic is for.
#[derive(Debug, Clone, Serialize)]
pub struct TailView {
    /// The topic.
    pub topic: String,
    /// `predictions`, `pool events`, `loop`, `invalidations`.
    pub role: &'static str,
    /// Its last events.
    pub tail: Tail,
}

/// Everything the page shows at one time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Frame {
    /// When, µs since the Unix epoch.
    pub t_us: i64,
    /// The node.
    pub node: NodeView,
    /// Its topics with rates, sizes, retention and lag.
    pub topics: Vec<TopicView>,
    /// Topics not shown (beyond [`TOPICS_MAX`]).
    pub topics_left_out: usize,
    /// The services, from the metrics topic.
    pub services: ServicesView,
    /// What the metrics topic is (`reading diaspora.metrics`, or why not).
    pub metrics_state: String,
    /// The tailed event topics.
    pub tails: Vec<TailView>,
    /// The consumer groups watched.
    pub groups_watched: Vec<String>,
    /// Whether the lineage explorer has a store.
    pub lineage: bool,
    /// What an in-process loop says of itself (`diaspora demo --dashboard`).
    pub loop_status: Option<crate::core::LoopStatus>,
    /// What went wrong reading the node this time, if anything.
    pub error: Option<String>,
}

/// Which topics are tailed, and as what.
pub fn tail_role(topic: &str) -> Option<&'static str> {
    if topic == "diaspora.predictions" {
        Some("predictions")
    } else if topic.starts_with("pool.") && topic.ends_with(".events") {
        Some("pool events")
    } else if topic == diaspora_provenance::NOTICE_TOPIC {
        Some("invalidations")
    } else if matches!(topic, "models" | "edge.models") {
        Some("loop")
    } else {
        None
    }
}

/// Most topics tailed at once.
pub const TAILS_MAX: usize = 16;

struct Tailer {
    role: &'static str,
    consumer: Consumer,
    tail: Tail,
}

/// Asked each interval for an in-process loop's status (the demo's).
pub type LoopProbe = std::sync::Arc<dyn Fn() -> crate::core::LoopStatus + Send + Sync>;

/// The sampling loop's state.
pub struct Poller {
    source: NodeSource,
    lineage: bool,
    loop_probe: Option<LoopProbe>,
    admin: Option<AdminClient>,
    client: Option<Client>,
    mode: String,
    previous: Option<Sample>,
    previous_stats: Option<(i64, diaspora_proto::v1::StatsResponse)>,
    services: Services,
    metrics: Option<Consumer>,
    metrics_state: String,
    tailers: BTreeMap<String, Tailer>,
}

impl Poller {
    /// A poller for `source`; `lineage` says whether the explorer has a store.
    pub fn new(source: NodeSource, lineage: bool, loop_probe: Option<LoopProbe>) -> Poller {
        Poller {
            source,
            lineage,
            loop_probe,
            admin: None,
            client: None,
            mode: String::new(),
            previous: None,
            previous_stats: None,
            services: Services::default(),
            metrics: None,
            metrics_state: "not read yet".into(),
            tailers: BTreeMap::new(),
        }
    }

    /// Samples every interval and publishes each frame on `tx` until every
    /// receiver is gone.
    pub async fn run(mut self, tx: watch::Sender<Arc<str>>) {
        let mut tick = tokio::time::interval(self.source.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let frame = self.frame().await;
            let json: Arc<str> = serde_json::to_string(&frame)
                .expect("a frame serialises")
                .into();
            if tx.send(json).is_err() {
                return;
            }
        }
    }

    /// One frame: samples the node now.
    pub async fn frame(&mut self) -> Frame {
        let mut frame = Frame {
            t_us: diaspora_fabric::item::now_us(),
            groups_watched: self.source.groups.clone(),
            lineage: self.lineage,
            ..Frame::default()
        };
        if let Err(e) = self.sample_admin(&mut frame).await {
            frame.error = Some(format!("admin plane {}: {e}", self.source.admin));
            self.admin = None;
        }
        self.read_events(&frame.topics).await;
        frame.services = self.services.view(frame.t_us);
        frame.loop_status = self.loop_probe.as_ref().map(|p| {
            let mut status = p();
            status.events.truncate(crate::core::LOOP_EVENTS_MAX);
            status
        });
        frame.metrics_state = self.metrics_state.clone();
        frame.tails = self
            .tailers
            .iter()
            .map(|(topic, t)| TailView {
                topic: topic.clone(),
                role: t.role,
                tail: t.tail.clone(),
            })
            .collect();
        frame
    }

    async fn sample_admin(
        &mut self,
        frame: &mut Frame,
    ) -> Result<(), diaspora_fabric::FabricError> {
        if self.admin.is_none() {
            let mut a = self.source.admin().await?;
            self.mode = a.who_am_i().await.map(|w| w.mode).unwrap_or_default();
            self.admin = Some(a);
        }
        let admin = self.admin.as_mut().expect("connected above");
        let stats = admin.stats().await?;
        let now = frame.t_us;
        let (items_per_s, bytes_per_s, fetched) = match &self.previous_stats {
            Some((t, p)) => {
                let dt = (now - t) as f64 / 1e6;
                (
                    crate::core::rate_per_s(p.items_appended, stats.items_appended, dt),
                    crate::core::rate_per_s(p.bytes_appended, stats.bytes_appended, dt),
                    crate::core::rate_per_s(p.items_fetched, stats.items_fetched, dt),
                )
            }
            None => (0.0, 0.0, 0.0),
        };
        frame.node = NodeView {
            node_id: stats.node_id.clone(),
            auth: self.mode.clone(),
            uptime_s: stats.uptime_ms as f64 / 1e3,
            topics: stats.topics,
            partitions: stats.partitions,
            items_per_s,
            bytes_per_s,
            fetched_items_per_s: fetched,
            connections_open: stats.connections_open,
            storage_bytes: stats.storage_bytes,
        };
        self.previous_stats = Some((now, stats));

        let mut names = admin.list_topics().await?;
        names.sort();
        frame.topics_left_out = names.len().saturating_sub(TOPICS_MAX);
        names.truncate(TOPICS_MAX);
        let mut sample = Sample {
            t_us: now,
            topics: Vec::with_capacity(names.len()),
        };
        for name in names {
            // A topic deleted between the list and the describe is skipped.
            let Ok(d) = admin.describe_topic(&name).await else {
                continue;
            };
            let config = d.config.unwrap_or_default();
            sample.topics.push(TopicSample {
                name,
                retention_bytes: config.retention_bytes,
                retention_ms: config.retention_ms,
                partitions: d
                    .partitions
                    .iter()
                    .map(|p| PartitionSample {
                        partition: p.partition,
                        start_offset: p.start_offset,
                        next_offset: p.next_offset,
                        size_bytes: p.size_bytes,
                    })
                    .collect(),
            });
        }
        frame.topics = topic_views(self.previous.as_ref(), &sample);
        for t in &mut frame.topics {
            for g in &self.source.groups {
                let Ok(r) = admin.group_offsets(g, &t.name).await else {
                    continue;
                };
                if r.offsets.is_empty() {
                    continue;
                }
                t.groups.push(crate::core::GroupLag {
                    group: g.clone(),
                    lag: r.offsets.iter().map(|o| o.lag).sum(),
                    partitions: r
                        .offsets
                        .iter()
                        .map(|o| (o.partition, o.committed, o.lag))
                        .collect(),
                });
            }
        }
        self.previous = Some(sample);
        Ok(())
    }

    /// Reads what arrived on the metrics topic and the tailed topics.
    async fn read_events(&mut self, topics: &[TopicView]) {
        let Some(data) = self.source.data.clone() else {
            self.metrics_state = "no data-plane connection configured".into();
            return;
        };
        if self.client.is_none() {
            match Client::connect(data).await {
                Ok(c) => self.client = Some(c),
                Err(e) => {
                    self.metrics_state = format!("data plane: {e}");
                    return;
                }
            }
        }
        let client = self.client.clone().expect("connected above");
        let metrics_topic = self.source.metrics_topic.clone();
        let metrics_exists = topics.iter().any(|t| t.name == metrics_topic);
        if self.metrics.is_none() {
            if metrics_exists {
                match open_tail(&client, &metrics_topic, topics).await {
                    Ok(c) => {
                        self.metrics = Some(c);
                        self.metrics_state = format!("reading {metrics_topic}");
                    }
                    Err(e) => self.metrics_state = format!("{metrics_topic}: {e}"),
                }
            } else {
                self.metrics_state = format!(
                    "topic {metrics_topic} does not exist: no service publishes metrics \
                     (start them with --metrics-interval-ms)"
                );
            }
        }
        if let Some(c) = self.metrics.as_mut() {
            for _ in 0..TAIL_READ_MAX {
                match c.poll(Duration::from_millis(2)).await {
                    Ok(Some(item)) => {
                        if let Ok(e) = diaspora_telemetry::decode_event(item.payload()) {
                            self.services.observe(e);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.metrics_state = format!("{metrics_topic}: {e}");
                        self.metrics = None;
                        break;
                    }
                }
            }
        }
        for t in topics {
            let Some(role) = tail_role(&t.name) else {
                continue;
            };
            if self.tailers.contains_key(&t.name) || self.tailers.len() >= TAILS_MAX {
                continue;
            }
            if let Ok(consumer) = open_tail(&client, &t.name, topics).await {
                self.tailers.insert(
                    t.name.clone(),
                    Tailer {
                        role,
                        consumer,
                        tail: Tail::default(),
                    },
                );
            }
        }
        // Topics deleted since are dropped.
        let gone: Vec<String> = self
            .tailers
            .keys()
            .filter(|k| !topics.iter().any(|t| &t.name == *k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(t) = self.tailers.remove(&k) {
                t.consumer.close().await;
            }
        }
        for t in self.tailers.values_mut() {
            for _ in 0..TAIL_READ_MAX {
                let Ok(Some(item)) = t.consumer.poll(Duration::from_millis(2)).await else {
                    break;
                };
                let meta: Vec<(String, String)> = item
                    .item
                    .metadata
                    .iter()
                    .filter_map(|(k, v)| value_text(v).map(|v| (k.clone(), v.into_owned())))
                    .collect();
                let (kind, text) = summarise(&meta, item.payload());
                t.tail.push(TailEntry {
                    item: format!("{}/{}/{}", item.topic, item.partition, item.offset),
                    t_us: item.item.timestamp_us,
                    kind,
                    text,
                });
            }
        }
    }
}

/// A consumer of every partition of `topic`, from [`TAIL_HISTORY`] items
/// before each end.
async fn open_tail(
    client: &Client,
    topic: &str,
    topics: &[TopicView],
) -> Result<Consumer, diaspora_fabric::FabricError> {
    let mut c = Consumer::assign(
        client,
        ConsumerConfig::new(topic).start(StartFrom::Latest),
        &[],
    )
    .await?;
    if let Some(t) = topics.iter().find(|t| t.name == topic) {
        for p in &t.partitions {
            let from = p
                .next_offset
                .saturating_sub(TAIL_HISTORY)
                .max(p.start_offset);
            c.seek(p.partition, from)?;
        }
    }
    Ok(c)
}
