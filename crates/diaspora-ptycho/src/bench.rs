//! The benchmark behind `diaspora bench ptycho`: ePIE against a NumPy
//! implementation of the same algorithm on the same frames (run in the
//! same benchmark, on the same cores), and the surrogate against ePIE.
//!
//! The NumPy baseline is `python/epie_numpy.py`, compiled into this crate
//! and written next to the frames; it needs `python3` with `numpy`
//! (`./scripts/test` installs both). Without them the benchmark fails and
//! says so — it never reports a speed-up without its baseline.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::epie::{reconstruct, EpieConfig};
use crate::files::{write_complex, write_scan};
use crate::sim::{simulate, ObjectKind, ProbeSpec, ScanKind, SimConfig};
use crate::workflow::{eval, simulate as simulate_dir, train, ReconstructOptions, TrainOptions};
use crate::{PtychoError, Result};

/// The NumPy ePIE baseline.
pub const NUMPY_EPIE: &str = include_str!("../python/epie_numpy.py");

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Frame sides to time ePIE at.
    pub sides: Vec<usize>,
    /// Positions of the timed scans.
    pub positions: usize,
    /// ePIE iterations of the timing runs.
    pub iterations: usize,
    /// Scans the surrogate is trained on (0: skip the surrogate).
    pub train_scans: usize,
    /// Positions of each training and evaluation scan.
    pub train_positions: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// ePIE iterations of the reconstructions the surrogate learns from and
    /// is compared with.
    pub epie_iterations: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            sides: vec![64, 128],
            positions: 100,
            iterations: 10,
            train_scans: 12,
            train_positions: 200,
            steps: 1500,
            epie_iterations: 50,
        }
    }
}

/// ePIE at one frame side.
#[derive(Clone, Debug, Serialize)]
pub struct EpieTiming {
    /// Frame side.
    pub n: usize,
    /// Frames.
    pub frames: usize,
    /// Iterations.
    pub iterations: usize,
    /// Rust, ms per frame-iteration.
    pub epie_ms_per_frame_iteration: f64,
    /// NumPy on the same frames, ms per frame-iteration.
    pub numpy_epie_ms_per_frame_iteration: f64,
    /// NumPy ÷ Rust.
    pub speedup_vs_numpy: f64,
}

/// Everything measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// ePIE at the first side (64 by default).
    pub epie_ms_per_frame_iteration: f64,
    /// NumPy at the first side.
    pub numpy_epie_ms_per_frame_iteration: f64,
    /// Per side.
    pub epie: Vec<EpieTiming>,
    /// Surrogate inference per frame, batched, µs (None when skipped).
    pub surrogate_us_per_frame: Option<f64>,
    /// ePIE per frame ÷ surrogate per frame.
    pub speedup_vs_epie: Option<f64>,
    /// The surrogate's phase against ePIE on the held-out scan.
    pub phase_ssim_vs_epie: Option<f64>,
    /// Training throughput, samples per second.
    pub train_samples_per_s: Option<f64>,
    /// Scans trained on.
    pub train_scans: usize,
    /// The evaluation in full.
    pub eval: Option<crate::workflow::Evaluated>,
}

