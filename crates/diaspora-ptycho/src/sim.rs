//! The forward model: seeded complex objects of several kinds, a probe,
//! scan positions, and the far-field frames a detector records.
//!
//! An object is `O = A·exp(iφ)` with the amplitude `A` in about [0.5, 1]
//! and the phase `φ` in about [−π/2, π/2]. Its kinds ([`ObjectKind`]) are
//! "materials": a surrogate is trained on scans of one kind and tested on
//! another scan of the same kind with another seed. A frame is
//! `|F(P · O_patch)|²` (unitary FFT, [`crate::fft`]) scaled so the frame
//! holds `dose` photons in total for a flat object, with Poisson noise
//! (optional) and 12-bit saturation, as `u16` with the zero frequency at
//! the centre.

use std::f32::consts::{FRAC_PI_2, PI};

use ndarray::{s, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Poisson};
use serde::{Deserialize, Serialize};

use crate::fft::{fftshift, ifftshift, Fft2};
use crate::{PtychoError, Result, C32};

/// The largest count a 12-bit detector pixel holds.
pub const SATURATION: u16 = 4095;

/// What an object is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    /// Round particles of random size, absorption and phase shift on an
    /// empty background.
    Particles,
    /// A Siemens star (radial spokes) with rings, phase and absorption
    /// following the same pattern.
    SiemensStar,
    /// Smooth random fields (filtered noise), independent for amplitude
    /// and phase.
    SmoothRandom,
}

impl ObjectKind {
    /// Every kind.
    pub const ALL: [ObjectKind; 3] = [
        ObjectKind::Particles,
        ObjectKind::SiemensStar,
        ObjectKind::SmoothRandom,
    ];

    /// The kebab-case name (`particles`, `siemens-star`, `smooth-random`).
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Particles => "particles",
            ObjectKind::SiemensStar => "siemens-star",
            ObjectKind::SmoothRandom => "smooth-random",
        }
    }
}

impl std::str::FromStr for ObjectKind {
    type Err = PtychoError;
    fn from_str(s: &str) -> Result<Self> {
        ObjectKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                PtychoError::Invalid(format!(
                    "object kind {s:?}: one of particles, siemens-star, smooth-random"
                ))
            })
    }
}

/// A seeded object of `size`×`size` pixels.
pub fn object(kind: ObjectKind, size: usize, seed: u64) -> Array2<C32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x000b_1ec7);
    let (absorb, phase) = match kind {
        ObjectKind::Particles => particles(size, &mut rng),
        ObjectKind::SiemensStar => star(size, &mut rng),
        ObjectKind::SmoothRandom => (
            smooth_field(size, 6.0, &mut rng).mapv(|v| (v + 1.0) / 2.0),
            smooth_field(size, 4.0, &mut rng),
        ),
    };
    // absorb ∈ [0, 1] → A ∈ [0.5, 1]; phase ∈ [−1, 1] → φ ∈ [−π/2, π/2].
    Array2::from_shape_fn((size, size), |ix| {
        let a = 1.0 - 0.5 * absorb[ix].clamp(0.0, 1.0);
        let p = FRAC_PI_2 * phase[ix].clamp(-1.0, 1.0);
        C32::from_polar(a, p)
    })
}

/// Particles: each a sphere-like bump with its own absorption and phase.
fn particles(size: usize, rng: &mut ChaCha8Rng) -> (Array2<f32>, Array2<f32>) {
    let mut absorb = Array2::zeros((size, size));
    let mut phase = Array2::zeros((size, size));
    let count = (size * size) / 300 + 4;
    for _ in 0..count {
        let r = rng.gen_range(3.0..(size as f32 / 14.0).max(4.0));
        let (cy, cx) = (
            rng.gen_range(0.0..size as f32),
            rng.gen_range(0.0..size as f32),
        );
        let a = rng.gen_range(0.2..0.6);
        let p = rng.gen_range(-0.8..0.8);
        let (y0, y1) = (
            (cy - r).floor().max(0.0) as usize,
            ((cy + r).ceil() as usize).min(size),
        );
        let (x0, x1) = (
            (cx - r).floor().max(0.0) as usize,
            ((cx + r).ceil() as usize).min(size),
        );
        for y in y0..y1 {
            for x in x0..x1 {
                let d2 = ((y as f32 - cy).powi(2) + (x as f32 - cx).powi(2)) / (r * r);
                if d2 < 1.0 {
                    let t = (1.0 - d2).sqrt();
                    absorb[[y, x]] += a * t;
                    phase[[y, x]] += p * t;
                }
            }
        }
    }
    (blur(&absorb, 0.8), blur(&phase, 0.8))
}

