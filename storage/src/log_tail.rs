//! The newest log entries, decoded, beside their copies in sled.
//!
//! Raft reads every entry soon after it is appended: the leader once per follower to send it
//! and once to apply it, a follower once to apply it. Decoding an entry from sled each time
//! was a quarter of a node's CPU under a point load; a clone of the decoded entry costs a
//! fraction of that. The tail holds consecutive entries ending at the newest appended, and
//! is cut with the log on truncation and purge, so whatever it answers is what sled holds.

use std::collections::VecDeque;

use openraft::{Entry, RaftTypeConfig};

/// At most this many entries: a follower that keeps up is an entry or two behind, and every
/// decoded entry kept is memory (a tenth of a second of a busy log is plenty).
const MAX_ENTRIES: usize = 16;
/// At most this many bytes of entries as stored (compact encoding): the decoded entries take
/// several times as much memory. A larger entry (a site configuration) is not kept.
const MAX_STORED_BYTES: usize = 1 << 20;

pub(crate) struct Tail<C: RaftTypeConfig> {
    /// Consecutive entries, oldest first, each with its stored size.
    entries: VecDeque<(Entry<C>, usize)>,
    stored_bytes: usize,
}

impl<C> Tail<C>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
    Entry<C>: Clone,
{
    pub(crate) fn new() -> Self {
        Tail {
            entries: VecDeque::new(),
            stored_bytes: 0,
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    /// `entry` was appended to the log, `stored` bytes in sled.
    pub(crate) fn push(&mut self, entry: Entry<C>, stored: usize) {
        // An entry too large to keep breaks the run of consecutive entries.
        if stored > MAX_STORED_BYTES {
            self.clear();
            return;
        }
        // Raft appends consecutively; anything else (a gap) starts the tail afresh.
        let index = entry.log_id.index;
        if self
            .last_index()
            .is_some_and(|last| last.checked_add(1) != Some(index))
        {
            self.clear();
        }
        self.entries.push_back((entry, stored));
        self.stored_bytes += stored;
        while self.entries.len() > MAX_ENTRIES || self.stored_bytes > MAX_STORED_BYTES {
            self.pop_front();
        }
    }

    /// The log lost every entry from `index` on.
    pub(crate) fn truncate(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            if let Some((_, stored)) = self.entries.pop_back() {
                self.stored_bytes -= stored;
            }
        }
    }

    /// The log lost every entry up to `index`.
    pub(crate) fn purge(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.stored_bytes = 0;
    }

    fn pop_front(&mut self) {
        if let Some((_, stored)) = self.entries.pop_front() {
            self.stored_bytes -= stored;
        }
    }

    /// Entries `start..end`, if the tail holds every one of them.
    pub(crate) fn get(&self, start: u64, end: u64) -> Option<Vec<Entry<C>>> {
        let first = self.first_index()?;
        let last = self.last_index()?;
        if start < first || end > last.checked_add(1)? || start >= end {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let to = usize::try_from(end - first).ok()?;
        Some(
            self.entries
                .range(from..to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use super::{MAX_ENTRIES, MAX_STORED_BYTES, Tail};

    openraft::declare_raft_types!(
        Test: D = u64,
        R = u64,
        SnapshotData = std::io::Cursor<Vec<u8>>,
    );

    fn entry(index: u64) -> Entry<Test> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(index),
        }
    }

    fn indexes(entries: Option<Vec<Entry<Test>>>) -> Option<Vec<u64>> {
        entries.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn answers_only_ranges_it_holds_whole() {
        let mut t = Tail::<Test>::new();
        for i in 5..=9 {
            t.push(entry(i), 10);
        }
        assert_eq!(indexes(t.get(6, 9)), Some(vec![6, 7, 8]));
        assert_eq!(indexes(t.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(t.get(4, 6)), None, "entry 4 is only in sled");
        assert_eq!(indexes(t.get(9, 11)), None, "entry 10 does not exist");
        assert_eq!(indexes(t.get(7, 7)), None);
    }

    #[test]
    fn follows_truncation_purge_and_gaps() {
        let mut t = Tail::<Test>::new();
        for i in 1..=6 {
            t.push(entry(i), 10);
        }
        t.truncate(5);
        assert_eq!(indexes(t.get(1, 5)), Some(vec![1, 2, 3, 4]));
        assert_eq!(indexes(t.get(4, 6)), None);
        t.push(entry(5), 10);
        t.purge(2);
        assert_eq!(indexes(t.get(3, 6)), Some(vec![3, 4, 5]));
        assert_eq!(indexes(t.get(2, 4)), None);
        t.push(entry(9), 10);
        assert_eq!(indexes(t.get(9, 10)), Some(vec![9]), "a gap starts afresh");
        assert_eq!(indexes(t.get(5, 6)), None);
    }

    #[test]
    fn is_bounded_by_entries_and_bytes() {
        let mut t = Tail::<Test>::new();
        for i in 1..=(MAX_ENTRIES as u64 + 10) {
            t.push(entry(i), 10);
        }
        assert_eq!(indexes(t.get(11, 12)), Some(vec![11]));
        assert_eq!(indexes(t.get(10, 11)), None);
        t.push(entry(MAX_ENTRIES as u64 + 11), MAX_STORED_BYTES + 1);
        assert_eq!(
            indexes(t.get(11, 12)),
            None,
            "an oversized entry is not kept"
        );
        let next = MAX_ENTRIES as u64 + 12;
        t.push(entry(next), MAX_STORED_BYTES / 2);
        t.push(entry(next + 1), MAX_STORED_BYTES / 2);
        t.push(entry(next + 2), MAX_STORED_BYTES / 2);
        assert_eq!(indexes(t.get(next, next + 1)), None);
        assert_eq!(
            indexes(t.get(next + 1, next + 3)),
            Some(vec![next + 1, next + 2])
        );
    }
}
