//! How good a reconstruction is: SSIM and PSNR of amplitude and phase
//! against a reference (the ground truth, or ePIE for the surrogate), over
//! the illuminated region only, after removing what ptychography cannot
//! know — a global phase offset, a linear phase ramp (when the probe is
//! refined too) and a global amplitude scale.
//!
//! SSIM is Wang et al. (2004): Gaussian window σ = 1.5 px, `C1 = 0.01²`,
//! `C2 = 0.03²` on images mapped by the reference's range over the region
//! onto [0, 1] (SSIM assumes non-negative intensities; phases are signed);
//! the index is the mean of the SSIM map over the region's pixels. PSNR is
//! `10 log10(L² / MSE)` over the same pixels.

use ndarray::{s, Array2, Zip};
use serde::{Deserialize, Serialize};

use crate::sim::blur;
use crate::{PtychoError, Result, C32};

/// SSIM of `a` against the reference `b`, averaged over `mask` (all pixels
/// when `None`).
///
/// # Panics
/// If the shapes differ.
pub fn ssim(a: &Array2<f32>, b: &Array2<f32>, mask: Option<&Array2<bool>>) -> f64 {
    assert_eq!(a.dim(), b.dim(), "ssim of arrays of different shapes");
    // SSIM assumes non-negative intensities; phases are signed. Both
    // images go through the same affine map, the reference's range over
    // the region onto [0, 1].
    let (lo, hi) = bounds(b, mask);
    let l = (hi - lo).max(1e-6);
    let a = &a.mapv(|v| (v - lo) / l);
    let b = &b.mapv(|v| (v - lo) / l);
    let (c1, c2) = (0.01f32.powi(2), 0.03f32.powi(2));
    let sigma = 1.5;
    let mu_a = blur(a, sigma);
    let mu_b = blur(b, sigma);
    let aa = blur(&(a * a), sigma);
    let bb = blur(&(b * b), sigma);
    let ab = blur(&(a * b), sigma);
    let mut sum = 0f64;
    let mut count = 0usize;
    for ((r, c), &ma) in mu_a.indexed_iter() {
        if mask.is_some_and(|m| !m[[r, c]]) {
            continue;
        }
        let mb = mu_b[[r, c]];
        let va = (aa[[r, c]] - ma * ma).max(0.0);
        let vb = (bb[[r, c]] - mb * mb).max(0.0);
        let cov = ab[[r, c]] - ma * mb;
        let v =
            ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
        sum += v as f64;
        count += 1;
    }
    if count == 0 {
        0.0
    } else {
        sum / count as f64
    }
}

/// PSNR of `a` against the reference `b` over `mask`, dB (infinite when
/// they are equal).
pub fn psnr(a: &Array2<f32>, b: &Array2<f32>, mask: Option<&Array2<bool>>) -> f64 {
    assert_eq!(a.dim(), b.dim(), "psnr of arrays of different shapes");
    let l = range(b, mask).max(1e-6) as f64;
    let (mut se, mut count) = (0f64, 0usize);
    Zip::indexed(a).and(b).for_each(|(r, c), &x, &y| {
        if mask.map_or(true, |m| m[[r, c]]) {
            se += ((x - y) as f64).powi(2);
            count += 1;
        }
    });
    if count == 0 {
        return 0.0;
    }
    let mse = se / count as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (l * l / mse).log10()
    }
}

fn bounds(a: &Array2<f32>, mask: Option<&Array2<bool>>) -> (f32, f32) {
    let (lo, hi) = a
        .indexed_iter()
        .filter(|(ix, _)| mask.map_or(true, |m| m[*ix]))
        .fold((f32::MAX, f32::MIN), |(lo, hi), (_, &v)| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        (0.0, 0.0)
    } else {
        (lo, hi)
    }
}

fn range(a: &Array2<f32>, mask: Option<&Array2<bool>>) -> f32 {
    let (lo, hi) = bounds(a, mask);
    hi - lo
}

