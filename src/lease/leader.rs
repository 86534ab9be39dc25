//! The leader's lease loop: from when it took each node's renewal, on its own clock (see
//! `cluster::Renewals`), it proposes what `plan` decides, several times a TTL.

use std::time::{Duration, Instant};

use openraft::ServerState;

use super::plan::{View, plan};
use crate::cluster::Cluster;
use crate::shutdown::Shutdown;
use crate::state::ownership::{Ownership, OwnershipCommand};
use crate::state::{Request, Response};

fn ms_since(base: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(base).as_millis() as u64
}

pub(crate) async fn run(cluster: Cluster, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let leading = cluster.raft().metrics().borrow().state == ServerState::Leader;
        let Some((since, heard)) = cluster.renewals().view(leading) else {
            continue;
        };
        metrics::counter!("fepha_lease_plans_total").increment(1);
        let Some(current) = cluster.site() else {
            continue;
        };
        let config_applied_at_ms =
            cluster.read(|s| s.config.as_ref().map_or(0, |c| c.applied_at_ms));
        let members = cluster.members().roles();
        let ownership = cluster.read(|s| s.ownership.clone());
        let rtus: Vec<String> = current
            .rtus
            .iter()
            .map(|r| r.id.get_ref().clone())
            .collect();
        let heard_ms = heard
            .iter()
            .map(|(n, t)| (*n, ms_since(since, *t)))
            .collect();
        let t = &current.timers;
        let commands = plan(&View {
            ownership: &ownership,
            rtus: &rtus,
            members: &members,
            heard_ms: &heard_ms,
            leader_since_ms: 0,
            now_ms: ms_since(since, Instant::now()),
            wall_ms: Cluster::now_ms(),
            config_applied_at_ms,
            ttl_ms: *t.session_ttl_ms.get_ref(),
            backoff_ms: *t.handover_backoff_ms.get_ref(),
            backoff_max_ms: *t.handover_backoff_max_ms.get_ref(),
        });
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
