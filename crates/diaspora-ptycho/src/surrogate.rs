//! A PtychoNN-like surrogate (Cherukara et al. 2020): a small convolutional
//! network on candle-nn that maps one diffraction frame to the amplitude
//! and phase of the N×N object patch the probe illuminated, so a scan can
//! be imaged at the rate frames arrive instead of after an iterative
//! reconstruction.
//!
//! **Input.** A frame's counts, optionally binned (the sum of `bin`×`bin`
//! pixels), as `ln(1 + counts) / ln(1 + 4095·bin²)` — for `bin` = 1 that is
//! `ln(1 + counts) / ln(4096)`, so a saturated 12-bit pixel reads 1 — in
//! two channels of `(n / bin)²` pixels: the frame and its point reflection
//! ([`preprocess`]; a defocused probe's bright field holds a turned-over
//! shadow image of the patch, which local convolutions cannot turn back).
//! The network sees it standardised: minus the per-pixel mean, over the
//! root-mean-square deviation, of the first [`NORM_SAMPLES`] training
//! samples (kept in the checkpoint) — without that the bright field, the
//! same in every frame, swamps the few per cent the object changes and
//! training stalls.
//!
//! **Network.** A U-Net: an encoder of three levels (two 3×3 convolutions
//! with ReLU, then a 2×2 max-pool; `channels`, `2·channels`, `4·channels`
//! wide) and two decoders (per level: nearest 2× upsampling, the encoder's
//! features of that level alongside, a 3×3 convolution with ReLU; then a
//! 3×3 convolution to one channel and, with binning, a nearest upsampling
//! to N×N): one predicts the amplitude, `1.2 · sigmoid` (so in
//! [0, [`AMP_MAX`]]), the other the phase, `π · tanh` (in (−π, π)). Weights
//! are drawn from the configuration's seed (He-uniform, zero biases); the
//! output convolutions start at zero, so a new network predicts an empty
//! object (amplitude 1, phase 0) and learns departures from it. The layers
//! are candle's basic operations, not its CPU convolution and pooling
//! (which are wrong in candle 0.9 — see the notes in the source); a test
//! checks every gradient against finite differences.
//!
//! **Training** ([`Trainer`]) is online: samples — a frame and the patch of
//! a reconstruction (or of the truth) at its position ([`samples_from`]) —
//! go into a bounded replay buffer, and each [`Trainer::step`] takes one
//! AdamW step on a seeded random mini-batch from it, on the mean squared
//! (or absolute) error of amplitude plus that of phase, over the patch,
//! optionally weighted pixel by pixel ([`Trainer::set_loss_weight`],
//! usually by the probe's intensity, [`probe_weight`] — the test's held-out
//! scan is learned far more reliably so).
//!
//! **Inference** ([`Surrogate::predict`]) runs frames in batches;
//! [`stitch`] puts the predicted patches together into the scan's image,
//! each pixel the average of the patches covering it weighted by the
//! probe's intensity there.
//!
//! **Checkpoints** are safetensors files ([`Surrogate::save`],
//! [`Surrogate::load`]) whose metadata carries a format tag
//! ([`FORMAT`]), the configuration (JSON), the model's `version`, its
//! `samples_seen`, `steps`, the ids of the scans it was trained on and the
//! samples in its input statistics; a checkpoint of another format, missing
//! or ill-shaped tensors, or a non-finite weight is refused, naming what
//! was wrong.
//!
//! **Devices.** CPU by default; with this crate's `cuda` feature
//! [`default_device`] picks the first GPU. The maths is the same on both.
//!
//! What it does not do: learn the probe or positions (the targets must be
//! registered to the frames' positions), remove a global phase offset (the
//! targets' phase reference is what it learns), unwrap phases, or save the
//! optimiser's state (a trainer resumed from a checkpoint starts AdamW's
//! moments afresh). It is fast on a GPU, not on a CPU: at N = 64 a frame
//! costs milliseconds there. The stitched phase is a plain weighted mean,
//! which is right for phases well inside (−π, π), as the network's are.

use std::collections::{HashMap, VecDeque};
use std::f32::consts::PI;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder, VarMap};
use ndarray::{s, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::sim::{FrameMeta, SATURATION};
use crate::{PtychoError, Result, C32};

/// The format tag a checkpoint's metadata carries under `format`.
pub const FORMAT: &str = "diaspora-ptycho/surrogate/2";
/// The largest predicted amplitude (the amplitude head is `AMP_MAX · sigmoid`).
pub const AMP_MAX: f32 = 1.2;
/// Largest checkpoint file read, bytes.
pub const CHECKPOINT_BYTES_MAX: u64 = 256 << 20;
/// Largest frame side accepted.
pub const N_MAX: usize = 1024;
/// Largest base width accepted.
pub const CHANNELS_MAX: usize = 256;

/// Encoder levels (each halves the side).
const LEVELS: usize = 3;
/// The input normaliser learns from this many samples, then stays fixed.
pub const NORM_SAMPLES: u64 = 1024;
/// The smallest scale the normaliser divides by.
const NORM_SCALE_MIN: f64 = 0.01;

/// How the network is shaped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SurrogateConfig {
    /// Frame side N (a power of two, `n / bin` ≥ 8); the patches are N×N.
    pub n: usize,
    /// Input binning: 1 (none) or 2 (the sum of 2×2 pixels).
    pub bin: usize,
    /// Base width: the encoder's first level has this many channels, the
    /// next ones twice and four times as many.
    pub channels: usize,
    /// Seed of the weight initialisation.
    pub seed: u64,
}

impl Default for SurrogateConfig {
    fn default() -> Self {
        SurrogateConfig {
            n: 64,
            bin: 2,
            channels: 8,
            seed: 0,
        }
    }
}

impl SurrogateConfig {
    /// Checks every field, naming the one at fault.
    pub fn validate(&self) -> Result<()> {
        if !self.n.is_power_of_two() || self.n > N_MAX {
            return Err(PtychoError::Invalid(format!(
                "surrogate n = {}: a power of two ≤ {N_MAX}",
                self.n
            )));
        }
        if self.bin != 1 && self.bin != 2 {
            return Err(PtychoError::Invalid(format!(
                "surrogate bin = {}: 1 or 2",
                self.bin
            )));
        }
        if self.n / self.bin < 1 << LEVELS {
            return Err(PtychoError::Invalid(format!(
                "surrogate n = {} with bin = {}: the binned side must be ≥ {}",
                self.n,
                self.bin,
                1 << LEVELS
            )));
        }
        if !(1..=CHANNELS_MAX).contains(&self.channels) {
            return Err(PtychoError::Invalid(format!(
                "surrogate channels = {}: 1..={CHANNELS_MAX}",
                self.channels
            )));
        }
        Ok(())
    }

    /// The side of the network's input, `n / bin`.
    pub fn input_side(&self) -> usize {
        self.n / self.bin
    }
}