/// A Siemens star with rings; the seed turns it and sets its spoke count.
fn star(size: usize, rng: &mut ChaCha8Rng) -> (Array2<f32>, Array2<f32>) {
    let spokes = rng.gen_range(12..28) as f32;
    let turn = rng.gen_range(0.0..2.0 * PI);
    let ring = rng.gen_range(10.0..20.0);
    let c = size as f32 / 2.0;
    let rmax = size as f32 * 0.48;
    let mut absorb = Array2::zeros((size, size));
    let mut phase = Array2::zeros((size, size));
    for y in 0..size {
        for x in 0..size {
            let (dy, dx) = (y as f32 - c, x as f32 - c);
            let r = (dx * dx + dy * dy).sqrt();
            if r > rmax {
                continue;
            }
            let th = dy.atan2(dx) + turn;
            let spoke = if (spokes * th).sin() > 0.0 { 1.0 } else { 0.0 };
            let rings = if (r / ring).fract() < 0.15 { 1.0 } else { 0.0 };
            let t: f32 = f32::max(spoke, rings);
            absorb[[y, x]] = 0.7 * t;
            phase[[y, x]] = 0.9 * t - 0.3 * (1.0 - t) * (r / rmax);
        }
    }
    (blur(&absorb, 0.7), blur(&phase, 0.7))
}

/// White noise filtered by a Gaussian of `sigma` pixels, scaled to [−1, 1].
fn smooth_field(size: usize, sigma: f32, rng: &mut ChaCha8Rng) -> Array2<f32> {
    let normal = Normal::new(0.0f32, 1.0).expect("a valid normal");
    let noise = Array2::from_shape_fn((size, size), |_| normal.sample(rng));
    let f = blur(&noise, sigma);
    let max = f.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    f.mapv(|v| v / max)
}

/// A separable Gaussian blur (edges clamp).
pub(crate) fn blur(a: &Array2<f32>, sigma: f32) -> Array2<f32> {
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / sum).collect();
    let (rows, cols) = a.dim();
    let at = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    let mut tmp = Array2::<f32>::zeros((rows, cols));
    for r in 0..rows {
        for c in 0..cols {
            tmp[[r, c]] = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * a[[r, at(c as isize + k as isize - radius, cols)]])
                .sum();
        }
    }
    let mut out = Array2::<f32>::zeros((rows, cols));
    for r in 0..rows {
        for c in 0..cols {
            out[[r, c]] = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * tmp[[at(r as isize + k as isize - radius, rows), c]])
                .sum();
        }
    }
    out
}

/// The illumination.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProbeSpec {
    /// A focused beam seen out of focus: a circular pupil of `radius`
    /// pixels of the N×N spectrum with a quadratic (defocus) phase of
    /// `defocus` radians at its edge. The beam's radius in the object is
    /// about `defocus · N / (π · radius)` pixels.
    Pupil {
        /// Pupil radius, pixels of the spectrum.
        radius: f32,
        /// Defocus phase at the pupil's edge, radians.
        defocus: f32,
    },
    /// A Gaussian beam of `sigma` pixels, flat phase.
    Gaussian {
        /// Standard deviation of the amplitude, pixels.
        sigma: f32,
    },
}

impl ProbeSpec {
    /// The default beam for N×N frames: a defocused pupil whose beam
    /// covers a bit less than half the window (radius ≈ 0.22·N).
    pub fn default_for(n: usize) -> ProbeSpec {
        let radius = n as f32 / 5.0;
        ProbeSpec::Pupil {
            radius,
            defocus: 0.22 * n as f32 * PI * radius / n as f32,
        }
    }

