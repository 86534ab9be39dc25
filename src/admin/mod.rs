//! The admin gRPC service that the CLI talks to. One file per group of commands; this file
//! only dispatches.

pub mod client;
mod members;
mod route;
mod site_config;
mod status;

use std::sync::Arc;

pub use route::NO_LEADER;
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
        counted(
            "status",
            Ok(status::status(&self.node, r.into_inner()).await),
        )
    }

    async fn node_info(&self, _: Request<NodeInfoRequest>) -> Result<Response<Member>, Status> {
        counted("node_info", Ok(status::me(&self.node)))
    }

    async fn init(&self, _: Request<InitRequest>) -> Result<Response<InitReply>, Status> {
        counted("init", members::init(&self.node).await)
    }

    async fn join(&self, r: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        counted("join", members::join(&self.node, r.into_inner()).await)
    }

    async fn add_member(
        &self,
        r: Request<AddMemberRequest>,
    ) -> Result<Response<AddMemberReply>, Status> {
        counted("add_member", members::add(&self.node, r.into_inner()).await)
    }

    async fn remove_member(
        &self,
        r: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberReply>, Status> {
        counted(
            "remove_member",
            members::remove(&self.node, r.into_inner()).await,
        )
    }

    async fn retire(&self, r: Request<RetireRequest>) -> Result<Response<RetireReply>, Status> {
        counted("retire", members::retire(&self.node, r.into_inner()))
    }

    async fn config_apply(
        &self,
        r: Request<ConfigApplyRequest>,
    ) -> Result<Response<ConfigApplyReply>, Status> {
        counted(
            "config_apply",
            site_config::apply(&self.node, r.into_inner()).await,
        )
    }

    async fn config_show(
        &self,
        _: Request<ConfigShowRequest>,
    ) -> Result<Response<ConfigShowReply>, Status> {
        counted("config_show", Ok(site_config::show(&self.node)))
    }

    async fn config_history(
        &self,
        _: Request<ConfigHistoryRequest>,
    ) -> Result<Response<ConfigHistoryReply>, Status> {
        counted("config_history", Ok(site_config::history(&self.node)))
    }
}
