//! NAB scoring: the sweep, the threshold sweep, normalisation and the
//! threshold optimiser, ported from `numenta/NAB` (`nab/sweeper.py`,
//! `nab/scorer.py`, `nab/optimizer.py`, `nab/runner.py`).

use std::cmp::Ordering;
use std::ops::ControlFlow;

use serde::Serialize;

use super::data::{window_rows, Corpus, Series};
use crate::PredictError;

/// Share of each series, from its start, that is not scored: NAB's
/// `probationaryPercent` (`nab/runner.py` `Runner.__init__`).
pub const PROBATION_PERCENT: f64 = 0.15;

/// The probationary period never exceeds this many rows times
/// [`PROBATION_PERCENT`] (750 rows): `nab/util.py` `getProbationPeriod`.
const PROBATION_CAP_ROWS: f64 = 5000.0;

/// Where NAB's threshold sweep starts, above every anomaly score, so that its
/// first entry has no detections (`Sweeper.calcScoreByThreshold`).
const SWEEP_START_THRESHOLD: f64 = 1.1;

/// Bound on the additions the threshold sweep may do: NAB re-adds every
/// window's part at each distinct anomaly score (which keeps our sums equal to
/// NAB's to the bit). NAB's whole corpus needs about 43 M (365 k rows × 117
/// parts); this allows 100 times that.
pub const SWEEP_ADDITIONS_MAX: u64 = 4_300_000_000;

/// A NAB scoring profile: the weights of its cost matrix
/// (`config/profiles.json`, `CostMatrix`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Profile {
    /// `tpWeight`: what the earliest detection in a window earns.
    pub tp: f64,
    /// `fpWeight`: what a detection far from any window costs.
    pub fp: f64,
    /// `fnWeight`: what a window without a detection costs.
    #[serde(rename = "fn")]
    pub fn_: f64,
    /// `tnWeight`: listed in NAB's profiles but unused by its scoring; kept
    /// for completeness.
    pub tn: f64,
}

impl Profile {
    /// NAB's `standard` profile.
    pub const STANDARD: Profile = Profile {
        tp: 1.0,
        fp: 0.11,
        fn_: 1.0,
        tn: 1.0,
    };
    /// NAB's `reward_low_FP_rate` profile: false positives cost twice as much.
    pub const REWARD_LOW_FP: Profile = Profile {
        tp: 1.0,
        fp: 0.22,
        fn_: 1.0,
        tn: 1.0,
    };
    /// NAB's `reward_low_FN_rate` profile: missed windows cost twice as much.
    pub const REWARD_LOW_FN: Profile = Profile {
        tp: 1.0,
        fp: 0.11,
        fn_: 2.0,
        tn: 1.0,
    };
    /// Every NAB profile under its name in `config/profiles.json`.
    pub const NAMED: [(&'static str, Profile); 3] = [
        ("standard", Profile::STANDARD),
        ("reward_low_FP_rate", Profile::REWARD_LOW_FP),
        ("reward_low_FN_rate", Profile::REWARD_LOW_FN),
    ];

    /// The profile NAB calls `name` (`standard`, `reward_low_FP_rate`,
    /// `reward_low_FN_rate`).
    ///
    /// ```
    /// use diaspora_predict::nab::Profile;
    /// assert_eq!(Profile::by_name("reward_low_FN_rate").unwrap().fn_, 2.0);
    /// assert!(Profile::by_name("lenient").is_none());
    /// ```
    pub fn by_name(name: &str) -> Option<Profile> {
        Profile::NAMED
            .iter()
            .find(|(known, _)| *known == name)
            .map(|&(_, profile)| profile)
    }
}

/// NAB's scaled sigmoid of a row's position relative to a window
/// (`nab/sweeper.py` `scaledSigmoid`): `2·sigmoid(−5x) − 1`, and `−1` beyond
/// `x = 3`.
///
/// Inside a window `x` runs from −1 (first row, ≈ 0.98661) towards 0 (past
/// the last row); after a window it grows with the distance, so a false
/// positive right after a window costs little and one far away nearly its
/// full weight.
///
/// ```
/// use diaspora_predict::nab::scaled_sigmoid;
/// assert!((scaled_sigmoid(-1.0) - 0.98661429815143).abs() < 1e-12);
/// assert_eq!(scaled_sigmoid(0.0), 0.0);
/// assert_eq!(scaled_sigmoid(3.5), -1.0);
/// ```
pub fn scaled_sigmoid(relative_position: f64) -> f64 {
    if relative_position > 3.0 {
        -1.0
    } else {
        2.0 * sigmoid(-5.0 * relative_position) - 1.0
    }
}

/// `nab/sweeper.py` `sigmoid`, written as NAB writes it so that the floating
/// point operations are the same.
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// How many leading rows of a series of `rows` rows are probationary and not
/// scored: `min(floor(0.15 · rows), 0.15 · 5000)` (`nab/util.py`
/// `getProbationPeriod`, `Sweeper._getProbationaryLength`).
///
/// ```
/// use diaspora_predict::nab::probation_rows;
/// assert_eq!(probation_rows(4032), 604);
/// assert_eq!(probation_rows(22_695), 750);
/// ```
pub fn probation_rows(rows: usize) -> usize {
    let length = (PROBATION_PERCENT * rows as f64)
        .floor()
        .min(PROBATION_PERCENT * PROBATION_CAP_ROWS);
    // NAB keeps row `i` when `i >= length`; `length` is a whole number, but
    // `ceil` keeps that exact even if it were not.
    length.ceil() as usize
}

/// Where a row falls for scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RowWindow {
    /// In the probationary period: not scored.
    Probationary,
    /// Outside every window: a detection here is a false positive.
    Outside,
    /// Inside the window with this index in the series' window list.
    Window(usize),
}