/// The device the surrogate runs on by default: the first CUDA GPU when
/// this crate is built with its `cuda` feature and one is available,
/// otherwise the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if candle_core::utils::cuda_is_available() {
            if let Ok(d) = Device::new_cuda(0) {
                return d;
            }
        }
    }
    Device::Cpu
}

/// One training example: a frame and the N×N patch of the object (from a
/// reconstruction, or the truth) at the frame's position.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The frame, N×N counts, zero frequency at the centre.
    pub frame: Array2<u16>,
    /// The patch's amplitude, N×N.
    pub amplitude: Array2<f32>,
    /// The patch's phase, N×N, radians.
    pub phase: Array2<f32>,
}

/// Cuts the N×N patch of `object` at each frame's position into a
/// [`Sample`]. Errors, naming the frame and its position, when a frame is
/// not N×N or a patch falls outside the object, and when the counts of
/// frames and metadata differ.
pub fn samples_from(
    scan_frames: &[Array2<u16>],
    metas: &[FrameMeta],
    object: &Array2<C32>,
    n: usize,
) -> Result<Vec<Sample>> {
    if scan_frames.len() != metas.len() {
        return Err(PtychoError::Invalid(format!(
            "{} frames but {} metadata records",
            scan_frames.len(),
            metas.len()
        )));
    }
    let (rows, cols) = object.dim();
    scan_frames
        .iter()
        .zip(metas)
        .map(|(frame, m)| {
            if frame.dim() != (n, n) {
                return Err(PtychoError::Invalid(format!(
                    "frame {} of scan {:?} is {}×{}; expected {n}×{n}",
                    m.index,
                    m.scan_id,
                    frame.nrows(),
                    frame.ncols()
                )));
            }
            let (y, x) = (m.y as usize, m.x as usize);
            if y + n > rows || x + n > cols {
                return Err(PtychoError::Invalid(format!(
                    "frame {} of scan {:?} at (x, y) = ({x}, {y}): its {n}×{n} patch falls \
                     outside the {rows}×{cols} object",
                    m.index, m.scan_id
                )));
            }
            let patch = object.slice(s![y..y + n, x..x + n]);
            Ok(Sample {
                frame: frame.clone(),
                amplitude: patch.mapv(|v| v.norm()),
                phase: patch.mapv(|v| v.arg()),
            })
        })
        .collect()
}

/// Input channels: the frame and its point reflection.
pub const INPUT_CHANNELS: usize = 2;

/// The network's input for `frames` (each N×N, checked): a
/// `(frames, 2, n / bin, n / bin)` f32 tensor of
/// `ln(1 + binned counts) / ln(1 + 4095·bin²)`, channel 0 the frame as it
/// is and channel 1 its point reflection (rows and columns reversed).
///
/// Why the reflection: with a defocused probe the bright field of a frame
/// holds a shadow image of the illuminated patch, point-reflected (or
/// upright, with the other sign of defocus). Convolutions are local and
/// cannot turn an image over; given both orientations the network reads
/// whichever matches at the same place as the patch it predicts.
pub fn preprocess(
    frames: &[&Array2<u16>],
    config: &SurrogateConfig,
    device: &Device,
) -> Result<Tensor> {
    let (n, bin) = (config.n, config.bin);
    let side = n / bin;
    let plane = side * side;
    let scale = 1.0 / (1.0 + SATURATION as f32 * (bin * bin) as f32).ln();
    let mut data = vec![0f32; frames.len() * INPUT_CHANNELS * plane];
    for (i, f) in frames.iter().enumerate() {
        check_frame(i, f, n)?;
        let (upright, reflected) =
            data[i * INPUT_CHANNELS * plane..(i + 1) * INPUT_CHANNELS * plane].split_at_mut(plane);
        for r in 0..side {
            for c in 0..side {
                let mut sum = 0u32;
                for dy in 0..bin {
                    for dx in 0..bin {
                        sum += f[[r * bin + dy, c * bin + dx]] as u32;
                    }
                }
                let v = (1.0 + sum as f32).ln() * scale;
                upright[r * side + c] = v;
                reflected[(side - 1 - r) * side + (side - 1 - c)] = v;
            }
        }
    }
    Ok(Tensor::from_vec(
        data,
        (frames.len(), INPUT_CHANNELS, side, side),
        device,
    )?)
}

fn check_frame(i: usize, f: &Array2<u16>, n: usize) -> Result<()> {
    if f.dim() != (n, n) {
        return Err(PtychoError::Invalid(format!(
            "frame {i} is {}×{}; this surrogate takes {n}×{n} frames",
            f.nrows(),
            f.ncols()
        )));
    }
    Ok(())
}

// The network runs channels-last, `(batch, height, width, channels)`, and
// is made of candle's basic operations (pads, views, one matrix product
// per convolution, reshapes, maxima) rather than its CPU `conv2d`,
// `max_pool2d` and `upsample_nearest2d`: in candle 0.9 the first computes
// garbage for a `(b, c, h, w)` input with `c == h == w` (candle issue
// #3404) and backpropagates through a slow direct loop, the second's
// gradient is a quarter of what it should be, and the third's backward
// pass overwrites the gradient its input gathered from other uses (candle
// PR #3507) — the bottleneck feeds both decoders. A unit test checks every
// gradient against finite differences.

/// A 3×3 convolution with padding 1 of a channels-last `(b, h, w, c)`
/// tensor by `conv`'s weights `(c_out, c, 3, 3)` and bias: the nine
/// shifted views side by side, `(b·h·w, 9·c)`, times the weights as a
/// `(9·c, c_out)` matrix — one matrix product.
fn conv3(conv: &Conv2d, x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let c_out = conv.weight().dim(0)?;
    let padded = x.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
    let mut views = Vec::with_capacity(9);
    for dy in 0..3 {
        for dx in 0..3 {
            views.push(padded.narrow(1, dy, h)?.narrow(2, dx, w)?.contiguous()?);
        }
    }
    // Columns ordered (dy, dx, channel), as the weights permuted to
    // (c_out, dy, dx, c).
    let columns = Tensor::stack(&views, 3)?.reshape((b * h * w, 9 * c))?;
    let weights = conv
        .weight()
        .permute((0, 2, 3, 1))?
        .reshape((c_out, 9 * c))?;
    let mut y = columns.matmul(&weights.t()?)?;
    if let Some(bias) = conv.bias() {
        y = y.broadcast_add(bias)?;
    }
    y.reshape((b, h, w, c_out))
}

