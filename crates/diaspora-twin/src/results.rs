//! The results of a run ([`RunResults`], `diaspora twin run --json`) and
//! the analysis step that makes them: the hosts' records are read, matched
//! ([`crate::analysis`]) per run and per topic, and the scenario's
//! assertions checked ([`checks`], pure).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::analysis::{self, AckRecord, Analysis, ConsumeRecord};
use crate::hosts::{PoolTopic, Records};
use crate::pool_analysis::{self, PoolFigures, PoolInput};
use crate::report::{Check, FaultWindow};
use crate::scenario::Scenario;
use crate::timeline::Applied;
use crate::TwinError;

/// A fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Start, seconds from the run's start.
    pub start_s: f64,
    /// End, seconds from the run's start.
    pub end_s: f64,
    /// What.
    pub label: String,
}

/// An assertion and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRecord {
    /// What was asserted.
    pub what: String,
    /// The measured value.
    pub measured: String,
    /// Whether it held.
    pub passed: bool,
}

/// The results of a run (`diaspora twin run --json`).
#[derive(Debug, Clone, Serialize)]
pub struct RunResults {
    /// Scenario name.
    pub scenario: String,
    /// Seed used.
    pub seed: u64,
    /// Duration scale used.
    pub duration_scale: f64,
    /// Every assertion held.
    pub passed: bool,
    /// Items the producers were asked to produce.
    pub produced: u64,
    /// Acked, consumed, lost, duplicated, latency percentiles and the
    /// per-second timeline (flattened into the JSON).
    #[serde(flatten)]
    pub figures: Analysis,
    /// Longest recovery after a fault, seconds.
    pub recovery_s: f64,
    /// Deliveries by consumers after their SIGCONT of items another
    /// consumer delivered too ([`analysis::duplicated_after_resume`]).
    pub duplicated_after_resume: u64,
    /// Slowest catch-up after an outage: items received during the
    /// recovery per second, over the producers' rate (none without an outage
    /// or when nothing was behind).
    pub catchup_ratio: Option<f64>,
    /// Per topic: figures of its producers and consumers.
    pub topics: std::collections::BTreeMap<String, TopicFigures>,
    /// Assertions.
    pub checks: Vec<CheckRecord>,
    /// Faults applied.
    pub faults: Vec<FaultRecord>,
    /// What each link's relay did: packets and bytes forwarded and dropped,
    /// per direction and reason.
    pub links: std::collections::BTreeMap<String, crate::RelayStats>,
    /// Where the hosts' data, logs and records are.
    pub work_dir: PathBuf,
    /// Per link, when its measured utilisation reached saturation
    /// (`link.utilisation` ≥ 0.95 for two samples in a row, after 10 s
    /// outside a saturation episode; an episode ends after 5 s under 0.85),
    /// seconds from the start (only with metrics sampling).
    pub saturated_s: std::collections::BTreeMap<String, Vec<f64>>,
    /// Per monitor host, the events it published.
    pub monitors: std::collections::BTreeMap<String, MonitorFigures>,
    /// Per service host (the ptychography loop's stages): its timeline and
    /// summary.
    pub services: BTreeMap<String, ServiceFigures>,
    /// Per pool: its tasks and results, workers, and how it got over each
    /// fault ([`crate::pool_analysis`]).
    pub pools: BTreeMap<String, PoolFigures>,
    /// The elastic pool against the fixed one, when the scenario compares
    /// them.
    pub pool_catch_up: Option<CatchUpFigures>,
    /// The faults as the timeline applied them (times µs since the epoch).
    pub faults_applied: Vec<Applied>,
    /// With `[auth]`: the nodes' refusals by principal (audit logs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_refusals: Option<BTreeMap<String, u64>>,
}

/// An elastic pool's catch-up against a fixed one's, after the same
/// restart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatchUpFigures {
    /// The elastic pool.
    pub elastic: String,
    /// The fixed pool.
    pub fixed: String,
    /// The elastic pool's time to be level again after its first restart,
    /// seconds.
    pub elastic_level_s: Option<f64>,
    /// The fixed pool's.
    pub fixed_level_s: Option<f64>,
    /// The fixed pool's time over the elastic one's.
    pub speedup: Option<f64>,
    /// The backlog both were measured against.
    pub level_backlog: Option<u64>,
}

