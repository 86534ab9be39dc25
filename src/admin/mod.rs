//! The admin gRPC service that the CLI talks to. One file per group of commands; this file
//! only checks who is calling and dispatches.

mod access;
pub mod client;
mod iec104;
mod join;
mod leases;
mod members;
mod points;
mod route;
mod site_config;
mod status;
pub mod token;
mod trust;

use std::future::Future;
use std::sync::Arc;

use access::Caller;
pub use leases::renew_own;
pub use points::{wait_command, write_own};
pub use route::{NO_LEADER, now_ms};
pub use status::leader_seen_by;
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::proto::admin::admin_server::Admin;
use crate::proto::admin::*;

pub struct AdminService {
    node: Arc<Node>,
}

impl AdminService {
    pub fn new(node: Arc<Node>) -> AdminService {
        AdminService { node }
    }

    /// Runs `f` with who is calling, and counts the call by method and outcome.
    async fn call<T, R, F, Fut>(
        &self,
        method: &'static str,
        request: Request<T>,
        f: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(Arc<Node>, Caller, T) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        let result = match Caller::of(&self.node, &request) {
            Ok(caller) => f(self.node.clone(), caller, request.into_inner()).await,
            Err(e) => Err(e),
        };
        counted(method, result)
    }
}

/// Counts every admin call by method and outcome.
fn counted<T>(method: &'static str, result: Result<T, Status>) -> Result<Response<T>, Status> {
    let code = match &result {
        Ok(_) => "ok".to_string(),
        Err(s) => format!("{:?}", s.code()).to_lowercase(),
    };
    metrics::counter!("fepha_admin_requests_total", "method" => method, "code" => code)
        .increment(1);
    result.map(Response::new)
}

