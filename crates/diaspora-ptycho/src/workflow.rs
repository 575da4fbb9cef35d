//! What the `diaspora ptycho …` commands do, as functions that return
//! their figures: simulate a scan to a directory, reconstruct it with
//! ePIE, train the surrogate on reconstructions, run it on a scan, and
//! evaluate it against ePIE on a held-out scan. The command line only maps
//! flags to these and prints the reports; the loop issue calls the same
//! functions from its pool workers.
//!
//! Files a command writes in its directory: `epie_object.npy`,
//! `epie_probe.npy`, `reconstruction.png` (truth and ePIE, amplitude above
//! phase), `probe.png`, `fourier_error.png` (reconstruct);
//! `surrogate.safetensors`, `training_loss.png` (train);
//! `surrogate_object.npy`, `surrogate.png` (infer); `eval.png` (eval).

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::{s, Array2};
use serde::Serialize;

use crate::epie::{reconstruct as epie, EpieConfig, ProbeInit, Reconstruction};
use crate::files::{read_scan, write_complex, write_scan, ScanFiles};
use crate::metrics::{align_ramp, compare, from_parts, illuminated, Quality};
use crate::pictures::{self, Panel, Scale, Series};
use crate::sim::{simulate as sim, ProbeSpec, SimConfig};
use crate::surrogate::{
    default_device, probe_weight, samples_from, stitch, Sample, Surrogate, SurrogateConfig,
    Trainer, TrainerConfig,
};
use crate::{PtychoError, Result, C32};

/// What `simulate` did.
#[derive(Clone, Debug, Serialize)]
pub struct Simulated {
    /// Where the scan is.
    pub dir: PathBuf,
    /// Frames written.
    pub frames: usize,
    /// Frame side.
    pub n: usize,
    /// Object side.
    pub object_size: usize,
    /// The beam's radius, pixels.
    pub beam_radius: f32,
    /// Photons in a flat frame.
    pub dose: f64,
    /// Frames holding a saturated pixel.
    pub saturated_frames: usize,
}

/// Simulates a scan into `dir`, with a picture of the truth.
pub fn simulate(cfg: &SimConfig, dir: &Path) -> Result<Simulated> {
    let scan = sim(cfg)?;
    write_scan(dir, &scan.frames, &scan.meta, Some(&scan))?;
    let (amp, phase) = pictures::parts(&scan.object);
    pictures::panels(
        &dir.join("truth.png"),
        &[vec![
            Panel {
                title: "amplitude".into(),
                values: &amp,
                scale: Scale::Grey,
            },
            Panel {
                title: "phase".into(),
                values: &phase,
                scale: Scale::Diverging,
            },
        ]],
        2,
    )?;
    pictures::probe(&dir.join("probe.png"), &scan.probe)?;
    Ok(Simulated {
        dir: dir.to_path_buf(),
        frames: scan.frames.len(),
        n: cfg.n,
        object_size: scan.object.nrows(),
        beam_radius: cfg.probe.beam_radius(cfg.n),
        dose: cfg.dose,
        saturated_frames: scan
            .frames
            .iter()
            .filter(|f| f.iter().any(|&v| v >= crate::sim::SATURATION))
            .count(),
    })
}

/// How `reconstruct` runs ePIE.
#[derive(Clone, Debug)]
pub struct ReconstructOptions {
    /// Iterations.
    pub iterations: usize,
    /// Object step α.
    pub alpha: f32,
    /// Probe step β.
    pub beta: f32,
    /// Refine the probe.
    pub probe_update: bool,
    /// Start the probe from the frames instead of the scan's optics.
    pub probe_from_frames: bool,
    /// Seed of the position order.
    pub seed: u64,
}

impl Default for ReconstructOptions {
    fn default() -> Self {
        ReconstructOptions {
            iterations: 50,
            alpha: 1.0,
            beta: 1.0,
            probe_update: true,
            probe_from_frames: false,
            seed: 0,
        }
    }
}