/// One row after NAB's sweep: its anomaly score, what a detection there
/// would score, and where it falls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SweepPoint {
    /// The detector's anomaly score for the row.
    pub anomaly_score: f64,
    /// The weighted score of a detection at this row (NAB's `sweepScore`,
    /// the `S(t)_<profile>` column of its results files): positive inside a
    /// window, negative or zero outside.
    pub sweep_score: f64,
    /// Where the row falls.
    pub window: RowWindow,
}

/// NAB's per-row sweep of one series (`nab/sweeper.py`
/// `Sweeper.calcSweepScore`), ported statement by statement:
///
/// - A window is entered at the row whose timestamp equals the next window's
///   start (windows are taken in list order); its width is
///   `end_row − start_row + 1` rows.
/// - Inside a window, row `i` sits at `x = −(end_row − i + 1) / width` and
///   scores `scaled_sigmoid(x) · tp / scaled_sigmoid(−1)`: exactly `tp` at
///   the first row, falling towards 0 at the last.
/// - Outside, before any window, a row scores `−1 · fp`; after a window it
///   scores `scaled_sigmoid(|i − previous_end_row| / (previous_width − 1)) · fp`,
///   so a false positive just after a window costs little, one window width
///   later about 99 % of `fp`, and beyond three widths exactly `fp`. Only
///   the previous window counts, not the next one.
/// - Rows before [`probation_rows`] are marked probationary.
/// - The window is left after the row whose timestamp equals its end.
///
/// Checks NAB makes elsewhere are errors here: `scores` must have one finite
/// value in `[0, 1]` per row (NAB asserts the length; its detectors promise
/// the range), and each window limit must match exactly one row
/// (`CorpusLabel.getWindows`), with the start row not after the end row.
///
/// One deliberate difference: after a one-row window NAB divides by
/// `width − 1 = 0` and fails; here the division gives infinity, which
/// [`scaled_sigmoid`] maps to −1, a far false positive.
pub fn sweep_series(
    series: &Series,
    windows: &[(i64, i64)],
    scores: &[f64],
    profile: &Profile,
) -> Result<Vec<SweepPoint>, PredictError> {
    check_scores(series, scores)?;
    let rows = window_rows(series, windows)?;
    let max_tp = scaled_sigmoid(-1.0);
    let probation = probation_rows(series.len());

    struct Current {
        index: usize,
        end_us: i64,
        end_row: usize,
        width: f64,
    }
    let mut next_window = 0;
    let mut current: Option<Current> = None;
    // (end row, width) of the window last left.
    let mut previous: Option<(usize, f64)> = None;
    let mut points = Vec::with_capacity(series.len());
    for (row, (&time_us, &anomaly_score)) in series.time_us.iter().zip(scores).enumerate() {
        if next_window < windows.len() && time_us == windows[next_window].0 {
            let (start_row, end_row) = rows[next_window];
            current = Some(Current {
                index: next_window,
                end_us: windows[next_window].1,
                end_row,
                width: (end_row as i64 - start_row as i64 + 1) as f64,
            });
            next_window += 1;
        }
        let sweep_score = match &current {
            Some(window) => {
                let position = -((window.end_row as i64 - row as i64 + 1) as f64) / window.width;
                scaled_sigmoid(position) * profile.tp / max_tp
            }
            None => {
                let unweighted = match previous {
                    None => -1.0,
                    Some((previous_end_row, previous_width)) => {
                        let numerator = (previous_end_row as i64 - row as i64).abs() as f64;
                        let denominator = previous_width - 1.0;
                        scaled_sigmoid(numerator / denominator)
                    }
                };
                unweighted * profile.fp
            }
        };
        let window = if row < probation {
            RowWindow::Probationary
        } else {
            match &current {
                Some(window) => RowWindow::Window(window.index),
                None => RowWindow::Outside,
            }
        };
        points.push(SweepPoint {
            anomaly_score,
            sweep_score,
            window,
        });
        if let Some(window) = &current {
            if time_us == window.end_us {
                previous = Some((row, window.width));
                current = None;
            }
        }
    }
    Ok(points)
}

