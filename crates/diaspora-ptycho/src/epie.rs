//! ePIE: the extended ptychographical iterative engine (Maiden &
//! Rodenburg 2009, Ultramicroscopy 109, 1256), reconstructing the object —
//! and optionally the probe — of a scan from its frames and their metadata
//! alone.
//!
//! For each position `j`, in a new random order every iteration:
//! `ψ = P·O_j`, `Ψ = F(ψ)`, `Ψ' = √I_j · Ψ/|Ψ|`, `ψ' = F⁻¹(Ψ')`, then
//! `O_j += α P*/max|P|² (ψ' − ψ)` and (when the probe is updated)
//! `P += β O_j*/max|O_j|² (ψ' − ψ)` with the object patch from before its
//! update. Saturated pixels only bound the modulus from below (the true
//! count is at least the saturation). The Fourier error of an iteration is
//! `Σ_j Σ (|Ψ| − √I)² / Σ_j Σ I`.
//!
//! The probe starts from the beam the metadata's optics describe
//! ([`ProbeInit::Spec`]), from the frames themselves (the square root of
//! the mean pattern, flat phase: [`ProbeInit::FromFrames`]) or from a given
//! array. The result's phase is put at zero mean over the illuminated
//! region (ptychography cannot know a global phase).
//!
//! What it does not do: sub-pixel positions, position correction, mixed
//! states, or GPU execution. Several scans are reconstructed at once on
//! threads ([`reconstruct_many`]); one scan runs on one thread (ePIE's
//! updates are sequential by nature).

use std::time::Instant;

use ndarray::{s, Array2, Zip};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::fft::{fftshift, ifftshift, Fft2};
use crate::metrics::{illuminated, zero_mean_phase};
use crate::sim::{probe, FrameMeta, ProbeSpec, SATURATION};
use crate::{PtychoError, Result, C32};

/// Where the probe starts.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeInit {
    /// The beam the instrument's optics describe (Σ|P|² = 1), scaled to the
    /// frames' dose.
    Spec(ProbeSpec),
    /// The square root of the mean frame, flat phase, back in real space.
    FromFrames,
    /// A given probe, used as it is.
    Given(Array2<C32>),
}

/// How ePIE runs.
#[derive(Clone, Debug, PartialEq)]
pub struct EpieConfig {
    /// Iterations over all positions.
    pub iterations: usize,
    /// Object step size α (0, 1].
    pub alpha: f32,
    /// Probe step size β (0, 1].
    pub beta: f32,
    /// Update the probe too.
    pub probe_update: bool,
    /// First iteration (0-based) of probe updates: a few object-only
    /// iterations first keep the two from trading errors early.
    pub probe_update_from: usize,
    /// Where the probe starts.
    pub probe_init: ProbeInit,
    /// Side of the object to reconstruct (default: just enough for the
    /// positions).
    pub object_size: Option<usize>,
    /// Seed of the position order.
    pub seed: u64,
}

impl EpieConfig {
    /// `iterations` iterations, α = β = 1, probe updated from iteration 5,
    /// starting from the beam `spec`.
    pub fn new(iterations: usize, spec: ProbeSpec) -> EpieConfig {
        EpieConfig {
            iterations,
            alpha: 1.0,
            beta: 1.0,
            probe_update: true,
            probe_update_from: 5,
            probe_init: ProbeInit::Spec(spec),
            object_size: None,
            seed: 0,
        }
    }
}

/// What ePIE returns.
#[derive(Clone, Debug)]
pub struct Reconstruction {
    /// The object, phase at zero mean over [`Reconstruction::mask`].
    pub object: Array2<C32>,
    /// The probe (in the frames' photon scale).
    pub probe: Array2<C32>,
    /// The Fourier error after each iteration.
    pub fourier_error: Vec<f64>,
    /// The illuminated region (10 % of the peak summed probe intensity).
    pub mask: Array2<bool>,
    /// The positions' top-left corners `(y, x)`, in frame order.
    pub corners: Vec<(usize, usize)>,
    /// Wall time of the iterations, seconds.
    pub seconds: f64,
}

impl Reconstruction {
    /// Milliseconds per frame-iteration (one position's update).
    pub fn ms_per_frame_iteration(&self) -> f64 {
        let updates = (self.corners.len() * self.fourier_error.len()).max(1);
        self.seconds * 1e3 / updates as f64
    }
}

/// What [`check`] finds: N, the windows' corners and the object side.
type Layout = (usize, Vec<(usize, usize)>, usize);

