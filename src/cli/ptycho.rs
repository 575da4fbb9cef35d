//! `diaspora ptycho …` and `diaspora bench ptycho`: the science of the
//! ptychography loop from the command line. Everything runs in
//! `diaspora_ptycho::workflow` (and `::bench`); this maps flags to its
//! options and prints the reports (`--json` for machines).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use diaspora_ptycho::sim::{ObjectKind, ProbeSpec, ScanKind, SimConfig};
use diaspora_ptycho::surrogate::{SurrogateConfig, TrainerConfig};
use diaspora_ptycho::workflow::{self, ReconstructOptions, TrainOptions};

use super::print_report;

/// The subcommands of `diaspora ptycho`.
#[derive(Subcommand)]
pub enum PtychoCommand {
    /// Simulate a scan: object, probe, positions and u16 far-field frames
    /// (frames.npy, meta.jsonl, corners.npy, scan.json, object.npy,
    /// probe.npy, truth.png, probe.png in --out).
    Simulate(SimulateArgs),
    /// Reconstruct a scan directory with ePIE; with the truth present,
    /// report SSIM and PSNR against it. Writes epie_object.npy,
    /// epie_probe.npy, reconstruction.png, epie_probe.png, fourier_error.png.
    Reconstruct(ReconstructArgs),
    /// Train the surrogate on ePIE reconstructions of scan directories;
    /// writes surrogate.safetensors and training_loss.png.
    Train(TrainArgs),
    /// Run the surrogate on a scan: patches stitched into an image
    /// (surrogate_object.npy, surrogate.png).
    Infer(InferArgs),
    /// Evaluate the surrogate on a held-out scan against ePIE: SSIM, PSNR,
    /// time per frame and the speed-up (eval.png shows truth, ePIE and
    /// surrogate side by side).
    Eval(EvalArgs),
}

/// The options of an ePIE run.
#[derive(Args, Clone)]
pub struct EpieArgs {
    /// ePIE iterations.
    #[arg(long, default_value_t = 50)]
    iterations: usize,
    /// Object step size α, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    alpha: f32,
    /// Probe step size β, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    beta: f32,
    /// Keep the probe fixed at its start.
    #[arg(long)]
    no_probe_update: bool,
    /// Start the probe from the frames (√ of the mean frame) instead of the
    /// scan's optics (scan.json; the default beam when there is none).
    #[arg(long)]
    probe_from_frames: bool,
    /// Seed of the position order.
    #[arg(long, default_value_t = 0)]
    epie_seed: u64,
}

impl EpieArgs {
    fn options(&self) -> ReconstructOptions {
        ReconstructOptions {
            iterations: self.iterations,
            alpha: self.alpha,
            beta: self.beta,
            probe_update: !self.no_probe_update,
            probe_from_frames: self.probe_from_frames,
            seed: self.epie_seed,
        }
    }
}

/// Arguments of `diaspora ptycho simulate`.
#[derive(Args)]
pub struct SimulateArgs {
    /// What the object is made of: particles, siemens-star or smooth-random.
    #[arg(long, default_value = "particles")]
    kind: ObjectKind,
    /// Scan layout: spiral (Fermat) or raster.
    #[arg(long, default_value = "spiral")]
    scan: ScanKind,
    /// Scan positions.
    #[arg(long, default_value_t = 400)]
    positions: usize,
    /// Frame side N (a power of two).
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Linear overlap of neighbouring positions (≥ 0.6 is the usual need).
    #[arg(long, default_value_t = 0.7)]
    overlap: f32,
    /// Position jitter, pixels (standard deviation).
    #[arg(long, default_value_t = 0.0)]
    jitter: f32,
    /// Photons in a frame of a flat object.
    #[arg(long, default_value_t = 1e6)]
    dose: f64,
    /// Poisson noise (otherwise noise-free: intensities rounded).
    #[arg(long)]
    noise: bool,
    /// A Gaussian beam of this sigma (pixels) instead of the default
    /// defocused pupil.
    #[arg(long, value_name = "SIGMA")]
    gaussian: Option<f32>,
    /// Seed of the object, positions and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The scan's name (default: KIND-SEED).
    #[arg(long)]
    scan_id: Option<String>,
    /// Directory to write.
    #[arg(long)]
    out: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `diaspora ptycho reconstruct`.
#[derive(Args)]
pub struct ReconstructArgs {
    /// The scan directory.
    dir: PathBuf,
    #[command(flatten)]
    epie: EpieArgs,
    /// Where to write (default: the scan directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `diaspora ptycho train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Scan directories to train on (ePIE reconstructs each).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Where to write the checkpoint and the loss curve.
    #[arg(long)]
    out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = 1500)]
    steps: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    learning_rate: f64,
    /// Samples the replay buffer holds.
    #[arg(long, default_value_t = 8192)]
    capacity: usize,
    /// Base width of the network (channels of its first level).
    #[arg(long, default_value_t = 8)]
    channels: usize,
    /// Input binning, 1 or 2.
    #[arg(long, default_value_t = 2)]
    bin: usize,
    /// Continue from this checkpoint (its shape wins over --channels/--bin).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Weight the loss by the probe's intensity, floored at this fraction
    /// of its peak (where the probe is dark a frame says little about the
    /// object); 1 weighs every pixel the same.
    #[arg(long, default_value_t = 0.02)]
    probe_weight_floor: f32,
    #[command(flatten)]
    epie: EpieArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `diaspora ptycho infer`.
