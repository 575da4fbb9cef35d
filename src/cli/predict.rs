//! `diaspora predict …`: the LSTM forecaster and anomaly detector. Every
//! loop runs in `diaspora-predict` (evaluation, [`diaspora_predict::train`],
//! the monitor runtime `serve`, the trace runs `twin_traces`); this builds
//! their configurations and prints what they report.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use diaspora_predict::detector::{nab_eval, DetectorConfig};
use diaspora_predict::{forecast, nab};

/// The subcommands of `diaspora predict`.
#[derive(Subcommand)]
pub enum PredictCommand {
    /// Evaluate the detector and forecaster: on NAB (`--nab DIR`: NAB's
    /// standard, reward-low-FP and reward-low-FN scores, normalised so the
    /// null detector scores 0 and a perfect one 100, with per-series
    /// scores) and/or on twin congestion traces (`--twin-traces DIR`).
    Eval(EvalArgs),
    /// Make congestion traces: run a twin congestion scenario once per seed,
    /// with the congestion's start, depth, ramp and hold drawn from the seed
    /// (every sixth seed a near miss that never saturates the link), and
    /// write each run's link metric as DIR/seed-NNN.csv (`t_s,value`), with
    /// every metric event in seed-NNN.jsonl and the parameters in
    /// seed-NNN.json. Runs in real time (about 1–2 minutes per seed).
    Traces(TracesArgs),
    /// Run monitors (TOML, see `monitors/`) against a live node: read the
    /// metric events on each monitor's source topic, forecast and learn
    /// online, and publish prediction and alert events on its output topic
    /// (also printed, one JSON line each). Stops on Ctrl-C, after --max-s,
    /// or after --idle-s without metric events; saves models on the way out.
    Serve(ServeArgs),
    /// Train the forecaster on metric traces (DIR/*.csv, `t_s,value`) and
    /// write a safetensors checkpoint that monitors can start from.
    Train(TrainArgs),
    /// Check a monitor file and print it with every default filled in.
    Check {
        /// The monitor file.
        monitor: PathBuf,
    },
}

/// The forecaster's shape, shared by `predict train` and `bench predict`.
#[derive(Args)]
pub struct ModelShape {
    /// Window, steps.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Horizon, steps.
    #[arg(long, default_value_t = 20)]
    horizon: usize,
    /// LSTM hidden size.
    #[arg(long, default_value_t = 32)]
    hidden: usize,
}

impl ModelShape {
    fn config(&self) -> forecast::ForecasterConfig {
        forecast::ForecasterConfig {
            window: self.window,
            horizon: self.horizon,
            hidden: self.hidden,
            ..Default::default()
        }
    }
}

/// Arguments of `diaspora predict train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Directory of traces.
    #[arg(long)]
    traces: PathBuf,
    /// Checkpoint to write.
    #[arg(long)]
    out: PathBuf,
    /// Training steps.
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    #[command(flatten)]
    shape: ModelShape,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Device: cpu, or cuda / cuda:N with a CUDA build.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Trains the forecaster (see [`diaspora_predict::train`]) and writes its
