//! Makes a leader that has lost its quorum step down, without disturbing the cluster when it
//! comes back.
//!
//! openraft 0.9 leaves a cut-off leader in the leader state for as long as it is cut off, and
//! ignores `trigger().elect()` on a leader. For fepha that is wrong twice over: operators would
//! see two leaders, and everything that obeys leadership (the 104 forwarder, lease grants)
//! would keep running on the wrong side of a split.
//!
//! Once the followers may have elected someone else (openraft lets them campaign after the
//! leader lease plus an election timeout, at most twice `election_timeout_max`), and after one
//! more `election_timeout_max` as seen by this task (a leader paused by SIGSTOP or a VM freeze
//! wakes up with a long silence on record, but hears of the newer term within a round trip and
//! steps down by itself), the leader hands its own Raft a vote for term + 1 on behalf of node
//! id 0. openraft grants a higher vote once the leader's lease has run out and then follows it,
//! which ends the leadership. No node has id 0 (see `node::node_id`), so that vote can elect
//! nobody.
//!
//! The node then stops campaigning until it hears from a leader again, or until it can reach
//! a quorum of voters none of which follows a leader (a pre-vote of sorts: openraft 0.9 has
//! none). Campaigning while cut off
//! would only raise its term, and a node with a higher term deposes the majority's healthy
//! leader as soon as the partition heals. It still votes, so it never blocks an election; and
//! a cluster whose every node has stepped down this way still elects someone once they can
//! reach each other.

use std::time::{Duration, Instant};

use openraft::raft::VoteRequest;
use openraft::{ServerState, Vote};

use crate::cluster::Cluster;
use crate::config::RaftSettings;
use crate::shutdown::Shutdown;

/// The id that no node has: a vote for it elects nobody.
const NOBODY: u64 = 0;

/// A voter that does not answer this quickly counts as not answering.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

pub async fn step_down_without_quorum(
    cluster: Cluster,
    settings: RaftSettings,
    shutdown: Shutdown,
) {
    let timeout_max = Duration::from_millis(settings.election_timeout_max_ms);
    let limit = 2 * timeout_max;
    let mut tick = tokio::time::interval(Duration::from_millis(settings.heartbeat_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut leader_since: Option<Instant> = None;
    let mut silent_since: Option<Instant> = None;
    let mut stepped_down: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        metrics::counter!("fepha_raft_quorum_checks_total").increment(1);
        let m = cluster.metrics();
        let voters = m.membership_config.membership().voter_ids().count();

        // Set while this node has stepped down: when it last probed the voters.
        if let Some(probed_at) = stepped_down {
            let resume = if m.current_leader.is_some_and(|l| l != cluster.id()) {
                true
            } else if probed_at.elapsed() > timeout_max {
                // A round trip to each voter: once per election timeout is enough.
                stepped_down = Some(Instant::now());
                quorum_without_leader(&cluster).await
            } else {
                false
            };
            if resume {
                stepped_down = None;
                if !cluster.is_retired() {
                    cluster.raft().runtime_config().elect(true);
                }
            }
        }

        if m.state != ServerState::Leader || voters <= 1 {
            leader_since = None;
            silent_since = None;
            continue;
        }
        let became_leader = *leader_since.get_or_insert_with(Instant::now);
        let silent = match m.millis_since_quorum_ack {
            Some(ms) => Duration::from_millis(ms),
            // No quorum has acknowledged this leader yet.
            None => became_leader.elapsed(),
        };
        if silent <= limit {
            silent_since = None;
            continue;
        }
        if silent_since.get_or_insert_with(Instant::now).elapsed() < timeout_max {
            continue;
        }
        if step_down(&cluster, m.current_term, silent).await {
            leader_since = None;
            silent_since = None;
            stepped_down = Some(Instant::now());
        }
    }
}

/// Whether this node and the voters that answer make a majority, and none of them follows a
/// leader. A voter that does is about to be reached by that leader, which is better than an
/// election.
async fn quorum_without_leader(cluster: &Cluster) -> bool {
    let members = cluster.members();
    let voters: Vec<_> = members.voters().collect();
    let asks = voters
        .iter()
        .filter(|id| **id != cluster.id())
        .filter_map(|id| {
            let addr = members.get(*id)?.raft_addr.clone();
            Some(async move { cluster.leader_seen_by(&addr, PROBE_TIMEOUT).await })
        });
    let answers: Vec<Option<bool>> = futures::future::join_all(asks).await;
    if answers.contains(&Some(true)) {
        return false;
    }
    let answered = answers.iter().filter(|a| a.is_some()).count();
    answered + usize::from(voters.contains(&cluster.id())) > voters.len() / 2
}

/// Returns whether openraft took the vote; if not (its lease still runs), the next tick retries.
async fn step_down(cluster: &Cluster, term: u64, silent: Duration) -> bool {
    let raft = cluster.raft();
    let last_log = raft.data_metrics().borrow().last_log;
    raft.runtime_config().elect(false);
    let request = VoteRequest::new(Vote::new(term + 1, NOBODY), last_log);
    match raft.vote(request).await {
        Ok(reply) if reply.vote_granted => {
            metrics::counter!("fepha_raft_quorum_lost_total").increment(1);
            tracing::warn!(
                silent_ms = silent.as_millis() as u64,
                "no quorum has answered this leader; it stepped down"
            );
            true
        }
        Ok(_) => {
            if !cluster.is_retired() {
                raft.runtime_config().elect(true);
            }
            false
        }
        Err(e) => {
            tracing::error!("cannot step down: {e}");
            false
        }
    }
}