fn check_scores(series: &Series, scores: &[f64]) -> Result<(), PredictError> {
    if scores.len() != series.len() {
        return Err(PredictError::Data(format!(
            "series `{}` has {} rows but {} anomaly scores",
            series.name,
            series.len(),
            scores.len()
        )));
    }
    if let Some((row, score)) = scores
        .iter()
        .enumerate()
        .find(|(_, s)| !(0.0..=1.0).contains(*s))
    {
        return Err(PredictError::Data(format!(
            "series `{}` row {row}: anomaly score {score} is not in [0, 1]",
            series.name
        )));
    }
    Ok(())
}

/// A scored row: a [`SweepPoint`] outside the probationary period, with its
/// window numbered across the corpus.
struct Scorable {
    anomaly_score: f64,
    sweep_score: f64,
    window: Option<usize>,
}

/// Appends the scorable rows of one series, numbering its windows from
/// `window_base`.
fn push_scorable(points: &[SweepPoint], window_base: usize, out: &mut Vec<Scorable>) {
    out.extend(points.iter().filter_map(|point| {
        let window = match point.window {
            RowWindow::Probationary => return None,
            RowWindow::Outside => None,
            RowWindow::Window(index) => Some(window_base + index),
        };
        Some(Scorable {
            anomaly_score: point.anomaly_score,
            sweep_score: point.sweep_score,
            window,
        })
    }));
}

/// One entry of NAB's threshold sweep (`ThresholdScore`): the score and row
/// counts when every scorable row with an anomaly score `>= threshold` is a
/// detection.
#[derive(Debug, Clone, Copy)]
struct ThresholdRow {
    threshold: f64,
    raw: f64,
    tp: u64,
    tn: u64,
    fp: u64,
    fn_: u64,
}

