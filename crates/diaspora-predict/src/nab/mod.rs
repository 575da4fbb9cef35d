//! The Numenta Anomaly Benchmark (NAB): data loaders and an exact port of its
//! scoring.
//!
//! NAB (`numenta/NAB` on GitHub, MIT licence since 2024) is a corpus of
//! labelled time series and a scoring rule for streaming anomaly detectors.
//! This module reads its files and scores a detector's per-row anomaly scores
//! the way NAB does; each function names the NAB file and function it ports.
//!
//! # Scoring, in NAB's words and code
//!
//! 1. [`sweep_series`] (`nab/sweeper.py` `Sweeper.calcSweepScore`) gives every
//!    row the score a detection there would earn: inside a window a
//!    [`scaled_sigmoid`] of the row's position, `tp` at the window's first row
//!    and nearly 0 at its last; outside, a cost of up to `fp`, smaller just
//!    after a window. The first [`probation_rows`] rows (15 %, at most 750)
//!    are not scored.
//! 2. A threshold turns anomaly scores into detections (`>= threshold`). Each
//!    window counts once, at its best (earliest) detection, or `−fn` without
//!    one; every false positive adds its (negative) score
//!    (`Sweeper.calcScoreByThreshold`). That is the raw score
//!    ([`score_series`], [`corpus_score`]).
//! 3. [`optimize_threshold`] (`nab/optimizer.py` `optimizeThreshold`) tries
//!    every anomaly score the detector produced as the threshold over the
//!    whole corpus and keeps the best, as NAB does for each detector and
//!    profile.
//! 4. [`normalised_score`] (`nab/runner.py` `Runner.normalize`) maps the raw
//!    score so that the null detector scores 0 and a perfect one 100:
//!    `100 · (raw − null) / (perfect − null)`, where `null` is the
//!    no-detection score summed over the corpus and `perfect` is `tp` times
//!    the number of windows.
//!
//! Profiles ([`Profile`]) weight true positives, false positives and false
//! negatives; NAB's three are in `config/profiles.json`.
//!
//! Additions are done in NAB's order, so series scores and the optimiser's
//! pooled score match NAB's (run under Python 3.11) to the bit; the tests
//! check values produced by NAB's own `sweeper.py`. Corpus totals may differ
//! in the last bit, as NAB adds series in directory-listing order (and
//! Python 3.12's `sum` compensates rounding). See [`score_series`] and
//! [`sweep_series`] for the two inputs where NAB fails and we do not.
//!
//! ```
//! use diaspora_predict::nab::{corpus_score, optimize_threshold, Corpus, Profile, Series};
//! let time_us: Vec<i64> = (0..100).map(|minute| minute * 60_000_000).collect();
//! let window = (time_us[40], time_us[59]);
//! let series = Series { name: "s.csv".into(), time_us, values: vec![0.0; 100] };
//! let corpus = Corpus { series: vec![(series, vec![window])] };
//! // A detector that is sure at row 45 and a little worried at row 20.
//! let mut scores = vec![0.0; 100];
//! scores[45] = 0.9;
//! scores[20] = 0.4;
//! let best = optimize_threshold(&corpus, &[&scores], &Profile::STANDARD).unwrap();
//! assert_eq!(best.threshold, 0.9);
//! let score = corpus_score(&corpus, &[&scores], best.threshold, &Profile::STANDARD).unwrap();
//! assert_eq!(score.raw, best.raw);
//! assert!(score.normalised.unwrap() > 90.0);
//! ```

mod data;
mod score;
mod time;

#[cfg(test)]
mod tests;

pub use data::{
    load_corpus, parse_series, parse_windows, read_series, read_windows, Corpus, Series,
    CORPUS_DEPTH_MAX, CORPUS_FILES_MAX, SERIES_BYTES_MAX, SERIES_ROWS_MAX, WINDOWS_BYTES_MAX,
    WINDOWS_PER_SERIES_MAX,
};
pub use score::{
    corpus_score, normalised_score, optimize_threshold, probation_rows, scaled_sigmoid,
    score_series, sweep_series, CorpusScore, OptimizedThreshold, Profile, RowWindow, SeriesScore,
    SweepPoint, PROBATION_PERCENT, SWEEP_ADDITIONS_MAX,
};
pub use time::{format_timestamp_us, parse_timestamp_us};
