//! Errors of the fabric, and their mapping to wire error codes.

use diaspora_proto::v1::ErrorCode;

/// Everything that can go wrong in the node or a client.
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    /// The topic does not exist on the node.
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// The partition does not exist in the topic.
    #[error("unknown partition {partition} of topic '{topic}' (it has {partitions})")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Requested partition.
        partition: u32,
        /// Number of partitions the topic has.
        partitions: u32,
    },
    /// A topic with this name exists already.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// A topic exists with another partition count than the one asked for
    /// (see [`crate::ensure_topic`]).
    #[error("topic '{topic}' exists with {found} partition(s), not the {wanted} asked for")]
    TopicMismatch {
        /// Topic name.
        topic: String,
        /// Its partition count.
        found: u32,
        /// The partition count asked for.
        wanted: u32,
    },
    /// A configured limit was reached.
    #[error("{what} {value}{unit} exceeds {limit_name} {limit}")]
    Limit {
        /// What was measured, e.g. "item of".
        what: String,
        /// The value that was too large.
        value: u64,
        /// Unit suffix of the value, e.g. " bytes" (or empty).
        unit: &'static str,
        /// The name of the limit, e.g. `item_bytes_max`.
        limit_name: &'static str,
        /// The limit's value.
        limit: u64,
    },
    /// The request was not valid.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// An error from the log (storage, corrupt batch, sequence).
    #[error(transparent)]
    Log(#[from] diaspora_log::LogError),
    /// The peer answered with an error.
    #[error("node error {code:?}: {message}")]
    Remote {
        /// Wire error code.
        code: ErrorCode,
        /// Message from the node.
        message: String,
    },
    /// Connection-level failure (cannot reach, lost, TLS).
    #[error("connection to {addr}: {message}")]
    Connection {
        /// The address.
        addr: String,
        /// What happened.
        message: String,
    },
    /// I/O outside the log (group offsets, topic metadata, certificates).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Consumer-group protocol state.
    #[error("consumer group: {0}")]
    Group(String),
    /// The ACL does not allow the operation (nothing was changed).
    #[error("permission denied: {principal} may not {operation} {resource} ({reason})")]
    PermissionDenied {
        /// Who asked, `User:NAME`.
        principal: String,
        /// The operation, e.g. `write`.
        operation: &'static str,
        /// The resource, e.g. `topic:frames`.
        resource: String,
        /// Which entry denied it, or that none allows it.
        reason: String,
    },
    /// A consumer-group commit from outside the current generation.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The client has not authenticated as the node requires.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The client or node is shutting down.
    #[error("shut down")]
    Shutdown,
}

/// Result alias for the fabric.
pub type Result<T, E = FabricError> = std::result::Result<T, E>;

impl FabricError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        use diaspora_log::LogError as L;
        match self {
            FabricError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            FabricError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
            FabricError::TopicExists(_) | FabricError::TopicMismatch { .. } => {
                ErrorCode::TopicExists
            }
            FabricError::Limit { limit_name, .. } => match *limit_name {
                "item_bytes_max" | "record_bytes_max" => ErrorCode::ItemTooLarge,
                "batch_bytes_max" => ErrorCode::BatchTooLarge,
                "in_flight_max" => ErrorCode::TooManyInFlight,
                _ => ErrorCode::LimitExceeded,
            },
            FabricError::Invalid(_) => ErrorCode::InvalidRequest,
            FabricError::Log(e) => match e {
                L::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
                L::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
                L::DuplicateSequence { .. } => ErrorCode::DuplicateSequence,
                L::Batch(b) => {
                    use diaspora_log::BatchError as B;
                    match b {
                        B::RecordTooLarge { .. } => ErrorCode::ItemTooLarge,
                        B::BatchTooLarge { .. } | B::RecordsTooLarge { .. } => {
                            ErrorCode::BatchTooLarge
                        }
                        B::TooManyRecords { .. } => ErrorCode::LimitExceeded,
                        B::OffsetOverflow { .. } | B::SequenceOverflow { .. } => {
                            ErrorCode::InvalidRequest
                        }
                        _ => ErrorCode::CorruptBatch,
                    }
                }
                _ => ErrorCode::StorageError,
            },
            FabricError::Remote { code, .. } => *code,
            FabricError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            FabricError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            FabricError::Fenced(_) => ErrorCode::Fenced,
            FabricError::Group(_) => ErrorCode::UnknownMember,
            FabricError::Io { .. } => ErrorCode::StorageError,
            FabricError::Connection { .. } | FabricError::Shutdown => ErrorCode::Internal,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        FabricError::Io {
            context: context.into(),
            source,
        }
    }
}
