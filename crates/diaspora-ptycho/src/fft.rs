//! Unitary 2-D FFTs of square complex arrays, with plans made once and
//! reused (rustfft), and `fftshift`.
//!
//! "Unitary" means both directions scale by `1/N` for an N×N array, so
//! Parseval holds exactly (`Σ|x|² = Σ|X|²`) and a forward transform
//! followed by an inverse one returns the input.

use std::sync::Arc;

use ndarray::{Array2, ArrayViewMut2};
use rustfft::{Fft, FftPlanner};

use crate::C32;

/// Forward and inverse plans for N×N arrays, and a scratch buffer.
pub struct Fft2 {
    n: usize,
    forward: Arc<dyn Fft<f32>>,
    inverse: Arc<dyn Fft<f32>>,
    scratch: Vec<C32>,
    columns: Vec<C32>,
}

impl Fft2 {
    /// Plans for N×N arrays (any N ≥ 1; powers of two are fastest).
    pub fn new(n: usize) -> Fft2 {
        let mut planner = FftPlanner::new();
        let forward = planner.plan_fft_forward(n);
        let inverse = planner.plan_fft_inverse(n);
        let len = forward
            .get_inplace_scratch_len()
            .max(inverse.get_inplace_scratch_len());
        Fft2 {
            n,
            forward,
            inverse,
            scratch: vec![C32::default(); len],
            columns: vec![C32::default(); n * n],
        }
    }

    /// The side N these plans are for.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Transforms `a` in place to its spectrum (zero frequency at `[0, 0]`).
    ///
    /// # Panics
    /// If `a` is not N×N in standard (row-major, contiguous) layout.
    pub fn forward(&mut self, a: &mut Array2<C32>) {
        self.run(a.view_mut(), true);
    }

    /// Transforms a spectrum back in place.
    ///
    /// # Panics
    /// If `a` is not N×N in standard layout.
    pub fn inverse(&mut self, a: &mut Array2<C32>) {
        self.run(a.view_mut(), false);
    }

    /// [`Fft2::forward`] without the `1/N` scaling (ePIE folds it into
    /// its own passes).
    pub fn forward_unscaled(&mut self, a: &mut Array2<C32>) {
        self.run_scaled(a.view_mut(), true, 1.0);
    }

    /// [`Fft2::inverse`] without the `1/N` scaling.
    pub fn inverse_unscaled(&mut self, a: &mut Array2<C32>) {
        self.run_scaled(a.view_mut(), false, 1.0);
    }

    /// The unscaled spectrum of the row-major N×N buffer `a`, left
    /// **transposed** (`a[c * N + r]` holds frequency `(r, c)`): one
    /// transpose fewer than [`Fft2::forward_unscaled`], and the buffer is
    /// swapped with the plan's column buffer rather than copied back. For
    /// loops that only apply a pointwise constraint to the spectrum
    /// (against data transposed once up front) and go back with
    /// [`Fft2::inverse_unscaled_from_transposed`].
    ///
    /// # Panics
    /// If `a` does not hold N×N values.
    pub fn forward_unscaled_transposed(&mut self, a: &mut Vec<C32>) {
        self.transform_into_columns(a, true);
        std::mem::swap(a, &mut self.columns);
    }

    /// Inverse of [`Fft2::forward_unscaled_transposed`]: `a` holds a
    /// transposed spectrum; on return it holds the (unscaled) image in
    /// the normal layout. The transform is separable, so the same three
    /// steps undo it.
    ///
    /// # Panics
    /// If `a` does not hold N×N values.
    pub fn inverse_unscaled_from_transposed(&mut self, a: &mut Vec<C32>) {
        self.transform_into_columns(a, false);
        std::mem::swap(a, &mut self.columns);
    }

    /// One batched pass along the rows, a transpose, a batched pass along
    /// the new rows: the 2-D transform of `data`, transposed, into
    /// `self.columns` (`data` is left holding the row pass).
    fn transform_into_columns(&mut self, data: &mut [C32], forward: bool) {
        let n = self.n;
        assert_eq!(data.len(), n * n, "Fft2 planned for {n}×{n}");
        let plan = if forward {
            &self.forward
        } else {
            &self.inverse
        };
        plan.process_with_scratch(data, &mut self.scratch);
        transpose(data, &mut self.columns, n);
        plan.process_with_scratch(&mut self.columns, &mut self.scratch);
    }

    fn run(&mut self, a: ArrayViewMut2<C32>, forward: bool) {
        let scale = 1.0 / self.n as f32;
        self.run_scaled(a, forward, scale);
    }

    fn run_scaled(&mut self, mut a: ArrayViewMut2<C32>, forward: bool, scale: f32) {
        let n = self.n;
        assert_eq!(a.dim(), (n, n), "Fft2 planned for {n}×{n}");
        let plan = if forward {
            &self.forward
        } else {
            &self.inverse
        };
        let data = a
            .as_slice_mut()
            .expect("Fft2 needs a contiguous row-major array");
        // Rows: one batched call over the whole buffer.
        plan.process_with_scratch(data, &mut self.scratch);
        // Columns: transpose, one batched call, transpose back (scaled).
        transpose(data, &mut self.columns, n);
        plan.process_with_scratch(&mut self.columns, &mut self.scratch);
        if scale == 1.0 {
            transpose(&self.columns, data, n);
        } else {
            for r in 0..n {
                for c in 0..n {
                    data[r * n + c] = self.columns[c * n + r] * scale;
                }
            }
        }
    }
}

