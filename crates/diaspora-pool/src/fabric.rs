//! The pool on the fabric: its topics, the pool loop ([`run_pool`]), the
//! worker loop ([`run_worker`]), and the client calls behind the CLI
//! ([`submit`], [`send_control`], [`latest_status`], [`read_results`]).
//!
//! **Tasks** go to `pool.NAME.tasks` (as many partitions as `max_total`),
//! read by the workers as one consumer group (`pool.NAME.workers`, session
//! time-out = the heartbeat time-out). A worker commits a task's offset
//! only after its outcome is acknowledged, so a worker that dies mid-task
//! leaves it to the group: the next owner of the partition runs it again.
//!
//! **Outcomes** of every attempt go to `pool.NAME.outcomes`; the pool is the
//! only writer of `pool.NAME.results` and writes one result per task key
//! (the [`AttemptBook`] recognises a retried task that already succeeded;
//! the book is rebuilt from the results topic when the pool restarts, and
//! outcomes are committed only after their result is acknowledged — a
//! result is never lost and never written twice).
//!
//! **Retries**: a failed attempt is re-published after its back-off (held
//! in a bounded queue; its outcome stays uncommitted until then, so a pool
//! restart re-schedules it); a task whose retries are spent gets a failed
//! result, and a `skip` command tells workers to drop copies still queued.
//! A worker lost while holding tasks (from its last heartbeat) charges them
//! a retry, unless it was draining for its walltime or being retired.

use crate::attempts::{AttemptBook, Verdict};
use crate::messages::{
    to_bytes, truncate, Control, Event, MessageError, Outcome, SiteStatus, Status, Task, TaskKind,
    TaskResult, OUTPUT_MAX_BYTES,
};
use crate::policy::{CatchUp, PredictedShortfall};
use crate::prov::{Recorder, Run};
use crate::provider::local::LocalProvider;
use crate::provider::slurm::{SlurmConfig, SlurmProvider};
use crate::provider::Provider;
use crate::spec::{PoolSpec, ProviderKind};
use crate::supervisor::{Demand, PoolEvent, Supervisor};
use crate::workers::WorkerEvent;
use diaspora_fabric::item::now_us;
use diaspora_fabric::{
    ensure_topic, Client, Consumer, ConsumerConfig, FabricError, Producer, ProducerConfig,
    StartFrom, Stop, TopicAdmin, TopicSettings,
};
use diaspora_proto::v1::{self, frame::Body, Item};
use std::collections::{BTreeMap, HashSet, VecDeque};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Errors of the pool's fabric shell.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A fabric call failed.
    #[error("{context}: {source}")]
    Fabric {
        /// What the pool was doing.
        context: String,
        /// The fabric's error.
        #[source]
        source: FabricError,
    },
    /// A message could not be read.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// Something else, said plainly.
    #[error("{0}")]
    Other(String),
}

fn fab(context: impl Into<String>) -> impl FnOnce(FabricError) -> PoolError {
    let context = context.into();
    move |source| PoolError::Fabric { context, source }
}

/// Commits a group consumer's position. A `FENCED` answer — this member
/// was dropped from its group's generation while it ran a task (it did not
/// poll within the rebalance timeout) — is no failure: the consumer
/// re-joins at its next poll, and the partition's owner reads from the last
/// accepted commit, so at worst a task runs again and the one-result-per-key
/// rule keeps its first result.
async fn commit_fenced_ok(c: &mut Consumer, context: &str) -> Result<(), PoolError> {
    match c.commit().await {
        Err(FabricError::Remote {
            code: diaspora_proto::v1::ErrorCode::Fenced,
            message,
        }) => {
            tracing::info!(%message, "{context}: fenced; re-joining the group");
            Ok(())
        }
        r => r.map_err(fab(context)),
    }
}

/// The names of a pool's topics and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTopics {
    /// Tasks.
    pub tasks: String,
    /// Every attempt's outcome.
    pub outcomes: String,
    /// Final results, one per key.
    pub results: String,
    /// Heartbeats, worker and pool events, status.
    pub events: String,
    /// Commands.
    pub control: String,
    /// The workers' consumer group on `tasks`.
    pub worker_group: String,
    /// The pool's consumer group on `outcomes`.
    pub pool_group: String,
}

impl PoolTopics {
    /// The topics of pool `pool`.
    pub fn new(pool: &str) -> PoolTopics {
        PoolTopics {
            tasks: format!("pool.{pool}.tasks"),
            outcomes: format!("pool.{pool}.outcomes"),
            results: format!("pool.{pool}.results"),
            events: format!("pool.{pool}.events"),
            control: format!("pool.{pool}.control"),
            worker_group: format!("pool.{pool}.workers"),
            pool_group: format!("pool.{pool}.pool"),
        }
    }
}

/// Partitions of the tasks topic for `spec`: one per possible worker (so
/// every worker can own one), at most 256.
pub fn task_partitions(spec: &PoolSpec) -> u32 {
    spec.scaling.max_total.clamp(1, 256)
}

/// Creates the pool's topics (or checks that they exist as expected).
pub async fn ensure_topics(mut admin: TopicAdmin<'_>, spec: &PoolSpec) -> Result<(), PoolError> {
    let t = PoolTopics::new(&spec.name);
    ensure_topic(
        admin.reborrow(),
        &t.tasks,
        &TopicSettings::with_partitions(task_partitions(spec)),
    )
    .await
    .map_err(fab(format!("creating {}", t.tasks)))?;
    for name in [&t.outcomes, &t.results, &t.events, &t.control] {
        ensure_topic(admin.reborrow(), name, &TopicSettings::with_partitions(1))
            .await
            .map_err(fab(format!("creating {name}")))?;
    }
    ensure_migrate_topics(admin, &spec.name).await
}

fn item(key: &str, payload: Vec<u8>) -> Item {
    Item {
        key: key.as_bytes().to_vec().into(),
        payload: payload.into(),
        timestamp_us: now_us(),
        ..Default::default()
    }
}

async fn producer(client: &Client, topic: &str) -> Result<Producer, PoolError> {
    Producer::new(client, ProducerConfig::new(topic))
        .await
        .map_err(fab(format!("producing to {topic}")))
}

/// Publishes tasks and waits until every one is acknowledged.
pub async fn submit(client: &Client, pool: &str, tasks: &[Task]) -> Result<(), PoolError> {
    let t = PoolTopics::new(pool);
    let p = producer(client, &t.tasks).await?;
    let mut pending = Vec::with_capacity(tasks.len());
    for task in tasks {
        pending.push(
            p.send(item(&task.key, to_bytes(task)))
                .await
                .map_err(fab("submitting a task"))?,
        );
    }
    for d in pending {
        d.await.map_err(fab("submitting a task"))?;
    }
    p.close().await.map_err(fab("submitting tasks"))?;
    Ok(())
}

/// Publishes a control command.
pub async fn send_control(client: &Client, pool: &str, c: &Control) -> Result<(), PoolError> {
    let t = PoolTopics::new(pool);
    let p = producer(client, &t.control).await?;
    p.send(item("", to_bytes(c)))
        .await
        .map_err(fab("sending a command"))?
        .await
        .map_err(fab("sending a command"))?;
    p.close().await.map_err(fab("sending a command"))?;
    Ok(())
}

/// The newest [`Status`] the pool published (reads back at most the last
/// 2 000 events), or `None` if it never published one.
pub async fn latest_status(client: &Client, pool: &str) -> Result<Option<Status>, PoolError> {
    let t = PoolTopics::new(pool);
    let meta = client
        .metadata(&t.events)
        .await
        .map_err(fab("reading pool events"))?;
    let Some(p) = meta.partitions.first() else {
        return Ok(None);
    };
    let end = p.next_offset;
    let from = end.saturating_sub(2000).max(p.start_offset);
    let mut c = Consumer::assign(
        client,
        ConsumerConfig::new(&t.events).start(StartFrom::Offset(from)),
        &[0],
    )
    .await
    .map_err(fab("reading pool events"))?;
    let mut last = None;
    let mut at = from;
    while at < end {
        let Some(ci) = c
            .poll(Duration::from_secs(5))
            .await
            .map_err(fab("reading pool events"))?
        else {
            break;
        };
        at = ci.offset + 1;
        if let Ok(Event::Status(s)) = Event::parse(&ci.item.payload) {
            last = Some(s);
        }
    }
    c.close().await;
    Ok(last)
}

/// Every result on the results topic so far, in order.
pub async fn read_results(client: &Client, pool: &str) -> Result<Vec<TaskResult>, PoolError> {
    let t = PoolTopics::new(pool);
    let mut out = Vec::new();
    read_all(client, &t.results, |bytes| {
        if let Ok(r) = TaskResult::parse(bytes) {
            out.push(r);
        }
    })
    .await?;
    Ok(out)
}

