use std::error::Error;
use std::fmt;

use openraft::{AnyError, ErrorSubject, ErrorVerb, NodeId, StorageError, StorageIOError};

/// Why the stores could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("syncing sled's files: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
}

/// A stored value (or key) that does not decode. Names the key so that an operator can
/// tell a damaged log entry from a damaged vote or snapshot.
#[derive(Debug, thiserror::Error)]
#[error("corrupt stored data under {key}: {reason}")]
pub struct Corrupt {
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
}

impl From<ReadError> for OpenError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Sled(e) => Self::Sled(e),
            ReadError::Corrupt(e) => Self::Corrupt(e),
        }
    }
}

/// Maps any error to openraft's `StorageError`, which is what every storage trait returns.
pub(crate) trait OrStorageError<T> {
    fn or_sto<NID: NodeId>(
        self,
        subject: ErrorSubject<NID>,
        verb: ErrorVerb,
    ) -> Result<T, StorageError<NID>>;
}

impl<T, E: Error + 'static> OrStorageError<T> for Result<T, E> {
    fn or_sto<NID: NodeId>(
        self,
        subject: ErrorSubject<NID>,
        verb: ErrorVerb,
    ) -> Result<T, StorageError<NID>> {
        self.map_err(|e| StorageIOError::new(subject, verb, AnyError::new(&e)).into())
    }
}
