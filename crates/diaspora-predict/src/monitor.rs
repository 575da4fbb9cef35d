//! Declarative monitors: which metric streams, which model, which events.
//!
//! A monitor is a TOML file (example: `monitors/wan-congestion.toml`):
//!
//! ```toml
//! name = "wan-congestion"
//!
//! [source]
//! topic = "diaspora.metrics"     # metric events (diaspora-telemetry format)
//! metric = "link.utilisation"    # the series' name
//! labels = { link = "wan" }      # only series with these labels; each
//!                                # distinct label set is its own series
//! step_s = 0.5                   # the metric's sampling interval
//!
//! [model]
//! checkpoint = "predict/models/congestion-ramp.safetensors"  # optional
//! save_to = "/tmp/wan-congestion.safetensors"                # optional
//! train_every = 2                # a training step every N samples (0: never)
//! # window, horizon, hidden, learning_rate, … when there is no checkpoint
//!
//! [prediction]
//! threshold = 0.95               # the value that means trouble
//! confidence_min = 0.5           # publish a prediction at this confidence
//! repeat_s = 5                   # at most one prediction per series this often
//!
//! [anomaly]
//! enabled = true                 # alerts from forecast error
//! likelihood_long = 500
//! likelihood_short = 5
//! alert_threshold = 0.9999
//! refractory_s = 30
//!
//! [output]
//! topic = "diaspora.predictions"
//! events = ["prediction", "alert"]
//! ```
//!
//! [`MonitorCore`] is the pure part: it takes metric samples with their
//! times and returns the events to publish. The clock is the samples' own.

use std::collections::BTreeMap;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::anomaly::{AlertGate, Likelihood};
use crate::forecast::{Forecaster, ForecasterConfig, HorizonErrors, SeriesState};
use crate::PredictError;

/// Most series one monitor follows.
pub const SERIES_MAX: usize = 4096;
/// Largest encoded monitor event, bytes.
pub const EVENT_BYTES_MAX: usize = 64 << 10;
/// Most forecast values carried by an event.
pub const FORECAST_VALUES_MAX: usize = 1024;

/// A monitor specification (TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    /// The monitor's name ([A-Za-z0-9._-], 1–100 characters).
    pub name: String,
    /// What it reads.
    pub source: SourceSpec,
    /// The model.
    #[serde(default)]
    pub model: ModelSpec,
    /// When it predicts.
    pub prediction: PredictionSpec,
    /// Forecast-error alerts.
    #[serde(default)]
    pub anomaly: AnomalySpec,
    /// Where events go.
    #[serde(default)]
    pub output: OutputSpec,
}

/// The metric streams a monitor reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Topic of metric events.
    #[serde(default = "default_metrics_topic")]
    pub topic: String,
    /// Metric name.
    pub metric: String,
    /// Required labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Sampling interval of the metric, seconds.
    #[serde(default = "default_step")]
    pub step_s: f64,
}

fn default_metrics_topic() -> String {
    "diaspora.metrics".into()
}
fn default_step() -> f64 {
    0.5
}

/// The model a monitor uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSpec {
    /// Start from this safetensors checkpoint (its configuration wins).
    pub checkpoint: Option<std::path::PathBuf>,
    /// Save the model here (on exit and every `save_every_s`).
    pub save_to: Option<std::path::PathBuf>,
    /// Save every this many seconds (0: only on exit).
    pub save_every_s: f64,
    /// A training step every N samples of any series (0: never train).
    pub train_every: u64,
    /// Forecaster window, steps (no checkpoint).
    pub window: usize,
    /// Forecaster horizon, steps (no checkpoint).
    pub horizon: usize,
    /// LSTM hidden size (no checkpoint).
    pub hidden: usize,
    /// AdamW learning rate (no checkpoint).
    pub learning_rate: f64,
    /// Windows per training step (no checkpoint).
    pub batch: usize,
    /// Rows of history kept per series (no checkpoint).
    pub history: usize,
    /// Initialisation and sampling seed (no checkpoint).
    pub seed: u64,
    /// `cpu`, or `cuda` / `cuda:N` with a CUDA build.
    pub device: String,
}

