//! Forecasting and congestion-onset prediction on metric traces (twin runs).
//!
//! A trace is one metric sampled at a fixed step, as a CSV file with the
//! header `t_s,value` (seconds since the run's start, the metric). `diaspora
//! predict traces` writes them from twin congestion runs (module
//! `twin_traces`, feature `twins`); any regularly sampled metric will do.
//!
//! [`twin_eval`] measures, leave-one-trace-out (the model is pre-trained on
//! the other traces, then runs online over the held-out one, training as it
//! goes):
//! - **forecast RMSE** at horizons of 1, 5 and 10 s for the LSTM, the
//!   persistence forecast and an EWMA (its smoothing chosen, per horizon,
//!   as the best of a grid *in hindsight* — the strongest EWMA there is);
//! - **congestion onsets**: an onset is an upward crossing of
//!   `onset_threshold` that holds for `onset_hold_s`, after `onset_quiet_s`
//!   below it. At each step below the threshold the forecaster raises an
//!   alarm when its forecast within the horizon reaches the threshold.
//!   Consecutive alarm steps form one alarm *event*. An onset is predicted
//!   when an alarm was raised between `lead_max_s` and `lead_min_s` before it
//!   (recall); an alarm event is right when an onset follows its start
//!   within `lead_max_s` (precision). Events are counted whole; no
//!   point-adjustment. The lead time is from an onset's first alarm to the
//!   onset.

use std::path::Path;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::baseline::Ewma;
use crate::forecast::{Forecaster, ForecasterConfig, HorizonErrors, SeriesState};
use crate::PredictError;

/// Largest trace file read, bytes.
pub const TRACE_BYTES_MAX: u64 = 64 << 20;
/// Most rows in a trace.
pub const TRACE_ROWS_MAX: usize = 1_000_000;
/// Most traces in a directory.
pub const TRACES_MAX: usize = 10_000;

/// One regularly sampled metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The file's name without extension.
    pub name: String,
    /// Sample times, seconds, increasing.
    pub t_s: Vec<f64>,
    /// Values, finite.
    pub values: Vec<f64>,
}

impl Trace {
    /// The median step between samples, seconds.
    pub fn step_s(&self) -> f64 {
        let mut d: Vec<f64> = self.t_s.windows(2).map(|w| w[1] - w[0]).collect();
        if d.is_empty() {
            return 1.0;
        }
        d.sort_by(f64::total_cmp);
        d[d.len() / 2]
    }
}

/// Parses a trace CSV (`t_s,value` header; times strictly increasing;
/// values finite). Errors name the trace and the 1-based line.
pub fn parse_trace(name: &str, text: &str) -> Result<Trace, PredictError> {
    let bad = |line: usize, what: String| {
        PredictError::Data(format!("trace {name}, line {line}: {what}"))
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        Some((_, h)) if h.trim().trim_start_matches('\u{feff}') == "t_s,value" => {}
        Some((i, h)) => return Err(bad(i + 1, format!("header {h:?}, expected \"t_s,value\""))),
        None => return Err(bad(1, "empty file".into())),
    }
    let mut trace = Trace {
        name: name.into(),
        t_s: Vec::new(),
        values: Vec::new(),
    };
    for (i, line) in lines {
        if trace.t_s.len() == TRACE_ROWS_MAX {
            return Err(PredictError::Limit(format!(
                "trace {name}: more than {TRACE_ROWS_MAX} rows"
            )));
        }
        let (t, v) = line
            .trim()
            .split_once(',')
            .ok_or_else(|| bad(i + 1, format!("{line:?} is not `t_s,value`")))?;
        let t: f64 = t
            .trim()
            .parse()
            .map_err(|e| bad(i + 1, format!("time {t:?}: {e}")))?;
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|e| bad(i + 1, format!("value {v:?}: {e}")))?;
        if !t.is_finite() || !v.is_finite() {
            return Err(bad(i + 1, "time and value must be finite".into()));
        }
        if trace.t_s.last().is_some_and(|&p| t <= p) {
            return Err(bad(i + 1, format!("time {t} does not increase")));
        }
        trace.t_s.push(t);
        trace.values.push(v);
    }
    Ok(trace)
}