/// What `reconstruct` found.
#[derive(Clone, Debug, Serialize)]
pub struct Reconstructed {
    /// Frames reconstructed.
    pub frames: usize,
    /// Iterations run.
    pub iterations: usize,
    /// The Fourier error after the first and the last iteration.
    pub fourier_error_first: f64,
    /// After the last.
    pub fourier_error: f64,
    /// Wall time of the iterations, seconds.
    pub seconds: f64,
    /// Milliseconds per frame-iteration.
    pub epie_ms_per_frame_iteration: f64,
    /// ePIE's time per frame (the whole reconstruction ÷ frames), ms.
    pub epie_ms_per_frame: f64,
    /// Against the truth, when the scan carries it.
    pub amplitude_ssim_vs_truth: Option<f64>,
    /// Against the truth.
    pub phase_ssim_vs_truth: Option<f64>,
    /// Against the truth, dB.
    pub amplitude_psnr_vs_truth: Option<f64>,
    /// Against the truth, dB.
    pub phase_psnr_vs_truth: Option<f64>,
    /// Pictures written.
    pub pictures: Vec<PathBuf>,
}

fn probe_spec(files: &ScanFiles, n: usize) -> ProbeSpec {
    files
        .config
        .as_ref()
        .map(|c| c.probe)
        .unwrap_or_else(|| ProbeSpec::default_for(n))
}

fn run_epie(files: &ScanFiles, o: &ReconstructOptions) -> Result<Reconstruction> {
    let n = files.frames[0].nrows();
    let mut cfg = EpieConfig::new(o.iterations, probe_spec(files, n));
    cfg.alpha = o.alpha;
    cfg.beta = o.beta;
    cfg.probe_update = o.probe_update;
    cfg.seed = o.seed;
    if o.probe_from_frames {
        cfg.probe_init = ProbeInit::FromFrames;
    }
    if let Some(truth) = &files.object {
        cfg.object_size = Some(truth.nrows());
    }
    epie(&files.frames, &files.meta, &cfg)
}

/// The truth cut to the reconstruction's size, when the scan has one.
fn truth_for(files: &ScanFiles, dim: (usize, usize)) -> Option<Array2<C32>> {
    let t = files.object.as_ref()?;
    (t.nrows() >= dim.0 && t.ncols() >= dim.1).then(|| t.slice(s![..dim.0, ..dim.1]).to_owned())
}

/// Reconstructs the scan in `dir` with ePIE; writes the object, the probe
/// and pictures to `out`.
pub fn reconstruct(dir: &Path, out: &Path, o: &ReconstructOptions) -> Result<Reconstructed> {
    let files = read_scan(dir)?;
    std::fs::create_dir_all(out).map_err(|source| PtychoError::Io {
        context: format!("creating {}", out.display()),
        source,
    })?;
    let r = run_epie(&files, o)?;
    write_complex(&out.join("epie_object.npy"), &r.object)?;
    write_complex(&out.join("epie_probe.npy"), &r.probe)?;
    let truth = truth_for(&files, r.object.dim());
    let q = truth
        .as_ref()
        .map(|t| compare(&r.object, t, &r.mask))
        .transpose()?;
    let mut pics = Vec::new();
    let shown = match &truth {
        Some(t) => align_ramp(&r.object, t, &r.mask),
        None => r.object.clone(),
    };
    let (ea, ep) = masked_parts(&shown, &r.mask);
    let truth_parts = truth.as_ref().map(|t| masked_parts(t, &r.mask));
    let mut amp_row = Vec::new();
    let mut phase_row = Vec::new();
    if let Some((ta, tp)) = &truth_parts {
        amp_row.push(Panel {
            title: "truth amplitude".into(),
            values: ta,
            scale: Scale::Grey,
        });
        phase_row.push(Panel {
            title: "truth phase".into(),
            values: tp,
            scale: Scale::Diverging,
        });
    }
    amp_row.push(Panel {
        title: "ePIE amplitude".into(),
        values: &ea,
        scale: Scale::Grey,
    });
    phase_row.push(Panel {
        title: "ePIE phase".into(),
        values: &ep,
        scale: Scale::Diverging,
    });
    let p = out.join("reconstruction.png");
    pictures::panels(&p, &[amp_row, phase_row], 2)?;
    pics.push(p);
    let p = out.join("epie_probe.png");
    pictures::probe(&p, &r.probe)?;
    pics.push(p);
    let p = out.join("fourier_error.png");
    pictures::curves(
        &p,
        "ePIE Fourier error",
        "iteration",
        "error",
        &[Series {
            name: "Fourier error",
            values: &r.fourier_error,
        }],
        true,
    )?;
    pics.push(p);
    let frames = r.corners.len();
    Ok(Reconstructed {
        frames,
        iterations: r.fourier_error.len(),
        fourier_error_first: r.fourier_error.first().copied().unwrap_or(f64::NAN),
        fourier_error: r.fourier_error.last().copied().unwrap_or(f64::NAN),
        seconds: r.seconds,
        epie_ms_per_frame_iteration: r.ms_per_frame_iteration(),
        epie_ms_per_frame: r.seconds * 1e3 / frames.max(1) as f64,
        amplitude_ssim_vs_truth: q.map(|q| q.amplitude_ssim),
        phase_ssim_vs_truth: q.map(|q| q.phase_ssim),
        amplitude_psnr_vs_truth: q.map(|q| q.amplitude_psnr),
        phase_psnr_vs_truth: q.map(|q| q.phase_psnr),
        pictures: pics,
    })
}