/// checkpoint, printing the mean loss as it goes.
fn train(a: TrainArgs) -> Result<()> {
    use diaspora_predict::train::{train, TrainConfig};
    let traces = diaspora_predict::traces::load_traces(&a.traces)?;
    let config = TrainConfig {
        forecaster: forecast::ForecasterConfig {
            history: 8192,
            seed: a.seed,
            ..a.shape.config()
        },
        steps: a.steps,
        report_every: 500,
    };
    let device = forecast::device(&a.device)?;
    let trained = train(&traces, &config, device, &mut |p| {
        eprintln!(
            "step {}: mean loss {:.4} ({:.1} s)",
            p.step, p.mean_loss, p.elapsed_s
        )
    })?;
    let saving = Instant::now();
    trained.model.save(&a.out)?;
    println!(
        "trained on {} traces ({} rows) for {} steps in {:.1} s → {}",
        traces.len(),
        trained.rows,
        a.steps,
        trained.elapsed_s + saving.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

/// Arguments of `diaspora bench predict`.
#[derive(Args)]
pub struct BenchArgs {
    /// Series per batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    #[command(flatten)]
    shape: ModelShape,
    /// Timed batched forecasts.
    #[arg(long, default_value_t = 50)]
    iterations: usize,
    /// Device: cpu, or cuda / cuda:N with a CUDA build.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// Runs `diaspora bench predict` (blocking).
pub fn bench(a: BenchArgs) -> Result<()> {
    use diaspora_predict::bench::{run, PredictBenchConfig};
    let device = forecast::device(&a.device)?;
    let cfg = PredictBenchConfig {
        forecaster: a.shape.config(),
        batch: a.batch,
        iterations: a.iterations,
        train_iterations: 30,
        device: a.device.clone(),
    };
    cfg.forecaster.validate()?;
    let r = run(&cfg, device)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "forecaster (window {}, horizon {}, hidden {}) on {}:",
            r.window, r.horizon, r.hidden, r.device
        );
        println!(
            "  batched inference: {:.2} µs per series-step ({} series in {:.2} ms)",
            r.inference_us_per_series_step, r.batch, r.batch_forecast_ms
        );
        println!(
            "  baseline, one series per call: {:.1} µs per series-step",
            r.unbatched_us_per_series_step
        );
        println!(
            "  online training step ({} windows): {:.2} ms",
            r.train_batch, r.train_step_ms
        );
    }
    Ok(())
}

/// Arguments of `diaspora predict serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Monitor files.
    #[arg(long = "monitor", required = true)]
    monitors: Vec<PathBuf>,
    #[command(flatten)]
    conn: super::DataConn,
    /// gRPC admin address of the node, to create an absent output topic.
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
    /// Read the metric topic from its start (default: only new events).
    #[arg(long)]
    from_start: bool,
    /// Stop after this many seconds (0 = run until Ctrl-C).
    #[arg(long, default_value_t = 0.0)]
    max_s: f64,
    /// Stop after this many seconds without a metric event (0 = never).
    #[arg(long, default_value_t = 0.0)]
    idle_s: f64,
}

/// Arguments of `diaspora predict traces`.
#[derive(Args)]
pub struct TracesArgs {
    /// The twin scenario (its first congestion fault is varied).
    #[arg(long, default_value = "twins/congestion-ramp.toml")]
    scenario: PathBuf,
    /// Number of seeds (runs).
    #[arg(long, default_value_t = 12)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// The metric written to the CSV.
    #[arg(long, default_value = "link.utilisation")]
    metric: String,
    /// Metric sampling interval, ms.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
}

/// Arguments of `diaspora predict eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// A NAB directory with `data/**/*.csv` and `labels/combined_windows.json`.
    #[arg(long)]
    nab: Option<PathBuf>,
    /// A directory of metric traces (`*.csv`, `t_s,value`; see `predict
    /// traces`): forecast RMSE at 1, 5 and 10 s against persistence and the
    /// best EWMA, and congestion-onset precision, recall and lead time,
    /// leave-one-trace-out.
    #[arg(long)]
    twin_traces: Option<PathBuf>,
    /// Trace-evaluation configuration (TOML; defaults for anything left out).
    #[arg(long)]
    twin_config: Option<PathBuf>,
    /// Detector configuration (TOML; defaults for anything left out).
    #[arg(long)]
    detector: Option<PathBuf>,
    /// Only series whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Worker threads (series run in parallel); default: cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Device: cpu, or cuda / cuda:N with a CUDA build.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// Runs a `diaspora predict` command.
