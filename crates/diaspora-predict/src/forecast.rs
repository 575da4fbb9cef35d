//! The LSTM forecaster: candle-nn's LSTM and a linear head that forecast
//! the next `horizon` steps of a metric series, one new sample at a time.
//!
//! One model serves many series of the same kind (every link's RTT, every
//! partition's lag): each series keeps its own history, normaliser and
//! recurrent state ([`SeriesState`]), and the series' new samples go through
//! the network as one batch.
//!
//! **What the network sees.** Each row `x[t]`, with the series' running mean
//! `μ[t]` and deviation `σ[t]` at that row, is two inputs: the change
//! `(x[t] − x[t−1]) / σ[t]` and the level `(x[t] − μ[t]) / σ[t]`. After each
//! row the head predicts the future relative to it, `(x[t+k] − x[t]) / σ[t]`
//! for `k = 1..=H`, so a network that outputs zeros is the persistence
//! forecast and anything it learns is an improvement on it. Inputs and
//! targets are clamped to ±[`CLAMP`] so one wild sample cannot blow the
//! weights up.
//!
//! **Streaming, exactly as trained.** Inference costs one LSTM step per new
//! sample (not a pass over a window). So that what the network meets at run
//! time is what it was trained on, every series runs two recurrent streams,
//! each reset to zero every `2W` samples (`W` = `window`), staggered by `W`:
//! at every sample one of them has read between `W` and `2W` samples since
//! its reset, and that one forecasts. Training runs sequences of `2W` rows
//! from a zero state and scores the forecasts after `W` to `2W` rows — the
//! same range of context.
//!
//! **Online training.** [`Forecaster::train_step`] draws a mini-batch of
//! such sequences (with their true futures) at random from the series'
//! recent history and takes one AdamW step on the mean squared error.
//! Nothing is trained on data the forecast has not yet seen: a sequence is
//! usable only once its whole future has arrived.
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
/// Largest batch (rows of the network, two per series) of [`Forecaster::forecast`].
pub const BATCH_MAX: usize = 1 << 16;
/// Largest checkpoint file read, bytes.
pub const CHECKPOINT_BYTES_MAX: u64 = 256 << 20;

/// Inputs per step (change and level).
const INPUTS: usize = 2;

/// How the forecaster is shaped and trained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecasterConfig {
    /// Context: a forecast is made after `window` to `2 × window` samples
    /// of recurrent state (see the module docs).
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

/// One recurrent stream of a series (see the module docs).
#[derive(Debug, Clone, Default)]
struct Stream {
    h: Vec<f32>,
    c: Vec<f32>,
    /// Samples read since the last reset; `None` before the stream starts.
    age: Option<usize>,
}

/// One series: its recent history (value, mean and deviation at that row)
/// and its recurrent state.
#[derive(Debug, Clone)]
pub struct SeriesState {
    rows: VecDeque<(f32, f32, f32)>,
    capacity: usize,
    norm: RunningNorm,
    seen: u64,
    /// Rows the recurrent streams have read.
    consumed: u64,
    streams: [Stream; 2],
    /// The value before the oldest held row (for its change input).
    before_first: Option<f32>,
}