/// Checks frames and metadata; returns N, the corners and the object side.
fn check(
    frames: &[Array2<u16>],
    metas: &[FrameMeta],
    object_size: Option<usize>,
) -> Result<Layout> {
    if frames.is_empty() {
        return Err(PtychoError::Invalid("no frames to reconstruct".into()));
    }
    if frames.len() != metas.len() {
        return Err(PtychoError::Invalid(format!(
            "{} frames but {} metadata records",
            frames.len(),
            metas.len()
        )));
    }
    let n = frames[0].nrows();
    if n < 8 || !n.is_power_of_two() {
        return Err(PtychoError::Invalid(format!(
            "frame 0 is {:?}: frames are N×N with N a power of two ≥ 8",
            frames[0].dim()
        )));
    }
    for (i, f) in frames.iter().enumerate() {
        if f.dim() != (n, n) {
            return Err(PtychoError::Invalid(format!(
                "frame {i} is {:?}, not {n}×{n} like frame 0",
                f.dim()
            )));
        }
    }
    let corners: Vec<(usize, usize)> = metas.iter().map(|m| (m.y as usize, m.x as usize)).collect();
    let need = corners
        .iter()
        .map(|&(y, x)| y.max(x) + n)
        .max()
        .unwrap_or(n);
    let size = object_size.unwrap_or(need);
    if let Some((i, m)) = metas
        .iter()
        .enumerate()
        .find(|(_, m)| m.y as usize + n > size || m.x as usize + n > size)
    {
        return Err(PtychoError::Invalid(format!(
            "frame {i} (position {} of scan {:?}) at x {}, y {} lies outside the {size}×{size} object",
            m.index, m.scan_id, m.x, m.y
        )));
    }
    Ok((n, corners, size))
}

