//! Anomaly scores from forecast error, with an adaptive threshold (pure).
//!
//! A forecaster's error on its own says little: a noisy metric misses by a
//! lot all the time. What matters is whether the *recent* errors are unusual
//! for *this* series. [`Likelihood`] keeps the distribution of the last
//! `long` errors and asks how far the mean of the last `short` errors sits in
//! its tail — the "anomaly likelihood" of Numenta's HTM detector, applied to
//! an LSTM's forecast error. The result is in `[0, 1]`: 0.5 is ordinary,
//! values near 1 are rare. The threshold therefore adapts to each series'
//! own noise: the same likelihood bound means "one in ten thousand" on a
//! quiet metric and on a noisy one.
//!
//! [`AlertGate`] turns likelihoods into alerts: a likelihood at or over the
//! threshold raises one, and for `refractory` rows afterwards no further alert
//! is raised (one incident, one alert).

use std::collections::VecDeque;

/// The anomaly likelihood of a stream of (non-negative) forecast errors.
#[derive(Debug, Clone)]
pub struct Likelihood {
    long: usize,
    short: usize,
    history: VecDeque<f64>,
    sum: f64,
    sumsq: f64,
    recent: VecDeque<f64>,
    recent_sum: f64,
}

impl Likelihood {
    /// Compares the mean of the last `short` errors with the distribution
    /// of the last `long` (both at least 1; `long` at least `short`).
    pub fn new(long: usize, short: usize) -> Self {
        let short = short.max(1);
        let long = long.max(short).max(2);
        Likelihood {
            long,
            short,
            history: VecDeque::with_capacity(long),
            sum: 0.0,
            sumsq: 0.0,
            recent: VecDeque::with_capacity(short),
            recent_sum: 0.0,
        }
    }

    /// Errors needed before a likelihood other than 0.5 is given.
    pub fn warm_up(&self) -> usize {
        self.long.min(100).max(self.short * 2)
    }

    /// Takes the next error and returns the likelihood that the recent
    /// errors are anomalous: `Φ((mean_short − mean_long) / std_long)`,
    /// where the long-run figures are those *before* this error.
    pub fn update(&mut self, error: f64) -> f64 {
        // Errors are in deviations: anything past 1e6 says no more than 1e6.
        let e = if error.is_finite() {
            error.clamp(0.0, 1e6)
        } else {
            0.0
        };
        self.recent.push_back(e);
        self.recent_sum += e;
        if self.recent.len() > self.short {
            self.recent_sum -= self.recent.pop_front().expect("non-empty");
        }
        let n = self.history.len();
        let likelihood = if n < self.warm_up() {
            0.5
        } else {
            let mean = self.sum / n as f64;
            let var = (self.sumsq / n as f64 - mean * mean).max(0.0);
            // A floor keeps a perfectly predictable series from calling its
            // first rounding error a catastrophe.
            let std = var.sqrt().max(1e-3 * mean.abs()).max(1e-6);
            let short_mean = self.recent_sum / self.recent.len() as f64;
            normal_cdf((short_mean - mean) / std)
        };
        self.history.push_back(e);
        self.sum += e;
        self.sumsq += e * e;
        if self.history.len() > self.long {
            let old = self.history.pop_front().expect("non-empty");
            self.sum -= old;
            self.sumsq -= old * old;
        }
        // Running sums drift; recompute them now and then.
        if self.history.len() == self.long && self.history.len() % 1024 == 0 {
            self.sum = self.history.iter().sum();
            self.sumsq = self.history.iter().map(|v| v * v).sum();
        }
        likelihood
    }
}

/// The standard normal distribution function.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// Raises an alert when a likelihood reaches the threshold, then holds off
/// for `refractory` rows.
#[derive(Debug, Clone)]
pub struct AlertGate {
    /// Likelihood at or over which an alert is raised.
    pub threshold: f64,
    /// Rows after an alert during which no other is raised.
    pub refractory: u64,
    quiet_until: u64,
}

impl AlertGate {
    /// A gate at `threshold` with `refractory` rows of hold-off.
    pub fn new(threshold: f64, refractory: u64) -> Self {
        AlertGate {
            threshold,
            refractory,
            quiet_until: 0,
        }
    }

    /// Whether row `row` (counting from 0, increasing) with this likelihood
    /// raises an alert.
    pub fn check(&mut self, row: u64, likelihood: f64) -> bool {
        if row < self.quiet_until || likelihood < self.threshold {
            return false;
        }
        self.quiet_until = row + 1 + self.refractory;
        true
    }

    /// Whether row `row` is inside the hold-off after an alert.
    pub fn quiet(&self, row: u64) -> bool {
        row < self.quiet_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn steady_errors_are_ordinary_and_a_burst_is_not() {
        let mut l = Likelihood::new(200, 5);
        let mut rng = 12345u64;
        let mut noise = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) as f64 / (1u64 << 31) as f64
        };
        let mut max_steady: f64 = 0.0;
        for i in 0..1000 {
            let v = l.update(1.0 + 0.2 * noise());
            if i > 300 {
                max_steady = max_steady.max(v);
            }
        }
        assert!(max_steady < 0.999, "{max_steady}");
        let mut burst: f64 = 0.0;
        for _ in 0..5 {
            burst = burst.max(l.update(5.0));
        }
        assert!(burst > 0.9999, "{burst}");
    }

    #[test]
    fn the_cdf_is_the_normal_one() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-12);
        assert!((normal_cdf(1.959_963_985) - 0.975).abs() < 1e-9);
        assert!((normal_cdf(-3.0) - 0.001_349_898).abs() < 1e-9);
    }

    #[test]
    fn the_gate_raises_once_per_incident() {
        let mut g = AlertGate::new(0.99, 10);
        let alerts: Vec<u64> = (0..40u64)
            .filter(|&r| g.check(r, if (5..30).contains(&r) { 1.0 } else { 0.5 }))
            .collect();
        assert_eq!(alerts, vec![5, 16, 27]);
    }

    proptest! {
        #[test]
        fn likelihoods_stay_in_the_unit_interval(errors in proptest::collection::vec(any::<f64>(), 0..600)) {
            let mut l = Likelihood::new(50, 3);
            for e in errors {
                let v = l.update(e);
                prop_assert!((0.0..=1.0).contains(&v), "{v}");
            }
        }
    }
}