impl Default for ModelSpec {
    /// The forecaster's defaults, with a longer history: a monitor runs for
    /// days and trains on what it has seen.
    fn default() -> Self {
        let f = ForecasterConfig::default();
        ModelSpec {
            checkpoint: None,
            save_to: None,
            save_every_s: 0.0,
            train_every: 2,
            window: f.window,
            horizon: f.horizon,
            hidden: f.hidden,
            learning_rate: f.learning_rate,
            batch: f.batch,
            history: 2 * f.history,
            seed: f.seed,
            device: "cpu".into(),
        }
    }
}

impl ModelSpec {
    /// The forecaster these fields describe.
    pub fn forecaster(&self) -> ForecasterConfig {
        ForecasterConfig {
            window: self.window,
            horizon: self.horizon,
            hidden: self.hidden,
            learning_rate: self.learning_rate,
            batch: self.batch,
            history: self.history,
            seed: self.seed,
            ..ForecasterConfig::default()
        }
    }
}

/// When a monitor publishes predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictionSpec {
    /// The value that means trouble (the series reaching it from below).
    pub threshold: f64,
    /// Publish at this confidence or more, (0, 1).
    #[serde(default = "default_confidence")]
    pub confidence_min: f64,
    /// At most one prediction per series this often, seconds.
    #[serde(default = "default_repeat")]
    pub repeat_s: f64,
    /// Once the series reaches the threshold it is *in trouble* (nothing
    /// left to predict) until it stays under this for `clear_s`
    /// (default: the threshold less 0.1 of its magnitude).
    #[serde(default)]
    pub clear_below: Option<f64>,
    /// See `clear_below`, seconds.
    #[serde(default = "default_clear")]
    pub clear_s: f64,
}

fn default_clear() -> f64 {
    5.0
}

impl PredictionSpec {
    /// The value under which trouble ends.
    pub fn clear_below(&self) -> f64 {
        self.clear_below
            .unwrap_or(self.threshold - 0.1 * self.threshold.abs())
    }
}

fn default_confidence() -> f64 {
    0.5
}
fn default_repeat() -> f64 {
    5.0
}

/// Forecast-error alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalySpec {
    /// Raise alerts.
    pub enabled: bool,
    /// Errors in the long-run distribution.
    pub likelihood_long: usize,
    /// Errors in the recent mean.
    pub likelihood_short: usize,
    /// Likelihood that raises an alert.
    pub alert_threshold: f64,
    /// Quiet time after an alert, seconds.
    pub refractory_s: f64,
}

impl Default for AnomalySpec {
    fn default() -> Self {
        AnomalySpec {
            enabled: true,
            likelihood_long: 500,
            likelihood_short: 5,
            alert_threshold: 0.9999,
            refractory_s: 30.0,
        }
    }
}

/// Where a monitor's events go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSpec {
    /// Topic of prediction and alert events.
    pub topic: String,
    /// Which kinds to publish: `prediction`, `alert`.
    pub events: Vec<String>,
}

impl Default for OutputSpec {
    fn default() -> Self {
        OutputSpec {
            topic: "diaspora.predictions".into(),
            events: vec!["prediction".into(), "alert".into()],
        }
    }
}

