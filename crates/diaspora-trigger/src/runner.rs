//! The trigger runner: reads the source topic as a consumer group, runs the
//! action on every event the filter matches, retries failures with back-off,
//! sends events that keep failing to the dead-letter topic, records every
//! action run, and commits its position.
//!
//! Guarantees:
//! - **At least once, with a key.** The position is committed only after
//!   the event's action succeeded or the event is on the dead-letter topic
//!   (acknowledged), and after every matching event. A runner killed
//!   mid-action runs that one event's action again when it restarts, with
//!   the same idempotency key (`TRIGGER:topic/partition/offset`); nothing
//!   is skipped. Events the filter passes over are committed in bulk
//!   (every `commit_interval`), so a restart may read some again — it never
//!   acts on them.
//! - **Bounded.** Attempts per event, back-off, the error text kept, the
//!   prefetch of the source (the consumer's byte budget; events are read
//!   without their payloads, which only a `publish` action reads).
//! - **One event at a time**, in order per partition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diaspora_fabric::item::{meta, now_us, ConsumedItem, Item, ItemRef};
use diaspora_fabric::{
    Client, Consumer, ConsumerConfig, FabricError, Producer, ProducerConfig, StartFrom, Stop,
};
use diaspora_provenance::{EdgeKind, Kind, Provenance, Record, TagValue, Target};

use crate::action::{Actions, Event, Failure};
use crate::filter::{Fields, Filter, Value};
use crate::source::EventSource;
use crate::spec::{SourceKind, TriggerSpec, STATUS_TOPIC};
use crate::status::{Outcome, RunRecord, State, TriggerStats, TriggerStatus};

/// Why a runner stopped short.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The spec cannot run.
    #[error("{0}")]
    Spec(String),
    /// The fabric refused or failed.
    #[error("{what}: {source}")]
    Fabric {
        /// What was being done.
        what: String,
        /// The error.
        source: FabricError,
    },
    /// The Kafka source failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The provenance store failed.
    #[error("provenance: {0}")]
    Provenance(String),
    /// An event could be neither acted on nor dead-lettered.
    #[error("{0}")]
    DeadLetter(String),
}

fn fab(what: impl Into<String>) -> impl FnOnce(FabricError) -> TriggerError {
    let what = what.into();
    move |source| TriggerError::Fabric { what, source }
}

/// How long a runner runs, and how often it reports.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stop after this many source events (matching or not).
    pub max_events: Option<u64>,
    /// Stop after this long without a source event.
    pub idle: Option<Duration>,
    /// Publish the status this often (if the status topic exists).
    pub status_interval: Duration,
    /// Commit the position of passed-over events this often.
    pub commit_interval: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_events: None,
            idle: None,
            status_interval: Duration::from_secs(2),
            commit_interval: Duration::from_secs(1),
        }
    }
}

/// An item's fields as a filter reads them: its metadata, `@key`,
/// `@timestamp_us`, and `@payload_len` from the fetched length (the
/// runner reads events without their payloads).
struct EventFields<'a>(&'a ConsumedItem);

impl Fields for EventFields<'_> {
    fn field(&self, name: &str) -> Option<Value> {
        match name {
            "@payload_len" => Some(Value::Int(self.0.payload_bytes as i64)),
            _ => self.0.item.field(name),
        }
    }
}

/// A running trigger.
pub struct Runner {
    spec: Arc<TriggerSpec>,
    filter: Filter,
    client: Client,
    source: EventSource,
    actions: Actions,
    dead_letter: Producer,
    status: Option<Producer>,
    prov: Option<Provenance>,
    stats: TriggerStats,
    started_us: i64,
}

