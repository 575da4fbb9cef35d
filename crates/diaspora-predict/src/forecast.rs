//! The LSTM forecaster: candle-nn's LSTM and a linear head that forecasts
//! the next `horizon` steps of a metric series from its last `window` steps.
//!
//! One model serves many series of the same kind (every link's RTT, every
//! partition's lag): each series keeps its own history and normaliser
//! ([`SeriesState`]), and forecasts for many series run as one batch.
//!
//! **What the network sees.** A window `w[0..W]` with the series' running
//! mean `μ` and deviation `σ` becomes, per step, two inputs: the value
//! relative to the window's last value, `(w[i] − w[W−1]) / σ`, and its level,
//! `(w[i] − μ) / σ`. The head predicts the future relative to the last value,
//! `(y[h] − w[W−1]) / σ` for `h = 1..=H`, so a network that outputs zeros is
//! the persistence forecast and anything it learns is an improvement on it.
//! Inputs and targets are clamped to ±[`CLAMP`] so one wild sample cannot
//! blow the weights up.
//!
//! **Online training.** [`Forecaster::train_step`] draws a mini-batch of
//! windows (with their true futures) at random from the series' recent
//! history and takes one AdamW step on the mean squared error. Nothing is
//! trained on data the forecast has not yet seen: a window is usable for
//! training only once its whole future has arrived.
//!
//! **Devices.** CPU by default; with the crate's `cuda` feature
//! [`device`]`("cuda")` returns the first GPU. The model's maths is the same
//! on both.
//!
//! **Checkpoints** are safetensors files ([`Forecaster::save`],
//! [`Forecaster::load`]): the weights, the optimiser's step count and the
//! configuration (as a JSON byte tensor named `__config__`).

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use candle_nn::rnn::{LSTMConfig, LSTM, RNN};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::PredictError;

/// Inputs and targets are clamped to ±this many deviations.
pub const CLAMP: f32 = 10.0;
/// Largest accepted window, steps.
pub const WINDOW_MAX: usize = 1024;
/// Largest accepted horizon, steps.
pub const HORIZON_MAX: usize = 1024;
/// Largest accepted hidden size.
pub const HIDDEN_MAX: usize = 1024;
/// Largest accepted history per series, rows.
pub const HISTORY_MAX: usize = 1 << 20;
/// Largest batch accepted by [`Forecaster::forecast_windows`].
pub const BATCH_MAX: usize = 1 << 16;
/// Largest checkpoint file read, bytes.
pub const CHECKPOINT_BYTES_MAX: u64 = 256 << 20;

/// Inputs per step (relative value and level).
const INPUTS: usize = 2;

/// How the forecaster is shaped and trained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecasterConfig {
    /// Steps of history the network reads.
    pub window: usize,
    /// Steps ahead it forecasts.
    pub horizon: usize,
    /// LSTM hidden size.
    pub hidden: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// Windows per training step.
    pub batch: usize,
    /// Rows of history kept per series for training.
    pub history: usize,
    /// The running mean and deviation forget with this half-life, rows.
    pub norm_halflife: f64,
    /// Seed of the weight initialisation and of the training sampler.
    pub seed: u64,
}

impl Default for ForecasterConfig {
    fn default() -> Self {
        ForecasterConfig {
            window: 32,
            horizon: 20,
            hidden: 32,
            learning_rate: 3e-3,
            batch: 32,
            history: 4096,
            norm_halflife: 500.0,
            seed: 1,
        }
    }
}

impl ForecasterConfig {
    /// Checks every field, naming the one at fault.
    pub fn validate(&self) -> Result<(), PredictError> {
        let range = |what: &str, v: usize, lo: usize, hi: usize| {
            if v < lo || v > hi {
                Err(PredictError::Data(format!(
                    "forecaster {what} = {v}: must be {lo}..={hi}"
                )))
            } else {
                Ok(())
            }
        };
        range("window", self.window, 2, WINDOW_MAX)?;
        range("horizon", self.horizon, 1, HORIZON_MAX)?;
        range("hidden", self.hidden, 1, HIDDEN_MAX)?;
        range("batch", self.batch, 1, 4096)?;
        range(
            "history",
            self.history,
            self.window + self.horizon,
            HISTORY_MAX,
        )?;
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.learning_rate < 1.0)
        {
            return Err(PredictError::Data(format!(
                "forecaster learning_rate = {}: must be in (0, 1)",
                self.learning_rate
            )));
        }
        if !(self.norm_halflife.is_finite() && self.norm_halflife >= 1.0) {
            return Err(PredictError::Data(format!(
                "forecaster norm_halflife = {}: must be ≥ 1 row",
                self.norm_halflife
            )));
        }
        Ok(())
    }
}

