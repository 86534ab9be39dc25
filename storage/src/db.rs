//! The one sled database of a node, shared by the log store and the state machine store.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::durable::SledFiles;
use crate::error::OpenError;
use crate::log_size::LogSize;
use crate::snapshot_files::SnapshotFiles;

pub(crate) struct Db {
    sled: sled::Db,
    /// Log entries by big-endian index.
    pub(crate) log: sled::Tree,
    /// The vote, the committed log id and the last purged log id.
    pub(crate) meta: sled::Tree,
    /// The current snapshot's meta and the number of its data file.
    pub(crate) snapshot: sled::Tree,
    pub(crate) snapshot_files: SnapshotFiles,
    /// Held by whoever stores or reads the current snapshot, so that a save never removes
    /// the file another save has just made current, nor one a reader is opening.
    snapshot_lock: Mutex<()>,
    files: SledFiles,
    /// Filled by the log store as it opens and writes, and by snapshot saves.
    pub(crate) size: Arc<LogSize>,
}

/// sled's page cache (see [`Db::open`]).
const CACHE_BYTES: u64 = 8 << 20;

impl Db {
    pub(crate) fn open(dir: &Path) -> Result<Self, OpenError> {
        // sled keeps up to `cache_capacity` of pages in memory, 1 GiB by default: under a
        // point load it filled with log entries and snapshots that are written once and
        // seldom read again, and was most of a node's resident memory. Replication reads the
        // newest entries, which are still cached at this size.
        let sled = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()?;
        Ok(Self {
            log: sled.open_tree("log")?,
            meta: sled.open_tree("meta")?,
            snapshot: sled.open_tree("snapshot")?,
            snapshot_files: SnapshotFiles::open(dir).map_err(OpenError::SnapshotFile)?,
            snapshot_lock: Mutex::new(()),
            files: SledFiles::open(dir)?,
            size: Arc::default(),
            sled,
        })
    }

    // Poisoning only means a save panicked; the tree and the files are still consistent.
    pub(crate) fn lock_snapshot(&self) -> MutexGuard<'_, ()> {
        self.snapshot_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A number never handed out before in this database, across restarts.
    pub(crate) fn unique_id(&self) -> sled::Result<u64> {
        self.sled.generate_id()
    }

    /// Makes every write made so far survive a crash or a power cut. Runs on the blocking
    /// pool: a flush plus fsyncs take milliseconds, far too long to hold an async worker.
    pub(crate) async fn persist(self: &Arc<Self>) -> io::Result<()> {
        let db = Arc::clone(self);
        tokio::task::spawn_blocking(move || db.persist_blocking())
            .await
            .map_err(io::Error::other)?
    }

    /// Writes `batch` to the log tree, then hands sled's garbage from it to the collector.
    pub(crate) fn apply_log_batch(&self, batch: sled::Batch) -> sled::Result<()> {
        let applied = self.log.apply_batch(batch);
        release_garbage();
        applied
    }

    pub(crate) fn persist_blocking(&self) -> io::Result<()> {
        let flushed = self.sled.flush();
        release_garbage();
        flushed?;
        self.files.sync()
    }
}

/// Hands what sled has replaced on this thread (a full 512 KiB IO buffer, a rewritten tree
/// page) to crossbeam-epoch's collector at once. sled frees these through crossbeam-epoch,
/// whose per-thread bag holds 64 deferred frees before it even offers them for collection:
/// on the threads that write the log, that kept tens of MiB of dead buffers under a point
/// load. Cheap: one pin, and a collection only of what no thread can still see.
fn release_garbage() {
    crossbeam_epoch::pin().flush();
}
