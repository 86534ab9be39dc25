//! The raft log, the vote and the committed and purged log ids.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftTypeConfig, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{decode, encode, log_index, log_key};
use crate::db::Db;
use crate::error::{OpenError, OrStorageError, ReadError, StoResult, WriteError};
use crate::log_size::LogSize;
use crate::log_tail::Tail;

pub(crate) const VOTE: &str = "vote";
pub(crate) const COMMITTED: &str = "committed";
pub(crate) const LAST_PURGED: &str = "last_purged";

/// The raft log store. Clones share one database and one [`Tail`].
pub struct LogStore<C: RaftTypeConfig> {
    db: Arc<Db>,
    tail: Arc<Mutex<Tail<C>>>,
    _config: PhantomData<fn() -> C>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: Arc::clone(&self.db),
            tail: Arc::clone(&self.tail),
            _config: PhantomData,
        }
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    Entry<C>: Clone,
{
    pub(crate) fn new(db: Arc<Db>) -> Result<Self, OpenError> {
        let store = Self {
            db,
            tail: Arc::new(Mutex::new(Tail::new())),
            _config: PhantomData,
        };
        // Decoding now what raft reads first turns damage into an open error that names the
        // key, instead of a storage error once raft is running.
        store.meta::<Vote<C::NodeId>>(VOTE)?;
        store.meta::<LogId<C::NodeId>>(COMMITTED)?;
        if let Some(purged) = store.meta::<LogId<C::NodeId>>(LAST_PURGED)? {
            // A purge records its log id before it deletes: finish one a crash interrupted.
            store.remove(..=purged.index)?;
        }
        store.last_entry()?;
        for item in store.db.log.iter() {
            let (key, value) = item?;
            store.db.size.insert(log_index(&key)?, value.len() as u64);
        }
        Ok(store)
    }

    pub(crate) fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ReadError> {
        match self.db.meta.get(key)? {
            Some(bytes) => Ok(Some(decode(format!("meta/{key}"), &bytes)?)),
            None => Ok(None),
        }
    }

    fn set_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), WriteError> {
        self.db.meta.insert(key, encode(value)?)?;
        Ok(())
    }

    pub(crate) fn last_entry(&self) -> Result<Option<Entry<C>>, ReadError> {
        match self.db.log.last()? {
            Some((key, value)) => Ok(Some(decode_entry(&key, &value)?)),
            None => Ok(None),
        }
    }

    /// The log's stored size, shared with whoever bounds it.
    pub fn size(&self) -> Arc<LogSize> {
        Arc::clone(&self.db.size)
    }

    // A panic while the tail was held leaves it as consistent as any step of it does.
    fn tail(&self) -> MutexGuard<'_, Tail<C>> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry<C>>, ReadError> {
        if let Some((start, Some(end))) = index_range(&range)
            && let Some(entries) = self.tail().get(start, end)
        {
            return Ok(entries);
        }
        self.iter(range)
            .map(|item| {
                let (key, value) = item?;
                decode_entry(&key, &value)
            })
            .collect()
    }

    /// Atomically, so that a crash leaves the log whole or not cut at all.
    fn remove(&self, range: impl RangeBounds<u64>) -> Result<(), sled::Error> {
        let mut batch = sled::Batch::default();
        for key in self.iter(range).keys() {
            batch.remove(key?);
        }
        self.db.apply_log_batch(batch)
    }

    fn iter(&self, range: impl RangeBounds<u64>) -> sled::Iter {
        match index_range(&range) {
            Some((start, Some(end))) => self.db.log.range(log_key(start)..log_key(end)),
            Some((start, None)) => self.db.log.range(log_key(start)..),
            // sled has no empty iterator; an empty key range gives one.
            None => self.db.log.range::<&[u8], _>(&[][..]..&[][..]),
        }
    }
}

fn decode_entry<C>(key: &[u8], value: &[u8]) -> Result<Entry<C>, ReadError>
where
    C: RaftTypeConfig,
{
    let index = log_index(key)?;
    // Entries written before they were compact are JSON, which the compact decoder reads.
    Ok(crate::snapshot_codec::decode(
        &format!("log/{index}"),
        value,
    )?)
}

