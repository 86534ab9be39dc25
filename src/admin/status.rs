//! `status`: this node's view of the cluster, with each member's reachability as seen from
//! here and its replication progress as the leader sees it.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::ServerState;

use crate::node::Node;
use crate::proto::admin::*;
use crate::raft::NodeId;

/// A member that does not answer this quickly counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

pub fn me(node: &Node) -> Member {
    Member {
        id: node.id,
        name: node.me.name.clone(),
        role: node.me.role.to_string(),
        voter: true,
        reachable: true,
        matched_index: None,
        raft_addr: node.me.raft_addr.clone(),
        admin_addr: node.me.admin_addr.clone(),
        fingerprint: node.identity.fingerprint.to_string(),
    }
}

pub async fn status(node: &Node, req: StatusRequest) -> StatusReply {
    let m = node.metrics();
    let membership = m.membership_config.membership().clone();
    let initialised = m.membership_config.log_id().is_some() || membership.nodes().count() > 0;
    let in_membership = membership.get_node(&node.id).is_some();
    let state = match m.state {
        _ if !initialised => "uninitialised",
        _ if !in_membership || node.is_retired() => "removed",
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    let leader = m
        .current_leader
        .and_then(|id| membership.get_node(&id).map(|n| n.name.clone()));

    let matched: BTreeMap<NodeId, Option<u64>> = match (&m.replication, req.local_only) {
        (Some(repl), _) => repl
            .iter()
            .map(|(id, l)| (*id, l.map(|l| l.index)))
            .collect(),
        // Only the leader knows how far each member has got; ask it.
        (None, false) => match leader_view(node, m.current_leader).await {
            Some(members) => members
                .into_iter()
                .map(|x| (x.id, x.matched_index))
                .collect(),
            None => BTreeMap::new(),
        },
        (None, true) => BTreeMap::new(),
    };

    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let probes = membership.nodes().map(|(id, n)| {
        let (id, addr) = (*id, n.admin_addr.clone());
        let local = id == node.id || req.local_only;
        async move { (id, local || probe(node, &addr).await) }
    });
    let reachable: BTreeMap<NodeId, bool> = futures::future::join_all(probes)
        .await
        .into_iter()
        .collect();

    let mut members: Vec<Member> = membership
        .nodes()
        .map(|(id, n)| Member {
            id: *id,
            name: n.name.clone(),
            role: n.role.to_string(),
            voter: voters.contains(id),
            reachable: reachable.get(id).copied().unwrap_or(false),
            matched_index: matched.get(id).copied().flatten(),
            raft_addr: n.raft_addr.clone(),
            admin_addr: n.admin_addr.clone(),
            fingerprint: n.fingerprint.clone(),
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));

    StatusReply {
        node: node.me.name.clone(),
        node_id: node.id,
        role: node.me.role.to_string(),
        state: state.to_string(),
        leader,
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: m.last_applied.map_or(0, |l| l.index),
        members,
        config_version: node.state.read(|s| s.config_version()),
        version: crate::VERSION.to_string(),
        snapshot_index: m.snapshot.map_or(0, |l| l.index),
        purged_index: m.purged.map_or(0, |l| l.index),
        fingerprint: node.identity.fingerprint.to_string(),
    }
}

/// Whether the node at `addr` answers within [`PROBE_TIMEOUT`].
async fn probe(node: &Node, addr: &str) -> bool {
    let call = async {
        let mut client = node.peers.get(addr).ok()?;
        client.node_info(NodeInfoRequest {}).await.ok()
    };
    matches!(tokio::time::timeout(PROBE_TIMEOUT, call).await, Ok(Some(_)))
}

/// Whether the node at `addr` knows a leader; `None` if it does not answer in time.
pub async fn leader_seen_by(node: &Node, addr: &str) -> Option<bool> {
    let call = async {
        let mut client = node.peers.get(addr).ok()?;
        let reply = client
            .status(StatusRequest { local_only: true })
            .await
            .ok()?;
        Some(reply.into_inner().leader.is_some())
    };
    tokio::time::timeout(PROBE_TIMEOUT, call)
        .await
        .ok()
        .flatten()
}

async fn leader_view(node: &Node, leader: Option<NodeId>) -> Option<Vec<Member>> {
    let leader = leader.filter(|l| *l != node.id)?;
    let addr = node
        .metrics()
        .membership_config
        .membership()
        .get_node(&leader)?
        .admin_addr
        .clone();
    let call = async {
        let mut client = node.peers.get(&addr).ok()?;
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
