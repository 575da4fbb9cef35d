//! Runs a [`Scenario`]: every host is a real process of the `diaspora`
//! binary with its own data directory and log; links are [`Relay`]s in this
//! process; faults are applied on a timeline; at the end the hosts' records
//! are analysed and the assertions checked.
//!
//! [`run`] is a sequence of steps:
//!
//! 1. **Plan**: scale the scenario, clear the work directory, pick the
//!    nodes' ports.
//! 2. **Start hosts**, phase by phase ([`crate::hosts`]): nodes; then the
//!    topics and the links' relays; then bridges and consumers; the clock
//!    starts (and the link metrics, [`crate::metrics`]); then monitors
//!    and producers.
//! 3. **Fault timeline** ([`crate::timeline`]) until the producers are
//!    done, then the **drain**: until every acknowledged item has been
//!    delivered or the drain time ends.
//! 4. **Stop** the hosts that flush and commit (consumers, bridges,
//!    monitors), the metrics and the relays.
//! 5. **Analysis** ([`crate::results`]): records in, [`RunResults`] out.
//!
//! Whatever happens, no host outlives the run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::hosts::{self, HostEnv, Hosts, Phase};
use crate::metrics_sink::{self, MetricsSink};
use crate::results::{self, Outcome};
use crate::scenario::Scenario;
use crate::{timeline, LinkParams, Relay, RelayConfig, TwinError};

pub use crate::results::{
    CheckRecord, FaultRecord, MonitorFigures, QosProducerSummary, RunResults, TopicFigures,
};

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `diaspora` binary every host runs.
    pub binary: PathBuf,
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Multiplies every time in the scenario (e.g. 0.2 for CI).
    pub duration_scale: f64,
    /// Where hosts keep their data directories, logs and records.
    pub work_dir: PathBuf,
    /// Sample the links' metrics (see [`crate::metrics`]); `None`: no sampling.
    pub metrics: Option<MetricsOptions>,
}

/// Where the twin's link metrics go.
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    /// Sampling interval.
    pub interval: Duration,
    /// Append one JSON metric event per line to this file.
    pub out: Option<PathBuf>,
    /// Publish each event as an item on this topic of this scenario node
    /// (created if absent; 1 partition), through `diaspora produce`.
    pub publish: Option<(String, String)>,
}

/// The links' relays, and each link's base parameters (up, down).
type Links = (
    HashMap<String, Relay>,
    HashMap<String, (LinkParams, LinkParams)>,
);

/// Starts a relay per link, in front of its node; records their addresses
/// in `env`.
async fn start_links(
    scenario: &Scenario,
    env: &mut HostEnv,
    seed: u64,
) -> Result<Links, TwinError> {
    let mut relays: HashMap<String, Relay> = HashMap::new();
    let mut base: HashMap<String, (LinkParams, LinkParams)> = HashMap::new();
    for (i, l) in scenario.links.iter().enumerate() {
        let down = l.down.clone().unwrap_or_else(|| l.up.clone());
        let mut cfg = RelayConfig::new(
            "127.0.0.1:0".parse().expect("address"),
            env.node(&l.to).data,
        );
        cfg.up = l.up.clone();
        cfg.down = down.clone();
        cfg.seed = seed.wrapping_add(i as u64 * 0x9E37_79B9);
        let relay = Relay::start(cfg).await.map_err(|source| TwinError::Relay {
            link: l.name.clone(),
            source,
        })?;
        env.links.insert(l.name.clone(), relay.local_addr());
        relays.insert(l.name.clone(), relay);
        base.insert(l.name.clone(), (l.up.clone(), down));
    }
    Ok((relays, base))
}

/// Runs a scenario to completion. `progress` is called about every 200 ms
/// with the elapsed seconds, the planned total and a status line.
pub async fn run(
    mut scenario: Scenario,
    options: &RunOptions,
    progress: &(dyn Fn(f64, f64, &str) + Sync),
) -> Result<RunResults, TwinError> {
    // Plan.
    if options.duration_scale.is_nan() || options.duration_scale <= 0.0 {
        return Err(TwinError::out_of_range(
            "duration scale",
            options.duration_scale,
            "> 0",
        ));
    }
    scenario.scale_durations(options.duration_scale);
    let seed = options.seed.unwrap_or(scenario.seed);
    let work = &options.work_dir;
    // A fresh start: hosts of an earlier run in the same directory (their
    // logs, data, records) would be taken for this run's.
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(TwinError::io("clear", work))?;
    }
    std::fs::create_dir_all(work).map_err(TwinError::io("create", work))?;
    let nodes = hosts::node::allocate(&scenario, work);
    let brokers = hosts::kafka::allocate(&scenario, &nodes);
    let mut env = HostEnv {
        work_dir: work.clone(),
        nodes,
        links: HashMap::new(),
        brokers,
    };
    let mut hosts = Hosts::new(&options.binary);
    let result = run_hosts(&scenario, options, seed, &mut env, &mut hosts, progress).await;
    // Whatever happened, no host outlives the run.
    hosts.stop_all().await;
    result
}