/// 2×2 max-pooling of a channels-last `(b, h, w, c)` tensor.
///
/// Pairwise `maximum`, not a max reduction: candle's reduction gives the
/// whole gradient to every tied element, and ties are common here — a
/// dark region of a diffraction pattern is constant after the log, so
/// neighbouring activations are exactly equal and their gradient would
/// be counted twice or four times. `maximum` splits a tie's gradient.
fn max_pool2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let x = x.reshape((b, h / 2, 2, w / 2, 2, c))?;
    let at = |dy: usize, dx: usize| x.narrow(2, dy, 1)?.narrow(4, dx, 1);
    at(0, 0)?
        .maximum(&at(0, 1)?)?
        .maximum(&at(1, 0)?.maximum(&at(1, 1)?)?)?
        .reshape((b, h / 2, w / 2, c))
}

/// Nearest-neighbour upsampling by `k` of a channels-last `(b, h, w, c)`
/// tensor.
fn upsample(x: &Tensor, k: usize) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    x.reshape((b, h, 1, w, 1, c))?
        .broadcast_as((b, h, k, w, k, c))?
        .reshape((b, h * k, w * k, c))
}

/// One decoder: upsampling stages back to the input's side, each
/// reading the encoder's features at its side (U-Net skips), the output
/// convolution, then (with binning) a nearest-neighbour upsampling to N —
/// no convolution runs at the full N×N side, where it would cost most.
#[derive(Debug)]
struct Decoder {
    stages: Vec<Conv2d>,
    out: Conv2d,
    bin: usize,
}

impl Decoder {
    /// `skips[l]`: the encoder's level-`l` features (before pooling);
    /// returns `(b, n, n, 1)`.
    fn forward(&self, bottom: &Tensor, skips: &[Tensor]) -> candle_core::Result<Tensor> {
        let mut h = bottom.clone();
        for (s, conv) in self.stages.iter().enumerate() {
            h = upsample(&h, 2)?;
            h = Tensor::cat(&[&h, &skips[LEVELS - 1 - s]], 3)?;
            h = conv3(conv, &h)?.relu()?;
        }
        let h = conv3(&self.out, &h)?;
        if self.bin > 1 {
            upsample(&h, self.bin)
        } else {
            Ok(h)
        }
    }
}

/// The encoder and the two decoders.
#[derive(Debug)]
struct Net {
    encoder: Vec<Conv2d>,
    amplitude: Decoder,
    phase: Decoder,
}

/// The weights of a 3×3 convolution, `(c_out, c_in, 3, 3)` and `(c_out)`.
fn conv3_weights(cin: usize, cout: usize, vb: VarBuilder) -> candle_core::Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    candle_nn::conv2d(cin, cout, 3, cfg, vb)
}

impl Net {
    fn new(config: &SurrogateConfig, vb: VarBuilder) -> candle_core::Result<Net> {
        let c = config.channels;
        let mut encoder = Vec::with_capacity(2 * LEVELS);
        let mut cin = INPUT_CHANNELS;
        for level in 0..LEVELS {
            let cout = c << level;
            encoder.push(conv3_weights(cin, cout, vb.pp(format!("enc{level}a")))?);
            encoder.push(conv3_weights(cout, cout, vb.pp(format!("enc{level}b")))?);
            cin = cout;
        }
        // One upsampling stage per pool, back to the input's side; stage s
        // also reads the encoder's level LEVELS − 1 − s; the binning is
        // undone after the output convolution.
        let decoder = |name: &str| -> candle_core::Result<Decoder> {
            let vb = vb.pp(name);
            let mut cin = c << (LEVELS - 1);
            let mut convs = Vec::with_capacity(LEVELS);
            for s in 0..LEVELS {
                let skip = c << (LEVELS - 1 - s);
                let cout = if s + 2 <= LEVELS {
                    c << (LEVELS - 2 - s)
                } else {
                    c
                };
                convs.push(conv3_weights(cin + skip, cout, vb.pp(format!("up{s}")))?);
                cin = cout;
            }
            let out = conv3_weights(cin, 1, vb.pp("out"))?;
            Ok(Decoder {
                stages: convs,
                out,
                bin: config.bin,
            })
        };
        Ok(Net {
            encoder,
            amplitude: decoder("amp")?,
            phase: decoder("phase")?,
        })
    }

    /// `(amplitude, phase)`, each `(batch, 1, n, n)`, of the normalised
    /// input `(batch, INPUT_CHANNELS, side, side)`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut h = x.permute((0, 2, 3, 1))?;
        let mut skips = Vec::with_capacity(LEVELS);
        for pair in self.encoder.chunks(2) {
            h = conv3(&pair[0], &h)?.relu()?;
            h = conv3(&pair[1], &h)?.relu()?;
            skips.push(h.clone());
            h = max_pool2(&h)?;
        }
        // (b, n, n, 1) and (b, 1, n, n) share their layout.
        let head = |d: &Decoder| -> candle_core::Result<Tensor> {
            let y = d.forward(&h, &skips)?;
            let (b, n, _, _) = y.dims4()?;
            y.reshape((b, 1, n, n))
        };
        let amp = (candle_nn::ops::sigmoid(&head(&self.amplitude)?)? * AMP_MAX as f64)?;
        let phase = (head(&self.phase)?.tanh()? * PI as f64)?;
        Ok((amp, phase))
    }
}

/// The surrogate: the network, its weights, and what it has been trained on.
pub struct Surrogate {
    config: SurrogateConfig,
    device: Device,
    varmap: VarMap,
    net: Net,
    version: u64,
    samples_seen: u64,
    steps: u64,
    scan_ids: Vec<String>,
    norm: Normaliser,
}

/// Per-pixel statistics of the network's input over the first
/// [`NORM_SAMPLES`] training samples: the input is `(x − mean) / scale`,
/// `scale` the root of the mean per-pixel variance (at least
/// `NORM_SCALE_MIN`). Without it the bright field, the same in every frame,
/// dwarfs the few-per-cent changes the object makes, and gradient descent
/// crawls.
#[derive(Clone, Debug)]
struct Normaliser {
    count: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    /// `mean` as a `(1, channels, side, side)` tensor on the device.
    mean_t: Tensor,
    inv_scale: f64,
}

impl Normaliser {
    fn new(config: &SurrogateConfig, device: &Device) -> Result<Normaliser> {
        let len = INPUT_CHANNELS * config.input_side().pow(2);
        Normaliser::from_parts(config, device, 0, vec![0.0; len], vec![0.0; len])
    }

    fn from_parts(
        config: &SurrogateConfig,
        device: &Device,
        count: u64,
        mean: Vec<f64>,
        m2: Vec<f64>,
    ) -> Result<Normaliser> {
        let side = config.input_side();
        let mean32: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
        let mean_t = Tensor::from_vec(mean32, (1, INPUT_CHANNELS, side, side), device)?;
        let inv_scale = if count == 0 {
            1.0
        } else {
            let var = m2.iter().sum::<f64>() / (count as f64 * m2.len() as f64);
            1.0 / var.sqrt().max(NORM_SCALE_MIN)
        };
        Ok(Normaliser {
            count,
            mean,
            m2,
            mean_t,
            inv_scale,
        })
    }

