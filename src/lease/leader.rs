//! The leader's lease loop: from when it took each node's renewal, or applied it, on its own
//! clock (see `cluster::Renewals`), it proposes what `plan` decides, several times a TTL. On
//! every node it also stamps each renewal as it is applied, so that a node that becomes
//! leader knows how old each session's last renewal is by its own clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::plan::{View, next_expiry_ms, plan};
use crate::cluster::Cluster;
use crate::ids::NodeId;
use crate::shutdown::Shutdown;
use crate::state::ownership::{Ownership, OwnershipCommand};
use crate::state::{Request, Response};

fn ms_since(base: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(base).as_millis() as u64
}

fn ms_by_node(base: Instant, times: BTreeMap<NodeId, Instant>) -> BTreeMap<NodeId, u64> {
    times
        .into_iter()
        .map(|(n, t)| (n, ms_since(base, t)))
        .collect()
}

/// Stamps the renewals that `ownership`, read from the applied state a moment ago, has and
/// the last look did not.
fn observe(cluster: &Cluster, ownership: &Ownership) {
    let sessions = ownership
        .sessions
        .iter()
        .map(|(n, s)| (*n, s.number, s.renewed_index));
    cluster.renewals().observe(sessions);
}

pub(crate) async fn run(cluster: Cluster, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    // Every time this loop keeps is after this.
    let base = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut raft_metrics = cluster.raft().metrics();
    // When the next session would expire: planned at once then, not at the next tick.
    let mut expiry: Option<Instant> = None;
    loop {
        // Each apply changes the metrics: the stamp is then as close to the apply as this
        // task gets to run; only the tick (or an expiry) plans.
        let expires = async {
            match expiry {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let planning = tokio::select! {
            _ = tick.tick() => true,
            () = expires => true,
            changed = raft_metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
            _ = &mut stop => return,
        };
        if planning {
            // Set again below, by a plan; a node that stopped leading has none.
            expiry = None;
        } else {
            let sessions = cluster.read(|s| s.ownership.sessions.clone());
            let sessions = sessions
                .iter()
                .map(|(n, s)| (*n, s.number, s.renewed_index));
            cluster.renewals().observe(sessions);
            continue;
        }
        let (leading, own_term_applied) = {
            let m = raft_metrics.borrow();
            let own_term_applied = m
                .last_applied
                .is_some_and(|l| l.leader_id.term == m.current_term);
            (m.state == ServerState::Leader, own_term_applied)
        };
        // The plan works on this copy; its renewals are stamped before the times are taken,
        // so that no session is planned on with the stamp of an older renewal.
        let ownership = cluster.read(|s| s.ownership.clone());
        observe(&cluster, &ownership);
        let Some((heard, applied)) = cluster.renewals().view(leading) else {
            continue;
        };
        // Until this leader has applied an entry of its own term, renewals committed under
        // the old leader may be unapplied here, and their sessions would look older than they
        // are.
        if !own_term_applied {
            continue;
        }
        metrics::counter!("fepha_lease_plans_total").increment(1);
        let Some(current) = cluster.site() else {
            continue;
        };
        let config_applied_at_ms =
            cluster.read(|s| s.config.as_ref().map_or(0, |c| c.applied_at_ms));
        let members = cluster.members().roles();
        let rtus: Vec<String> = current
            .rtus
            .iter()
            .map(|r| r.id.get_ref().clone())
            .collect();
        let heard_ms = ms_by_node(base, heard);
        let applied_ms = ms_by_node(base, applied);
        let t = &current.timers;
        let view = View {
            ownership: &ownership,
            rtus: &rtus,
            members: &members,
            heard_ms: &heard_ms,
            applied_ms: &applied_ms,
            now_ms: ms_since(base, Instant::now()),
            wall_ms: Cluster::now_ms(),
            config_applied_at_ms,
            ttl_ms: *t.session_ttl_ms.get_ref(),
            backoff_ms: *t.handover_backoff_ms.get_ref(),
            backoff_max_ms: *t.handover_backoff_max_ms.get_ref(),
        };
        let commands = plan(&view);
        expiry = next_expiry_ms(&view).map(|ms| base + Duration::from_millis(ms));
        for command in commands {
            tracing::info!(?command, "lease decision");
            metrics::counter!("fepha_lease_commands_total").increment(1);
            match cluster
                .propose_here(Request::Ownership(command.clone()))
                .await
            {
                Ok(w) if matches!(w.response, Response::Ownership(Ok(()))) => {
                    count_handovers(&command, &ownership);
                }
                // The state moved under the plan (or leadership did): plan again next tick.
                Ok(w) => {
                    tracing::debug!("lease decision refused: {:?}", w.response);
                    break;
                }
                Err(e) => {
                    tracing::debug!("lease decision not proposed: {e}");
                    break;
                }
            }
        }
    }
}

/// Counts the leases a committed decision takes from a node, by why: an operator's move, an
/// owner that could not reach its RTU, or a session that ended.
fn count_handovers(command: &OwnershipCommand, before: &Ownership) {
    let count = |rtu: &str, reason: &'static str| {
        metrics::counter!("fepha_rtu_handovers_total", "rtu" => rtu.to_owned(), "reason" => reason)
            .increment(1);
    };
    match command {
        OwnershipCommand::Release {
            rtu, deliberate, ..
        } => count(rtu, if *deliberate { "moved" } else { "unreachable" }),
        OwnershipCommand::Expire { node, .. } => {
            for (rtu, _) in before.owned_by(*node) {
                count(rtu, "session_expired");
            }
        }
        _ => {}
    }
}