/// Reads a topic from its start to its end as of now.
async fn read_all(client: &Client, topic: &str, mut f: impl FnMut(&[u8])) -> Result<(), PoolError> {
    let meta = client
        .metadata(topic)
        .await
        .map_err(fab(format!("reading {topic}")))?;
    let ends: BTreeMap<u32, (u64, u64)> = meta
        .partitions
        .iter()
        .map(|p| (p.partition, (p.start_offset, p.next_offset)))
        .collect();
    if ends.values().all(|(s, e)| s >= e) {
        return Ok(());
    }
    let mut c = Consumer::assign(client, ConsumerConfig::new(topic), &[])
        .await
        .map_err(fab(format!("reading {topic}")))?;
    let mut left: u64 = ends.values().map(|(s, e)| e.saturating_sub(*s)).sum();
    while left > 0 {
        let Some(ci) = c
            .poll(Duration::from_secs(10))
            .await
            .map_err(fab(format!("reading {topic}")))?
        else {
            return Err(PoolError::Other(format!(
                "{topic}: {left} items expected but none came for 10 s"
            )));
        };
        if ends.get(&ci.partition).is_some_and(|(_, e)| ci.offset < *e) {
            f(&ci.item.payload);
            left -= 1;
        }
    }
    c.close().await;
    Ok(())
}

/// Tasks waiting for the workers: the group's lag on the tasks topic.
pub async fn task_backlog(client: &Client, topics: &PoolTopics) -> Result<u64, PoolError> {
    group_lag(client, &topics.worker_group, &topics.tasks).await
}

/// A consumer group's lag on a topic (end offsets minus committed offsets;
/// a partition with no commit counts from its first retained offset).
pub async fn group_lag(client: &Client, group: &str, topic: &str) -> Result<u64, PoolError> {
    let meta = client
        .metadata(topic)
        .await
        .map_err(fab(format!("lag of {group}")))?;
    let resp = client
        .call(Body::OffsetFetchRequest(v1::OffsetFetchRequest {
            group: group.into(),
            topic: topic.into(),
        }))
        .await
        .map_err(fab(format!("lag of {group}")))?;
    let Body::OffsetFetchResponse(r) = resp else {
        return Err(PoolError::Other(format!(
            "lag of {group}: unexpected reply"
        )));
    };
    let committed: BTreeMap<u32, u64> = r.offsets.iter().map(|o| (o.partition, o.offset)).collect();
    Ok(meta
        .partitions
        .iter()
        .map(|p| {
            let c = committed
                .get(&p.partition)
                .copied()
                .unwrap_or(p.start_offset);
            p.next_offset.saturating_sub(c.max(p.start_offset))
        })
        .sum())
}

// ---------------------------------------------------------------- worker

/// A built-in task kind: its arguments in, its output (or an error) out.
/// It runs on a blocking thread.
pub type Builtin = Arc<dyn Fn(&serde_json::Value) -> Result<String, String> + Send + Sync>;

/// The built-in task kinds a worker knows, by name.
#[derive(Clone, Default)]
pub struct Builtins(pub BTreeMap<String, Builtin>);

impl Builtins {
    /// Adds a kind.
    pub fn with(
        mut self,
        name: &str,
        f: impl Fn(&serde_json::Value) -> Result<String, String> + Send + Sync + 'static,
    ) -> Self {
        self.0.insert(name.to_string(), Arc::new(f));
        self
    }
}

impl std::fmt::Debug for Builtins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Pool name.
    pub pool: String,
    /// This worker's id (from `DIASPORA_POOL_WORKER`).
    pub worker: String,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Group session time-out (the pool's heartbeat time-out).
    pub session_timeout: Duration,
    /// Skip-list entries remembered.
    pub skip_max: usize,
    /// Exit when this process (the local pool that started the worker,
    /// `DIASPORA_POOL_PARENT`) is gone.
    pub parent_pid: Option<u32>,
    /// Built-in task kinds.
    pub builtins: Builtins,
}

/// Whether the pool process `parent` still exists (a wrapper between the
/// pool and the worker, `sh -c …`, does not matter).
fn parent_alive(parent: Option<u32>) -> bool {
    // SAFETY: kill(2) with signal 0 sends nothing; it only checks that the
    // process exists (ESRCH when it does not).
    parent.map_or(true, |p| unsafe { libc::kill(p as i32, 0) } == 0)
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerSummary {
    /// Tasks run.
    pub ran: u64,
    /// Of those, failed.
    pub failed: u64,
    /// Tasks skipped (finished elsewhere).
    pub skipped: u64,
    /// Whether it stopped because it was drained.
    pub drained: bool,
}

#[derive(Default)]
struct WorkerShared {
    in_flight: Vec<String>,
    /// Tasks this worker yielded to another claimant (announced in its
    /// heartbeats while it waits on that worker).
    yielded: Vec<String>,
    /// The attempt of the task in hand.
    attempt: u32,
    /// When it was taken in hand, µs.
    since_us: i64,
    migratable: Vec<String>,
    draining: bool,
    skip: HashSet<String>,
    skip_order: VecDeque<String>,
    /// Migrations asked of this worker: task key → (migration id, target).
    migrate_out: BTreeMap<String, (String, String)>,
    /// Tasks to take over: (task, migration id, source).
    migrate_in: VecDeque<(Task, String, String)>,
    /// Task attempts other workers hold (from their heartbeats): (key,
    /// attempt) → (worker, last seen).
    holders: BTreeMap<(String, u32), Holder>,
    /// Attempts another worker held and then let go of (finished): a copy
    /// re-delivered here after a rebalance is not run again (a retry is a
    /// new attempt, and runs).
    let_go: HashSet<(String, u32)>,
    let_go_order: VecDeque<(String, u32)>,
    /// When this worker started following the others' heartbeats (what it
    /// knows of them is complete a couple of intervals later).
    peers_since: Option<Instant>,
}

/// Another worker holding a task attempt.
struct Holder {
    worker: String,
    seen: Instant,
    since_us: i64,
}

impl WorkerShared {
    /// Applies another worker's heartbeat. A task that leaves its
    /// `in_flight` was finished (let go of) — unless it is among the tasks
    /// it `yielded` to another claimant, which it did not run.
    fn saw(
        &mut self,
        worker: &str,
        in_flight: &[String],
        attempts: &[u32],
        since_us: &[i64],
        yielded: &[String],
        keep: usize,
    ) {
        let now = Instant::now();
        let held: Vec<(String, u32)> = in_flight
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), attempts.get(i).copied().unwrap_or(0)))
            .collect();
        let gone: Vec<(String, u32)> = self
            .holders
            .iter()
            .filter(|(k, h)| h.worker == worker && !held.contains(k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.holders.remove(&k);
            if yielded.contains(&k.0) {
                continue;
            }
            if self.let_go.insert(k.clone()) {
                self.let_go_order.push_back(k);
                while self.let_go_order.len() > keep {
                    if let Some(old) = self.let_go_order.pop_front() {
                        self.let_go.remove(&old);
                    }
                }
            }
        }
        for (i, k) in held.into_iter().enumerate() {
            self.holders.insert(
                k,
                Holder {
                    worker: worker.to_string(),
                    seen: now,
                    since_us: since_us.get(i).copied().unwrap_or(0),
                },
            );
        }
    }
}