    /// The beam's radius in the object, pixels (where most of its energy
    /// falls; the overlap of a scan is computed with it).
    pub fn beam_radius(&self, n: usize) -> f32 {
        match *self {
            ProbeSpec::Pupil { radius, defocus } => {
                (defocus * n as f32 / (PI * radius)).max(n as f32 / (2.0 * radius))
            }
            ProbeSpec::Gaussian { sigma } => 2.0 * sigma,
        }
    }
}

/// The N×N probe, centred, with `Σ|P|² = 1`.
pub fn probe(spec: &ProbeSpec, n: usize) -> Result<Array2<C32>> {
    if n < 8 || !n.is_power_of_two() {
        return Err(PtychoError::Invalid(format!(
            "frame side {n}: a power of two ≥ 8"
        )));
    }
    let c = (n / 2) as f32;
    let mut p = match *spec {
        ProbeSpec::Pupil { radius, defocus } => {
            if !(radius > 1.0 && radius < c && defocus.is_finite()) {
                return Err(PtychoError::Invalid(format!(
                    "pupil radius {radius} (1 < radius < {c}) or defocus {defocus}"
                )));
            }
            // The pupil in a centred spectrum, with a soft edge.
            let pupil = Array2::from_shape_fn((n, n), |(y, x)| {
                let k = ((y as f32 - c).powi(2) + (x as f32 - c).powi(2)).sqrt();
                let edge = (0.5 - (k - radius)).clamp(0.0, 1.0);
                C32::from_polar(edge, defocus * (k / radius).powi(2))
            });
            let mut spectrum = ifftshift(&pupil);
            Fft2::new(n).inverse(&mut spectrum);
            fftshift(&spectrum)
        }
        ProbeSpec::Gaussian { sigma } => {
            if !(sigma > 0.5 && sigma < c) {
                return Err(PtychoError::Invalid(format!(
                    "gaussian sigma {sigma}: 0.5 < sigma < {c}"
                )));
            }
            Array2::from_shape_fn((n, n), |(y, x)| {
                let d2 = (y as f32 - c).powi(2) + (x as f32 - c).powi(2);
                C32::new((-d2 / (2.0 * sigma * sigma)).exp(), 0.0)
            })
        }
    };
    let e: f32 = p.iter().map(|v| v.norm_sqr()).sum();
    p.mapv_inplace(|v| v / e.sqrt());
    Ok(p)
}

/// How the positions are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScanKind {
    /// A square grid, row by row.
    Raster,
    /// A Fermat spiral (golden-angle steps, even density), the usual
    /// choice against the raster grid's periodic artefacts.
    Spiral,
}

impl std::str::FromStr for ScanKind {
    type Err = PtychoError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "raster" => Ok(ScanKind::Raster),
            "spiral" => Ok(ScanKind::Spiral),
            _ => Err(PtychoError::Invalid(format!(
                "scan kind {s:?}: raster or spiral"
            ))),
        }
    }
}

/// `count` scan positions `(y, x)` centred at the origin, `step` pixels
/// apart on average, each moved by a Gaussian jitter of `jitter` pixels.
pub fn scan_offsets(
    kind: ScanKind,
    count: usize,
    step: f32,
    jitter: f32,
    rng: &mut impl Rng,
) -> Vec<(f32, f32)> {
    let mut pts: Vec<(f32, f32)> = match kind {
        ScanKind::Raster => {
            let side = (count as f32).sqrt().ceil() as usize;
            (0..count)
                .map(|i| {
                    let (r, c) = ((i / side) as f32, (i % side) as f32);
                    let h = (side as f32 - 1.0) / 2.0;
                    ((r - h) * step, (c - h) * step)
                })
                .collect()
        }
        ScanKind::Spiral => {
            // Each point owns an area step²: r = step·√(n/π).
            let golden = PI * (3.0 - 5f32.sqrt());
            (0..count)
                .map(|i| {
                    let r = step * ((i as f32 + 0.5) / PI).sqrt();
                    let th = i as f32 * golden;
                    (r * th.sin(), r * th.cos())
                })
                .collect()
        }
    };
    if jitter > 0.0 {
        let normal = Normal::new(0.0f32, jitter).expect("a valid jitter");
        for p in &mut pts {
            p.0 += normal.sample(rng);
            p.1 += normal.sample(rng);
        }
    }
    pts
}