/// Amplitude and phase with pixels outside `mask` set to the median of
/// those inside (so a picture's scale is the region's).
pub fn masked_parts(a: &Array2<C32>, mask: &Array2<bool>) -> (Array2<f32>, Array2<f32>) {
    let (amp, phase) = pictures::parts(a);
    let fill = |x: &Array2<f32>| {
        let mut inside: Vec<f32> = x
            .iter()
            .zip(mask.iter())
            .filter(|(_, &m)| m)
            .map(|(&v, _)| v)
            .collect();
        inside.sort_by(f32::total_cmp);
        let med = inside.get(inside.len() / 2).copied().unwrap_or(0.0);
        ndarray::Zip::from(x)
            .and(mask)
            .map_collect(|&v, &m| if m { v } else { med })
    };
    (fill(&amp), fill(&phase))
}

/// The ePIE object of a scan as training targets: no phase ramp, zero
/// mean phase, amplitude scaled so its 95th percentile over the region is
/// 1 (ePIE cannot know the ramp or the scale when it refines the probe;
/// targets from different scans must agree on them).
pub fn targets(r: &Reconstruction) -> Array2<C32> {
    let flat = Array2::from_elem(r.object.dim(), C32::new(1.0, 0.0));
    let o = align_ramp(&r.object, &flat, &r.mask);
    let mut amps: Vec<f32> = o
        .iter()
        .zip(r.mask.iter())
        .filter(|(_, &m)| m)
        .map(|(v, _)| v.norm())
        .collect();
    amps.sort_by(f32::total_cmp);
    let p95 = amps
        .get(amps.len() * 95 / 100)
        .copied()
        .unwrap_or(1.0)
        .max(1e-6);
    o.mapv(|v| v / p95)
}

/// How `train` trains.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// ePIE for the targets.
    pub epie: ReconstructOptions,
    /// The network.
    pub network: SurrogateConfig,
    /// The trainer.
    pub trainer: TrainerConfig,
    /// Optimiser steps.
    pub steps: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// One frame in this many is held out for validation.
    pub hold_out_every: usize,
    /// Continue from this checkpoint instead of a fresh network.
    pub resume: Option<PathBuf>,
    /// Weight the loss by the reconstructed probe's intensity, floored at
    /// this fraction of its peak ([`probe_weight`]); `None`: every pixel
    /// counts the same. A frame says little about the object where the
    /// probe is dark, and an unweighted loss spends the network there.
    pub probe_weight_floor: Option<f32>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epie: ReconstructOptions::default(),
            network: SurrogateConfig::default(),
            trainer: TrainerConfig::default(),
            steps: 1500,
            batch: 32,
            hold_out_every: 10,
            resume: None,
            probe_weight_floor: Some(0.02),
        }
    }
}