/// Runs a worker until `stop` or a drain command: takes tasks from the
/// pool's group, runs them, publishes outcomes, heartbeats.
pub async fn run_worker(
    client: Client,
    opts: WorkerOptions,
    stop: Arc<Stop>,
) -> Result<WorkerSummary, PoolError> {
    let topics = PoolTopics::new(&opts.pool);
    let shared = Arc::new(Mutex::new(WorkerShared::default()));
    let done = Arc::new(AtomicBool::new(false));
    let events = producer(&client, &topics.events).await?;
    let events = Arc::new(events);

    // Heartbeats.
    let hb = {
        let (events, shared, done, stop) =
            (events.clone(), shared.clone(), done.clone(), stop.clone());
        let (worker, every) = (opts.worker.clone(), opts.heartbeat);
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let (in_flight, attempts, since_us, migratable, yielded) = {
                    let s = shared.lock().expect("lock");
                    let n = s.in_flight.len();
                    (
                        s.in_flight.clone(),
                        vec![s.attempt; n],
                        vec![s.since_us; n],
                        s.migratable.clone(),
                        s.yielded.clone(),
                    )
                };
                let e = Event::Heartbeat {
                    worker: worker.clone(),
                    in_flight,
                    attempts,
                    since_us,
                    migratable,
                    pid: std::process::id(),
                    yielded,
                };
                if let Err(err) = events.send_unacked(None, item(&worker, to_bytes(&e))).await {
                    tracing::warn!(error = %err, "heartbeat not sent");
                }
                stop.sleep(every).await;
            }
        })
    };

    // Commands.
    let ctl = {
        let mut c = Consumer::assign(&client, ConsumerConfig::new(&topics.control), &[])
            .await
            .map_err(fab("reading pool commands"))?;
        let (shared, done) = (shared.clone(), done.clone());
        let (me, skip_max) = (opts.worker.clone(), opts.skip_max.max(1));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let ci = match c.poll(Duration::from_millis(200)).await {
                    Ok(Some(ci)) => ci,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading pool commands");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let mut s = shared.lock().expect("lock");
                match Control::parse(&ci.item.payload) {
                    Ok(Control::DrainWorker { worker }) if worker == me => s.draining = true,
                    Ok(Control::MigrateOut {
                        key,
                        id,
                        worker,
                        to,
                    }) if worker == me => {
                        s.migrate_out.insert(key, (id, to));
                    }
                    Ok(Control::MigrateIn {
                        task,
                        id,
                        worker,
                        from,
                    }) if worker == me => s.migrate_in.push_back((task, id, from)),
                    Ok(Control::Skip { key }) => {
                        if s.skip.insert(key.clone()) {
                            s.skip_order.push_back(key);
                            while s.skip_order.len() > skip_max {
                                if let Some(old) = s.skip_order.pop_front() {
                                    s.skip.remove(&old);
                                }
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, offset = ci.offset, "bad pool command skipped")
                    }
                }
            }
            c.close().await;
        })
    };

    // Other workers' heartbeats: which tasks they hold.
    let peers = {
        let mut c = Consumer::assign(
            &client,
            ConsumerConfig::new(&topics.events).start(StartFrom::Latest),
            &[],
        )
        .await
        .map_err(fab("reading heartbeats"))?;
        let (shared, done) = (shared.clone(), done.clone());
        let (me, keep) = (opts.worker.clone(), opts.skip_max.max(1));
        shared.lock().expect("lock").peers_since = Some(Instant::now());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let ci = match c.poll(Duration::from_millis(200)).await {
                    Ok(Some(ci)) => ci,
                    Ok(None) => continue,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                if let Ok(Event::Heartbeat {
                    worker,
                    in_flight,
                    attempts,
                    since_us,
                    yielded,
                    ..
                }) = Event::parse(&ci.item.payload)
                {
                    if worker != me {
                        shared
                            .lock()
                            .expect("lock")
                            .saw(&worker, &in_flight, &attempts, &since_us, &yielded, keep);
                    }
                }
            }
            c.close().await;
        })
    };

    let outcomes = producer(&client, &topics.outcomes).await?;
    let control = producer(&client, &topics.control).await?;
    let mut cfg = ConsumerConfig::new(&topics.tasks).group(&topics.worker_group);
    cfg.session_timeout = opts.session_timeout;
    cfg.fetch_wait = Duration::from_millis(100);
    let mut tasks = Consumer::subscribe(&client, cfg)
        .await
        .map_err(fab("joining the workers' group"))?;

    let mut summary = WorkerSummary::default();
    let mut first_seen: BTreeMap<u32, Instant> = BTreeMap::new();
    let mut pending: Option<diaspora_fabric::item::ConsumedItem> = None;
    let result = async {
        loop {
            if stop.stopped() {
                break;
            }
            if !parent_alive(opts.parent_pid) {
                tracing::warn!(worker = %opts.worker, "the pool that started this worker is gone; exiting");
                break;
            }
            // A task moved here from another worker comes first.
            let moved_in = shared.lock().expect("lock").migrate_in.pop_front();
            if let Some((task, id, from)) = moved_in {
                let ctx = StatefulCtx {
                    client: &client,
                    pool: &opts.pool,
                    me: &opts.worker,
                    shared: &shared,
                    control: &control,
                    events: &events,
                };
                if let Some(outcome) = take_over(&ctx, task, &id, &from).await? {
                    summary.ran += 1;
                    outcomes
                        .send(item(&outcome.key, to_bytes(&outcome)))
                        .await
                        .map_err(fab("publishing an outcome"))?
                        .await
                        .map_err(fab("publishing an outcome"))?;
                }
                shared.lock().expect("lock").in_flight.clear();
                continue;
            }
            if shared.lock().expect("lock").draining {
                summary.drained = true;
                break;
            }
            let ci = match pending.take() {
                Some(ci) => ci,
                None => {
                    let Some(ci) = tasks
                        .poll(Duration::from_millis(200))
                        .await
                        .map_err(fab("reading tasks"))?
                    else {
                        continue;
                    };
                    ci
                }
            };
            // Partitions this worker was handed recently: the previous
            // owner may not have noticed the rebalance yet and may be
            // running the same task.
            let assigned = tasks.assignment();
            first_seen.retain(|p, _| assigned.contains(p));
            for p in assigned {
                first_seen.entry(p).or_insert_with(Instant::now);
            }
            let fresh = first_seen
                .get(&ci.partition)
                .is_some_and(|t| t.elapsed() < opts.session_timeout * 2);
            let started_us = now_us();
            let outcome = match Task::parse(&ci.item.payload) {
                Err(e) => {
                    let key = std::str::from_utf8(&ci.item.key)
                        .ok()
                        .filter(|k| !k.is_empty() && k.len() <= crate::messages::KEY_MAX_BYTES)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{}/{}/{}", ci.topic, ci.partition, ci.offset));
                    Outcome {
                        key,
                        attempt: 0,
                        worker: opts.worker.clone(),
                        ok: false,
                        output: String::new(),
                        error: Some(e.to_string()),
                        permanent: true,
                        task: None,
                        inputs: vec![],
                        started_us,
                        finished_us: now_us(),
                    }
                }
                Ok(task) => {
                    if shared.lock().expect("lock").skip.contains(&task.key) {
                        summary.skipped += 1;
                        commit_fenced_ok(&mut tasks, "committing a skipped task").await?;
                        continue;
                    }
                    // Re-delivered after a rebalance while another worker
                    // still runs it: wait for that one; skip it if it
                    // finishes, run it if that worker goes silent.
                    let mut run = wait_for_holder(&shared, &opts, &task.key, task.attempt, &stop).await;
                    if run == Some(true) && fresh {
                        run = claim(&shared, &opts, &events, &task, &stop).await;
                    }
                    let Some(run) = run else {
                        // A task is being moved here: take it over first,
                        // then come back to this one.
                        pending = Some(ci);
                        continue;
                    };
                    if !run {
                        summary.skipped += 1;
                        commit_fenced_ok(&mut tasks, "committing a task run elsewhere").await?;
                        continue;
                    }
                    {
                        let mut s = shared.lock().expect("lock");
                        s.in_flight = vec![task.key.clone()];
                        s.attempt = task.attempt;
                        if !fresh {
                            s.since_us = now_us();
                        }
                    }
                    // A retry waits out its back-off here.
                    let wait_us = task.not_before_us - now_us();
                    if wait_us > 0 {
                        stop.sleep(Duration::from_micros(wait_us as u64)).await;
                    }
                    let (ok, output, error) = if let TaskKind::Stateful { .. } = task.kind {
                        let ctx = StatefulCtx {
                            client: &client,
                            pool: &opts.pool,
                            me: &opts.worker,
                            shared: &shared,
                            control: &control,
                            events: &events,
                        };
                        match run_stateful(&ctx, &task, None).await? {
                            StatefulEnd::Finished(output) => (true, output, None),
                            StatefulEnd::Moved => {
                                // Its new worker publishes the outcome; the
                                // pool re-publishes the task if that worker
                                // is lost.
                                commit_fenced_ok(&mut tasks, "committing a moved task").await?;
                                let mut s = shared.lock().expect("lock");
                                s.in_flight.clear();
                                s.migratable.clear();
                                continue;
                            }
                        }
                    } else {
                        run_task(&task.kind, &opts.builtins).await
                    };
                    Outcome {
                        key: task.key.clone(),
                        attempt: task.attempt,
                        worker: opts.worker.clone(),
                        ok,
                        output,
                        error,
                        permanent: false,
                        inputs: task.inputs.clone(),
                        started_us,
                        finished_us: now_us(),
                        task: (!ok).then_some(task),
                    }
                }
            };
            summary.ran += 1;
            if !outcome.ok {
                summary.failed += 1;
            }
            outcomes
                .send(item(&outcome.key, to_bytes(&outcome)))
                .await
                .map_err(fab("publishing an outcome"))?
                .await
                .map_err(fab("publishing an outcome"))?;
            commit_fenced_ok(&mut tasks, "committing a task").await?;
            shared.lock().expect("lock").in_flight.clear();
        }
        Ok::<(), PoolError>(())
    }
    .await;
    done.store(true, Ordering::Relaxed);
    tasks.close().await;
    let _ = hb.await;
    let _ = ctl.await;
    let _ = peers.await;
    let _ = outcomes.close().await;
    let _ = control.close().await;
    if let Ok(p) = Arc::try_unwrap(events) {
        let _ = p.close().await;
    }
    result.map(|()| summary)
}

/// Claims a task read from a freshly assigned partition: announces it at
/// once, waits for the others' heartbeats, and yields to a worker with a
/// smaller id that claimed the same attempt (then waits for it like any
/// holder). Whether to run it.
async fn claim(
    shared: &Arc<Mutex<WorkerShared>>,
    opts: &WorkerOptions,
    events: &Arc<Producer>,
    task: &Task,
    stop: &Stop,
) -> Option<bool> {
    let mine = now_us();
    let beat = |in_flight: Vec<String>, yielded: Vec<String>| Event::Heartbeat {
        worker: opts.worker.clone(),
        attempts: vec![task.attempt; in_flight.len()],
        since_us: vec![mine; in_flight.len()],
        in_flight,
        migratable: vec![],
        pid: std::process::id(),
        yielded,
    };
    {
        let mut s = shared.lock().expect("lock");
        s.in_flight = vec![task.key.clone()];
        s.attempt = task.attempt;
        s.since_us = mine;
    }
    let _ = events
        .send_unacked(
            None,
            item(
                &opts.worker,
                to_bytes(&beat(vec![task.key.clone()], vec![])),
            ),
        )
        .await;
    stop.sleep(opts.heartbeat + Duration::from_millis(150))
        .await;
    let id = (task.key.clone(), task.attempt);
    let yield_to = {
        let s = shared.lock().expect("lock");
        // The earlier taker keeps it (ties: the smaller id); one of the two
        // always yields, never both.
        s.holders
            .get(&id)
            .filter(|h| h.seen.elapsed() < opts.session_timeout)
            .is_some_and(|h| (h.since_us, h.worker.as_str()) < (mine, opts.worker.as_str()))
    };
    if !yield_to {
        return Some(true);
    }
    // Yield: say so, or the others would take the dropped claim for a
    // finished task and skip a copy re-delivered to them after this
    // worker is gone (the task would be lost).
    {
        let mut s = shared.lock().expect("lock");
        s.in_flight.clear();
        s.yielded = vec![task.key.clone()];
    }
    let _ = events
        .send_unacked(
            None,
            item(
                &opts.worker,
                to_bytes(&beat(vec![], vec![task.key.clone()])),
            ),
        )
        .await;
    let run = wait_for_holder(shared, opts, &task.key, task.attempt, stop).await;
    shared.lock().expect("lock").yielded.clear();
    run
}