/// The linear overlap of neighbouring illuminations, `1 − step / (2 r)`
/// for a beam of radius `r` (0.6 and more is the usual requirement).
pub fn overlap(step: f32, beam_radius: f32) -> f32 {
    1.0 - step / (2.0 * beam_radius)
}

/// Everything a simulated scan is made from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// The scan's name, carried by every frame.
    pub scan_id: String,
    /// What the object is made of.
    pub kind: ObjectKind,
    /// Seed of the object, the jitter and the noise.
    pub seed: u64,
    /// Frame side N (a power of two).
    pub n: usize,
    /// The beam.
    pub probe: ProbeSpec,
    /// The scan's layout.
    pub scan: ScanKind,
    /// Number of positions.
    pub positions: usize,
    /// Linear overlap of neighbouring positions (sets the step).
    pub overlap: f32,
    /// Position jitter, pixels (standard deviation).
    pub jitter: f32,
    /// Photons in a frame of a flat object.
    pub dose: f64,
    /// Poisson noise (otherwise intensities are rounded).
    pub noise: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            scan_id: "scan-0".into(),
            kind: ObjectKind::Particles,
            seed: 0,
            n: 64,
            probe: ProbeSpec::default_for(64),
            scan: ScanKind::Spiral,
            positions: 400,
            overlap: 0.7,
            jitter: 0.0,
            dose: 1e6,
            noise: false,
        }
    }
}

/// What travels with a frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameMeta {
    /// The scan it belongs to.
    pub scan_id: String,
    /// Its position's index in the scan.
    pub index: u32,
    /// Column of the window's top-left pixel in the object.
    pub x: u32,
    /// Row of the window's top-left pixel in the object.
    pub y: u32,
    /// Photons in a frame of a flat object.
    pub dose: f64,
}

/// A simulated scan: frames, their metadata and what made them.
#[derive(Clone, Debug)]
pub struct Scan {
    /// The configuration.
    pub config: SimConfig,
    /// The true object (the ground truth for metrics).
    pub object: Array2<C32>,
    /// The true probe (`Σ|P|² = 1`).
    pub probe: Array2<C32>,
    /// Frames, N×N, zero frequency at the centre.
    pub frames: Vec<Array2<u16>>,
    /// One per frame.
    pub meta: Vec<FrameMeta>,
}

impl Scan {
    /// The frames' side N.
    pub fn n(&self) -> usize {
        self.config.n
    }
}

/// Simulates a scan: object, probe, positions and frames.
pub fn simulate(cfg: &SimConfig) -> Result<Scan> {
    let (offsets, size) = layout(cfg)?;
    simulate_on(cfg, object(cfg.kind, size, cfg.seed), &offsets)
}

/// Simulates a scan of a given object (at least [`object_size`] on each
/// side); `cfg.kind` only names it.
pub fn simulate_object(cfg: &SimConfig, object: Array2<C32>) -> Result<Scan> {
    let (offsets, size) = layout(cfg)?;
    if object.nrows() < size || object.ncols() < size {
        return Err(PtychoError::Invalid(format!(
            "the object is {:?}; this scan needs {size}×{size}",
            object.dim()
        )));
    }
    simulate_on(cfg, object, &offsets)
}

/// The side of the object a scan of `cfg` needs.
pub fn object_size(cfg: &SimConfig) -> Result<usize> {
    Ok(layout(cfg)?.1)
}

const MARGIN: usize = 4;

