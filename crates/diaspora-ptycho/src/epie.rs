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

use ndarray::{s, Array2};
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
    let p = match &cfg.probe_init {
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
    // The passes below read arrays as slices: a given probe may be a view
    // with other strides.
    let mut p = p.as_standard_layout().into_owned();
    let mut object = Array2::from_elem((size, size), C32::new(1.0, 0.0));
    // The transforms run unscaled: the forward one multiplies by N, the
    // inverse one by N again, so the measured moduli are compared ×N and
    // the new exit wave is read ÷N².
    let nf = n as f32;
    // The loop works on transposed spectra (one transpose fewer per FFT):
    // the measurements are transposed here, once.
    let moduli: Vec<Array2<f32>> = moduli
        .into_iter()
        .map(|m| m.t().as_standard_layout().mapv(|a| a * nf))
        .collect();
    // Saturation as a 0/1 factor, so the modulus pass has no branch.
    let saturated: Vec<Array2<f32>> = saturated
        .iter()
        .map(|m| {
            m.t()
                .as_standard_layout()
                .mapv(|s| if s { 1.0 } else { 0.0 })
        })
        .collect();
    let started = Instant::now();
    let fourier_error = iterate(Run {
        cfg,
        fft: &mut fft,
        object: &mut object,
        probe: &mut p,
        corners: &corners,
        moduli: &moduli,
        saturated: &saturated,
        total,
    });
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

/// One reconstruction's working set, for [`iterate`].
struct Run<'a> {
    cfg: &'a EpieConfig,
    fft: &'a mut Fft2,
    object: &'a mut Array2<C32>,
    probe: &'a mut Array2<C32>,
    corners: &'a [(usize, usize)],
    /// Measured moduli ×N, transposed (the FFT's transposed layout).
    moduli: &'a [Array2<f32>],
    /// 1 where the pixel saturated, transposed.
    saturated: &'a [Array2<f32>],
    /// Σ measured intensity, to normalise the Fourier error.
    total: f64,
}

/// The ePIE iterations; returns the Fourier error of each. Compiled twice:
/// for AVX2 + FMA (chosen at run time where the CPU has them, as rustfft
/// does for its butterflies) and for the baseline target — the
/// element-wise passes are most of ePIE's time beside the FFTs, and the
/// baseline (SSE2) build runs them one complex number at a time.
fn iterate(run: Run<'_>) -> Vec<f64> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has just been seen to support AVX2 and FMA,
        // the only features `iterate_avx2` is compiled with.
        return unsafe { iterate_avx2(run) };
    }
    iterate_generic(run)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn iterate_avx2(run: Run<'_>) -> Vec<f64> {
    iterate_generic(run)
}