fn valid_name(n: &str) -> bool {
    (1..=200).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl MonitorSpec {
    /// Parses and validates a TOML monitor.
    pub fn parse(text: &str) -> Result<MonitorSpec, PredictError> {
        let spec: MonitorSpec =
            toml::from_str(text).map_err(|e| PredictError::Data(format!("monitor: {e}")))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads and validates a TOML monitor file.
    pub fn load(path: &std::path::Path) -> Result<MonitorSpec, PredictError> {
        let text = std::fs::read_to_string(path).map_err(|source| PredictError::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(&text).map_err(|e| PredictError::Data(format!("{}: {e}", path.display())))
    }

    /// Checks every field, naming the one at fault.
    pub fn validate(&self) -> Result<(), PredictError> {
        let bad = |m: String| Err(PredictError::Data(m));
        if !valid_name(&self.name) || self.name.len() > 100 {
            return bad(format!(
                "name {:?}: 1–100 characters of [A-Za-z0-9._-]",
                self.name
            ));
        }
        for (what, t) in [
            ("source.topic", &self.source.topic),
            ("output.topic", &self.output.topic),
        ] {
            if !valid_name(t) {
                return bad(format!("{what} {t:?}: 1–200 characters of [A-Za-z0-9._-]"));
            }
        }
        if self.source.metric.is_empty() || self.source.metric.len() > 200 {
            return bad("source.metric: 1–200 characters".into());
        }
        if !(self.source.step_s.is_finite() && self.source.step_s > 0.0) {
            return bad(format!(
                "source.step_s = {}: must be > 0",
                self.source.step_s
            ));
        }
        if !self.prediction.threshold.is_finite() {
            return bad("prediction.threshold must be finite".into());
        }
        let c = self.prediction.confidence_min;
        if !(c > 0.0 && c < 1.0) {
            return bad(format!(
                "prediction.confidence_min = {c}: must be in (0, 1)"
            ));
        }
        let clear = self.prediction.clear_below();
        if clear.is_nan() || clear >= self.prediction.threshold {
            return bad("prediction.clear_below must be under the threshold".into());
        }
        if !(self.prediction.clear_s.is_finite() && self.prediction.clear_s >= 0.0) {
            return bad("prediction.clear_s must be ≥ 0".into());
        }
        if !(self.prediction.repeat_s.is_finite() && self.prediction.repeat_s >= 0.0) {
            return bad("prediction.repeat_s must be ≥ 0".into());
        }
        for e in &self.output.events {
            if e != "prediction" && e != "alert" {
                return bad(format!(
                    "output.events: {e:?} is not an event kind (prediction, alert)"
                ));
            }
        }
        if !(self.model.save_every_s.is_finite() && self.model.save_every_s >= 0.0) {
            return bad("model.save_every_s must be ≥ 0".into());
        }
        self.model.forecaster().validate()
    }
}

/// An event a monitor publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MonitorEvent {
    /// The series is forecast to reach the threshold.
    Prediction {
        /// The monitor.
        monitor: String,
        /// The metric.
        metric: String,
        /// The series' labels.
        labels: BTreeMap<String, String>,
        /// Time of the sample the forecast starts from, µs since the epoch.
        t_us: i64,
        /// The value then.
        value: f64,
        /// The threshold.
        threshold: f64,
        /// Seconds from `t_us` until the forecast first reaches the threshold.
        lead_time_s: f64,
        /// Probability that the series reaches the threshold within the
        /// horizon, given the model's recent error at each horizon.
        confidence: f64,
        /// The forecast, one value per step.
        forecast: Vec<f64>,
        /// The step, seconds.
        step_s: f64,
    },
    /// The series behaves unlike its forecast.
    Alert {
        /// The monitor.
        monitor: String,
        /// The metric.
        metric: String,
        /// The series' labels.
        labels: BTreeMap<String, String>,
        /// Time of the sample, µs since the epoch.
        t_us: i64,
        /// The value.
        value: f64,
        /// What the model forecast for it (one step ahead).
        expected: f64,
        /// The anomaly likelihood (see `anomaly::Likelihood`).
        likelihood: f64,
        /// `likelihood` as a confidence.
        confidence: f64,
    },
}

impl MonitorEvent {
    /// The event's kind: `prediction` or `alert`.
    pub fn kind(&self) -> &'static str {
        match self {
            MonitorEvent::Prediction { .. } => "prediction",
            MonitorEvent::Alert { .. } => "alert",
        }
    }
}

/// Encodes an event as JSON.
pub fn encode_event(e: &MonitorEvent) -> Vec<u8> {
    serde_json::to_vec(e).expect("events serialise")
}

/// Decodes an event, with limits and a clear error.
pub fn decode_event(bytes: &[u8]) -> Result<MonitorEvent, PredictError> {
    if bytes.len() > EVENT_BYTES_MAX {
        return Err(PredictError::Limit(format!(
            "monitor event of {} bytes, over {EVENT_BYTES_MAX}",
            bytes.len()
        )));
    }
    let e: MonitorEvent = serde_json::from_slice(bytes)
        .map_err(|err| PredictError::Data(format!("monitor event: {err}")))?;
    let finite = |v: f64| v.is_finite();
    let ok = match &e {
        MonitorEvent::Prediction {
            value,
            threshold,
            lead_time_s,
            confidence,
            forecast,
            step_s,
            ..
        } => {
            forecast.len() <= FORECAST_VALUES_MAX
                && forecast.iter().all(|v| v.is_finite())
                && [*value, *threshold, *lead_time_s, *step_s]
                    .into_iter()
                    .all(finite)
                && (0.0..=1.0).contains(confidence)
        }
        MonitorEvent::Alert {
            value,
            expected,
            likelihood,
            confidence,
            ..
        } => {
            [*value, *expected].into_iter().all(finite)
                && (0.0..=1.0).contains(likelihood)
                && (0.0..=1.0).contains(confidence)
        }
    };
    if !ok {
        return Err(PredictError::Data(
            "monitor event: a value is not finite, a probability is outside [0, 1], or the forecast is too long"
                .into(),
        ));
    }
    Ok(e)
}

/// One series a monitor follows.
struct Followed {
    labels: BTreeMap<String, String>,
    state: SeriesState,
    /// The model's recent error at each horizon step.
    errors: HorizonErrors,
    likelihood: Likelihood,
    gate: AlertGate,
    last_prediction_us: Option<i64>,
    samples: u64,
    /// In trouble (reached the threshold, not yet clear), and for how many
    /// samples it has been under `clear_below`.
    in_trouble: bool,
    under: u64,
}

/// What [`MonitorCore`] has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MonitorStats {
    /// Samples taken.
    pub samples: u64,
    /// Series followed.
    pub series: usize,
    /// Predictions made.
    pub predictions: u64,
    /// Alerts raised.
    pub alerts: u64,
    /// Training steps.
    pub train_steps: u64,
    /// Samples refused because `SERIES_MAX` series were followed.
    pub refused_series: u64,
}