impl Runner {
    /// Connects a trigger to its topics: joins the source's consumer group
    /// and opens the dead-letter topic (which must exist: `trigger create`
    /// makes it), the status topic (if it exists) and the provenance store.
    pub async fn start(spec: TriggerSpec, client: &Client) -> Result<Runner, TriggerError> {
        spec.check()
            .map_err(|e| TriggerError::Spec(e.to_string()))?;
        let filter = spec
            .compiled_filter()
            .map_err(|e| TriggerError::Spec(e.to_string()))?;
        let spec = Arc::new(spec);
        let dlq = spec.dead_letter_topic();
        let missing = |topic: &str| {
            let topic = topic.to_string();
            let name = spec.name.clone();
            move |e: FabricError| {
                if e.code() == diaspora_proto::v1::ErrorCode::UnknownTopic {
                    TriggerError::Spec(format!(
                        "topic {topic} does not exist: `diaspora trigger create --spec FILE` creates a trigger's topics ({name})"
                    ))
                } else {
                    TriggerError::Fabric {
                        what: format!("looking up {topic}"),
                        source: e,
                    }
                }
            }
        };
        if spec.source.kind == SourceKind::Fabric {
            client
                .metadata(&spec.source.topic)
                .await
                .map_err(missing(&spec.source.topic))?;
        }
        client.metadata(&dlq).await.map_err(missing(&dlq))?;
        let status = match client.metadata(STATUS_TOPIC).await {
            Ok(_) => Some(
                Producer::new(client, ProducerConfig::new(STATUS_TOPIC))
                    .await
                    .map_err(fab(format!("publishing to {STATUS_TOPIC}")))?,
            ),
            Err(e) if e.code() == diaspora_proto::v1::ErrorCode::UnknownTopic => {
                tracing::warn!(
                    "{STATUS_TOPIC} does not exist: this trigger publishes no status (`trigger create` makes it)"
                );
                None
            }
            Err(e) => return Err(fab(format!("looking up {STATUS_TOPIC}"))(e)),
        };
        let dead_letter = Producer::new(client, ProducerConfig::new(dlq.clone()))
            .await
            .map_err(fab(format!("publishing to {dlq}")))?;
        let actions = Actions::new(spec.clone(), client)
            .await
            .map_err(TriggerError::Spec)?;
        let prov = match &spec.provenance {
            Some(url) => Some(
                tokio::task::block_in_place(|| Provenance::open(url))
                    .map_err(|e| TriggerError::Provenance(format!("opening {url}: {e}")))?,
            ),
            None => None,
        };
        let source = EventSource::open(&spec, client).await?;
        Ok(Runner {
            spec,
            filter,
            client: client.clone(),
            source,
            actions,
            dead_letter,
            status,
            prov,
            stats: TriggerStats::default(),
            started_us: now_us(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> &TriggerStats {
        &self.stats
    }

    /// Runs until `stop`, or what `opts` sets, and returns the counters.
    /// `on_run` sees the record of every action run as it completes.
    pub async fn run(
        mut self,
        stop: Arc<Stop>,
        opts: RunOptions,
        mut on_run: impl FnMut(&RunRecord),
    ) -> Result<TriggerStats, TriggerError> {
        let r = self.run_inner(&stop, &opts, &mut on_run).await;
        // Whatever happened, commit what is done (it never moves past an
        // event not yet acted on) and say how the runner ended.
        let committed = self.commit().await;
        let (state, error) = match (&r, &committed) {
            (Err(e), _) => (State::Failed, Some(e.to_string())),
            (Ok(()), Err(e)) => (State::Failed, Some(e.to_string())),
            _ => (State::Stopped, None),
        };
        self.publish_status(state, error).await;
        if let Some(s) = self.status.take() {
            let _ = s.close().await;
        }
        let _ = self.dead_letter.flush().await;
        let Runner {
            source,
            actions,
            dead_letter,
            stats,
            ..
        } = self;
        actions.close().await;
        let _ = dead_letter.close().await;
        source.close().await;
        r?;
        committed?;
        Ok(stats)
    }

    async fn run_inner(
        &mut self,
        stop: &Stop,
        opts: &RunOptions,
        on_run: &mut impl FnMut(&RunRecord),
    ) -> Result<(), TriggerError> {
        let mut last_event = Instant::now();
        let mut last_commit = Instant::now();
        let mut last_status: Option<Instant> = None;
        let mut dirty = false;
        loop {
            if stop.stopped() || opts.max_events.is_some_and(|n| self.stats.seen >= n) {
                return Ok(());
            }
            if last_status.map_or(true, |t| t.elapsed() >= opts.status_interval) {
                self.publish_status(State::Running, None).await;
                last_status = Some(Instant::now());
            }
            if dirty && last_commit.elapsed() >= opts.commit_interval {
                self.commit_or_warn().await;
                dirty = false;
                last_commit = Instant::now();
            }
            let polled = self.source.poll(Duration::from_millis(250)).await?;
            let Some(crate::source::Polled { item, origin }) = polled else {
                if self.source.waiting() {
                    // Waiting for the group to hand this member its
                    // partitions (after a crash, the dead member's session
                    // has to time out first): not idle.
                    last_event = Instant::now();
                }
                if opts.idle.is_some_and(|d| last_event.elapsed() >= d) {
                    return Ok(());
                }
                continue;
            };
            last_event = Instant::now();
            self.stats.seen += 1;
            dirty = true;
            if !self.filter.matches(&EventFields(&item)) {
                continue;
            }
            self.stats.matched += 1;
            let record = match self.act(&item, stop).await {
                Ok(Some(record)) => record,
                // Stopped while backing off: the event is not done.
                Ok(None) => {
                    self.unread(&item);
                    return Ok(());
                }
                Err(e) => {
                    self.unread(&item);
                    return Err(e);
                }
            };
            if let Err(e) = self.record(&record, origin.as_ref()).await {
                // Run again (and recorded then) after a restart.
                self.unread(&item);
                return Err(e);
            }
            on_run(&record);
            self.commit_or_warn().await;
            dirty = false;
            last_commit = Instant::now();
        }
    }

    /// Runs the action on one event with its retries; sends it to the
    /// dead-letter topic if it fails for good. `None` when stopped first.
    async fn act(
        &mut self,
        item: &ConsumedItem,
        stop: &Stop,
    ) -> Result<Option<RunRecord>, TriggerError> {
        let mut event = Event::new(&self.spec.name, item);
        let jitter = key_jitter(&event.key);
        let started_us = now_us();
        let retry = self.spec.retry;
        let mut attempt = 1;
        let failure = loop {
            event.attempt = attempt;
            self.stats.attempts += 1;
            match self.actions.attempt(&event, item).await {
                Ok(detail) => {
                    self.stats.succeeded += 1;
                    return Ok(Some(RunRecord {
                        trigger: self.spec.name.clone(),
                        key: event.key.clone(),
                        source: event.location(),
                        outcome: Outcome::Ok,
                        attempts: attempt,
                        detail,
                        started_us,
                        ended_us: now_us(),
                    }));
                }
                Err(f) => {
                    tracing::debug!(key = %event.key, attempt, error = f.message(), "attempt failed");
                    self.stats.last_error = Some(f.message().to_string());
                    if matches!(f, Failure::Permanent(_)) || attempt >= retry.attempts {
                        break f;
                    }
                }
            }
            self.stats.retries += 1;
            attempt += 1;
            stop.sleep(retry.backoff(attempt, jitter)).await;
            if stop.stopped() {
                return Ok(None);
            }
        };
        let detail = failure.message().to_string();
        self.dead_letter(&event, item, &detail, attempt, stop)
            .await?;
        self.stats.dead_lettered += 1;
        Ok(Some(RunRecord {
            trigger: self.spec.name.clone(),
            source: event.location(),
            key: event.key,
            outcome: Outcome::DeadLettered,
            attempts: attempt,
            detail,
            started_us,
            ended_us: now_us(),
        }))
    }

    /// Publishes the event, with why it failed, to the dead-letter topic
    /// and waits for the acknowledgement (retried like the action; the
    /// runner stops with an error rather than commit past an event it
    /// could not put anywhere).
    async fn dead_letter(
        &mut self,
        event: &Event,
        item: &ConsumedItem,
        error: &str,
        attempts: u32,
        stop: &Stop,
    ) -> Result<(), TriggerError> {
        let mut payload = item.item.payload.clone();
        let mut payload_missing = false;
        if item.payload_left_out() {
            match self
                .client
                .read_payload(&event.topic, event.partition, event.offset)
                .await
            {
                Ok(p) => payload = p,
                Err(e) => {
                    tracing::warn!(key = %event.key, error = %e, "dead-lettering without the payload");
                    payload = Bytes::new();
                    payload_missing = true;
                }
            }
        }
        let mut out = crate::action::event_item(event, item, payload);
        let m = &mut out.metadata;
        m.insert("trigger.error".into(), meta::string(error));
        m.insert("trigger.attempts".into(), meta::int(i64::from(attempts)));
        if payload_missing {
            m.insert("trigger.payload_missing".into(), meta::boolean(true));
        }
        let retry = self.spec.retry;
        let mut last = String::new();
        for attempt in 1..=retry.attempts.max(3) {
            let sent = async { self.dead_letter.send(out.clone()).await?.await };
            match sent.await {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            stop.sleep(retry.backoff(attempt + 1, key_jitter(&event.key)))
                .await;
            if stop.stopped() {
                break;
            }
        }
        Err(TriggerError::DeadLetter(format!(
            "event {} failed ({error}) and could not be put on {}: {last}",
            event.key,
            self.dead_letter.topic()
        )))
    }

    /// Records an action run as a provenance activity that used the event's
    /// record (when the store has one). A run repeated after a crash is
    /// recorded again, tagged `trigger.rerun`.
    async fn record(
        &mut self,
        run: &RunRecord,
        origin: Option<&ItemRef>,
    ) -> Result<(), TriggerError> {
        let Some(prov) = self.prov.as_mut() else {
            return Ok(());
        };
        let spec = &self.spec;
        let scheme = self.source.scheme();
        tokio::task::block_in_place(|| {
            let rerun = !prov
                .find_tag("trigger.key", &TagValue::Str(run.key.clone()), 1)
                .map_err(|e| e.to_string())?
                .is_empty();
            let mut rec = Record::new(Kind::Activity, format!("trigger:{}", spec.name));
            rec.time_us = run.ended_us;
            rec.uris.push(format!("{scheme}:{}", run.source));
            let tags = [
                ("trigger.name", TagValue::Str(spec.name.clone())),
                ("trigger.key", TagValue::Str(run.key.clone())),
                ("trigger.action", TagValue::Str(spec.action.kind().into())),
                (
                    "trigger.outcome",
                    TagValue::Str(
                        match run.outcome {
                            Outcome::Ok => "ok",
                            Outcome::DeadLettered => "dead_lettered",
                        }
                        .into(),
                    ),
                ),
                ("trigger.attempts", TagValue::Int(i64::from(run.attempts))),
                ("trigger.detail", TagValue::Str(run.detail.clone())),
                (
                    "trigger.duration_us",
                    TagValue::Int(run.ended_us - run.started_us),
                ),
            ];
            for (k, v) in tags {
                rec.tags.insert(k.into(), v);
            }
            if rerun {
                rec.tags
                    .insert("trigger.rerun".into(), TagValue::Bool(true));
            }
            // The record of the item the event stands for: itself, or for a
            // Kafka record a bridge wrote, the item it was bridged from.
            let used = origin
                .map(|o| {
                    prov.resolve(&Target::Items {
                        topic: o.topic.to_string(),
                        partition: o.partition,
                        from: o.offset,
                        to: o.offset,
                    })
                    .unwrap_or_default()
                })
                .unwrap_or_default();
            rec.parents = used.into_iter().map(|id| (id, EdgeKind::Used)).collect();
            prov.add(rec).map(|_| ()).map_err(|e| e.to_string())
        })
        .map_err(TriggerError::Provenance)
    }

    /// Moves the position back to an event in hand that is not done, so
    /// that the commit on the way out does not pass it: it is read (and
    /// acted on) again when the trigger restarts.
    fn unread(&mut self, item: &ConsumedItem) {
        self.source.unread(item);
    }

    async fn commit(&mut self) -> Result<(), TriggerError> {
        self.source.commit(&self.spec.group()).await?;
        self.stats.commits += 1;
        Ok(())
    }

    /// A commit that fails (the node unreachable, the group rebalanced) is
    /// not fatal: the events after the last commit are read again later,
    /// which the idempotency key makes safe.
    async fn commit_or_warn(&mut self) {
        if let Err(e) = self.commit().await {
            tracing::warn!(error = %e, "commit failed; events since the last commit will be read again");
        }
    }

    async fn publish_status(&mut self, state: State, error: Option<String>) {
        let Some(p) = &self.status else { return };
        let s = TriggerStatus {
            name: self.spec.name.clone(),
            state,
            source: self.spec.source.topic.clone(),
            filter: self.filter.to_string(),
            action: self.spec.action.kind().to_string(),
            dead_letter: self.spec.dead_letter_topic(),
            group: self.spec.group(),
            committed: self.source.positions(),
            stats: self.stats.clone(),
            error,
            pid: std::process::id(),
            started_us: self.started_us,
            updated_us: now_us(),
        };
        let item = Item {
            key: Bytes::from(self.spec.name.clone().into_bytes()),
            payload: serde_json::to_vec(&s).expect("a status serialises").into(),
            timestamp_us: now_us(),
            ..Default::default()
        };
        // Best effort: a status that cannot be sent is not worth stopping for.
        if let Err(e) = p.send_unacked(None, item).await {
            tracing::debug!(error = %e, "status not published");
        }
    }
}

/// A number derived from an event's key, for its back-off's jitter.
fn key_jitter(key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// The newest status of every trigger that published one (reads back at
/// most the last `window` messages of each partition of the status topic).
pub async fn statuses(
    client: &Client,
    window: u64,
) -> Result<std::collections::BTreeMap<String, TriggerStatus>, TriggerError> {
    let meta = client
        .metadata(STATUS_TOPIC)
        .await
        .map_err(fab(format!("looking up {STATUS_TOPIC}")))?;
    let mut messages: Vec<(i64, Bytes)> = Vec::new();
    for (p, info) in meta.partitions.iter().enumerate() {
        let end = info.next_offset;
        let from = end.saturating_sub(window).max(info.start_offset);
        if from >= end {
            continue;
        }
        let mut c = Consumer::assign(
            client,
            ConsumerConfig::new(STATUS_TOPIC).start(StartFrom::Offset(from)),
            &[p as u32],
        )
        .await
        .map_err(fab(format!("reading {STATUS_TOPIC}")))?;
        let mut at = from;
        while at < end {
            let Some(ci) = c
                .poll(Duration::from_secs(5))
                .await
                .map_err(fab(format!("reading {STATUS_TOPIC}")))?
            else {
                break;
            };
            at = ci.offset + 1;
            messages.push((ci.item.timestamp_us, ci.item.payload));
        }
        c.close().await;
    }
    // Across partitions, publication order is the items' timestamps.
    messages.sort_by_key(|(t, _)| *t);
    Ok(TriggerStatus::latest(messages.iter().map(|(_, b)| b.as_ref())).0)
}