/// The device named `cpu` or (with the `cuda` feature) `cuda` / `cuda:N`.
pub fn device(name: &str) -> Result<Device, PredictError> {
    match name {
        "cpu" => Ok(Device::Cpu),
        n if n == "cuda" || n.starts_with("cuda:") => {
            #[cfg(feature = "cuda")]
            {
                let ordinal = n
                    .strip_prefix("cuda:")
                    .map(|s| s.parse::<usize>())
                    .transpose()
                    .map_err(|e| PredictError::Data(format!("device {n:?}: {e}")))?
                    .unwrap_or(0);
                Device::new_cuda(ordinal).map_err(model)
            }
            #[cfg(not(feature = "cuda"))]
            Err(PredictError::Data(format!(
                "device {n:?}: this build has no CUDA support (rebuild with `--features cuda`)"
            )))
        }
        n => Err(PredictError::Data(format!(
            "device {n:?}: expected cpu, cuda or cuda:N"
        ))),
    }
}

pub(crate) fn model(e: candle_core::Error) -> PredictError {
    PredictError::Model(e.to_string())
}

/// A running mean and deviation that forgets with a half-life: the first
/// rows are averaged plainly, later ones exponentially.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunningNorm {
    /// Rows seen.
    pub n: u64,
    /// Mean.
    pub mean: f64,
    /// Variance.
    pub var: f64,
    alpha_min: f64,
}

impl RunningNorm {
    /// Forgets with a half-life of `halflife` rows.
    pub fn new(halflife: f64) -> Self {
        RunningNorm {
            n: 0,
            mean: 0.0,
            var: 0.0,
            alpha_min: 1.0 - 0.5f64.powf(1.0 / halflife.max(1.0)),
        }
    }

    /// Takes one value (non-finite values are ignored).
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.n += 1;
        let alpha = (1.0 / self.n as f64).max(self.alpha_min);
        let d = x - self.mean;
        self.mean += alpha * d;
        self.var = (1.0 - alpha) * (self.var + alpha * d * d);
    }

    /// The deviation, floored so a flat series does not divide by zero.
    pub fn std(&self) -> f64 {
        // 1e-9 is still a normal f32: a flat series divides by a number,
        // and the clamp bounds what it gives.
        self.var.sqrt().max(1e-3 * self.mean.abs()).max(1e-9)
    }
}

/// One series: its recent history (value, mean and deviation at that row).
#[derive(Debug, Clone)]
pub struct SeriesState {
    rows: VecDeque<(f32, f32, f32)>,
    capacity: usize,
    norm: RunningNorm,
    seen: u64,
}

impl SeriesState {
    /// An empty series keeping `config.history` rows.
    pub fn new(config: &ForecasterConfig) -> Self {
        SeriesState {
            rows: VecDeque::with_capacity(config.history.min(1 << 16)),
            capacity: config.history,
            norm: RunningNorm::new(config.norm_halflife),
            seen: 0,
        }
    }

    /// Takes the next value. A non-finite value repeats the last one (a gap
    /// in a metric stream is not a reason to stop forecasting).
    pub fn push(&mut self, value: f64) {
        let v = if value.is_finite() {
            value
        } else {
            self.rows.back().map_or(0.0, |r| r.0 as f64)
        };
        self.norm.push(v);
        if self.rows.len() == self.capacity {
            self.rows.pop_front();
        }
        self.rows
            .push_back((v as f32, self.norm.mean as f32, self.norm.std() as f32));
        self.seen += 1;
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Nothing held yet.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows taken since the start.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The last value.
    pub fn last(&self) -> Option<f64> {
        self.rows.back().map(|r| r.0 as f64)
    }

    /// The normaliser.
    pub fn norm(&self) -> &RunningNorm {
        &self.norm
    }

    /// The raw window of `w` values ending just before row `end` (counted
    /// from the series' first row), with the mean and deviation at its last
    /// row; `None` if those rows are not all held.
    pub fn window_before(&self, end: u64, w: usize) -> Option<(Vec<f32>, f32, f32)> {
        let first = self.seen - self.rows.len() as u64;
        if end < first + w as u64 || end > self.seen {
            return None;
        }
        let e = (end - first) as usize;
        let values = (e - w..e).map(|i| self.rows[i].0).collect();
        let (_, mean, std) = self.rows[e - 1];
        Some((values, mean, std))
    }

    /// The window of `w` rows ending at row `end` (exclusive) of the held
    /// history, with the mean and deviation at its last row.
    fn window(&self, end: usize, w: usize) -> Option<Window<'_>> {
        if end < w || end > self.rows.len() {
            return None;
        }
        Some(Window {
            series: self,
            start: end - w,
            end,
        })
    }
}

