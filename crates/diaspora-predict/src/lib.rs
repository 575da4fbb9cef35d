//! Prediction for diaspora: an LSTM forecaster for metric series, anomaly
//! detection from its forecast error, declarative monitors that turn both
//! into events, and the yardsticks that measure them.
//!
//! The model: a metric series (a link's utilisation, a partition's lag)
//! arrives one sample at a time. The [`forecast`] module's LSTM (candle)
//! forecasts its next `horizon` steps and learns online; the [`anomaly`]
//! module turns its forecast errors into a likelihood with a threshold that
//! adapts to each series' own noise, and alerts. A [`monitor`] (a TOML file)
//! says which series to read, which model to start from and which events to
//! publish: a prediction when the forecast reaches a threshold with enough
//! confidence, an alert when the error is unusual. [`monitor::MonitorCore`]
//! is the pure part: samples with their own times in, events out.
//!
//! | module | what |
//! | --- | --- |
//! | [`forecast`] | the forecaster, its per-series state, checkpoints (safetensors), devices (CPU, CUDA with feature `cuda`) |
//! | [`anomaly`] | forecast-error likelihood and the alert gate (pure) |
//! | [`monitor`] | monitor specs, [`monitor::MonitorCore`], the event codec |
//! | [`detector`] | the forecast-error detector over whole series, scored on NAB |
//! | [`nab`] | an exact port of the Numenta Anomaly Benchmark's scoring, and its data loaders |
//! | [`baseline`] | NAB's windowed Gaussian detector; persistence and EWMA forecasts |
//! | [`traces`] | forecast RMSE and congestion-onset precision, recall and lead time on twin traces |
//! | [`train`] | training a fresh forecaster on whole traces (`diaspora predict train`) |
//! | [`bench`](mod@bench) | inference and training speed (`diaspora bench predict`) |
//! | `serve` (feature `fabric`) | the monitor runtime on the fabric: metric events in, prediction and alert events out (`diaspora predict serve`) |
//! | `twin_traces` (feature `twins`) | congestion traces from twin runs, one seed at a time (`diaspora predict traces`) |
//! | [`fuzzing`] | fuzz bodies for the parsers |
//!
//! Without features the crate does no I/O but reading and writing files
//! (series, labels, traces, specs, checkpoints), each read with a limit.
//! With `fabric`, the `serve` module connects to a node, subscribes to
//! metric events (diaspora-telemetry's format), publishes events and
//! checkpoints models; it takes its shutdown as a future, so the command
//! line, the twins or a test decide what stops it. With `twins`, the
//! `twin_traces` module runs twin scenarios (diaspora-twin; their hosts are
//! processes of the `diaspora` binary, which the caller names) and writes
//! each run's link metric as a trace.
//!
//! What this crate does not do: it does not collect metrics (that is
//! diaspora-telemetry), it does not act on its predictions (a consumer of
//! the output topic does), and it does not build NAB windows from raw
//! labels (NAB's `LabelCombiner`) or write NAB's results files.
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
#[cfg(feature = "fabric")]
pub mod serve;
pub mod traces;
pub mod train;
#[cfg(feature = "twins")]
pub mod twin_traces;

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
    /// The fabric failed (feature `fabric`).
    #[cfg(feature = "fabric")]
    #[error(transparent)]
    Fabric(#[from] diaspora_fabric::FabricError),
    /// Reading metric events failed (feature `fabric` or `twins`).
    #[cfg(any(feature = "fabric", feature = "twins"))]
    #[error(transparent)]
    Telemetry(#[from] diaspora_telemetry::TelemetryError),
    /// A twin scenario could not be loaded or run (feature `twins`).
    #[cfg(feature = "twins")]
    #[error(transparent)]
    Twin(#[from] diaspora_twin::TwinError),
    /// A twin scenario has no congestion fault for `twin_traces` to vary
    /// (feature `twins`).
    #[cfg(feature = "twins")]
    #[error("{}: no congestion fault to vary", scenario.display())]
    NoCongestionFault {
        /// The scenario file.
        scenario: PathBuf,
    },
    /// The monitor runtime failed (feature `fabric`), saying what it was
    /// doing; the cause is the error's source.
    #[cfg(feature = "fabric")]
    #[error("{context}")]
    Runtime {
        /// What the runtime was doing (which monitor, which topic).
        context: String,
        /// The fabric or telemetry error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file or directory could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory could not be created or written.
    #[error("{action} {}: {source}", path.display())]
    Write {
        /// What was being done: `creating` or `writing`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}
