//! The server half of the Raft transport: a peer's RPCs handed to the local openraft.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use super::{Raft, TypeConfig};
use crate::proto::raft::raft_server::Raft as RaftRpc;
use crate::proto::raft::{RaftPayload, SnapshotChunk};
use crate::tls::TrustStore;

pub struct RaftService {
    raft: Raft,
    trust: Arc<dyn TrustStore>,
    heard: Arc<LeaderHeard>,
}

/// When this node last took an AppendEntries (a leader's heartbeat or entries).
#[derive(Debug, Default)]
pub struct LeaderHeard {
    at: std::sync::Mutex<Option<std::time::Instant>>,
}

impl LeaderHeard {
    fn record(&self) {
        let mut at = self
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *at = Some(std::time::Instant::now());
    }

    /// How long ago; None if never.
    pub fn ago(&self) -> Option<std::time::Duration> {
        let at = self
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        at.map(|t| t.elapsed())
    }
}

impl RaftService {
    pub fn new(raft: Raft, trust: Arc<dyn TrustStore>, heard: Arc<LeaderHeard>) -> RaftService {
        RaftService { raft, trust, heard }
    }

    /// Only nodes speak Raft, and a certificate revoked while its connection was open is
    /// refused from the next request on.
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        crate::tls::require_node(request, self.trust.as_ref(), "Raft").map(|_| ())
    }
}

/// A request that does not decode is the sender's fault (or a stranger's): refuse it, and
/// never let it reach openraft.
fn decode<T: DeserializeOwned>(json: &[u8], rpc: &'static str) -> Result<T, Status> {
    metrics::counter!("fepha_raft_rpc_received_total", "rpc" => rpc).increment(1);
    serde_json::from_slice(json).map_err(|e| {
        metrics::counter!("fepha_raft_rpc_rejected_total", "rpc" => rpc).increment(1);
        Status::invalid_argument(format!("malformed {rpc} request: {e}"))
    })
}

fn reply<T: Serialize>(result: &T) -> Result<Response<RaftPayload>, Status> {
    let json = serde_json::to_vec(result)
        .map_err(|e| Status::internal(format!("cannot encode reply: {e}")))?;
    Ok(Response::new(RaftPayload { json }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check(&request)?;
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> =
            decode(&request.into_inner().json, "append_entries")?;
        self.heard.record();
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check(&request)?;
        let rpc: openraft::raft::VoteRequest<super::NodeId> =
            decode(&request.into_inner().json, "vote")?;
        // A node removed from the cluster while it was down, or that never heard of its
        // removal, campaigns with ever higher terms; letting those terms in would depose a
        // healthy leader again and again (the Raft paper's "disruptive servers").
        let candidate = rpc.vote.leader_id().voted_for();
        let known_voter = candidate.is_some_and(|c| {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config.membership().voter_ids().any(|v| v == c)
        });
        if !known_voter {
            metrics::counter!("fepha_raft_rpc_rejected_total", "rpc" => "vote").increment(1);
            return Err(Status::failed_precondition(format!(
                "node {candidate:?} is not a voter in this node's membership"
            )));
        }
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<SnapshotChunk>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check(&request)?;
        let chunk = request.into_inner();
        let mut rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> =
            decode(&chunk.header_json, "install_snapshot")?;
        rpc.data = chunk.data;
        reply(&self.raft.install_snapshot(rpc).await)
    }
}