impl CatchUpFigures {
    /// The comparison of `elastic` and `fixed` among `pools`.
    pub fn of(elastic: &str, fixed: &str, pools: &BTreeMap<String, PoolFigures>) -> Self {
        let restart = |p: &str| pools.get(p).and_then(|f| f.restarts.first());
        let level = |p: &str| restart(p).and_then(|r| r.level_s);
        let (e, f) = (level(elastic), level(fixed));
        CatchUpFigures {
            elastic: elastic.to_string(),
            fixed: fixed.to_string(),
            elastic_level_s: e,
            fixed_level_s: f,
            // A level time under a tick (0.01 s) is no time at all; the
            // ratio would only measure noise.
            speedup: e.zip(f).map(|(e, f)| f / e.max(0.01)),
            level_backlog: restart(elastic).map(|r| r.level_backlog),
        }
    }
}

/// What a monitor host published.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MonitorFigures {
    /// Prediction events.
    pub predictions: u64,
    /// Alert events.
    pub alerts: u64,
    /// Times of the prediction events (their samples), seconds from the start.
    pub prediction_s: Vec<f64>,
    /// Each prediction's forecast lead time, seconds.
    pub prediction_lead_s: Vec<f64>,
    /// Each prediction's confidence.
    pub prediction_confidence: Vec<f64>,
    /// Times of the alert events, seconds from the start.
    pub alert_s: Vec<f64>,
}

impl RunResults {
    /// Fault windows for the report.
    pub fn fault_windows(&self) -> Vec<FaultWindow> {
        self.faults
            .iter()
            .map(|f| FaultWindow {
                start_s: f.start_s,
                end_s: f.end_s,
                label: f.label.clone(),
            })
            .collect()
    }

    /// Checks for the report.
    pub fn report_checks(&self) -> Vec<Check> {
        self.checks
            .iter()
            .map(|c| Check {
                what: c.what.clone(),
                measured: c.measured.clone(),
                passed: c.passed,
            })
            .collect()
    }
}

/// What a QoS producer printed at the end (`diaspora stream produce --json`).
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
pub struct QosProducerSummary {
    /// Items offered.
    #[serde(default)]
    pub items: u64,
    /// Items accepted.
    #[serde(default)]
    pub accepted: u64,
    /// Items acknowledged.
    #[serde(default)]
    pub acked: u64,
    /// Items shed.
    #[serde(default)]
    pub shed: u64,
    /// Items reduced away.
    #[serde(default)]
    pub reduced_away: u64,
    /// Items spilled to disk at admission.
    #[serde(default)]
    pub spilled: u64,
    /// Memory-tier high-water mark, bytes.
    #[serde(default)]
    pub memory_high_water: u64,
    /// Memory-tier cap, bytes.
    #[serde(default)]
    pub memory_bytes_max: u64,
    /// Spill-tier high-water mark, bytes.
    #[serde(default)]
    pub spill_high_water: u64,
    /// Peak resident memory of the process, KiB.
    #[serde(default)]
    pub rss_max_kb: Option<u64>,
    /// Target rate, items/s.
    #[serde(default)]
    pub rate_target: f64,
    /// Achieved rate while producing, items/s.
    #[serde(default)]
    pub rate_achieved: f64,
    /// Largest number of reduction stages engaged.
    #[serde(default)]
    pub level_max: u64,
    /// Controller checks that found the stream congested.
    #[serde(default)]
    pub congested_checks: u64,
}

/// Figures of one topic's hosts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TopicFigures {
    /// Items acknowledged.
    pub acked: u64,
    /// Deliveries.
    pub consumed: u64,
    /// Acknowledged items never delivered.
    pub lost: u64,
    /// Reduced away by design.
    pub reduced_away: u64,
    /// Shed by policy.
    pub shed: u64,
    /// Deliveries by quality.
    pub quality_mix: std::collections::BTreeMap<String, u64>,
    /// p50 latency, µs.
    pub latency_us_p50: u64,
    /// p99 latency, µs.
    pub latency_us_p99: u64,
    /// QoS producers' summaries, by host.
    pub producers: std::collections::BTreeMap<String, QosProducerSummary>,
}

impl MonitorFigures {
    /// A monitor's figures from its events (JSON lines), times relative to
    /// `t0_us`. Lines that are not JSON are skipped.
    pub fn from_events(text: &str, t0_us: i64) -> MonitorFigures {
        let mut f = MonitorFigures::default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let t = (v["t_us"].as_i64().unwrap_or(0) - t0_us) as f64 / 1e6;
            match v["kind"].as_str() {
                Some("prediction") => {
                    f.predictions += 1;
                    f.prediction_s.push(t);
                    f.prediction_lead_s
                        .push(v["lead_time_s"].as_f64().unwrap_or(0.0));
                    f.prediction_confidence
                        .push(v["confidence"].as_f64().unwrap_or(0.0));
                }
                Some("alert") => {
                    f.alerts += 1;
                    f.alert_s.push(t);
                }
                _ => {}
            }
        }
        f
    }
}