/// A window of a series' history (borrowed).
struct Window<'a> {
    series: &'a SeriesState,
    start: usize,
    end: usize,
}

impl Window<'_> {
    fn last(&self) -> (f32, f32, f32) {
        self.series.rows[self.end - 1]
    }
    fn encode_into(&self, out: &mut Vec<f32>) {
        let (last, mean, std) = self.last();
        for i in self.start..self.end {
            let v = self.series.rows[i].0;
            out.push(((v - last) / std).clamp(-CLAMP, CLAMP));
            out.push(((v - mean) / std).clamp(-CLAMP, CLAMP));
        }
    }
}

/// Encodes one raw window (oldest first) with the given mean and deviation,
/// appending `2 × window.len()` network inputs to `out`.
pub fn encode_window(window: &[f32], mean: f32, std: f32, out: &mut Vec<f32>) {
    let last = *window.last().unwrap_or(&0.0);
    for &v in window {
        out.push(((v - last) / std).clamp(-CLAMP, CLAMP));
        out.push(((v - mean) / std).clamp(-CLAMP, CLAMP));
    }
}

/// The LSTM forecaster.
pub struct Forecaster {
    config: ForecasterConfig,
    device: Device,
    varmap: VarMap,
    lstm: LSTM,
    head: Linear,
    opt: AdamW,
    train_steps: u64,
    rng: rand_chacha::ChaCha8Rng,
}

impl std::fmt::Debug for Forecaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forecaster")
            .field("config", &self.config)
            .field("device", &self.device)
            .field("train_steps", &self.train_steps)
            .finish_non_exhaustive()
    }
}

