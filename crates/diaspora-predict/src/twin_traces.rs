//! Congestion traces from twin runs (feature `twins`): what `diaspora
//! predict traces` runs, and where the traces that [`crate::traces`]
//! evaluates come from.
//!
//! [`run`] plays a twin congestion scenario once per seed. Each seed draws
//! its own congestion ([`TraceParams::for_seed`]: start, depth, ramp and
//! hold; every sixth seed a near miss that never saturates the link) into
//! the scenario's first congestion fault, and sets the run's length to
//! cover it. The run samples the links' metrics to a file; one metric of
//! it becomes the trace. For seed N it writes, in the output directory:
//!
//! | file | what |
//! | --- | --- |
//! | `seed-NNN.csv` | the trace, `t_s,value` (the run's elapsed time, the metric) |
//! | `seed-NNN.jsonl` | every metric event of the run (diaspora-telemetry's format) |
//! | `seed-NNN.json` | the seed's parameters, the metric, the rows, and the run's lost and duplicated items |
//!
//! Runs are in real time (about 1–2 minutes per seed), one after the
//! other; the hosts are processes of the `diaspora` binary
//! ([`TracesConfig::binary`]), in a temporary directory per run.
//!
//! What this does not do: it does not check the scenario's assertions (a
//! trace is written whether the run passed or not; its lost and duplicated
//! counts are in its `.json`), and it does not vary anything but the first
//! congestion fault and the run's length.

use std::path::{Path, PathBuf};
use std::time::Duration;

use diaspora_twin::scenario::FaultKind;
use diaspora_twin::{MetricsOptions, RunOptions, Scenario};
use serde::Serialize;

use crate::PredictError;

/// Most seeds in one [`run`] (each is a real-time twin run).
pub const SEEDS_MAX: u64 = 10_000;
/// The shortest metric sampling interval.
pub const INTERVAL_MIN: Duration = Duration::from_millis(10);

/// The congestion of one seed: what [`run`] sets in the scenario's first
/// congestion fault.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceParams {
    /// The seed (also the links' seed in the run).
    pub seed: u64,
    /// When the congestion starts, seconds (10–30, to 0.1 s).
    pub at_s: f64,
    /// The bandwidth it ramps down to, as a fraction of the link's
    /// (0.25–0.45; 0.68–0.78 for a near miss).
    pub to_fraction: f64,
    /// The ramp down (and back up), seconds (20–35, whole).
    pub ramp_s: f64,
    /// How long it holds at its depth, seconds (10–20, whole).
    pub hold_s: f64,
    /// The run's length: the congestion and 15 s after it, seconds.
    pub duration_s: f64,
    /// A congestion that never saturates the link (every sixth seed, `seed % 6 == 5`).
    pub near_miss: bool,
}

impl TraceParams {
    /// The congestion of `seed`: the same seed, the same parameters.
    ///
    /// ```
    /// use diaspora_predict::twin_traces::TraceParams;
    /// let p = TraceParams::for_seed(5);
    /// assert!(p.near_miss);
    /// assert_eq!(p, TraceParams::for_seed(5));
    /// ```
    pub fn for_seed(seed: u64) -> TraceParams {
        use rand::{Rng, SeedableRng};
        let mut rng =
            rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let near_miss = seed % 6 == 5;
        let at_s: f64 = rng.gen_range(10.0..30.0);
        let ramp_s: f64 = rng.gen_range(20.0..35.0);
        let hold_s: f64 = rng.gen_range(10.0..20.0);
        let to_fraction: f64 = if near_miss {
            rng.gen_range(0.68..0.78)
        } else {
            rng.gen_range(0.25..0.45)
        };
        TraceParams {
            seed,
            at_s: (at_s * 10.0).round() / 10.0,
            to_fraction: (to_fraction * 100.0).round() / 100.0,
            ramp_s: ramp_s.round(),
            hold_s: hold_s.round(),
            duration_s: (at_s + 2.0 * ramp_s + hold_s + 15.0).round(),
            near_miss,
        }
    }
}

/// What [`run`] runs and where it writes.
#[derive(Debug, Clone)]
pub struct TracesConfig {
    /// The twin scenario file; its first congestion fault is varied.
    pub scenario: PathBuf,
    /// The first seed.
    pub first_seed: u64,
    /// How many seeds (runs), at most [`SEEDS_MAX`].
    pub seeds: u64,
    /// The output directory (created if absent).
    pub out: PathBuf,
    /// The metric written to the CSV (e.g. `link.utilisation`).
    pub metric: String,
    /// The metric sampling interval (at least [`INTERVAL_MIN`]; shorter is raised to it).
    pub interval: Duration,
    /// The `diaspora` binary the twin's hosts run.
    pub binary: PathBuf,
}

