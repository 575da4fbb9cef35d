//! `diaspora bench pool`: what the pool costs and how fast it heals, on an
//! in-process node.
//!
//! - **Dispatch**: N empty (`echo`) tasks through a pool of W real worker
//!   processes (`diaspora pool worker`: read a task, publish its outcome,
//!   commit; the pool turns outcomes into one result per key), against the
//!   same N tasks on a plain consumer group of W members in this process
//!   that read a task, publish a result and commit. Both are timed from the
//!   first task submitted to the last result read; rounds alternate.
//! - **Replacement**: a pool worker is SIGKILLed; the time until its
//!   replacement has joined (sent its first heartbeat) is measured, K times.

use crate::fabric::{self as pf, ExternalDemand, PoolOptions, PoolTopics};
use crate::messages::{to_bytes, Event, Task, TaskKind};
use crate::supervisor::PoolEvent;
use crate::workers::WorkerEvent;
use crate::PoolSpec;
use diaspora_fabric::{
    ensure_topic, Client, ClientConfig, Consumer, ConsumerConfig, Node, NodeConfig, Producer,
    ProducerConfig, StartFrom, Stop, TopicSettings,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Settings.
#[derive(Debug, Clone)]
pub struct PoolBenchConfig {
    /// The `diaspora` binary (its `pool worker` runs the workers).
    pub program: PathBuf,
    /// Workers (and group members).
    pub workers: u32,
    /// Tasks per round.
    pub tasks: u64,
    /// Rounds of each.
    pub rounds: u32,
    /// Workers killed (and replaced) in the replacement measurement.
    pub kills: u32,
}

pub use diaspora_fabric::stats::Spread;

/// The report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolBenchReport {
    /// Workers.
    pub workers: u32,
    /// Tasks per round.
    pub tasks: u64,
    /// Rounds of each.
    pub rounds: u32,
    /// Empty tasks per second through the pool.
    pub pool_tasks_per_s: Spread,
    /// The same tasks on a plain consumer group.
    pub group_tasks_per_s: Spread,
    /// pool ÷ group (medians).
    pub pool_vs_group: f64,
    /// SIGKILL to the replacement's first heartbeat, ms.
    pub replace_ms: Spread,
}

type BenchResult<T> = Result<T, String>;

/// Live workers with their pids, and the times of every join.
type LiveWorkers = (BTreeMap<String, u32>, Vec<Instant>);

fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// Runs the benchmark.
pub async fn run(cfg: PoolBenchConfig) -> BenchResult<PoolBenchReport> {
    let dir = tempfile::tempdir().map_err(err("temporary directory"))?;
    let node = Node::start(NodeConfig::new(dir.path().join("node")))
        .await
        .map_err(err("starting a node"))?;
    let client = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file()))
        .await
        .map_err(err("connecting"))?;
    let mut pool_rates = Vec::new();
    let mut group_rates = Vec::new();
    let mut replace = Vec::new();
    for round in 0..cfg.rounds.max(1) {
        let kills = if round == 0 { cfg.kills } else { 0 };
        let (rate, rep) = pool_round(&cfg, &node, &client, round, kills, dir.path()).await?;
        pool_rates.push(rate);
        replace.extend(rep);
        group_rates.push(group_round(&cfg, &node, &client, round).await?);
    }
    client.close();
    node.shutdown().await;
    let pool = Spread::of(pool_rates);
    let group = Spread::of(group_rates);
    Ok(PoolBenchReport {
        workers: cfg.workers,
        tasks: cfg.tasks,
        rounds: cfg.rounds.max(1),
        pool_vs_group: if group.median > 0.0 {
            pool.median / group.median
        } else {
            0.0
        },
        pool_tasks_per_s: pool,
        group_tasks_per_s: group,
        replace_ms: Spread::of(replace),
    })
}

fn tasks(prefix: &str, n: u64) -> Vec<Task> {
    (0..n)
        .map(|i| Task {
            key: format!("{prefix}-{i}"),
            kind: TaskKind::Echo {
                data: String::new(),
            },
            inputs: vec![],
            attempt: 0,
            not_before_us: 0,
        })
        .collect()
}

