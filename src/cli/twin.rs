//! `diaspora twin …`: virtual infrastructure twins. Scenarios run in
//! `diaspora-twin` ([`diaspora_twin::run`]); this loads the scenario, shows
//! progress and writes the report.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

/// The subcommands of `diaspora twin`.
#[derive(Subcommand)]
pub enum TwinCommand {
    /// Run a scenario file (twins/*.toml): hosts as real processes, links as
    /// user-space relays, faults on a schedule; check its assertions.
    Run {
        /// Scenario file.
        file: PathBuf,
        /// Print the results as JSON (passed, produced, acked, consumed, lost,
        /// duplicated, latency_us_p99, recovery_s, timeline, …).
        #[arg(long)]
        json: bool,
        /// Write results.json and report.html (with the hosts' data and logs) here.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Seed of the links' randomness (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Multiply every time in the scenario by X (e.g. 0.2 to shorten it for CI).
        #[arg(long, default_value_t = 1.0)]
        duration_scale: f64,
        /// Sample every link's metrics (utilisation, delivered and capacity
        /// Mbit/s, bytes held, drops) and append one JSON metric event per
        /// line to FILE.
        #[arg(long, value_name = "FILE")]
        metrics_out: Option<PathBuf>,
        /// Also publish each metric event on this topic of --metrics-node
        /// (what `diaspora predict serve` monitors read).
        #[arg(long, value_name = "TOPIC", requires = "metrics_node")]
        metrics_topic: Option<String>,
        /// The scenario node that --metrics-topic lives on.
        #[arg(long, value_name = "NODE", requires = "metrics_topic")]
        metrics_node: Option<String>,
        /// Metric sampling interval, ms.
        #[arg(long, default_value_t = 500)]
        metrics_interval_ms: u64,
    },
    /// Measure a relay's real delay, throughput and loss against configured values.
    Calibrate {
        /// One-way delay to configure, ms.
        #[arg(long, default_value_t = 20.0)]
        delay_ms: f64,
        /// Bandwidth to configure, Mbit/s.
        #[arg(long, default_value_t = 100.0)]
        bandwidth_mbit: f64,
        /// Random loss to configure, as a fraction (0.01 = 1 %).
        #[arg(long, default_value_t = 0.01)]
        loss: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `diaspora twin` command; a failed scenario exits with status 2.
pub async fn run(t: TwinCommand) -> Result<()> {
    match t {
        TwinCommand::Run {
            file,
            json,
            report,
            seed,
            duration_scale,
            metrics_out,
            metrics_topic,
            metrics_node,
            metrics_interval_ms,
        } => {
            let scenario = diaspora_twin::Scenario::load(&file)?;
            let metrics = (metrics_out.is_some() || metrics_topic.is_some()).then(|| {
                diaspora_twin::MetricsOptions {
                    interval: std::time::Duration::from_millis(metrics_interval_ms.max(10)),
                    out: metrics_out.clone(),
                    publish: metrics_node.clone().zip(metrics_topic.clone()),
                }
            });
            let tmp = tempfile::tempdir()?;
            let work_dir = match &report {
                Some(dir) => dir.join("hosts"),
                None => tmp.path().to_path_buf(),
            };
            let options = diaspora_twin::RunOptions {
                binary: std::env::current_exe().context("locating the diaspora binary")?,
                seed,
                duration_scale,
                work_dir,
                metrics,
            };
            let bar = indicatif::ProgressBar::new(1000);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {prefix} [{bar:40}] {msg}")
                    .expect("template"),
            );
            bar.set_prefix(scenario.name.clone());
            let progress = |t: f64, total: f64, status: &str| {
                bar.set_position(((t / total.max(1e-9)) * 1000.0).min(1000.0) as u64);
                bar.set_message(format!("{t:.0}/{total:.0} s {status}"));
            };
            let results = diaspora_twin::run(scenario, &options, &progress).await?;
            bar.finish_and_clear();
            let text = serde_json::to_string_pretty(&results)?;
            if let Some(dir) = &report {
                std::fs::create_dir_all(dir)?;
                std::fs::write(dir.join("results.json"), &text)?;
                let html = diaspora_twin::report::html_report(
                    &results.scenario,
                    &results.figures,
                    &results.fault_windows(),
                    &results.report_checks(),
                    &diaspora_twin::report::services_section(&results.services),
                    &text,
                );
                std::fs::write(dir.join("report.html"), html)?;
                eprintln!("report: {}", dir.join("report.html").display());
            }
            if json {
                println!("{text}");
            } else {
                println!(
                    "{}: {} — produced {}, acked {}, consumed {}, lost {}, duplicated {}, latency p99 {:.1} ms, recovery {:.1} s",
                    results.scenario,
                    if results.passed { "PASSED" } else { "FAILED" },
                    results.produced,
                    results.figures.acked,
                    results.figures.consumed,
                    results.figures.lost,
                    results.figures.duplicated,
                    results.figures.latency_us_p99 as f64 / 1000.0,
                    results.recovery_s
                );
                for c in results.checks.iter().filter(|c| !c.passed) {
                    println!("  failed: {} (measured {})", c.what, c.measured);
                }
            }
            if !results.passed {
                std::process::exit(2);
            }
            Ok(())
        }
        TwinCommand::Calibrate {
            delay_ms,
            bandwidth_mbit,
            loss,
            json,
        } => {
            let report = diaspora_twin::calibrate(diaspora_twin::CalibrateConfig {
                delay_ms,
                bandwidth_mbit,
                loss,
                ..Default::default()
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "delay {:.3} ms (configured {delay_ms}), throughput {:.2} Mbit/s (configured {bandwidth_mbit}), loss {:.4} (configured {loss}){}",
                    report.delay_ms_measured,
                    report.bandwidth_mbit_measured,
                    report.loss_measured,
                    if report.within_targets() { "" } else { " — outside the fidelity targets" }
                );
                for n in &report.notes {
                    println!("  note: {n}");
                }
            }
            Ok(())
        }
    }
}
