//! `status`: this node's view of the cluster, with each member's reachability as seen from
//! here and its replication progress as the leader sees it.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::ServerState;

use super::Context;
use crate::proto::admin::*;
use crate::raft::NodeId;

/// A member that does not answer this quickly counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

pub(super) fn me(cx: &Context) -> Member {
    Member {
        id: cx.cluster.id(),
        name: cx.me.name.clone(),
        role: cx.me.role.to_string(),
        voter: true,
        reachable: true,
        matched_index: None,
        raft_addr: cx.me.raft_addr.clone(),
        admin_addr: cx.me.admin_addr.clone(),
        fingerprint: cx.identity.fingerprint.to_string(),
    }
}

pub(super) async fn status(cx: &Context, req: StatusRequest) -> StatusReply {
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

    let matched: BTreeMap<NodeId, Option<u64>> = match (&m.replication, req.local_only) {
        (Some(repl), _) => repl
            .iter()
            .map(|(id, l)| (*id, l.map(|l| l.index)))
            .collect(),
        // Only the leader knows how far each member has got; ask it.
        (None, false) => match leader_view(cx, m.current_leader).await {
            Some(members) => members
                .into_iter()
                .map(|x| (x.id, x.matched_index))
                .collect(),
            None => BTreeMap::new(),
        },
        (None, true) => BTreeMap::new(),
    };

    let voters: Vec<NodeId> = membership.voters().collect();
    let probes = membership.nodes().map(|(id, n)| {
        let addr = n.admin_addr.clone();
        let local = id == cx.cluster.id() || req.local_only;
        async move { (id, local || probe(cx, &addr).await) }
    });
    let reachable: BTreeMap<NodeId, bool> = futures::future::join_all(probes)
        .await
        .into_iter()
        .collect();

    let mut members: Vec<Member> = membership
        .nodes()
        .map(|(id, n)| Member {
            id,
            name: n.name.clone(),
            role: n.role.to_string(),
            voter: voters.contains(&id),
            reachable: reachable.get(&id).copied().unwrap_or(false),
            matched_index: matched.get(&id).copied().flatten(),
            raft_addr: n.raft_addr.clone(),
            admin_addr: n.admin_addr.clone(),
            fingerprint: n.fingerprint.clone(),
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
        version: crate::VERSION.to_string(),
        snapshot_index: m.snapshot.map_or(0, |l| l.index),
        purged_index: m.purged.map_or(0, |l| l.index),
        fingerprint: cx.identity.fingerprint.to_string(),
    }
}

/// Whether the node at `addr` answers within [`PROBE_TIMEOUT`].
async fn probe(cx: &Context, addr: &str) -> bool {
    let call = async {
        let mut client = cx.peers.get(addr).ok()?;
        client.node_info(NodeInfoRequest {}).await.ok()
    };
    matches!(tokio::time::timeout(PROBE_TIMEOUT, call).await, Ok(Some(_)))
}

async fn leader_view(cx: &Context, leader: Option<NodeId>) -> Option<Vec<Member>> {
    let leader = leader.filter(|l| *l != cx.cluster.id())?;
    let addr = cx.cluster.members().get(leader)?.admin_addr.clone();
    let call = async {
        let mut client = cx.peers.get(&addr).ok()?;
        let reply = client
            .status(StatusRequest { local_only: true })
            .await
            .ok()?;
        Some(reply.into_inner().members)
    };
    tokio::time::timeout(PROBE_TIMEOUT, call)
        .await
        .ok()
        .flatten()
}
