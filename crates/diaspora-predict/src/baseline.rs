//! Baselines measured in the same run as the LSTM: NAB's windowed Gaussian
//! detector, and the persistence and EWMA forecasts.

use std::collections::VecDeque;

use crate::anomaly::normal_cdf;

/// NAB's "windowed Gaussian" detector, re-implemented from its description
/// in NAB (`nab/detectors/gaussian/windowedGaussian_detector.py`): the
/// score of a value is `1 − P(|Z| ≥ |z|)`-style tail probability of the
/// value under a normal fitted to a trailing window of `window` values,
/// refitted every `step` values once the window is full.
pub fn windowed_gaussian(values: &[f64], window: usize, step: usize) -> Vec<f64> {
    let (window, step) = (window.max(2), step.max(1));
    let mut data: VecDeque<f64> = VecDeque::with_capacity(window);
    let mut buffer = Vec::with_capacity(step);
    let (mut mean, mut std) = (0.0, 1.0);
    let refit = |d: &VecDeque<f64>| {
        let n = d.len() as f64;
        let m = d.iter().sum::<f64>() / n;
        let v = d.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
        (m, if v > 0.0 { v.sqrt() } else { 1e-6 })
    };
    values
        .iter()
        .map(|&x| {
            let score = if data.is_empty() {
                0.0
            } else {
                // Upper tail of |x − mean|: 1 − Q(|z|).
                let z = (x - mean).abs() / std;
                1.0 - (1.0 - normal_cdf(z))
            };
            if data.len() < window {
                data.push_back(x);
                (mean, std) = refit(&data);
            } else {
                buffer.push(x);
                if buffer.len() == step {
                    for v in buffer.drain(..) {
                        data.pop_front();
                        data.push_back(v);
                    }
                    (mean, std) = refit(&data);
                }
            }
            score
        })
        .collect()
}

/// The persistence forecast of `values[t + h]` made at `t`: `values[t]`.
pub fn persistence(values: &[f64], t: usize) -> f64 {
    values[t]
}

/// An exponentially weighted moving average with smoothing `alpha`.
#[derive(Debug, Clone, Copy)]
pub struct Ewma {
    /// Weight of the newest value.
    pub alpha: f64,
    value: Option<f64>,
}

impl Ewma {
    /// An empty average.
    pub fn new(alpha: f64) -> Self {
        Ewma {
            alpha: alpha.clamp(1e-6, 1.0),
            value: None,
        }
    }

    /// Takes a value and returns the average (the EWMA forecast of every
    /// future step).
    pub fn push(&mut self, x: f64) -> f64 {
        let v = match self.value {
            None => x,
            Some(v) => v + self.alpha * (x - v),
        };
        self.value = Some(v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outlier_scores_near_one_and_ordinary_values_do_not() {
        let mut v: Vec<f64> = (0..500).map(|i| (i % 7) as f64).collect();
        v.push(100.0);
        let s = windowed_gaussian(&v, 400, 50);
        assert!(s[500] > 0.999_999, "{}", s[500]);
        assert!(
            s[100..500].iter().all(|&x| x < 0.999),
            "ordinary values stay low"
        );
    }

    #[test]
    fn ewma_follows_a_step() {
        let mut e = Ewma::new(0.5);
        assert_eq!(e.push(0.0), 0.0);
        assert_eq!(e.push(4.0), 2.0);
        assert_eq!(e.push(4.0), 3.0);
    }
}
