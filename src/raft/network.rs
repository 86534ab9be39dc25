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

use super::{FephaNode, MAX_MESSAGE_BYTES, NodeId, TypeConfig};
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
    /// A large AppendEntries still on its way (see [`LARGE_REQUEST`]).
    in_flight: Option<InFlight>,
}

/// An AppendEntries request of [`LARGE_REQUEST`] bytes or more is sent from a task of its
/// own, which outlives openraft's call. openraft 0.9 cuts every AppendEntries off after one
/// heartbeat interval (50 ms by default) whatever the transport's own timeout says, and a
/// site configuration of many megabytes (a 100 000-point site is about 25 MiB as JSON) takes
/// longer than that to send, decode and write to the follower's log: it was cut off and sent
/// again from the start on every heartbeat, and never arrived. Now openraft's retry of the same
/// request (same vote, same previous entry, same last entry) waits on the task already
/// sending it, until it is answered; heartbeats, meanwhile, go on the same connection as
/// streams of their own, so the follower keeps hearing from its leader. Raft takes a late or
/// duplicated AppendEntries in its stride, so the answer of the task is as good as any.
const LARGE_REQUEST: usize = 256 << 10;

struct InFlight {
    key: RequestKey,
    task: tokio::task::JoinHandle<Result<tonic::Response<RaftPayload>, tonic::Status>>,
}

/// What makes an AppendEntries the same request as another: its leader's vote, the entry it
/// follows and the last entry it carries.
type RequestKey = (
    openraft::Vote<NodeId>,
    Option<openraft::LogId<NodeId>>,
    openraft::LogId<NodeId>,
);

impl Drop for Peer {
    fn drop(&mut self) {
        // The replication stream is gone (the node lost the leadership, or the member was
        // removed): a request still on its way is of no use to anyone.
        if let Some(f) = self.in_flight.take() {
            f.task.abort();
        }
    }
}

/// How long the transport gives a request of `bytes`: openraft's own time for it, and 100 ms
/// per MiB on top (10 MiB/s: a slow field LAN, a follower's JSON decoding and log write), so
/// that a large request sent by a task of its own is given up only when it really is stuck.
fn transport_timeout(hard_ttl: Duration, bytes: usize) -> Duration {
    hard_ttl + Duration::from_millis(100 * (bytes >> 20) as u64)
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
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            })
            .map_err(|e| format!("bad raft address {addr:?} for node {target}: {e}"));
        Peer {
            target,
            client,
            in_flight: None,
        }
    }

    fn client<E: std::error::Error>(&self) -> Result<RaftClient<Channel>, RpcError<E>> {
        self.client
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&StrError(e))))
    }

    /// The answer of the large request on its way. Should openraft's timeout drop this
    /// future, the task goes on and is still there for the retry.
    async fn wait_in_flight(
        &mut self,
    ) -> Result<Result<tonic::Response<RaftPayload>, tonic::Status>, RpcError> {
        let Some(f) = self.in_flight.as_mut() else {
            return Err(RPCError::Network(NetworkError::new(&StrError(
                "no request in flight".into(),
            ))));
        };
        let joined = (&mut f.task).await;
        self.in_flight = None;
        joined.map_err(|e| RPCError::Network(NetworkError::new(&e)))
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
    request_within(msg, option.hard_ttl())
}

fn request_within<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

