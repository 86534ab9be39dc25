//! Whether this node may serve a forwarder's masters now.
//!
//! In mode `leader` the Raft leader serves, and only while a quorum has answered it within
//! the election timeout's lower bound: followers cannot elect anyone else before that much
//! silence, so two nodes never send to one group at once, even across a partition. A
//! witness does no field work and serves no master: while a witness leads, the voter with
//! the lowest id among those with a live session serves, under its own session (as an RTU
//! owner does under its lease). In mode `all` every voter serves while its session is valid:
//! groups are then held through the log, and a node cut off from the others must stop before
//! the majority gives its groups away.

use std::time::Duration;

use openraft::ServerState;

use super::Host;
use crate::config::Role;
use crate::site::ForwardMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Start data transfer and send.
    Serve,
    /// Leading, but the quorum has not answered lately: send nothing until it does.
    Hold,
    /// Another node serves: started connections close, STARTDT waits.
    Refuse,
}

pub(crate) fn check(host: &Host, mode: ForwardMode) -> Gate {
    if mode == ForwardMode::All {
        return if host.own.valid() {
            Gate::Serve
        } else {
            Gate::Refuse
        };
    }
    // Every connection asks at every applied entry: borrow openraft's metrics rather than
    // copy them (membership included) each time.
    let metrics = host.cluster.raft().metrics();
    let m = metrics.borrow();
    let fresh = host.quorum_fresh;
    if m.state == ServerState::Leader && m.current_leader == Some(host.cluster.id()) {
        let quiet = m.millis_since_quorum_ack.map(Duration::from_millis);
        return match quiet {
            // A single-node cluster has nobody to answer and nobody to compete with.
            _ if m.membership_config.membership().voter_ids().count() == 1 => Gate::Serve,
            Some(q) if q < fresh => Gate::Serve,
            _ => Gate::Hold,
        };
    }
    let Some(leader) = m.current_leader else {
        return Gate::Refuse;
    };
    let membership = m.membership_config.membership();
    let leader_is_witness = membership
        .get_node(&leader)
        .is_some_and(|n| n.role == Role::Witness);
    if !leader_is_witness || !host.own.valid() {
        return Gate::Refuse;
    }
    let voters: Vec<u64> = membership
        .nodes()
        .filter(|(_, n)| n.role == Role::Voter)
        .map(|(id, _)| *id)
        .collect();
    drop(m);
    let first_live = host.cluster.read(|s| {
        voters
            .iter()
            .copied()
            .filter(|id| s.ownership.sessions.contains_key(id))
            .min()
    });
    if first_live == Some(host.cluster.id()) {
        Gate::Serve
    } else {
        Gate::Refuse
    }
}
