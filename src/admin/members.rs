//! Membership: `init`, `join` (and the `AddMember` it sends to the cluster), `leave`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{InitializeError, RaftError};
use tonic::Status;

use std::time::Instant;

use super::Context;
use super::access::Caller;
use super::route::{on_leader, write_error};
use crate::cluster::Cluster;
use crate::config::Role;
use crate::proto::admin::*;
use crate::raft::FephaNode;
use crate::state::Request;
use crate::state::trust::{TrustCommand, TrustEntry};
use crate::tls::{Fingerprint, PeerRole, TrustStore};

pub(super) async fn init(cx: &Context) -> Result<InitReply, Status> {
    let members = BTreeMap::from([(cx.cluster.id(), cx.me.clone())]);
    match cx.cluster.raft().initialize(members).await {
        Ok(()) => {}
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
            return Err(Status::already_exists(format!(
                "node {} is already part of a cluster",
                cx.me.name
            )));
        }
        Err(e) => return Err(Status::failed_precondition(e.to_string())),
    }
    // The first entry of the trust list: this node itself.
    let entry = TrustEntry {
        fingerprint: cx.identity.fingerprint.clone(),
        name: cx.me.name.clone(),
        role: PeerRole::Node,
        added_at_ms: Cluster::now_ms(),
        added_by: "init".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cx
            .cluster
            .propose_here(Request::Trust(TrustCommand::Add(entry.clone())))
            .await
        {
            Ok(_) => return Ok(InitReply {}),
            // A one-member cluster elects itself within an election timeout.
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("waiting to lead the new cluster: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(Status::from(e)),
        }
    }
}

/// Runs on the leader: adds the node as a learner, waits until it has caught up, then makes
/// it a voter. A witness is a voter too; it only does no field I/O.
pub(super) async fn add(
    cx: &Context,
    caller: &Caller,
    req: AddMemberRequest,
) -> Result<AddMemberReply, Status> {
    let Some(member) = req.member.clone() else {
        return Err(Status::invalid_argument("no member given"));
    };
    let fingerprint: Fingerprint = member
        .fingerprint
        .parse()
        .map_err(|e: crate::tls::BadFingerprint| Status::invalid_argument(e.to_string()))?;
    // A node adds itself, with its own certificate; only nodes forward for others.
    if !req.forwarded && *caller.node()? != fingerprint {
        return Err(Status::permission_denied(
            "a node can only ask to add itself, with its own certificate",
        ));
    }
    if req.forwarded {
        caller.node()?;
    }
    if cx.trust.role_of(&fingerprint) != Some(PeerRole::Node) {
        return Err(Status::permission_denied(format!(
            "certificate {fingerprint} is not trusted as a node: use a join token or `fepha cert allow`"
        )));
    }
    let role = match member.role.as_str() {
        "voter" => Role::Voter,
        "witness" => Role::Witness,
        other => return Err(Status::invalid_argument(format!("unknown role {other:?}"))),
    };
    on_leader(
        cx,
        req,
        |mut leader, req| async move { leader.add_member(req).await },
        |_| async move {
            let members = cx.cluster.members();
            if let Some((id, _)) = members
                .nodes()
                .find(|(id, n)| n.name == member.name && *id != member.id)
            {
                return Err(Status::already_exists(format!(
                    "another node (id {id}) is already called {}",
                    member.name
                )));
            }
            if members.is_voter(member.id) {
                let index = cx.cluster.applied_index();
                return Ok(AddMemberReply { log_index: index });
            }
            let info = FephaNode {
                name: member.name,
                raft_addr: member.raft_addr,
                admin_addr: member.admin_addr,
                role,
                fingerprint: fingerprint.to_string(),
            };
            tracing::info!(id = member.id, node = %info, "adding a learner");
            cx.cluster
                .raft()
                .add_learner(member.id, info, true)
                .await
                .map_err(write_error)?;
            tracing::info!(id = member.id, "learner caught up; making it a voter");
            let written = cx
                .cluster
                .raft()
                .change_membership(
                    ChangeMembers::AddVoterIds(BTreeSet::from([member.id])),
                    false,
                )
                .await
                .map_err(write_error)?;
            Ok(AddMemberReply {
                log_index: written.log_id.index,
            })
        },
    )
    .await
}