/// NAB's threshold sweep (`nab/sweeper.py` `Sweeper.calcScoreByThreshold`),
/// ported statement by statement, handing each entry to `visit` in order of
/// falling threshold until it breaks:
///
/// - Rows are sorted by anomaly score, highest first, ties in their original
///   order (Python's `sorted` is stable, so is `sort_by`).
/// - The score is a sum of parts: `fp` (starting at 0), then one part per
///   window that has a scorable row, starting at `−fn` (in the order the
///   windows first appear in the sorted rows, as Python's dict keeps them).
/// - The first entry has threshold 1.1 and no detections. Each time the
///   anomaly score changes, the entry for the previous threshold is
///   recorded, then the row is made a detection: outside a window its sweep
///   score is added to `fp`; inside, its window's part becomes the larger of
///   the part and the sweep score, so each window counts once, at its best
///   (earliest) detection. The last entry has every row detected.
/// - Counts are of rows: `tp`/`fn` rows inside windows at/under threshold,
///   `fp`/`tn` rows outside.
///
/// The parts are re-added from the start at every entry, as NAB does, so that
/// our sums match NAB's to the bit.
fn for_each_threshold(
    points: &mut [Scorable],
    window_slots: usize,
    fn_weight: f64,
    additions_max: u64,
    mut visit: impl FnMut(&ThresholdRow) -> ControlFlow<()>,
) -> Result<(), PredictError> {
    // Scores are checked finite, so `partial_cmp` always answers; it also
    // keeps 0.0 and -0.0 equal, as Python does.
    points.sort_by(|a, b| {
        b.anomaly_score
            .partial_cmp(&a.anomaly_score)
            .unwrap_or(Ordering::Equal)
    });
    let mut slot_of_window = vec![usize::MAX; window_slots];
    let mut parts = vec![0.0];
    let (mut tp, mut tn, mut fp, mut fn_) = (0u64, 0u64, 0u64, 0u64);
    for point in points.iter() {
        match point.window {
            Some(window) => {
                fn_ += 1;
                if slot_of_window[window] == usize::MAX {
                    slot_of_window[window] = parts.len();
                    parts.push(-fn_weight);
                }
            }
            None => tn += 1,
        }
    }
    let additions = (points.len() as u64 + 1).saturating_mul(parts.len() as u64);
    if additions > additions_max {
        return Err(PredictError::Limit(format!(
            "threshold sweep over {} rows and {} windows needs up to {additions} additions, \
             more than the limit of {additions_max} (SWEEP_ADDITIONS_MAX)",
            points.len(),
            parts.len() - 1
        )));
    }
    // Python's `sum` adds left to right from 0.
    let sum = |parts: &[f64]| parts.iter().fold(0.0, |total, part| total + part);
    let mut threshold = SWEEP_START_THRESHOLD;
    for point in points.iter() {
        if point.anomaly_score != threshold {
            let row = ThresholdRow {
                threshold,
                raw: sum(&parts),
                tp,
                tn,
                fp,
                fn_,
            };
            if visit(&row).is_break() {
                return Ok(());
            }
            threshold = point.anomaly_score;
        }
        match point.window {
            Some(window) => {
                tp += 1;
                fn_ -= 1;
                let slot = slot_of_window[window];
                // Python's `max(part, sweep)` keeps `part` unless `sweep` is larger.
                if point.sweep_score > parts[slot] {
                    parts[slot] = point.sweep_score;
                }
            }
            None => {
                fp += 1;
                tn -= 1;
                parts[0] += point.sweep_score;
            }
        }
    }
    let _ = visit(&ThresholdRow {
        threshold,
        raw: sum(&parts),
        tp,
        tn,
        fp,
        fn_,
    });
    Ok(())
}