/// What `train` did.
#[derive(Clone, Debug, Serialize)]
pub struct Trained {
    /// The checkpoint written.
    pub checkpoint: PathBuf,
    /// Its model version.
    pub version: u64,
    /// Scans trained on.
    pub scans: Vec<String>,
    /// Training samples (frames with their ePIE patch).
    pub samples: usize,
    /// Validation samples (held-out positions).
    pub validation_samples: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Mean loss of the first and last 20 steps.
    pub loss_first: f64,
    /// Of the last 20.
    pub loss_last: f64,
    /// Loss on the held-out positions at the end.
    pub validation_loss: f64,
    /// Training throughput, samples per second.
    pub samples_per_s: f64,
    /// Seconds spent on ePIE for the targets.
    pub epie_seconds: f64,
    /// Seconds spent training.
    pub train_seconds: f64,
}

/// Trains the surrogate on ePIE reconstructions of the scans in `dirs`
/// (positions `hold_out_every` apart held out for validation); writes the
/// checkpoint and the loss curve to `out`.
pub fn train(dirs: &[PathBuf], out: &Path, o: &TrainOptions) -> Result<Trained> {
    if dirs.is_empty() {
        return Err(PtychoError::Invalid("no scans to train on".into()));
    }
    std::fs::create_dir_all(out).map_err(|source| PtychoError::Io {
        context: format!("creating {}", out.display()),
        source,
    })?;
    let surrogate = match &o.resume {
        Some(p) => Surrogate::load(p, default_device())?,
        None => {
            // A fresh network takes the frames' side of the first scan.
            let first = read_scan(&dirs[0])?;
            let network = SurrogateConfig {
                n: first.frames[0].nrows(),
                ..o.network.clone()
            };
            Surrogate::new(network, default_device())?
        }
    };
    let n = surrogate.config().n;
    let mut trainer = Trainer::new(surrogate, o.trainer.clone())?;
    let mut held: Vec<Sample> = Vec::new();
    let mut scans = Vec::new();
    let mut epie_seconds = 0.0;
    let mut samples = 0;
    for dir in dirs {
        let files = read_scan(dir)?;
        if files.frames[0].nrows() != n {
            let side = files.frames[0].nrows();
            return Err(PtychoError::Invalid(format!(
                "{}: frames are {side}×{side}, the network takes {n}×{n}",
                dir.display()
            )));
        }
        let t = Instant::now();
        let r = run_epie(&files, &o.epie)?;
        epie_seconds += t.elapsed().as_secs_f64();
        if let (Some(floor), true) = (o.probe_weight_floor, scans.is_empty()) {
            trainer.set_loss_weight(Some(&probe_weight(&r.probe, floor)))?;
        }
        let object = targets(&r);
        let id = files.meta[0].scan_id.clone();
        for (i, s) in samples_from(&files.frames, &files.meta, &object, n)?
            .into_iter()
            .enumerate()
        {
            if o.hold_out_every > 0 && i % o.hold_out_every == o.hold_out_every / 2 {
                held.push(s);
            } else {
                trainer.push(s)?;
                samples += 1;
            }
        }
        trainer.note_scan(&id);
        scans.push(id);
    }
    let t = Instant::now();
    for _ in 0..o.steps {
        trainer.step(o.batch)?;
    }
    let train_seconds = t.elapsed().as_secs_f64();
    let history: Vec<f64> = trainer.history().iter().map(|&v| v as f64).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let k = history.len().min(20);
    let validation_loss = if held.is_empty() {
        f64::NAN
    } else {
        trainer.validate(&held)? as f64
    };
    let mut surrogate = trainer.into_surrogate();
    surrogate.set_version(surrogate.version() + 1);
    let checkpoint = out.join("surrogate.safetensors");
    surrogate.save(&checkpoint)?;
    pictures::curves(
        &out.join("training_loss.png"),
        "surrogate training loss",
        "step",
        "loss",
        &[Series {
            name: "mini-batch loss",
            values: &history,
        }],
        true,
    )?;
    Ok(Trained {
        checkpoint,
        version: surrogate.version(),
        scans,
        samples,
        validation_samples: held.len(),
        steps: o.steps,
        loss_first: mean(&history[..k]),
        loss_last: mean(&history[history.len() - k..]),
        validation_loss,
        samples_per_s: (o.steps * o.batch) as f64 / train_seconds.max(1e-9),
        epie_seconds,
        train_seconds,
    })
}

