//! The gauges that mirror openraft's state (term, indexes, leadership, voters).

use openraft::ServerState;

use super::Raft;
use crate::shutdown::Shutdown;

/// Mirrors openraft's metrics into gauges each time they change.
pub async fn watch_raft(raft: Raft, shutdown: Shutdown) {
    let mut rx = raft.metrics();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        {
            let m = rx.borrow_and_update();
            metrics::counter!("fepha_raft_metrics_updates_total").increment(1);
            metrics::gauge!("fepha_raft_term").set(m.current_term as f64);
            metrics::gauge!("fepha_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
            metrics::gauge!("fepha_raft_applied_index")
                .set(m.last_applied.map_or(0, |l| l.index) as f64);
            metrics::gauge!("fepha_raft_snapshot_index")
                .set(m.snapshot.map_or(0, |l| l.index) as f64);
            metrics::gauge!("fepha_raft_is_leader").set(if m.state == ServerState::Leader {
                1.0
            } else {
                0.0
            });
            metrics::gauge!("fepha_raft_has_leader").set(if m.current_leader.is_some() {
                1.0
            } else {
                0.0
            });
            let voters = m.membership_config.membership().voter_ids().count();
            metrics::gauge!("fepha_raft_voters").set(voters as f64);
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = &mut stop => return,
        }
    }
}