/// NAB's normalised score, 0 for the null detector and 100 for a perfect one
/// (`nab/runner.py` `Runner.normalize`):
/// `100 · (raw − null_raw) / (perfect_raw − null_raw)`.
///
/// `None` when `perfect_raw == null_raw` (a series or corpus without
/// windows), where NAB's formula divides by zero.
///
/// ```
/// use diaspora_predict::nab::normalised_score;
/// assert_eq!(normalised_score(-2.0, -2.0, 2.0), Some(0.0));
/// assert_eq!(normalised_score(2.0, -2.0, 2.0), Some(100.0));
/// assert_eq!(normalised_score(-0.22, 0.0, 0.0), None);
/// ```
pub fn normalised_score(raw: f64, null_raw: f64, perfect_raw: f64) -> Option<f64> {
    if perfect_raw == null_raw {
        None
    } else {
        Some(100.0 * (raw - null_raw) / (perfect_raw - null_raw))
    }
}

/// The NAB score of one series at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeriesScore {
    /// NAB's raw score: over the windows, each one's best (earliest)
    /// detection's sweep score, or `−fn` when it has none; plus the sum of
    /// the false positives' (negative) sweep scores.
    pub raw: f64,
    /// Scorable rows inside windows with anomaly score `>= threshold` (NAB
    /// counts rows, not windows).
    pub tp: u64,
    /// Scorable rows outside windows with anomaly score `>= threshold`.
    pub fp: u64,
    /// Scorable rows inside windows below the threshold.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Scorable rows outside windows below the threshold.
    pub tn: u64,
    /// The raw score with no detections (NAB's null detector):
    /// `−fn` per window that has a scorable row.
    pub null_raw: f64,
    /// `tp` per window of the series (NAB's perfect score).
    pub perfect_raw: f64,
    /// `normalised_score(raw, null_raw, perfect_raw)`: this series against
    /// its own null and perfect scores. NAB reports only the corpus figure;
    /// this per-series one uses the same formula. `None` without windows.
    pub normalised: Option<f64>,
}

/// Scores one series' anomaly scores at `threshold`: every scorable row with
/// an anomaly score `>= threshold` is a detection (`nab/sweeper.py`
/// `Sweeper.scoreDataSet`, via [`sweep_series`] and NAB's threshold sweep).
///
/// NAB picks the sweep entry whose threshold equals `threshold`, else the
/// one just above it; for a threshold above 1.1 or below every score it
/// fails, where this gives no detections or every row detected, the natural
/// extension. Errors as in [`sweep_series`], and for a NaN threshold.
///
/// ```
/// use diaspora_predict::nab::{score_series, Profile, Series};
/// // 100 one-minute rows; a window over rows 40..=59.
/// let time_us: Vec<i64> = (0..100).map(|minute| minute * 60_000_000).collect();
/// let series = Series { name: "s".into(), time_us, values: vec![0.0; 100] };
/// let window = (series.time_us[40], series.time_us[59]);
/// let mut scores = vec![0.0; 100];
/// scores[40] = 1.0; // a detection at the window's first row earns the full `tp`
/// let score = score_series(&series, &[window], &scores, 0.5, &Profile::STANDARD).unwrap();
/// assert_eq!(score.raw, 1.0);
/// assert_eq!(score.normalised, Some(100.0));
/// ```
pub fn score_series(
    series: &Series,
    windows: &[(i64, i64)],
    scores: &[f64],
    threshold: f64,
    profile: &Profile,
) -> Result<SeriesScore, PredictError> {
    if threshold.is_nan() {
        return Err(PredictError::Data(format!(
            "series `{}`: threshold is NaN",
            series.name
        )));
    }
    let points = sweep_series(series, windows, scores, profile)?;
    let mut scorable = Vec::with_capacity(points.len());
    push_scorable(&points, 0, &mut scorable);
    let mut chosen: Option<ThresholdRow> = None;
    let mut null_raw = 0.0;
    for_each_threshold(
        &mut scorable,
        windows.len(),
        profile.fn_,
        SWEEP_ADDITIONS_MAX,
        |row| {
            match chosen {
                // The first entry has no detections: NAB's null detector.
                None => {
                    null_raw = row.raw;
                    chosen = Some(*row);
                }
                Some(_) if row.threshold >= threshold => chosen = Some(*row),
                Some(_) => return ControlFlow::Break(()),
            }
            ControlFlow::Continue(())
        },
    )?;
    let chosen = chosen.expect("the threshold sweep always yields its last entry");
    let perfect_raw = windows.len() as f64 * profile.tp;
    Ok(SeriesScore {
        raw: chosen.raw,
        tp: chosen.tp,
        fp: chosen.fp,
        fn_: chosen.fn_,
        tn: chosen.tn,
        null_raw,
        perfect_raw,
        normalised: normalised_score(chosen.raw, null_raw, perfect_raw),
    })
}

