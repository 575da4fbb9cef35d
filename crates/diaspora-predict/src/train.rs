//! Training the forecaster on whole traces: what `diaspora predict train`
//! runs before it writes a checkpoint that monitors can start from.
//!
//! [`train`] makes a fresh [`Forecaster`], loads each trace into a series
//! state of its own, and takes [`TrainConfig::steps`] training steps over
//! them (each step a batch of windows drawn across the series). Every
//! [`TrainConfig::report_every`] steps, and after the last, it reports the
//! mean loss of the steps since the previous report ([`Progress`]).
//!
//! What this does not do: it does not hold a trace out (that is
//! [`crate::traces::twin_eval`]), stop early, or write the checkpoint
//! ([`Forecaster::save`] does, when the caller wants one).

use std::time::Instant;

use candle_core::Device;

use crate::forecast::{Forecaster, ForecasterConfig, SeriesState};
use crate::traces::Trace;
use crate::PredictError;

/// How [`train`] trains.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The forecaster (its `history` bounds how much of each trace is kept).
    pub forecaster: ForecasterConfig,
    /// Training steps.
    pub steps: usize,
    /// Report the mean loss every this many steps (and after the last; 0:
    /// only after the last).
    pub report_every: usize,
}

/// A report on the training so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Steps taken, from 1.
    pub step: usize,
    /// The mean loss of the steps since the previous report that trained
    /// (0 when none did: a step trains only once a series holds a window).
    pub mean_loss: f64,
    /// Time since training started, seconds.
    pub elapsed_s: f64,
}

/// The result of [`train`].
pub struct Trained {
    /// The trained forecaster.
    pub model: Forecaster,
    /// Rows over all traces.
    pub rows: usize,
    /// The time the steps took, seconds.
    pub elapsed_s: f64,
}

/// Trains a fresh forecaster on `traces` (see the module page).
pub fn train(
    traces: &[Trace],
    config: &TrainConfig,
    device: Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<Trained, PredictError> {
    let mut model = Forecaster::new(config.forecaster, device)?;
    let states: Vec<SeriesState> = traces
        .iter()
        .map(|t| {
            let mut s = SeriesState::new(&config.forecaster);
            for &v in &t.values {
                s.push(v);
            }
            s
        })
        .collect();
    let refs: Vec<&SeriesState> = states.iter().collect();
    let t0 = Instant::now();
    let mut recent = Vec::new();
    for i in 0..config.steps {
        if let Some(l) = model.train_step(&refs)? {
            recent.push(l);
        }
        let step = i + 1;
        if (config.report_every > 0 && step % config.report_every == 0) || step == config.steps {
            let n = recent.len().max(1) as f64;
            progress(Progress {
                step,
                mean_loss: recent.iter().sum::<f64>() / n,
                elapsed_s: t0.elapsed().as_secs_f64(),
            });
            recent.clear();
        }
    }
    Ok(Trained {
        model,
        rows: traces.iter().map(|t| t.values.len()).sum(),
        elapsed_s: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(name: &str, n: usize) -> Trace {
        Trace {
            name: name.into(),
            t_s: (0..n).map(|i| i as f64).collect(),
            values: (0..n).map(|i| (i as f64 * 0.3).sin()).collect(),
        }
    }

    #[test]
    fn reports_every_n_steps_and_after_the_last() {
        let config = TrainConfig {
            forecaster: ForecasterConfig {
                window: 8,
                horizon: 4,
                hidden: 8,
                batch: 4,
                history: 256,
                ..ForecasterConfig::default()
            },
            steps: 7,
            report_every: 3,
        };
        let mut reports = Vec::new();
        let trained = train(
            &[trace("a", 100), trace("b", 50)],
            &config,
            Device::Cpu,
            &mut |p| reports.push(p),
        )
        .expect("train");
        let steps: Vec<usize> = reports.iter().map(|p| p.step).collect();
        assert_eq!(steps, [3, 6, 7]);
        assert!(reports
            .iter()
            .all(|p| p.mean_loss.is_finite() && p.mean_loss > 0.0));
        assert_eq!(trained.rows, 150);
        assert_eq!(trained.model.train_steps(), 7);
    }

    #[test]
    fn with_report_every_zero_reports_only_the_last_step() {
        let config = TrainConfig {
            forecaster: ForecasterConfig {
                window: 8,
                horizon: 4,
                hidden: 8,
                batch: 4,
                ..ForecasterConfig::default()
            },
            steps: 2,
            report_every: 0,
        };
        let mut steps = Vec::new();
        train(&[trace("a", 40)], &config, Device::Cpu, &mut |p| {
            steps.push(p.step)
        })
        .expect("train");
        assert_eq!(steps, [2]);
    }
}
