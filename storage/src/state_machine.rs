//! The state machine: applies committed entries to the in-memory state.
//!
//! Nothing is written to disk per entry: after a restart the state is the stored snapshot's,
//! and openraft re-applies the committed entries after it from the log.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftTypeConfig,
    StoredMembership,
};

use crate::AppState;
use crate::db::Db;
use crate::error::{OpenError, OrStorageError, StoResult, WriteError};
use crate::snapshot::{self, SnapshotBuilder};
use crate::view::{Applied, StateView};

const DATA_KEY: &str = "snapshot/data";

/// The raft state machine store. Clones share one state.
pub struct StateMachineStore<C: RaftTypeConfig, S> {
    db: Arc<Db>,
    view: StateView<C, S>,
}

impl<C: RaftTypeConfig, S> Clone for StateMachineStore<C, S> {
    fn clone(&self) -> Self {
        Self {
            db: Arc::clone(&self.db),
            view: self.view.clone(),
        }
    }
}

impl<C, S> StateMachineStore<C, S>
where
    C: RaftTypeConfig,
    S: AppState<C>,
{
    pub(crate) fn new(db: Arc<Db>) -> Result<Self, OpenError> {
        let applied = match snapshot::load::<C>(&db)? {
            Some((meta, data)) => snapshot::decode_state(DATA_KEY, &meta, &data)?,
            None => Applied::default(),
        };
        // A crash between writing a snapshot file and naming it leaves the file behind.
        db.snapshot_files.keep_only(snapshot::current_file(&db)?);
        Ok(Self {
            db,
            view: StateView::new(applied),
        })
    }

    /// A read handle that stays valid, and current, while raft runs.
    pub fn view(&self) -> StateView<C, S> {
        self.view.clone()
    }
}

impl<C, S> RaftStateMachine<C> for StateMachineStore<C, S>
where
    C: RaftTypeConfig<Entry = Entry<C>, SnapshotData = Cursor<Vec<u8>>>,
    C::R: Default,
    S: AppState<C>,
{
    type SnapshotBuilder = SnapshotBuilder<C, S>;

    async fn applied_state(
        &mut self,
    ) -> StoResult<
        (
            Option<LogId<C::NodeId>>,
            StoredMembership<C::NodeId, C::Node>,
        ),
        C,
    > {
        let applied = self.view.lock_read();
        Ok((applied.last_applied.clone(), applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StoResult<Vec<C::R>, C>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.view.lock_write();
        let mut replies = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id.clone());
            let reply = match entry.payload {
                EntryPayload::Normal(data) => applied.state.apply(&entry.log_id, &data),
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    C::R::default()
                }
                EntryPayload::Blank => C::R::default(),
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder::new(Arc::clone(&self.db), self.view.clone())
    }

    async fn begin_receiving_snapshot(&mut self) -> StoResult<Box<Cursor<Vec<u8>>>, C> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<C::NodeId, C::Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoResult<(), C> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let db = Arc::clone(&self.db);
        let meta = meta.clone();
        // Decoding a whole state and fsyncing it both take a while: off the runtime.
        let applied = tokio::task::spawn_blocking(move || -> Result<Applied<C, S>, WriteError> {
            let data = snapshot.into_inner();
            let key = format!("received snapshot {}", meta.snapshot_id);
            let applied = snapshot::decode_state(&key, &meta, &data)?;
            snapshot::save::<C>(&db, &meta, &data)?;
            Ok(applied)
        })
        .await
        .or_sto(subject.clone(), ErrorVerb::Write)?
        .or_sto(subject, ErrorVerb::Write)?;
        *self.view.lock_write() = applied;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoResult<Option<Snapshot<C>>, C> {
        let current =
            snapshot::load::<C>(&self.db).or_sto(ErrorSubject::Snapshot(None), ErrorVerb::Read)?;
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
