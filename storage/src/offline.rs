//! Work on the store of a node that is not running, for disaster recovery: read everything
//! it holds in one go, and replace the whole store by one state installed as its snapshot.
//!
//! sled locks its files, so while `fepha run` has the store open, [`Offline::open`] fails.

use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::SnapshotMeta;
use openraft::{Entry, EntryPayload, LogId, RaftTypeConfig, StoredMembership, Vote};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use crate::AppState;
use crate::codec::encode;
use crate::db::Db;
use crate::error::{Corrupt, OpenError, ReadError, WriteError};
use crate::log_store::{COMMITTED, LAST_PURGED, LogStore, VOTE};
use crate::snapshot::{self, DATA, FILE, META, snapshot_id};
use crate::view::Applied;

/// Why offline work on a store failed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    #[error("reading the snapshot file: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing the store: {0}")]
    Write(String),
}

impl From<ReadError> for OfflineError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Sled(e) => Self::Sled(e),
            ReadError::Corrupt(e) => Self::Corrupt(e),
            ReadError::Io(e) => Self::Io(e),
        }
    }
}

impl From<WriteError> for OfflineError {
    fn from(e: WriteError) -> Self {
        Self::Write(e.to_string())
    }
}

/// Everything a stopped node's store holds.
pub struct Contents<C: RaftTypeConfig, S> {
    pub vote: Option<Vote<C::NodeId>>,
    pub committed: Option<LogId<C::NodeId>>,
    /// The snapshot's state with every entry of the log after it applied, committed or not
    /// (a new leader would commit them all), and the last membership in the log.
    pub applied: Applied<C, S>,
    /// How many of those entries are beyond the last index this node knew to be committed.
    pub uncommitted: u64,
}

/// A store opened while its node is stopped.
pub struct Offline<C: RaftTypeConfig, S> {
    db: Arc<Db>,
    log: LogStore<C>,
    _state: PhantomData<fn() -> S>,
}

impl<C, S> Offline<C, S>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    Entry<C>: Clone,
    S: AppState<C>,
{
    /// Opens (or creates) the store in `dir`; fails while a node has it open.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let db = Arc::new(Db::open(dir)?);
        let log = LogStore::new(db.clone())?;
        Ok(Self {
            db,
            log,
            _state: PhantomData,
        })
    }

    /// Whether the store has never held anything: no vote, no log, no snapshot.
    pub fn is_empty(&self) -> Result<bool, OfflineError> {
        Ok(self.log.meta::<Vote<C::NodeId>>(VOTE)?.is_none()
            && self.log.meta::<LogId<C::NodeId>>(LAST_PURGED)?.is_none()
            && self.log.last_entry()?.is_none()
            && snapshot::load::<C>(&self.db)?.is_none())
    }

    pub fn read(&self) -> Result<Contents<C, S>, OfflineError> {
        let vote = self.log.meta(VOTE)?;
        let committed: Option<LogId<C::NodeId>> = self.log.meta(COMMITTED)?;
        let mut applied: Applied<C, S> = match snapshot::load::<C>(&self.db)? {
            Some((meta, data)) => snapshot::decode_state("snapshot/data", &meta, &data)?,
            None => Applied::default(),
        };
        let after = applied.last_applied.as_ref().map_or(0, |l| l.index + 1);
        let mut uncommitted = 0;
        for entry in self.log.entries(after..)? {
            if committed
                .as_ref()
                .is_none_or(|c| entry.log_id.index > c.index)
            {
                uncommitted += 1;
            }
            match &entry.payload {
                EntryPayload::Normal(data) => {
                    applied.state.apply(&entry.log_id, data);
                }
                EntryPayload::Membership(m) => {
                    applied.membership =
                        StoredMembership::new(Some(entry.log_id.clone()), m.clone());
                }
                EntryPayload::Blank => {}
            }
            applied.last_applied = Some(entry.log_id);
        }
        Ok(Contents {
            vote,
            committed,
            applied,
            uncommitted,
        })
    }

    /// Replaces the whole store: `applied` becomes the snapshot (and the committed state),
    /// the log is emptied up to it, and `vote` is the vote. Either all of it survives a crash
    /// or none: the snapshot, the vote and the purge mark are one transaction, and opening
    /// the store finishes a purge that a crash interrupted.
    pub fn install(
        &self,
        vote: &Vote<C::NodeId>,
        applied: &Applied<C, S>,
    ) -> Result<(), OfflineError> {
        let Some(last) = applied.last_applied.clone() else {
            return Err(OfflineError::Write(
                "a state to install needs a last log id".into(),
            ));
        };
        let meta: SnapshotMeta<C::NodeId, C::Node> = SnapshotMeta {
            snapshot_id: snapshot_id(Some(&last), self.db.unique_id()?),
            last_log_id: Some(last.clone()),
            last_membership: applied.membership.clone(),
        };
        let encoded = |e: serde_json::Error| OfflineError::Write(format!("encoding: {e}"));
        let meta = encode(&meta).map_err(encoded)?;
        let data = applied
            .to_bytes()
            .map_err(|e| OfflineError::Write(e.to_string()))?;
        let vote = encode(vote).map_err(encoded)?;
        let last = encode(&last).map_err(encoded)?;
        let installing = self.db.lock_snapshot();
        let number = self.db.unique_id()?;
        let file = encode(&number).map_err(encoded)?;
        self.db
            .snapshot_files
            .write(number, &data)
            .map_err(|e| OfflineError::Write(format!("the snapshot file: {e}")))?;
        (&self.db.snapshot, &self.db.meta)
            .transaction(|(snap, meta_tree)| {
                snap.insert(META, meta.as_slice())?;
                snap.insert(FILE, file.as_slice())?;
                snap.remove(DATA)?;
                meta_tree.insert(VOTE, vote.as_slice())?;
                meta_tree.insert(COMMITTED, last.as_slice())?;
                meta_tree.insert(LAST_PURGED, last.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| OfflineError::Write(format!("{e:?}")))?;
        self.db
            .persist_blocking()
            .map_err(|e| OfflineError::Write(e.to_string()))?;
        self.db.snapshot_files.keep_only(Some(number));
        drop(installing);
        // Only now: a crash before this point left the old log under the new purge mark,
        // which the next open removes.
        let mut batch = sled::Batch::default();
        for key in self.db.log.iter().keys() {
            batch.remove(key?);
        }
        self.db.log.apply_batch(batch)?;
        self.db
            .persist_blocking()
            .map_err(|e| OfflineError::Write(e.to_string()))?;
        Ok(())
    }
}
