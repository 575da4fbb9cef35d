//! The crate's one error type.

/// Everything that can go wrong in telemetry: a metric event that does not
/// decode or breaks a limit, a series the registry refuses, a configuration
/// (env var) that cannot be used, an exporter that cannot be built, and
/// fabric failures of the publisher and the subscriber.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A metric event's bytes are not a valid event (JSON syntax, types,
    /// truncation). The message says where.
    #[error("metric event does not decode: {0}")]
    Malformed(String),
    /// A metric event decoded but breaks a limit or an invariant; the message
    /// names the field, the value and the limit.
    #[error("invalid metric event: {0}")]
    InvalidEvent(String),
    /// A series the registry refuses: bad name, unit or labels, or a name
    /// already used with another kind or unit.
    #[error("invalid metric series: {0}")]
    InvalidSeries(String),
    /// The registry holds its maximum number of series.
    #[error("metric registry is full: {max} series; cannot add '{name}'")]
    RegistryFull {
        /// The series that was refused.
        name: String,
        /// The limit ([`crate::registry::SERIES_MAX`]).
        max: usize,
    },
    /// A configuration value (usually an `OTEL_*` or `RUST_LOG` env var)
    /// that cannot be used; names the variable and the value.
    #[error("telemetry configuration: {0}")]
    Config(String),
    /// A global tracing subscriber was installed before [`init`](crate::init).
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialized,
    /// An OpenTelemetry exporter or provider could not be built or shut down.
    #[error("OpenTelemetry export: {0}")]
    Export(String),
    /// The fabric failed (publishing, subscribing, creating the topic).
    #[cfg(feature = "fabric")]
    #[error("fabric: {0}")]
    Fabric(#[from] diaspora_fabric::FabricError),
}

/// Result alias of the crate.
pub type Result<T, E = TelemetryError> = std::result::Result<T, E>;