/// `range` as `start..end` with `end == None` for unbounded, or `None` when it is empty.
fn index_range(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => i.checked_add(1),
        Bound::Excluded(&i) => Some(i),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if end <= start => None,
        _ => Some((start, end)),
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    Entry<C>: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoResult<Vec<Entry<C>>, C> {
        self.entries(range)
            .or_sto(ErrorSubject::Logs, ErrorVerb::Read)
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    Entry<C>: Clone,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StoResult<LogState<C>, C> {
        let last_purged_log_id = self
            .meta::<LogId<C::NodeId>>(LAST_PURGED)
            .or_sto(ErrorSubject::Logs, ErrorVerb::Read)?;
        let last_entry = self
            .last_entry()
            .or_sto(ErrorSubject::Logs, ErrorVerb::Read)?;
        let last_log_id = last_entry
            .map(|e| e.log_id)
            .or_else(|| last_purged_log_id.clone());
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> StoResult<(), C> {
        self.set_meta(VOTE, vote)
            .or_sto(ErrorSubject::Vote, ErrorVerb::Write)?;
        self.db
            .persist()
            .await
            .or_sto(ErrorSubject::Vote, ErrorVerb::Write)
    }

    async fn read_vote(&mut self) -> StoResult<Option<Vote<C::NodeId>>, C> {
        self.meta(VOTE).or_sto(ErrorSubject::Vote, ErrorVerb::Read)
    }

    /// Not fsynced: this is only how far a restarted node re-applies its own log before it
    /// hears from the leader, and losing the latest value costs nothing but re-learning it.
    async fn save_committed(&mut self, committed: Option<LogId<C::NodeId>>) -> StoResult<(), C> {
        match committed {
            Some(log_id) => self.set_meta(COMMITTED, &log_id),
            None => self.db.meta.remove(COMMITTED).map(drop).map_err(Into::into),
        }
        .or_sto(ErrorSubject::Store, ErrorVerb::Write)
    }

    async fn read_committed(&mut self) -> StoResult<Option<LogId<C::NodeId>>, C> {
        self.meta(COMMITTED)
            .or_sto(ErrorSubject::Store, ErrorVerb::Read)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> StoResult<(), C>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut appended = Vec::new();
        for entry in entries {
            // Compact: sled holds recent entries in memory as they were inserted, and under a
            // point load JSON entries were most of a node's heap.
            let value = crate::snapshot_codec::encode(&entry)
                .or_sto(ErrorSubject::Log(entry.log_id.clone()), ErrorVerb::Write)?;
            let stored = value.len();
            batch.insert(&log_key(entry.log_id.index)[..], value);
            appended.push((entry, stored));
        }
        let written = self.db.apply_log_batch(batch);
        {
            let mut tail = self.tail();
            if written.is_ok() {
                for (entry, stored) in appended {
                    self.db.size.insert(entry.log_id.index, stored as u64);
                    tail.push(entry, stored);
                }
            } else {
                // Whatever sled holds now, the tail must not claim more.
                tail.clear();
            }
        }
        written.or_sto(ErrorSubject::Logs, ErrorVerb::Write)?;
        // Raft counts the entries as stored, and may vote or acknowledge on them, only
        // when the callback fires: so only once they are fsynced.
        callback.log_io_completed(self.db.persist().await);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> StoResult<(), C> {
        self.tail().truncate(log_id.index);
        self.db.size.truncate(log_id.index);
        self.remove(log_id.index..)
            .or_sto(ErrorSubject::Logs, ErrorVerb::Delete)?;
        self.db
            .persist()
            .await
            .or_sto(ErrorSubject::Logs, ErrorVerb::Delete)
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> StoResult<(), C> {
        // Recorded before deleting, so that no crash leaves a log whose first entries are
        // gone without saying so; `new` deletes what a crash left behind.
        self.set_meta(LAST_PURGED, &log_id)
            .or_sto(ErrorSubject::Logs, ErrorVerb::Delete)?;
        self.tail().purge(log_id.index);
        self.db.size.purge(log_id.index);
        self.remove(..=log_id.index)
            .or_sto(ErrorSubject::Logs, ErrorVerb::Delete)?;
        self.db
            .persist()
            .await
            .or_sto(ErrorSubject::Logs, ErrorVerb::Delete)
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use super::index_range;

    #[test]
    fn index_ranges_are_normalised() {
        assert_eq!(index_range(&(3..3)), None);
        assert_eq!(index_range(&(Bound::Included(5), Bound::Excluded(3))), None);
        assert_eq!(index_range(&(3..=3)), Some((3, Some(4))));
        assert_eq!(index_range(&(..)), Some((0, None)));
        assert_eq!(index_range(&(..=u64::MAX)), Some((0, None)));
        assert_eq!(
            index_range(&(Bound::Excluded(u64::MAX), Bound::Unbounded)),
            None
        );
    }
}
