//! Where a write goes: proposed here if this node leads, else forwarded once to the leader.

use std::future::Future;

use tonic::Status;
use tonic::transport::Channel;

use super::Context;
use crate::cluster::ClusterError;
pub use crate::proto::NO_LEADER;
use crate::proto::admin::admin_client::AdminClient;
use crate::proto::admin::*;

/// A write request that a follower sends on to the leader, marked so that it is sent on at
/// most once.
pub(super) trait Forwardable {
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
    RtuListRequest,
    RtuMoveRequest,
    PointWriteRequest,
);

/// Runs `local` if this node leads; otherwise sends the request to the leader with `send`.
pub(super) async fn on_leader<Req, Rep, Send, SendFut, Local, LocalFut>(
    cx: &Context,
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
    match route(cx, request.forwarded()).await? {
        Route::Leader(leader) => Ok(send(leader, request.mark_forwarded()).await?.into_inner()),
        Route::Local => local(request).await,
    }
}

pub(super) enum Route {
    Local,
    Leader(AdminClient<Channel>),
}

pub(super) async fn ensure_initialised(cx: &Context) -> Result<(), Status> {
    if is_initialised(cx).await? {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "node {} is not part of a cluster yet: run `fepha init` on it, or `fepha join`",
            cx.me.name
        )))
    }
}

/// `forwarded` requests came from another node and are never forwarded again: if leadership
/// moved in between, the caller retries from the start.
pub(super) async fn route(cx: &Context, forwarded: bool) -> Result<Route, Status> {
    ensure_initialised(cx).await?;
    match cx.cluster.leader() {
        Some(leader) if leader == cx.cluster.id() => Ok(Route::Local),
        Some(leader) if !forwarded => {
            let Some(info) = cx.cluster.members().get(leader).cloned() else {
                return Err(Status::unavailable(NO_LEADER));
            };
            let client = cx
                .peers
                .get(&info.admin_addr)
                .map_err(|e| Status::unavailable(format!("leader {}: {e}", info.name)))?;
            Ok(Route::Leader(client))
        }
        Some(_) => Err(Status::unavailable("leadership is moving")),
        None => Err(Status::unavailable(NO_LEADER)),
    }
}

pub(super) async fn is_initialised(cx: &Context) -> Result<bool, Status> {
    cx.cluster.is_initialised().await.map_err(Status::from)
}

/// A membership change's failure as the operator sees it.
pub(super) fn write_error(
    e: openraft::error::RaftError<
        crate::ids::NodeId,
        openraft::error::ClientWriteError<crate::ids::NodeId, crate::ids::FephaNode>,
    >,
) -> Status {
    Status::from(ClusterError::from_write(e))
}
