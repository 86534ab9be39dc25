//! Owners' point changes on their way to the log: gathered for a few milliseconds (or until
//! there are enough of them) into one entry, one write in flight at a time so that the
//! changes of one RTU are applied in the order they were read.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::shutdown::Shutdown;
use crate::state::points::Batch;
use crate::state::{Request, Response};

/// Batches waiting for the writer; when full, owners wait (and so poll more slowly) rather
/// than lose changes.
const QUEUE: usize = 1024;

#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Batch>,
}

impl Batcher {
    /// Queues one poll round's changes of one RTU. Returns false once the node is stopping.
    pub(crate) async fn send(&self, batch: Batch) -> bool {
        self.tx.send(batch).await.is_ok()
    }
}

/// Starts the writer. It ends once every [`Batcher`] is gone and what they sent is written,
/// or once `give_up` is triggered.
pub(crate) fn start(cluster: Cluster, give_up: Shutdown) -> (Batcher, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Batcher { tx }, tokio::spawn(run(cluster, rx, give_up)))
}

async fn run(cluster: Cluster, mut rx: mpsc::Receiver<Batch>, give_up: Shutdown) {
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
        let mut changes = first.changes.len();
        let mut batches = vec![first];
        let until = Instant::now() + window;
        while changes < max_changes {
            let next = tokio::select! {
                b = rx.recv() => b,
                _ = tokio::time::sleep_until(until) => None,
            };
            let Some(b) = next else { break };
            changes += b.changes.len();
            merge(&mut batches, b);
        }
        write(&cluster, batches, changes, &give_up).await;
    }
}

/// Consecutive rounds of one RTU under one epoch share one batch.
fn merge(batches: &mut Vec<Batch>, b: Batch) {
    match batches
        .iter_mut()
        .find(|x| x.rtu == b.rtu && x.epoch == b.epoch && x.node == b.node)
    {
        Some(x) => x.changes.extend(b.changes),
        None => batches.push(b),
    }
}

/// Writes the entry, retrying while the cluster has no leader: the changes (events among
/// them) are kept until they are in the log or the state machine refuses them.
async fn write(cluster: &Cluster, batches: Vec<Batch>, changes: usize, give_up: &Shutdown) {
    let request = Request::Points(batches);
    let mut pause = Duration::from_millis(20);
    loop {
        match cluster.propose(request.clone()).await.map(|w| w.response) {
            Ok(Response::Points(results)) => {
                metrics::counter!("fepha_point_batches_total").increment(1);
                metrics::counter!("fepha_point_changes_total").increment(changes as u64);
                let Request::Points(batches) = &request else {
                    return;
                };
                for (b, r) in batches.iter().zip(results) {
                    if let Err(refusal) = r {
                        metrics::counter!("fepha_point_batches_refused_total").increment(1);
                        tracing::warn!(rtu = %b.rtu, "point changes refused: {refusal}");
                    }
                }
                return;
            }
            Ok(other) => {
                tracing::error!("unexpected reply to a point batch: {other:?}");
                return;
            }
            Err(e) => {
                metrics::counter!("fepha_point_write_retries_total").increment(1);
                tracing::debug!("point batch not written yet: {e}");
            }
        }
        if give_up.is_triggered() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
