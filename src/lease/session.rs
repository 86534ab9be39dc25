//! Every node's session loop: it renews its session through the leader every third of the
//! TTL and keeps its own lease clock, which the acquisition obeys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::clock::OwnLease;
use crate::cluster::{Cluster, ClusterError, Renewal, Reports};
use crate::shutdown::Shutdown;

/// The pause before another attempt after a failed renewal.
const RETRY: Duration = Duration::from_millis(50);

/// What the session loop uses.
pub(crate) struct Session {
    pub cluster: Cluster,
    /// What this node's RTU tasks report; a change of reach renews at once.
    pub reports: Arc<Reports>,
    pub own: Arc<OwnLease>,
}

pub(crate) async fn run(s: Session, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let cluster = &s.cluster;
    // A new number per process: a restarted node never continues its old session.
    let number = Cluster::now_ms();
    let mut renewed_last = true;
    loop {
        let timers = cluster.timers();
        let ttl = *timers.session_ttl_ms.get_ref();
        let drift = *timers.drift_margin_ms.get_ref();
        let period = Duration::from_millis((ttl / 3).max(10));
        // After a failed renewal (no leader, say) the next goes at once once there may be
        // one again: waiting a whole period would let the lease lapse during an ordinary
        // leader failover, and the node's RTUs would go unpolled for a moment.
        let pause = if renewed_last {
            period
        } else {
            RETRY.min(period)
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            // A changed reach goes to the leader at once: it may decide a hand-over.
            _ = s.reports.changed.notified() => {}
            _ = &mut stop => return,
        }
        if !cluster.members().is_voter(cluster.id()) || cluster.is_retired() {
            continue;
        }
        let sent_at = Instant::now();
        // RTU tasks check the applied state before every request, so once this index is
        // applied no request starts under a lease it released (one already on the wire may
        // still finish). The leader grants a released RTU only after such a renewal.
        let (reach, links) = s.reports.renewal();
        let renewal = Renewal {
            node: cluster.id(),
            session: number,
            reach,
            links,
            applied_index: cluster.applied_index(),
        };
        let renewed = tokio::time::timeout(period, async {
            let index = cluster.renew(renewal).await?;
            // The renewal counts only once this node has applied it, and so every hand-over
            // decided before it: a node that was stopped must not poll under a lease the
            // cluster has already given to another node.
            Ok::<bool, ClusterError>(cluster.wait_applied(index, sent_at + period).await)
        })
        .await;
        renewed_last = matches!(renewed, Ok(Ok(true)));
        let outcome = match &renewed {
            Ok(Ok(true)) => "ok",
            Ok(Ok(false)) => "lagging",
            // A leader whose process is gone is seen by `raft::leader_watch`.
            Ok(Err(e)) => {
                tracing::debug!("session renewal failed: {e}");
                "failed"
            }
            Err(_) => "timeout",
        };
        let valid = s.own.update(|clock| {
            *clock = clock.with_timers(Duration::from_millis(ttl), Duration::from_millis(drift));
            if renewed_last {
                clock.acknowledged(sent_at);
            }
            clock.valid_at(Instant::now())
        });
        metrics::counter!("fepha_lease_renewals_total", "outcome" => outcome).increment(1);
        metrics::gauge!("fepha_lease_valid").set(if valid { 1.0 } else { 0.0 });
    }
}