/// The pixels of a `size` object that the scan lit: where the summed probe
/// intensity over all positions reaches `fraction` of its maximum.
/// Positions are windows' top-left corners `(y, x)`.
pub fn illuminated(
    probe: &Array2<C32>,
    corners: &[(usize, usize)],
    size: (usize, usize),
    fraction: f32,
) -> Result<Array2<bool>> {
    let n = probe.nrows();
    let mut sum = Array2::<f32>::zeros(size);
    let intensity = probe.mapv(|v| v.norm_sqr());
    for &(y, x) in corners {
        if y + n > size.0 || x + n > size.1 {
            return Err(PtychoError::Invalid(format!(
                "position (y {y}, x {x}) with a {n}×{n} window lies outside the {}×{} object",
                size.0, size.1
            )));
        }
        let mut w = sum.slice_mut(s![y..y + n, x..x + n]);
        w += &intensity;
    }
    let max = sum.iter().fold(0f32, |m, &v| m.max(v));
    Ok(sum.mapv(|v| max > 0.0 && v >= fraction * max))
}

/// Removes a global phase offset: `a · e^{-ic}` with `c` the phase that
/// best aligns `a` to `reference` over `mask`.
pub fn align_phase(a: &Array2<C32>, reference: &Array2<C32>, mask: &Array2<bool>) -> Array2<C32> {
    let mut dot = num_complex::Complex::<f64>::new(0.0, 0.0);
    Zip::from(a)
        .and(reference)
        .and(mask)
        .for_each(|&x, &y, &m| {
            if m {
                let p = x * y.conj();
                dot += num_complex::Complex::new(p.re as f64, p.im as f64);
            }
        });
    let turn = C32::from_polar(1.0, -(dot.arg() as f32));
    a.mapv(|v| v * turn)
}

/// Removes a linear phase ramp of `a` relative to `reference` over `mask`
/// — the one ambiguity ePIE has when it refines the probe too (a ramp
/// moves from object to probe and leaves every frame the same) — then the
/// global offset ([`align_phase`]). The ramp is the mean phase step between
/// neighbouring pixels of `a · conj(reference)`.
pub fn align_ramp(a: &Array2<C32>, reference: &Array2<C32>, mask: &Array2<bool>) -> Array2<C32> {
    let d = Zip::from(a)
        .and(reference)
        .map_collect(|&x, &y| x * y.conj());
    let (rows, cols) = d.dim();
    let (mut sx, mut sy) = (
        num_complex::Complex::<f64>::new(0.0, 0.0),
        num_complex::Complex::<f64>::new(0.0, 0.0),
    );
    for r in 0..rows {
        for c in 0..cols {
            if !mask[[r, c]] {
                continue;
            }
            if c + 1 < cols && mask[[r, c + 1]] {
                let p = d[[r, c + 1]] * d[[r, c]].conj();
                sx += num_complex::Complex::new(p.re as f64, p.im as f64);
            }
            if r + 1 < rows && mask[[r + 1, c]] {
                let p = d[[r + 1, c]] * d[[r, c]].conj();
                sy += num_complex::Complex::new(p.re as f64, p.im as f64);
            }
        }
    }
    let (kx, ky) = (sx.arg() as f32, sy.arg() as f32);
    let flat = Array2::from_shape_fn(a.dim(), |(r, c)| {
        a[[r, c]] * C32::from_polar(1.0, -(kx * c as f32 + ky * r as f32))
    });
    align_phase(&flat, reference, mask)
}

/// Puts the (amplitude-weighted) mean phase over `mask` at zero (a fixed convention for
/// reconstructions compared or trained on without a reference).
pub fn zero_mean_phase(a: &Array2<C32>, mask: &Array2<bool>) -> Array2<C32> {
    let one = Array2::from_elem(a.dim(), C32::new(1.0, 0.0));
    align_phase(a, &one, mask)
}

/// The quality of a complex image against a reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// SSIM of the amplitudes.
    pub amplitude_ssim: f64,
    /// SSIM of the phases.
    pub phase_ssim: f64,
    /// PSNR of the amplitudes, dB.
    pub amplitude_psnr: f64,
    /// PSNR of the phases, dB.
    pub phase_psnr: f64,
}