/// The NAB score of a detector over a corpus at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorpusScore {
    /// The threshold scored.
    pub threshold: f64,
    /// The profile scored.
    pub profile: Profile,
    /// Sum of the series' raw scores (the `Totals` row of NAB's
    /// `nab/scorer.py` `scoreCorpus`), in corpus order.
    pub raw: f64,
    /// Sum of the series' null scores: what NAB's null detector totals.
    pub null_raw: f64,
    /// `tp` times the corpus' window count (`Runner.normalize`'s perfect).
    pub perfect_raw: f64,
    /// NAB's reported score, `normalised_score(raw, null_raw, perfect_raw)`;
    /// `None` for a corpus without windows.
    pub normalised: Option<f64>,
    /// Row counts summed over the series, as in NAB's `Totals` row.
    pub tp: u64,
    /// See `tp`.
    pub fp: u64,
    /// See `tp`.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// See `tp`.
    pub tn: u64,
    /// Each series' name and score, in corpus order.
    pub series: Vec<(String, SeriesScore)>,
}

/// Scores a detector over a corpus at `threshold`, as NAB's score and
/// normalise steps do (`nab/scorer.py` `scoreCorpus`, `nab/runner.py`
/// `Runner.normalize`). `scores[k]` holds the anomaly scores of
/// `corpus.series[k]`.
///
/// - Each series is scored by [`score_series`]; the corpus raw score is
///   their sum.
/// - The null score is the null detector's total: NAB runs a detector that
///   always outputs 0.5 and whose best threshold detects nothing, so its
///   total is the no-detection score, `−fn` per window with a scorable row.
/// - The perfect score is `tp` × the number of windows, as NAB's `normalize`
///   counts the entries of the windows file. NAB's file and corpus cover the
///   same 58 series; here the count is of the corpus' own windows, so a
///   subset of NAB normalises against itself.
///
/// A detector that fires once at the first row of every window (after the
/// probationary period) and nowhere else scores exactly 100; the null
/// detector exactly 0.
pub fn corpus_score<S: AsRef<[f64]>>(
    corpus: &Corpus,
    scores: &[S],
    threshold: f64,
    profile: &Profile,
) -> Result<CorpusScore, PredictError> {
    check_corpus_scores(corpus, scores)?;
    let mut total = CorpusScore {
        threshold,
        profile: *profile,
        raw: 0.0,
        null_raw: 0.0,
        perfect_raw: corpus.window_count() as f64 * profile.tp,
        normalised: None,
        tp: 0,
        fp: 0,
        fn_: 0,
        tn: 0,
        series: Vec::with_capacity(corpus.series.len()),
    };
    for ((series, windows), series_scores) in corpus.series.iter().zip(scores) {
        let score = score_series(series, windows, series_scores.as_ref(), threshold, profile)?;
        total.raw += score.raw;
        total.null_raw += score.null_raw;
        total.tp += score.tp;
        total.fp += score.fp;
        total.fn_ += score.fn_;
        total.tn += score.tn;
        total.series.push((series.name.clone(), score));
    }
    total.normalised = normalised_score(total.raw, total.null_raw, total.perfect_raw);
    Ok(total)
}

