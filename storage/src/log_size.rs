//! How many bytes the log's entries take as stored, by index, and how large the current
//! snapshot is.
//!
//! sled keeps the entries it was given in memory, so the log's stored bytes are about what
//! it costs a node's memory. openraft counts entries only (a snapshot every so many, so many
//! kept behind it): under a point load, entries of a thousand changes each made a
//! 10 000-point node grow by a hundred MiB between snapshots. Whoever drives openraft asks
//! this for bytes instead (`fepha`'s `raft::log_bound`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

#[derive(Default)]
pub struct LogSize {
    /// Stored bytes per log index.
    entries: Mutex<BTreeMap<u64, u64>>,
    snapshot_bytes: AtomicU64,
}

impl LogSize {
    // A panic while it was held leaves the map as consistent as any step of it does.
    fn entries(&self) -> MutexGuard<'_, BTreeMap<u64, u64>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, index: u64, bytes: u64) {
        self.entries().insert(index, bytes);
    }

    /// The log lost every entry from `index` on.
    pub(crate) fn truncate(&self, index: u64) {
        self.entries().split_off(&index);
    }

    /// The log lost every entry up to `index`.
    pub(crate) fn purge(&self, index: u64) {
        let mut entries = self.entries();
        let kept = index
            .checked_add(1)
            .map_or_else(BTreeMap::new, |after| entries.split_off(&after));
        *entries = kept;
    }

    pub(crate) fn set_snapshot_bytes(&self, bytes: u64) {
        self.snapshot_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The size of the current snapshot's data; 0 before the first.
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }

    /// Stored bytes of the entries after `index` (all of them for `None`).
    pub fn bytes_after(&self, index: Option<u64>) -> u64 {
        let entries = self.entries();
        match index.and_then(|i| i.checked_add(1)) {
            Some(from) => entries.range(from..).map(|(_, b)| b).sum(),
            None if index.is_some() => 0,
            None => entries.values().sum(),
        }
    }

    /// Stored bytes of every entry in the log.
    pub fn bytes(&self) -> u64 {
        self.bytes_after(None)
    }

    /// The highest index up to which the log may be purged so that the entries kept up to
    /// `through` (the snapshot's last index) still take at least `keep_bytes`; `None` if
    /// they take less already.
    pub fn purge_point(&self, through: u64, keep_bytes: u64) -> Option<u64> {
        let entries = self.entries();
        let mut kept = 0;
        for (&index, &bytes) in entries.range(..=through).rev() {
            if kept >= keep_bytes {
                return Some(index);
            }
            kept += bytes;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::LogSize;

    fn log(sizes: &[(u64, u64)]) -> LogSize {
        let l = LogSize::default();
        for &(i, b) in sizes {
            l.insert(i, b);
        }
        l
    }

    #[test]
    fn counts_what_the_log_holds() {
        let l = log(&[(1, 10), (2, 20), (3, 30), (4, 40)]);
        assert_eq!(l.bytes(), 100);
        assert_eq!(l.bytes_after(Some(2)), 70);
        assert_eq!(l.bytes_after(Some(u64::MAX)), 0);
        l.truncate(4);
        assert_eq!(l.bytes(), 60);
        l.purge(1);
        assert_eq!(l.bytes(), 50);
        l.purge(u64::MAX);
        assert_eq!(l.bytes(), 0);
    }

    #[test]
    fn purges_to_leave_the_newest_entries_behind_the_snapshot() {
        let l = log(&[(1, 10), (2, 10), (3, 10), (4, 10), (5, 10)]);
        // Snapshot through 4: keep 20 bytes of it, entries 3 and 4.
        assert_eq!(l.purge_point(4, 20), Some(2));
        assert_eq!(l.purge_point(4, 15), Some(2));
        assert_eq!(l.purge_point(4, 10), Some(3));
        assert_eq!(l.purge_point(4, 40), None, "entries 1-4 are all it has");
        assert_eq!(l.purge_point(4, 0), Some(4));
    }
}