/// Runs on the leader: removes a node from the membership altogether.
pub(super) async fn remove(
    cx: &Context,
    caller: &Caller,
    req: RemoveMemberRequest,
) -> Result<RemoveMemberReply, Status> {
    caller.may_send(req.forwarded)?;
    on_leader(
        cx,
        req,
        |mut leader, req| async move { leader.remove_member(req).await },
        |req| async move {
            let members = cx.cluster.members();
            let Some((id, _)) = members.by_name(&req.name) else {
                return Err(Status::not_found(format!(
                    "no member is called {}",
                    req.name
                )));
            };
            let is_voter = members.is_voter(id);
            if is_voter && members.voters().all(|v| v == id) {
                return Err(Status::failed_precondition(format!(
                    "{} is the last voter; a cluster cannot leave itself",
                    req.name
                )));
            }
            if is_voter {
                would_keep_a_majority(cx, &members, id, &req.name).await?;
            }
            tracing::info!(id, name = %req.name, "removing a member");
            // A learner left behind by a join that never finished is not a voter.
            let change = if is_voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            let written = cx
                .cluster
                .raft()
                .change_membership(change, false)
                .await
                .map_err(write_error)?;
            if let Some(removed) = members.get(id) {
                let credentials = cx.peers.credentials().clone();
                tokio::spawn(tell_retired(id, removed.admin_addr.clone(), credentials));
            }
            Ok(RemoveMemberReply {
                log_index: written.log_id.index,
            })
        },
    )
    .await
}

/// Refuses to remove voter `id` when that would stall the cluster. The change goes through
/// joint consensus, which needs a majority of the old voters and one of the new: removing a
/// voter while another is down can leave either without its majority, and then the removal
/// and every write after it wait until the down one comes back.
async fn would_keep_a_majority(
    cx: &Context,
    members: &crate::cluster::Members,
    id: u64,
    name: &str,
) -> Result<(), Status> {
    let voters: Vec<(u64, String, String)> = members
        .voters()
        .filter_map(|v| {
            members
                .get(v)
                .map(|n| (v, n.name.clone(), n.admin_addr.clone()))
        })
        .collect();
    let asks = voters.iter().map(|(v, name, addr)| async move {
        let up = *v == cx.cluster.id() || super::status::ask(cx, addr).await.is_ok();
        (*v, name.as_str(), up)
    });
    let answers = futures::future::join_all(asks).await;
    let majority = |of: &[&(u64, &str, bool)]| of.iter().filter(|a| a.2).count() > of.len() / 2;
    let old: Vec<_> = answers.iter().collect();
    let new: Vec<_> = answers.iter().filter(|a| a.0 != id).collect();
    if majority(&old) && majority(&new) {
        return Ok(());
    }
    let down: Vec<&str> = answers.iter().filter(|a| !a.2).map(|a| a.1).collect();
    Err(Status::failed_precondition(format!(
        "removing {name} now would stall the cluster: without a majority of voters that \
         answer (down: {}), before and after the change, the change could not commit, nor \
         anything after it; bring the down voters back first",
        down.join(", ")
    )))
}

/// Best effort: a removed node that is down or unreachable is told nothing, and the other
/// nodes refuse its votes instead (see the raft service).
async fn tell_retired(id: u64, admin_addr: String, credentials: super::client::Credentials) {
    let told = async {
        let mut client = super::client::dial(&admin_addr, Duration::from_secs(1), &credentials)
            .await
            .map_err(|e| e.to_string())?;
        client
            .retire(RetireRequest { node_id: id })
            .await
            .map_err(|e| e.message().to_string())
    };
    match tokio::time::timeout(Duration::from_secs(3), told).await {
        Ok(Ok(_)) => tracing::info!(id, "removed node has retired"),
        Ok(Err(e)) => tracing::warn!(id, "could not tell the removed node to retire: {e}"),
        Err(_) => tracing::warn!(id, "removed node did not answer the retire request"),
    }
}

/// Runs on the removed node.
pub(super) fn retire(
    cx: &Context,
    caller: &Caller,
    req: RetireRequest,
) -> Result<RetireReply, Status> {
    caller.node()?;
    if req.node_id != cx.cluster.id() {
        return Err(Status::invalid_argument(format!(
            "this is node {}, not node {}",
            cx.cluster.id(),
            req.node_id
        )));
    }
    cx.cluster.retire().map_err(|e| {
        Status::internal(format!(
            "cannot write {}: {e}",
            cx.cluster.retired_marker().display()
        ))
    })?;
    tracing::warn!("this node was removed from its cluster; it will not campaign again");
    Ok(RetireReply {})
}