/// A service's timeline and its summary, as it wrote them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceFigures {
    /// Its events: seconds from the run's start, kind, text.
    pub events: Vec<(f64, String, String)>,
    /// Its summary (none if it wrote none: it did not finish).
    pub summary: Option<serde_json::Value>,
}

impl ServiceFigures {
    /// From its timeline (JSON lines with `t_us`, `kind`, `text`) and its
    /// stdout (the summary: the last line that is a JSON object).
    pub fn read(events: &str, summary: &str, t0_us: i64) -> ServiceFigures {
        let mut f = ServiceFigures::default();
        for line in events.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            f.events.push((
                (v["t_us"].as_i64().unwrap_or(0) - t0_us) as f64 / 1e6,
                v["kind"].as_str().unwrap_or("").to_string(),
                v["text"].as_str().unwrap_or("").to_string(),
            ));
        }
        f.summary = summary
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.is_object());
        f
    }
}

/// What a run produced, for the analysis.
pub(crate) struct Outcome<'a> {
    /// The scenario as run (durations scaled).
    pub scenario: &'a Scenario,
    /// Seed used.
    pub seed: u64,
    /// Duration scale used.
    pub duration_scale: f64,
    /// Each host's records, by name, in start order.
    pub records: Vec<(&'a str, &'a Records)>,
    /// The faults applied.
    pub faults: Vec<FaultRecord>,
    /// Producers that failed (unclean exit, not finishing in time).
    pub producer_failures: Vec<String>,
    /// When the clock started, µs since the Unix epoch.
    pub t0_us: i64,
    /// What each link's relay did.
    pub links: BTreeMap<String, crate::RelayStats>,
    /// Per link, its saturation onsets.
    pub saturated_s: BTreeMap<String, Vec<f64>>,
    /// The faults as applied.
    pub applied: Vec<Applied>,
    /// Where the hosts' data, logs and records are.
    pub work_dir: &'a Path,
}

/// Reads JSON-line records of one kind, tagged with their topic.
fn read_records<T: serde::de::DeserializeOwned>(
    files: &[(&str, &PathBuf)],
) -> Result<Vec<(String, T)>, TwinError> {
    let mut out = Vec::new();
    for (topic, f) in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let parsed = analysis::parse_lines::<T>(&text).map_err(|source| TwinError::Records {
            path: f.to_path_buf(),
            source,
        })?;
        out.extend(parsed.into_iter().map(|r| (topic.to_string(), r)));
    }
    Ok(out)
}

