//! `status`: this node's view of the cluster. Every other member is asked for its own view
//! (concurrently, briefly): its answer is what it says of itself, and a member that does not
//! answer is unreachable. Replication progress is the leader's, asked of it when this node
//! does not lead.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use openraft::ServerState;

use super::Context;
use crate::proto::admin::*;
use crate::raft::NodeId;
use crate::state::ConfigSummary;

/// A member that does not answer this quickly counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Set only by tests: the software version this node reports instead of its own, so that a
/// cluster of one build can show the version-skew warning.
pub const TEST_VERSION_ENV: &str = "FEPHA_TEST_VERSION";

/// The software version this node reports: its build's, unless [`TEST_VERSION_ENV`] is set.
pub fn reported_version() -> String {
    match std::env::var(TEST_VERSION_ENV) {
        Ok(v) if !v.is_empty() => {
            tracing::warn!(
                "reporting software version {v} instead of {} ({TEST_VERSION_ENV} is set; a test hook)",
                crate::VERSION
            );
            v
        }
        _ => crate::VERSION.to_string(),
    }
}

pub(super) fn me(cx: &Context) -> Member {
    Member {
        id: cx.cluster.id(),
        name: cx.me.name.clone(),
        role: cx.me.role.to_string(),
        voter: true,
        reachable: true,
        raft_addr: cx.me.raft_addr.clone(),
        admin_addr: cx.me.admin_addr.clone(),
        fingerprint: cx.identity.fingerprint.to_string(),
        ..Member::default()
    }
}

/// What another member said of itself, or why it said nothing.
type Answer = Result<StatusReply, String>;

pub(super) async fn status(cx: &Context, req: StatusRequest) -> StatusReply {
    let mut reply = local(cx);
    let membership = cx.cluster.members();
    let leader_id = cx.cluster.metrics().current_leader;
    let others: Vec<(NodeId, String)> = if req.local_only {
        Vec::new()
    } else {
        membership
            .nodes()
            .filter(|(id, _)| *id != cx.cluster.id())
            .map(|(id, n)| (id, n.admin_addr.clone()))
            .collect()
    };
    let asks = others.into_iter().map(|(id, addr)| async move {
        let answer = ask(cx, &addr).await;
        (id, answer)
    });
    let answers: BTreeMap<NodeId, Answer> =
        futures::future::join_all(asks).await.into_iter().collect();

    let leader_reply = match leader_id {
        Some(l) if l == cx.cluster.id() => Some(&reply),
        Some(l) => answers.get(&l).and_then(|a| a.as_ref().ok()),
        None => None,
    };
    let leader_last = leader_reply.map(|l| l.last_log_index);
    // Only the leader knows how far each member has got.
    let matched: BTreeMap<NodeId, u64> = leader_reply
        .map(|l| {
            l.members
                .iter()
                .filter_map(|m| m.matched_index.map(|i| (m.id, i)))
                .collect()
        })
        .unwrap_or_default();
    // For a member that did not answer, the configuration the leader had replicated to it.
    let replicated: Vec<u64> = answers
        .iter()
        .filter(|(_, a)| a.is_err())
        .filter_map(|(id, _)| matched.get(id).copied())
        .collect();
    let (owned, configs) = cx.cluster.read(|s| {
        let mut owned: BTreeMap<NodeId, Vec<String>> = BTreeMap::new();
        for (rtu, lease) in &s.ownership.leases {
            owned.entry(lease.owner).or_default().push(rtu.clone());
        }
        let configs: BTreeMap<u64, Option<u64>> = replicated
            .iter()
            .map(|&i| (i, config_version_at(&s.history, i)))
            .collect();
        (owned, configs)
    });

    let mut own = reply.clone();
    own.members.clear();
    for m in &mut reply.members {
        if !matched.is_empty() {
            m.matched_index = matched.get(&m.id).copied();
        }
        m.rtus = owned.get(&m.id).cloned().unwrap_or_default();
        if m.id == cx.cluster.id() {
            fill(m, &own, leader_last);
            continue;
        }
        match answers.get(&m.id) {
            Some(Ok(theirs)) => fill(m, theirs, leader_last),
            Some(Err(error)) => {
                m.reachable = false;
                m.error.clone_from(error);
                m.lag = leader_last
                    .zip(m.matched_index)
                    .map(|(last, matched)| last.saturating_sub(matched));
                m.config_version = m
                    .matched_index
                    .and_then(|i| configs.get(&i).copied().flatten());
            }
            // Not asked: a local_only answer leaves the others to the asker.
            None => {}
        }
    }
    reply
}

