//! Python exceptions: one class per kind of fabric error, all under
//! `DiasporaError`, so `except pydiaspora.UnknownTopic` works and
//! `except pydiaspora.DiasporaError` catches everything this module raises.

use diaspora_fabric::FabricError;
use diaspora_proto::v1::ErrorCode;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

pyo3::create_exception!(
    pydiaspora,
    DiasporaError,
    PyException,
    "Base class of every error pydiaspora raises."
);
pyo3::create_exception!(
    pydiaspora,
    UnknownTopic,
    DiasporaError,
    "The topic does not exist on the node."
);
pyo3::create_exception!(
    pydiaspora,
    UnknownPartition,
    DiasporaError,
    "The partition does not exist in the topic."
);
pyo3::create_exception!(
    pydiaspora,
    TopicExists,
    DiasporaError,
    "A topic of that name exists (with another partition count)."
);
pyo3::create_exception!(
    pydiaspora,
    LimitExceeded,
    DiasporaError,
    "A configured limit was reached (item or batch too large, too many in flight, ...)."
);
pyo3::create_exception!(
    pydiaspora,
    InvalidRequest,
    DiasporaError,
    "The request or an argument was not valid."
);
pyo3::create_exception!(
    pydiaspora,
    OffsetOutOfRange,
    DiasporaError,
    "The offset is before the first retained item or past the end."
);
pyo3::create_exception!(
    pydiaspora,
    ConnectionFailed,
    DiasporaError,
    "The node could not be reached, or the connection was lost past the retry budget."
);
pyo3::create_exception!(
    pydiaspora,
    PermissionDenied,
    DiasporaError,
    "The node's ACL does not allow the operation (nothing was changed)."
);
pyo3::create_exception!(
    pydiaspora,
    Unauthenticated,
    DiasporaError,
    "The client did not authenticate as the node requires (certificate or token)."
);
pyo3::create_exception!(
    pydiaspora,
    Fenced,
    DiasporaError,
    "A consumer-group commit from a member that is no longer in the current generation."
);
pyo3::create_exception!(
    pydiaspora,
    GroupError,
    DiasporaError,
    "Consumer-group protocol state (e.g. a rebalance in progress)."
);
pyo3::create_exception!(
    pydiaspora,
    StorageError,
    DiasporaError,
    "The node's log or a local file failed (I/O, corrupt data)."
);
pyo3::create_exception!(
    pydiaspora,
    ShutDown,
    DiasporaError,
    "The client, producer, consumer or node is closed or shutting down."
);
pyo3::create_exception!(
    pydiaspora,
    ProvenanceError,
    DiasporaError,
    "The provenance store refused or failed an operation."
);
pyo3::create_exception!(
    pydiaspora,
    NotFound,
    ProvenanceError,
    "Nothing in the provenance store matches the target."
);
pyo3::create_exception!(
    pydiaspora,
    ArrayError,
    DiasporaError,
    "An item's payload cannot be read as the array its metadata describes."
);

/// Registers the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    for (name, ty) in [
        ("DiasporaError", py.get_type::<DiasporaError>()),
        ("UnknownTopic", py.get_type::<UnknownTopic>()),
        ("UnknownPartition", py.get_type::<UnknownPartition>()),
        ("TopicExists", py.get_type::<TopicExists>()),
        ("LimitExceeded", py.get_type::<LimitExceeded>()),
        ("InvalidRequest", py.get_type::<InvalidRequest>()),
        ("OffsetOutOfRange", py.get_type::<OffsetOutOfRange>()),
        ("ConnectionFailed", py.get_type::<ConnectionFailed>()),
        ("PermissionDenied", py.get_type::<PermissionDenied>()),
        ("Unauthenticated", py.get_type::<Unauthenticated>()),
        ("Fenced", py.get_type::<Fenced>()),
        ("GroupError", py.get_type::<GroupError>()),
        ("StorageError", py.get_type::<StorageError>()),
        ("ShutDown", py.get_type::<ShutDown>()),
        ("ProvenanceError", py.get_type::<ProvenanceError>()),
        ("NotFound", py.get_type::<NotFound>()),
        ("ArrayError", py.get_type::<ArrayError>()),
    ] {
        m.add(name, ty)?;
    }
    Ok(())
}

/// The Python exception for a wire error code the node answered with.
fn from_code(code: ErrorCode, msg: String) -> PyErr {
    match code {
        ErrorCode::UnknownTopic => UnknownTopic::new_err(msg),
        ErrorCode::UnknownPartition => UnknownPartition::new_err(msg),
        ErrorCode::TopicExists => TopicExists::new_err(msg),
        ErrorCode::ItemTooLarge
        | ErrorCode::BatchTooLarge
        | ErrorCode::TooManyInFlight
        | ErrorCode::LimitExceeded => LimitExceeded::new_err(msg),
        ErrorCode::InvalidRequest => InvalidRequest::new_err(msg),
        ErrorCode::OffsetOutOfRange => OffsetOutOfRange::new_err(msg),
        ErrorCode::PermissionDenied => PermissionDenied::new_err(msg),
        ErrorCode::Unauthenticated => Unauthenticated::new_err(msg),
        ErrorCode::Fenced => Fenced::new_err(msg),
        ErrorCode::RebalanceInProgress | ErrorCode::UnknownMember => GroupError::new_err(msg),
        ErrorCode::StorageError | ErrorCode::CorruptBatch => StorageError::new_err(msg),
        _ => DiasporaError::new_err(msg),
    }
}

/// The Python exception for a fabric error.
pub fn fabric(e: FabricError) -> PyErr {
    fabric_ref(&e)
}

/// The Python exception for a fabric error held elsewhere.
pub fn fabric_ref(e: &FabricError) -> PyErr {
    let msg = e.to_string();
    match e {
        FabricError::UnknownTopic(_) => UnknownTopic::new_err(msg),
        FabricError::UnknownPartition { .. } => UnknownPartition::new_err(msg),
        FabricError::TopicExists(_) | FabricError::TopicMismatch { .. } => {
            TopicExists::new_err(msg)
        }
        FabricError::Limit { .. } => LimitExceeded::new_err(msg),
        FabricError::Invalid(_) => InvalidRequest::new_err(msg),
        FabricError::Remote { code, .. } => from_code(*code, msg),
        FabricError::Connection { .. } => ConnectionFailed::new_err(msg),
        FabricError::Io { .. } => StorageError::new_err(msg),
        FabricError::Group(_) => GroupError::new_err(msg),
        FabricError::PermissionDenied { .. } => PermissionDenied::new_err(msg),
        FabricError::Fenced(_) => Fenced::new_err(msg),
        FabricError::Unauthenticated(_) => Unauthenticated::new_err(msg),
        FabricError::Shutdown => ShutDown::new_err(msg),
        FabricError::Log(_) => match e.code() {
            ErrorCode::OffsetOutOfRange => OffsetOutOfRange::new_err(msg),
            ErrorCode::ItemTooLarge | ErrorCode::BatchTooLarge => LimitExceeded::new_err(msg),
            _ => StorageError::new_err(msg),
        },
    }
}

/// The Python exception for a provenance error.
pub fn prov(e: diaspora_provenance::ProvError) -> PyErr {
    use diaspora_provenance::ProvError as P;
    match e {
        P::NotFound(_) => NotFound::new_err(e.to_string()),
        P::Invalid(_) => InvalidRequest::new_err(e.to_string()),
        e => ProvenanceError::new_err(e.to_string()),
    }
}
