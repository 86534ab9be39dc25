//! The applied state, held in memory and shared between the state machine and its readers.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::{LogId, RaftTypeConfig, StoredMembership};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Corrupt;

/// Everything the state machine has applied; also what a snapshot holds, and (encoded the
/// same way) the body of a snapshot file an operator saves.
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "S: Serialize", deserialize = "S: DeserializeOwned"))]
pub struct Applied<C: RaftTypeConfig, S> {
    pub last_applied: Option<LogId<C::NodeId>>,
    pub membership: StoredMembership<C::NodeId, C::Node>,
    pub state: S,
}

impl<C: RaftTypeConfig, S: Serialize + DeserializeOwned> Applied<C, S> {
    /// The snapshot encoding ([`crate::snapshot_codec`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, crate::EncodeError> {
        crate::snapshot_codec::encode(self)
    }

    /// Decodes what [`Applied::to_bytes`] made; `what` names the source for the error.
    pub fn from_bytes(what: &str, bytes: &[u8]) -> Result<Self, Corrupt> {
        crate::snapshot_codec::decode(what, bytes)
    }
}

impl<C: RaftTypeConfig, S: Clone> Clone for Applied<C, S> {
    fn clone(&self) -> Self {
        Self {
            last_applied: self.last_applied.clone(),
            membership: self.membership.clone(),
            state: self.state.clone(),
        }
    }
}

impl<C: RaftTypeConfig, S: Default> Default for Applied<C, S> {
    fn default() -> Self {
        Self {
            last_applied: None,
            membership: StoredMembership::default(),
            state: S::default(),
        }
    }
}

/// A cheap read handle on the state machine, for readers outside raft (the admin API).
pub struct StateView<C: RaftTypeConfig, S> {
    applied: Arc<RwLock<Applied<C, S>>>,
}

impl<C: RaftTypeConfig, S> Clone for StateView<C, S> {
    fn clone(&self) -> Self {
        Self {
            applied: Arc::clone(&self.applied),
        }
    }
}

impl<C: RaftTypeConfig, S> StateView<C, S> {
    pub(crate) fn new(applied: Applied<C, S>) -> Self {
        Self {
            applied: Arc::new(RwLock::new(applied)),
        }
    }

    /// Runs `f` under the read lock: keep it short, the state machine waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.lock_read().state)
    }

    pub fn last_applied(&self) -> Option<LogId<C::NodeId>> {
        self.lock_read().last_applied.clone()
    }

    pub fn membership(&self) -> StoredMembership<C::NodeId, C::Node> {
        self.lock_read().membership.clone()
    }

    /// A copy of everything applied, as of one log index. Holds the read lock for the copy
    /// only; encode it afterwards.
    pub fn applied(&self) -> Applied<C, S>
    where
        S: Clone,
    {
        self.lock_read().clone()
    }

    // A poisoned lock means `AppState::apply` panicked, which already stopped raft; the
    // state is still readable and panicking again in every reader would help no one.
    pub(crate) fn lock_read(&self) -> RwLockReadGuard<'_, Applied<C, S>> {
        self.applied.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn lock_write(&self) -> RwLockWriteGuard<'_, Applied<C, S>> {
        self.applied.write().unwrap_or_else(PoisonError::into_inner)
    }
}