/// The analysis step: reads the hosts' records and makes the results.
pub(crate) fn analyse(o: Outcome<'_>) -> Result<RunResults, TwinError> {
    let scenario = o.scenario;
    let pools = analyse_pools(&o)?;
    let mut producer_failures = o.producer_failures;
    let (mut ack_files, mut consumer_files) = (Vec::new(), Vec::new());
    let mut consumer_hosts = Vec::new();
    let mut monitors = BTreeMap::new();
    let mut services = BTreeMap::new();
    let mut produced = 0u64;
    // QoS producers' own figures.
    let mut summaries: BTreeMap<String, QosProducerSummary> = BTreeMap::new();
    for (name, r) in &o.records {
        match r {
            Records::None => {}
            Records::Acks {
                topic,
                path,
                items,
                summary,
            } => {
                produced += items;
                ack_files.push((topic.as_str(), path));
                if let Some(f) = summary {
                    let text = std::fs::read_to_string(f).unwrap_or_default();
                    match text.lines().rev().find(|l| l.trim_start().starts_with('{')) {
                        Some(l) => {
                            let s: QosProducerSummary =
                                serde_json::from_str(l).map_err(|source| TwinError::Summary {
                                    path: f.clone(),
                                    source,
                                })?;
                            summaries.insert(name.to_string(), s);
                        }
                        None => producer_failures.push(format!("{name}: no summary")),
                    }
                }
            }
            Records::Deliveries { topic, path } => {
                consumer_files.push((topic.as_str(), path));
                consumer_hosts.push((name.to_string(), topic.clone(), path));
            }
            Records::PoolTopic { .. } | Records::Tasks { .. } | Records::Many(_) => {}
            Records::Timeline { events, summary } => {
                let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
                services.insert(
                    name.to_string(),
                    ServiceFigures::read(&read(events), &read(summary), o.t0_us),
                );
            }
            Records::Events { path } => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                monitors.insert(
                    name.to_string(),
                    MonitorFigures::from_events(&text, o.t0_us),
                );
            }
        }
    }
    let acks: Vec<(String, AckRecord)> = read_records(&ack_files)?;
    let consumed: Vec<(String, ConsumeRecord)> = read_records(&consumer_files)?;
    // The records of one topic's hosts, or of all.
    let records = |topic: Option<&str>| {
        let keep = |t: &str| topic.map_or(true, |x| x == t);
        let a: Vec<AckRecord> = acks.iter().filter(|x| keep(&x.0)).map(|x| x.1).collect();
        let c: Vec<ConsumeRecord> = consumed
            .iter()
            .filter(|x| keep(&x.0))
            .map(|x| x.1.clone())
            .collect();
        (a, c)
    };
    let (all_acks, all_consumed) = records(None);
    let a = analysis::analyze(&all_acks, &all_consumed, o.t0_us);
    let mut topics = BTreeMap::new();
    for t in &scenario.topics {
        let (ta, tc) = records(Some(&t.name));
        let fig = analysis::analyze(&ta, &tc, o.t0_us);
        topics.insert(
            t.name.clone(),
            TopicFigures {
                acked: fig.acked,
                consumed: fig.consumed,
                lost: fig.lost,
                reduced_away: fig.reduced_away,
                shed: fig.shed,
                quality_mix: fig.quality_mix,
                latency_us_p50: fig.latency_us_p50,
                latency_us_p99: fig.latency_us_p99,
                producers: scenario
                    .producers
                    .iter()
                    .filter(|p| p.topic == t.name)
                    .filter_map(|p| summaries.get(&p.name).map(|s| (p.name.clone(), s.clone())))
                    .collect(),
            },
        );
    }
    let recovery_s = o
        .faults
        .iter()
        .map(|f| analysis::recovery_s(&all_consumed, o.t0_us + (f.end_s * 1e6) as i64))
        .fold(0.0, f64::max);
    let duplicated_after_resume = {
        let mut hosts = Vec::new();
        for (name, topic, path) in &consumer_hosts {
            let r: Vec<(String, ConsumeRecord)> = read_records(&[(topic.as_str(), path)])?;
            hosts.push((
                name.clone(),
                topic.clone(),
                r.into_iter().map(|x| x.1).collect(),
            ));
        }
        let resumes: Vec<(String, i64)> = o
            .faults
            .iter()
            // A SIGSTOP window ends at its SIGCONT.
            .filter(|f| f.end_s > f.start_s)
            .filter_map(|f| {
                let host = f.label.strip_prefix("SIGSTOP ")?;
                Some((host.to_string(), o.t0_us + (f.end_s * 1e6) as i64))
            })
            .collect();
        analysis::duplicated_after_resume(&hosts, &resumes)
    };
    let rate: f64 = scenario.producers.iter().map(|p| p.rate).sum();
    let catchup_ratio = o
        .faults
        .iter()
        .filter(|f| f.label.contains("outage"))
        .filter_map(|f| {
            let end = o.t0_us + (f.end_s * 1e6) as i64;
            let rec = analysis::recovery_s(&all_consumed, end);
            (rec > 0.2).then(|| {
                let got = all_consumed
                    .iter()
                    .filter(|c| {
                        c.received_us() >= end && c.received_us() <= end + (rec * 1e6) as i64
                    })
                    .count() as f64;
                got / rec / rate
            })
        })
        .reduce(f64::min);
    let pool_catch_up = scenario
        .assertions
        .pool_catch_up
        .as_ref()
        .map(|c| CatchUpFigures::of(&c.elastic, &c.fixed, &pools));
    let auth_refusals = scenario
        .auth
        .as_ref()
        .map(|_| crate::auth::refusals(scenario, o.work_dir));
    let checks = checks(&Verdict {
        scenario,
        figures: &a,
        topics: &topics,
        summaries: &summaries,
        producer_failures: &producer_failures,
        recovery_s,
        catchup_ratio,
        duplicated_after_resume,
        pools: &pools,
        pool_catch_up: pool_catch_up.as_ref(),
        auth_refusals: auth_refusals.as_ref(),
    });
    Ok(RunResults {
        scenario: scenario.name.clone(),
        seed: o.seed,
        duration_scale: o.duration_scale,
        passed: checks.iter().all(|c| c.passed),
        produced,
        recovery_s,
        duplicated_after_resume,
        catchup_ratio,
        topics,
        checks,
        faults: o.faults,
        figures: a,
        links: o.links,
        work_dir: o.work_dir.to_path_buf(),
        saturated_s: o.saturated_s,
        monitors,
        services,
        pools,
        pool_catch_up,
        faults_applied: o.applied,
        auth_refusals,
    })
}

