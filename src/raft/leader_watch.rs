//! Sees a leader's process die at once, and has one voter campaign as soon as the others will
//! vote for it.
//!
//! openraft 0.9 learns of a dead leader by silence only: a follower campaigns after the leader
//! lease (`election_timeout_max`) plus its own random election timeout, and the other voters
//! refuse to vote until their own lease of the old leader has run out. A crashed process,
//! unlike a dead box, is seen at once: its kernel closes its connections, and its port refuses
//! new ones. So every follower holds a `Watch` call open on its leader (`proto/peer.proto`).
//! When the call ends and the leader's port refuses a connection, its process is gone. Then:
//!
//! 1. the voter waits until every other voter's lease of that leader has run out: one
//!    `election_timeout_max` after it last heard the leader itself, plus one heartbeat for the
//!    difference between when each voter heard it last;
//! 2. it asks the other voters for their last log ids, and campaigns only if its own log is
//!    the one openraft would elect (the longest; the lowest node id among equals). Two voters
//!    that campaign at once split the vote, and both then wait a whole election timeout more.
//!
//! Nothing here is needed for safety: a voter still votes by openraft's rules, and if the one
//! chosen cannot win, openraft's timers elect someone as they always did. A box that dies
//! silently (power, cable) is left to those timers.

use std::time::Duration;

use crate::cluster::Cluster;
use crate::config::RaftSettings;
use crate::ids::NodeId;
use crate::shutdown::Shutdown;

/// A voter that does not say its log this quickly is left out of the choice.
const ASK_TIMEOUT: Duration = Duration::from_millis(100);

pub async fn campaign_when_the_leader_dies(
    cluster: Cluster,
    settings: RaftSettings,
    shutdown: Shutdown,
) {
    let heartbeat = Duration::from_millis(settings.heartbeat_ms);
    let lease = Duration::from_millis(settings.election_timeout_max_ms);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut changes = cluster.raft().metrics();
    // The last term in which this node campaigned for a dead leader: once per term.
    let mut campaigned_in = 0;
    loop {
        let m = cluster.metrics();
        let leader = m.current_leader.filter(|l| *l != cluster.id());
        let addr = leader.and_then(|l| cluster.members().get(l).map(|n| n.raft_addr.clone()));
        let (Some(leader), Some(addr)) = (leader, addr) else {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = &mut stop => return,
            }
            continue;
        };
        let term = m.current_term;
        // Asked on every change of the metrics (each apply under load): borrowed, not copied.
        let still = |c: &Cluster| {
            let m = c.raft().metrics();
            let m = m.borrow();
            m.current_leader == Some(leader) && m.current_term == term
        };
        let watch = cluster.watch_peer(&addr);
        tokio::pin!(watch);
        let gone = loop {
            tokio::select! {
                gone = &mut watch => break Some(gone),
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !still(&cluster) {
                        break None;
                    }
                }
                _ = &mut stop => return,
            }
        };
        // Another leader, or another term: watch that one.
        let Some(gone) = gone else { continue };
        let outcome = match gone {
            Ok(true) => "leader_gone",
            Ok(false) => "leader_alive",
            Err(_) => "not_made",
        };
        metrics::counter!("fepha_raft_leader_watch_ends_total", "outcome" => outcome).increment(1);
        if !matches!(gone, Ok(true)) {
            // The call ended with the leader alive (a dropped connection, a restart that was
            // quick, a leader of an older version that has no `Watch`): watch again, after a
            // pause so that such a peer is not called in a loop.
            tokio::select! {
                () = tokio::time::sleep(10 * heartbeat) => {}
                _ = &mut stop => return,
            }
            continue;
        }
        if still(&cluster) && campaigned_in < term {
            tracing::info!(leader, term, "the leader's process is gone");
            // 1. Until the other voters' leases of the dead leader have run out.
            let quiet = lease + heartbeat;
            loop {
                let ago = cluster.leader_heard_ago().unwrap_or(quiet);
                if ago >= quiet {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(quiet - ago) => {}
                    _ = &mut stop => return,
                }
            }
            // 2. Only the voter openraft would elect.
            let better = match still(&cluster) {
                true => better_candidate(&cluster, leader).await,
                false => None,
            };
            if let Some(better) = better {
                tracing::info!(better, "another voter has the longer log; it campaigns");
            } else if still(&cluster)
                && !cluster.is_retired()
                && cluster.members().is_voter(cluster.id())
            {
                campaigned_in = term;
                metrics::counter!("fepha_raft_campaigns_leader_gone_total").increment(1);
                tracing::info!(term, "campaigning at once for the dead leader's place");
                if let Err(e) = cluster.raft().trigger().elect().await {
                    tracing::warn!("cannot campaign: {e}");
                }
            }
        }
        // This term is decided: wait for the next (a dead leader's port refuses at once, so
        // watching it again would only spin). If no election comes, openraft's timers are
        // late too, and the dead leader is looked at again.
        let next = tokio::time::sleep(4 * lease);
        tokio::pin!(next);
        while still(&cluster) {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = &mut next => break,
                _ = &mut stop => return,
            }
        }
    }
}

/// A voter other than this node and the dead leader whose log openraft would prefer: longer
/// (by term, then index), or as long with a lower node id. Voters that do not answer are left
/// out: if one of them was the better candidate, openraft's timers still elect.
async fn better_candidate(cluster: &Cluster, dead: NodeId) -> Option<NodeId> {
    let mine = cluster
        .raft()
        .data_metrics()
        .borrow()
        .last_log
        .map_or((0, 0), |l| (l.leader_id.term, l.index));
    let members = cluster.members();
    let others: Vec<(NodeId, String)> = members
        .voters()
        .filter(|id| *id != cluster.id() && *id != dead)
        .filter_map(|id| Some((id, members.get(id)?.raft_addr.clone())))
        .collect();
    let asks = others
        .iter()
        .map(|(_, addr)| cluster.peer_log(addr, ASK_TIMEOUT));
    let answers = futures::future::join_all(asks).await;
    others
        .iter()
        .zip(answers)
        .filter_map(|((id, _), answer)| Some((*id, answer?.last_log)))
        .find(|(id, theirs)| *theirs > mine || (*theirs == mine && *id < cluster.id()))
        .map(|(id, _)| id)
}