/// The surrogate's image of a scan, and how long inference took.
pub struct Inferred {
    /// The stitched object.
    pub object: Array2<C32>,
    /// Microseconds per frame, batched.
    pub us_per_frame: f64,
}

/// Runs the surrogate on every frame of a scan (in batches of `batch`) and
/// stitches the patches, weighted by `probe`'s intensity.
pub fn infer_scan(
    model: &Surrogate,
    files: &ScanFiles,
    probe: &Array2<C32>,
    size: usize,
    batch: usize,
) -> Result<Inferred> {
    // One warm-up batch (allocations, thread pool) outside the timing.
    model.predict(&files.frames[..files.frames.len().min(batch)], batch)?;
    let t = Instant::now();
    let patches = model.predict(&files.frames, batch)?;
    let us_per_frame = t.elapsed().as_secs_f64() * 1e6 / files.frames.len() as f64;
    let (amp, phase) = stitch(&patches, &files.meta, probe, size)?;
    Ok(Inferred {
        object: from_parts(&amp, &phase),
        us_per_frame,
    })
}

/// What `eval` measured on a held-out scan.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluated {
    /// Frames.
    pub frames: usize,
    /// ePIE iterations.
    pub epie_iterations: usize,
    /// ePIE per frame: the whole reconstruction ÷ frames, ms.
    pub epie_ms_per_frame: f64,
    /// Surrogate inference per frame, batched, µs.
    pub surrogate_us_per_frame: f64,
    /// `epie_ms_per_frame · 1000 / surrogate_us_per_frame`.
    pub speedup_vs_epie: f64,
    /// The surrogate against ePIE, over ePIE's illuminated region.
    pub amplitude_ssim_vs_epie: f64,
    /// The phase.
    pub phase_ssim_vs_epie: f64,
    /// Against ePIE, dB.
    pub phase_psnr_vs_epie: f64,
    /// The surrogate against the truth, when known.
    pub phase_ssim_vs_truth: Option<f64>,
    /// ePIE against the truth, when known.
    pub epie_phase_ssim_vs_truth: Option<f64>,
    /// The surrogate's amplitude against the truth.
    pub amplitude_ssim_vs_truth: Option<f64>,
    /// The model's version and the scans it was trained on.
    pub model_version: u64,
    /// Those scans.
    pub model_scans: Vec<String>,
}