#[inline(always)]
fn iterate_generic(run: Run<'_>) -> Vec<f64> {
    let Run {
        cfg,
        fft,
        object,
        probe: p,
        corners,
        moduli,
        saturated,
        total,
    } = run;
    let n = p.nrows();
    let inv_n2 = 1.0 / (n * n) as f32;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..corners.len()).collect();
    let mut fourier_error = Vec::with_capacity(cfg.iterations);
    let mut psi = vec![C32::default(); n * n];
    let mut psi0 = vec![C32::default(); n * n];
    let mut p_max = lanes_max(as_ref(p).iter().map(|v| v.norm_sqr())).max(1e-30);
    for it in 0..cfg.iterations {
        order.shuffle(&mut rng);
        let update_probe = cfg.probe_update && it >= cfg.probe_update_from;
        let mut err = 0f64;
        for &j in &order {
            let (y, x) = corners[j];
            let mut patch = object.slice_mut(s![y..y + n, x..x + n]);
            // ψ = P·O_j (kept in psi0), and max|O_j|² for the probe step.
            // Row by row over contiguous slices (the patch is a window of
            // the object), so the passes vectorise.
            let mut o_max = 0f32;
            for (((w, w0), pr), or) in psi
                .chunks_exact_mut(n)
                .zip(psi0.chunks_exact_mut(n))
                .zip(as_ref(p).chunks_exact(n))
                .zip(patch.rows())
            {
                let or = or.to_slice().expect("object rows are contiguous");
                for (((w, w0), &pv), &ov) in w.iter_mut().zip(w0).zip(pr).zip(or) {
                    *w = pv * ov;
                    *w0 = *w;
                }
                o_max = o_max.max(lanes_max(or.iter().map(|v| v.norm_sqr())));
            }
            fft.forward_unscaled_transposed(&mut psi);
            err += modulus_constraint(&mut psi, as_ref(&moduli[j]), as_ref(&saturated[j])) as f64
                * (inv_n2 as f64);
            fft.inverse_unscaled_from_transposed(&mut psi);
            // Both updates from the values before either, in one pass:
            // Δ = ψ' − ψ, O_j += α P*/max|P|² Δ, P += β O_j*/max|O_j|² Δ.
            let a = cfg.alpha / p_max;
            if update_probe {
                let b = cfg.beta / o_max.max(1e-30);
                let mut new_max = 0f32;
                for (((mut or, pr), wr), w0r) in patch
                    .rows_mut()
                    .into_iter()
                    .zip(as_mut(p).chunks_exact_mut(n))
                    .zip(psi.chunks_exact(n))
                    .zip(psi0.chunks_exact(n))
                {
                    let or = or.as_slice_mut().expect("object rows are contiguous");
                    for (((o, pv), &new), &old_wave) in
                        or.iter_mut().zip(pr.iter_mut()).zip(wr).zip(w0r)
                    {
                        let d = new * inv_n2 - old_wave;
                        let (ov, pold) = (*o, *pv);
                        *o = ov + pold.conj() * d * a;
                        *pv = pold + ov.conj() * d * b;
                    }
                    new_max = new_max.max(lanes_max(pr.iter().map(|v| v.norm_sqr())));
                }
                p_max = new_max.max(1e-30);
            } else {
                for (((mut or, pr), wr), w0r) in patch
                    .rows_mut()
                    .into_iter()
                    .zip(as_ref(p).chunks_exact(n))
                    .zip(psi.chunks_exact(n))
                    .zip(psi0.chunks_exact(n))
                {
                    let or = or.as_slice_mut().expect("object rows are contiguous");
                    for (((o, &pv), &new), &old_wave) in or.iter_mut().zip(pr).zip(wr).zip(w0r) {
                        *o += pv.conj() * (new * inv_n2 - old_wave) * a;
                    }
                }
            }
        }
        fourier_error.push(err / total.max(1e-30));
    }
    fourier_error
}

/// The modulus constraint on a (transposed) spectrum: |ψ̂| ← the measured
/// modulus (a saturated pixel's only as a lower bound), phase kept;
/// returns Σ (|ψ̂| − measured)² over the unsaturated pixels. Eight
/// accumulators: one would be a chain the compiler may not reorder
/// (float addition is not associative).
#[inline(always)]
fn modulus_constraint(psi: &mut [C32], moduli: &[f32], saturated: &[f32]) -> f32 {
    #[inline(always)]
    fn one(w: &mut C32, a: f32, sat: f32) -> f32 {
        let m = w.norm_sqr().sqrt();
        let d = m - a;
        let target = a + sat * d.max(0.0);
        *w *= target / m.max(1e-20);
        (1.0 - sat) * d * d
    }
    let mut acc = [0f32; 8];
    let mut w = psi.chunks_exact_mut(8);
    let mut a = moduli.chunks_exact(8);
    let mut s = saturated.chunks_exact(8);
    for ((w, a), s) in (&mut w).zip(&mut a).zip(&mut s) {
        for l in 0..8 {
            acc[l] += one(&mut w[l], a[l], s[l]);
        }
    }
    let mut tail = 0f32;
    for ((w, &a), &s) in w
        .into_remainder()
        .iter_mut()
        .zip(a.remainder())
        .zip(s.remainder())
    {
        tail += one(w, a, s);
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest of `values` (0 for none), with eight running maxima.
#[inline(always)]
fn lanes_max(values: impl Iterator<Item = f32>) -> f32 {
    let mut acc = [0f32; 8];
    for (k, v) in values.enumerate() {
        let l = &mut acc[k % 8];
        *l = if v > *l { v } else { *l };
    }
    acc.iter().fold(0f32, |m, &v| m.max(v))
}

/// The whole of a standard-layout array as one slice.
fn as_ref<T>(a: &Array2<T>) -> &[T] {
    a.as_slice()
        .expect("ePIE's work arrays are standard layout")
}

fn as_mut<T>(a: &mut Array2<T>) -> &mut [T] {
    a.as_slice_mut()
        .expect("ePIE's work arrays are standard layout")
}