    /// Takes a sample's input (Welford) while it is still learning.
    fn observe(&mut self, x: &[f32], config: &SurrogateConfig, device: &Device) -> Result<()> {
        if self.count >= NORM_SAMPLES {
            return Ok(());
        }
        self.count += 1;
        let k = self.count as f64;
        for ((m, m2), &v) in self.mean.iter_mut().zip(&mut self.m2).zip(x) {
            let d = v as f64 - *m;
            *m += d / k;
            *m2 += d * (v as f64 - *m);
        }
        let (mean, m2) = (std::mem::take(&mut self.mean), std::mem::take(&mut self.m2));
        *self = Normaliser::from_parts(config, device, self.count, mean, m2)?;
        Ok(())
    }

    fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.broadcast_sub(&self.mean_t)? * self.inv_scale
    }
}

impl std::fmt::Debug for Surrogate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Surrogate")
            .field("config", &self.config)
            .field("device", &self.device)
            .field("version", &self.version)
            .field("samples_seen", &self.samples_seen)
            .field("steps", &self.steps)
            .field("scan_ids", &self.scan_ids)
            .finish_non_exhaustive()
    }
}

impl Surrogate {
    /// A freshly initialised network, weights drawn from `config.seed`.
    pub fn new(config: SurrogateConfig, device: Device) -> Result<Surrogate> {
        config.validate()?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let net = Net::new(&config, vb)?;
        // Deterministic initialisation (candle's CPU generator cannot be
        // seeded): He-uniform weights, zero biases, names sorted so the
        // draw order is fixed. The output convolutions start at zero, the
        // amplitude's bias at 1 (an empty object), the phase's at 0.
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x7e57_2064);
        {
            let vars = varmap.data().lock().expect("varmap lock");
            let mut names: Vec<&String> = vars.keys().collect();
            names.sort();
            for name in names {
                let var = &vars[name];
                let dims = var.dims().to_vec();
                let count = var.elem_count();
                let values: Vec<f32> = if name.ends_with(".bias") {
                    let b = if name == "amp.out.bias" {
                        (1.0 / AMP_MAX / (1.0 - 1.0 / AMP_MAX)).ln()
                    } else {
                        0.0
                    };
                    vec![b; count]
                } else if name.ends_with("out.weight") {
                    // The heads start flat (every prediction the empty
                    // object) and learn departures from it.
                    vec![0.0; count]
                } else {
                    let fan_in: usize = dims[1..].iter().product();
                    let bound = (6.0 / fan_in as f32).sqrt();
                    (0..count).map(|_| rng.gen_range(-bound..bound)).collect()
                };
                var.set(&Tensor::from_vec(values, dims, &device)?)?;
            }
        }
        Ok(Surrogate {
            norm: Normaliser::new(&config, &device)?,
            config,
            device,
            varmap,
            net,
            version: 0,
            samples_seen: 0,
            steps: 0,
            scan_ids: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SurrogateConfig {
        &self.config
    }

    /// The device it runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model's version (set by whoever publishes it; 0 when new).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Sets the model's version.
    pub fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    /// Samples given to its trainers ([`Trainer::push`]) since it was new.
    pub fn samples_seen(&self) -> u64 {
        self.samples_seen
    }

    /// Optimiser steps taken since it was new.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The ids of the scans it was trained on, in the order first noted.
    pub fn scan_ids(&self) -> &[String] {
        &self.scan_ids
    }

    /// Records that it is trained on scan `id` (once per id).
    pub fn note_scan(&mut self, id: &str) {
        if !self.scan_ids.iter().any(|s| s == id) {
            self.scan_ids.push(id.to_string());
        }
    }

    /// The number of trainable weights.
    pub fn parameter_count(&self) -> usize {
        self.varmap.all_vars().iter().map(|v| v.elem_count()).sum()
    }

    /// Amplitude and phase tensors `(batch, 1, n, n)` for N×N frames.
    fn forward_frames(&self, frames: &[&Array2<u16>]) -> Result<(Tensor, Tensor)> {
        let x = preprocess(frames, &self.config, &self.device)?;
        Ok(self.net.forward(&self.norm.apply(&x)?)?)
    }

    /// The predicted `(amplitude, phase)` N×N patches of `frames`, run
    /// through the network `batch` frames at a time. A frame that is not
    /// N×N is refused ([`PtychoError::Invalid`], naming it) before any is
    /// run.
    pub fn predict(
        &self,
        frames: &[Array2<u16>],
        batch: usize,
    ) -> Result<Vec<(Array2<f32>, Array2<f32>)>> {
        if batch == 0 {
            return Err(PtychoError::Invalid("prediction batch size 0".into()));
        }
        let n = self.config.n;
        for (i, f) in frames.iter().enumerate() {
            check_frame(i, f, n)?;
        }
        let mut out = Vec::with_capacity(frames.len());
        for chunk in frames.chunks(batch) {
            let refs: Vec<&Array2<u16>> = chunk.iter().collect();
            let (amp, phase) = self.forward_frames(&refs)?;
            let amp = amp.flatten_all()?.to_vec1::<f32>()?;
            let phase = phase.flatten_all()?.to_vec1::<f32>()?;
            for (a, p) in amp.chunks_exact(n * n).zip(phase.chunks_exact(n * n)) {
                out.push((
                    Array2::from_shape_vec((n, n), a.to_vec()).expect("n×n"),
                    Array2::from_shape_vec((n, n), p.to_vec()).expect("n×n"),
                ));
            }
        }
        Ok(out)
    }

    /// Writes a safetensors checkpoint: the weights, with the format tag,
    /// configuration, version, samples seen, steps and scan ids in its
    /// metadata. Written to a temporary file, synced and renamed, so a
    /// crash leaves the old checkpoint or the new one.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.checkpoint_bytes()?;
        write_atomically(path, &bytes)
    }

    /// The checkpoint [`Surrogate::save`] writes, as bytes.
    pub fn checkpoint_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (name, var) in self.varmap.data().lock().expect("varmap lock").iter() {
            tensors.push((name.clone(), var.as_tensor().to_device(&Device::Cpu)?));
        }
        let side = self.config.input_side();
        for (name, values) in [(NORM_MEAN, &self.norm.mean), (NORM_M2, &self.norm.m2)] {
            let v: Vec<f32> = values.iter().map(|&v| v as f32).collect();
            tensors.push((
                name.to_string(),
                Tensor::from_vec(v, (INPUT_CHANNELS, side, side), &Device::Cpu)?,
            ));
        }
        let metadata: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("config", json(&self.config)),
            ("version", self.version.to_string()),
            ("samples_seen", self.samples_seen.to_string()),
            ("steps", self.steps.to_string()),
            ("scan_ids", json(&self.scan_ids)),
            ("norm_samples", self.norm.count.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::tensor::serialize(tensors, Some(metadata))
            .map_err(|e| PtychoError::Checkpoint(format!("safetensors: {e}")))
    }

    /// Reads a checkpoint written by [`Surrogate::save`] onto `device`.
    pub fn load(path: &Path, device: Device) -> Result<Surrogate> {
        let io = |source| PtychoError::Io {
            context: format!("reading checkpoint {}", path.display()),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > CHECKPOINT_BYTES_MAX {
            return Err(PtychoError::Checkpoint(format!(
                "{} is {len} bytes, over {CHECKPOINT_BYTES_MAX}",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::from_checkpoint_bytes(&bytes, device).map_err(|e| match e {
            PtychoError::Checkpoint(m) => {
                PtychoError::Checkpoint(format!("{}: {m}", path.display()))
            }
            e => e,
        })
    }

    /// Rebuilds a surrogate from checkpoint bytes, checking the format
    /// tag, the metadata, and every tensor's name, type, shape and values
    /// against the configuration it carries.
    pub fn from_checkpoint_bytes(bytes: &[u8], device: Device) -> Result<Surrogate> {
        let bad = PtychoError::Checkpoint;
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let meta = header.metadata().as_ref().ok_or_else(|| {
            bad(format!(
                "no metadata: not a surrogate checkpoint ({FORMAT})"
            ))
        })?;
        let field = |key: &str| -> Result<&String> {
            meta.get(key)
                .ok_or_else(|| bad(format!("metadata has no {key:?}")))
        };
        let format = field("format")?;
        if format != FORMAT {
            return Err(bad(format!(
                "format {format:?}; this build reads {FORMAT:?}"
            )));
        }
        let config: SurrogateConfig = serde_json::from_str(field("config")?)
            .map_err(|e| bad(format!("metadata \"config\": {e}")))?;
        config
            .validate()
            .map_err(|e| bad(format!("metadata \"config\": {e}")))?;
        let number = |key: &str| -> Result<u64> {
            field(key)?
                .parse()
                .map_err(|e| bad(format!("metadata {key:?}: {e}")))
        };
        let version = number("version")?;
        let samples_seen = number("samples_seen")?;
        // Older writers may not record steps.
        let steps = if meta.contains_key("steps") {
            number("steps")?
        } else {
            0
        };
        let scan_ids: Vec<String> = serde_json::from_str(field("scan_ids")?)
            .map_err(|e| bad(format!("metadata \"scan_ids\": {e}")))?;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;

        let norm_samples = number("norm_samples")?;
        if norm_samples > NORM_SAMPLES {
            return Err(bad(format!(
                "metadata \"norm_samples\" = {norm_samples}: at most {NORM_SAMPLES}"
            )));
        }

        // Every tensor: present, F32 of the right shape, finite.
        let read = |name: &str, dims: &[usize]| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .map_err(|_| bad(format!("no tensor {name:?}")))?;
            if t.dtype() != safetensors::Dtype::F32 || t.shape() != dims {
                return Err(bad(format!(
                    "tensor {name:?} is {:?} {:?}; the model needs F32 {dims:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            let values: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(bad(format!(
                    "tensor {name:?} holds a non-finite weight ({v} at element {i})"
                )));
            }
            Ok(values)
        };
        let mut s = Surrogate::new(config, device)?;
        {
            let vars = s.varmap.data().lock().expect("varmap lock");
            let mut names: Vec<&String> = vars.keys().collect();
            names.sort();
            for name in &names {
                let var = &vars[*name];
                let values = read(name, var.dims())?;
                var.set(&Tensor::from_vec(values, var.dims(), s.device())?)?;
            }
            if let Some(extra) = st
                .names()
                .into_iter()
                .find(|n| !vars.contains_key(*n) && *n != NORM_MEAN && *n != NORM_M2)
            {
                return Err(bad(format!(
                    "tensor {extra:?} is not part of this model (another architecture?)"
                )));
            }
        }
        let side = s.config.input_side();
        let dims = [INPUT_CHANNELS, side, side];
        let widen = |v: Vec<f32>| -> Vec<f64> { v.into_iter().map(f64::from).collect() };
        let mean = widen(read(NORM_MEAN, &dims)?);
        let m2 = widen(read(NORM_M2, &dims)?);
        if let Some(i) = m2.iter().position(|&v| v < 0.0) {
            return Err(bad(format!(
                "tensor {NORM_M2:?} holds a negative sum of squares at element {i}"
            )));
        }
        s.norm = Normaliser::from_parts(&s.config, &s.device, norm_samples, mean, m2)?;
        s.version = version;
        s.samples_seen = samples_seen;
        s.steps = steps;
        s.scan_ids = scan_ids;
        Ok(s)
    }
}

/// The checkpoint's tensor of the input normaliser's per-pixel means.
const NORM_MEAN: &str = "norm.mean";
/// The checkpoint's tensor of the input normaliser's per-pixel sums of
/// squared deviations.
const NORM_M2: &str = "norm.m2";

/// A metadata value as JSON.
fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("metadata serialises")
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |source| PtychoError::Io {
        context: format!("writing checkpoint {}", path.display()),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The training loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Mean squared error of amplitude plus that of phase.
    Mse,
    /// Mean absolute error of amplitude plus that of phase.
    L1,
}

/// How a [`Trainer`] trains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerConfig {
    /// Samples the replay buffer holds; the oldest is dropped when full.
    pub capacity: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// The loss.
    pub loss: Loss,
    /// Seed of the mini-batch sampler.
    pub seed: u64,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            capacity: 4096,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            loss: Loss::Mse,
            seed: 0,
        }
    }
}

impl TrainerConfig {
    /// Checks every field, naming the one at fault.
    pub fn validate(&self) -> Result<()> {
        if self.capacity == 0 {
            return Err(PtychoError::Invalid("trainer capacity 0".into()));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.learning_rate < 1.0)
        {
            return Err(PtychoError::Invalid(format!(
                "trainer learning_rate = {}: in (0, 1)",
                self.learning_rate
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(PtychoError::Invalid(format!(
                "trainer weight_decay = {}: ≥ 0",
                self.weight_decay
            )));
        }
        Ok(())
    }
}

/// Online training of a [`Surrogate`]: a bounded replay buffer and AdamW
/// steps on seeded random mini-batches from it.
pub struct Trainer {
    surrogate: Surrogate,
    config: TrainerConfig,
    opt: AdamW,
    buffer: VecDeque<Sample>,
    rng: ChaCha8Rng,
    history: Vec<f32>,
    /// Per-pixel loss weights `(1, 1, n, n)`, summing to n², or `None`.
    weight: Option<Tensor>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("surrogate", &self.surrogate)
            .field("config", &self.config)
            .field("buffered", &self.buffer.len())
            .field("steps", &self.history.len())
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// A trainer of `surrogate` with an empty buffer.
    pub fn new(surrogate: Surrogate, config: TrainerConfig) -> Result<Trainer> {
        config.validate()?;
        let opt = AdamW::new(
            surrogate.varmap.all_vars(),
            ParamsAdamW {
                lr: config.learning_rate,
                weight_decay: config.weight_decay,
                ..ParamsAdamW::default()
            },
        )?;
        Ok(Trainer {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            buffer: VecDeque::with_capacity(config.capacity.min(1 << 14)),
            surrogate,
            config,
            opt,
            history: Vec::new(),
            weight: None,
        })
    }

    /// Weights the loss pixel by pixel (N×N, finite, ≥ 0, not all zero;
    /// scaled here to average 1), or removes the weighting (`None`: every
    /// pixel counts the same). The usual choice is the probe's intensity
    /// `|P|²` ([`probe_weight`]): where the probe does not shine, a frame
    /// says little about the object and the targets there are noise to the
    /// network.
    pub fn set_loss_weight(&mut self, weight: Option<&Array2<f32>>) -> Result<()> {
        let n = self.surrogate.config.n;
        self.weight = match weight {
            None => None,
            Some(w) => {
                if w.dim() != (n, n) {
                    return Err(PtychoError::Invalid(format!(
                        "loss weight is {}×{}; this surrogate predicts {n}×{n}",
                        w.nrows(),
                        w.ncols()
                    )));
                }
                if w.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
                    return Err(PtychoError::Invalid(
                        "loss weights must be finite and ≥ 0".into(),
                    ));
                }
                let sum: f64 = w.iter().map(|&v| v as f64).sum();
                if sum <= 0.0 {
                    return Err(PtychoError::Invalid("loss weights are all zero".into()));
                }
                let scale = (n * n) as f64 / sum;
                let v: Vec<f32> = w.iter().map(|&x| (x as f64 * scale) as f32).collect();
                Some(Tensor::from_vec(v, (1, 1, n, n), &self.surrogate.device)?)
            }
        };
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// The surrogate being trained.
    pub fn surrogate(&self) -> &Surrogate {
        &self.surrogate
    }

    /// The surrogate being trained, to set its version or save it.
    pub fn surrogate_mut(&mut self) -> &mut Surrogate {
        &mut self.surrogate
    }

    /// The trained surrogate.
    pub fn into_surrogate(self) -> Surrogate {
        self.surrogate
    }

    /// Changes the learning rate from the next step on.
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.config.learning_rate = lr;
        self.opt.set_learning_rate(lr);
    }

    /// Takes a sample into the replay buffer (dropping the oldest when it
    /// is full) and counts it in the surrogate's `samples_seen`. A sample
    /// whose arrays are not N×N, or whose targets are not finite, is
    /// refused.
    pub fn push(&mut self, sample: Sample) -> Result<()> {
        let n = self.surrogate.config.n;
        for (what, dim) in [
            ("frame", sample.frame.dim()),
            ("amplitude", sample.amplitude.dim()),
            ("phase", sample.phase.dim()),
        ] {
            if dim != (n, n) {
                return Err(PtychoError::Invalid(format!(
                    "sample {what} is {}×{}; this surrogate takes {n}×{n}",
                    dim.0, dim.1
                )));
            }
        }
        if sample
            .amplitude
            .iter()
            .chain(sample.phase.iter())
            .any(|v| !v.is_finite())
        {
            return Err(PtychoError::Invalid(
                "sample targets hold a non-finite value".into(),
            ));
        }
        if self.surrogate.norm.count < NORM_SAMPLES {
            let s = &mut self.surrogate;
            let x = preprocess(&[&sample.frame], &s.config, &Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            s.norm.observe(&x, &s.config, &s.device)?;
        }
        if self.buffer.len() == self.config.capacity {
            self.buffer.pop_front();
        }
        self.buffer.push_back(sample);
        self.surrogate.samples_seen += 1;
        Ok(())
    }

    /// Records that the samples come from scan `id` (see
    /// [`Surrogate::scan_ids`]).
    pub fn note_scan(&mut self, id: &str) {
        self.surrogate.note_scan(id);
    }

    /// Samples held in the replay buffer.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// The replay buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// The loss of every step taken by this trainer, in order.
    pub fn history(&self) -> &[f32] {
        &self.history
    }

    /// The loss of a batch of samples, as a scalar tensor.
    fn loss(&self, samples: &[&Sample]) -> Result<Tensor> {
        let n = self.surrogate.config.n;
        let dev = &self.surrogate.device;
        let frames: Vec<&Array2<u16>> = samples.iter().map(|s| &s.frame).collect();
        let (amp, phase) = self.surrogate.forward_frames(&frames)?;
        let target = |f: fn(&Sample) -> &Array2<f32>| -> Result<Tensor> {
            let mut v = Vec::with_capacity(samples.len() * n * n);
            for s in samples {
                v.extend(f(s).iter().copied());
            }
            Ok(Tensor::from_vec(v, (samples.len(), 1, n, n), dev)?)
        };
        let ta = target(|s| &s.amplitude)?;
        let tp = target(|s| &s.phase)?;
        let err = |p: &Tensor, t: &Tensor| -> candle_core::Result<Tensor> {
            let d = (p - t)?;
            let e = match self.config.loss {
                Loss::Mse => d.sqr()?,
                Loss::L1 => d.abs()?,
            };
            match &self.weight {
                Some(w) => e.broadcast_mul(w)?.mean_all(),
                None => e.mean_all(),
            }
        };
        Ok((err(&amp, &ta)? + err(&phase, &tp)?)?)
    }

    /// One AdamW step on a mini-batch of `batch_size` samples drawn at
    /// random (without replacement; all of them when fewer are held) from
    /// the buffer; returns the batch's loss before the step.
    pub fn step(&mut self, batch_size: usize) -> Result<f32> {
        if batch_size == 0 {
            return Err(PtychoError::Invalid("training batch size 0".into()));
        }
        if self.buffer.is_empty() {
            return Err(PtychoError::Invalid(
                "no samples to train on: push some first".into(),
            ));
        }
        let k = batch_size.min(self.buffer.len());
        let picks = rand::seq::index::sample(&mut self.rng, self.buffer.len(), k);
        let batch: Vec<&Sample> = picks.iter().map(|i| &self.buffer[i]).collect();
        let loss = self.loss(&batch)?;
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(PtychoError::Invalid(format!(
                "training loss is {value}; the step was not taken"
            )));
        }
        self.opt.backward_step(&loss)?;
        self.surrogate.steps += 1;
        self.history.push(value);
        Ok(value)
    }

    /// The loss on held-out samples (no training; the same loss and
    /// weighting as [`Trainer::step`]), averaged over them.
    pub fn validate(&self, samples: &[Sample]) -> Result<f32> {
        if samples.is_empty() {
            return Err(PtychoError::Invalid("no samples to validate on".into()));
        }
        let n = self.surrogate.config.n;
        let mut total = 0f64;
        for chunk in samples.chunks(64) {
            for s in chunk {
                if s.frame.dim() != (n, n) || s.amplitude.dim() != (n, n) || s.phase.dim() != (n, n)
                {
                    return Err(PtychoError::Invalid(format!(
                        "a validation sample is not {n}×{n}"
                    )));
                }
            }
            let refs: Vec<&Sample> = chunk.iter().collect();
            total += self.loss(&refs)?.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        }
        Ok((total / samples.len() as f64) as f32)
    }
}

/// The probe's intensity `|P|²` scaled to a peak of 1, floored at
/// `floor` (so the network still learns something, the mean, where the
/// probe is dark): a loss weight for [`Trainer::set_loss_weight`].
pub fn probe_weight(probe: &Array2<C32>, floor: f32) -> Array2<f32> {
    let intensity = probe.mapv(|v| v.norm_sqr());
    let peak = intensity.iter().fold(0f32, |m, &v| m.max(v));
    if peak > 0.0 && peak.is_finite() {
        intensity.mapv(|v| (v / peak).max(floor))
    } else {
        Array2::from_elem(probe.dim(), 1.0)
    }
}

/// Puts predicted patches together into the scan's `size`×`size`
/// amplitude and phase images: each pixel is the average of the patches
/// covering it weighted by the probe's intensity `|P|²` there; a pixel no
/// patch covers (zero total weight) is amplitude 1, phase 0. Errors when
/// the counts of patches and metadata differ, a patch is not the probe's
/// shape, or a patch falls outside the image (naming the frame and its
/// position).
pub fn stitch(
    patches: &[(Array2<f32>, Array2<f32>)],
    metas: &[FrameMeta],
    probe: &Array2<C32>,
    size: usize,
) -> Result<(Array2<f32>, Array2<f32>)> {
    if patches.len() != metas.len() {
        return Err(PtychoError::Invalid(format!(
            "{} patches but {} metadata records",
            patches.len(),
            metas.len()
        )));
    }
    let (pn, pm) = probe.dim();
    let weight = probe.mapv(|v| v.norm_sqr() as f64);
    let mut wsum = Array2::<f64>::zeros((size, size));
    let mut asum = Array2::<f64>::zeros((size, size));
    let mut psum = Array2::<f64>::zeros((size, size));
    for (i, ((a, p), m)) in patches.iter().zip(metas).enumerate() {
        if a.dim() != (pn, pm) || p.dim() != (pn, pm) {
            return Err(PtychoError::Invalid(format!(
                "patch {i} is {:?} and {:?}; the probe is {pn}×{pm}",
                a.dim(),
                p.dim()
            )));
        }
        let (y, x) = (m.y as usize, m.x as usize);
        if y + pn > size || x + pm > size {
            return Err(PtychoError::Invalid(format!(
                "frame {} of scan {:?} at (x, y) = ({x}, {y}): its {pn}×{pm} patch falls \
                 outside the {size}×{size} image",
                m.index, m.scan_id
            )));
        }
        let window = s![y..y + pn, x..x + pm];
        ndarray::Zip::from(wsum.slice_mut(window))
            .and(asum.slice_mut(window))
            .and(psum.slice_mut(window))
            .and(&weight)
            .and(a)
            .and(p)
            .for_each(|ws, sa, sp, &w, &va, &vp| {
                *ws += w;
                *sa += w * va as f64;
                *sp += w * vp as f64;
            });
    }
    let amp = ndarray::Zip::from(&asum).and(&wsum).map_collect(|&s, &w| {
        if w > 0.0 {
            (s / w) as f32
        } else {
            1.0
        }
    });
    let phase = ndarray::Zip::from(&psum).and(&wsum).map_collect(|&s, &w| {
        if w > 0.0 {
            (s / w) as f32
        } else {
            0.0
        }
    });
    Ok((amp, phase))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_checked() {
        assert!(SurrogateConfig::default().validate().is_ok());
        for bad in [
            SurrogateConfig {
                n: 48,
                ..Default::default()
            },
            SurrogateConfig {
                bin: 3,
                ..Default::default()
            },
            SurrogateConfig {
                n: 8,
                bin: 2,
                ..Default::default()
            },
            SurrogateConfig {
                channels: 0,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(PtychoError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn preprocessing_bins_and_scales_to_one_at_saturation() {
        let cfg = SurrogateConfig {
            n: 16,
            bin: 2,
            channels: 2,
            seed: 0,
        };
        let mut f = Array2::<u16>::zeros((16, 16));
        f.slice_mut(s![0..2, 0..2]).fill(SATURATION);
        f[[15, 15]] = 3;
        let t = preprocess(&[&f], &cfg, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 2, 8, 8]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((v[0] - 1.0).abs() < 1e-6, "{}", v[0]);
        let three = 4f32.ln() / (1.0 + 4.0 * 4095.0f32).ln();
        assert!((v[63] - three).abs() < 1e-6);
        assert_eq!(v[1], 0.0);
        // The second channel is the first turned over.
        assert!((v[64 + 63] - 1.0).abs() < 1e-6 && (v[64] - three).abs() < 1e-6);
        let cfg1 = SurrogateConfig { bin: 1, ..cfg };
        let t = preprocess(&[&f], &cfg1, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 2, 16, 16]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((v[0] - 1.0).abs() < 1e-6 && (v[255] - 4f32.ln() / 4096f32.ln()).abs() < 1e-6);
        assert!((v[256] - 4f32.ln() / 4096f32.ln()).abs() < 1e-6 && (v[511] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn the_network_is_seeded_and_shaped_for_both_binnings() {
        for bin in [1, 2] {
            let cfg = SurrogateConfig {
                n: 32,
                bin,
                channels: 4,
                seed: 3,
            };
            let a = Surrogate::new(cfg.clone(), Device::Cpu).unwrap();
            let b = Surrogate::new(cfg.clone(), Device::Cpu).unwrap();
            let frames =
                vec![Array2::from_shape_fn((32, 32), |(y, x)| ((y * 7 + x * 3) % 50) as u16); 3];
            let pa = a.predict(&frames, 2).unwrap();
            assert_eq!(
                pa,
                b.predict(&frames, 3).unwrap(),
                "bin {bin}: not deterministic"
            );
            assert_eq!(pa.len(), 3);
            for (amp, ph) in &pa {
                assert_eq!(amp.dim(), (32, 32));
                assert!(amp.iter().all(|v| (0.0..=AMP_MAX).contains(v)));
                assert!(ph.iter().all(|v| v.abs() <= PI));
            }
            // The heads start at zero (every seed predicts the empty
            // object), the weights behind them follow the seed.
            let c = Surrogate::new(SurrogateConfig { seed: 4, ..cfg }, Device::Cpu).unwrap();
            let weights = |s: &Surrogate| -> Vec<(String, Vec<f32>)> {
                let data = s.varmap.data().lock().unwrap();
                let mut v: Vec<_> = data
                    .iter()
                    .map(|(k, v)| (k.clone(), v.flatten_all().unwrap().to_vec1().unwrap()))
                    .collect();
                v.sort_by(|x, y| x.0.cmp(&y.0));
                v
            };
            assert_eq!(weights(&a), weights(&b));
            assert_ne!(weights(&a), weights(&c));
        }
    }

    #[test]
    fn the_buffer_is_bounded_and_counts_samples() {
        let cfg = SurrogateConfig {
            n: 16,
            bin: 1,
            channels: 2,
            seed: 0,
        };
        let s = Surrogate::new(cfg, Device::Cpu).unwrap();
        let mut t = Trainer::new(
            s,
            TrainerConfig {
                capacity: 3,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(t.step(4).is_err(), "an empty buffer cannot train");
        let sample = |v: f32| Sample {
            frame: Array2::from_elem((16, 16), 5),
            amplitude: Array2::from_elem((16, 16), v),
            phase: Array2::zeros((16, 16)),
        };
        for i in 0..5 {
            t.push(sample(i as f32 / 10.0)).unwrap();
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.buffer.front().unwrap().amplitude[[0, 0]], 0.2);
        assert_eq!(t.surrogate().samples_seen(), 5);
        let bad = Sample {
            phase: Array2::zeros((8, 8)),
            ..sample(0.0)
        };
        assert!(matches!(t.push(bad), Err(PtychoError::Invalid(_))));
        let l = t.step(8).unwrap();
        assert!(l.is_finite());
        assert_eq!(t.history(), &[l]);
        assert_eq!(t.surrogate().steps(), 1);
        t.note_scan("a");
        t.note_scan("b");
        t.note_scan("a");
        assert_eq!(
            t.surrogate().scan_ids(),
            &["a".to_string(), "b".to_string()]
        );
    }

    /// The gradients candle computes for every weight of the network agree
    /// with finite differences. Guards the work-arounds for candle 0.9's CPU
    /// bugs (convolution with c == h == w, max-pool and upsampling
    /// backward): this shape hits the first (8 channels at 8×8, 4 at 4×4).
    /// In f64 — the network is generic in its float type — because in f32
    /// the loss has ReLU and max-pool kinks closer than any step size that
    /// f32 can resolve, and the test would fail at random.
    #[test]
    fn gradients_agree_with_finite_differences() {
        let cfg = SurrogateConfig {
            n: 16,
            bin: 1,
            channels: 2,
            seed: 1,
        };
        for seed in 0..4u64 {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
            let net = Net::new(&cfg, vb).unwrap();
            // Random heads too (zero heads would hide the layers behind
            // them), drawn in name order: the var map is a hash map.
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut vars: Vec<(String, candle_core::Var)> = {
                let data = varmap.data().lock().unwrap();
                data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            let set = |var: &candle_core::Var, values: Vec<f64>| {
                var.set(&Tensor::from_vec(values, var.dims(), &Device::Cpu).unwrap())
                    .unwrap()
            };
            for (_, v) in &vars {
                set(
                    v,
                    (0..v.elem_count())
                        .map(|_| rng.gen_range(-0.5..0.5))
                        .collect(),
                );
            }
            // Real preprocessing of random frames, with dark (zero) corners:
            // constant regions give exactly tied activations at the pools.
            let frames: Vec<Array2<u16>> = (0..3)
                .map(|_| {
                    Array2::from_shape_fn((16, 16), |(y, x)| {
                        if y < 6 && x < 6 {
                            0
                        } else {
                            rng.gen_range(0..800u16)
                        }
                    })
                })
                .collect();
            let refs: Vec<&Array2<u16>> = frames.iter().collect();
            let x = preprocess(&refs, &cfg, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap();
            let target = |lo: f64, hi: f64, rng: &mut ChaCha8Rng| {
                let v: Vec<f64> = (0..3 * 256).map(|_| rng.gen_range(lo..hi)).collect();
                Tensor::from_vec(v, (3, 1, 16, 16), &Device::Cpu).unwrap()
            };
            let (ta, tp) = (target(0.5, 1.0, &mut rng), target(-0.6, 0.6, &mut rng));
            let loss = || {
                let (a, p) = net.forward(&x).unwrap();
                let ea = (a - &ta).unwrap().sqr().unwrap().mean_all().unwrap();
                let ep = (p - &tp).unwrap().sqr().unwrap().mean_all().unwrap();
                (ea + ep).unwrap()
            };
            let grads = loss().backward().unwrap();
            for (name, var) in &vars {
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("no gradient for {name}"))
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap();
                let base = var
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap();
                for j in [0, base.len() / 2, base.len() - 1] {
                    let eps = 1e-6;
                    let mut up = base.clone();
                    up[j] += eps;
                    set(var, up);
                    let lu = loss().to_scalar::<f64>().unwrap();
                    let mut down = base.clone();
                    down[j] -= eps;
                    set(var, down);
                    let ld = loss().to_scalar::<f64>().unwrap();
                    set(var, base.clone());
                    let numeric = (lu - ld) / (2.0 * eps);
                    let analytic = g[j];
                    assert!(
                        (numeric - analytic).abs() <= 1e-6 + 1e-4 * numeric.abs(),
                        "seed {seed}, {name}[{j}]: finite differences {numeric:.7}, backprop {analytic:.7}"
                    );
                }
            }
        }
    }

    /// Tied maxima share the gradient: candle's max reduction would give
    /// each of four equal values the whole of it (four times too much).
    #[test]
    fn max_pool_splits_the_gradient_of_a_tie() {
        // The pooled values and d(Σ pooled)/dx of a 4×4 input.
        let pool = |values: Vec<f64>| {
            let x = candle_core::Var::from_vec(values, (1, 4, 4, 1), &Device::Cpu).unwrap();
            let y = max_pool2(x.as_tensor()).unwrap();
            assert_eq!(y.dims(), &[1, 2, 2, 1]);
            let g = y.sum_all().unwrap().backward().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            (flat(&y), flat(g.get(x.as_tensor()).unwrap()))
        };
        let (_, g) = pool(vec![1.0; 16]);
        assert!(g.iter().all(|&v| (v - 0.25).abs() < 1e-12), "{g:?}");
        // And an untied maximum takes all of it.
        let (y, g) = pool((0..16).map(f64::from).collect());
        assert_eq!(y, [5.0, 7.0, 13.0, 15.0]);
        let ones: Vec<usize> = (0..16).filter(|&i| g[i] == 1.0).collect();
        assert_eq!(ones, [5, 7, 13, 15]);
        assert_eq!(g.iter().sum::<f64>(), 4.0);
    }
}