/// Reconstructs a held-out scan with ePIE (timed), runs the surrogate on
/// it (timed), compares the two, and writes `eval.png` to `out`.
pub fn eval(
    dir: &Path,
    model: &Path,
    out: &Path,
    o: &ReconstructOptions,
    batch: usize,
) -> Result<Evaluated> {
    let files = read_scan(dir)?;
    let model = Surrogate::load(model, default_device())?;
    let r = run_epie(&files, o)?;
    let reference = targets(&r);
    // The surrogate stitches with the probe ePIE found (the loop's edge
    // service has the latest one).
    let inferred = infer_scan(&model, &files, &r.probe, r.object.nrows(), batch)?;
    let q: Quality = compare(&inferred.object, &reference, &r.mask)?;
    let truth = truth_for(&files, r.object.dim());
    let vs_truth = truth
        .as_ref()
        .map(|t| compare(&inferred.object, t, &r.mask))
        .transpose()?;
    let epie_truth = truth
        .as_ref()
        .map(|t| compare(&r.object, t, &r.mask))
        .transpose()?;
    std::fs::create_dir_all(out).map_err(|source| PtychoError::Io {
        context: format!("creating {}", out.display()),
        source,
    })?;
    let shown_ref = match &truth {
        Some(t) => t.clone(),
        None => reference.clone(),
    };
    let s_aligned = align_ramp(&inferred.object, &shown_ref, &r.mask);
    let e_aligned = align_ramp(&r.object, &shown_ref, &r.mask);
    let (ea, ep) = masked_parts(&e_aligned, &r.mask);
    let (sa, sp) = masked_parts(&s_aligned, &r.mask);
    let tp = truth.as_ref().map(|t| masked_parts(t, &r.mask));
    let mut amp_row = Vec::new();
    let mut phase_row = Vec::new();
    if let Some((ta, tph)) = &tp {
        amp_row.push(Panel {
            title: "truth amplitude".into(),
            values: ta,
            scale: Scale::Grey,
        });
        phase_row.push(Panel {
            title: "truth phase".into(),
            values: tph,
            scale: Scale::Diverging,
        });
    }
    amp_row.push(Panel {
        title: "ePIE amplitude".into(),
        values: &ea,
        scale: Scale::Grey,
    });
    phase_row.push(Panel {
        title: "ePIE phase".into(),
        values: &ep,
        scale: Scale::Diverging,
    });
    amp_row.push(Panel {
        title: "surrogate amplitude".into(),
        values: &sa,
        scale: Scale::Grey,
    });
    phase_row.push(Panel {
        title: "surrogate phase".into(),
        values: &sp,
        scale: Scale::Diverging,
    });
    pictures::panels(&out.join("eval.png"), &[amp_row, phase_row], 2)?;
    write_complex(&out.join("surrogate_object.npy"), &inferred.object)?;
    let frames = files.frames.len();
    let epie_ms_per_frame = r.seconds * 1e3 / frames as f64;
    Ok(Evaluated {
        frames,
        epie_iterations: r.fourier_error.len(),
        epie_ms_per_frame,
        surrogate_us_per_frame: inferred.us_per_frame,
        speedup_vs_epie: epie_ms_per_frame * 1e3 / inferred.us_per_frame.max(1e-9),
        amplitude_ssim_vs_epie: q.amplitude_ssim,
        phase_ssim_vs_epie: q.phase_ssim,
        phase_psnr_vs_epie: q.phase_psnr,
        phase_ssim_vs_truth: vs_truth.map(|q| q.phase_ssim),
        epie_phase_ssim_vs_truth: epie_truth.map(|q| q.phase_ssim),
        amplitude_ssim_vs_truth: vs_truth.map(|q| q.amplitude_ssim),
        model_version: model.version(),
        model_scans: model.scan_ids().to_vec(),
    })
}

/// Runs the surrogate on a scan without ePIE: stitches with the scan's
/// probe (its truth when simulated, else the optics' nominal beam scaled
/// to the dose) and writes `surrogate_object.npy` and `surrogate.png`.
pub fn infer(dir: &Path, model: &Path, out: &Path, batch: usize) -> Result<(f64, usize)> {
    let files = read_scan(dir)?;
    let model = Surrogate::load(model, default_device())?;
    let n = files.frames[0].nrows();
    let probe = match &files.probe {
        Some(p) => p.clone(),
        None => crate::sim::probe(&probe_spec(&files, n), n)?,
    };
    let size = files
        .meta
        .iter()
        .map(|m| (m.y.max(m.x)) as usize + n)
        .max()
        .unwrap_or(n);
    let size = files.object.as_ref().map(|o| o.nrows()).unwrap_or(size);
    let inferred = infer_scan(&model, &files, &probe, size, batch)?;
    std::fs::create_dir_all(out).map_err(|source| PtychoError::Io {
        context: format!("creating {}", out.display()),
        source,
    })?;
    write_complex(&out.join("surrogate_object.npy"), &inferred.object)?;
    let corners: Vec<(usize, usize)> = files
        .meta
        .iter()
        .map(|m| (m.y as usize, m.x as usize))
        .collect();
    let mask = illuminated(&probe, &corners, inferred.object.dim(), 0.1)?;
    let (a, p) = masked_parts(&inferred.object, &mask);
    pictures::panels(
        &out.join("surrogate.png"),
        &[vec![
            Panel {
                title: "surrogate amplitude".into(),
                values: &a,
                scale: Scale::Grey,
            },
            Panel {
                title: "surrogate phase".into(),
                values: &p,
                scale: Scale::Diverging,
            },
        ]],
        2,
    )?;
    Ok((inferred.us_per_frame, files.frames.len()))
}