// Each call states who may make it: `trusted()` (a node or an operator), the handler's own
// checks (forwarded requests, a node acting for itself), or anyone (enrolment).
#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, r: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        self.call("status", r, |node, caller, req| async move {
            caller.trusted()?;
            Ok(status::status(&node, req).await)
        })
        .await
    }

    async fn node_info(&self, r: Request<NodeInfoRequest>) -> Result<Response<Member>, Status> {
        self.call("node_info", r, |node, caller, _| async move {
            caller.trusted().map(|()| status::me(&node))
        })
        .await
    }

    async fn init(&self, r: Request<InitRequest>) -> Result<Response<InitReply>, Status> {
        self.call("init", r, |node, caller, _| async move {
            caller.trusted()?;
            members::init(&node).await
        })
        .await
    }

    async fn join(&self, r: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        self.call("join", r, |node, caller, req| async move {
            caller.trusted()?;
            join::join(&node, req).await
        })
        .await
    }

    async fn add_member(
        &self,
        r: Request<AddMemberRequest>,
    ) -> Result<Response<AddMemberReply>, Status> {
        self.call("add_member", r, |node, caller, req| async move {
            members::add(&node, &caller, req).await
        })
        .await
    }

    async fn remove_member(
        &self,
        r: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberReply>, Status> {
        self.call("remove_member", r, |node, caller, req| async move {
            members::remove(&node, &caller, req).await
        })
        .await
    }

    async fn retire(&self, r: Request<RetireRequest>) -> Result<Response<RetireReply>, Status> {
        self.call("retire", r, |node, caller, req| async move {
            members::retire(&node, &caller, req)
        })
        .await
    }

    async fn config_apply(
        &self,
        r: Request<ConfigApplyRequest>,
    ) -> Result<Response<ConfigApplyReply>, Status> {
        self.call("config_apply", r, |node, caller, req| async move {
            caller.may_send(req.forwarded)?;
            site_config::apply(&node, req).await
        })
        .await
    }

    async fn config_show(
        &self,
        r: Request<ConfigShowRequest>,
    ) -> Result<Response<ConfigShowReply>, Status> {
        self.call("config_show", r, |node, caller, _| async move {
            caller.trusted().map(|()| site_config::show(&node))
        })
        .await
    }

    async fn config_history(
        &self,
        r: Request<ConfigHistoryRequest>,
    ) -> Result<Response<ConfigHistoryReply>, Status> {
        self.call("config_history", r, |node, caller, _| async move {
            caller.trusted().map(|()| site_config::history(&node))
        })
        .await
    }

    async fn token_create(
        &self,
        r: Request<TokenCreateRequest>,
    ) -> Result<Response<TokenCreateReply>, Status> {
        self.call("token_create", r, |node, caller, req| async move {
            trust::token_create(&node, &caller, req).await
        })
        .await
    }

    async fn enrol(&self, r: Request<EnrolRequest>) -> Result<Response<EnrolReply>, Status> {
        self.call("enrol", r, |node, caller, req| async move {
            trust::enrol(&node, &caller, req).await
        })
        .await
    }

    async fn enrol_status(
        &self,
        r: Request<EnrolStatusRequest>,
    ) -> Result<Response<EnrolReply>, Status> {
        self.call("enrol_status", r, |node, _, req| async move {
            trust::enrol_status(&node, req)
        })
        .await
    }

    async fn cert_list(
        &self,
        r: Request<CertListRequest>,
    ) -> Result<Response<CertListReply>, Status> {
        self.call("cert_list", r, |node, caller, _| async move {
            caller.trusted().map(|()| trust::list(&node))
        })
        .await
    }

    async fn cert_allow(
        &self,
        r: Request<CertAllowRequest>,
    ) -> Result<Response<CertAllowReply>, Status> {
        self.call("cert_allow", r, |node, caller, req| async move {
            trust::allow(&node, &caller, req).await
        })
        .await
    }

    async fn cert_revoke(
        &self,
        r: Request<CertRevokeRequest>,
    ) -> Result<Response<CertRevokeReply>, Status> {
        self.call("cert_revoke", r, |node, caller, req| async move {
            trust::revoke(&node, &caller, req).await
        })
        .await
    }

    async fn cert_trust(
        &self,
        r: Request<CertTrustRequest>,
    ) -> Result<Response<CertTrustReply>, Status> {
        self.call("cert_trust", r, |node, caller, req| async move {
            trust::trust_operator(&node, &caller, req).await
        })
        .await
    }

    async fn renew(&self, r: Request<RenewRequest>) -> Result<Response<RenewReply>, Status> {
        self.call("renew", r, |node, caller, req| async move {
            leases::renew(&node, &caller, req).await
        })
        .await
    }

    async fn rtu_list(&self, r: Request<RtuListRequest>) -> Result<Response<RtuListReply>, Status> {
        self.call("rtu_list", r, |node, caller, req| async move {
            leases::rtu_list(&node, &caller, req).await
        })
        .await
    }

    async fn rtu_move(&self, r: Request<RtuMoveRequest>) -> Result<Response<RtuMoveReply>, Status> {
        self.call("rtu_move", r, |node, caller, req| async move {
            leases::rtu_move(&node, &caller, req).await
        })
        .await
    }

    async fn node_write(
        &self,
        r: Request<NodeWriteRequest>,
    ) -> Result<Response<NodeWriteReply>, Status> {
        self.call("node_write", r, |node, caller, req| async move {
            points::node_write(&node, &caller, req).await
        })
        .await
    }

    async fn point_list(
        &self,
        r: Request<PointListRequest>,
    ) -> Result<Response<PointListReply>, Status> {
        self.call("point_list", r, |node, caller, req| async move {
            caller.trusted()?;
            Ok(points::point_list(&node, req))
        })
        .await
    }

    async fn point_write(
        &self,
        r: Request<PointWriteRequest>,
    ) -> Result<Response<PointWriteReply>, Status> {
        self.call("point_write", r, |node, caller, req| async move {
            points::point_write(&node, &caller, req).await
        })
        .await
    }

    async fn iec104_connections(
        &self,
        r: Request<Iec104ConnectionsRequest>,
    ) -> Result<Response<Iec104ConnectionsReply>, Status> {
        self.call("iec104_connections", r, |node, caller, req| async move {
            caller.trusted()?;
            Ok(iec104::connections(&node, req).await)
        })
        .await
    }
}