impl Forecaster {
    /// A freshly initialised model (weights drawn from `config.seed`).
    pub fn new(config: ForecasterConfig, device: Device) -> Result<Self, PredictError> {
        config.validate()?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let lstm =
            candle_nn::rnn::lstm(INPUTS, config.hidden, LSTMConfig::default(), vb.pp("lstm"))
                .map_err(model)?;
        let head =
            candle_nn::linear(config.hidden, config.horizon, vb.pp("head")).map_err(model)?;
        // Deterministic initialisation from the seed (candle's CPU backend
        // cannot be seeded): the LSTM as PyTorch does it, U(±1/√hidden), and
        // the head at zero, so the untrained model is the persistence
        // forecast. Names are sorted so the draw order is fixed.
        let mut init_rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed ^ 0x9e37_79b9);
        let bound = 1.0 / (config.hidden as f32).sqrt();
        {
            let vars = varmap.data().lock().expect("varmap lock");
            let mut names: Vec<&String> = vars.keys().collect();
            names.sort();
            for name in names {
                let var = &vars[name];
                let n = var.elem_count();
                let values: Vec<f32> = if name.starts_with("head.") {
                    vec![0.0; n]
                } else {
                    (0..n).map(|_| init_rng.gen_range(-bound..bound)).collect()
                };
                let t = Tensor::from_vec(values, var.dims(), &device).map_err(model)?;
                var.set(&t).map_err(model)?;
            }
        }
        let opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: config.learning_rate,
                weight_decay: 1e-4,
                ..ParamsAdamW::default()
            },
        )
        .map_err(model)?;
        Ok(Forecaster {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(config.seed),
            config,
            device,
            varmap,
            lstm,
            head,
            opt,
            train_steps: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ForecasterConfig {
        &self.config
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Training steps taken so far.
    pub fn train_steps(&self) -> u64 {
        self.train_steps
    }

    /// Runs the network on `batch` encoded windows (`batch × window × 2`
    /// inputs, see [`encode_window`]) and returns `batch × horizon`
    /// normalised forecasts relative to each window's last value.
    pub fn forward_encoded(&self, inputs: Vec<f32>, batch: usize) -> Result<Tensor, PredictError> {
        let w = self.config.window;
        if batch == 0 || batch > BATCH_MAX || inputs.len() != batch * w * INPUTS {
            return Err(PredictError::Data(format!(
                "forecast batch: {} inputs for {batch} windows of {w} steps (batch ≤ {BATCH_MAX})",
                inputs.len()
            )));
        }
        let x = Tensor::from_vec(inputs, (batch, w, INPUTS), &self.device).map_err(model)?;
        let states = self.lstm.seq(&x).map_err(model)?;
        let h = &states.last().expect("window ≥ 2").h;
        self.head.forward(h).map_err(model)
    }

    /// Forecasts the next `horizon` values of each raw window (oldest
    /// first, `window` values each) given the series' mean and deviation
    /// at the window's last row. Returns forecasts in the series' units.
    pub fn forecast_windows(
        &self,
        windows: &[(&[f32], f32, f32)],
    ) -> Result<Vec<Vec<f64>>, PredictError> {
        let w = self.config.window;
        let mut inputs = Vec::with_capacity(windows.len() * w * INPUTS);
        for (i, (win, mean, std)) in windows.iter().enumerate() {
            if win.len() != w {
                return Err(PredictError::Data(format!(
                    "forecast window {i} has {} values, the model reads {w}",
                    win.len()
                )));
            }
            encode_window(win, *mean, *std, &mut inputs);
        }
        let out = self.forward_encoded(inputs, windows.len())?;
        let rows: Vec<Vec<f32>> = out.to_vec2().map_err(model)?;
        Ok(rows
            .into_iter()
            .zip(windows)
            .map(|(r, (win, _, std))| {
                let last = *win.last().expect("checked length") as f64;
                r.into_iter()
                    .map(|d| last + d as f64 * *std as f64)
                    .collect()
            })
            .collect())
    }

    /// Forecasts each series from its latest window; `None` for a series
    /// with less than a window of history.
    pub fn forecast(&self, series: &[&SeriesState]) -> Result<Vec<Option<Vec<f64>>>, PredictError> {
        let w = self.config.window;
        let ready: Vec<usize> = (0..series.len())
            .filter(|&i| series[i].len() >= w)
            .collect();
        let mut out = vec![None; series.len()];
        if ready.is_empty() {
            return Ok(out);
        }
        let mut inputs = Vec::with_capacity(ready.len() * w * INPUTS);
        for &i in &ready {
            let s = series[i];
            s.window(s.len(), w)
                .expect("length checked")
                .encode_into(&mut inputs);
        }
        let rows: Vec<Vec<f32>> = self
            .forward_encoded(inputs, ready.len())?
            .to_vec2()
            .map_err(model)?;
        for (&i, r) in ready.iter().zip(rows) {
            let (last, _, std) = *series[i].rows.back().expect("ready");
            out[i] = Some(
                r.into_iter()
                    .map(|d| last as f64 + d as f64 * std as f64)
                    .collect(),
            );
        }
        Ok(out)
    }

    /// One AdamW step on a mini-batch of windows drawn at random from the
    /// series' histories (only windows whose whole future is known).
    /// Returns the batch's loss (mean squared normalised error), or `None`
    /// when no series has `window + horizon` rows yet.
    pub fn train_step(&mut self, series: &[&SeriesState]) -> Result<Option<f64>, PredictError> {
        let (w, h) = (self.config.window, self.config.horizon);
        let usable: Vec<(usize, usize)> = series
            .iter()
            .enumerate()
            .filter(|(_, s)| s.len() >= w + h)
            .map(|(i, s)| (i, s.len() - w - h + 1))
            .collect();
        let total: usize = usable.iter().map(|u| u.1).sum();
        if total == 0 {
            return Ok(None);
        }
        let b = self.config.batch;
        let mut inputs = Vec::with_capacity(b * w * INPUTS);
        let mut targets = Vec::with_capacity(b * h);
        for _ in 0..b {
            // Uniform over every usable window of every series.
            let mut k = self.rng.gen_range(0..total);
            let (si, _) = *usable
                .iter()
                .find(|u| {
                    if k < u.1 {
                        true
                    } else {
                        k -= u.1;
                        false
                    }
                })
                .expect("k < total");
            let s = series[si];
            let end = k + w;
            let win = s.window(end, w).expect("in range");
            win.encode_into(&mut inputs);
            let (last, _, std) = win.last();
            for j in 0..h {
                let y = s.rows[end + j].0;
                targets.push(((y - last) / std).clamp(-CLAMP, CLAMP));
            }
        }
        let pred = self.forward_encoded(inputs, b)?;
        let target = Tensor::from_vec(targets, (b, h), &self.device).map_err(model)?;
        let loss = (pred - target)
            .map_err(model)?
            .sqr()
            .map_err(model)?
            .mean_all()
            .map_err(model)?;
        self.opt.backward_step(&loss).map_err(model)?;
        self.train_steps += 1;
        Ok(Some(loss.to_scalar::<f32>().map_err(model)? as f64))
    }

    /// Writes a safetensors checkpoint: the weights, the training step
    /// count and the configuration. Written to a temporary file, synced and
    /// renamed, so a crash leaves the old checkpoint or the new one.
    pub fn save(&self, path: &Path) -> Result<(), PredictError> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (name, var) in self.varmap.data().lock().expect("varmap lock").iter() {
            tensors.insert(name.clone(), var.as_tensor().clone());
        }
        let config = serde_json::to_vec(&self.config).expect("config serialises");
        let n = config.len();
        tensors.insert(
            "__config__".into(),
            Tensor::from_vec(config, n, &Device::Cpu).map_err(model)?,
        );
        let steps = self.train_steps.to_le_bytes().to_vec();
        tensors.insert(
            "__train_steps__".into(),
            Tensor::from_vec(steps, 8, &Device::Cpu).map_err(model)?,
        );
        let bytes = safetensors::tensor::serialize(
            tensors
                .iter()
                .map(|(k, t)| SafeView::new(t).map(|v| (k.clone(), v)))
                .collect::<Result<Vec<_>, _>>()?,
            None,
        )
        .map_err(|e| PredictError::Model(format!("safetensors: {e}")))?;
        write_atomically(path, &bytes)
    }

    /// Reads a checkpoint written by [`Forecaster::save`].
    pub fn load(path: &Path, device: Device) -> Result<Self, PredictError> {
        let len = std::fs::metadata(path)
            .map_err(|source| PredictError::Io {
                path: path.into(),
                source,
            })?
            .len();
        if len > CHECKPOINT_BYTES_MAX {
            return Err(PredictError::Limit(format!(
                "checkpoint {} is {len} bytes, over {CHECKPOINT_BYTES_MAX}",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|source| PredictError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_checkpoint_bytes(&bytes, device)
            .map_err(|e| PredictError::Data(format!("checkpoint {}: {e}", path.display())))
    }

    /// Rebuilds a forecaster from checkpoint bytes, checking every tensor's
    /// name, type and shape against the configuration it carries.
    pub fn from_checkpoint_bytes(bytes: &[u8], device: Device) -> Result<Self, PredictError> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| PredictError::Data(format!("not a safetensors file: {e}")))?;
        let raw = |name: &str| -> Result<Vec<u8>, PredictError> {
            let t = st
                .tensor(name)
                .map_err(|_| PredictError::Data(format!("no tensor {name:?}")))?;
            if t.dtype() != safetensors::Dtype::U8 || t.shape().len() != 1 {
                return Err(PredictError::Data(format!("tensor {name:?} is not bytes")));
            }
            Ok(t.data().to_vec())
        };
        let config: ForecasterConfig = serde_json::from_slice(&raw("__config__")?)
            .map_err(|e| PredictError::Data(format!("configuration: {e}")))?;
        let steps = raw("__train_steps__")?;
        let steps: [u8; 8] = steps
            .as_slice()
            .try_into()
            .map_err(|_| PredictError::Data("__train_steps__ is not 8 bytes".into()))?;
        let mut f = Forecaster::new(config, device)?;
        {
            let vars = f.varmap.data().lock().expect("varmap lock");
            let mut names: Vec<&String> = vars.keys().collect();
            names.sort();
            for name in names {
                let var = &vars[name];
                let t = st
                    .tensor(name)
                    .map_err(|_| PredictError::Data(format!("no tensor {name:?}")))?;
                if t.dtype() != safetensors::Dtype::F32 || t.shape() != var.dims() {
                    return Err(PredictError::Data(format!(
                        "tensor {name:?} is {:?} {:?}, the model needs F32 {:?}",
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
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(PredictError::Data(format!(
                        "tensor {name:?} holds a non-finite weight"
                    )));
                }
                let loaded = Tensor::from_vec(values, var.dims(), f.device()).map_err(model)?;
                var.set(&loaded).map_err(model)?;
            }
        }
        f.train_steps = u64::from_le_bytes(steps);
        Ok(f)
    }
}

/// A candle tensor as a safetensors view (copied to host bytes).
struct SafeView {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl SafeView {
    fn new(t: &Tensor) -> Result<Self, PredictError> {
        let shape = t.dims().to_vec();
        let flat = t.flatten_all().map_err(model)?;
        let (dtype, data) = match t.dtype() {
            DType::F32 => (
                safetensors::Dtype::F32,
                flat.to_vec1::<f32>()
                    .map_err(model)?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            DType::U8 => (safetensors::Dtype::U8, flat.to_vec1::<u8>().map_err(model)?),
            other => {
                return Err(PredictError::Model(format!(
                    "checkpoint: unsupported dtype {other:?}"
                )))
            }
        };
        Ok(SafeView { dtype, shape, data })
    }
}

impl safetensors::View for SafeView {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PredictError> {
    use std::io::Write;
    let io = |source| PredictError::Io {
        path: path.into(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
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
