//! Where a write goes: proposed here if this node leads, else forwarded once to the leader.

use openraft::error::{ClientWriteError, RaftError};
use tonic::Status;
use tonic::transport::Channel;

use std::future::Future;

use crate::node::Node;
use crate::proto::admin::admin_client::AdminClient;
use crate::proto::admin::*;
use crate::raft::{FephaNode, NodeId};

/// A write request that a follower sends on to the leader, marked so that it is sent on at
/// most once.
pub trait Forwardable {
    fn forwarded(&self) -> bool;
    fn mark_forwarded(self) -> Self;
}

macro_rules! forwardable {
    ($($request:ty),* $(,)?) => {$(
        impl Forwardable for $request {
            fn forwarded(&self) -> bool {
                self.forwarded
            }
            fn mark_forwarded(mut self) -> Self {
                self.forwarded = true;
                self
            }
        }
    )*};
}

forwardable!(
    AddMemberRequest,
    RemoveMemberRequest,
    ConfigApplyRequest,
    TokenCreateRequest,
    EnrolRequest,
    CertAllowRequest,
    CertRevokeRequest,
    CertTrustRequest,
    RenewRequest,
    RtuListRequest,
    RtuMoveRequest,
    NodeWriteRequest,
    PointWriteRequest,
);

/// Runs `local` if this node leads; otherwise sends the request to the leader with `send`.
pub async fn on_leader<Req, Rep, Send, SendFut, Local, LocalFut>(
    node: &Node,
    request: Req,
    send: Send,
    local: Local,
) -> Result<Rep, Status>
where
    Req: Forwardable,
    Send: FnOnce(AdminClient<Channel>, Req) -> SendFut,
    SendFut: Future<Output = Result<tonic::Response<Rep>, Status>>,
    Local: FnOnce(Req) -> LocalFut,
    LocalFut: Future<Output = Result<Rep, Status>>,
{
    match route(node, request.forwarded()).await? {
        Route::Leader(leader) => Ok(send(leader, request.mark_forwarded()).await?.into_inner()),
        Route::Local => local(request).await,
    }
}

pub enum Route {
    Local,
    Leader(AdminClient<Channel>),
}

/// The message the CLI shows once it gives up waiting for an election.
pub const NO_LEADER: &str = "the cluster has no leader";

pub async fn is_initialised(node: &Node) -> Result<bool, Status> {
    node.raft
        .is_initialized()
        .await
        .map_err(|e| Status::unavailable(format!("raft has stopped: {e}")))
}

pub async fn ensure_initialised(node: &Node) -> Result<(), Status> {
    if is_initialised(node).await? {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "node {} is not part of a cluster yet: run `fepha init` on it, or `fepha join`",
            node.me.name
        )))
    }
}

/// `forwarded` requests came from another node and are never forwarded again: if leadership
/// moved in between, the caller retries from the start.
pub async fn route(node: &Node, forwarded: bool) -> Result<Route, Status> {
    ensure_initialised(node).await?;
    let metrics = node.metrics();
    match metrics.current_leader {
        Some(leader) if leader == node.id => Ok(Route::Local),
        Some(leader) if !forwarded => {
            let Some(info) = metrics.membership_config.membership().get_node(&leader) else {
                return Err(Status::unavailable(NO_LEADER));
            };
            let client = node
                .peers
                .get(&info.admin_addr)
                .map_err(|e| Status::unavailable(format!("leader {}: {e}", info.name)))?;
            Ok(Route::Leader(client))
        }
        Some(_) => Err(Status::unavailable("leadership is moving")),
        None => Err(Status::unavailable(NO_LEADER)),
    }
}

/// Leadership lost while proposing is worth a retry; a refused membership change is not.
pub fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, FephaNode>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            Status::unavailable("leadership moved while proposing")
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Status::failed_precondition(e.to_string())
        }
        RaftError::Fatal(e) => Status::unavailable(format!("raft has stopped: {e}")),
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