fn encode<T: Serialize, E: std::error::Error>(rpc: &T) -> Result<Vec<u8>, RpcError<E>> {
    let json = serde_json::to_vec(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    if json.len() > MAX_MESSAGE_BYTES {
        // Cannot happen with a site that passed its checks; if it does, say so rather than
        // let the receiver refuse it without a word.
        let e = StrError(format!(
            "a Raft message of {} bytes is over the limit of {} bytes",
            json.len(),
            MAX_MESSAGE_BYTES
        ));
        tracing::error!("{e}");
        return Err(RPCError::Network(NetworkError::new(&e)));
    }
    Ok(json)
}

/// What one AppendEntries should carry at most, so that it arrives within the heartbeat
/// interval openraft 0.9 gives it (50 ms by default; a megabyte takes a few milliseconds on
/// a LAN). The first entry goes even if it is larger.
pub(super) const SEND_BUDGET: usize = 1 << 20;

/// Cuts `rpc` to the entries that fit [`SEND_BUDGET`] (always the first); gives the last
/// log id sent if it had to cut, so that a success can be reported as a partial one and
/// openraft sends the rest next.
fn fit(rpc: &mut AppendEntriesRequest<TypeConfig>) -> Option<openraft::LogId<NodeId>> {
    let mut size = 0;
    let mut keep = 0;
    for entry in &rpc.entries {
        size += json_len(entry);
        if keep > 0 && size > SEND_BUDGET {
            break;
        }
        keep += 1;
    }
    if keep == rpc.entries.len() {
        return None;
    }
    rpc.entries.truncate(keep);
    rpc.entries.last().map(|e| e.log_id)
}

/// The length of `value` as JSON, without keeping the text.
fn json_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a value serde cannot encode is refused by `encode`.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
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
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let cut = fit(&mut rpc);
        let key = rpc
            .entries
            .last()
            .map(|last| (rpc.vote, rpc.prev_log_id, last.log_id));
        let reply = match key {
            Some(key) if self.in_flight.as_ref().is_some_and(|f| f.key == key) => {
                self.wait_in_flight().await?
            }
            Some(key) if json_len(&rpc) >= LARGE_REQUEST => {
                if let Some(old) = self.in_flight.take() {
                    // Another request has replaced it (openraft moved on): its answer would
                    // be of no use.
                    old.task.abort();
                }
                let json = encode(&rpc)?;
                let timeout = transport_timeout(option.hard_ttl(), json.len());
                let mut client = self.client()?;
                let task = tokio::spawn(async move {
                    client
                        .append_entries(request_within(RaftPayload { json }, timeout))
                        .await
                });
                self.in_flight = Some(InFlight { key, task });
                self.wait_in_flight().await?
            }
            _ => {
                let json = encode(&rpc)?;
                self.client()?
                    .append_entries(request(RaftPayload { json }, &option))
                    .await
            }
        };
        match (self.decode(reply, "append_entries")?, cut) {
            (AppendEntriesResponse::Success, Some(last)) => {
                Ok(AppendEntriesResponse::PartialSuccess(Some(last)))
            }
            (response, _) => Ok(response),
        }
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

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    use super::*;
    use crate::state::Request;

    fn config_entry(index: u64, bytes: usize) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request::ApplyConfig {
                text: "#".repeat(bytes),
                applied_at_ms: 0,
            }),
        }
    }

    fn append(entries: Vec<Entry<TypeConfig>>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries,
        }
    }

    #[test]
    fn a_request_over_the_budget_is_cut_after_the_entries_that_fit() {
        let mut small = append((1..=16).map(|i| config_entry(i, 1000)).collect());
        assert_eq!(fit(&mut small), None);
        assert_eq!(small.entries.len(), 16);

        let mut big = append((1..=16).map(|i| config_entry(i, 400 << 10)).collect());
        let last = fit(&mut big).expect("cut");
        assert_eq!(big.entries.len(), 2);
        assert_eq!(last.index, 2);
        assert!(json_len(&big) <= SEND_BUDGET, "{}", json_len(&big));

        // One entry larger than the budget still goes, alone.
        let mut huge = append(vec![config_entry(1, 3 << 20), config_entry(2, 10)]);
        assert_eq!(fit(&mut huge).map(|l| l.index), Some(1));
        assert_eq!(huge.entries.len(), 1);
    }

    #[test]
    fn a_large_request_is_given_time_by_its_size() {
        let ttl = Duration::from_millis(50);
        assert_eq!(transport_timeout(ttl, 1000), ttl);
        assert_eq!(
            transport_timeout(ttl, 25 << 20),
            ttl + Duration::from_millis(2500)
        );
    }

    #[test]
    fn the_largest_configuration_fits_a_raft_message() {
        // The worst a valid site can be: its limit in characters JSON writes as two.
        let text = format!("#{}", "\"".repeat(crate::site::MAX_CONFIG_BYTES - 1));
        let rpc = append(vec![Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Request::ApplyConfig {
                text,
                applied_at_ms: 0,
            }),
        }]);
        let json = encode::<_, openraft::error::Infallible>(&rpc).expect("fits");
        assert!(json.len() > 2 * crate::site::MAX_CONFIG_BYTES);
        assert!(json.len() + (1 << 20) < MAX_MESSAGE_BYTES);
    }
}