/// Counts items on `topic` from the start until `n`, or fails after `limit`
/// without progress.
async fn count_until(client: &Client, topic: &str, n: u64) -> BenchResult<()> {
    let mut c = Consumer::assign(client, ConsumerConfig::new(topic), &[])
        .await
        .map_err(err("reading results"))?;
    let mut seen = 0;
    while seen < n {
        match c
            .poll(Duration::from_secs(30))
            .await
            .map_err(err("reading results"))?
        {
            Some(_) => seen += 1,
            None => {
                return Err(format!(
                    "{topic}: {seen} of {n} results after 30 s without progress"
                ))
            }
        }
    }
    c.close().await;
    Ok(())
}

async fn pool_round(
    cfg: &PoolBenchConfig,
    node: &Node,
    client: &Client,
    round: u32,
    kills: u32,
    dir: &std::path::Path,
) -> BenchResult<(f64, Vec<f64>)> {
    let name = format!("bench{round}");
    let w = cfg.workers.max(1);
    let spec = PoolSpec::from_toml(&format!(
        "name = \"{name}\"\n[worker]\ncommand = [{:?}, \"pool\", \"worker\"]\n\
         [heartbeat]\ninterval_ms = 200\ntimeout_ms = 1000\n\
         [scaling]\nmin_total = {w}\nmax_total = {w}\n\
         [[site]]\nname = \"local\"\nprovider = \"local\"\nmin = {w}\nmax = {w}\n",
        cfg.program.display().to_string()
    ))
    .map_err(err("bench pool spec"))?;
    pf::ensure_topics(node.broker().into(), &spec)
        .await
        .map_err(err("pool topics"))?;
    let topics = PoolTopics::new(&name);
    // Follow the pool's events: live workers and their pids, joins.
    let live: Arc<Mutex<LiveWorkers>> = Arc::default();
    let mut ev = Consumer::assign(
        client,
        ConsumerConfig::new(&topics.events).start(StartFrom::Earliest),
        &[],
    )
    .await
    .map_err(err("reading pool events"))?;
    let follower = {
        let live = live.clone();
        tokio::spawn(async move {
            while let Ok(ci) = ev.next().await {
                let mut l = live.lock().expect("lock");
                match Event::parse(&ci.item.payload) {
                    Ok(Event::Heartbeat { worker, pid, .. }) => {
                        l.0.insert(worker, pid);
                    }
                    Ok(Event::Pool {
                        event: PoolEvent::Worker(WorkerEvent::Joined { .. }),
                    }) => l.1.push(Instant::now()),
                    Ok(Event::Pool {
                        event:
                            PoolEvent::Worker(
                                WorkerEvent::Lost { worker, .. } | WorkerEvent::Left { worker, .. },
                            ),
                    }) => {
                        l.0.remove(&worker);
                    }
                    _ => {}
                }
            }
        })
    };
    let stop = Stop::new();
    let logs = dir.join(format!("logs{round}"));
    std::fs::create_dir_all(&logs).map_err(err("log directory"))?;
    let opts = PoolOptions {
        tick: Duration::from_millis(50),
        log_dir: Some(logs),
        worker_env: pf::worker_env(node.data_addr(), &node.ca_file(), &spec.heartbeat),
        ..Default::default()
    };
    let providers = pf::providers_for(&spec);
    let pool = tokio::spawn(pf::run_pool(
        client.clone(),
        spec,
        providers,
        opts,
        Arc::new(Mutex::new(ExternalDemand::default())),
        stop.clone(),
    ));
    let result = async {
        let wait_live = |want: usize, since: Instant| {
            let live = live.clone();
            async move {
                let t = Instant::now();
                loop {
                    {
                        let l = live.lock().expect("lock");
                        if l.0.len() >= want && l.1.iter().filter(|t| **t >= since).count() > 0 {
                            return Ok(());
                        }
                    }
                    if t.elapsed() > Duration::from_secs(60) {
                        return Err(format!("fewer than {want} workers after 60 s"));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        let t_start = Instant::now();
        wait_live(w as usize, t_start).await?;
        let t0 = Instant::now();
        pf::submit(client, &name, &tasks("t", cfg.tasks))
            .await
            .map_err(err("submitting"))?;
        count_until(client, &topics.results, cfg.tasks).await?;
        let rate = cfg.tasks as f64 / t0.elapsed().as_secs_f64();
        let mut rep = Vec::new();
        for _ in 0..kills {
            let (victim, pid) = {
                let l = live.lock().expect("lock");
                let (v, p) = l.0.iter().next().ok_or("no live worker to kill")?;
                (v.clone(), *p)
            };
            let killed = Instant::now();
            // SAFETY: SIGKILL to a worker process this benchmark's pool started.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            let t = Instant::now();
            loop {
                let done = {
                    let l = live.lock().expect("lock");
                    !l.0.contains_key(&victim) && l.1.iter().any(|t| *t > killed)
                };
                if done {
                    break;
                }
                if t.elapsed() > Duration::from_secs(30) {
                    return Err("no replacement within 30 s".to_string());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let joined = live
                .lock()
                .expect("lock")
                .1
                .iter()
                .copied()
                .find(|t| *t > killed)
                .expect("checked");
            rep.push(joined.duration_since(killed).as_secs_f64() * 1000.0);
            wait_live(w as usize, killed).await?;
        }
        Ok::<_, String>((rate, rep))
    }
    .await;
    stop.trigger();
    let _ = pool.await;
    follower.abort();
    result
}

async fn group_round(
    cfg: &PoolBenchConfig,
    node: &Node,
    client: &Client,
    round: u32,
) -> BenchResult<f64> {
    let w = cfg.workers.max(1);
    let tasks_topic = format!("group{round}.tasks");
    let results_topic = format!("group{round}.results");
    ensure_topic(
        node.broker(),
        &tasks_topic,
        &TopicSettings::with_partitions(w),
    )
    .await
    .map_err(err("baseline topics"))?;
    ensure_topic(
        node.broker(),
        &results_topic,
        &TopicSettings::with_partitions(1),
    )
    .await
    .map_err(err("baseline topics"))?;
    let stop = Stop::new();
    let mut members = Vec::new();
    for _ in 0..w {
        let mut c = ConsumerConfig::new(&tasks_topic).group(format!("group{round}"));
        c.fetch_wait = Duration::from_millis(100);
        let mut consumer = Consumer::subscribe(client, c)
            .await
            .map_err(err("baseline member"))?;
        let out = Producer::new(client, ProducerConfig::new(&results_topic))
            .await
            .map_err(err("baseline member"))?;
        let stop = stop.clone();
        members.push(tokio::spawn(async move {
            while !stop.stopped() {
                let Ok(Some(ci)) = consumer.poll(Duration::from_millis(100)).await else {
                    continue;
                };
                let Ok(task) = Task::parse(&ci.item.payload) else {
                    continue;
                };
                let mut it = diaspora_fabric::item::payload_item(to_bytes(&task.key).into());
                it.key = task.key.into_bytes().into();
                if let Ok(d) = out.send(it).await {
                    let _ = d.await;
                }
                let _ = consumer.commit().await;
            }
            consumer.close().await;
            let _ = out.close().await;
        }));
    }
    // Let the group settle (every member assigned) before timing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let p = Producer::new(client, ProducerConfig::new(&tasks_topic))
        .await
        .map_err(err("baseline submit"))?;
    let mut pending = Vec::new();
    for t in tasks("g", cfg.tasks) {
        let mut it = diaspora_fabric::item::payload_item(to_bytes(&t).into());
        it.key = t.key.into_bytes().into();
        pending.push(p.send(it).await.map_err(err("baseline submit"))?);
    }
    for d in pending {
        d.await.map_err(err("baseline submit"))?;
    }
    let _ = p.close().await;
    count_until(client, &results_topic, cfg.tasks).await?;
    let rate = cfg.tasks as f64 / t0.elapsed().as_secs_f64();
    stop.trigger();
    for m in members {
        let _ = m.await;
    }
    Ok(rate)
}