/// Steps 2 to 5 of [`run`], with the hosts in `hosts`.
async fn run_hosts(
    scenario: &Scenario,
    options: &RunOptions,
    seed: u64,
    env: &mut HostEnv,
    hosts: &mut Hosts,
    progress: &(dyn Fn(f64, f64, &str) + Sync),
) -> Result<RunResults, TwinError> {
    let bin = &options.binary;
    // Start hosts: nodes, topics, links, then the receivers, ready when
    // items flow.
    let identities = match &scenario.auth {
        Some(_) => Some(crate::auth::Identities::issue(
            bin,
            scenario,
            &env.work_dir,
        )?),
        None => None,
    };
    let twin_env = identities
        .as_ref()
        .map(|i| i.twin_env())
        .unwrap_or_default();
    hosts.start_phase(Phase::Serve, scenario, env).await?;
    if let Some(ids) = identities {
        ids.grant(bin, scenario, env)?;
        hosts.set_identities(ids);
    }
    hosts::topic::create(bin, scenario, env, &twin_env)?;
    let (mut relays, base) = start_links(scenario, env, seed).await?;
    hosts.start_phase(Phase::Receive, scenario, env).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The clock starts; then the metrics, the monitors and the producers.
    let t0 = Instant::now();
    let t0_us = now_us();
    let mut metrics = match metrics_sink::resolve(&options.metrics, &scenario.metrics) {
        None => None,
        Some(m) => Some(MetricsSink::start(
            &m,
            &scenario.name,
            &base,
            env,
            bin,
            &twin_env,
            t0,
        )?),
    };
    hosts.start_phase(Phase::Watch, scenario, env).await?;
    hosts.start_phase(Phase::Send, scenario, env).await?;

    // The fault timeline, until the producers are done; then the drain.
    let (actions, faults) = timeline::plan(scenario, &base);
    let timeline = timeline::run(
        scenario,
        actions,
        &relays,
        hosts,
        &mut metrics,
        t0,
        progress,
    )
    .await?;
    drain(scenario, hosts, &relays, &mut metrics, t0, progress).await;

    // Stop consumers and bridges first (they flush and commit), then the
    // metrics and the links; nodes stop with the rest after the analysis.
    hosts.stop_after_drain().await;
    let saturated_s = metrics.take().map(MetricsSink::finish).unwrap_or_default();
    let mut links = BTreeMap::new();
    for (name, r) in relays.drain() {
        links.insert(name, r.stats());
        r.shutdown().await;
    }

    // Analysis.
    results::analyse(Outcome {
        scenario,
        seed,
        duration_scale: options.duration_scale,
        records: hosts.records().collect(),
        faults,
        producer_failures: timeline.producer_failures,
        t0_us,
        links,
        saturated_s,
        applied: timeline.applied,
        work_dir: &options.work_dir,
    })
}

/// Waits until every acknowledged item has been delivered and every task
/// submitted to a pool has a result, or the drain time ends.
async fn drain(
    scenario: &Scenario,
    hosts: &Hosts,
    relays: &HashMap<String, Relay>,
    metrics: &mut Option<MetricsSink>,
    t0: Instant,
    progress: &(dyn Fn(f64, f64, &str) + Sync),
) {
    let (mut ack_files, mut consumer_files): (Vec<PathBuf>, Vec<PathBuf>) = (vec![], vec![]);
    // Per pool: tasks submitted, and its results recorder.
    let mut pools: BTreeMap<&str, (u64, Option<PathBuf>)> = BTreeMap::new();
    for (_, r) in hosts.records() {
        match r {
            hosts::Records::Acks { path, .. } => ack_files.push(path.clone()),
            hosts::Records::Deliveries { path, .. } => consumer_files.push(path.clone()),
            hosts::Records::Tasks { pool, acks, .. } => {
                pools.entry(pool).or_default().0 += count_lines_without(acks, "\u{0}");
            }
            hosts::Records::PoolTopic {
                pool,
                topic: hosts::PoolTopic::Results,
                path,
            } => pools.entry(pool).or_default().1 = Some(path.clone()),
            _ => {}
        }
    }
    let acked_total: u64 = ack_files
        .iter()
        .map(|f| count_lines_without(f, "\"fate\""))
        .sum();
    let total = scenario.duration_s + scenario.drain_s;
    let drain_end = t0 + Duration::from_secs_f64(total);
    loop {
        let seen: u64 = consumer_files
            .iter()
            .map(|f| count_lines_without(f, "\"id\":null"))
            .sum();
        let (mut tasks, mut answered) = (0, 0);
        for (submitted, results) in pools.values() {
            tasks += submitted;
            answered += results.as_deref().map_or(0, answered_tasks).min(*submitted);
        }
        let t = t0.elapsed().as_secs_f64();
        progress(
            t,
            total,
            &format!(
                "draining: {seen} of {acked_total} delivered, {answered} of {tasks} tasks answered"
            ),
        );
        if (seen >= acked_total && answered >= tasks) || Instant::now() >= drain_end {
            break;
        }
        if let Some(m) = metrics {
            m.poll(relays);
        }
        MetricsSink::sleep(metrics, Duration::from_millis(200)).await;
    }
}

/// Task keys with a result in a pool's results recording.
fn answered_tasks(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let items = crate::pool_analysis::recorded_items(&text).unwrap_or_default();
    let keys: std::collections::HashSet<String> = crate::pool_analysis::results_of(&items)
        .into_iter()
        .map(|(_, r)| r.key)
        .collect();
    keys.len() as u64
}

/// Complete lines of `path` that do not contain `except`.
fn count_lines_without(path: &Path, except: &str) -> u64 {
    std::fs::read_to_string(path)
        .map(|t| {
            t.split_inclusive('\n')
                .filter(|l| l.ends_with('\n') && !l.contains(except))
                .count() as u64
        })
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch (the hosts' record times are in it).
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
