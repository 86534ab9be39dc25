//! Makes a leader that has lost its quorum step down.
//!
//! openraft 0.9 leaves a cut-off leader in the leader state for as long as it is cut off. For
//! fepha that is wrong twice over: operators would see two leaders, and everything that obeys
//! leadership (the 104 forwarder, lease grants) would keep running on the wrong side of a
//! split. Once the followers may have elected someone else (openraft lets them campaign after
//! the leader lease plus an election timeout, at most twice `election_timeout_max`), the old
//! leader starts an election it cannot win while cut off, which takes it out of the leader
//! state.
//!
//! The silence must last one more `election_timeout_max` as seen by this task before it acts:
//! a leader that was paused (SIGSTOP, a VM freeze) wakes up with a long silence on record but
//! hears of the newer term within a round trip and steps down by itself; forcing an election
//! then would only depose the new leader.

use std::time::{Duration, Instant};

use openraft::ServerState;

use super::Raft;
use crate::config::RaftSettings;
use crate::shutdown::Shutdown;

pub async fn step_down_without_quorum(raft: Raft, settings: RaftSettings, shutdown: Shutdown) {
    let limit = Duration::from_millis(2 * settings.election_timeout_max_ms);
    let grace = Duration::from_millis(settings.election_timeout_max_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(settings.heartbeat_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut leader_since: Option<Instant> = None;
    let mut silent_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        metrics::counter!("fepha_raft_quorum_checks_total").increment(1);
        let (state, voters, since_ack) = {
            let m = raft.metrics();
            let m = m.borrow();
            let voters = m.membership_config.membership().voter_ids().count();
            (m.state, voters, m.millis_since_quorum_ack)
        };
        if state != ServerState::Leader || voters <= 1 {
            leader_since = None;
            silent_since = None;
            continue;
        }
        let became_leader = *leader_since.get_or_insert_with(Instant::now);
        let silent = match since_ack {
            Some(ms) => Duration::from_millis(ms),
            // No quorum has acknowledged this leader yet.
            None => became_leader.elapsed(),
        };
        if silent <= limit {
            silent_since = None;
            continue;
        }
        if silent_since.get_or_insert_with(Instant::now).elapsed() < grace {
            continue;
        }
        metrics::counter!("fepha_raft_quorum_lost_total").increment(1);
        tracing::warn!(
            silent_ms = silent.as_millis() as u64,
            "no quorum has answered this leader; stepping down"
        );
        if let Err(e) = raft.trigger().elect().await {
            tracing::error!("cannot step down: {e}");
            return;
        }
        leader_since = None;
        silent_since = None;
    }
}
