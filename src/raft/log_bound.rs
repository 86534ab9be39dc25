//! Keeps the log small in bytes, not only in entries: a node's memory holds its log (sled
//! keeps the entries it was given), and openraft's own policy counts entries, which under a
//! point load are tens of KiB each.
//!
//! Once the entries since the last snapshot take more than [`SNAPSHOT_AFTER_BYTES`] (or four
//! times the snapshot itself, so that a large site's state is not rebuilt every few seconds),
//! a snapshot is built; once one exists, the entries it covers are purged down to the newest
//! [`KEEP_BEHIND_BYTES`], enough for a follower a moment behind. openraft's entry counts
//! (`[raft] snapshot_after_entries`, `keep_entries_after_snapshot`) still apply as well, and
//! openraft purges nothing a replication is still sending; a follower further behind is sent
//! the snapshot.

use std::sync::Arc;
use std::time::Duration;

use fepha_storage::LogSize;

use super::Raft;
use crate::shutdown::Shutdown;

/// A snapshot once the entries since the last one take this much as stored.
const SNAPSHOT_AFTER_BYTES: u64 = 4 << 20;
/// Entries the snapshot covers that are kept for followers a moment behind.
const KEEP_BEHIND_BYTES: u64 = 1 << 20;
const EVERY: Duration = Duration::from_millis(500);
/// A snapshot asked for and not built (one was being built, say) is asked for again after
/// this long.
const ASK_AGAIN: Duration = Duration::from_secs(10);

pub async fn bound_the_log(raft: Raft, size: Arc<LogSize>, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // After which snapshot a build was asked for last, and when: one build is asked for once.
    let mut asked: Option<(Option<u64>, tokio::time::Instant)> = None;
    let mut purged_to = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let (snapshot, purged) = {
            let m = raft.metrics();
            let m = m.borrow();
            (m.snapshot.map(|l| l.index), m.purged.map(|l| l.index))
        };
        let stored = size.bytes();
        metrics::gauge!("fepha_raft_log_stored_bytes").set(stored as f64);
        let since = size.bytes_after(snapshot);
        let threshold = SNAPSHOT_AFTER_BYTES.max(4 * size.snapshot_bytes());
        let asked_already =
            asked.is_some_and(|(after, at)| after == snapshot && at.elapsed() < ASK_AGAIN);
        if since > threshold && !asked_already {
            asked = Some((snapshot, tokio::time::Instant::now()));
            tracing::debug!(since, threshold, "the log is large; building a snapshot");
            metrics::counter!("fepha_raft_snapshots_for_log_bytes_total").increment(1);
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
        let Some(through) = snapshot else { continue };
        if let Some(upto) = size.purge_point(through, KEEP_BEHIND_BYTES)
            && purged.is_none_or(|p| p < upto)
            && purged_to != Some(upto)
        {
            purged_to = Some(upto);
            if raft.trigger().purge_log(upto).await.is_err() {
                return;
            }
        }
    }
}