pub async fn run(cmd: PredictCommand) -> Result<()> {
    match cmd {
        PredictCommand::Eval(a) => tokio::task::block_in_place(|| eval(a)),
        PredictCommand::Traces(a) => traces(a).await,
        PredictCommand::Serve(a) => serve(a).await,
        PredictCommand::Train(a) => tokio::task::block_in_place(|| train(a)),
        PredictCommand::Check { monitor } => {
            let spec = diaspora_predict::monitor::MonitorSpec::load(&monitor)?;
            print!("{}", toml::to_string_pretty(&spec)?);
            Ok(())
        }
    }
}

/// Runs monitors against a live node until SIGTERM, Ctrl-C or a limit:
/// events on stdout (one JSON line each), progress on stderr.
async fn serve(a: ServeArgs) -> Result<()> {
    use diaspora_predict::serve::{run, Progress, ServeConfig};
    let config = ServeConfig {
        node: a.conn.client_config(),
        admin: a.admin,
        monitors: a.monitors,
        start: if a.from_start {
            diaspora_fabric::StartFrom::Earliest
        } else {
            diaspora_fabric::StartFrom::Latest
        },
        max_s: a.max_s,
        idle_s: a.idle_s,
    };
    let mut progress = |p: Progress<'_>| match p {
        Progress::Started(spec) => eprintln!(
            "monitor {}: {} {:?} on {} → {}",
            spec.name, spec.source.metric, spec.source.labels, spec.source.topic, spec.output.topic
        ),
        Progress::Published { event, .. } => println!("{}", String::from_utf8_lossy(event)),
        Progress::Unacknowledged { monitor, error } => {
            eprintln!("monitor {monitor}: an event was not acknowledged: {error}")
        }
        Progress::Stopped { monitor, stats } => eprintln!(
            "monitor {}: {}",
            monitor.name,
            serde_json::to_string(&stats).unwrap_or_default()
        ),
        Progress::Finished { acked, failed } => {
            eprintln!("events: {acked} acknowledged, {failed} not")
        }
    };
    let report = run(&config, super::shutdown_signal()?, &mut progress).await?;
    if report.failed > 0 {
        anyhow::bail!("{} monitor event(s) were not acknowledged", report.failed);
    }
    Ok(())
}

/// Makes congestion traces (see [`diaspora_predict::twin_traces`]),
/// printing each seed's congestion as it starts and its trace once written.
async fn traces(a: TracesArgs) -> Result<()> {
    use diaspora_predict::twin_traces::{run, Progress, TracesConfig};
    let config = TracesConfig {
        scenario: a.scenario,
        first_seed: a.first_seed,
        seeds: a.seeds,
        out: a.out,
        metric: a.metric,
        interval: std::time::Duration::from_millis(a.interval_ms),
        binary: std::env::current_exe().context("locating the diaspora binary")?,
    };
    let mut progress = |p: Progress<'_>| match p {
        Progress::Started(p) => eprintln!(
            "seed {}: congestion at {:.1} s to {:.2} over {} s, hold {} s ({} s run{})",
            p.seed,
            p.at_s,
            p.to_fraction,
            p.ramp_s,
            p.hold_s,
            p.duration_s,
            if p.near_miss { ", near miss" } else { "" }
        ),
        Progress::Written(r) => eprintln!("  {} samples → {}", r.rows, r.csv.display()),
    };
    run(&config, &mut progress).await?;
    Ok(())
}

/// A TOML configuration file (defaults for anything it leaves out), or the
/// defaults when there is none.
fn load_toml_or_default<T: serde::de::DeserializeOwned + Default>(
    path: Option<&std::path::Path>,
    what: &str,
) -> Result<T> {
    let Some(p) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    toml::from_str(&text).with_context(|| format!("{what} configuration {}", p.display()))
}

