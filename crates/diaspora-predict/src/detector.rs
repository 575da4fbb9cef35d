//! The forecast-error anomaly detector, run over whole series (NAB).
//!
//! Each series gets its own freshly initialised [`Forecaster`] that learns
//! online as the rows arrive; nothing is learned ahead of time or across
//! series. Every row is forecast one step ahead from the rows before it
//! (the recurrent state, see [`crate::forecast`]), and every `chunk` rows
//! the model takes `train_steps_per_chunk` training steps on the history
//! so far.
//!
//! A row's anomaly score is the [`Likelihood`] of its normalised one-step
//! error; after an [`AlertGate`] alert the scores of the hold-off rows are
//! halved, so one incident gives one detection.

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::anomaly::{AlertGate, Likelihood};
use crate::forecast::{Forecaster, ForecasterConfig, SeriesState};
use crate::nab::{self, Corpus, Profile};
use crate::PredictError;

/// How the detector runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// The forecaster (its horizon is used for training; scoring uses the
    /// one-step forecast).
    pub forecaster: ForecasterConfig,
    /// The model trains every this many rows.
    pub chunk: usize,
    /// Training steps after each chunk.
    pub train_steps_per_chunk: usize,
    /// Errors in the likelihood's long-run distribution.
    pub likelihood_long: usize,
    /// Errors averaged for the likelihood's recent mean.
    pub likelihood_short: usize,
    /// Likelihood at which an alert is raised.
    pub alert_threshold: f64,
    /// Rows after an alert during which scores are halved.
    pub refractory: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            forecaster: ForecasterConfig {
                window: 16,
                horizon: 4,
                hidden: 16,
                batch: 32,
                history: 2048,
                ..ForecasterConfig::default()
            },
            chunk: 8,
            train_steps_per_chunk: 2,
            likelihood_long: 500,
            likelihood_short: 3,
            alert_threshold: 0.9999,
            refractory: 200,
        }
    }
}

/// What the detector made of one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// One anomaly score per row, in `[0, 1]`.
    pub scores: Vec<f64>,
    /// Rows that raised an alert.
    pub alerts: Vec<usize>,
    /// Training steps taken.
    pub train_steps: u64,
    /// Root mean squared one-step error of the forecaster (rows with a forecast).
    pub rmse: f64,
    /// The same for the persistence forecast (the previous value).
    pub rmse_persistence: f64,
}

/// Runs the detector over one series' values.
pub fn detect(
    values: &[f64],
    config: &DetectorConfig,
    device: &Device,
) -> Result<Detection, PredictError> {
    let fc = config.forecaster;
    if config.chunk == 0 {
        return Err(PredictError::Data("detector chunk must be ≥ 1".into()));
    }
    let mut model = Forecaster::new(fc, device.clone())?;
    let mut series = SeriesState::new(&fc);
    let mut likelihood = Likelihood::new(config.likelihood_long, config.likelihood_short);
    let mut gate = AlertGate::new(config.alert_threshold, config.refractory);
    let mut scores = vec![0.0; values.len()];
    let mut alerts = Vec::new();
    let (mut se, mut se_p, mut n_err) = (0.0, 0.0, 0u64);
    // The one-step forecast made at the previous row, with that row's
    // value and deviation.
    let mut pending: Option<(f64, f64, f64)> = None;
    for (r, &raw) in values.iter().enumerate() {
        let x = if raw.is_finite() {
            raw
        } else {
            series.last().unwrap_or(0.0)
        };
        if let Some((f, prev, std)) = pending.take() {
            let err = x - f;
            se += err * err;
            se_p += (x - prev) * (x - prev);
            n_err += 1;
            let l = likelihood.update(err.abs() / std);
            let row = r as u64;
            scores[r] = if gate.check(row, l) {
                alerts.push(r);
                l
            } else if gate.quiet(row) {
                l * 0.5
            } else {
                l
            };
        }
        series.push(x);
        if let Some(f) = model.forecast(&mut [&mut series])?.pop().flatten() {
            pending = Some((f[0], x, series.norm().std()));
        }
        if (r + 1) % config.chunk == 0 {
            for _ in 0..config.train_steps_per_chunk {
                model.train_step(&[&series])?;
            }
        }
    }
    let rmse = |s: f64| {
        if n_err == 0 {
            0.0
        } else {
            (s / n_err as f64).sqrt()
        }
    };
    Ok(Detection {
        scores,
        alerts,
        train_steps: model.train_steps(),
        rmse: rmse(se),
        rmse_persistence: rmse(se_p),
    })
}