/// Validates `cfg`; the positions' top-left corners and the object side.
fn layout(cfg: &SimConfig) -> Result<(Vec<(usize, usize)>, usize)> {
    if cfg.positions == 0 {
        return Err(PtychoError::Invalid("a scan needs ≥ 1 position".into()));
    }
    if !(0.0..0.95).contains(&cfg.overlap) {
        return Err(PtychoError::Invalid(format!(
            "overlap {}: in [0, 0.95)",
            cfg.overlap
        )));
    }
    if !(cfg.dose > 0.0 && cfg.dose.is_finite()) {
        return Err(PtychoError::Invalid(format!("dose {}: > 0", cfg.dose)));
    }
    if !(cfg.jitter >= 0.0 && cfg.jitter.is_finite()) {
        return Err(PtychoError::Invalid(format!("jitter {}: ≥ 0", cfg.jitter)));
    }
    let n = cfg.n;
    // Validates n and the probe's parameters.
    probe(&cfg.probe, n)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5ca9);
    let step = 2.0 * cfg.probe.beam_radius(n) * (1.0 - cfg.overlap);
    let offsets = scan_offsets(cfg.scan, cfg.positions, step, cfg.jitter, &mut rng);
    let (min_y, max_y, min_x, max_x) = offsets.iter().fold(
        (f32::MAX, f32::MIN, f32::MAX, f32::MIN),
        |(a, b, c, d), &(y, x)| (a.min(y), b.max(y), c.min(x), d.max(x)),
    );
    let size = ((max_y - min_y).max(max_x - min_x).ceil() as usize) + n + 2 * MARGIN;
    let corners = offsets
        .iter()
        .map(|&(y, x)| {
            (
                (y - min_y).round() as usize + MARGIN,
                (x - min_x).round() as usize + MARGIN,
            )
        })
        .collect();
    Ok((corners, size))
}

/// The noiseless far-field intensity of `probe · patch`, in photons for a
/// frame of `dose`, zero frequency at the centre.
pub fn far_field(
    fft: &mut Fft2,
    probe: &Array2<C32>,
    patch: ndarray::ArrayView2<C32>,
    dose: f64,
) -> Array2<f64> {
    let mut wave = probe * &patch;
    fft.forward(&mut wave);
    fftshift(&wave.mapv(|v| v.norm_sqr() as f64 * dose))
}

