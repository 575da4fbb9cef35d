//! A PtychoNN-like surrogate (Cherukara et al. 2020): a small convolutional
//! network on candle-nn that maps one diffraction frame to the amplitude
//! and phase of the N×N object patch the probe illuminated, so a scan can
//! be imaged at the rate frames arrive instead of after an iterative
//! reconstruction.
//!
//! **Input.** A frame's counts, optionally binned (the sum of `bin`×`bin`
//! pixels), as `ln(1 + counts) / ln(1 + 4095·bin²)` — for `bin` = 1 that is
//! `ln(1 + counts) / ln(4096)`, so a saturated 12-bit pixel reads 1 — one
//! channel of `(n / bin)²` pixels ([`preprocess`]).
//!
//! **Network.** An encoder of three levels (two 3×3 convolutions with ReLU,
//! then a 2×2 max-pool; `channels`, `2·channels`, `4·channels` wide) and
//! two decoders of the same shape (nearest 2× upsampling, a 3×3 convolution
//! with ReLU, repeated until the side is N again, then a 3×3 convolution to
//! one channel): one predicts the amplitude, `1.2 · sigmoid` (so in
//! [0, [`AMP_MAX`]]), the other the phase, `π · tanh` (in (−π, π)). Weights
//! are drawn from the configuration's seed (He-uniform, zero biases, the
//! amplitude's output bias at an empty object's amplitude 1).
//!
//! **Training** ([`Trainer`]) is online: samples — a frame and the patch of
//! a reconstruction (or of the truth) at its position ([`samples_from`]) —
//! go into a bounded replay buffer, and each [`Trainer::step`] takes one
//! AdamW step on a seeded random mini-batch from it, on the mean squared
//! (or absolute) error of amplitude plus that of phase over the whole
//! patch.
//!
//! **Inference** ([`Surrogate::predict`]) runs frames in batches;
//! [`stitch`] puts the predicted patches together into the scan's image,
//! each pixel the average of the patches covering it weighted by the
//! probe's intensity there.
//!
//! **Checkpoints** are safetensors files ([`Surrogate::save`],
//! [`Surrogate::load`]) whose metadata carries a format tag
//! ([`FORMAT`]), the configuration (JSON), the model's `version`, its
//! `samples_seen`, `steps` and the ids of the scans it was trained on; a
//! checkpoint of another format, missing or ill-shaped tensors, or a
//! non-finite weight is refused, naming what was wrong.
//!
//! What it does not do: learn the probe or positions (the targets must be
//! registered to the frames' positions), remove a global phase offset (the
//! targets' phase reference is what it learns), unwrap phases, or save the
//! optimiser's state (a trainer resumed from a checkpoint starts AdamW's
//! moments afresh). The stitched phase is a plain weighted mean, which is
//! right for phases well inside (−π, π), as the network's are.

