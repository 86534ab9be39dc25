//! Snapshots: building one from the applied state, and keeping the current one in sled.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, Snapshot, SnapshotMeta};
use openraft::{ErrorSubject, ErrorVerb, LogId, RaftTypeConfig};
use sled::IVec;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::AppState;
use crate::codec::{decode, encode};
use crate::db::Db;
use crate::error::{Corrupt, OrStorageError, ReadError, StoResult, WriteError};
use crate::view::{Applied, StateView};

pub(crate) const META: &str = "meta";
pub(crate) const DATA: &str = "data";

type Meta<C> = SnapshotMeta<<C as RaftTypeConfig>::NodeId, <C as RaftTypeConfig>::Node>;

/// Builds snapshots of a [`crate::StateMachineStore`]'s state.
pub struct SnapshotBuilder<C: RaftTypeConfig, S> {
    db: Arc<Db>,
    view: StateView<C, S>,
}

impl<C: RaftTypeConfig, S> SnapshotBuilder<C, S> {
    pub(crate) fn new(db: Arc<Db>, view: StateView<C, S>) -> Self {
        Self { db, view }
    }
}

impl<C, S> RaftSnapshotBuilder<C> for SnapshotBuilder<C, S>
where
    C: RaftTypeConfig<SnapshotData = Cursor<Vec<u8>>>,
    S: AppState<C>,
{
    async fn build_snapshot(&mut self) -> StoResult<Snapshot<C>, C> {
        let db = Arc::clone(&self.db);
        let view = self.view.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || build::<C, S>(&db, &view))
            .await
            .or_sto(ErrorSubject::Snapshot(None), ErrorVerb::Write)?
            .or_sto(ErrorSubject::Snapshot(None), ErrorVerb::Write)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// Blocking: serialising a whole state and fsyncing it takes a while.
fn build<C, S>(db: &Db, view: &StateView<C, S>) -> Result<(Meta<C>, Vec<u8>), WriteError>
where
    C: RaftTypeConfig,
    S: AppState<C>,
{
    // Copy, and serialise only after the lock is released: applying waits for the copy
    // but not for the serialisation.
    let applied = view.lock_read().clone();
    let data = encode(&applied)?;
    let meta = SnapshotMeta {
        snapshot_id: snapshot_id(applied.last_applied.as_ref(), db.unique_id()?),
        last_log_id: applied.last_applied,
        last_membership: applied.membership,
    };
    save::<C>(db, &meta, &data)?;
    Ok((meta, data))
}

/// `<term>-<index>-<n>`: two snapshots at the same log id (one built, one received) must
/// still have different ids.
pub(crate) fn snapshot_id<NID: openraft::NodeId>(last: Option<&LogId<NID>>, n: u64) -> String {
    match last {
        Some(id) => format!("{}-{}-{n}", id.leader_id.get_term(), id.index),
        None => format!("0-0-{n}"),
    }
}

/// Stores the snapshot as the current one and fsyncs it. Blocking.
pub(crate) fn save<C: RaftTypeConfig>(
    db: &Db,
    meta: &Meta<C>,
    data: &[u8],
) -> Result<(), WriteError> {
    let meta_bytes = IVec::from(encode(meta)?);
    let data = IVec::from(data);
    db.snapshot.transaction(|tx| {
        if let Some(current) = tx.get(META)? {
            let current: Meta<C> =
                decode("snapshot/meta", &current).map_err(ConflictableTransactionError::Abort)?;
            // A build runs beside installs; a slow one must not replace a newer installed
            // snapshot, since the log before that one may be purged already.
            if current.last_log_id > meta.last_log_id {
                return Ok(());
            }
        }
        tx.insert(META, meta_bytes.clone())?;
        tx.insert(DATA, data.clone())?;
        Ok(())
    })?;
    db.persist_blocking()?;
    metrics::gauge!("fepha_raft_snapshot_size_bytes").set(data.len() as f64);
    Ok(())
}

/// The current snapshot's meta and data, read together.
pub(crate) fn load<C: RaftTypeConfig>(db: &Db) -> Result<Option<(Meta<C>, IVec)>, ReadError> {
    let loaded = db.snapshot.transaction(|tx| {
        let Some(meta) = tx.get(META)? else {
            return Ok(None);
        };
        let meta: Meta<C> =
            decode("snapshot/meta", &meta).map_err(ConflictableTransactionError::Abort)?;
        let data = tx.get(DATA)?.ok_or_else(|| {
            ConflictableTransactionError::Abort(Corrupt::new("snapshot/data", "missing"))
        })?;
        Ok(Some((meta, data)))
    });
    loaded.map_err(|e| match e {
        TransactionError::Abort(e) => ReadError::Corrupt(e),
        TransactionError::Storage(e) => ReadError::Sled(e),
    })
}

/// Decodes snapshot data, checking that it is the state the meta describes. `key` names
/// where it came from, for the error.
pub(crate) fn decode_state<C, S>(
    key: &str,
    meta: &Meta<C>,
    data: &[u8],
) -> Result<Applied<C, S>, Corrupt>
where
    C: RaftTypeConfig,
    S: AppState<C>,
{
    let applied: Applied<C, S> = decode(key, data)?;
    if applied.last_applied != meta.last_log_id || applied.membership != meta.last_membership {
        return Err(Corrupt::new(
            key,
            "state does not match the snapshot's meta",
        ));
    }
    Ok(applied)
}