/// Each pool's figures from its recorders and task streams. Two pools
/// compared for their catch-up are held to one level: the larger of the
/// two they had before they were killed.
fn analyse_pools(o: &Outcome<'_>) -> Result<BTreeMap<String, PoolFigures>, TwinError> {
    let read = |path: &PathBuf| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        pool_analysis::recorded_items(&text).map_err(|source| TwinError::Records {
            path: path.clone(),
            source,
        })
    };
    let mut inputs = Vec::new();
    for p in &o.scenario.pools {
        let shape = p.shape()?;
        let (mut events, mut results, mut submitted) = (Vec::new(), Vec::new(), Vec::new());
        // The tasks topic as recorded: what a service submitted.
        let mut recorded: Vec<(String, i64)> = Vec::new();
        for (_, r) in &o.records {
            match r {
                Records::PoolTopic { pool, topic, path } if *pool == p.name => {
                    let items = read(path)?;
                    match topic {
                        PoolTopic::Events => events.extend(
                            items
                                .iter()
                                .map(|i| (i.timestamp_us, pool_analysis::parse_event(&i.payload))),
                        ),
                        PoolTopic::Results => results.extend(pool_analysis::results_of(&items)),
                        PoolTopic::Tasks => recorded.extend(pool_analysis::tasks_of(&items)),
                    }
                }
                Records::Tasks {
                    pool,
                    acks,
                    key_prefix,
                    share,
                } if *pool == p.name => {
                    let acked: Vec<(String, AckRecord)> = read_records(&[("", acks)])?;
                    submitted.extend(acked.into_iter().map(|(_, a)| {
                        let key = crate::hosts::tasks::task_key(key_prefix, share.task(a.id));
                        (key, a.acked_us)
                    }));
                }
                _ => {}
            }
        }
        if !o
            .records
            .iter()
            .any(|(_, r)| matches!(r, Records::Tasks { pool, .. } if *pool == p.name))
        {
            // No task stream of the twin's: the tasks are a service's, each
            // key counted once, at its first submission.
            let mut first: BTreeMap<String, i64> = BTreeMap::new();
            for (k, t) in recorded {
                first.entry(k).or_insert(t);
            }
            submitted = first.into_iter().collect();
        }
        inputs.push((p.name.clone(), shape, events, results, submitted));
    }
    let analyse = |level_backlog_min: &BTreeMap<&str, u64>| {
        inputs
            .iter()
            .map(|(name, shape, events, results, submitted)| {
                let f = pool_analysis::analyse_pool(&PoolInput {
                    host: name,
                    shape,
                    events: events.clone(),
                    results: results.clone(),
                    submitted: submitted.clone(),
                    applied: &o.applied,
                    t0_us: o.t0_us,
                    level_backlog_min: level_backlog_min.get(name.as_str()).copied().unwrap_or(1),
                });
                (name.clone(), f)
            })
            .collect::<BTreeMap<String, PoolFigures>>()
    };
    let out = analyse(&BTreeMap::new());
    let Some(c) = &o.scenario.assertions.pool_catch_up else {
        return Ok(out);
    };
    let level = |p: &str| {
        out.get(p)
            .and_then(|f| f.restarts.first())
            .map_or(1, |r| r.level_backlog)
    };
    let common = level(&c.elastic).max(level(&c.fixed));
    if level(&c.elastic) == level(&c.fixed) {
        return Ok(out);
    }
    Ok(analyse(&BTreeMap::from([
        (c.elastic.as_str(), common),
        (c.fixed.as_str(), common),
    ])))
}