use std::collections::{HashMap, VecDeque};
use std::f32::consts::PI;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use candle_nn::{Conv2d, Conv2dConfig, Module, VarBuilder, VarMap};
use ndarray::{s, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::sim::{FrameMeta, SATURATION};
use crate::{PtychoError, Result, C32};

/// The format tag a checkpoint's metadata carries under `format`.
pub const FORMAT: &str = "diaspora-ptycho/surrogate/1";
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

/// The network's input for `frames` (each N×N, checked): a
/// `(frames, 1, n / bin, n / bin)` f32 tensor of
/// `ln(1 + binned counts) / ln(1 + 4095·bin²)`.
pub fn preprocess(
    frames: &[&Array2<u16>],
    config: &SurrogateConfig,
    device: &Device,
) -> Result<Tensor> {
    let (n, bin) = (config.n, config.bin);
    let side = n / bin;
    let scale = 1.0 / (1.0 + SATURATION as f32 * (bin * bin) as f32).ln();
    let mut data = Vec::with_capacity(frames.len() * side * side);
    for (i, f) in frames.iter().enumerate() {
        check_frame(i, f, n)?;
        for r in 0..side {
            for c in 0..side {
                let mut sum = 0u32;
                for dy in 0..bin {
                    for dx in 0..bin {
                        sum += f[[r * bin + dy, c * bin + dx]] as u32;
                    }
                }
                data.push((1.0 + sum as f32).ln() * scale);
            }
        }
    }
    Ok(Tensor::from_vec(
        data,
        (frames.len(), 1, side, side),
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

/// One decoder: upsampling stages back to the input's side, the output
/// convolution, then (with binning) a nearest-neighbour upsampling to N —
/// no convolution runs at the full N×N side, where it would cost most.
#[derive(Debug)]
struct Decoder {
    stages: Vec<Conv2d>,
    out: Conv2d,
    bin: usize,
}

impl Decoder {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for conv in &self.stages {
            let (_, _, hh, ww) = h.dims4()?;
            h = h.upsample_nearest2d(2 * hh, 2 * ww)?;
            h = conv.forward(&h)?.relu()?;
        }
        let h = self.out.forward(&h)?;
        if self.bin > 1 {
            let (_, _, hh, ww) = h.dims4()?;
            h.upsample_nearest2d(hh * self.bin, ww * self.bin)
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

fn conv3(cin: usize, cout: usize, vb: VarBuilder) -> candle_core::Result<Conv2d> {
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
        let mut cin = 1;
        for level in 0..LEVELS {
            let cout = c << level;
            encoder.push(conv3(cin, cout, vb.pp(format!("enc{level}a")))?);
            encoder.push(conv3(cout, cout, vb.pp(format!("enc{level}b")))?);
            cin = cout;
        }
        // Upsampling stages until the side is the input's again, one per
        // pool; the binning is undone after the output convolution.
        let stages = LEVELS;
        let decoder = |name: &str| -> candle_core::Result<Decoder> {
            let vb = vb.pp(name);
            let mut cin = c << (LEVELS - 1);
            let mut convs = Vec::with_capacity(stages);
            for s in 0..stages {
                let cout = if s + 2 <= LEVELS {
                    c << (LEVELS - 2 - s)
                } else {
                    c
                };
                convs.push(conv3(cin, cout, vb.pp(format!("up{s}")))?);
                cin = cout;
            }
            let out = conv3(cin, 1, vb.pp("out"))?;
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

    /// `(amplitude, phase)`, each `(batch, 1, n, n)`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        for pair in self.encoder.chunks(2) {
            h = pair[0].forward(&h)?.relu()?;
            h = pair[1].forward(&h)?.relu()?;
            h = h.max_pool2d(2)?;
        }
        let amp = (candle_nn::ops::sigmoid(&self.amplitude.forward(&h)?)? * AMP_MAX as f64)?;
        let phase = (self.phase.forward(&h)?.tanh()? * PI as f64)?;
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
        // draw order is fixed. The amplitude's output starts at 1 (an
        // empty object), the phase's at 0.
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
                } else {
                    let fan_in: usize = dims[1..].iter().product();
                    let gain = if name.ends_with("out.weight") {
                        1.0
                    } else {
                        6.0
                    };
                    let bound = (gain / fan_in as f32).sqrt();
                    (0..count).map(|_| rng.gen_range(-bound..bound)).collect()
                };
                var.set(&Tensor::from_vec(values, dims, &device)?)?;
            }
        }
        Ok(Surrogate {
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
        Ok(self.net.forward(&x)?)
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
        let metadata: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("config", json(&self.config)),
            ("version", self.version.to_string()),
            ("samples_seen", self.samples_seen.to_string()),
            ("steps", self.steps.to_string()),
            ("scan_ids", json(&self.scan_ids)),
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

        let mut s = Surrogate::new(config, device)?;
        {
            let vars = s.varmap.data().lock().expect("varmap lock");
            let mut names: Vec<&String> = vars.keys().collect();
            names.sort();
            for name in &names {
                let var = &vars[*name];
                let t = st
                    .tensor(name)
                    .map_err(|_| bad(format!("no tensor {name:?}")))?;
                if t.dtype() != safetensors::Dtype::F32 || t.shape() != var.dims() {
                    return Err(bad(format!(
                        "tensor {name:?} is {:?} {:?}; the model needs F32 {:?}",
                        t.dtype(),
                        t.shape(),
                        var.dims()
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
                var.set(&Tensor::from_vec(values, var.dims(), s.device())?)?;
            }
            if let Some(extra) = st.names().into_iter().find(|n| !vars.contains_key(*n)) {
                return Err(bad(format!(
                    "tensor {extra:?} is not part of this model (another architecture?)"
                )));
            }
        }
        s.version = version;
        s.samples_seen = samples_seen;
        s.steps = steps;
        s.scan_ids = scan_ids;
        Ok(s)
    }
}

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
        })
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
            match self.config.loss {
                Loss::Mse => d.sqr()?.mean_all(),
                Loss::L1 => d.abs()?.mean_all(),
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

    /// The loss on held-out samples (no training), averaged over them.
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
        assert_eq!(t.dims(), &[1, 1, 8, 8]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((v[0] - 1.0).abs() < 1e-6, "{}", v[0]);
        assert!((v[63] - 4f32.ln() / (1.0 + 4.0 * 4095.0f32).ln()).abs() < 1e-6);
        assert_eq!(v[1], 0.0);
        let cfg1 = SurrogateConfig { bin: 1, ..cfg };
        let t = preprocess(&[&f], &cfg1, &Device::Cpu).unwrap();
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((v[0] - 1.0).abs() < 1e-6 && (v[255] - 4f32.ln() / 4096f32.ln()).abs() < 1e-6);
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
            let c = Surrogate::new(SurrogateConfig { seed: 4, ..cfg }, Device::Cpu).unwrap();
            assert_ne!(pa, c.predict(&frames, 3).unwrap());
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
}
