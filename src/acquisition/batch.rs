//! Owners' point changes on their way to the log: gathered for a few milliseconds (or until
//! there are enough of them) into one entry, one write in flight at a time so that the
//! changes of one RTU are applied in the order they were read.
//!
//! A write forwarded to a leader that then goes away (cut off, or its answers lost) is not
//! waited for: once another node leads, the entry is proposed again, and everything read
//! meanwhile with it, while the lease still holds. The entry carries a [`WriteId`], so that
//! should the first proposal survive into the new term as well, it applies only once.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::ids::NodeId;
use crate::shutdown::Shutdown;
use crate::state::points::{Batch, WriteId};
use crate::state::{Request, Response};

/// Batches waiting for the writer; when full, owners wait (and so poll more slowly) rather
/// than lose changes.
const QUEUE: usize = 1024;

/// A batch, and who waits to hear that it is committed.
struct Queued {
    batch: Batch,
    committed: Option<oneshot::Sender<bool>>,
}

#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Queued>,
}

impl Batcher {
    /// Queues one poll round's changes of one RTU. Returns false once the node is stopping.
    pub(crate) async fn send(&self, batch: Batch) -> bool {
        let queued = Queued {
            batch,
            committed: None,
        };
        self.tx.send(queued).await.is_ok()
    }

    /// Queues changes and returns what says whether they were committed: true once the
    /// entry is in the log and the state machine took them, false if it refused them (a
    /// stale epoch) or the node gave up writing. A closed receiver means the same as false.
    pub(crate) async fn send_committed(&self, batch: Batch) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let queued = Queued {
            batch,
            committed: Some(tx),
        };
        // Stopping: the sender is dropped with the message, which the receiver reads as no.
        let _ = self.tx.send(queued).await;
        rx
    }
}

/// Starts the writer. It ends once every [`Batcher`] is gone and what they sent is written,
/// or once `give_up` is triggered.
pub(crate) fn start(cluster: Cluster, give_up: Shutdown) -> (Batcher, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Batcher { tx }, tokio::spawn(run(cluster, rx, give_up)))
}

async fn run(cluster: Cluster, mut rx: mpsc::Receiver<Queued>, give_up: Shutdown) {
    let writer = rand::random::<u64>();
    let mut n = 0;
    let stop = give_up.clone().wait();
    tokio::pin!(stop);
    loop {
        // Wait for the first change of the next entry.
        let first = tokio::select! {
            b = rx.recv() => b,
            _ = &mut stop => return,
        };
        let Some(first) = first else { return };
        let timers = cluster.timers();
        let window = Duration::from_millis(*timers.batch_ms.get_ref());
        let max_changes = *timers.batch_max_changes.get_ref() as usize;
        let mut changes = 0;
        let mut batches = Vec::new();
        // Who waits for which batch of the entry.
        let mut waiting: Vec<(usize, oneshot::Sender<bool>)> = Vec::new();
        let mut next = Some(first);
        let until = Instant::now() + window;
        loop {
            if let Some(q) = next.take() {
                changes += q.batch.changes.len();
                let at = merge(&mut batches, q.batch);
                waiting.extend(q.committed.map(|tx| (at, tx)));
            }
            if changes >= max_changes {
                break;
            }
            next = tokio::select! {
                b = rx.recv() => b,
                _ = tokio::time::sleep_until(until) => None,
            };
            if next.is_none() {
                break;
            }
        }
        n += 1;
        for b in &mut batches {
            b.write = Some(WriteId { writer, n });
        }
        let taken = write(&cluster, batches, changes, &give_up).await;
        for (at, tx) in waiting {
            let _ = tx.send(taken.get(at).copied().unwrap_or(false));
        }
    }
}

/// Consecutive rounds of one RTU under one epoch share one batch; returns its position.
fn merge(batches: &mut Vec<Batch>, b: Batch) -> usize {
    match batches
        .iter()
        .position(|x| x.rtu == b.rtu && x.epoch == b.epoch && x.node == b.node)
    {
        Some(at) => {
            if let Some(x) = batches.get_mut(at) {
                x.changes.extend(b.changes);
            }
            at
        }
        None => {
            batches.push(b);
            batches.len() - 1
        }
    }
}

/// Writes the entry, retrying while the cluster has no leader: the changes (events among
/// them) are kept until they are in the log or the state machine refuses them. Returns, per
/// batch, whether the state machine took it (empty if the entry was never written).
async fn write(
    cluster: &Cluster,
    batches: Vec<Batch>,
    changes: usize,
    give_up: &Shutdown,
) -> Vec<bool> {
    let request = Request::Points(batches);
    let mut pause = Duration::from_millis(20);
    loop {
        let leader = cluster.metrics().current_leader;
        let attempt = tokio::select! {
            written = cluster.propose(request.clone()) => written,
            () = leader_changes(cluster, leader) => {
                metrics::counter!("fepha_point_write_retries_total").increment(1);
                tracing::debug!(?leader, "the leader changed while a point batch was on its way; proposing it again");
                continue;
            }
        };
        match attempt.map(|w| w.response) {
            Ok(Response::Points(results)) => {
                metrics::counter!("fepha_point_batches_total").increment(1);
                metrics::counter!("fepha_point_changes_total").increment(changes as u64);
                let Request::Points(batches) = &request else {
                    return Vec::new();
                };
                return batches
                    .iter()
                    .zip(results)
                    .map(|(b, r)| match r {
                        Ok(_) => true,
                        Err(refusal) => {
                            metrics::counter!("fepha_point_batches_refused_total").increment(1);
                            tracing::warn!(rtu = %b.rtu, "point changes refused: {refusal}");
                            false
                        }
                    })
                    .collect();
            }
            Ok(other) => {
                tracing::error!("unexpected reply to a point batch: {other:?}");
                return Vec::new();
            }
            Err(e) => {
                metrics::counter!("fepha_point_write_retries_total").increment(1);
                tracing::debug!("point batch not written yet: {e}");
            }
        }
        if give_up.is_triggered() {
            return Vec::new();
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Returns once the leader is another than `from`: a write that `from` has not answered by
/// then may never be answered (the leader was cut off, or its answer is lost).
async fn leader_changes(cluster: &Cluster, from: Option<NodeId>) {
    let mut m = cluster.raft().metrics();
    loop {
        if m.borrow_and_update().current_leader != from {
            return;
        }
        if m.changed().await.is_err() {
            // The node is going down; the write's own error ends the attempt.
            std::future::pending::<()>().await;
        }
    }
}