/// The figures the scenario's assertions are checked against.
pub struct Verdict<'a> {
    /// The scenario (its `[assertions]`).
    pub scenario: &'a Scenario,
    /// Figures over every topic.
    pub figures: &'a Analysis,
    /// Figures per topic.
    pub topics: &'a BTreeMap<String, TopicFigures>,
    /// QoS producers' summaries, by host.
    pub summaries: &'a BTreeMap<String, QosProducerSummary>,
    /// Producers that failed.
    pub producer_failures: &'a [String],
    /// Longest recovery after a fault, seconds.
    pub recovery_s: f64,
    /// Slowest catch-up after an outage, if any.
    pub catchup_ratio: Option<f64>,
    /// Consumers' deliveries after their SIGCONT that another consumer made too.
    pub duplicated_after_resume: u64,
    /// Figures per pool.
    pub pools: &'a BTreeMap<String, PoolFigures>,
    /// The elastic pool against the fixed one, if compared.
    pub pool_catch_up: Option<&'a CatchUpFigures>,
    /// With `[auth]`: the nodes' refusals by principal.
    pub auth_refusals: Option<&'a BTreeMap<String, u64>>,
}

/// Checks the scenario's assertions against the figures. Pure.
pub fn checks(v: &Verdict<'_>) -> Vec<CheckRecord> {
    let (a, asrt) = (v.figures, &v.scenario.assertions);
    let (recovery_s, catchup_ratio) = (v.recovery_s, v.catchup_ratio);
    let mut checks = vec![
        CheckRecord {
            what: format!("lost ≤ {}", asrt.lost_max),
            measured: a.lost.to_string(),
            passed: a.lost <= asrt.lost_max,
        },
        CheckRecord {
            what: format!("duplicated ≤ {}", asrt.duplicated_max),
            measured: a.duplicated.to_string(),
            passed: a.duplicated <= asrt.duplicated_max,
        },
        CheckRecord {
            what: format!("acked ≥ {}", asrt.acked_min),
            measured: a.acked.to_string(),
            passed: a.acked >= asrt.acked_min,
        },
        CheckRecord {
            what: "every producer exited cleanly".into(),
            measured: if v.producer_failures.is_empty() {
                "yes".into()
            } else {
                v.producer_failures.join(", ")
            },
            passed: v.producer_failures.is_empty(),
        },
    ];
    if let Some(want) = &asrt.refused_exactly {
        let mut want: Vec<&str> = want.iter().map(String::as_str).collect();
        want.sort_unstable();
        let got: Vec<&str> = v
            .auth_refusals
            .map(|r| r.keys().map(String::as_str).collect())
            .unwrap_or_default();
        checks.push(CheckRecord {
            what: format!("refused exactly: [{}]", want.join(", ")),
            measured: match v.auth_refusals {
                Some(r) if !r.is_empty() => r
                    .iter()
                    .map(|(who, n)| format!("{who} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => "nobody".into(),
            },
            passed: got == want,
        });
    }
    if let Some(max) = asrt.duplicated_after_resume_max {
        checks.push(CheckRecord {
            what: format!("duplicated after a consumer's resume ≤ {max}"),
            measured: v.duplicated_after_resume.to_string(),
            passed: v.duplicated_after_resume <= max,
        });
    }
    if let Some(max) = asrt.latency_us_p99_max {
        checks.push(CheckRecord {
            what: format!("latency p99 ≤ {max} µs"),
            measured: a.latency_us_p99.to_string(),
            passed: a.latency_us_p99 <= max,
        });
    }
    for (name, s) in v.summaries {
        checks.push(CheckRecord {
            what: format!(
                "{name}: memory tier ≤ its cap ({} bytes)",
                s.memory_bytes_max
            ),
            measured: format!(
                "{} bytes (process peak RSS {} KiB)",
                s.memory_high_water,
                s.rss_max_kb.unwrap_or(0)
            ),
            passed: s.memory_high_water <= s.memory_bytes_max,
        });
    }
    if let Some(min) = asrt.catchup_ratio_min {
        checks.push(CheckRecord {
            what: format!("catch-up after each outage ≥ {min}× the production rate"),
            measured: catchup_ratio.map_or("nothing was behind".into(), |r| format!("{r:.1}×")),
            passed: catchup_ratio.map_or(true, |r| r >= min),
        });
    }
    for (t, ta) in &asrt.topics {
        let fig = &v.topics[t];
        checks.push(CheckRecord {
            what: format!("{t}: lost ≤ {}", ta.lost_max),
            measured: fig.lost.to_string(),
            passed: fig.lost <= ta.lost_max,
        });
        if let Some(max) = ta.latency_us_p99_max {
            checks.push(CheckRecord {
                what: format!("{t}: latency p99 ≤ {max} µs"),
                measured: fig.latency_us_p99.to_string(),
                passed: fig.latency_us_p99 <= max,
            });
        }
        if let Some(max) = ta.producer_rate_ratio_max {
            for (name, s) in &fig.producers {
                let r = s.rate_achieved / s.rate_target.max(1e-9);
                checks.push(CheckRecord {
                    what: format!("{t}: {name} slowed to ≤ {max} of its target rate"),
                    measured: format!(
                        "{r:.2} ({:.0} of {:.0} items/s)",
                        s.rate_achieved, s.rate_target
                    ),
                    passed: r <= max,
                });
            }
        }
        if ta.substituted_or_reduced_min > 0 {
            let n: u64 = fig
                .quality_mix
                .iter()
                .filter(|(q, _)| q.as_str() != "original")
                .map(|(_, n)| n)
                .sum();
            checks.push(CheckRecord {
                what: format!(
                    "{t}: ≥ {} items delivered reduced or reconstructed",
                    ta.substituted_or_reduced_min
                ),
                measured: n.to_string(),
                passed: n >= ta.substituted_or_reduced_min,
            });
        }
    }
    if let Some(max) = asrt.recovery_s_max {
        checks.push(CheckRecord {
            what: format!("recovery ≤ {max:.1} s"),
            measured: format!("{recovery_s:.2}"),
            passed: recovery_s <= max,
        });
    }
    for (name, f) in v.pools {
        checks.extend(pool_checks(
            name,
            f,
            &asrt.pools.get(name).cloned().unwrap_or_default(),
        ));
    }
    if let (Some(c), Some(fig)) = (&asrt.pool_catch_up, v.pool_catch_up) {
        let s = |x: Option<f64>| x.map_or("never".to_string(), |x| format!("{x:.2} s"));
        checks.push(CheckRecord {
            what: format!(
                "{} level again after its restart ≥ {}× sooner than {}",
                c.elastic, c.speedup_min, c.fixed
            ),
            measured: format!(
                "{} vs {}: {}",
                s(fig.elastic_level_s),
                s(fig.fixed_level_s),
                fig.speedup
                    .map_or("no ratio".into(), |r| format!("{r:.1}×"))
            ),
            passed: fig.speedup.is_some_and(|r| r >= c.speedup_min),
        });
    }
    checks
}

/// The checks of one pool. A bound on a fault the run never applied
/// fails: a check that was not exercised proves nothing.
fn pool_checks(
    name: &str,
    f: &PoolFigures,
    a: &crate::scenario::PoolAssertions,
) -> Vec<CheckRecord> {
    let mut checks = vec![CheckRecord {
        what: format!("{name}: tasks submitted ≥ {}", a.tasks_min),
        measured: f.submitted.to_string(),
        passed: f.submitted >= a.tasks_min,
    }];
    if a.results_exact {
        checks.push(CheckRecord {
            what: format!("{name}: exactly one successful result per task"),
            measured: format!(
                "{} tasks, {} results: {} missing, {} duplicated, {} failed, {} unknown",
                f.submitted, f.results, f.missing, f.duplicated, f.failed, f.unknown
            ),
            passed: f.missing + f.duplicated + f.failed + f.unknown == 0,
        });
    }
    // The worst of some measured times (at_s, time), each of which must be
    // there and within `max`.
    let bound = |what: String, max: f64, none: &str, times: Vec<(f64, Option<f64>)>| {
        let never: Vec<String> = times
            .iter()
            .filter(|(_, x)| x.is_none())
            .map(|(at, _)| format!("{at:.1} s"))
            .collect();
        let worst = times.iter().filter_map(|(_, x)| *x).fold(0.0, f64::max);
        let measured = if times.is_empty() {
            none.to_string()
        } else if !never.is_empty() {
            format!("never, after the fault at {}", never.join(", "))
        } else {
            format!("worst {worst:.2} s of {}", times.len())
        };
        CheckRecord {
            what,
            measured,
            passed: !times.is_empty() && never.is_empty() && worst <= max,
        }
    };
    if let Some(max) = a.recovery_s_max {
        checks.push(bound(
            format!("{name}: back at its minimum ≤ {max} s after each worker SIGKILL"),
            max,
            "no worker was killed",
            f.crashes.iter().map(|c| (c.at_s, c.recovered_s)).collect(),
        ));
    }
    if let Some(max) = a.covered_s_max {
        checks.push(bound(
            format!(
                "{name}: min_total live at the other sites ≤ {max} s after a site's link goes dark"
            ),
            max,
            "no outage of its sites' links",
            f.outages.iter().map(|o| (o.start_s, o.covered_s)).collect(),
        ));
    }
    if let Some(max) = a.min_restored_s_max {
        checks.push(bound(
            format!("{name}: every site at its minimum ≤ {max} s after its link returns"),
            max,
            "no outage of its sites' links",
            f.outages
                .iter()
                .map(|o| (o.start_s, o.restored_s))
                .collect(),
        ));
    }
    if let Some(max) = a.level_s_max {
        checks.push(bound(
            format!("{name}: backlog level again ≤ {max} s after its restart"),
            max,
            "it was never restarted",
            f.restarts.iter().map(|r| (r.killed_s, r.level_s)).collect(),
        ));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_follow_the_assertions() {
        let s = Scenario::parse(
            "name = \"t\"\nduration_s = 10\n[assertions]\nlost_max = 1\nrecovery_s_max = 2.0\nlatency_us_p99_max = 500",
        )
        .unwrap();
        let figures = Analysis {
            acked: 10,
            lost: 1,
            duplicated: 1,
            latency_us_p99: 600,
            ..Analysis::default()
        };
        let failures = vec!["p".to_string()];
        let got = checks(&Verdict {
            scenario: &s,
            figures: &figures,
            topics: &BTreeMap::new(),
            summaries: &BTreeMap::new(),
            producer_failures: &failures,
            recovery_s: 1.5,
            catchup_ratio: None,
            duplicated_after_resume: 0,
            pools: &BTreeMap::new(),
            pool_catch_up: None,
            auth_refusals: None,
        });
        let got: Vec<(&str, &str, bool)> = got
            .iter()
            .map(|c| (c.what.as_str(), c.measured.as_str(), c.passed))
            .collect();
        assert_eq!(
            got,
            vec![
                ("lost ≤ 1", "1", true),
                ("duplicated ≤ 0", "1", false),
                ("acked ≥ 1", "10", true),
                ("every producer exited cleanly", "p", false),
                ("latency p99 ≤ 500 µs", "600", false),
                ("recovery ≤ 2.0 s", "1.50", true),
            ]
        );
    }

    #[test]
    fn refused_exactly_holds_only_for_that_set_of_principals() {
        let s = Scenario::parse(
            "name = \"t\"\nduration_s = 10\n[[nodes]]\nname = \"n\"\n[auth]\n[assertions]\nrefused_exactly = [\"User:z\", \"User:a\"]",
        )
        .unwrap();
        let figures = Analysis {
            acked: 10,
            ..Analysis::default()
        };
        let check = |refusals: &[(&str, u64)]| {
            let r: BTreeMap<String, u64> =
                refusals.iter().map(|(w, n)| (w.to_string(), *n)).collect();
            let got = checks(&Verdict {
                scenario: &s,
                figures: &figures,
                topics: &BTreeMap::new(),
                summaries: &BTreeMap::new(),
                producer_failures: &[],
                recovery_s: 0.0,
                catchup_ratio: None,
                duplicated_after_resume: 0,
                pools: &BTreeMap::new(),
                pool_catch_up: None,
                auth_refusals: Some(&r),
            });
            let c = got
                .into_iter()
                .find(|c| c.what.starts_with("refused exactly"))
                .unwrap();
            (c.measured, c.passed)
        };
        assert_eq!(
            check(&[("User:a", 3), ("User:z", 1)]),
            ("User:a ×3, User:z ×1".to_string(), true)
        );
        // Someone else refused too, or one of them never: it fails.
        assert!(!check(&[("User:a", 3), ("User:z", 1), ("User:b", 1)]).1);
        assert!(!check(&[("User:a", 3)]).1);
        assert_eq!(check(&[]), ("nobody".to_string(), false));
        // Only with [auth].
        assert!(Scenario::parse(
            "name = \"t\"\nduration_s = 10\n[assertions]\nrefused_exactly = []"
        )
        .is_err());
    }

    #[test]
    fn monitor_events_are_counted_from_the_start() {
        let text = concat!(
            "{\"kind\":\"prediction\",\"t_us\":3000000,\"lead_time_s\":12.5,\"confidence\":0.8}\n",
            "not json\n",
            "{\"kind\":\"alert\",\"t_us\":5000000}\n",
        );
        let f = MonitorFigures::from_events(text, 1_000_000);
        assert_eq!((f.predictions, f.alerts), (1, 1));
        assert_eq!(f.prediction_s, vec![2.0]);
        assert_eq!(f.prediction_lead_s, vec![12.5]);
        assert_eq!(f.prediction_confidence, vec![0.8]);
        assert_eq!(f.alert_s, vec![4.0]);
    }
}
