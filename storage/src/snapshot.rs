//! Snapshots: building one from the applied state, and keeping the current one (its meta in
//! sled, its data in a file).

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, Snapshot, SnapshotMeta};
use openraft::{ErrorSubject, ErrorVerb, LogId, RaftTypeConfig};
use sled::IVec;
use sled::transaction::ConflictableTransactionError;

use crate::AppState;
use crate::codec::{decode, encode};
use crate::db::Db;
use crate::error::{Corrupt, OrStorageError, ReadError, StoResult, WriteError};
use crate::view::{Applied, StateView};

pub(crate) const META: &str = "meta";
/// The number of the data file ([`crate::snapshot_files`]).
pub(crate) const FILE: &str = "file";
/// Where a store from before snapshot files kept the data; read, and removed at the next save.
pub(crate) const DATA: &str = "data";

type Meta<C> = SnapshotMeta<<C as RaftTypeConfig>::NodeId, <C as RaftTypeConfig>::Node>;
/// A stored snapshot: its meta and its encoded state.
type Stored<C> = (Meta<C>, Vec<u8>);

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
    let data = applied.to_bytes()?;
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
    let _saving = db.lock_snapshot();
    let number = db.unique_id()?;
    // The file first: the tree names it only once it is whole on disk.
    db.snapshot_files.write(number, data)?;
    let meta_bytes = IVec::from(encode(meta)?);
    let file_bytes = IVec::from(encode(&number)?);
    let stored = db.snapshot.transaction(|tx| {
        if let Some(current) = tx.get(META)? {
            let current: Meta<C> =
                decode("snapshot/meta", &current).map_err(ConflictableTransactionError::Abort)?;
            // A build runs beside installs; a slow one must not replace a newer installed
            // snapshot, since the log before that one may be purged already.
            if current.last_log_id > meta.last_log_id {
                return Ok(false);
            }
        }
        tx.insert(META, meta_bytes.clone())?;
        tx.insert(FILE, file_bytes.clone())?;
        // A store from before snapshot files kept the data here.
        tx.remove(DATA)?;
        Ok(true)
    })?;
    if stored {
        db.persist_blocking()?;
        metrics::gauge!("fepha_raft_snapshot_size_bytes").set(data.len() as f64);
        db.size.set_snapshot_bytes(data.len() as u64);
    }
    db.snapshot_files.keep_only(current_file(db)?);
    Ok(())
}

/// The number of the current snapshot's data file, if it has one.
pub(crate) fn current_file(db: &Db) -> Result<Option<u64>, ReadError> {
    match db.snapshot.get(FILE)? {
        Some(bytes) => Ok(Some(decode("snapshot/file", &bytes)?)),
        None => Ok(None),
    }
}

/// The current snapshot's meta and data, read together.
pub(crate) fn load<C: RaftTypeConfig>(db: &Db) -> Result<Option<Stored<C>>, ReadError> {
    let _reading = db.lock_snapshot();
    let Some(meta) = db.snapshot.get(META)? else {
        return Ok(None);
    };
    let meta: Meta<C> = decode("snapshot/meta", &meta)?;
    let data = match current_file(db)? {
        Some(number) => match db.snapshot_files.read(number) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Corrupt::new(format!("snapshot/file {number}"), "missing").into());
            }
            Err(e) => return Err(e.into()),
        },
        None => match db.snapshot.get(DATA)? {
            Some(data) => data.to_vec(),
            None => return Err(Corrupt::new("snapshot/data", "missing").into()),
        },
    };
    Ok(Some((meta, data)))
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
    let applied = Applied::<C, S>::from_bytes(key, data)?;
    if applied.last_applied != meta.last_log_id || applied.membership != meta.last_membership {
        return Err(Corrupt::new(
            key,
            "state does not match the snapshot's meta",
        ));
    }
    Ok(applied)
}
