//! The client half of the Raft transport: openraft's RPCs sent to a peer over gRPC.

// The error type is fixed by openraft's RaftNetwork trait.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use super::{FephaNode, NodeId, TypeConfig};
use crate::proto::raft::raft_client::RaftClient;
use crate::proto::raft::{RaftPayload, SnapshotChunk};
use crate::tls::{Identity, TrustStore};

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, FephaNode, RaftError<NodeId, E>>;

/// Makes one [`Peer`] per replication target; openraft calls it whenever it needs one.
#[derive(Clone)]
pub struct Network {
    identity: Identity,
    trust: Arc<dyn TrustStore>,
}

impl Network {
    pub fn new(identity: Identity, trust: Arc<dyn TrustStore>) -> Network {
        Network { identity, trust }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &FephaNode) -> Peer {
        Peer::new(target, &node.raft_addr, &self.identity, self.trust.clone())
    }
}

/// One peer's gRPC channel. The channel connects lazily and reconnects by itself, so a dead
/// peer costs a refused connection per RPC, which openraft answers by backing off.
pub struct Peer {
    target: NodeId,
    client: Result<RaftClient<Channel>, String>,
}

impl Peer {
    fn new(target: NodeId, addr: &str, identity: &Identity, trust: Arc<dyn TrustStore>) -> Peer {
        let client = crate::tls::endpoint(addr, Some(identity), trust)
            .map(|e| {
                let channel = e
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .connect_lazy();
                RaftClient::new(channel)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX)
            })
            .map_err(|e| format!("bad raft address {addr:?} for node {target}: {e}"));
        Peer { target, client }
    }

    fn client<E: std::error::Error>(&self) -> Result<RaftClient<Channel>, RpcError<E>> {
        self.client
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&StrError(e))))
    }

    /// Turns a gRPC reply carrying openraft's `Result` back into what openraft expects.
    fn decode<T, E>(
        &self,
        reply: Result<tonic::Response<RaftPayload>, tonic::Status>,
        rpc: &'static str,
    ) -> Result<T, RpcError<E>>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let outcome = match &reply {
            Ok(_) => "ok",
            Err(_) => "transport_error",
        };
        metrics::counter!("fepha_raft_rpc_sent_total", "rpc" => rpc, "outcome" => outcome)
            .increment(1);
        let payload = reply
            .map_err(|status| transport_error(&status))?
            .into_inner();
        let result: Result<T, RaftError<NodeId, E>> = serde_json::from_slice(&payload.json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn request<T>(msg: T, option: &RPCOption) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(option.hard_ttl());
    req
}

fn encode<T: Serialize, E: std::error::Error>(rpc: &T) -> Result<Vec<u8>, RpcError<E>> {
    serde_json::to_vec(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

/// A peer that cannot be reached at all is "unreachable", so openraft backs off instead of
/// retrying in a tight loop; anything else is a plain network error.
fn transport_error<E: std::error::Error>(status: &tonic::Status) -> RpcError<E> {
    let err = StrError(format!("{}: {}", status.code(), status.message()));
    match status.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&err)),
        _ => RPCError::Network(NetworkError::new(&err)),
    }
}

#[derive(Debug)]
struct StrError(String);

impl std::fmt::Display for StrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StrError {}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let json = encode(&rpc)?;
        let reply = self
            .client()?
            .append_entries(request(RaftPayload { json }, &option))
            .await;
        self.decode(reply, "append_entries")
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        let data = std::mem::take(&mut rpc.data);
        let header_json = encode(&rpc)?;
        let reply = self
            .client()?
            .install_snapshot(request(SnapshotChunk { header_json, data }, &option))
            .await;
        self.decode(reply, "install_snapshot")
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let json = encode(&rpc)?;
        let reply = self
            .client()?
            .vote(request(RaftPayload { json }, &option))
            .await;
        self.decode(reply, "vote")
    }
}