impl SeriesState {
    /// An empty series keeping `config.history` rows.
    pub fn new(config: &ForecasterConfig) -> Self {
        SeriesState {
            rows: VecDeque::with_capacity(config.history.min(1 << 16)),
            capacity: config.history,
            norm: RunningNorm::new(config.norm_halflife),
            seen: 0,
            consumed: 0,
            streams: Default::default(),
            before_first: None,
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
            self.before_first = self.rows.pop_front().map(|r| r.0);
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

    /// The network's two inputs for held row `i`.
    fn input(&self, i: usize) -> [f32; 2] {
        let (v, mean, std) = self.rows[i];
        let prev = if i > 0 {
            self.rows[i - 1].0
        } else {
            self.before_first.unwrap_or(v)
        };
        [
            ((v - prev) / std).clamp(-CLAMP, CLAMP),
            ((v - mean) / std).clamp(-CLAMP, CLAMP),
        ]
    }

    /// Training targets after held row `i`: `(x[i+k] − x[i]) / σ[i]`.
    fn targets(&self, i: usize, horizon: usize, out: &mut Vec<f32>) {
        let (v, _, std) = self.rows[i];
        for k in 1..=horizon {
            out.push(((self.rows[i + k].0 - v) / std).clamp(-CLAMP, CLAMP));
        }
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

    /// Reads every row each series holds and its streams have not (one,
    /// normally: push a sample, then forecast), one LSTM step per row for
    /// all series and both streams in one batch, and returns each series'
    /// forecast of the next `horizon` values from its latest row — `None`
    /// for a series with fewer than `window` samples.
    pub fn forecast(
        &self,
        series: &mut [&mut SeriesState],
    ) -> Result<Vec<Option<Vec<f64>>>, PredictError> {
        let (w, hid) = (self.config.window, self.config.hidden);
        if series.len() > BATCH_MAX / 2 {
            return Err(PredictError::Limit(format!(
                "forecast batch of {} series, over {}",
                series.len(),
                BATCH_MAX / 2
            )));
        }
        loop {
            // (series, held row) of every series with a row to read.
            let pending: Vec<(usize, usize)> = series
                .iter()
                .enumerate()
                .filter(|(_, s)| s.consumed < s.seen)
                .map(|(i, s)| {
                    let first = s.seen - s.rows.len() as u64;
                    let next = s.consumed.max(first);
                    (i, (next - first) as usize)
                })
                .collect();
            if pending.is_empty() {
                break;
            }
            let n = pending.len() * 2;
            let mut x = Vec::with_capacity(n * INPUTS);
            let mut h = Vec::with_capacity(n * hid);
            let mut c = Vec::with_capacity(n * hid);
            for &(i, row) in &pending {
                let s = &mut *series[i];
                let input = s.input(row);
                let t = s.seen - s.rows.len() as u64 + row as u64;
                for (k, st) in s.streams.iter_mut().enumerate() {
                    // Stream 1 starts W samples after stream 0; each resets
                    // after 2W samples.
                    if st.age.is_none() && t >= (k * w) as u64 {
                        st.age = Some(0);
                    }
                    if st.age == Some(2 * w) || st.h.len() != hid {
                        st.age = st.age.map(|_| 0);
                        st.h = vec![0.0; hid];
                        st.c = vec![0.0; hid];
                    }
                    x.extend_from_slice(&input);
                    h.extend_from_slice(&st.h);
                    c.extend_from_slice(&st.c);
                }
            }
            let dev = &self.device;
            let x = Tensor::from_vec(x, (n, INPUTS), dev).map_err(model)?;
            let state = candle_nn::rnn::LSTMState::new(
                Tensor::from_vec(h, (n, hid), dev).map_err(model)?,
                Tensor::from_vec(c, (n, hid), dev).map_err(model)?,
            );
            let next = self.lstm.step(&x, &state).map_err(model)?;
            let h: Vec<f32> = next
                .h
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .map_err(model)?;
            let c: Vec<f32> = next
                .c
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .map_err(model)?;
            for (j, &(i, _)) in pending.iter().enumerate() {
                let s = &mut *series[i];
                for (k, st) in s.streams.iter_mut().enumerate() {
                    let r = (2 * j + k) * hid..(2 * j + k + 1) * hid;
                    if let Some(age) = st.age.as_mut() {
                        st.h.copy_from_slice(&h[r.clone()]);
                        st.c.copy_from_slice(&c[r]);
                        *age += 1;
                    }
                }
                s.consumed = s.consumed.max(s.seen - s.rows.len() as u64) + 1;
            }
        }
        // Forecast from the stream with W..=2W samples of context.
        let mut out = vec![None; series.len()];
        let mut ready = Vec::new();
        let mut hs = Vec::new();
        for (i, s) in series.iter().enumerate() {
            let st = s
                .streams
                .iter()
                .find(|st| st.age.is_some_and(|a| (w..=2 * w).contains(&a)));
            if let (Some(st), false) = (st, s.rows.is_empty()) {
                ready.push(i);
                hs.extend_from_slice(&st.h);
            }
        }
        if ready.is_empty() {
            return Ok(out);
        }
        let h = Tensor::from_vec(hs, (ready.len(), hid), &self.device).map_err(model)?;
        let rows: Vec<Vec<f32>> = self
            .head
            .forward(&h)
            .and_then(|t| t.to_vec2())
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

    /// One AdamW step on a mini-batch of sequences drawn at random from the
    /// series' histories: `2 × window` rows from a zero state, scored on the
    /// forecasts after `window` to `2 × window` rows (only sequences whose
    /// whole future is known). Returns the batch's loss (mean squared
    /// normalised error), or `None` when no series holds enough rows yet.
    pub fn train_step(&mut self, series: &[&SeriesState]) -> Result<Option<f64>, PredictError> {
        let (w, h) = (self.config.window, self.config.horizon);
        let len = 2 * w;
        let usable: Vec<(usize, usize)> = series
            .iter()
            .enumerate()
            .filter(|(_, s)| s.len() >= len + h)
            .map(|(i, s)| (i, s.len() - len - h + 1))
            .collect();
        let total: usize = usable.iter().map(|u| u.1).sum();
        if total == 0 {
            return Ok(None);
        }
        let b = self.config.batch;
        let scored = w + 1; // rows w−1 ..= 2w−1 of the sequence
        let mut inputs = Vec::with_capacity(b * len * INPUTS);
        let mut targets = Vec::with_capacity(b * scored * h);
        for _ in 0..b {
            // Uniform over every usable sequence of every series.
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
            for r in k..k + len {
                inputs.extend_from_slice(&s.input(r));
            }
            for r in k + w - 1..k + len {
                s.targets(r, h, &mut targets);
            }
        }
        let x = Tensor::from_vec(inputs, (b, len, INPUTS), &self.device).map_err(model)?;
        let states = self.lstm.seq(&x).map_err(model)?;
        // (b, scored, hidden) → (b × scored, hidden): batch-major, as the targets.
        let hs: Vec<Tensor> = states[w - 1..].iter().map(|st| st.h.clone()).collect();
        let hs = Tensor::stack(&hs, 1)
            .and_then(|t| t.reshape((b * scored, self.config.hidden)))
            .map_err(model)?;
        let pred = self.head.forward(&hs).map_err(model)?;
        let target = Tensor::from_vec(targets, (b * scored, h), &self.device).map_err(model)?;
        let loss = (pred - target)
            .and_then(|d| d.sqr())
            .and_then(|d| d.mean_all())
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
        // candle's tensors are safetensors views (copied to host bytes).
        let bytes = safetensors::tensor::serialize(tensors.iter(), None)
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

/// The forecaster's recent error at each horizon step, learned from its
/// own forecasts as their targets arrive: forecasts made at past samples
/// are kept, and when a sample arrives each forecast that targeted it
/// updates an exponentially weighted mean squared error (plain mean for
/// the first 200 samples, then weight 1/200).
#[derive(Debug, Clone)]
pub struct HorizonErrors {
    made: VecDeque<Vec<f64>>,
    mse: Vec<f64>,
    n: u64,
    horizon: usize,
}

impl HorizonErrors {
    /// For forecasts of `horizon` steps.
    pub fn new(horizon: usize) -> Self {
        HorizonErrors {
            made: VecDeque::with_capacity(horizon + 1),
            mse: vec![0.0; horizon],
            n: 0,
            horizon,
        }
    }

    /// A sample arrived: scores the forecasts that targeted it and returns
    /// the one-step forecast made for it, if any.
    pub fn observe(&mut self, value: f64) -> Option<f64> {
        let n_made = self.made.len();
        let mut one_step = None;
        let a = if self.n < 200 {
            1.0 / (self.n + 1) as f64
        } else {
            0.005
        };
        for (age, f) in self.made.iter().enumerate() {
            let h = n_made - age; // made h samples ago: its step h − 1 targets now
            if h <= f.len() && h <= self.horizon {
                let e = f[h - 1] - value;
                self.mse[h - 1] += a * (e * e - self.mse[h - 1]);
                if h == 1 {
                    one_step = Some(f[0]);
                }
            }
        }
        if n_made > 0 {
            self.n += 1;
        }
        one_step
    }

    /// Keeps a forecast made now.
    pub fn push(&mut self, forecast: Vec<f64>) {
        if self.made.len() == self.horizon {
            self.made.pop_front();
        }
        self.made.push_back(forecast);
    }

    /// Whether every horizon step has been scored a few times.
    pub fn warm(&self) -> bool {
        self.n >= 2 * self.horizon as u64
    }

    /// The root mean squared error at step `k` (0-based).
    pub fn rmse(&self, k: usize) -> f64 {
        self.mse.get(k).copied().unwrap_or(f64::INFINITY).sqrt()
    }

    /// The confidence that the series reaches `threshold` within the first
    /// `steps` of `forecast`: the largest, over those steps, of
    /// `Φ((forecast − threshold) / rmse)` (a normal error at each step).
    /// Before the errors are warm, 1 when the forecast reaches the
    /// threshold and 0 otherwise — the forecast alone.
    pub fn reach_confidence(&self, forecast: &[f64], threshold: f64, steps: usize) -> f64 {
        forecast
            .iter()
            .take(steps)
            .enumerate()
            .map(|(k, &v)| {
                let sd = self.rmse(k);
                if self.warm() && sd > 0.0 && sd.is_finite() {
                    crate::anomaly::normal_cdf((v - threshold) / sd)
                } else if v >= threshold {
                    1.0
                } else {
                    0.0
                }
            })
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ForecasterConfig {
        ForecasterConfig {
            window: 8,
            horizon: 4,
            hidden: 16,
            batch: 16,
            history: 4096,
            learning_rate: 1e-2,
            ..ForecasterConfig::default()
        }
    }

    fn wave(t: usize) -> f64 {
        10.0 + (t as f64 * 0.3).sin()
    }

    #[test]
    fn untrained_it_is_persistence_and_needs_a_window_of_context() {
        let f = Forecaster::new(cfg(), Device::Cpu).unwrap();
        let mut s = SeriesState::new(&cfg());
        for t in 0..7 {
            s.push(wave(t));
            assert_eq!(f.forecast(&mut [&mut s]).unwrap(), vec![None]);
        }
        s.push(wave(7));
        let out = f.forecast(&mut [&mut s]).unwrap().pop().flatten().unwrap();
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|&v| (v - wave(7)).abs() < 1e-4), "{out:?}");
    }

    #[test]
    fn it_learns_a_wave_online_and_beats_persistence() {
        let c = cfg();
        let mut f = Forecaster::new(c, Device::Cpu).unwrap();
        let mut hist = SeriesState::new(&c);
        for t in 0..600 {
            hist.push(wave(t));
        }
        for _ in 0..300 {
            f.train_step(&[&hist]).unwrap().unwrap();
        }
        // Stream a fresh stretch, one sample at a time, scoring every horizon.
        let mut s = SeriesState::new(&c);
        let (mut se, mut se_p, mut n) = (0.0, 0.0, 0);
        let mut made: Vec<(usize, Vec<f64>)> = Vec::new();
        for t in 1000..1300 {
            s.push(wave(t));
            if let Some(fc) = f.forecast(&mut [&mut s]).unwrap().pop().flatten() {
                made.push((t, fc));
            }
        }
        for (t, fc) in &made {
            for (k, v) in fc.iter().enumerate() {
                let y = wave(t + k + 1);
                se += (v - y).powi(2);
                se_p += (wave(*t) - y).powi(2);
                n += 1;
            }
        }
        let (r, p) = ((se / n as f64).sqrt(), (se_p / n as f64).sqrt());
        assert!(r < 0.5 * p, "LSTM RMSE {r:.4} vs persistence {p:.4}");
        // A checkpoint reloads to the same forecasts.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        f.save(&path).unwrap();
        let g = Forecaster::load(&path, Device::Cpu).unwrap();
        assert_eq!(g.train_steps(), 300);
        let (mut a, mut b) = (SeriesState::new(&c), SeriesState::new(&c));
        for t in 0..40 {
            a.push(wave(t));
            b.push(wave(t));
            let fa = f.forecast(&mut [&mut a]).unwrap();
            let fb = g.forecast(&mut [&mut b]).unwrap();
            assert_eq!(fa, fb);
        }
    }

    #[test]
    fn batched_forecasts_equal_one_series_at_a_time() {
        let c = cfg();
        let f = Forecaster::new(c, Device::Cpu).unwrap();
        let mut many: Vec<SeriesState> = (0..5).map(|_| SeriesState::new(&c)).collect();
        let mut one: Vec<SeriesState> = (0..5).map(|_| SeriesState::new(&c)).collect();
        for t in 0..30 {
            for (i, (m, o)) in many.iter_mut().zip(one.iter_mut()).enumerate() {
                m.push(wave(t + 7 * i));
                o.push(wave(t + 7 * i));
            }
            let mut refs: Vec<&mut SeriesState> = many.iter_mut().collect();
            let batched = f.forecast(&mut refs).unwrap();
            for (i, o) in one.iter_mut().enumerate() {
                let single = f.forecast(&mut [o]).unwrap().pop().unwrap();
                match (&batched[i], &single) {
                    (Some(x), Some(y)) => {
                        for (a, b) in x.iter().zip(y) {
                            assert!((a - b).abs() < 1e-5, "{a} {b}");
                        }
                    }
                    (None, None) => {}
                    other => panic!("{other:?}"),
                }
            }
        }
    }
}