/// Reads every `*.csv` trace in `dir`, sorted by name.
pub fn load_traces(dir: &Path) -> Result<Vec<Trace>, PredictError> {
    let io = |source| PredictError::Io {
        path: dir.into(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.extension().is_some_and(|e| e == "csv") {
            if paths.len() == TRACES_MAX {
                return Err(PredictError::Limit(format!(
                    "{}: more than {TRACES_MAX} traces",
                    dir.display()
                )));
            }
            paths.push(p);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(PredictError::Data(format!(
            "{}: no trace files (*.csv with a `t_s,value` header)",
            dir.display()
        )));
    }
    paths
        .iter()
        .map(|p| {
            let ioe = |source| PredictError::Io {
                path: p.clone(),
                source,
            };
            let len = std::fs::metadata(p).map_err(ioe)?.len();
            if len > TRACE_BYTES_MAX {
                return Err(PredictError::Limit(format!(
                    "{} is {len} bytes, over {TRACE_BYTES_MAX}",
                    p.display()
                )));
            }
            let text = std::fs::read_to_string(p).map_err(ioe)?;
            let name = p
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            parse_trace(&name, &text)
        })
        .collect()
}

/// How [`twin_eval`] runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwinEvalConfig {
    /// The forecaster; its horizon must cover the longest evaluated horizon.
    pub forecaster: ForecasterConfig,
    /// Horizons evaluated, seconds.
    pub horizons_s: Vec<f64>,
    /// Training steps on the other traces before a held-out trace runs.
    pub pretrain_steps: usize,
    /// A training step every this many samples while a trace runs.
    pub online_train_every: usize,
    /// The metric value that means congestion.
    pub onset_threshold: f64,
    /// Congestion ends once the metric stays under this for `clear_s`.
    pub clear_below: f64,
    /// See `clear_below`, seconds.
    pub clear_s: f64,
    /// At least half the samples of this long after an onset must be at or
    /// over the threshold (a lone spike is not congestion), seconds.
    pub onset_hold_s: f64,
    /// An onset needs at least this long without congestion before it, seconds.
    pub onset_quiet_s: f64,
    /// An alarm is raised when the confidence that the forecast reaches the
    /// threshold within `lead_max_s` (see `HorizonErrors::reach_confidence`;
    /// 0.5 means the forecast itself reaches it) is at least this.
    pub alarm_confidence: f64,
    /// An alarm must come at least this long before the onset, seconds.
    pub lead_min_s: f64,
    /// …and at most this long before it, seconds.
    pub lead_max_s: f64,
    /// EWMA smoothing factors tried (the best per horizon is reported).
    pub ewma_alphas: Vec<f64>,
}

impl Default for TwinEvalConfig {
    fn default() -> Self {
        TwinEvalConfig {
            forecaster: ForecasterConfig {
                window: 32,
                horizon: 20,
                hidden: 32,
                batch: 32,
                history: 8192,
                ..ForecasterConfig::default()
            },
            horizons_s: vec![1.0, 5.0, 10.0],
            pretrain_steps: 1200,
            online_train_every: 2,
            onset_threshold: 0.95,
            clear_below: 0.85,
            clear_s: 5.0,
            onset_hold_s: 2.0,
            onset_quiet_s: 10.0,
            alarm_confidence: 0.3,
            lead_min_s: 5.0,
            lead_max_s: 30.0,
            ewma_alphas: vec![0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9],
        }
    }
}

/// RMSE at one horizon.
#[derive(Debug, Clone, Serialize)]
pub struct HorizonRmse {
    /// Horizon, seconds.
    pub horizon_s: f64,
    /// Horizon, steps.
    pub steps: usize,
    /// The LSTM's RMSE.
    pub lstm: f64,
    /// Persistence's RMSE.
    pub persistence: f64,
    /// The best EWMA's RMSE.
    pub ewma: f64,
    /// That EWMA's smoothing factor.
    pub ewma_alpha: f64,
    /// LSTM over the better baseline (below 1 is better; 0.8 is 20 % lower).
    pub ratio_to_best_baseline: f64,
    /// Share of persistence's squared error that comes from abrupt errors
    /// (over [`ABRUPT_SIGMAS`] times the trace's robust one-step noise
    /// scale). At a horizon of a step or two these are jumps — dips while
    /// saturated, the drop when congestion clears — that the series does
    /// not announce; at longer horizons they include a ramp's steady
    /// progress too, which is predictable.
    pub persistence_abrupt_share: f64,
    /// Forecasts scored.
    pub n: u64,
}

/// An error is abrupt above this many robust noise deviations.
pub const ABRUPT_SIGMAS: f64 = 5.0;

/// A trace's robust noise scale: the median absolute one-step change,
/// scaled to a Gaussian's deviation of one sample (1.4826 / √2).
pub fn noise_scale(values: &[f64]) -> f64 {
    let mut d: Vec<f64> = values.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    if d.is_empty() {
        return 0.0;
    }
    d.sort_by(f64::total_cmp);
    d[d.len() / 2] * 1.4826 / std::f64::consts::SQRT_2
}

/// One trace's onsets and alarms.
#[derive(Debug, Clone, Serialize)]
pub struct TraceOnsets {
    /// The trace.
    pub name: String,
    /// Onset times, seconds.
    pub onsets_s: Vec<f64>,
    /// Alarm event start times, seconds.
    pub alarms_s: Vec<f64>,
    /// Lead time of each predicted onset, seconds.
    pub leads_s: Vec<f64>,
}

/// The result of [`twin_eval`].
#[derive(Debug, Clone, Serialize)]
pub struct TwinEvalReport {
    /// Traces evaluated.
    pub traces: usize,
    /// Sampling step, seconds.
    pub step_s: f64,
    /// Per horizon (`"1s"`, `"5s"`, `"10s"`): LSTM RMSE over the better baseline's.
    pub rmse_ratio_to_best_baseline: std::collections::BTreeMap<String, f64>,
    /// Per horizon, the figures behind the ratio.
    pub rmse: Vec<HorizonRmse>,
    /// Alarm events followed by an onset, over all alarm events.
    pub onset_precision: f64,
    /// Onsets predicted at least `lead_min_s` ahead, over all onsets.
    pub onset_recall: f64,
    /// Median lead time of the predicted onsets, seconds.
    pub lead_time_s_median: f64,
    /// Onsets in all traces.
    pub onsets: usize,
    /// Alarm events in all traces.
    pub alarm_events: usize,
    /// Per trace.
    pub per_trace: Vec<TraceOnsets>,
    /// The configuration.
    pub config: TwinEvalConfig,
}

/// Whether each sample is inside a congestion episode, causally: an
/// episode starts at a sample at or over `threshold` and ends once the
/// series has stayed under `clear_below` for `clear` samples.
pub fn congested(values: &[f64], threshold: f64, clear_below: f64, clear: usize) -> Vec<bool> {
    let mut out = Vec::with_capacity(values.len());
    let (mut inside, mut under) = (false, 0usize);
    for &v in values {
        if inside {
            under = if v < clear_below { under + 1 } else { 0 };
            if under >= clear.max(1) {
                inside = false;
                under = 0;
            }
        } else if v >= threshold {
            inside = true;
            under = 0;
        }
        out.push(inside);
    }
    out
}

/// Onsets (sample indices): starts of congestion episodes (see
/// [`congested`]) after at least `quiet` samples outside one, where at
/// least half of the `hold` samples from the start are at or over
/// `threshold`.
pub fn onsets(
    values: &[f64],
    mask: &[bool],
    threshold: f64,
    hold: usize,
    quiet: usize,
) -> Vec<usize> {
    let mut out = Vec::new();
    let mut outside = 0usize;
    for i in 0..values.len() {
        if !mask[i] {
            outside += 1;
            continue;
        }
        if i > 0 && mask[i - 1] {
            continue;
        }
        let h = hold.max(1);
        let window = &values[i..(i + h).min(values.len())];
        let over = window.iter().filter(|&&v| v >= threshold).count();
        if outside >= quiet && 2 * over >= h {
            out.push(i);
        }
        outside = 0;
    }
    out
}

/// Alarm events (start indices) from per-step alarm flags: consecutive
/// flags, or flags separated by at most `gap` clear steps, are one event.
pub fn alarm_events(flags: &[bool], gap: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut last: Option<usize> = None;
    for (i, &f) in flags.iter().enumerate() {
        if !f {
            continue;
        }
        if !matches!(last, Some(l) if i - l <= gap + 1) {
            out.push(i);
        }
        last = Some(i);
    }
    out
}

/// Scores alarms against onsets (indices, `step_s` apart): returns
/// (predicted onsets with their lead times, right alarm events).
pub fn match_onsets(
    onsets: &[usize],
    flags: &[bool],
    events: &[usize],
    step_s: f64,
    lead_min_s: f64,
    lead_max_s: f64,
) -> (Vec<f64>, usize) {
    let steps = |s: f64| (s / step_s).round() as usize;
    let (lo, hi) = (steps(lead_min_s), steps(lead_max_s));
    let mut leads = Vec::new();
    for &o in onsets {
        // The first alarm step in [o − hi, o − lo].
        let first = (o.saturating_sub(hi)..=o.saturating_sub(lo))
            .filter(|&i| i < o && o - i >= lo)
            .find(|&i| flags[i]);
        if let Some(i) = first {
            // The lead runs from the start of the alarm's event.
            let start = events.iter().rev().find(|&&e| e <= i).copied().unwrap_or(i);
            let start = start.max(o.saturating_sub(hi));
            leads.push((o - start) as f64 * step_s);
        }
    }
    let right = events
        .iter()
        .filter(|&&e| onsets.iter().any(|&o| o > e && o - e <= hi))
        .count();
    (leads, right)
}

/// Leave-one-trace-out evaluation (see the module docs).
pub fn twin_eval(
    traces: &[Trace],
    config: &TwinEvalConfig,
    device: &Device,
) -> Result<TwinEvalReport, PredictError> {
    if traces.len() < 2 {
        return Err(PredictError::Data(format!(
            "{} trace(s): leave-one-out needs at least 2",
            traces.len()
        )));
    }
    let fc = config.forecaster;
    let step_s = traces[0].step_s();
    for t in traces {
        let s = t.step_s();
        if (s - step_s).abs() > 0.1 * step_s {
            return Err(PredictError::Data(format!(
                "trace {} is sampled every {s} s, trace {} every {step_s} s",
                t.name, traces[0].name
            )));
        }
    }
    let horizons: Vec<usize> = config
        .horizons_s
        .iter()
        .map(|h| ((h / step_s).round() as usize).max(1))
        .collect();
    let hmax = *horizons.iter().max().unwrap_or(&1);
    if hmax > fc.horizon {
        return Err(PredictError::Data(format!(
            "the longest horizon is {hmax} steps of {step_s} s; the forecaster's horizon is {}",
            fc.horizon
        )));
    }
    let alarm_h = ((config.lead_max_s / step_s).round() as usize).clamp(1, fc.horizon);
    let mut se_lstm = vec![0.0; horizons.len()];
    let mut se_pers = vec![0.0; horizons.len()];
    let mut se_pers_abrupt = vec![0.0; horizons.len()];
    let mut se_ewma = vec![vec![0.0; config.ewma_alphas.len()]; horizons.len()];
    let mut n = vec![0u64; horizons.len()];
    let mut per_trace = Vec::new();
    let (mut onset_total, mut event_total, mut right_total) = (0usize, 0usize, 0usize);
    let mut all_leads = Vec::new();
    for (k, test) in traces.iter().enumerate() {
        let others: Vec<SeriesState> = traces
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != k)
            .map(|(_, t)| {
                let mut s = SeriesState::new(&fc);
                for &v in &t.values {
                    s.push(v);
                }
                s
            })
            .collect();
        let mut model = Forecaster::new(
            ForecasterConfig {
                seed: fc.seed.wrapping_add(k as u64),
                ..fc
            },
            device.clone(),
        )?;
        {
            let refs: Vec<&SeriesState> = others.iter().collect();
            for _ in 0..config.pretrain_steps {
                model.train_step(&refs)?;
            }
        }
        let v = &test.values;
        let mut state = SeriesState::new(&fc);
        let mut ewmas: Vec<Ewma> = config.ewma_alphas.iter().map(|&a| Ewma::new(a)).collect();
        let steps = |s: f64| (s / step_s).round() as usize;
        let mask = congested(
            v,
            config.onset_threshold,
            config.clear_below,
            steps(config.clear_s),
        );
        let abrupt = ABRUPT_SIGMAS * noise_scale(v);
        let mut flags = vec![false; v.len()];
        let mut errors = HorizonErrors::new(fc.horizon);
        for t in 0..v.len() {
            errors.observe(v[t]);
            state.push(v[t]);
            let ew: Vec<f64> = ewmas.iter_mut().map(|e| e.push(v[t])).collect();
            if state.len() < fc.window {
                continue;
            }
            let f = model
                .forecast(&mut [&mut state])?
                .pop()
                .flatten()
                .expect("window held");
            for (hi, &h) in horizons.iter().enumerate() {
                if t + h < v.len() {
                    let y = v[t + h];
                    se_lstm[hi] += (f[h - 1] - y).powi(2);
                    se_pers[hi] += (v[t] - y).powi(2);
                    if (v[t] - y).abs() > abrupt {
                        se_pers_abrupt[hi] += (v[t] - y).powi(2);
                    }
                    for (ai, e) in ew.iter().enumerate() {
                        se_ewma[hi][ai] += (e - y).powi(2);
                    }
                    n[hi] += 1;
                }
            }
            // Alarms only outside congestion (the mask at t is causal).
            flags[t] = !mask[t]
                && errors.reach_confidence(&f, config.onset_threshold, alarm_h)
                    >= config.alarm_confidence;
            errors.push(f);
            if config.online_train_every > 0 && t % config.online_train_every == 0 {
                let mut refs: Vec<&SeriesState> = others.iter().collect();
                refs.push(&state);
                model.train_step(&refs)?;
            }
        }
        let on = onsets(
            v,
            &mask,
            config.onset_threshold,
            steps(config.onset_hold_s),
            steps(config.onset_quiet_s),
        );
        let events = alarm_events(&flags, 2);
        let (leads, right) = match_onsets(
            &on,
            &flags,
            &events,
            step_s,
            config.lead_min_s,
            config.lead_max_s,
        );
        onset_total += on.len();
        event_total += events.len();
        right_total += right;
        all_leads.extend(leads.iter().copied());
        per_trace.push(TraceOnsets {
            name: test.name.clone(),
            onsets_s: on.iter().map(|&i| test.t_s[i]).collect(),
            alarms_s: events.iter().map(|&i| test.t_s[i]).collect(),
            leads_s: leads,
        });
    }
    let rmse = |se: f64, n: u64| if n == 0 { 0.0 } else { (se / n as f64).sqrt() };
    let mut ratios = std::collections::BTreeMap::new();
    let mut rows = Vec::new();
    for (hi, &h) in horizons.iter().enumerate() {
        let (ai, best_ewma) = se_ewma[hi]
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, &s)| (i, s))
            .unwrap_or((0, f64::INFINITY));
        let l = rmse(se_lstm[hi], n[hi]);
        let p = rmse(se_pers[hi], n[hi]);
        let e = rmse(best_ewma, n[hi]);
        let best = p.min(e);
        let ratio = if best > 0.0 { l / best } else { f64::INFINITY };
        ratios.insert(format!("{}s", config.horizons_s[hi]), ratio);
        let share = if se_pers[hi] > 0.0 {
            se_pers_abrupt[hi] / se_pers[hi]
        } else {
            0.0
        };

        rows.push(HorizonRmse {
            horizon_s: config.horizons_s[hi],
            steps: h,
            lstm: l,
            persistence: p,
            ewma: e,
            ewma_alpha: config.ewma_alphas.get(ai).copied().unwrap_or(0.0),
            ratio_to_best_baseline: ratio,
            persistence_abrupt_share: share,
            n: n[hi],
        });
    }
    all_leads.sort_by(f64::total_cmp);
    let median = if all_leads.is_empty() {
        0.0
    } else {
        all_leads[all_leads.len() / 2]
    };
    Ok(TwinEvalReport {
        traces: traces.len(),
        step_s,
        rmse_ratio_to_best_baseline: ratios,
        rmse: rows,
        onset_precision: if event_total == 0 {
            0.0
        } else {
            right_total as f64 / event_total as f64
        },
        onset_recall: if onset_total == 0 {
            0.0
        } else {
            all_leads.len() as f64 / onset_total as f64
        },
        lead_time_s_median: median,
        onsets: onset_total,
        alarm_events: event_total,
        per_trace,
        config: config.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congestion_episodes_ride_out_dips_and_onsets_need_a_quiet_run_up() {
        let v = [
            0.5, 0.5, 0.5, 1.0, 0.9, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5,
            0.5,
        ];
        // Clear after 2 samples under 0.85: the dip to 0.9 at 4 stays inside.
        let mask = congested(&v, 0.95, 0.85, 2);
        let inside: Vec<usize> = (0..v.len()).filter(|&i| mask[i]).collect();
        assert_eq!(inside, vec![3, 4, 5, 6, 11, 12]);
        // Quiet 3, hold 2: the episode at 3 (1.0, 0.9: half over) counts; the
        // spike at 11 (4 outside before it, 1 of 2 over) too.
        assert_eq!(onsets(&v, &mask, 0.95, 2, 3), vec![3, 11]);
        // Hold 3: the spike (1 of 3) is no onset. Quiet 4: the first episode
        // (3 outside before it) is no onset, the spike is.
        assert_eq!(onsets(&v, &mask, 0.95, 3, 3), vec![3]);
        assert_eq!(onsets(&v, &mask, 0.95, 2, 4), vec![11]);
    }

    #[test]
    fn the_noise_scale_is_robust_to_steps() {
        // Alternating ±0.01 noise: one-step changes of 0.02, and one step of 0.5.
        let mut v: Vec<f64> = (0..101)
            .map(|i| if i % 2 == 0 { 0.01 } else { -0.01 })
            .collect();
        for x in &mut v[50..] {
            *x += 0.5;
        }
        let s = noise_scale(&v);
        assert!((s - 0.02 * 1.4826 / 2f64.sqrt()).abs() < 1e-12, "{s}");
        assert_eq!(noise_scale(&[1.0]), 0.0);
    }

    #[test]
    fn alarm_events_merge_short_gaps() {
        let f = [false, true, true, false, true, false, false, false, true];
        assert_eq!(alarm_events(&f, 1), vec![1, 8]);
        assert_eq!(alarm_events(&f, 0), vec![1, 4, 8]);
    }

    #[test]
    fn an_onset_counts_only_with_an_alarm_far_enough_ahead() {
        // Step 1 s; onset at 20; lead window [20−30, 20−5] = [0, 15].
        let mut flags = vec![false; 40];
        flags[12] = true;
        flags[13] = true; // lead 8 s
        flags[18] = true; // too late to count, and a wrong event? no: onset follows within 30 s
        let events = alarm_events(&flags, 0);
        let (leads, right) = match_onsets(&[20], &flags, &events, 1.0, 5.0, 30.0);
        assert_eq!(leads, vec![8.0]);
        assert_eq!(right, 2, "both events precede the onset within 30 s");
        // An alarm with no onset after it is wrong.
        let mut flags = vec![false; 40];
        flags[3] = true;
        let events = alarm_events(&flags, 0);
        let (leads, right) = match_onsets(&[], &flags, &events, 1.0, 5.0, 30.0);
        assert!(leads.is_empty());
        assert_eq!(right, 0);
    }

    #[test]
    fn trace_parsing_names_the_line_at_fault() {
        let t = parse_trace("a", "t_s,value\n0,1\n0.5,2\n").unwrap();
        assert_eq!(t.values, vec![1.0, 2.0]);
        assert_eq!(t.step_s(), 0.5);
        let e = parse_trace("a", "t_s,value\n0,1\n0,2\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("does not increase"),
            "{e}"
        );
        let e = parse_trace("a", "time,v\n").unwrap_err().to_string();
        assert!(e.contains("header"), "{e}");
        let e = parse_trace("a", "t_s,value\n1,NaN\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("finite"), "{e}");
    }
}