#[derive(Args)]
pub struct InferArgs {
    /// The scan directory.
    dir: PathBuf,
    /// The checkpoint.
    #[arg(long)]
    model: PathBuf,
    /// Where to write (default: the scan directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Frames per inference batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `diaspora ptycho eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// The held-out scan directory.
    dir: PathBuf,
    /// The checkpoint.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    epie: EpieArgs,
    /// Where to write eval.png (default: the scan directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Frames per inference batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `diaspora bench ptycho`.
#[derive(Args)]
pub struct BenchArgs {
    /// Frame sides to time ePIE at (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "64,128")]
    sides: Vec<usize>,
    /// Positions of the timed scans.
    #[arg(long, default_value_t = 100)]
    positions: usize,
    /// ePIE iterations of the timing runs.
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// Scans to train the surrogate on (0 skips the surrogate).
    #[arg(long, default_value_t = 12)]
    train_scans: usize,
    /// Positions of each training and evaluation scan.
    #[arg(long, default_value_t = 200)]
    train_positions: usize,
    /// Optimiser steps.
    #[arg(long, default_value_t = 1500)]
    steps: usize,
    /// ePIE iterations of the reconstructions the surrogate learns from.
    #[arg(long, default_value_t = 50)]
    epie_iterations: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a `diaspora ptycho` command (blocking: call it off the async runtime).
pub fn run(cmd: PtychoCommand) -> Result<()> {
    match cmd {
        PtychoCommand::Simulate(a) => {
            let probe = match a.gaussian {
                Some(sigma) => ProbeSpec::Gaussian { sigma },
                None => ProbeSpec::default_for(a.n),
            };
            let cfg = SimConfig {
                scan_id: a
                    .scan_id
                    .clone()
                    .unwrap_or_else(|| format!("{}-{}", a.kind.name(), a.seed)),
                kind: a.kind,
                seed: a.seed,
                n: a.n,
                probe,
                scan: a.scan,
                positions: a.positions,
                overlap: a.overlap,
                jitter: a.jitter,
                dose: a.dose,
                noise: a.noise,
            };
            let r = workflow::simulate(&cfg, &a.out)?;
            print_report(&r, a.json, |r| {
                format!(
                    "{} frames of {}×{} ({} with saturated pixels) of a {}×{} object, beam radius {:.1} px → {}",
                    r.frames, r.n, r.n, r.saturated_frames, r.object_size, r.object_size, r.beam_radius,
                    r.dir.display()
                )
            })
        }
        PtychoCommand::Reconstruct(a) => {
            let out = a.out.clone().unwrap_or_else(|| a.dir.clone());
            let r = workflow::reconstruct(&a.dir, &out, &a.epie.options())?;
            print_report(&r, a.json, |r| {
                let truth = match (r.amplitude_ssim_vs_truth, r.phase_ssim_vs_truth) {
                    (Some(am), Some(ph)) => {
                        format!("; SSIM against the truth: amplitude {am:.3}, phase {ph:.3}")
                    }
                    _ => String::new(),
                };
                format!(
                    "ePIE: {} frames × {} iterations in {:.2} s ({:.3} ms per frame-iteration), Fourier error {:.2e} → {:.2e}{truth}",
                    r.frames, r.iterations, r.seconds, r.epie_ms_per_frame_iteration,
                    r.fourier_error_first, r.fourier_error
                )
            })
        }
        PtychoCommand::Train(a) => {
            if !(0.0..=1.0).contains(&a.probe_weight_floor) {
                anyhow::bail!(
                    "--probe-weight-floor {} is outside 0..=1 (a fraction of the probe's peak)",
                    a.probe_weight_floor
                );
            }
            let o = TrainOptions {
                epie: a.epie.options(),
                network: SurrogateConfig {
                    channels: a.channels,
                    bin: a.bin,
                    ..Default::default()
                },
                trainer: TrainerConfig {
                    capacity: a.capacity,
                    learning_rate: a.learning_rate,
                    ..Default::default()
                },
                steps: a.steps,
                batch: a.batch,
                resume: a.resume.clone(),
                probe_weight_floor: (a.probe_weight_floor < 1.0).then_some(a.probe_weight_floor),
                ..Default::default()
            };
            let r = workflow::train(&a.dirs, &a.out, &o)?;
            print_report(&r, a.json, |r| {
                format!(
                    "trained v{} on {} samples of {} scan(s): loss {:.4} → {:.4}, held-out {:.4} ({} samples), {:.0} samples/s → {}",
                    r.version, r.samples, r.scans.len(), r.loss_first, r.loss_last,
                    r.validation_loss, r.validation_samples, r.samples_per_s, r.checkpoint.display()
                )
            })
        }
        PtychoCommand::Infer(a) => {
            let out = a.out.clone().unwrap_or_else(|| a.dir.clone());
            let (us, frames) = workflow::infer(&a.dir, &a.model, &out, a.batch)?;
            let r = serde_json::json!({"frames": frames, "surrogate_us_per_frame": us, "out": out});
            print_report(&r, a.json, |_| {
                format!(
                    "{frames} frames at {us:.0} µs per frame → {}",
                    out.display()
                )
            })
        }
        PtychoCommand::Eval(a) => {
            let out = a.out.clone().unwrap_or_else(|| a.dir.clone());
            let r = workflow::eval(&a.dir, &a.model, &out, &a.epie.options(), a.batch)?;
            print_report(&r, a.json, |r| {
                format!(
                    "surrogate vs ePIE on {} frames: phase SSIM {:.3}, amplitude SSIM {:.3}; {:.0} µs per frame against ePIE's {:.1} ms: {:.0}× faster",
                    r.frames, r.phase_ssim_vs_epie, r.amplitude_ssim_vs_epie,
                    r.surrogate_us_per_frame, r.epie_ms_per_frame, r.speedup_vs_epie
                )
            })
        }
    }
}

/// Runs `diaspora bench ptycho` (blocking).
pub fn bench(a: BenchArgs) -> Result<()> {
    let cfg = diaspora_ptycho::bench::BenchConfig {
        sides: a.sides,
        positions: a.positions,
        iterations: a.iterations,
        train_scans: a.train_scans,
        train_positions: a.train_positions,
        steps: a.steps,
        epie_iterations: a.epie_iterations,
    };
    let work = tempfile::tempdir()?;
    let r = diaspora_ptycho::bench::run(&cfg, work.path())?;
    print_report(&r, a.json, |r| {
        let mut s = String::new();
        for t in &r.epie {
            s.push_str(&format!(
                "ePIE {}×{}: {:.3} ms per frame-iteration, NumPy {:.3} ms ({:.1}× faster)\n",
                t.n,
                t.n,
                t.epie_ms_per_frame_iteration,
                t.numpy_epie_ms_per_frame_iteration,
                t.speedup_vs_numpy
            ));
        }
        if let (Some(us), Some(x), Some(q)) = (
            r.surrogate_us_per_frame,
            r.speedup_vs_epie,
            r.phase_ssim_vs_epie,
        ) {
            s.push_str(&format!(
                "surrogate: {us:.0} µs per frame, {x:.0}× faster than ePIE, phase SSIM {q:.3} against ePIE"
            ));
        }
        s
    })
}
