//! The admin gRPC service that the CLI talks to. One file per group of commands; this file
//! only checks who is calling and dispatches.

mod access;
pub mod client;
mod join;
mod leases;
mod members;
mod route;
mod site_config;
mod status;
pub mod token;
mod trust;

use std::sync::Arc;

use access::Caller;
pub use leases::renew_own;
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

    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        Caller::of(&self.node, request)
    }

    /// The caller of a request that needs a trusted certificate.
    fn trusted<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = self.caller(request)?;
        caller.trusted()?;
        Ok(caller)
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

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, r: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let result = match self.trusted(&r) {
            Ok(_) => Ok(status::status(&self.node, r.into_inner()).await),
            Err(e) => Err(e),
        };
        counted("status", result)
    }

    async fn node_info(&self, r: Request<NodeInfoRequest>) -> Result<Response<Member>, Status> {
        counted(
            "node_info",
            self.trusted(&r).map(|_| status::me(&self.node)),
        )
    }

    async fn init(&self, r: Request<InitRequest>) -> Result<Response<InitReply>, Status> {
        let result = match self.trusted(&r) {
            Ok(_) => members::init(&self.node).await,
            Err(e) => Err(e),
        };
        counted("init", result)
    }

    async fn join(&self, r: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let result = match self.trusted(&r) {
            Ok(_) => join::join(&self.node, r.into_inner()).await,
            Err(e) => Err(e),
        };
        counted("join", result)
    }

    async fn add_member(
        &self,
        r: Request<AddMemberRequest>,
    ) -> Result<Response<AddMemberReply>, Status> {
        let result = match self.caller(&r) {
            Ok(caller) => members::add(&self.node, &caller, r.into_inner()).await,
            Err(e) => Err(e),
        };
        counted("add_member", result)
    }

    async fn remove_member(
        &self,
        r: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberReply>, Status> {
        let result = match self.caller(&r) {
            Ok(caller) => members::remove(&self.node, &caller, r.into_inner()).await,
            Err(e) => Err(e),
        };
        counted("remove_member", result)
    }

    async fn retire(&self, r: Request<RetireRequest>) -> Result<Response<RetireReply>, Status> {
        let result = self
            .caller(&r)
            .and_then(|caller| members::retire(&self.node, &caller, r.into_inner()));
        counted("retire", result)
    }

    async fn config_apply(
        &self,
        r: Request<ConfigApplyRequest>,
    ) -> Result<Response<ConfigApplyReply>, Status> {
        let result = match self.caller(&r) {
            Ok(caller) => match caller.may_send(r.get_ref().forwarded) {
                Ok(()) => site_config::apply(&self.node, r.into_inner()).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        counted("config_apply", result)
    }

    async fn config_show(
        &self,
        r: Request<ConfigShowRequest>,
    ) -> Result<Response<ConfigShowReply>, Status> {
        counted(
            "config_show",
            self.trusted(&r).map(|_| site_config::show(&self.node)),
        )
    }

    async fn config_history(
        &self,
        r: Request<ConfigHistoryRequest>,
    ) -> Result<Response<ConfigHistoryReply>, Status> {
        counted(
            "config_history",
            self.trusted(&r).map(|_| site_config::history(&self.node)),
        )
    }

    async fn token_create(
        &self,
        r: Request<TokenCreateRequest>,
    ) -> Result<Response<TokenCreateReply>, Status> {
        let result = match self.caller(&r) {
            Ok(caller) => trust::token_create(&self.node, &caller, r.into_inner()).await,
            Err(e) => Err(e),
        };
        counted("token_create", result)
    }

    async fn enrol(&self, r: Request<EnrolRequest>) -> Result<Response<EnrolReply>, Status> {
        let result = match self.caller(&r) {
            Ok(caller) => trust::enrol(&self.node, &caller, r.into_inner()).await,
            Err(e) => Err(e),
        };
        counted("enrol", result)
    }

    async fn enrol_status(
        &self,
        r: Request<EnrolStatusRequest>,
    ) -> Result<Response<EnrolReply>, Status> {
        let result = self
            .caller(&r)
            .and_then(|_| trust::enrol_status(&self.node, r.into_inner()));
        counted("enrol_status", result)
    }

    async fn cert_list(
        &self,
        r: Request<CertListRequest>,
    ) -> Result<Response<CertListReply>, Status> {
        counted(
            "cert_list",
            self.trusted(&r).map(|_| trust::list(&self.node)),
        )
    }

    async fn cert_allow(
        &self,
        r: Request<CertAllowRequest>,
    ) -> Result<Response<CertAllowReply>, Status> {
        let result = match self.caller(&r) {
            Ok(caller) => trust::allow(&self.node, &caller, r.into_inner()).await,
            Err(e) => Err(e),
        };
        counted("cert_allow", result)
    }

    async fn cert_revoke(
        &self,
        r: Request<CertRevokeRequest>,
    ) -> Result<Response<CertRevokeReply>, Status> {
        let result = match self.caller(&r) {
            Ok(caller) => trust::revoke(&self.node, &caller, r.into_inner()).await,
            Err(e) => Err(e),
        };
        counted("cert_revoke", result)
    }

    async fn renew(&self, r: Request<RenewRequest>) -> Result<Response<RenewReply>, Status> {
        let result = match self.caller(&r) {
            Ok(caller) => leases::renew(&self.node, &caller, r.into_inner()).await,
            Err(e) => Err(e),
        };
        counted("renew", result)
    }

    async fn rtu_list(&self, r: Request<RtuListRequest>) -> Result<Response<RtuListReply>, Status> {
        let result = match self.caller(&r) {
            Ok(caller) => leases::rtu_list(&self.node, &caller, r.into_inner()).await,
            Err(e) => Err(e),
        };
        counted("rtu_list", result)
    }

    async fn cert_trust(
        &self,
        r: Request<CertTrustRequest>,
    ) -> Result<Response<CertTrustReply>, Status> {
        let result = match self.caller(&r) {
            Ok(caller) => trust::trust_operator(&self.node, &caller, r.into_inner()).await,
            Err(e) => Err(e),
        };
        counted("cert_trust", result)
    }
}
