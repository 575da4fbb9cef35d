//! # diaspora
//!
//! A resilient data-streaming runtime for real-time scientific workflows
//! that link an instrument at the edge to HPC centres and the cloud.
//!
//! This facade re-exports the layers so applications depend on one crate:
//! - [`log`]: the segmented, checksummed, crash-safe append-only log;
//! - [`proto`]: wire types and the frame codec;
//! - [`fabric`]: the node (QUIC data plane, gRPC admin plane), producer and
//!   consumer, the bridge, and (feature `bench`, on here) the end-to-end
//!   benchmark;
//! - [`stream`]: QoS-aware streams (buffering and replay, flow control,
//!   reduction, reconstruction) and their overhead benchmark;
//! - [`provenance`]: records, per-item lineage, model versions, cascading
//!   invalidation with actions, SQLite and PostgreSQL stores, PROV-JSON;
//! - [`view`]: resilient data views — declarative joins over streams,
//!   published as metastreams of references, healing, pinning, snapshots;
//! - [`predict`]: the LSTM forecaster, anomaly detection, monitors and
//!   (feature `fabric`, on here) the monitor runtime.
//!
//! It also holds [`cli`], the library side of the `diaspora` command-line
//! tool: its clap definitions ([`cli::Cli`]) and one module per command
//! family, so tests can check an argument list against the real command
//! line.
//!
//! What this crate does not do: it runs no service of its own. Every
//! service loop (node, bridge, stream, view, monitor, benchmark) lives in
//! its crate, and the demo is its own application crate (`diaspora-demo`).

#![warn(missing_docs)]

pub use diaspora_fabric as fabric;
pub use diaspora_log as log;
pub use diaspora_predict as predict;
pub use diaspora_proto as proto;
pub use diaspora_provenance as provenance;
pub use diaspora_stream as stream;
pub use diaspora_view as view;

pub mod cli;
