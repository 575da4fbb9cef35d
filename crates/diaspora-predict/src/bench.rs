//! `diaspora bench predict`: inference and training speed of the forecaster.
//!
//! Inference is measured the way a monitor runs it: every series gets a new
//! sample and a fresh forecast of the next `horizon` values (one recurrent
//! step per series and stream, all series in one batch). The figure that
//! matters, `inference_us_per_series_step`, is the time of one such batched
//! step divided by the series in the batch. The same run measures the same
//! work one series per call as the baseline, and one online training step.

use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use crate::forecast::{Forecaster, ForecasterConfig, SeriesState};
use crate::PredictError;

/// What to measure.
#[derive(Debug, Clone)]
pub struct PredictBenchConfig {
    /// The forecaster measured.
    pub forecaster: ForecasterConfig,
    /// Series per batch.
    pub batch: usize,
    /// Timed batched forecasts.
    pub iterations: usize,
    /// Timed training steps.
    pub train_iterations: usize,
    /// The device's name (`cpu`, `cuda`).
    pub device: String,
}

impl Default for PredictBenchConfig {
    fn default() -> Self {
        PredictBenchConfig {
            forecaster: ForecasterConfig::default(),
            batch: 256,
            iterations: 50,
            train_iterations: 30,
            device: "cpu".into(),
        }
    }
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct PredictBenchReport {
    /// Device measured.
    pub device: String,
    /// Window, horizon and hidden size.
    pub window: usize,
    /// Steps forecast.
    pub horizon: usize,
    /// LSTM hidden size.
    pub hidden: usize,
    /// Series per batch.
    pub batch: usize,
    /// Batched forecast time per series and new sample, µs (the target is ≤ 20).
    pub inference_us_per_series_step: f64,
    /// One batched forecast, ms.
    pub batch_forecast_ms: f64,
    /// Baseline: one series per call, µs per series-step.
    pub unbatched_us_per_series_step: f64,
    /// One online training step (a mini-batch of windows, backward and AdamW), ms.
    pub train_step_ms: f64,
    /// Windows per training step.
    pub train_batch: usize,
}

fn series(config: &ForecasterConfig, n: usize) -> Vec<SeriesState> {
    (0..n)
        .map(|i| {
            let mut s = SeriesState::new(config);
            for t in 0..(config.window + config.horizon + 64) {
                s.push(((t as f64 + i as f64) * 0.1).sin() + 0.01 * i as f64);
            }
            s
        })
        .collect()
}

/// Runs the benchmark on `device`.
pub fn run(
    config: &PredictBenchConfig,
    device: Device,
) -> Result<PredictBenchReport, PredictError> {
    let fc = config.forecaster;
    let mut model = Forecaster::new(fc, device)?;
    let mut all = series(&fc, config.batch.max(1));
    let mut t_value = 0.0f64;
    // One new sample per series, then one batched forecast: a series-step.
    let mut tick = |all: &mut Vec<SeriesState>, model: &Forecaster| -> Result<(), PredictError> {
        t_value += 0.1;
        for (i, s) in all.iter_mut().enumerate() {
            s.push((t_value + i as f64).sin());
        }
        let mut refs: Vec<&mut SeriesState> = all.iter_mut().collect();
        let out = model.forecast(&mut refs)?;
        debug_assert!(out.iter().all(Option::is_some));
        Ok(())
    };
    // Warm up (the recurrent streams read the history; allocations).
    for _ in 0..3 {
        tick(&mut all, &model)?;
    }
    let t = Instant::now();
    for _ in 0..config.iterations.max(1) {
        tick(&mut all, &model)?;
    }
    let batch_s = t.elapsed().as_secs_f64() / config.iterations.max(1) as f64;
    // Baseline: the same series, one per call.
    let single = (config.iterations.max(1) * 4).min(400);
    let t = Instant::now();
    for i in 0..single {
        let k = i % all.len();
        all[k].push((i as f64 * 0.1).sin());
        model.forecast(&mut [&mut all[k]])?;
    }
    let single_s = t.elapsed().as_secs_f64() / single as f64;
    let refs: Vec<&SeriesState> = all.iter().collect();
    for _ in 0..2 {
        model.train_step(&refs)?;
    }
    let t = Instant::now();
    for _ in 0..config.train_iterations.max(1) {
        model.train_step(&refs)?;
    }
    let train_s = t.elapsed().as_secs_f64() / config.train_iterations.max(1) as f64;
    Ok(PredictBenchReport {
        device: config.device.clone(),
        window: fc.window,
        horizon: fc.horizon,
        hidden: fc.hidden,
        batch: all.len(),
        inference_us_per_series_step: batch_s * 1e6 / all.len() as f64,
        batch_forecast_ms: batch_s * 1e3,
        unbatched_us_per_series_step: single_s * 1e6,
        train_step_ms: train_s * 1e3,
        train_batch: fc.batch,
    })
}
