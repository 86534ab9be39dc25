//! The gauges that mirror openraft's state (term, indexes, leadership, voters, replication).

use std::collections::BTreeMap;

use openraft::ServerState;

use super::Raft;
use crate::ids::NodeId;
use crate::shutdown::Shutdown;

/// Mirrors openraft's metrics into gauges each time they change.
pub async fn watch_raft(raft: Raft, shutdown: Shutdown) {
    let mut rx = raft.metrics();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut seen = Seen::default();
    loop {
        {
            let m = rx.borrow_and_update();
            metrics::counter!("fepha_raft_metrics_updates_total").increment(1);
            seen.count(m.current_term, m.current_leader);
            let last = m.last_log_index.unwrap_or(0);
            let applied = m.last_applied.map_or(0, |l| l.index);
            metrics::gauge!("fepha_raft_term").set(m.current_term as f64);
            metrics::gauge!("fepha_raft_last_log_index").set(last as f64);
            metrics::gauge!("fepha_raft_applied_index").set(applied as f64);
            metrics::gauge!("fepha_raft_apply_lag_entries")
                .set(last.saturating_sub(applied) as f64);
            metrics::gauge!("fepha_raft_snapshot_index")
                .set(m.snapshot.map_or(0, |l| l.index) as f64);
            metrics::gauge!("fepha_raft_is_leader").set(flag(m.state == ServerState::Leader));
            metrics::gauge!("fepha_raft_has_leader").set(flag(m.current_leader.is_some()));
            let membership = m.membership_config.membership();
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            metrics::gauge!("fepha_raft_voters").set(voters.len() as f64);
            if let Some(replication) = &m.replication {
                let matched: BTreeMap<NodeId, u64> = replication
                    .iter()
                    .map(|(id, log)| (*id, log.map_or(0, |l| l.index)))
                    .collect();
                for (id, node) in membership.nodes() {
                    if *id == m.id {
                        continue;
                    }
                    let behind = last.saturating_sub(matched.get(id).copied().unwrap_or(0));
                    metrics::gauge!("fepha_raft_replication_lag_entries", "peer" => node.name.clone())
                        .set(behind as f64);
                }
                let mut acked: Vec<u64> = voters
                    .iter()
                    .map(|v| {
                        if *v == m.id {
                            last
                        } else {
                            matched.get(v).copied().unwrap_or(0)
                        }
                    })
                    .collect();
                acked.sort_unstable_by(|a, b| b.cmp(a));
                // The highest index a majority of voters holds is committed.
                if let Some(committed) = acked.get(voters.len() / 2) {
                    metrics::gauge!("fepha_raft_committed_index").set(*committed as f64);
                }
            }
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = &mut stop => return,
        }
    }
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

/// What the metrics showed before, to count elections and leader changes.
#[derive(Default)]
struct Seen {
    term: Option<u64>,
    /// The last leader known, kept through the leaderless gap of an election, so that one
    /// failover counts one change.
    leader: Option<NodeId>,
}

impl Seen {
    fn count(&mut self, term: u64, leader: Option<NodeId>) {
        if self.term.is_some_and(|t| term > t) {
            metrics::counter!("fepha_raft_elections_total").increment(1);
        }
        self.term = Some(term);
        if let Some(now) = leader {
            if self.leader.is_some_and(|before| before != now) {
                metrics::counter!("fepha_raft_leader_changes_total").increment(1);
            }
            self.leader = Some(now);
        }
    }
}
