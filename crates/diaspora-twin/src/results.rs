//! The results of a run ([`RunResults`], `diaspora twin run --json`) and
//! the analysis step that makes them: the hosts' records are read, matched
//! ([`crate::analysis`]) per run and per topic, and the scenario's
//! assertions checked ([`checks`], pure).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::analysis::{self, AckRecord, Analysis, ConsumeRecord};
use crate::hosts::Records;
use crate::report::{Check, FaultWindow};
use crate::scenario::Scenario;
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
    let mut producer_failures = o.producer_failures;
    let (mut ack_files, mut consumer_files) = (Vec::new(), Vec::new());
    let mut monitors = BTreeMap::new();
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
            Records::Deliveries { topic, path } => consumer_files.push((topic.as_str(), path)),
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
    let checks = checks(&Verdict {
        scenario,
        figures: &a,
        topics: &topics,
        summaries: &summaries,
        producer_failures: &producer_failures,
        recovery_s,
        catchup_ratio,
    });
    Ok(RunResults {
        scenario: scenario.name.clone(),
        seed: o.seed,
        duration_scale: o.duration_scale,
        passed: checks.iter().all(|c| c.passed),
        produced,
        recovery_s,
        catchup_ratio,
        topics,
        checks,
        faults: o.faults,
        figures: a,
        links: o.links,
        work_dir: o.work_dir.to_path_buf(),
        saturated_s: o.saturated_s,
        monitors,
    })
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