/// Whether to run task `key` now: false when another worker held it and
/// has let go of it (finished); waits while another live worker holds it;
/// `None` when a task moved to this worker interrupts the wait (the caller
/// takes that over first, and comes back).
async fn wait_for_holder(
    shared: &Arc<Mutex<WorkerShared>>,
    opts: &WorkerOptions,
    key: &str,
    attempt: u32,
    stop: &Stop,
) -> Option<bool> {
    let id = (key.to_string(), attempt);
    // Know the others first: a worker that just joined must have heard
    // every live worker's heartbeat before it trusts that nobody holds a
    // task (it may have been handed the task by a rebalance).
    let since = shared.lock().expect("lock").peers_since;
    if let Some(since) = since {
        let warm = opts.heartbeat * 2 + Duration::from_millis(100);
        let waited = since.elapsed();
        if waited < warm {
            stop.sleep(warm - waited).await;
        }
    }
    loop {
        {
            let s = shared.lock().expect("lock");
            if s.let_go.contains(&id) {
                return Some(false);
            }
            if !s.migrate_in.is_empty() {
                return None;
            }
            match s.holders.get(&id) {
                Some(h) if h.seen.elapsed() < opts.session_timeout => {}
                _ => return Some(true),
            }
        }
        if stop.stopped() {
            return Some(true);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs one task: (ok, output, error).
async fn run_task(kind: &TaskKind, builtins: &Builtins) -> (bool, String, Option<String>) {
    match kind {
        TaskKind::Stateful { .. } => (
            false,
            String::new(),
            Some("a stateful task runs through run_stateful".into()),
        ),
        TaskKind::Builtin { name, args } => {
            let Some(f) = builtins.0.get(name).cloned() else {
                return (
                    false,
                    String::new(),
                    Some(format!(
                        "this worker has no built-in task '{name}' (it knows {:?})",
                        builtins.0.keys().collect::<Vec<_>>()
                    )),
                );
            };
            let args = args.clone();
            match tokio::task::spawn_blocking(move || f(&args)).await {
                Ok(Ok(mut out)) => {
                    let cut = truncate(&mut out, OUTPUT_MAX_BYTES);
                    (
                        true,
                        out,
                        cut.then(|| format!("output cut to {OUTPUT_MAX_BYTES} bytes")),
                    )
                }
                Ok(Err(e)) => (false, String::new(), Some(format!("{name}: {e}"))),
                Err(e) => (false, String::new(), Some(format!("{name} panicked: {e}"))),
            }
        }
        TaskKind::Echo { data } => (true, data.clone(), None),
        TaskKind::Sleep { ms } => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            (true, String::new(), None)
        }
        TaskKind::Command { argv, timeout_ms } => {
            let mut cmd = tokio::process::Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    return (
                        false,
                        String::new(),
                        Some(format!("cannot run {}: {e}", argv[0])),
                    )
                }
            };
            let limit = timeout_ms.map_or(Duration::from_secs(u64::MAX / 4), Duration::from_millis);
            match tokio::time::timeout(limit, child.wait_with_output()).await {
                Err(_) => (
                    false,
                    String::new(),
                    Some(format!(
                        "{} timed out after {} ms",
                        argv[0],
                        limit.as_millis()
                    )),
                ),
                Ok(Err(e)) => (false, String::new(), Some(format!("{}: {e}", argv[0]))),
                Ok(Ok(out)) => {
                    let mut stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                    let cut = truncate(&mut stdout, OUTPUT_MAX_BYTES);
                    if out.status.success() {
                        (
                            true,
                            stdout,
                            cut.then(|| format!("output cut to {OUTPUT_MAX_BYTES} bytes")),
                        )
                    } else {
                        let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                        truncate(&mut stderr, 4096);
                        (
                            false,
                            stdout,
                            Some(format!(
                                "{} ended with {}: {}",
                                argv[0],
                                out.status,
                                stderr.trim()
                            )),
                        )
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------- stateful tasks

struct StatefulCtx<'a> {
    client: &'a Client,
    pool: &'a str,
    me: &'a str,
    shared: &'a Arc<Mutex<WorkerShared>>,
    control: &'a Producer,
    events: &'a Arc<Producer>,
}

enum StatefulEnd {
    /// Ran to its end here: its output.
    Finished(String),
    /// Moved to another worker.
    Moved,
}

/// The running time (ms) and writes a stateful task keeps in its first 16
/// bytes, so they travel with its state.
fn counters(b: &[u8]) -> (u64, u64) {
    let u = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    (u(0), u(8))
}

/// Runs a stateful task (from `initial` when it was moved here) until its
/// running time is spent, or until it is moved away on the pool's command.
async fn run_stateful(
    ctx: &StatefulCtx<'_>,
    task: &Task,
    initial: Option<crate::migrate::PagedState>,
) -> Result<StatefulEnd, PoolError> {
    use crate::migrate::PagedState;
    let TaskKind::Stateful {
        bytes,
        page,
        write_every_ms,
        run_ms,
    } = task.kind
    else {
        return Err(PoolError::Other("not a stateful task".into()));
    };
    let resumed = initial.is_some();
    let state =
        Arc::new(tokio::sync::Mutex::new(initial.unwrap_or_else(|| {
            PagedState::new(bytes as usize, page as usize)
        })));
    {
        let mut s = ctx.shared.lock().expect("lock");
        if s.in_flight != [task.key.clone()] {
            s.since_us = now_us();
        }
        s.in_flight = vec![task.key.clone()];
        s.attempt = task.attempt;
        s.migratable = vec![task.key.clone()];
    }
    let halt = Arc::new(AtomicBool::new(false));
    let mutator = {
        let (state, halt) = (state.clone(), halt.clone());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ now_us() as u64;
        tokio::spawn(async move {
            let mut last = Instant::now();
            loop {
                if halt.load(Ordering::Relaxed) {
                    return false;
                }
                {
                    let mut st = state.lock().await;
                    let (ran, writes) = counters(st.bytes());
                    let ran = ran + last.elapsed().as_millis() as u64;
                    last = Instant::now();
                    st.write(0, &ran.to_le_bytes());
                    if ran >= run_ms {
                        return true;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let len = st.bytes().len();
                    let n = (len - 16).min(4096);
                    let at = 16 + (x as usize) % (len - 16 - n + 1);
                    st.write(at, &vec![(writes % 251) as u8; n]);
                    st.write(8, &(writes + 1).to_le_bytes());
                }
                tokio::time::sleep(Duration::from_millis(write_every_ms.max(1))).await;
            }
        })
    };
    let _ = resumed;
    loop {
        if mutator.is_finished() {
            let _ = mutator.await;
            let st = state.lock().await;
            let (ran, writes) = counters(st.bytes());
            let out = serde_json::json!({
                "checksum": st.checksum(),
                "writes": writes,
                "ran_ms": ran,
            });
            let mut s = ctx.shared.lock().expect("lock");
            s.migratable.clear();
            return Ok(StatefulEnd::Finished(out.to_string()));
        }
        let asked = ctx
            .shared
            .lock()
            .expect("lock")
            .migrate_out
            .remove(&task.key);
        if let Some((id, to)) = asked {
            tracing::info!(key = %task.key, %id, %to, "migrating");
            let c = Control::MigrateIn {
                task: task.clone(),
                id: id.clone(),
                worker: to.clone(),
                from: ctx.me.to_string(),
            };
            ctx.control
                .send(item("", to_bytes(&c)))
                .await
                .map_err(fab("announcing a migration"))?
                .await
                .map_err(fab("announcing a migration"))?;
            match migrate_send(ctx.client, ctx.pool, &id, state.clone(), Default::default()).await {
                Ok((report, frozen)) => {
                    let checksum = frozen.checksum();
                    halt.store(true, Ordering::Relaxed);
                    drop(frozen);
                    let _ = mutator.await;
                    let e = Event::TaskMigrated {
                        key: task.key.clone(),
                        from: ctx.me.to_string(),
                        to,
                        report,
                        checksum,
                    };
                    ctx.events
                        .send(item(&task.key, to_bytes(&e)))
                        .await
                        .map_err(fab("publishing an event"))?
                        .await
                        .map_err(fab("publishing an event"))?;
                    return Ok(StatefulEnd::Moved);
                }
                Err(e) => {
                    let ev = Event::MigrationFailed {
                        key: task.key.clone(),
                        reason: e.to_string(),
                    };
                    let _ = ctx
                        .events
                        .send_unacked(None, item(&task.key, to_bytes(&ev)))
                        .await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Takes over a task moved here: receives its state, then runs it on. Its
/// outcome says where it came from and the state's checksum on arrival.
async fn take_over(
    ctx: &StatefulCtx<'_>,
    task: Task,
    id: &str,
    from: &str,
) -> Result<Option<Outcome>, PoolError> {
    let TaskKind::Stateful { bytes, page, .. } = task.kind else {
        return Ok(None);
    };
    {
        let mut s = ctx.shared.lock().expect("lock");
        s.in_flight = vec![task.key.clone()];
        s.attempt = task.attempt;
        s.since_us = now_us();
    }
    let started_us = now_us();
    tracing::info!(key = %task.key, %id, %from, "taking over");
    let mut state = crate::migrate::PagedState::new(bytes as usize, page as usize);
    if let Err(e) = migrate_receive(
        ctx.client,
        ctx.pool,
        id,
        &mut state,
        Duration::from_secs(120),
    )
    .await
    {
        let ev = Event::MigrationFailed {
            key: task.key.clone(),
            reason: format!("receiving on {}: {e}", ctx.me),
        };
        let _ = ctx
            .events
            .send_unacked(None, item(&task.key, to_bytes(&ev)))
            .await;
        return Ok(None);
    }
    let arrived = state.checksum();
    let output = match run_stateful(ctx, &task, Some(state)).await? {
        StatefulEnd::Finished(out) => {
            let mut v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            v["moved_from"] = serde_json::json!(from);
            v["checksum_on_arrival"] = serde_json::json!(arrived);
            v.to_string()
        }
        // Moved on again: its next worker reports.
        StatefulEnd::Moved => return Ok(None),
    };
    Ok(Some(Outcome {
        key: task.key.clone(),
        attempt: task.attempt,
        worker: ctx.me.to_string(),
        ok: true,
        output,
        error: None,
        permanent: false,
        inputs: task.inputs.clone(),
        started_us,
        finished_us: now_us(),
        task: None,
    }))
}

// ---------------------------------------------------------------- the pool

/// How the pool loop runs.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Time between rounds.
    pub tick: Duration,
    /// Time between status snapshots on the events topic.
    pub status_every: Duration,
    /// Workers' stdout/stderr directory.
    pub log_dir: Option<PathBuf>,
    /// Extra environment for workers (the fabric's address and CA).
    pub worker_env: Vec<(String, String)>,
    /// Task keys the attempt book remembers.
    pub book_capacity: usize,
    /// Topic of predictions to act on (`diaspora.predictions`), if any.
    pub predictions_topic: Option<String>,
    /// Record every task run as a provenance activity in this store (a
    /// SQLite path or postgres://…).
    pub provenance: Option<String>,
    /// Resources this pool serves: a prediction whose monitor, metric or
    /// `resource` label names one of them scales the pool up.
    pub serves: Vec<String>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            tick: Duration::from_millis(200),
            status_every: Duration::from_secs(1),
            log_dir: None,
            worker_env: Vec::new(),
            book_capacity: 1_000_000,
            predictions_topic: None,
            serves: Vec::new(),
            provenance: None,
        }
    }
}

/// The environment a pool gives its workers: where the node is (a site's
/// `fabric_addr` overrides the address), its CA, and the heartbeat
/// settings (`diaspora pool worker` reads these variables).
pub fn worker_env(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    heartbeat: &crate::spec::HeartbeatSpec,
) -> Vec<(String, String)> {
    vec![
        ("DIASPORA_POOL_ADDR".into(), addr.to_string()),
        ("DIASPORA_POOL_CA".into(), ca.display().to_string()),
        (
            "DIASPORA_POOL_HEARTBEAT_MS".into(),
            heartbeat.interval_ms.to_string(),
        ),
        (
            "DIASPORA_POOL_SESSION_MS".into(),
            heartbeat.timeout_ms.to_string(),
        ),
    ]
}

/// The providers a spec's sites call for.
pub fn providers_for(spec: &PoolSpec) -> Vec<Box<dyn Provider>> {
    spec.sites
        .iter()
        .map(|s| -> Box<dyn Provider> {
            match s.provider {
                ProviderKind::Local => Box::new(LocalProvider::default()),
                ProviderKind::Slurm => Box::new(SlurmProvider::new(SlurmConfig {
                    partition: s.partition.clone(),
                    account: s.account.clone(),
                    ..Default::default()
                })),
            }
        })
        .collect()
}

/// External demand the pool loop is fed (tests and the catch-up shell).
#[derive(Debug, Clone, Default)]
pub struct ExternalDemand {
    /// Services catching up.
    pub catch_up: Vec<CatchUp>,
}

/// Runs the pool until `stop`: keeps its workers, dispatches retries,
/// writes results once per key, publishes events and status. Every worker
/// is stopped before it returns.
pub async fn run_pool(
    client: Client,
    spec: PoolSpec,
    providers: Vec<Box<dyn Provider>>,
    opts: PoolOptions,
    demand: Arc<Mutex<ExternalDemand>>,
    stop: Arc<Stop>,
) -> Result<Status, PoolError> {
    let topics = PoolTopics::new(&spec.name);
    let recorder = match &opts.provenance {
        Some(url) => Some(Recorder::open(url).map_err(PoolError::Other)?),
        None => None,
    };
    let mut book = AttemptBook::new(spec.tasks.clone(), opts.book_capacity);
    // Rebuild what was delivered before a restart.
    read_all(&client, &topics.results, |bytes| {
        if let Ok(r) = TaskResult::parse(bytes) {
            if r.ok {
                book.succeeded(&r.key);
            } else {
                book.fail_for_good(&r.key);
            }
        }
    })
    .await?;

    let mut outcomes = Consumer::subscribe(
        &client,
        ConsumerConfig::new(&topics.outcomes).group(&topics.pool_group),
    )
    .await
    .map_err(fab("reading outcomes"))?;
    let mut events_in = Consumer::assign(
        &client,
        ConsumerConfig::new(&topics.events).start(StartFrom::Latest),
        &[],
    )
    .await
    .map_err(fab("reading heartbeats"))?;
    let mut control_in = Consumer::assign(
        &client,
        ConsumerConfig::new(&topics.control).start(StartFrom::Latest),
        &[],
    )
    .await
    .map_err(fab("reading commands"))?;
    let mut predictions_in = match &opts.predictions_topic {
        Some(t) => Some(
            Consumer::assign(
                &client,
                ConsumerConfig::new(t).start(StartFrom::Latest),
                &[],
            )
            .await
            .map_err(fab(format!("reading {t}")))?,
        ),
        None => None,
    };
    let tasks_out = producer(&client, &topics.tasks).await?;
    let results_out = producer(&client, &topics.results).await?;
    let events_out = producer(&client, &topics.events).await?;
    let control_out = producer(&client, &topics.control).await?;

    let mut sup = Supervisor::new(spec.clone(), providers);
    if let Some(d) = &opts.log_dir {
        sup = sup.log_dir(d.clone());
    }
    for (k, v) in &opts.worker_env {
        sup = sup.env(k.clone(), v.clone());
    }
    let mut sup = Some(sup);
    let t0 = Instant::now();
    let now_ms = || t0.elapsed().as_millis() as u64;
    let mut status = Status {
        pool: spec.name.clone(),
        ..Default::default()
    };
    let mut predictions: Vec<PredictedShortfall> = Vec::new();
    let mut last_status = None::<Instant>;
    let mut last_drained: BTreeMap<String, bool> = BTreeMap::new();
    // Live migration: migratable tasks by worker (from heartbeats), tasks
    // on their way to a new worker, and a counter for migration ids.
    let mut migratable: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut moving: BTreeMap<String, (String, Task)> = BTreeMap::new();
    let mut migrations: u64 = 0;
    let mut throughput: VecDeque<(Instant, u64, u32)> = VecDeque::new();
    let prediction_workers = spec
        .scaling
        .prediction_workers
        .unwrap_or(spec.scaling.max_total)
        .min(spec.scaling.max_total);

    let result = async {
        while !stop.stopped() {
            let now = now_ms();
            let mut pool_events: Vec<PoolEvent> = Vec::new();
            let s = sup.as_mut().expect("supervisor");

            // Heartbeats.
            for _ in 0..10_000 {
                let Some(ci) = events_in
                    .poll(Duration::ZERO)
                    .await
                    .map_err(fab("reading heartbeats"))?
                else {
                    break;
                };
                if let Ok(Event::Heartbeat {
                    worker,
                    in_flight,
                    migratable: m,
                    ..
                }) = Event::parse(&ci.item.payload)
                {
                    if m.is_empty() {
                        migratable.remove(&worker);
                    } else {
                        migratable.insert(worker.clone(), m);
                    }
                    pool_events.extend(s.heartbeat(&worker, in_flight, now));
                }
            }
            // Commands.
            for _ in 0..1000 {
                let Some(ci) = control_in
                    .poll(Duration::ZERO)
                    .await
                    .map_err(fab("reading commands"))?
                else {
                    break;
                };
                match Control::parse(&ci.item.payload) {
                    Ok(Control::DrainSite { site }) => {
                        // Migratable tasks at the site move to another site
                        // first; their workers leave once they have.
                        let (commands, failed, keep) =
                            plan_moves_off(s, &migratable, &site, "drained", &mut migrations);
                        publish_moves(&control_out, &events_out, commands, failed).await?;
                        match s.drain_site(&site, now, &keep) {
                            Ok(ev) => {
                                last_drained.insert(site, true);
                                pool_events.extend(ev)
                            }
                            Err(e) => tracing::warn!("{e}"),
                        }
                    }
                    Ok(Control::Migrate { key, to }) => {
                        match plan_migration(s, &migratable, &key, &to, &[], &mut migrations) {
                            Ok(c) => control_out
                                .send_unacked(None, item("", to_bytes(&c)))
                                .await
                                .map_err(fab("publishing a command"))?,
                            Err(reason) => {
                                let ev = Event::MigrationFailed {
                                    key: key.clone(),
                                    reason,
                                };
                                events_out
                                    .send_unacked(None, item(&key, to_bytes(&ev)))
                                    .await
                                    .map_err(fab("publishing an event"))?;
                            }
                        }
                    }
                    Ok(Control::MigrateIn { task, worker, .. }) => {
                        moving.insert(task.key.clone(), (worker, task));
                    }
                    Ok(Control::UndrainSite { site }) => match s.undrain_site(&site) {
                        Ok(()) => {
                            last_drained.insert(site, false);
                        }
                        Err(e) => tracing::warn!("{e}"),
                    },
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "bad pool command skipped"),
                }
            }
            // Predictions.
            if let Some(c) = predictions_in.as_mut() {
                for _ in 0..1000 {
                    let Some(ci) = c
                        .poll(Duration::ZERO)
                        .await
                        .map_err(fab("reading predictions"))?
                    else {
                        break;
                    };
                    if let Some(p) =
                        prediction_for(&ci.item.payload, &opts.serves, prediction_workers, now)
                    {
                        predictions.push(p);
                    }
                    // Trouble predicted at one of our sites: move its
                    // migratable tasks elsewhere before it arrives.
                    if let Some(site) = prediction_site(&ci.item.payload, &spec) {
                        let (commands, failed, _) = plan_moves_off(
                            s,
                            &migratable,
                            &site,
                            "predicted to be in trouble",
                            &mut migrations,
                        );
                        publish_moves(&control_out, &events_out, commands, failed).await?;
                    }
                }
                predictions.retain(|p| p.due_ms + 60_000 > now);
            }

            // Outcomes → results, retries.
            let mut deliveries: Vec<(diaspora_fabric::Delivery, Option<Run>)> = Vec::new();
            let mut handled = 0;
            while handled < 10_000 {
                let Some(ci) = outcomes
                    .poll(Duration::ZERO)
                    .await
                    .map_err(fab("reading outcomes"))?
                else {
                    break;
                };
                handled += 1;
                let o = match Outcome::parse(&ci.item.payload) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!(error = %e, offset = ci.offset, "bad outcome skipped");
                        continue;
                    }
                };
                match book.verdict(&o.key) {
                    Verdict::AlreadyDone | Verdict::FailedForGood { .. } => {
                        status.duplicates += 1;
                        events_out
                            .send_unacked(
                                None,
                                item(
                                    &o.key,
                                    to_bytes(&Event::DuplicateDropped {
                                        key: o.key.clone(),
                                        worker: o.worker.clone(),
                                    }),
                                ),
                            )
                            .await
                            .map_err(fab("publishing an event"))?;
                        continue;
                    }
                    Verdict::Run { .. } => {}
                }
                moving.remove(&o.key);
                if o.ok {
                    let attempts = book.charged(&o.key) + 1;
                    book.succeeded(&o.key);
                    let run = run_of(&spec.name, &o.key, &o.worker, attempts, true, &o.inputs);
                    let r = TaskResult {
                        key: o.key.clone(),
                        ok: true,
                        output: o.output,
                        error: None,
                        attempts,
                        worker: o.worker,
                    };
                    deliveries.push((
                        results_out
                            .send(item(&r.key, to_bytes(&r)))
                            .await
                            .map_err(fab("publishing a result"))?,
                        Some(run),
                    ));
                    status.results += 1;
                    continue;
                }
                let error = o.error.clone().unwrap_or_else(|| "failed".into());
                let v = if o.permanent || o.task.is_none() {
                    book.fail_for_good(&o.key)
                } else {
                    book.failed(&o.key)
                };
                match (v, o.task) {
                    (Verdict::Run { attempt, backoff }, Some(mut task)) => {
                        status.retries += 1;
                        events_out
                            .send_unacked(
                                None,
                                item(
                                    &o.key,
                                    to_bytes(&Event::TaskRetried {
                                        key: o.key.clone(),
                                        attempt,
                                        reason: error,
                                    }),
                                ),
                            )
                            .await
                            .map_err(fab("publishing an event"))?;
                        // Re-published at once, to run after its back-off:
                        // durable the moment it is acknowledged, so the
                        // outcome can be committed with the others.
                        task.attempt = attempt;
                        task.not_before_us = now_us() + backoff.as_micros() as i64;
                        deliveries.push((
                            tasks_out
                                .send(item(&task.key, to_bytes(&task)))
                                .await
                                .map_err(fab("re-publishing a task"))?,
                            None,
                        ));
                    }
                    (Verdict::FailedForGood { attempts }, _) => {
                        let run = run_of(&spec.name, &o.key, &o.worker, attempts, false, &o.inputs);
                        deliveries.extend(
                            fail_for_good(
                                &results_out,
                                &events_out,
                                &control_out,
                                &o.key,
                                attempts,
                                &error,
                                &o.worker,
                                &mut status,
                            )
                            .await?
                            .into_iter()
                            .map(|d| (d, Some(run.clone()))),
                        );
                    }
                    _ => {}
                }
            }
            for (d, run) in deliveries {
                let at = d.await.map_err(fab("publishing a result"))?;
                if let (Some(run), Some(rec)) = (run, &recorder) {
                    rec.record(run.landed(&topics.results, at));
                }
            }
            if handled > 0 {
                commit_fenced_ok(&mut outcomes, "committing outcomes").await?;
            }

            // Supervise.
            let backlog = task_backlog(&client, &topics).await?;
            // Catch-up: at the throughput per worker measured over the last
            // seconds, how many workers clear this backlog within
            // catch_up_target_s (after a restart with a backlog, more than
            // the backlog-per-worker rule alone would give).
            let workers_now: u32 = sup
                .as_ref()
                .expect("supervisor")
                .registry()
                .site_states()
                .iter()
                .map(|s| s.active)
                .sum();
            throughput.push_back((Instant::now(), handled as u64, workers_now));
            while throughput
                .front()
                .is_some_and(|(t, _, _)| t.elapsed() > Duration::from_secs(5))
            {
                throughput.pop_front();
            }
            let mut catch_up = demand.lock().expect("lock").catch_up.clone();
            if let (Some((first, _, _)), true) = (throughput.front(), backlog > 0) {
                let span = first.elapsed().as_secs_f64();
                let done: u64 = throughput.iter().map(|(_, n, _)| n).sum();
                let worker_s: f64 = throughput
                    .iter()
                    .map(|(_, _, w)| f64::from(*w))
                    .sum::<f64>()
                    / throughput.len() as f64
                    * span;
                if span >= 1.0 && done > 0 && worker_s > 0.0 {
                    catch_up.push(CatchUp {
                        backlog,
                        rate_per_worker: done as f64 / worker_s,
                    });
                }
            }
            let d = Demand {
                backlog,
                catch_up,
                predictions: predictions.clone(),
            };
            let mut moved = sup.take().expect("supervisor");
            let (moved, ev) = tokio::task::spawn_blocking(move || {
                let ev = moved.step(now, &d);
                (moved, ev)
            })
            .await
            .map_err(|e| PoolError::Other(format!("supervisor step panicked: {e}")))?;
            sup = Some(moved);
            pool_events.extend(ev);

            for e in &pool_events {
                match e {
                    PoolEvent::Worker(WorkerEvent::Lost {
                        in_flight,
                        charge,
                        worker,
                        ..
                    }) => {
                        status.lost += 1;
                        // A task moved to this worker goes back to the queue.
                        let orphaned: Vec<String> = moving
                            .iter()
                            .filter(|(_, (target, _))| target == worker)
                            .map(|(k, _)| k.clone())
                            .collect();
                        for key in orphaned {
                            if let Some((_, task)) = moving.remove(&key) {
                                tasks_out
                                    .send(item(&task.key, to_bytes(&task)))
                                    .await
                                    .map_err(fab("re-publishing a moved task"))?
                                    .await
                                    .map_err(fab("re-publishing a moved task"))?;
                            }
                        }
                        migratable.remove(worker);
                        for key in in_flight {
                            if let Verdict::FailedForGood { attempts } = book.lost(key, *charge) {
                                for d in fail_for_good(
                                    &results_out,
                                    &events_out,
                                    &control_out,
                                    key,
                                    attempts,
                                    &format!("worker {worker} lost while running it"),
                                    worker,
                                    &mut status,
                                )
                                .await?
                                {
                                    let at = d.await.map_err(fab("publishing a result"))?;
                                    if let Some(rec) = &recorder {
                                        let run =
                                            run_of(&spec.name, key, worker, attempts, false, &[]);
                                        rec.record(run.landed(&topics.results, at));
                                    }
                                }
                            }
                        }
                    }
                    PoolEvent::Worker(WorkerEvent::Draining { worker, .. }) => {
                        control_out
                            .send_unacked(
                                None,
                                item(
                                    "",
                                    to_bytes(&Control::DrainWorker {
                                        worker: worker.clone(),
                                    }),
                                ),
                            )
                            .await
                            .map_err(fab("publishing a command"))?;
                    }
                    PoolEvent::Launched { workers, .. } => status.launched += workers.len() as u64,
                    _ => {}
                }
                events_out
                    .send_unacked(None, item("", to_bytes(&Event::Pool { event: e.clone() })))
                    .await
                    .map_err(fab("publishing an event"))?;
            }

            // Status.
            if last_status.map_or(true, |t| t.elapsed() >= opts.status_every) {
                last_status = Some(Instant::now());
                status.backlog = backlog;
                status.at_us = now_us();
                if let Some(rec) = &recorder {
                    status.provenance_recorded =
                        rec.recorded.load(std::sync::atomic::Ordering::Relaxed);
                    status.provenance_dropped =
                        rec.dropped.load(std::sync::atomic::Ordering::Relaxed);
                }
                status.sites = site_status(sup.as_ref().expect("supervisor"), &last_drained);
                events_out
                    .send_unacked(None, item("", to_bytes(&Event::Status(status.clone()))))
                    .await
                    .map_err(fab("publishing status"))?;
            }
            stop.sleep(opts.tick).await;
        }
        Ok::<(), PoolError>(())
    }
    .await;

    // Stop every worker, whatever happened.
    if let Some(mut s) = sup.take() {
        let _ = tokio::task::spawn_blocking(move || {
            s.shutdown();
            drop(s);
        })
        .await;
    }
    if let Some(rec) = recorder {
        let (recorded, dropped) = (rec.recorded.clone(), rec.dropped.clone());
        let _ = tokio::task::spawn_blocking(move || rec.finish()).await;
        status.provenance_recorded = recorded.load(std::sync::atomic::Ordering::Relaxed);
        status.provenance_dropped = dropped.load(std::sync::atomic::Ordering::Relaxed);
    }
    status.at_us = now_us();
    let _ = events_out
        .send(item("", to_bytes(&Event::Status(status.clone()))))
        .await;
    let _ = events_out.flush().await;
    outcomes.close().await;
    events_in.close().await;
    control_in.close().await;
    if let Some(c) = predictions_in {
        c.close().await;
    }
    let _ = tasks_out.close().await;
    let _ = results_out.close().await;
    let _ = control_out.close().await;
    let _ = events_out.close().await;
    result.map(|()| status)
}

#[allow(clippy::too_many_arguments)]
async fn fail_for_good(
    results_out: &Producer,
    events_out: &Producer,
    control_out: &Producer,
    key: &str,
    attempts: u32,
    error: &str,
    worker: &str,
    status: &mut Status,
) -> Result<Vec<diaspora_fabric::Delivery>, PoolError> {
    status.failed += 1;
    let r = TaskResult {
        key: key.into(),
        ok: false,
        output: String::new(),
        error: Some(error.into()),
        attempts,
        worker: worker.into(),
    };
    let d = results_out
        .send(item(key, to_bytes(&r)))
        .await
        .map_err(fab("publishing a result"))?;
    events_out
        .send_unacked(
            None,
            item(
                key,
                to_bytes(&Event::TaskFailed {
                    key: key.into(),
                    attempts,
                    error: error.into(),
                }),
            ),
        )
        .await
        .map_err(fab("publishing an event"))?;
    control_out
        .send_unacked(None, item("", to_bytes(&Control::Skip { key: key.into() })))
        .await
        .map_err(fab("publishing a command"))?;
    Ok(vec![d])
}

fn site_status(sup: &Supervisor, drained: &BTreeMap<String, bool>) -> Vec<SiteStatus> {
    let states = sup.registry().site_states();
    sup.spec()
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| SiteStatus {
            name: s.name.clone(),
            provider: s.provider.to_string(),
            reachable: states[i].reachable,
            drained: drained.get(&s.name).copied().unwrap_or(false),
            active: states[i].active,
            idle: states[i].idle,
            draining: sup
                .registry()
                .workers()
                .filter(|w| w.site == i && !w.active())
                .count() as u32,
            min: s.min,
            max: s.max,
        })
        .collect()
}

/// A predictor's `prediction` event (diaspora-predict's monitor events, as
/// JSON on `diaspora.predictions`) for a resource this pool serves, as a
/// shortfall: due `lead_time_s` from now, needing `workers`.
///
/// A prediction names a resource by its monitor's name, its metric, or a
/// `resource` label; alerts and predictions of other resources are ignored,
/// and so is anything that is not a monitor event.
pub fn prediction_for(
    payload: &[u8],
    serves: &[String],
    workers: u32,
    now_ms: u64,
) -> Option<PredictedShortfall> {
    if payload.len() > crate::messages::MESSAGE_MAX_BYTES {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if v.get("kind")?.as_str()? != "prediction" {
        return None;
    }
    let names = [
        v.get("monitor").and_then(|x| x.as_str()),
        v.get("metric").and_then(|x| x.as_str()),
        v.get("labels")
            .and_then(|l| l.get("resource"))
            .and_then(|x| x.as_str()),
    ];
    if !names
        .iter()
        .flatten()
        .any(|n| serves.iter().any(|s| s == n))
    {
        return None;
    }
    let lead = v.get("lead_time_s")?.as_f64()?;
    if !lead.is_finite() || lead < 0.0 {
        return None;
    }
    Some(PredictedShortfall {
        due_ms: now_ms.saturating_add((lead * 1000.0).min(1e12) as u64),
        workers,
    })
}

/// A run to record (its result's place filled in once acknowledged).
fn run_of(pool: &str, key: &str, worker: &str, attempts: u32, ok: bool, inputs: &[String]) -> Run {
    Run {
        pool: pool.into(),
        key: key.into(),
        worker: worker.into(),
        attempts,
        ok,
        inputs: inputs.to_vec(),
        result: diaspora_fabric::ItemRef {
            topic: "".into(),
            partition: 0,
            offset: 0,
        },
        time_us: now_us(),
    }
}

impl Run {
    fn landed(mut self, topic: &str, at: diaspora_fabric::Delivered) -> Run {
        self.result = diaspora_fabric::ItemRef {
            topic: topic.into(),
            partition: at.partition,
            offset: at.offset,
        };
        self
    }
}

// ---------------------------------------------------------------- migration

/// The topic a pool's migrations travel on (`pool.NAME.migrate`, one
/// partition) and its acknowledgements (`pool.NAME.migrate.ack`).
pub fn migrate_topics(pool: &str) -> (String, String) {
    (
        format!("pool.{pool}.migrate"),
        format!("pool.{pool}.migrate.ack"),
    )
}

/// Creates the migration topics.
pub async fn ensure_migrate_topics(mut admin: TopicAdmin<'_>, pool: &str) -> Result<(), PoolError> {
    let (t, ack) = migrate_topics(pool);
    for name in [&t, &ack] {
        ensure_topic(admin.reborrow(), name, &TopicSettings::with_partitions(1))
            .await
            .map_err(fab(format!("creating {name}")))?;
    }
    Ok(())
}

/// Migrates `state` (shared with the running task, which keeps changing
/// it) to a receiver of migration `id` by pre-copy rounds, then a
/// stop-and-copy under the state's lock. Returns the report and the lock
/// on the source state, frozen at the switch-over: the caller stops the
/// source task and drops it.
pub async fn migrate_send<S: crate::migrate::Migratable + Send + 'static>(
    client: &Client,
    pool: &str,
    id: &str,
    state: Arc<tokio::sync::Mutex<S>>,
    policy: crate::migrate::PreCopyPolicy,
) -> Result<
    (
        crate::migrate::MigrationReport,
        tokio::sync::OwnedMutexGuard<S>,
    ),
    PoolError,
> {
    use crate::migrate::{encode_round, split_indices, MigrationReport};
    let (topic, ack_topic) = migrate_topics(pool);
    let mut acks = Consumer::assign(
        client,
        ConsumerConfig::new(&ack_topic).start(StartFrom::Latest),
        &[],
    )
    .await
    .map_err(fab("reading migration acknowledgements"))?;
    let out = producer(client, &topic).await?;
    let t0 = Instant::now();
    let mut report = MigrationReport::default();
    let mut prev = usize::MAX;
    let mut round = 0u32;
    let max = crate::migrate::ROUND_MAX_BYTES / 2;
    loop {
        let mut guard = state.clone().lock_owned().await;
        let chunks: Vec<usize> = if round == 0 {
            guard.take_dirty();
            (0..guard.chunk_count()).collect()
        } else {
            guard.take_dirty()
        };
        let bytes: usize = chunks.iter().map(|&i| guard.chunk(i).len()).sum();
        report.state_bytes = (0..guard.chunk_count())
            .map(|i| guard.chunk(i).len() as u64)
            .sum();
        let last = round > 0 && policy.switch_over(round - 1, prev, bytes);
        let paused = Instant::now();
        let groups = split_indices(&*guard, &chunks, max);
        let n = groups.len();
        let encoded: Vec<Vec<u8>> = groups
            .iter()
            .enumerate()
            .map(|(k, g)| encode_round(&*guard, round, last && k + 1 == n, g))
            .collect();
        report.rounds += 1;
        report.bytes += bytes as u64;
        report.chunks_per_round.push(chunks.len() as u32);
        // The task runs on while a pre-copy round travels; the final
        // round keeps it stopped.
        let held = if last {
            Some(guard)
        } else {
            drop(guard);
            None
        };
        let mut pending = Vec::with_capacity(encoded.len());
        for e in encoded {
            pending.push(
                out.send(item(id, e))
                    .await
                    .map_err(fab("sending a migration round"))?,
            );
        }
        for d in pending {
            d.await.map_err(fab("sending a migration round"))?;
        }
        if last {
            // Wait for the target to have applied everything.
            loop {
                let Some(ci) = acks
                    .poll(Duration::from_secs(30))
                    .await
                    .map_err(fab("reading migration acknowledgements"))?
                else {
                    return Err(PoolError::Other(format!(
                        "migration {id}: no acknowledgement from the target within 30 s"
                    )));
                };
                if &ci.item.key[..] == id.as_bytes() {
                    break;
                }
            }
            report.pause = paused.elapsed();
            report.total = t0.elapsed();
            acks.close().await;
            let _ = out.close().await;
            return Ok((report, held.expect("the final round holds the lock")));
        }
        prev = bytes;
        round += 1;
    }
}

/// Receives migration `id` into `target` (the same shape as the source:
/// as many chunks), applying every round in order; acknowledges the final
/// round. Returns the rounds applied.
pub async fn migrate_receive<S: crate::migrate::Migratable>(
    client: &Client,
    pool: &str,
    id: &str,
    target: &mut S,
    limit: Duration,
) -> Result<u32, PoolError> {
    use crate::migrate::{apply_round, decode_round};
    let (topic, ack_topic) = migrate_topics(pool);
    let mut c = Consumer::assign(client, ConsumerConfig::new(&topic), &[])
        .await
        .map_err(fab("reading migration rounds"))?;
    let t0 = Instant::now();
    let mut rounds = 0;
    let mut last_round = None;
    loop {
        let left = limit.saturating_sub(t0.elapsed());
        let Some(ci) = c
            .poll(left.min(Duration::from_secs(5)))
            .await
            .map_err(fab("reading migration rounds"))?
        else {
            if left.is_zero() {
                return Err(PoolError::Other(format!(
                    "migration {id}: not complete within {limit:?}"
                )));
            }
            continue;
        };
        if &ci.item.key[..] != id.as_bytes() {
            continue;
        }
        let r = decode_round(&ci.item.payload).map_err(|e| PoolError::Other(e.to_string()))?;
        apply_round(target, &r).map_err(|e| PoolError::Other(e.to_string()))?;
        if last_round != Some(r.round) {
            rounds += 1;
            last_round = Some(r.round);
        }
        if r.last {
            break;
        }
    }
    c.close().await;
    let p = producer(client, &ack_topic).await?;
    p.send(item(id, b"applied".to_vec()))
        .await
        .map_err(fab("acknowledging a migration"))?
        .await
        .map_err(fab("acknowledging a migration"))?;
    let _ = p.close().await;
    Ok(rounds)
}

/// The command that moves task `key` from the worker running it to an idle
/// worker at site `to`, or why it cannot.
fn plan_migration(
    sup: &Supervisor,
    migratable: &BTreeMap<String, Vec<String>>,
    key: &str,
    to: &str,
    taken: &[String],
    counter: &mut u64,
) -> Result<Control, String> {
    let source = migratable
        .iter()
        .find(|(w, keys)| keys.iter().any(|k| k == key) && sup.registry().get(w).is_some())
        .map(|(w, _)| w.clone())
        .ok_or_else(|| format!("no worker is running a migratable task '{key}'"))?;
    let site = sup
        .spec()
        .sites
        .iter()
        .position(|s| s.name == to)
        .ok_or_else(|| format!("no site '{to}'"))?;
    let target = sup
        .registry()
        .pick_idle(site, 8)
        .into_iter()
        .find(|w| *w != source && !migratable.contains_key(w) && !taken.contains(w))
        .ok_or_else(|| {
            let there: Vec<String> = sup
                .registry()
                .workers()
                .filter(|w| w.site == site)
                .map(|w| format!("{} {:?} holding {:?}", w.id, w.phase, w.in_flight))
                .collect();
            format!("site '{to}' has no idle worker to take '{key}' (its workers: {there:?})")
        })?;
    *counter += 1;
    Ok(Control::MigrateOut {
        key: key.to_string(),
        id: format!("{key}#{counter}@{}", now_us()),
        worker: source,
        to: target,
    })
}

/// Publishes planned migrations and the failures to plan some.
async fn publish_moves(
    control_out: &Producer,
    events_out: &Producer,
    commands: Vec<Control>,
    failed: Vec<Event>,
) -> Result<(), PoolError> {
    for c in commands {
        control_out
            .send_unacked(None, item("", to_bytes(&c)))
            .await
            .map_err(fab("publishing a command"))?;
    }
    for ev in failed {
        events_out
            .send_unacked(None, item("", to_bytes(&ev)))
            .await
            .map_err(fab("publishing an event"))?;
    }
    Ok(())
}

/// The commands that move every migratable task off site `site` to idle
/// workers at the other sites (one task per target), the failures for the
/// tasks that found no target, and the workers whose tasks are moving.
fn plan_moves_off(
    sup: &Supervisor,
    migratable: &BTreeMap<String, Vec<String>>,
    site: &str,
    why: &str,
    counter: &mut u64,
) -> (Vec<Control>, Vec<Event>, Vec<String>) {
    let movers: Vec<(String, String)> = sup
        .registry()
        .workers()
        .filter(|w| sup.spec().sites[w.site].name == site)
        .flat_map(|w| {
            migratable
                .get(&w.id)
                .into_iter()
                .flatten()
                .map(|k| (w.id.clone(), k.clone()))
        })
        .collect();
    let (mut commands, mut failed, mut keep, mut taken) = (vec![], vec![], vec![], vec![]);
    for (worker, key) in movers {
        let planned = sup
            .spec()
            .sites
            .iter()
            .filter(|x| x.name != site)
            .find_map(|x| plan_migration(sup, migratable, &key, &x.name, &taken, counter).ok());
        match planned {
            Some(c) => {
                if let Control::MigrateOut { to, .. } = &c {
                    taken.push(to.clone());
                }
                keep.push(worker);
                commands.push(c);
            }
            None => failed.push(Event::MigrationFailed {
                key,
                reason: format!("site {site} {why} and no other site has an idle worker"),
            }),
        }
    }
    (commands, failed, keep)
}

/// The pool site a predictor's `prediction` event names (label `site`), if
/// it is one of `spec`'s.
pub fn prediction_site(payload: &[u8], spec: &PoolSpec) -> Option<String> {
    if payload.len() > crate::messages::MESSAGE_MAX_BYTES {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if v.get("kind")?.as_str()? != "prediction" {
        return None;
    }
    let site = v.get("labels")?.get("site")?.as_str()?;
    spec.site(site).map(|s| s.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that leaves a worker's heartbeat was finished — unless the
    /// worker yielded it to another claimant: then a copy re-delivered
    /// here after that claimant is lost must still run (it was lost once
    /// that way under repeated SIGKILLs).
    #[test]
    fn a_yielded_claim_is_not_taken_for_a_finished_task() {
        let mut s = WorkerShared::default();
        s.saw("a", &["k".into()], &[0], &[1], &[], 16);
        s.saw("a", &[], &[], &[], &["k".into()], 16);
        assert!(!s.let_go.contains(&("k".to_string(), 0)));
        assert!(!s.holders.contains_key(&("k".to_string(), 0)));
        s.saw("b", &["j".into()], &[2], &[1], &[], 16);
        s.saw("b", &[], &[], &[], &[], 16);
        assert!(s.let_go.contains(&("j".to_string(), 2)));
    }

    #[test]
    fn predictor_events_for_served_resources_become_shortfalls() {
        let ev = |monitor: &str, kind: &str, lead: f64| {
            format!(
                r#"{{"kind":"{kind}","monitor":"{monitor}","metric":"stream.lag","labels":{{"resource":"ptycho-recon"}},"t_us":1,"value":0.5,"threshold":0.9,"lead_time_s":{lead},"confidence":0.8,"forecast":[0.6],"step_s":0.5}}"#
            )
        };
        let serves = vec!["recon-lag".to_string()];
        let p = prediction_for(
            ev("recon-lag", "prediction", 12.5).as_bytes(),
            &serves,
            6,
            1000,
        );
        assert_eq!(
            p,
            Some(PredictedShortfall {
                due_ms: 13_500,
                workers: 6
            })
        );
        // By the resource label, too.
        let by_label = vec!["ptycho-recon".to_string()];
        assert!(
            prediction_for(ev("other", "prediction", 1.0).as_bytes(), &by_label, 6, 0).is_some()
        );
        // Not served, an alert, garbage, a negative lead: nothing.
        assert!(prediction_for(ev("other", "prediction", 1.0).as_bytes(), &serves, 6, 0).is_none());
        assert!(prediction_for(ev("recon-lag", "alert", 1.0).as_bytes(), &serves, 6, 0).is_none());
        assert!(prediction_for(b"{not json", &serves, 6, 0).is_none());
        assert!(prediction_for(
            ev("recon-lag", "prediction", -1.0).as_bytes(),
            &serves,
            6,
            0
        )
        .is_none());
    }
}