/// Reconstructs one scan.
pub fn reconstruct(
    frames: &[Array2<u16>],
    metas: &[FrameMeta],
    cfg: &EpieConfig,
) -> Result<Reconstruction> {
    if !(cfg.alpha > 0.0 && cfg.alpha <= 1.0 && cfg.beta > 0.0 && cfg.beta <= 1.0) {
        return Err(PtychoError::Invalid(format!(
            "alpha {} and beta {}: in (0, 1]",
            cfg.alpha, cfg.beta
        )));
    }
    let (n, corners, size) = check(frames, metas, cfg.object_size)?;
    // Measured moduli in the FFT's layout (zero frequency at [0, 0]), and
    // which pixels saturated.
    let moduli: Vec<Array2<f32>> = frames
        .iter()
        .map(|f| ifftshift(&f.mapv(|v| (v as f32).sqrt())))
        .collect();
    let saturated: Vec<Array2<bool>> = frames
        .iter()
        .map(|f| ifftshift(&f.mapv(|v| v >= SATURATION)))
        .collect();
    let total: f64 = moduli
        .iter()
        .flat_map(|m| m.iter())
        .map(|&a| (a as f64).powi(2))
        .sum();
    let mean_photons = total / frames.len() as f64;
    let mut fft = Fft2::new(n);
    let mut p = match &cfg.probe_init {
        ProbeInit::Spec(spec) => probe(spec, n)?.mapv(|v| v * (mean_photons.sqrt() as f32)),
        ProbeInit::FromFrames => {
            let mut mean = Array2::<f32>::zeros((n, n));
            for m in &moduli {
                mean += &m.mapv(|a| a * a);
            }
            let mut spectrum = mean.mapv(|v| C32::new((v / frames.len() as f32).sqrt(), 0.0));
            fft.inverse(&mut spectrum);
            fftshift(&spectrum)
        }
        ProbeInit::Given(given) => {
            if given.dim() != (n, n) {
                return Err(PtychoError::Invalid(format!(
                    "the given probe is {:?}, the frames {n}×{n}",
                    given.dim()
                )));
            }
            given.clone()
        }
    };
    let mut object = Array2::from_elem((size, size), C32::new(1.0, 0.0));
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..frames.len()).collect();
    let mut fourier_error = Vec::with_capacity(cfg.iterations);
    let mut psi = Array2::from_elem((n, n), C32::default());
    let mut psi0 = Array2::from_elem((n, n), C32::default());
    // The transforms run unscaled: the forward one multiplies by N, the
    // inverse one by N again, so the measured moduli are compared ×N and
    // the new exit wave is read ÷N².
    let nf = n as f32;
    let inv_n2 = 1.0 / (nf * nf);
    let moduli: Vec<Array2<f32>> = moduli.into_iter().map(|m| m * nf).collect();
    let mut p_max = p.iter().fold(0f32, |m, v| m.max(v.norm_sqr())).max(1e-30);
    let started = Instant::now();
    for it in 0..cfg.iterations {
        order.shuffle(&mut rng);
        let update_probe = cfg.probe_update && it >= cfg.probe_update_from;
        let mut err = 0f64;
        for &j in &order {
            let (y, x) = corners[j];
            let mut patch = object.slice_mut(s![y..y + n, x..x + n]);
            // ψ = P·O_j (kept in psi0), and max|O_j|² for the probe step.
            let mut o_max = 0f32;
            Zip::from(&mut psi)
                .and(&mut psi0)
                .and(&p)
                .and(&patch)
                .for_each(|w, w0, &pv, &ov| {
                    *w = pv * ov;
                    *w0 = *w;
                    o_max = o_max.max(ov.norm_sqr());
                });
            fft.forward_unscaled(&mut psi);
            let mut frame_err = 0f32;
            Zip::from(&mut psi)
                .and(&moduli[j])
                .and(&saturated[j])
                .for_each(|w, &a, &sat| {
                    let m = w.norm_sqr().sqrt();
                    let target = if sat {
                        m.max(a)
                    } else {
                        frame_err += (m - a) * (m - a);
                        a
                    };
                    *w = if m > 1e-20 {
                        *w * (target / m)
                    } else {
                        C32::new(target, 0.0)
                    };
                });
            err += frame_err as f64 * (inv_n2 as f64);
            fft.inverse_unscaled(&mut psi);
            // Both updates from the values before either, in one pass:
            // Δ = ψ' − ψ, O_j += α P*/max|P|² Δ, P += β O_j*/max|O_j|² Δ.
            let a = cfg.alpha / p_max;
            if update_probe {
                let b = cfg.beta / o_max.max(1e-30);
                let mut new_max = 0f32;
                Zip::from(&mut patch)
                    .and(&mut p)
                    .and(&psi)
                    .and(&psi0)
                    .for_each(|o, pv, &new, &old_wave| {
                        let d = new * inv_n2 - old_wave;
                        let (ov, pold) = (*o, *pv);
                        *o = ov + pold.conj() * d * a;
                        *pv = pold + ov.conj() * d * b;
                        new_max = new_max.max(pv.norm_sqr());
                    });
                p_max = new_max.max(1e-30);
            } else {
                Zip::from(&mut patch).and(&p).and(&psi).and(&psi0).for_each(
                    |o, &pv, &new, &old_wave| {
                        *o += pv.conj() * (new * inv_n2 - old_wave) * a;
                    },
                );
            }
        }
        fourier_error.push(err / total.max(1e-30));
    }
    let seconds = started.elapsed().as_secs_f64();
    let mask = illuminated(&p, &corners, (size, size), 0.1)?;
    let object = zero_mean_phase(&object, &mask);
    Ok(Reconstruction {
        object,
        probe: p,
        fourier_error,
        mask,
        corners,
        seconds,
    })
}

/// One scan to reconstruct: its frames and their metadata.
pub type ScanData<'a> = (&'a [Array2<u16>], &'a [FrameMeta]);

/// Reconstructs several scans at once, one per thread (rayon's pool).
pub fn reconstruct_many(scans: &[ScanData<'_>], cfg: &EpieConfig) -> Vec<Result<Reconstruction>> {
    scans
        .par_iter()
        .map(|(frames, metas)| reconstruct(frames, metas, cfg))
        .collect()
}

/// The figures of a reconstruction, for `--json` output.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EpieFigures {
    /// Frames reconstructed.
    pub frames: usize,
    /// Iterations run.
    pub iterations: usize,
    /// The Fourier error after the last iteration.
    pub fourier_error: f64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Milliseconds per frame-iteration.
    pub ms_per_frame_iteration: f64,
}

impl From<&Reconstruction> for EpieFigures {
    fn from(r: &Reconstruction) -> Self {
        EpieFigures {
            frames: r.corners.len(),
            iterations: r.fourier_error.len(),
            fourier_error: r.fourier_error.last().copied().unwrap_or(f64::NAN),
            seconds: r.seconds,
            ms_per_frame_iteration: r.ms_per_frame_iteration(),
        }
    }
}
