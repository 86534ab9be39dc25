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
mod snapshot;
mod status;
mod throttle;
pub mod token;
mod trust;

use std::future::Future;
use std::sync::Arc;

use access::Caller;
pub use route::NO_LEADER;
pub use status::{TEST_VERSION_ENV, reported_version};
use tonic::{Request, Response, Status};

use crate::cluster::{Cluster, NodeTrust};
use crate::forwarder::registry::Registry;
use crate::ids::FephaNode;
use crate::proto::admin::admin_server::{Admin, AdminServer};
use crate::proto::admin::*;
use crate::tls::{Identity, PeerInfo};

/// The largest request a client with a certificate may send: a site configuration at its
/// limit, and room for the rest of the message.
pub const MAX_REQUEST_BYTES: usize = crate::site::MAX_CONFIG_BYTES + (64 << 10);
/// The largest reply: a status, a point list of a large site, or `config show` of a site at
/// its limit (a snapshot file travels in pieces of 1 MiB).
pub const MAX_REPLY_BYTES: usize = 64 << 20;
const _: () = assert!(MAX_REPLY_BYTES >= MAX_REQUEST_BYTES + (1 << 20));
/// The largest request without a certificate: an enrolment is a few names and fingerprints.
const MAX_ENROLMENT_REQUEST_BYTES: usize = 4 << 10;
/// The largest reply without a certificate: the members' names, addresses and fingerprints.
const MAX_ENROLMENT_REPLY_BYTES: usize = 256 << 10;

/// The admin service for connections with a certificate.
pub fn service(cx: Arc<Context>) -> AdminServer<AdminService> {
    AdminServer::new(AdminService { cx, throttle: None })
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_REPLY_BYTES)
}

/// The admin service for connections without one, which may only ask to join: small
/// requests, and not many of them.
pub fn enrolment_service(cx: Arc<Context>) -> AdminServer<AdminService> {
    let throttle = Some(throttle::Throttle::default());
    AdminServer::new(AdminService { cx, throttle })
        .max_decoding_message_size(MAX_ENROLMENT_REQUEST_BYTES)
        .max_encoding_message_size(MAX_ENROLMENT_REPLY_BYTES)
}

/// What the admin API reads and acts through.
pub struct Context {
    pub cluster: Cluster,
    /// This node as the membership records it (or will, once it joins).
    pub me: FephaNode,
    pub identity: Identity,
    pub trust: Arc<NodeTrust>,
    /// Channels to the other nodes' admin APIs, for forwarding operators' writes to the
    /// leader and for status probes.
    pub peers: client::Pool,
    /// The 104 connections open on this node.
    pub connections: Arc<Registry>,
    /// When this process started, for its uptime.
    pub started: std::time::Instant,
    /// The software version it reports ([`reported_version`]).
    pub version: String,
}

pub struct AdminService {
    cx: Arc<Context>,
    /// How often callers without a certificate may call, where they may connect.
    throttle: Option<throttle::Throttle>,
}