fn numpy(dir: &Path, iterations: usize) -> Result<f64> {
    let script = dir.join("epie_numpy.py");
    std::fs::write(&script, NUMPY_EPIE).map_err(|source| PtychoError::Io {
        context: format!("writing {}", script.display()),
        source,
    })?;
    let out = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .arg(iterations.to_string())
        .output()
        .map_err(|source| PtychoError::Io {
            context: "running python3 for the NumPy baseline (install python3 and numpy)".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(PtychoError::Invalid(format!(
            "the NumPy baseline failed (needs python3 with numpy): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| PtychoError::Invalid(format!("the NumPy baseline's output: {e}")))?;
    v["ms_per_frame_iteration"].as_f64().ok_or_else(|| {
        PtychoError::Invalid("the NumPy baseline printed no ms_per_frame_iteration".into())
    })
}

/// Runs the benchmark in a temporary directory under `work`.
pub fn run(cfg: &BenchConfig, work: &Path) -> Result<BenchReport> {
    let mut timings = Vec::new();
    for &n in &cfg.sides {
        let sim_cfg = SimConfig {
            scan_id: format!("bench-{n}"),
            n,
            probe: ProbeSpec::default_for(n),
            positions: cfg.positions,
            noise: true,
            dose: 1e6 * (n as f64 / 64.0).powi(2),
            ..Default::default()
        };
        let scan = simulate(&sim_cfg)?;
        let dir = work.join(format!("epie-{n}"));
        write_scan(&dir, &scan.frames, &scan.meta, None)?;
        let mut ecfg = EpieConfig::new(cfg.iterations, sim_cfg.probe);
        ecfg.probe_update_from = 5;
        // The same starting probe for both.
        let start = crate::sim::probe(&sim_cfg.probe, n)?;
        let total: f64 = scan
            .frames
            .iter()
            .flat_map(|f| f.iter())
            .map(|&v| v as f64)
            .sum();
        let start = start.mapv(|v| v * ((total / scan.frames.len() as f64).sqrt() as f32));
        write_complex(&dir.join("probe.npy"), &start)?;
        ecfg.probe_init = crate::epie::ProbeInit::Given(start);
        // Warm-up run, then the timed one.
        let mut warm = ecfg.clone();
        warm.iterations = 1;
        reconstruct(&scan.frames, &scan.meta, &warm)?;
        let r = reconstruct(&scan.frames, &scan.meta, &ecfg)?;
        let rust = r.ms_per_frame_iteration();
        let py = numpy(&dir, cfg.iterations)?;
        timings.push(EpieTiming {
            n,
            frames: scan.frames.len(),
            iterations: cfg.iterations,
            epie_ms_per_frame_iteration: rust,
            numpy_epie_ms_per_frame_iteration: py,
            speedup_vs_numpy: py / rust,
        });
    }
    let first = timings
        .first()
        .ok_or_else(|| PtychoError::Invalid("no frame sides to time".into()))?;
    let (epie_ms, numpy_ms) = (
        first.epie_ms_per_frame_iteration,
        first.numpy_epie_ms_per_frame_iteration,
    );
    let mut report = BenchReport {
        epie_ms_per_frame_iteration: epie_ms,
        numpy_epie_ms_per_frame_iteration: numpy_ms,
        epie: timings,
        surrogate_us_per_frame: None,
        speedup_vs_epie: None,
        phase_ssim_vs_epie: None,
        train_samples_per_s: None,
        train_scans: cfg.train_scans,
        eval: None,
    };
    if cfg.train_scans == 0 {
        return Ok(report);
    }
    let scan_cfg = |seed: u64| SimConfig {
        scan_id: format!("bench-train-{seed}"),
        kind: ObjectKind::Particles,
        seed,
        scan: ScanKind::Spiral,
        positions: cfg.train_positions,
        noise: true,
        jitter: 0.5,
        ..Default::default()
    };
    let mut dirs = Vec::new();
    for seed in 0..cfg.train_scans as u64 {
        let d = work.join(format!("train-{seed}"));
        simulate_dir(&scan_cfg(100 + seed), &d)?;
        dirs.push(d);
    }
    let held = work.join("held-out");
    simulate_dir(&scan_cfg(999), &held)?;
    let epie_opts = ReconstructOptions {
        iterations: cfg.epie_iterations,
        ..Default::default()
    };
    let trained = train(
        &dirs,
        &work.join("model"),
        &TrainOptions {
            epie: epie_opts.clone(),
            steps: cfg.steps,
            ..Default::default()
        },
    )?;
    let e = eval(
        &held,
        &trained.checkpoint,
        &work.join("eval"),
        &epie_opts,
        64,
    )?;
    report.surrogate_us_per_frame = Some(e.surrogate_us_per_frame);
    report.speedup_vs_epie = Some(e.speedup_vs_epie);
    report.phase_ssim_vs_epie = Some(e.phase_ssim_vs_epie);
    report.train_samples_per_s = Some(trained.samples_per_s);
    report.eval = Some(e);
    Ok(report)
}