/// The detector's NAB result: the corpus score under each profile with the
/// threshold optimised for it, and the per-series scores.
#[derive(Debug, Clone, Serialize)]
pub struct NabReport {
    /// Normalised corpus score, standard profile.
    pub nab_score_standard: f64,
    /// Normalised corpus score, reward-low-FP profile.
    pub nab_score_reward_low_fp: f64,
    /// Normalised corpus score, reward-low-FN profile.
    pub nab_score_reward_low_fn: f64,
    /// The standard profile's optimised threshold.
    pub threshold_standard: f64,
    /// Series in the corpus.
    pub series_count: usize,
    /// Anomaly windows in the corpus.
    pub window_count: usize,
    /// Rows scored.
    pub rows: usize,
    /// Per series (standard profile at the corpus threshold).
    pub series: Vec<NabSeries>,
    /// Baselines scored on the same corpus in the same run (standard
    /// profile, each with its own optimised threshold): NAB's windowed
    /// Gaussian (window 6400, step 100, as NAB runs it).
    pub baselines: std::collections::BTreeMap<String, f64>,
    /// The detector's configuration.
    pub detector: DetectorConfig,
    /// Published standard-profile scores on the *full* 58-series corpus,
    /// for orientation only (this corpus may be a subset).
    pub reference_full_corpus: Vec<(&'static str, f64)>,
}

/// One series of a [`NabReport`].
#[derive(Debug, Clone, Serialize)]
pub struct NabSeries {
    /// The series' name (path under `data/`).
    pub name: String,
    /// Normalised score (`None` for a series without windows: its
    /// perfect and null scores are equal).
    pub score: Option<f64>,
    /// Raw score.
    pub raw: f64,
    /// True positives (windows detected).
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// Missed windows.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Alerts the detector raised on its own threshold.
    pub alerts: usize,
    /// Forecaster one-step RMSE over persistence's.
    pub rmse_ratio_to_persistence: f64,
}

/// Published NAB standard-profile scores (full corpus).
pub const NAB_REFERENCE: [(&str, f64); 5] = [
    ("HTM", 70.5),
    ("CAD OSE", 69.9),
    ("KNN-CAD", 58.0),
    ("Twitter ADVec", 47.1),
    ("Windowed Gaussian", 39.6),
];

/// Runs the detector over every series of the corpus (on up to `threads`
/// threads, each series independent) and scores it as NAB does.
pub fn nab_eval(
    corpus: &Corpus,
    config: &DetectorConfig,
    device: &Device,
    threads: usize,
) -> Result<NabReport, PredictError> {
    let n = corpus.series.len();
    let mut results: Vec<Option<Result<Detection, PredictError>>> = (0..n).map(|_| None).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots = std::sync::Mutex::new(&mut results);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, 64) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let d = detect(&corpus.series[i].0.values, config, device);
                slots.lock().expect("slots")[i] = Some(d);
            });
        }
    });
    let detections: Vec<Detection> = results
        .into_iter()
        .map(|r| r.expect("every series ran"))
        .collect::<Result<_, _>>()?;
    let scores: Vec<&[f64]> = detections.iter().map(|d| d.scores.as_slice()).collect();
    let score_with = |p: &Profile| -> Result<(f64, f64), PredictError> {
        let o = nab::optimize_threshold(corpus, &scores, p)?;
        Ok((o.normalised.unwrap_or(0.0), o.threshold))
    };
    let (standard, threshold) = score_with(&Profile::STANDARD)?;
    let (low_fp, _) = score_with(&Profile::REWARD_LOW_FP)?;
    let (low_fn, _) = score_with(&Profile::REWARD_LOW_FN)?;
    let at = nab::corpus_score(corpus, &scores, threshold, &Profile::STANDARD)?;
    let gaussian: Vec<Vec<f64>> = corpus
        .series
        .iter()
        .map(|(s, _)| crate::baseline::windowed_gaussian(&s.values, 6400, 100))
        .collect();
    let mut baselines = std::collections::BTreeMap::new();
    baselines.insert(
        "windowed_gaussian".to_string(),
        nab::optimize_threshold(corpus, &gaussian, &Profile::STANDARD)?
            .normalised
            .unwrap_or(0.0),
    );
    let series = at
        .series
        .iter()
        .zip(&detections)
        .map(|((name, s), d)| NabSeries {
            name: name.clone(),
            score: s.normalised,
            raw: s.raw,
            tp: s.tp,
            fp: s.fp,
            fn_: s.fn_,
            alerts: d.alerts.len(),
            rmse_ratio_to_persistence: if d.rmse_persistence > 0.0 {
                d.rmse / d.rmse_persistence
            } else {
                1.0
            },
        })
        .collect();
    Ok(NabReport {
        nab_score_standard: standard,
        nab_score_reward_low_fp: low_fp,
        nab_score_reward_low_fn: low_fn,
        threshold_standard: threshold,
        series_count: n,
        window_count: corpus.window_count(),
        rows: corpus.series.iter().map(|(s, _)| s.len()).sum(),
        series,
        baselines,
        detector: *config,
        reference_full_corpus: NAB_REFERENCE.to_vec(),
    })
}
