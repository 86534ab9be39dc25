//! The acknowledged positions of this node's started connections, and the task that records
//! them in the log in batches, so that the next node to serve a group resends from there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::cluster::Cluster;
use crate::shutdown::Shutdown;
use crate::state::Request;
use crate::state::forwarding::ForwardingOp;

/// How often positions go to the log: each failover resends at most this much (and what
/// was in flight).
pub(crate) const RECORD_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub(crate) struct AckBook {
    /// Per group key, the newest position known here and whether the log lacks it.
    positions: Mutex<HashMap<String, (u64, bool)>>,
}

impl AckBook {
    pub(crate) fn record(&self, key: &str, seq: u64) {
        let mut p = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let at = p.entry(key.to_string()).or_insert((0, false));
        if seq > at.0 {
            *at = (seq, true);
        }
    }

    /// Where a group goes on from: the newer of the log's position and this node's; None if
    /// neither knows the group (no master of it was ever started).
    pub(crate) fn resume_from(&self, cluster: &Cluster, key: &str) -> Option<u64> {
        let logged = cluster.read(|s| s.forwarding.acked.get(key).copied());
        let local = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(|p| p.0);
        logged.max(local)
    }

    fn take_unrecorded(&self) -> Vec<(String, u64)> {
        let mut p = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        p.iter_mut()
            .filter(|(_, (_, dirty))| *dirty)
            .map(|(k, (seq, dirty))| {
                *dirty = false;
                (k.clone(), *seq)
            })
            .collect()
    }

    fn unrecorded(&self, acks: &[(String, u64)]) {
        let mut p = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (key, seq) in acks {
            if let Some(at) = p.get_mut(key)
                && at.0 == *seq
            {
                at.1 = true;
            }
        }
    }
}

/// Writes the positions that moved, every [`RECORD_EVERY`], until shutdown.
pub(crate) async fn record(cluster: Cluster, book: Arc<AckBook>, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(RECORD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let acks = book.take_unrecorded();
        if acks.is_empty() {
            continue;
        }
        let op = ForwardingOp::Acked {
            node: cluster.id(),
            acks: acks.clone(),
        };
        match cluster.propose(Request::Forwarding(op)).await {
            Ok(_) => {
                metrics::counter!("fepha_iec104_ack_records_total").increment(1);
            }
            Err(e) => {
                tracing::debug!("acknowledged positions not recorded yet: {e}");
                book.unrecorded(&acks);
            }
        }
    }
}
