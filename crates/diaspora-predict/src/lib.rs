//! Prediction for diaspora, starting with the yardstick: detector evaluation.
//!
//! Before diaspora predicts anything it needs an honest way to measure a
//! predictor. The [`nab`] module is an exact port of the scoring of the
//! Numenta Anomaly Benchmark (NAB, the public `numenta/NAB` repository),
//! together with loaders for NAB's data files (`data/**/*.csv` and
//! `labels/combined_windows.json`).
//!
//! The model: a detector reads a series row by row and gives every row an
//! anomaly score in `[0, 1]`. A threshold turns scores into detections. NAB
//! scores the detections against labelled anomaly *windows*: an early
//! detection inside a window earns the most, a window with no detection costs
//! a false negative, a detection outside every window costs a false positive
//! (less just after a window), and the first 15 % of each series is a
//! probationary period that is not scored. The raw score is normalised so that
//! the null detector (never detects) scores 0 and a perfect one 100. NAB picks
//! each detector's threshold by sweeping every anomaly score it produced and
//! keeping the best; [`nab::optimize_threshold`] does the same.
//!
//! The scoring functions are pure: they take series, windows and anomaly
//! scores in memory and return numbers. Files are read only by
//! [`nab::read_series`], [`nab::read_windows`] and [`nab::load_corpus`], each
//! with a limit on what it will read.
//!
//! What this crate does not do (yet): it has no detectors of its own, it does
//! not build NAB windows from raw labels (NAB's `LabelCombiner`), and it does
//! not write NAB's results files.
#![warn(missing_docs)]

use std::path::PathBuf;

pub mod anomaly;
pub mod baseline;
pub mod bench;
pub mod detector;
pub mod forecast;
pub mod fuzzing;
pub mod monitor;
pub mod nab;
pub mod traces;

/// Errors of the prediction layer.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// Bad input: a malformed file (naming the file and line) or inputs that
    /// do not fit together (naming the series and row).
    #[error("bad data: {0}")]
    Data(String),
    /// A bound was reached, naming the thing, the value and the limit.
    #[error("limit reached: {0}")]
    Limit(String),
    /// The model (candle) failed: a shape, device or numerical error.
    #[error("model: {0}")]
    Model(String),
    /// A file or directory could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}
