use std::error::Error;
use std::fmt;

use openraft::{
    AnyError, ErrorSubject, ErrorVerb, NodeId, RaftTypeConfig, StorageError, StorageIOError,
};

/// What openraft's storage traits return.
pub(crate) type StoResult<T, C> = Result<T, StorageError<<C as RaftTypeConfig>::NodeId>>;

/// Why the stores could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("syncing sled's files: {0}")]
    Io(#[from] std::io::Error),
    #[error("the snapshot file: {0}")]
    SnapshotFile(std::io::Error),
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
}

/// A stored value (or key) that does not decode. Names the key so that an operator can
/// tell a damaged log entry from a damaged vote or snapshot.
#[derive(Debug, thiserror::Error)]
#[error("corrupt stored data under {key}: {reason}")]
pub struct Corrupt {
    /// `<tree>/<key>`, e.g. `meta/vote` or `log/42`.
    pub key: String,
    pub reason: String,
}

impl Corrupt {
    pub(crate) fn new(key: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Self {
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// A read from sled that failed, or found damaged data.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    #[error("reading the snapshot file: {0}")]
    Io(#[from] std::io::Error),
}

impl From<ReadError> for OpenError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Sled(e) => Self::Sled(e),
            ReadError::Corrupt(e) => Self::Corrupt(e),
            ReadError::Io(e) => Self::SnapshotFile(e),
        }
    }
}

/// A write to sled that failed, or could not be encoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    EncodeState(#[from] crate::EncodeError),
    #[error(transparent)]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
}

impl From<ReadError> for WriteError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Sled(e) => Self::Sled(e),
            ReadError::Corrupt(e) => Self::Corrupt(e),
            ReadError::Io(e) => Self::Io(e),
        }
    }
}

impl From<sled::transaction::TransactionError<Corrupt>> for WriteError {
    fn from(e: sled::transaction::TransactionError<Corrupt>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => Self::Corrupt(e),
            sled::transaction::TransactionError::Storage(e) => Self::Sled(e),
        }
    }
}

/// Maps any error to openraft's `StorageError`, which is what every storage trait returns.
/// Only at the boundary: openraft's traits fix the (large) error type, while the crate's
/// own functions return small ones.
pub(crate) trait OrStorageError<T> {
    #[allow(
        clippy::result_large_err,
        reason = "openraft's traits return this type"
    )]
    fn or_sto<NID: NodeId>(
        self,
        subject: ErrorSubject<NID>,
        verb: ErrorVerb,
    ) -> Result<T, StorageError<NID>>;
}

impl<T, E: Error + 'static> OrStorageError<T> for Result<T, E> {
    #[allow(
        clippy::result_large_err,
        reason = "openraft's traits return this type"
    )]
    fn or_sto<NID: NodeId>(
        self,
        subject: ErrorSubject<NID>,
        verb: ErrorVerb,
    ) -> Result<T, StorageError<NID>> {
        self.map_err(|e| StorageIOError::new(subject, verb, AnyError::new(&e)).into())
    }
}