/// What [`run`] tells its caller as it goes.
pub enum Progress<'a> {
    /// A seed's run starts.
    Started(&'a TraceParams),
    /// A seed's trace is written.
    Written(&'a TraceRun),
}

/// One seed's run.
#[derive(Debug, Clone, Serialize)]
pub struct TraceRun {
    /// Its congestion.
    pub params: TraceParams,
    /// The trace (`seed-NNN.csv`).
    pub csv: PathBuf,
    /// Rows in the trace (metric events that carried the metric).
    pub rows: usize,
    /// Items the run lost.
    pub lost: u64,
    /// Items the run delivered twice.
    pub duplicated: u64,
}

/// The result of [`run`]: one entry per seed, in seed order.
#[derive(Debug, Clone, Serialize)]
pub struct TracesReport {
    /// The runs.
    pub runs: Vec<TraceRun>,
}

/// Runs the scenario once per seed and writes each run's trace, metric
/// events and parameters (see the module page). Stops at the first error.
pub async fn run(
    config: &TracesConfig,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<TracesReport, PredictError> {
    if config.seeds > SEEDS_MAX {
        return Err(PredictError::Limit(format!(
            "{} seeds, over {SEEDS_MAX}",
            config.seeds
        )));
    }
    let base = Scenario::load(&config.scenario)?;
    let fault = base
        .faults
        .iter()
        .position(|f| matches!(f.kind, FaultKind::Congestion { .. }))
        .ok_or_else(|| PredictError::NoCongestionFault {
            scenario: config.scenario.clone(),
        })?;
    std::fs::create_dir_all(&config.out).map_err(write_error("creating", &config.out))?;
    let mut report = TracesReport { runs: Vec::new() };
    for seed in config.first_seed..config.first_seed.saturating_add(config.seeds) {
        let params = TraceParams::for_seed(seed);
        let scenario = vary(&base, fault, &params);
        let stem = config.out.join(format!("seed-{seed:03}"));
        let jsonl = stem.with_extension("jsonl");
        let work = tempfile::tempdir().map_err(write_error("creating", std::env::temp_dir()))?;
        let options = RunOptions {
            binary: config.binary.clone(),
            seed: Some(seed),
            duration_scale: 1.0,
            work_dir: work.path().join("hosts"),
            metrics: Some(MetricsOptions {
                interval: config.interval.max(INTERVAL_MIN),
                out: Some(jsonl.clone()),
                publish: None,
            }),
        };
        progress(Progress::Started(&params));
        let results = diaspora_twin::run(scenario, &options, &|_, _, _| {}).await?;
        let text = std::fs::read_to_string(&jsonl).map_err(|source| PredictError::Io {
            path: jsonl.clone(),
            source,
        })?;
        let (csv, rows) = trace_csv(&text, &config.metric)?;
        let csv_path = stem.with_extension("csv");
        std::fs::write(&csv_path, csv).map_err(write_error("writing", &csv_path))?;
        let run = TraceRun {
            params,
            csv: csv_path,
            rows,
            lost: results.figures.lost,
            duplicated: results.figures.duplicated,
        };
        let json_path = stem.with_extension("json");
        std::fs::write(&json_path, format!("{:#}", run_meta(&run, &config.metric)))
            .map_err(write_error("writing", &json_path))?;
        progress(Progress::Written(&run));
        report.runs.push(run);
    }
    Ok(report)
}

/// `base` with `params`' congestion in its fault `fault` (a congestion
/// fault) and `params`' duration.
fn vary(base: &Scenario, fault: usize, params: &TraceParams) -> Scenario {
    let mut scenario = base.clone();
    scenario.duration_s = params.duration_s;
    let f = &mut scenario.faults[fault];
    f.at_s = params.at_s;
    if let FaultKind::Congestion {
        to_fraction,
        ramp_s,
        hold_s,
        ..
    } = &mut f.kind
    {
        (*to_fraction, *ramp_s, *hold_s) = (params.to_fraction, params.ramp_s, params.hold_s);
    }
    scenario
}

/// The trace CSV (`t_s,value`) of `metric` in metric events (one JSON
/// event per line), and its rows: an event gives a row when it carries
/// both `twin.elapsed_s` and the metric.
pub fn trace_csv(events: &str, metric: &str) -> Result<(String, usize), PredictError> {
    let mut csv = String::from("t_s,value\n");
    let mut rows = 0;
    for line in events.lines() {
        let ev = diaspora_telemetry::decode_event(line.as_bytes())?;
        let t = ev.samples.iter().find(|s| s.name == "twin.elapsed_s");
        let v = ev.samples.iter().find(|s| s.name == metric);
        if let (Some(t), Some(v)) = (t, v) {
            csv.push_str(&format!("{:.3},{}\n", t.value, v.value));
            rows += 1;
        }
    }
    Ok((csv, rows))
}

/// A run's `seed-NNN.json`: its parameters, then the metric, the rows, and
/// the lost and duplicated items.
fn run_meta(run: &TraceRun, metric: &str) -> serde_json::Value {
    let p = &run.params;
    serde_json::json!({
        "seed": p.seed,
        "at_s": p.at_s,
        "to_fraction": p.to_fraction,
        "ramp_s": p.ramp_s,
        "hold_s": p.hold_s,
        "duration_s": p.duration_s,
        "near_miss": p.near_miss,
        "metric": metric,
        "rows": run.rows,
        "lost": run.lost,
        "duplicated": run.duplicated,
    })
}

/// An error creating or writing `path`.
fn write_error(
    action: &'static str,
    path: impl AsRef<Path>,
) -> impl FnOnce(std::io::Error) -> PredictError {
    let path = path.as_ref().to_path_buf();
    move |source| PredictError::Write {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_in_their_ranges_and_every_sixth_seed_is_a_near_miss() {
        for seed in 0..600 {
            let p = TraceParams::for_seed(seed);
            assert_eq!(p, TraceParams::for_seed(seed));
            assert_eq!(p.near_miss, seed % 6 == 5, "{p:?}");
            assert!((10.0..=30.0).contains(&p.at_s), "{p:?}");
            assert!((20.0..=35.0).contains(&p.ramp_s), "{p:?}");
            assert!((10.0..=20.0).contains(&p.hold_s), "{p:?}");
            let depth = if p.near_miss {
                0.68..=0.78
            } else {
                0.25..=0.45
            };
            assert!(depth.contains(&p.to_fraction), "{p:?}");
            let end = p.at_s + 2.0 * p.ramp_s + p.hold_s;
            assert!((p.duration_s - (end + 15.0)).abs() <= 2.0, "{p:?}");
        }
    }

    #[test]
    fn params_are_those_of_the_committed_traces() {
        // predict/traces/congestion-ramp/seed-001.json was made with these.
        let p = TraceParams::for_seed(1);
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../predict/traces/congestion-ramp/seed-001.json"
            ))
            .expect("committed trace"),
        )
        .expect("JSON");
        for (k, v) in serde_json::to_value(&p)
            .expect("params")
            .as_object()
            .expect("object")
        {
            assert_eq!(&meta[k], v, "{k}");
        }
    }

    #[test]
    fn varies_the_congestion_fault_and_the_duration() {
        let base = Scenario::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../twins/congestion-ramp.toml"
        )))
        .expect("scenario");
        let fault = base
            .faults
            .iter()
            .position(|f| matches!(f.kind, FaultKind::Congestion { .. }))
            .expect("a congestion fault");
        let p = TraceParams::for_seed(3);
        let s = vary(&base, fault, &p);
        assert_eq!(s.duration_s, p.duration_s);
        assert_eq!(s.faults.len(), base.faults.len());
        assert_eq!(s.faults[fault].at_s, p.at_s);
        let FaultKind::Congestion {
            to_fraction,
            ramp_s,
            hold_s,
            ..
        } = s.faults[fault].kind
        else {
            panic!("not a congestion fault: {:?}", s.faults[fault].kind);
        };
        assert_eq!(
            (to_fraction, ramp_s, hold_s),
            (p.to_fraction, p.ramp_s, p.hold_s)
        );
    }

    #[test]
    fn trace_csv_keeps_events_with_both_samples() {
        use diaspora_telemetry::{encode_event, MetricEvent, MetricSample};
        let event = |samples: &[(&str, f64)]| {
            let event = MetricEvent {
                source: "twin".into(),
                t_us: 1,
                interval_ms: 500,
                samples: samples
                    .iter()
                    .map(|&(name, value)| MetricSample {
                        name: name.into(),
                        value,
                        unit: String::new(),
                        labels: Default::default(),
                    })
                    .collect(),
            };
            String::from_utf8(encode_event(&event)).expect("UTF-8")
        };
        let events = [
            event(&[("link.utilisation", 0.25), ("twin.elapsed_s", 0.5)]),
            event(&[("twin.elapsed_s", 1.0)]),
            event(&[("link.utilisation", 1.0), ("twin.elapsed_s", 1.5)]),
        ]
        .join("\n");
        let (csv, rows) = trace_csv(&events, "link.utilisation").expect("events");
        assert_eq!(rows, 2);
        assert_eq!(csv, "t_s,value\n0.500,0.25\n1.500,1\n");
        assert!(matches!(
            trace_csv("not json\n", "x"),
            Err(PredictError::Telemetry(_))
        ));
    }
}