fn eval(a: EvalArgs) -> Result<()> {
    if a.nab.is_none() && a.twin_traces.is_none() {
        anyhow::bail!("nothing to evaluate: give --nab DIR (and/or --twin-traces DIR)");
    }
    let device = forecast::device(&a.device)?;
    let detector: DetectorConfig = load_toml_or_default(a.detector.as_deref(), "detector")?;
    detector.forecaster.validate()?;
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let mut out = serde_json::Map::new();
    if let Some(dir) = &a.nab {
        let mut corpus = nab::load_corpus(dir)?;
        if let Some(only) = &a.only {
            corpus
                .series
                .retain(|(s, _)| s.name.contains(only.as_str()));
            anyhow::ensure!(!corpus.series.is_empty(), "no NAB series matches {only:?}");
        }
        let t0 = Instant::now();
        let report = nab_eval(&corpus, &detector, &device, threads)?;
        let secs = t0.elapsed().as_secs_f64();
        if !a.json {
            println!(
                "NAB ({} series, {} windows, {} rows) in {secs:.1} s",
                report.series_count, report.window_count, report.rows
            );
            println!(
                "  score: standard {:.1}, reward-low-FP {:.1}, reward-low-FN {:.1} (threshold {:.6})",
                report.nab_score_standard,
                report.nab_score_reward_low_fp,
                report.nab_score_reward_low_fn,
                report.threshold_standard
            );
            for (name, v) in &report.baselines {
                println!("  baseline {name} (same corpus, same run): {v:.1}");
            }
            for s in &report.series {
                println!(
                    "  {:60} {:>7} tp {:>2} fp {:>3} fn {:>2}  rmse/persistence {:.3}",
                    s.name,
                    s.score.map_or("-".into(), |v| format!("{v:.1}")),
                    s.tp,
                    s.fp,
                    s.fn_,
                    s.rmse_ratio_to_persistence
                );
            }
            println!(
                "  published, full 58-series corpus (orientation only): {}",
                report
                    .reference_full_corpus
                    .iter()
                    .map(|(n, v)| format!("{n} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut v = serde_json::to_value(&report)?;
        v["seconds"] = serde_json::json!(secs);
        for (k, val) in v.as_object().expect("object").clone() {
            out.insert(k, val);
        }
    }
    if let Some(dir) = &a.twin_traces {
        use diaspora_predict::traces::{load_traces, twin_eval, TwinEvalConfig};
        let cfg: TwinEvalConfig =
            load_toml_or_default(a.twin_config.as_deref(), "trace-evaluation")?;
        cfg.forecaster.validate()?;
        let traces = load_traces(dir)?;
        let t0 = Instant::now();
        let r = twin_eval(&traces, &cfg, &device)?;
        let secs = t0.elapsed().as_secs_f64();
        if !a.json {
            println!(
                "twin traces ({} traces, step {} s) in {secs:.1} s, leave-one-trace-out:",
                r.traces, r.step_s
            );
            for h in &r.rmse {
                println!(
                    "  {:>4} s: RMSE LSTM {:.4}, persistence {:.4}, EWMA(α={}) {:.4} → ratio to the better baseline {:.3}",
                    h.horizon_s, h.lstm, h.persistence, h.ewma_alpha, h.ewma, h.ratio_to_best_baseline
                );
            }
            println!(
                "  congestion onsets: {} onsets, {} alarm events; precision {:.2}, recall {:.2}, median lead {:.1} s (≥ {} s ahead required)",
                r.onsets,
                r.alarm_events,
                r.onset_precision,
                r.onset_recall,
                r.lead_time_s_median,
                r.config.lead_min_s
            );
            for t in &r.per_trace {
                println!(
                    "    {}: onsets {:?}, alarms {:?}, leads {:?}",
                    t.name, t.onsets_s, t.alarms_s, t.leads_s
                );
            }
        }
        let mut v = serde_json::to_value(&r)?;
        v["twin_seconds"] = serde_json::json!(secs);
        for (k, val) in v.as_object().expect("object").clone() {
            out.insert(k, val);
        }
    }
    if a.json {
        println!("{}", serde_json::Value::Object(out));
    }
    Ok(())
}