fn check_corpus_scores<S: AsRef<[f64]>>(corpus: &Corpus, scores: &[S]) -> Result<(), PredictError> {
    if scores.len() == corpus.series.len() {
        Ok(())
    } else {
        Err(PredictError::Data(format!(
            "the corpus has {} series but {} lists of anomaly scores were given",
            corpus.series.len(),
            scores.len()
        )))
    }
}

/// The best threshold for a detector over a corpus, as NAB's optimiser finds it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OptimizedThreshold {
    /// The threshold: one of the detector's anomaly scores, or 1.1 when no
    /// detection at all scores best.
    pub threshold: f64,
    /// The corpus raw score there.
    pub raw: f64,
    /// The corpus null score (see [`corpus_score`]).
    pub null_raw: f64,
    /// The corpus perfect score (see [`corpus_score`]).
    pub perfect_raw: f64,
    /// `normalised_score(raw, null_raw, perfect_raw)`.
    pub normalised: Option<f64>,
}

/// Finds the threshold that maximises the corpus raw score for `profile`, as
/// NAB's optimise step does (`nab/optimizer.py` `optimizeThreshold`): the
/// sweeps of all series ([`sweep_series`]) are pooled, with each series'
/// windows kept apart, one threshold sweep runs over the pool, and the entry
/// with the highest score wins; on a tie the higher threshold (NAB sorts the
/// entries by score with a stable sort). `scores[k]` holds the anomaly
/// scores of `corpus.series[k]`.
///
/// Only the detector's own anomaly scores (and 1.1, no detections) are
/// tried, so [`corpus_score`] at the returned threshold gives the returned
/// raw score, up to the order of additions.
pub fn optimize_threshold<S: AsRef<[f64]>>(
    corpus: &Corpus,
    scores: &[S],
    profile: &Profile,
) -> Result<OptimizedThreshold, PredictError> {
    check_corpus_scores(corpus, scores)?;
    let mut pool = Vec::new();
    let mut window_base = 0;
    for ((series, windows), series_scores) in corpus.series.iter().zip(scores) {
        let points = sweep_series(series, windows, series_scores.as_ref(), profile)?;
        push_scorable(&points, window_base, &mut pool);
        window_base += windows.len();
    }
    let mut null_raw = None;
    let mut best: Option<ThresholdRow> = None;
    for_each_threshold(
        &mut pool,
        window_base,
        profile.fn_,
        SWEEP_ADDITIONS_MAX,
        |row| {
            null_raw.get_or_insert(row.raw);
            if best.map_or(true, |best| row.raw > best.raw) {
                best = Some(*row);
            }
            ControlFlow::Continue(())
        },
    )?;
    let best = best.expect("the threshold sweep always yields its last entry");
    let null_raw = null_raw.unwrap_or(0.0);
    let perfect_raw = window_base as f64 * profile.tp;
    Ok(OptimizedThreshold {
        threshold: best.threshold,
        raw: best.raw,
        null_raw,
        perfect_raw,
        normalised: normalised_score(best.raw, null_raw, perfect_raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_sweep_refuses_work_over_its_limit() {
        let mut points: Vec<Scorable> = (0..10)
            .map(|row| Scorable {
                anomaly_score: f64::from(row) / 10.0,
                sweep_score: -0.11,
                window: (row % 2 == 0).then_some(0),
            })
            .collect();
        // 11 entries at most, times 2 parts (fp and the window).
        let visit = |_: &ThresholdRow| ControlFlow::Continue(());
        assert!(for_each_threshold(&mut points, 1, 1.0, 22, visit).is_ok());
        let error = for_each_threshold(&mut points, 1, 1.0, 21, visit).unwrap_err();
        assert!(matches!(error, PredictError::Limit(_)), "{error}");
        assert!(
            error.to_string().contains("needs up to 22 additions"),
            "{error}"
        );
    }
}