/// The pure part of a monitor: samples in, events out.
pub struct MonitorCore {
    spec: MonitorSpec,
    model: Forecaster,
    series: Vec<Followed>,
    stats: MonitorStats,
    since_train: u64,
}

impl MonitorCore {
    /// A monitor with a fresh model, or the spec's checkpoint.
    pub fn new(spec: MonitorSpec, device: Device) -> Result<MonitorCore, PredictError> {
        spec.validate()?;
        let model = match &spec.model.checkpoint {
            Some(p) => Forecaster::load(p, device)?,
            None => Forecaster::new(spec.model.forecaster(), device)?,
        };
        Ok(Self::with_model(spec, model))
    }

    /// A monitor around an existing model.
    pub fn with_model(spec: MonitorSpec, model: Forecaster) -> MonitorCore {
        MonitorCore {
            spec,
            model,
            series: Vec::new(),
            stats: MonitorStats::default(),
            since_train: 0,
        }
    }

    /// The spec.
    pub fn spec(&self) -> &MonitorSpec {
        &self.spec
    }

    /// The model.
    pub fn model(&self) -> &Forecaster {
        &self.model
    }

    /// What it has done.
    pub fn stats(&self) -> MonitorStats {
        MonitorStats {
            series: self.series.len(),
            train_steps: self.model.train_steps(),
            ..self.stats
        }
    }