impl AdminService {
    /// Runs `f` with who is calling, and counts the call by method and outcome.
    async fn call<T, R, F, Fut>(
        &self,
        method: &'static str,
        request: Request<T>,
        f: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(Arc<Context>, Caller, T) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        let result = match Caller::of(&self.cx, &request) {
            Ok(caller) => match self.admit(&caller, &request) {
                Ok(()) => f(self.cx.clone(), caller, request.into_inner()).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        counted(method, result)
    }

    /// A caller without a certificate takes a token from the throttle.
    fn admit<T>(&self, caller: &Caller, request: &Request<T>) -> Result<(), Status> {
        let (Caller::Anonymous, Some(throttle)) = (caller, &self.throttle) else {
            return Ok(());
        };
        let remote = request
            .extensions()
            .get::<PeerInfo>()
            .ok_or_else(|| Status::unauthenticated("not a TLS connection"))?
            .remote;
        throttle.admit(remote.ip(), std::time::Instant::now())
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
    type SnapshotSaveStream = snapshot::Chunks;

    async fn snapshot_save(
        &self,
        r: Request<SnapshotSaveRequest>,
    ) -> Result<Response<Self::SnapshotSaveStream>, Status> {
        self.call("snapshot_save", r, |cx, caller, _| async move {
            caller.trusted()?;
            snapshot::save(&cx).await
        })
        .await
    }

    async fn audit_list(
        &self,
        r: Request<AuditListRequest>,
    ) -> Result<Response<AuditListReply>, Status> {
        self.call("audit_list", r, |cx, caller, _| async move {
            caller.trusted().map(|()| snapshot::audit(&cx))
        })
        .await
    }

    async fn status(&self, r: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        self.call("status", r, |cx, caller, req| async move {
            caller.trusted()?;
            Ok(status::status(&cx, req).await)
        })
        .await
    }

    async fn node_info(&self, r: Request<NodeInfoRequest>) -> Result<Response<Member>, Status> {
        self.call("node_info", r, |cx, caller, _| async move {
            caller.trusted().map(|()| status::me(&cx))
        })
        .await
    }

    async fn init(&self, r: Request<InitRequest>) -> Result<Response<InitReply>, Status> {
        self.call("init", r, |cx, caller, _| async move {
            caller.trusted()?;
            members::init(&cx).await
        })
        .await
    }

    async fn join(&self, r: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        self.call("join", r, |cx, caller, req| async move {
            caller.trusted()?;
            join::join(&cx, req).await
        })
        .await
    }

    async fn add_member(
        &self,
        r: Request<AddMemberRequest>,
    ) -> Result<Response<AddMemberReply>, Status> {
        self.call("add_member", r, |cx, caller, req| async move {
            members::add(&cx, &caller, req).await
        })
        .await
    }

    async fn remove_member(
        &self,
        r: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberReply>, Status> {
        self.call("remove_member", r, |cx, caller, req| async move {
            members::remove(&cx, &caller, req).await
        })
        .await
    }

    async fn retire(&self, r: Request<RetireRequest>) -> Result<Response<RetireReply>, Status> {
        self.call("retire", r, |cx, caller, req| async move {
            members::retire(&cx, &caller, req)
        })
        .await
    }

    async fn config_apply(
        &self,
        r: Request<ConfigApplyRequest>,
    ) -> Result<Response<ConfigApplyReply>, Status> {
        self.call("config_apply", r, |cx, caller, req| async move {
            caller.may_send(req.forwarded)?;
            site_config::apply(&cx, req).await
        })
        .await
    }

    async fn config_show(
        &self,
        r: Request<ConfigShowRequest>,
    ) -> Result<Response<ConfigShowReply>, Status> {
        self.call("config_show", r, |cx, caller, _| async move {
            caller.trusted().map(|()| site_config::show(&cx))
        })
        .await
    }

    async fn config_history(
        &self,
        r: Request<ConfigHistoryRequest>,
    ) -> Result<Response<ConfigHistoryReply>, Status> {
        self.call("config_history", r, |cx, caller, _| async move {
            caller.trusted().map(|()| site_config::history(&cx))
        })
        .await
    }

    async fn token_create(
        &self,
        r: Request<TokenCreateRequest>,
    ) -> Result<Response<TokenCreateReply>, Status> {
        self.call("token_create", r, |cx, caller, req| async move {
            trust::token_create(&cx, &caller, req).await
        })
        .await
    }

    async fn enrol(&self, r: Request<EnrolRequest>) -> Result<Response<EnrolReply>, Status> {
        self.call("enrol", r, |cx, caller, req| async move {
            trust::enrol(&cx, &caller, req).await
        })
        .await
    }

    async fn enrol_status(
        &self,
        r: Request<EnrolStatusRequest>,
    ) -> Result<Response<EnrolReply>, Status> {
        self.call("enrol_status", r, |cx, _, req| async move {
            trust::enrol_status(&cx, req)
        })
        .await
    }

    async fn cert_list(
        &self,
        r: Request<CertListRequest>,
    ) -> Result<Response<CertListReply>, Status> {
        self.call("cert_list", r, |cx, caller, _| async move {
            caller.trusted().map(|()| trust::list(&cx))
        })
        .await
    }

    async fn cert_allow(
        &self,
        r: Request<CertAllowRequest>,
    ) -> Result<Response<CertAllowReply>, Status> {
        self.call("cert_allow", r, |cx, caller, req| async move {
            trust::allow(&cx, &caller, req).await
        })
        .await
    }

    async fn cert_revoke(
        &self,
        r: Request<CertRevokeRequest>,
    ) -> Result<Response<CertRevokeReply>, Status> {
        self.call("cert_revoke", r, |cx, caller, req| async move {
            trust::revoke(&cx, &caller, req).await
        })
        .await
    }

    async fn cert_trust(
        &self,
        r: Request<CertTrustRequest>,
    ) -> Result<Response<CertTrustReply>, Status> {
        self.call("cert_trust", r, |cx, caller, req| async move {
            trust::trust_operator(&cx, &caller, req).await
        })
        .await
    }

    async fn rtu_list(&self, r: Request<RtuListRequest>) -> Result<Response<RtuListReply>, Status> {
        self.call("rtu_list", r, |cx, caller, req| async move {
            leases::rtu_list(&cx, &caller, req).await
        })
        .await
    }

    async fn rtu_move(&self, r: Request<RtuMoveRequest>) -> Result<Response<RtuMoveReply>, Status> {
        self.call("rtu_move", r, |cx, caller, req| async move {
            leases::rtu_move(&cx, &caller, req).await
        })
        .await
    }

    async fn point_list(
        &self,
        r: Request<PointListRequest>,
    ) -> Result<Response<PointListReply>, Status> {
        self.call("point_list", r, |cx, caller, req| async move {
            caller.trusted()?;
            Ok(points::point_list(&cx, req))
        })
        .await
    }

    async fn point_write(
        &self,
        r: Request<PointWriteRequest>,
    ) -> Result<Response<PointWriteReply>, Status> {
        self.call("point_write", r, |cx, caller, req| async move {
            points::point_write(&cx, &caller, req).await
        })
        .await
    }

    async fn iec104_connections(
        &self,
        r: Request<Iec104ConnectionsRequest>,
    ) -> Result<Response<Iec104ConnectionsReply>, Status> {
        self.call("iec104_connections", r, |cx, caller, req| async move {
            caller.trusted()?;
            Ok(iec104::connections(&cx, req).await)
        })
        .await
    }
}