/// A member's entry, from what it said of itself.
fn fill(m: &mut Member, theirs: &StatusReply, leader_last: Option<u64>) {
    m.state = Some(theirs.state.clone());
    m.term = Some(theirs.term);
    m.applied_index = Some(theirs.applied_index);
    m.version = Some(theirs.version.clone());
    m.uptime_ms = Some(theirs.uptime_ms);
    m.config_version = Some(theirs.config_version);
    m.lag = leader_last.map(|last| last.saturating_sub(theirs.applied_index));
}

/// This node's own view, without asking anyone: its state, and the membership with the
/// replication progress it knows (as leader).
fn local(cx: &Context) -> StatusReply {
    let m = cx.cluster.metrics();
    let membership = cx.cluster.members();
    let initialised = membership.is_initialised();
    let in_membership = membership.get(cx.cluster.id()).is_some();
    let state = match m.state {
        _ if !initialised => "uninitialised",
        _ if !in_membership || cx.cluster.is_retired() => "removed",
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    let leader = m
        .current_leader
        .and_then(|id| membership.get(id).map(|n| n.name.clone()));
    let matched: BTreeMap<NodeId, Option<u64>> = m
        .replication
        .iter()
        .flatten()
        .map(|(id, l)| (*id, l.map(|l| l.index)))
        .collect();
    let voters: Vec<NodeId> = membership.voters().collect();
    let mut members: Vec<Member> = membership
        .nodes()
        .map(|(id, n)| Member {
            id,
            name: n.name.clone(),
            role: n.role.to_string(),
            voter: voters.contains(&id),
            // Not probed here; an asker that wants to know asks each member itself.
            reachable: true,
            matched_index: matched.get(&id).copied().flatten(),
            raft_addr: n.raft_addr.clone(),
            admin_addr: n.admin_addr.clone(),
            fingerprint: n.fingerprint.clone(),
            ..Member::default()
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));

    StatusReply {
        node: cx.me.name.clone(),
        node_id: cx.cluster.id(),
        role: cx.me.role.to_string(),
        state: state.to_string(),
        leader,
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: m.last_applied.map_or(0, |l| l.index),
        members,
        config_version: cx.cluster.state().read(|s| s.config_version()),
        version: cx.version.clone(),
        snapshot_index: m.snapshot.map_or(0, |l| l.index),
        purged_index: m.purged.map_or(0, |l| l.index),
        fingerprint: cx.identity.fingerprint.to_string(),
        uptime_ms: u64::try_from(cx.started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// The member at `addr`'s own view, or why it gave none within [`PROBE_TIMEOUT`].
pub(super) async fn ask(cx: &Context, addr: &str) -> Answer {
    let call = async {
        let mut client = cx.peers.get(addr).map_err(|e| e.to_string())?;
        client
            .status(StatusRequest { local_only: true })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| super::iec104::describe(&s))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, call).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {}ms", PROBE_TIMEOUT.as_millis())),
    }
}

/// The site configuration version in force at log `index`, by the history; None when the
/// history no longer reaches back that far.
fn config_version_at(history: &VecDeque<ConfigSummary>, index: u64) -> Option<u64> {
    match history.iter().rev().find(|h| h.log_index <= index) {
        Some(h) => Some(h.version),
        None => match history.front() {
            Some(first) if first.version > 1 => None,
            _ => Some(0),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(version: u64, log_index: u64) -> ConfigSummary {
        ConfigSummary {
            version,
            sha256: String::new(),
            log_index,
            applied_at_ms: 0,
            bytes: 0,
        }
    }

    #[test]
    fn config_version_at_an_index() {
        let history: VecDeque<_> = [summary(1, 10), summary(2, 20)].into();
        assert_eq!(config_version_at(&history, 5), Some(0));
        assert_eq!(config_version_at(&history, 10), Some(1));
        assert_eq!(config_version_at(&history, 19), Some(1));
        assert_eq!(config_version_at(&history, 25), Some(2));
        assert_eq!(config_version_at(&VecDeque::new(), 25), Some(0));
        let trimmed: VecDeque<_> = [summary(7, 70), summary(8, 80)].into();
        assert_eq!(config_version_at(&trimmed, 60), None);
        assert_eq!(config_version_at(&trimmed, 75), Some(7));
    }
}