    /// Whether a sample belongs to this monitor.
    pub fn wants(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        name == self.spec.source.metric
            && self
                .spec
                .source
                .labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Takes one sample of a followed series at `t_us` and returns the
    /// events it causes.
    pub fn observe(
        &mut self,
        labels: &BTreeMap<String, String>,
        value: f64,
        t_us: i64,
    ) -> Result<Vec<MonitorEvent>, PredictError> {
        let fc = *self.model.config();
        let idx = match self.series.iter().position(|s| &s.labels == labels) {
            Some(i) => i,
            None => {
                if self.series.len() == SERIES_MAX {
                    self.stats.refused_series += 1;
                    return Err(PredictError::Limit(format!(
                        "monitor {}: already following {SERIES_MAX} series",
                        self.spec.name
                    )));
                }
                let a = &self.spec.anomaly;
                let refractory = (a.refractory_s / self.spec.source.step_s).ceil() as u64;
                self.series.push(Followed {
                    labels: labels.clone(),
                    state: SeriesState::new(&fc),
                    errors: HorizonErrors::new(fc.horizon),
                    likelihood: Likelihood::new(a.likelihood_long, a.likelihood_short),
                    gate: AlertGate::new(a.alert_threshold, refractory),
                    last_prediction_us: None,
                    samples: 0,
                    in_trouble: false,
                    under: 0,
                });
                self.series.len() - 1
            }
        };
        self.stats.samples += 1;
        let mut out = Vec::new();
        let spec = &self.spec;
        let s = &mut self.series[idx];
        // Score the forecasts that targeted this sample.
        let one_step = s.errors.observe(value);
        s.state.push(value);
        s.samples += 1;
        if let (Some(expected), true) = (one_step, spec.anomaly.enabled) {
            let std = s.state.norm().std();
            let l = s.likelihood.update((value - expected).abs() / std);
            if s.gate.check(s.samples, l) && spec.output.events.iter().any(|e| e == "alert") {
                self.stats.alerts += 1;
                out.push(MonitorEvent::Alert {
                    monitor: spec.name.clone(),
                    metric: spec.source.metric.clone(),
                    labels: s.labels.clone(),
                    t_us,
                    value,
                    expected,
                    likelihood: l,
                    confidence: l,
                });
            }
        }
        // Trouble, with hysteresis: nothing to predict while in it.
        let th = spec.prediction.threshold;
        if s.in_trouble {
            s.under = if value < spec.prediction.clear_below() {
                s.under + 1
            } else {
                0
            };
            if s.under as f64 * spec.source.step_s >= spec.prediction.clear_s {
                (s.in_trouble, s.under) = (false, 0);
            }
        } else if value >= th {
            (s.in_trouble, s.under) = (true, 0);
        }
        // Forecast from here.
        if let Some(f) = self.model.forecast(&mut [&mut s.state])?.pop().flatten() {
            let step = spec.source.step_s;
            if !s.in_trouble {
                let confidence = s.errors.reach_confidence(&f, th, f.len());
                // When it comes: the first step the forecast reaches the
                // threshold, else the step most likely to.
                let k = f.iter().position(|&v| v >= th).unwrap_or_else(|| {
                    f.iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map_or(0, |(k, _)| k)
                });
                let due = s
                    .last_prediction_us
                    .is_none_or_due(t_us, (spec.prediction.repeat_s * 1e6) as i64);
                if confidence >= spec.prediction.confidence_min
                    && due
                    && spec.output.events.iter().any(|e| e == "prediction")
                {
                    s.last_prediction_us = Some(t_us);
                    self.stats.predictions += 1;
                    out.push(MonitorEvent::Prediction {
                        monitor: spec.name.clone(),
                        metric: spec.source.metric.clone(),
                        labels: s.labels.clone(),
                        t_us,
                        value,
                        threshold: th,
                        lead_time_s: (k + 1) as f64 * step,
                        confidence,
                        forecast: f.clone(),
                        step_s: step,
                    });
                }
            }
            s.errors.push(f);
        }
        // Learn.
        self.since_train += 1;
        if spec.model.train_every > 0 && self.since_train >= spec.model.train_every {
            self.since_train = 0;
            let refs: Vec<&SeriesState> = self.series.iter().map(|s| &s.state).collect();
            self.model.train_step(&refs)?;
        }
        Ok(out)
    }
}

trait DueExt {
    fn is_none_or_due(&self, now: i64, every: i64) -> bool;
}

impl DueExt for Option<i64> {
    fn is_none_or_due(&self, now: i64, every: i64) -> bool {
        match self {
            None => true,
            Some(last) => now.saturating_sub(*last) >= every,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPEC: &str = r#"
name = "wan-congestion"
[source]
metric = "link.utilisation"
labels = { link = "wan" }
step_s = 0.5
[model]
window = 16
horizon = 10
hidden = 16
train_every = 1
[prediction]
threshold = 0.95
"#;

    #[test]
    fn a_spec_parses_with_defaults_and_faults_are_named() {
        let s = MonitorSpec::parse(SPEC).unwrap();
        assert_eq!(s.source.topic, "diaspora.metrics");
        assert_eq!(s.output.topic, "diaspora.predictions");
        assert_eq!(s.model.forecaster().window, 16);
        let e = MonitorSpec::parse(&SPEC.replace("0.95", "nan")).unwrap_err();
        assert!(e.to_string().contains("threshold"), "{e}");
        let e = MonitorSpec::parse(&SPEC.replace("window = 16", "window = 0")).unwrap_err();
        assert!(e.to_string().contains("window"), "{e}");
        let e =
            MonitorSpec::parse(&format!("{SPEC}\n[output]\nevents = [\"page\"]\n")).unwrap_err();
        assert!(e.to_string().contains("page"), "{e}");
        let e = MonitorSpec::parse(&SPEC.replace("step_s", "stepp")).unwrap_err();
        assert!(e.to_string().contains("stepp"), "{e}");
    }

    #[test]
    fn a_learned_ramp_is_predicted_before_it_crosses() {
        let spec = MonitorSpec::parse(SPEC).unwrap();
        let mut m = MonitorCore::new(spec, Device::Cpu).unwrap();
        let labels: BTreeMap<String, String> = [("link".to_string(), "wan".to_string())]
            .into_iter()
            .collect();
        assert!(m.wants("link.utilisation", &labels));
        assert!(!m.wants("link.utilisation", &BTreeMap::new()));
        // Episodes: flat at 0.5, a ramp to 1.0 over 40 samples, hold, back.
        let episode: Vec<f64> = (0..60)
            .map(|_| 0.5)
            .chain((0..40).map(|i| 0.5 + 0.5 * i as f64 / 40.0))
            .chain((0..20).map(|_| 1.0))
            .collect();
        let mut t = 0i64;
        let mut last_episode = Vec::new();
        for ep in 0..15 {
            for (i, &v) in episode.iter().enumerate() {
                t += 500_000;
                let ev = m.observe(&labels, v, t).unwrap();
                if ep == 14 {
                    for e in ev {
                        if let MonitorEvent::Prediction { .. } = e {
                            last_episode.push(i);
                        }
                    }
                }
            }
        }
        // The crossing of 0.95 is at sample 60 + 36 = 96 of the episode.
        let first = *last_episode
            .first()
            .expect("a prediction in the last episode");
        assert!(
            (60..=90).contains(&first),
            "first prediction at sample {first} (crossing at 96): {last_episode:?}"
        );
        assert!(m.stats().train_steps > 1000);
    }

    #[test]
    fn events_round_trip_and_bad_ones_are_refused() {
        let e = MonitorEvent::Prediction {
            monitor: "m".into(),
            metric: "x".into(),
            labels: BTreeMap::new(),
            t_us: 1,
            value: 0.5,
            threshold: 0.95,
            lead_time_s: 6.0,
            confidence: 0.8,
            forecast: vec![0.6, 0.97],
            step_s: 0.5,
        };
        assert_eq!(decode_event(&encode_event(&e)).unwrap(), e);
        let bad = String::from_utf8(encode_event(&e))
            .unwrap()
            .replace("0.8", "1.5");
        assert!(decode_event(bad.as_bytes()).is_err());
        assert!(decode_event(b"{\"kind\":\"nope\"}").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_event(&bytes);
        }

        #[test]
        fn truncated_events_are_refused(cut in 0usize..200) {
            let e = MonitorEvent::Alert {
                monitor: "m".into(), metric: "x".into(), labels: BTreeMap::new(),
                t_us: 7, value: 1.0, expected: 0.5, likelihood: 0.99999, confidence: 0.99999,
            };
            let b = encode_event(&e);
            let cut = cut % b.len();
            prop_assert!(decode_event(&b[..cut]).is_err());
        }
    }
}