fn simulate_on(cfg: &SimConfig, object: Array2<C32>, corners: &[(usize, usize)]) -> Result<Scan> {
    let n = cfg.n;
    let probe = probe(&cfg.probe, n)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x9015e);
    let mut fft = Fft2::new(n);
    let mut frames = Vec::with_capacity(corners.len());
    let mut meta = Vec::with_capacity(corners.len());
    for (i, &(py, px)) in corners.iter().enumerate() {
        let patch = object.slice(s![py..py + n, px..px + n]);
        let intensity = far_field(&mut fft, &probe, patch, cfg.dose);
        let frame = intensity.mapv(|i| {
            let counts = if cfg.noise && i > 0.0 {
                Poisson::new(i).map(|p| p.sample(&mut rng)).unwrap_or(i)
            } else {
                i.round()
            };
            counts.min(SATURATION as f64) as u16
        });
        frames.push(frame);
        meta.push(FrameMeta {
            scan_id: cfg.scan_id.clone(),
            index: i as u32,
            x: px as u32,
            y: py as u32,
            dose: cfg.dose,
        });
    }
    Ok(Scan {
        config: cfg.clone(),
        object,
        probe,
        frames,
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_seeded_and_in_range_for_every_kind() {
        for kind in ObjectKind::ALL {
            let a = object(kind, 96, 3);
            assert_eq!(a, object(kind, 96, 3), "{kind:?} is not deterministic");
            assert_ne!(a, object(kind, 96, 4), "{kind:?} ignores its seed");
            for v in a.iter() {
                assert!(
                    (0.499..=1.001).contains(&v.norm()),
                    "{kind:?} amplitude {}",
                    v.norm()
                );
                assert!(
                    v.arg().abs() <= FRAC_PI_2 + 1e-4,
                    "{kind:?} phase {}",
                    v.arg()
                );
            }
            let spread = a
                .iter()
                .map(|v| v.arg())
                .fold((f32::MAX, f32::MIN), |(lo, hi), p| (lo.min(p), hi.max(p)));
            assert!(
                spread.1 - spread.0 > 0.5,
                "{kind:?} has almost no phase contrast: {spread:?}"
            );
        }
    }

    #[test]
    fn probes_are_normalised_and_bad_parameters_are_refused() {
        for spec in [
            ProbeSpec::default_for(64),
            ProbeSpec::Gaussian { sigma: 8.0 },
        ] {
            let p = probe(&spec, 64).unwrap();
            let e: f32 = p.iter().map(|v| v.norm_sqr()).sum();
            assert!((e - 1.0).abs() < 1e-4);
        }
        assert!(probe(&ProbeSpec::default_for(64), 48).is_err());
        assert!(probe(
            &ProbeSpec::Pupil {
                radius: 40.0,
                defocus: 1.0
            },
            64
        )
        .is_err());
        assert!(probe(&ProbeSpec::Gaussian { sigma: f32::NAN }, 64).is_err());
    }

    #[test]
    fn a_flat_objects_frames_are_the_probes_far_field() {
        let cfg = SimConfig {
            positions: 5,
            n: 32,
            probe: ProbeSpec::default_for(32),
            dose: 1e5,
            ..Default::default()
        };
        let size = object_size(&cfg).unwrap();
        let flat = Array2::from_elem((size, size), C32::new(1.0, 0.0));
        let scan = simulate_object(&cfg, flat).unwrap();
        let mut spectrum = scan.probe.clone();
        Fft2::new(32).forward(&mut spectrum);
        let expected =
            fftshift(&spectrum.mapv(|v| (v.norm_sqr() as f64 * cfg.dose).round() as u16));
        for f in &scan.frames {
            assert_eq!(f, &expected);
        }
        // The far field of a pupil probe is the pupil: a bright disc of its
        // radius at the centre, holding the dose.
        let ProbeSpec::Pupil { radius, .. } = cfg.probe else {
            unreachable!()
        };
        let (mut inside, mut total) = (0f64, 0f64);
        for ((y, x), &v) in expected.indexed_iter() {
            let k = ((y as f32 - 16.0).powi(2) + (x as f32 - 16.0).powi(2)).sqrt();
            total += v as f64;
            if k <= radius + 1.0 {
                inside += v as f64;
            }
        }
        assert!(
            (total - cfg.dose).abs() / cfg.dose < 0.01,
            "{total} photons"
        );
        assert!(
            inside / total > 0.99,
            "{inside} of {total} inside the pupil"
        );
        // An object too small for the scan is refused.
        assert!(simulate_object(&cfg, Array2::from_elem((10, 10), C32::new(1.0, 0.0))).is_err());
    }

    #[test]
    fn scans_overlap_as_asked_and_stay_inside_the_object() {
        for kind in [ScanKind::Raster, ScanKind::Spiral] {
            let cfg = SimConfig {
                scan: kind,
                positions: 50,
                n: 32,
                probe: ProbeSpec::default_for(32),
                jitter: 1.0,
                ..Default::default()
            };
            let scan = simulate(&cfg).unwrap();
            assert_eq!(scan.frames.len(), 50);
            let size = scan.object.nrows();
            for m in &scan.meta {
                assert!(m.x as usize + 32 <= size && m.y as usize + 32 <= size);
            }
            assert!(
                overlap(
                    2.0 * cfg.probe.beam_radius(32) * 0.3,
                    cfg.probe.beam_radius(32)
                ) >= 0.6
            );
        }
    }

    #[test]
    fn noise_and_saturation_shape_the_counts() {
        let cfg = SimConfig {
            positions: 4,
            n: 32,
            probe: ProbeSpec::default_for(32),
            dose: 1e8,
            noise: true,
            ..Default::default()
        };
        let scan = simulate(&cfg).unwrap();
        assert!(scan
            .frames
            .iter()
            .flat_map(|f| f.iter())
            .any(|&v| v == SATURATION));
        assert!(scan
            .frames
            .iter()
            .flat_map(|f| f.iter())
            .all(|&v| v <= SATURATION));
        let low = SimConfig { dose: 1e3, ..cfg };
        let a = simulate(&low).unwrap();
        let b = simulate(&low).unwrap();
        assert_eq!(a.frames, b.frames, "noise is seeded");
    }
}
