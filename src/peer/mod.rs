//! The node-to-node service (`proto/peer.proto`), served beside Raft on the raft address:
//! the leader's side of other nodes' session renewals and own writes, and the answer to
//! "do you follow a leader?". Only member nodes may call it, each in its own name.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::cluster::{Cluster, ClusterError, Renewal};
use crate::ids::NodeId;
use crate::proto::peer::peer_server::Peer;
use crate::proto::peer::{LeaderReply, LeaderRequest, PeerPayload, WatchReply, WatchRequest};
use crate::shutdown::Shutdown;
use crate::state::Request as LogRequest;
use crate::state::commands::CommandOp;
use crate::state::forwarding::ForwardingOp;
use crate::tls::TrustStore;

pub(crate) struct PeerService {
    cluster: Cluster,
    trust: Arc<dyn TrustStore>,
    /// Ends the open `Watch` calls: the server's graceful stop waits for every open call.
    stopping: Shutdown,
}

impl PeerService {
    pub(crate) fn new(
        cluster: Cluster,
        trust: Arc<dyn TrustStore>,
        stopping: Shutdown,
    ) -> PeerService {
        PeerService {
            cluster,
            trust,
            stopping,
        }
    }

    /// The member id of the calling node (None for a trusted node not in the membership).
    fn caller<T>(&self, request: &Request<T>) -> Result<Option<NodeId>, Status> {
        let fingerprint =
            crate::tls::require_node(request, self.trust.as_ref(), "the peer service")?;
        Ok(self
            .cluster
            .members()
            .by_fingerprint(fingerprint.as_str())
            .map(|(id, _)| id))
    }
}

/// What a node may write for itself; configuration, trust and ownership go other ways.
fn node_may_write(request: &LogRequest) -> bool {
    matches!(
        request,
        LogRequest::Points(_) | LogRequest::Command(_) | LogRequest::Forwarding(_)
    )
}

/// The nodes in whose name `request` writes.
fn claims(request: &LogRequest) -> Vec<NodeId> {
    match request {
        LogRequest::Points(batches) => batches.iter().map(|b| b.node).collect(),
        LogRequest::Command(CommandOp::Start { node, .. }) => vec![*node],
        LogRequest::Forwarding(ForwardingOp::Acked { node, .. }) => vec![*node],
        LogRequest::Forwarding(
            ForwardingOp::Claim { holder, .. } | ForwardingOp::Release { holder, .. },
        ) => vec![holder.node],
        _ => Vec::new(),
    }
}

fn decode<T: DeserializeOwned>(payload: PeerPayload, what: &str) -> Result<T, Status> {
    serde_json::from_slice(&payload.json)
        .map_err(|e| Status::invalid_argument(format!("not a {what}: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<PeerPayload>, Status> {
    serde_json::to_vec(value)
        .map(|json| Response::new(PeerPayload { json }))
        .map_err(|e| Status::internal(format!("cannot encode the reply: {e}")))
}

/// Counts every peer call by method and outcome.
fn counted<T>(method: &'static str, result: Result<T, Status>) -> Result<T, Status> {
    let code = match &result {
        Ok(_) => "ok".to_string(),
        Err(s) => format!("{:?}", s.code()).to_lowercase(),
    };
    metrics::counter!("fepha_peer_requests_total", "method" => method, "code" => code).increment(1);
    result
}

impl PeerService {
    async fn write(&self, request: Request<PeerPayload>) -> Result<Response<PeerPayload>, Status> {
        let writer = self.caller(&request)?;
        let request: LogRequest = decode(request.into_inner(), "log request")?;
        if !node_may_write(&request) {
            return Err(Status::permission_denied(
                "a node writes only point batches, commands and forwarding positions",
            ));
        }
        if claims(&request).iter().any(|n| Some(*n) != writer) {
            return Err(Status::permission_denied(
                "a node writes point changes and commands in its own name only",
            ));
        }
        // Never forwarded again: if leadership moved meanwhile, the writer retries.
        if !self.cluster.is_leader() {
            return Err(Status::unavailable(
                ClusterError::LeadershipMoving.to_string(),
            ));
        }
        let written = self.cluster.propose_here(request).await?;
        reply(&(written.index, written.response))
    }

    async fn renew(&self, request: Request<PeerPayload>) -> Result<Response<PeerPayload>, Status> {
        let caller = self.caller(&request)?;
        let renewal: Renewal = decode(request.into_inner(), "session renewal")?;
        if caller != Some(renewal.node) {
            return Err(Status::permission_denied(
                "a node renews its own session only",
            ));
        }
        if !self.cluster.is_leader() {
            return Err(Status::unavailable(
                ClusterError::LeadershipMoving.to_string(),
            ));
        }
        let index = self.cluster.renew_here(renewal).await?;
        reply(&index)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn renew(&self, request: Request<PeerPayload>) -> Result<Response<PeerPayload>, Status> {
        counted("renew", PeerService::renew(self, request).await)
    }

    async fn write(&self, request: Request<PeerPayload>) -> Result<Response<PeerPayload>, Status> {
        counted("write", PeerService::write(self, request).await)
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderReply>, Status> {
        let result = self.caller(&request).map(|_| {
            let last = self.cluster.raft().data_metrics().borrow().last_log;
            Response::new(LeaderReply {
                has_leader: self.cluster.leader().is_some(),
                last_log_term: last.map_or(0, |l| l.leader_id.term),
                last_log_index: last.map_or(0, |l| l.index),
            })
        });
        counted("leader", result)
    }

    type WatchStream = futures::stream::BoxStream<'static, Result<WatchReply, Status>>;

    /// Never answers while the node runs; a stopping node ends the call with `unavailable`,
    /// so that its follower does not mistake the stop for a crash until the port refuses.
    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let stopping = self.stopping.clone();
        let result = self.caller(&request).map(|_| {
            let ended = futures::stream::once(async move {
                stopping.wait().await;
                Err(Status::unavailable("the node is stopping"))
            });
            Response::new(Box::pin(ended) as Self::WatchStream)
        });
        counted("watch", result)
    }
}
