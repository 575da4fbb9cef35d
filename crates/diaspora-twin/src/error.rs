//! [`TwinError`]: why a scenario could not be loaded or run.
//!
//! Each variant names the thing (a file, a host, a link, a setting), the
//! value and, where there is one, the limit, and keeps the error it wraps
//! as its [`source`](std::error::Error::source). Its message includes the
//! wrapped error's text, so `to_string()` alone says everything (the
//! convention of the other diaspora crates).

use std::io;
use std::path::PathBuf;

use crate::{ParamsError, RelayError};

/// Why a scenario could not be loaded, validated or run.
///
/// ```
/// use diaspora_twin::{Scenario, TwinError};
/// let e = Scenario::parse("name = \"t\"\nduration_s = 0").unwrap_err();
/// assert!(matches!(e, TwinError::OutOfRange { .. }));
/// assert_eq!(e.to_string(), "duration_s = 0 must be > 0");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    /// A file or directory could not be read, written or created.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `write`, `create`, `open`, `clear`).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A scenario file is not valid: `source` says why.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The scenario file.
        path: PathBuf,
        /// What is wrong with its text.
        source: Box<TwinError>,
    },
    /// Scenario text is not TOML of the scenario format.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// Two hosts have the same name.
    #[error("host name '{name}' is used twice")]
    DuplicateHost {
        /// The name.
        name: String,
    },
    /// A scenario entry names something that is not declared.
    #[error("{what} names {kind} '{name}', which is not declared{where_}")]
    Undeclared {
        /// The entry that names it (`bridge 'b'`, `a fault`, ...).
        what: String,
        /// What kind of thing it names (`node`, `link`, `host`, `topic`).
        kind: &'static str,
        /// The name.
        name: String,
        /// Where it should be declared (` under [[nodes]]`, or empty).
        where_: &'static str,
    },
    /// A host uses a QoS stream on a topic declared without `qos = true`.
    #[error("{what} uses a QoS stream on '{topic}': declare the topic with qos = true")]
    NotQosTopic {
        /// The host (`producer 'p'`, `consumer 'c'`).
        what: String,
        /// The topic.
        topic: String,
    },
    /// A producer's synthetic payload kind is unknown.
    #[error("producer '{producer}': payload '{payload}' is not random or frame")]
    UnknownPayload {
        /// The producer host.
        producer: String,
        /// The payload kind given.
        payload: String,
    },
    /// A monitor is declared but the scenario publishes no link metrics.
    #[error("monitor '{monitor}' needs [metrics] (the link metrics it reads)")]
    MonitorWithoutMetrics {
        /// The monitor host.
        monitor: String,
    },
    /// A pool's inline spec lacks what the twin needs of it.
    #[error("pool '{pool}': spec: {detail}")]
    PoolSpec {
        /// The pool host.
        pool: String,
        /// What is missing or malformed.
        detail: String,
    },
    /// A pool's inline spec could not be written as TOML.
    #[error("pool '{pool}': writing its spec: {source}")]
    PoolSpecText {
        /// The pool host.
        pool: String,
        /// The encoder's error.
        source: toml::ser::Error,
    },
    /// A number in the scenario or the run options is out of its range.
    #[error("{field} = {value} must be {allowed}")]
    OutOfRange {
        /// The setting (`duration_s`, `producer 'p': rate`, ...).
        field: String,
        /// The rejected value.
        value: String,
        /// The allowed range (`> 0`, `≥ 10`, `in (0, 1]`).
        allowed: &'static str,
    },
    /// A host uses a link that does not lead to the node it names.
    #[error("link '{link}' leads to '{to}', not to '{node}'")]
    WrongLink {
        /// The link.
        link: String,
        /// The node behind the link.
        to: String,
        /// The node the host names.
        node: String,
    },
    /// A host's inline QoS policy could not be written as TOML.
    #[error("policy of host '{host}': {source}")]
    Policy {
        /// The host.
        host: String,
        /// The encoder's error.
        source: toml::ser::Error,
    },
    /// A host process could not be started.
    #[error("start host '{host}': {source}")]
    Spawn {
        /// The host.
        host: String,
        /// The OS error.
        source: io::Error,
    },
    /// Setting up a scenario's identities or ACL failed.
    #[error("[auth]: {what} failed: {stderr}")]
    Auth {
        /// The command.
        what: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A one-shot `diaspora` command could not be run.
    #[error("{what}: {source}")]
    Command {
        /// What it was for (`topic create`, `metrics publisher`).
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// `diaspora topic create` / `stream init` failed.
    #[error("creating topic '{topic}' on '{node}': {stderr}")]
    TopicCreate {
        /// The topic.
        topic: String,
        /// The node.
        node: String,
        /// What the command printed on stderr.
        stderr: String,
    },
    /// A host did not report itself ready in time.
    #[error("{kind} '{host}' did not start within {within_s} s; its log:\n{log}")]
    NotReady {
        /// The host kind (`node`, `monitor`).
        kind: &'static str,
        /// The host.
        host: String,
        /// How long it was given, seconds.
        within_s: u64,
        /// Its log.
        log: String,
    },
    /// A fault or option names a host or node the run does not have.
    #[error("{what}: no {kind} '{name}'")]
    NoSuch {
        /// Who asked (`restart`, `metrics`).
        what: &'static str,
        /// `host` or `node`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A link's relay could not be started.
    #[error("link '{link}': {source}")]
    Relay {
        /// The link.
        link: String,
        /// The relay's error.
        source: RelayError,
    },
    /// A link's parameters could not be changed during the run.
    #[error("link '{link}': {source}")]
    LinkParams {
        /// The link.
        link: String,
        /// Why the parameters were refused.
        source: ParamsError,
    },
    /// A host's records (acknowledgements, deliveries) are malformed.
    #[error("{}: {source}", path.display())]
    Records {
        /// The records file.
        path: PathBuf,
        /// The malformed line.
        source: RecordError,
    },
    /// A QoS producer's summary line is malformed.
    #[error("{}: {source}", path.display())]
    Summary {
        /// The summary file.
        path: PathBuf,
        /// The decoder's error.
        source: serde_json::Error,
    },
}

/// A malformed line of JSON records ([`crate::analysis::parse_lines`]).
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {source}")]
pub struct RecordError {
    /// The line's number, from 1.
    pub line: usize,
    /// The decoder's error.
    pub source: serde_json::Error,
}

impl TwinError {
    /// An I/O error on `path` while doing `action`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| TwinError::Io {
            action,
            path,
            source,
        }
    }

    /// `field = value` is outside `allowed`.
    pub(crate) fn out_of_range(
        field: impl Into<String>,
        value: impl ToString,
        allowed: &'static str,
    ) -> Self {
        TwinError::OutOfRange {
            field: field.into(),
            value: value.to_string(),
            allowed,
        }
    }
}
