//! Every node's session loop: it renews its session through the leader every third of the
//! TTL and keeps its own lease clock, which the acquisition obeys.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::clock::LeaseClock;
use crate::node::Node;
use crate::proto::admin::RenewRequest;
use crate::shutdown::Shutdown;

/// The node's own view of its lease.
#[derive(Debug)]
pub struct Own {
    pub clock: Mutex<LeaseClock>,
}

impl Default for Own {
    fn default() -> Own {
        Own {
            clock: Mutex::new(LeaseClock::new(
                Duration::from_millis(1000),
                Duration::from_millis(100),
            )),
        }
    }
}

impl Own {
    /// Whether this node may do field I/O now.
    pub fn valid(&self) -> bool {
        let clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        clock.valid_at(Instant::now())
    }
}

/// The pause before another attempt after a failed renewal.
const RETRY: Duration = Duration::from_millis(50);

pub async fn run(node: Arc<Node>, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    // A new number per process: a restarted node never continues its old session.
    let number = crate::admin::now_ms();
    let mut renewed_last = true;
    loop {
        let timers = node.site().map(|s| s.timers.clone());
        let (ttl, drift) = timers.map_or((1000, 100), |t| {
            (*t.session_ttl_ms.get_ref(), *t.drift_margin_ms.get_ref())
        });
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
            _ = node.acquisition.changed.notified() => {}
            _ = &mut stop => return,
        }
        let member = node
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == node.id);
        if !member || node.is_retired() {
            continue;
        }
        let sent_at = Instant::now();
        // RTU tasks check the applied state before every request, so once this index is
        // applied no request starts under a lease it released (one already on the wire may
        // still finish). The leader grants a released RTU only after such a renewal.
        let applied_index = node.state.last_applied().map_or(0, |l| l.index);
        let (reach, links) = node.acquisition.renewal();
        let request = RenewRequest {
            node_id: node.id,
            session: number,
            reach,
            forwarded: false,
            applied_index,
            links,
        };
        let renewed = tokio::time::timeout(period, async {
            let index = crate::admin::renew_own(&node, request).await?;
            // The renewal counts only once this node has applied it, and so every hand-over
            // decided before it: a node that was stopped must not poll under a lease the
            // cluster has already given to another node.
            let applied = node
                .wait_for(sent_at + period, |n| {
                    n.state
                        .last_applied()
                        .is_some_and(|l| l.index >= index)
                        .then_some(())
                })
                .await;
            Ok::<bool, tonic::Status>(applied.is_some())
        })
        .await;
        let mut clock = node
            .own
            .clock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *clock = clock.with_timers(Duration::from_millis(ttl), Duration::from_millis(drift));
        renewed_last = matches!(renewed, Ok(Ok(true)));
        let outcome = match renewed {
            Ok(Ok(true)) => {
                clock.acknowledged(sent_at);
                "ok"
            }
            Ok(Ok(false)) => "lagging",
            Ok(Err(e)) => {
                tracing::debug!("session renewal failed: {}", e.message());
                "failed"
            }
            Err(_) => "timeout",
        };
        metrics::counter!("fepha_lease_renewals_total", "outcome" => outcome).increment(1);
        let valid = clock.valid_at(Instant::now());
        metrics::gauge!("fepha_lease_valid").set(if valid { 1.0 } else { 0.0 });
    }
}