/// Compares `a` with `reference` over `mask`, after removing a linear
/// phase ramp and the global phase offset ([`align_ramp`]) and fitting the
/// global amplitude scale (least squares).
pub fn compare(a: &Array2<C32>, reference: &Array2<C32>, mask: &Array2<bool>) -> Result<Quality> {
    if a.dim() != reference.dim() || a.dim() != mask.dim() {
        return Err(PtychoError::Invalid(format!(
            "comparing a {:?} image with a {:?} reference and a {:?} mask",
            a.dim(),
            reference.dim(),
            mask.dim()
        )));
    }
    let aligned = align_ramp(a, reference, mask);
    let amp = aligned.mapv(|v| v.norm());
    let ref_amp = reference.mapv(|v| v.norm());
    let (mut num, mut den) = (0f64, 0f64);
    Zip::from(&amp)
        .and(&ref_amp)
        .and(mask)
        .for_each(|&x, &y, &m| {
            if m {
                num += (x * y) as f64;
                den += (x * x) as f64;
            }
        });
    let scale = if den > 0.0 { (num / den) as f32 } else { 1.0 };
    let amp = amp.mapv(|v| v * scale);
    let phase = aligned.mapv(|v| v.arg());
    let ref_phase = reference.mapv(|v| v.arg());
    Ok(Quality {
        amplitude_ssim: ssim(&amp, &ref_amp, Some(mask)),
        phase_ssim: ssim(&phase, &ref_phase, Some(mask)),
        amplitude_psnr: psnr(&amp, &ref_amp, Some(mask)),
        phase_psnr: psnr(&phase, &ref_phase, Some(mask)),
    })
}

/// A complex image from its amplitude and phase.
pub fn from_parts(amplitude: &Array2<f32>, phase: &Array2<f32>) -> Array2<C32> {
    Zip::from(amplitude)
        .and(phase)
        .map_collect(|&a, &p| C32::from_polar(a, p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{object, ObjectKind};

    #[test]
    fn ssim_is_one_for_equal_images_and_falls_with_noise() {
        let a = object(ObjectKind::SmoothRandom, 64, 1).mapv(|v| v.arg());
        assert!((ssim(&a, &a, None) - 1.0).abs() < 1e-6);
        assert_eq!(psnr(&a, &a, None), f64::INFINITY);
        let span = range(&a, None);
        let mut x = 0u32;
        let noisy = a.mapv(|v| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            v + ((x >> 16) as f32 / 65536.0 - 0.5) * 0.03 * span
        });
        let worse = object(ObjectKind::SmoothRandom, 64, 2).mapv(|v| v.arg());
        let s_noisy = ssim(&noisy, &a, None);
        assert!(
            s_noisy < 0.99 && s_noisy > 0.5 && s_noisy > ssim(&worse, &a, None),
            "{s_noisy}"
        );
        assert!(psnr(&noisy, &a, None) > psnr(&worse, &a, None));
    }

    #[test]
    fn compare_ignores_a_global_phase_and_amplitude_scale() {
        let o = object(ObjectKind::Particles, 64, 2);
        let mask = Array2::from_elem(o.dim(), true);
        let moved = o.mapv(|v| v * C32::from_polar(0.7, 1.1));
        let q = compare(&moved, &o, &mask).unwrap();
        assert!(q.amplitude_ssim > 0.999 && q.phase_ssim > 0.999, "{q:?}");
        let other = object(ObjectKind::Particles, 64, 3);
        let q = compare(&other, &o, &mask).unwrap();
        assert!(q.phase_ssim < 0.7 && q.amplitude_ssim < 0.7, "{q:?}");
        assert!(compare(&o, &o.slice(s![..32, ..]).to_owned(), &mask).is_err());
    }

    #[test]
    fn the_illuminated_region_covers_the_positions_and_refuses_outside_ones() {
        let probe = Array2::from_shape_fn((8, 8), |(y, x)| {
            C32::new(
                if (2..6).contains(&y) && (2..6).contains(&x) {
                    1.0
                } else {
                    0.0
                },
                0.0,
            )
        });
        let m = illuminated(&probe, &[(0, 0), (4, 4)], (16, 16), 0.5).unwrap();
        assert!(m[[3, 3]] && m[[7, 7]] && !m[[0, 0]] && !m[[15, 15]]);
        assert!(illuminated(&probe, &[(10, 0)], (16, 16), 0.5).is_err());
    }
}