/// `to = fromᵀ` for n×n row-major buffers, in cache-sized blocks.
fn transpose(from: &[C32], to: &mut [C32], n: usize) {
    const B: usize = 16;
    for rb in (0..n).step_by(B) {
        for cb in (0..n).step_by(B) {
            for r in rb..(rb + B).min(n) {
                for c in cb..(cb + B).min(n) {
                    to[c * n + r] = from[r * n + c];
                }
            }
        }
    }
}

/// Swaps quadrants so the zero frequency moves from `[0, 0]` to the centre
/// `[n/2, n/2]` (its own inverse for even n).
pub fn fftshift<T: Clone>(a: &Array2<T>) -> Array2<T> {
    let (rows, cols) = a.dim();
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        a[((r + rows - rows / 2) % rows, (c + cols - cols / 2) % cols)].clone()
    })
}

/// The inverse of [`fftshift`] (the same for even sides).
pub fn ifftshift<T: Clone>(a: &Array2<T>) -> Array2<T> {
    let (rows, cols) = a.dim();
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        a[((r + rows / 2) % rows, (c + cols / 2) % cols)].clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Array2<C32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Array2::from_shape_fn((n, n), |_| {
            C32::new(rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0))
        })
    }

    fn energy(a: &Array2<C32>) -> f64 {
        a.iter().map(|v| v.norm_sqr() as f64).sum()
    }

    #[test]
    fn parseval_holds_and_a_round_trip_returns_the_input() {
        for n in [8, 32, 64, 48] {
            let x = random(n, n as u64);
            let mut f = Fft2::new(n);
            let mut y = x.clone();
            f.forward(&mut y);
            let (ex, ey) = (energy(&x), energy(&y));
            assert!((ex - ey).abs() / ex < 1e-5, "n={n}: {ex} vs {ey}");
            f.inverse(&mut y);
            let err = x
                .iter()
                .zip(y.iter())
                .map(|(a, b)| (a - b).norm())
                .fold(0f32, f32::max);
            assert!(err < 1e-5, "n={n}: round trip error {err}");
        }
    }

    #[test]
    fn a_delta_has_a_flat_spectrum_and_a_constant_a_delta_spectrum() {
        let n = 16;
        let mut f = Fft2::new(n);
        let mut d = Array2::from_elem((n, n), C32::default());
        d[[0, 0]] = C32::new(n as f32, 0.0);
        f.forward(&mut d);
        assert!(d.iter().all(|v| (v - C32::new(1.0, 0.0)).norm() < 1e-5));
        let mut c = Array2::from_elem((n, n), C32::new(1.0, 0.0));
        f.forward(&mut c);
        assert!((c[[0, 0]].re - n as f32).abs() < 1e-4);
        assert!(c.iter().skip(1).all(|v| v.norm() < 1e-4));
    }

    #[test]
    fn the_transposed_pair_matches_the_plain_transform_and_undoes_itself() {
        for n in [8, 64] {
            let mut fft = Fft2::new(n);
            let a = random(n, 3);
            let mut plain = a.clone();
            fft.forward_unscaled(&mut plain);
            let mut t = a.clone().into_raw_vec_and_offset().0;
            fft.forward_unscaled_transposed(&mut t);
            let spectrum_t = Array2::from_shape_vec((n, n), t.clone()).unwrap();
            let diff = (&spectrum_t.t() - &plain)
                .mapv(|v| v.norm())
                .fold(0f32, |m, &v| m.max(v));
            assert!(
                diff < 1e-3 * n as f32,
                "n {n}: transposed spectrum off by {diff}"
            );
            fft.inverse_unscaled_from_transposed(&mut t);
            let image = Array2::from_shape_vec((n, n), t).unwrap();
            let scale = (n * n) as f32;
            let diff = (&image.mapv(|v| v / scale) - &a)
                .mapv(|v| v.norm())
                .fold(0f32, |m, &v| m.max(v));
            assert!(diff < 1e-4, "n {n}: round trip off by {diff}");
        }
    }

    #[test]
    fn fftshift_centres_the_zero_frequency_and_ifftshift_undoes_it() {
        let a = Array2::from_shape_fn((4, 6), |(r, c)| r * 10 + c);
        let s = fftshift(&a);
        assert_eq!(s[[2, 3]], 0);
        assert_eq!(ifftshift(&s), a);
        let odd = Array2::from_shape_fn((5, 5), |(r, c)| r * 10 + c);
        assert_eq!(fftshift(&odd)[[2, 2]], 0);
        assert_eq!(ifftshift(&fftshift(&odd)), odd);
    }
}
