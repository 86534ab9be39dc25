//! A node's own requests on their way to the leader when this node does not lead: the peer
//! service's client side, over mutual TLS to the leader's raft address.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use super::{Cluster, ClusterError, Members, Renewal, Written};
use crate::ids::{FephaNode, NodeId};
use crate::proto::peer::peer_client::PeerClient;
use crate::proto::peer::{LeaderRequest, PeerPayload, WatchRequest};
use crate::state::Request;
use crate::tls::{Channels, Identity, TrustStore};

/// No forwarded call may hold its caller longer: the batcher and the session loop retry.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Channels to the other nodes' peer services.
pub struct PeerPool(Channels);

impl PeerPool {
    pub fn new(identity: Identity, trust: Arc<dyn TrustStore>) -> PeerPool {
        PeerPool(Channels::new(Some(identity), trust, CALL_TIMEOUT))
    }

    /// A client for the node at `raft_addr`.
    fn get(&self, raft_addr: &str) -> Result<PeerClient<Channel>, String> {
        let limit = crate::raft::MAX_MESSAGE_BYTES;
        self.0
            .get(raft_addr)
            .map(|channel| {
                PeerClient::new(channel)
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit)
            })
            .map_err(|e| e.to_string())
    }

    /// Drops the channels to addresses not in `keep` (nodes that left or were revoked).
    pub fn retain(&self, keep: &BTreeSet<String>) {
        self.0.retain(keep);
    }
}

pub(super) enum Route {
    Local,
    Leader(Leader),
}

pub(super) struct Leader {
    name: String,
    client: PeerClient<Channel>,
}

impl Cluster {
    /// Where this node's own request goes now.
    pub(super) async fn route(&self) -> Result<Route, ClusterError> {
        // A known leader means a cluster: openraft is asked only when there is none, not on
        // every write that goes this way.
        let Some(leader) = self.leader() else {
            return Err(if self.is_initialised().await? {
                ClusterError::NoLeader
            } else {
                ClusterError::NotInitialised
            });
        };
        if leader == self.id() {
            return Ok(Route::Local);
        }
        let members = self.members();
        let info = members.get(leader).ok_or(ClusterError::NoLeader)?;
        let client = self
            .peers()
            .get(&info.raft_addr)
            .map_err(|message| ClusterError::Leader {
                leader: info.name.clone(),
                message,
            })?;
        Ok(Route::Leader(Leader {
            name: info.name.clone(),
            client,
        }))
    }

    /// Keeps a live connection to every other member's peer service, until `shutdown`: the
    /// first write or renewal to a new leader after a failover must not wait for a TCP, TLS
    /// and HTTP/2 handshake while the writer's lease runs down. A cheap `Leader` call every
    /// second opens (or proves) each connection.
    pub async fn keep_peers_connected(self, shutdown: crate::shutdown::Shutdown) {
        const EVERY: Duration = Duration::from_secs(1);
        let stop = shutdown.wait();
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => return,
            }
            let members = self.members();
            let others: Vec<(NodeId, &FephaNode)> =
                members.nodes().filter(|(id, _)| *id != self.id()).collect();
            let asks = others
                .iter()
                .map(|(_, n)| self.leader_seen_by(&n.raft_addr, Duration::from_millis(500)));
            let answers = futures::future::join_all(asks).await;
            let silent = answers.iter().filter(|a| a.is_none()).count();
            metrics::counter!("fepha_peer_probes_total").increment(answers.len() as u64);
            metrics::counter!("fepha_peer_probes_unanswered_total").increment(silent as u64);
            let up: Vec<(NodeId, bool)> = std::iter::once((self.id(), true))
                .chain(
                    others
                        .iter()
                        .zip(&answers)
                        .map(|((id, _), a)| (*id, a.is_some())),
                )
                .collect();
            member_gauges(&members, &up);
        }
    }

    /// Asks the node at `raft_addr` whether it follows a leader; None if it does not answer
    /// within `timeout`.
    pub async fn leader_seen_by(&self, raft_addr: &str, timeout: Duration) -> Option<bool> {
        let mut client = self.peers().get(raft_addr).ok()?;
        let call = client.leader(LeaderRequest {});
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(reply)) => Some(reply.into_inner().has_leader),
            _ => None,
        }
    }
}

/// A voter's last log id (term, index) and whether it follows a leader, for
/// [`Cluster::peer_log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLog {
    pub last_log: (u64, u64),
    pub has_leader: bool,
}

impl Cluster {
    /// The last log id of the node at `raft_addr`; None if it does not answer within
    /// `timeout`.
    pub async fn peer_log(&self, raft_addr: &str, timeout: Duration) -> Option<PeerLog> {
        let mut client = self.peers().get(raft_addr).ok()?;
        let call = client.leader(LeaderRequest {});
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(reply)) => {
                let r = reply.into_inner();
                Some(PeerLog {
                    last_log: (r.last_log_term, r.last_log_index),
                    has_leader: r.has_leader,
                })
            }
            _ => None,
        }
    }

    /// Holds a `Watch` call open on the node at `raft_addr` until it ends. Ok(true) if the
    /// node's process is gone (its port now refuses connections), Ok(false) if it still
    /// answers, Err if the call could not be made.
    pub async fn watch_peer(&self, raft_addr: &str) -> Result<bool, ClusterError> {
        let mut client = self
            .peers()
            .get(raft_addr)
            .map_err(|e| ClusterError::Codec(format!("no client for {raft_addr}: {e}")))?;
        // The first reply never comes; the call ends only when its connection does.
        let ended = match client.watch(WatchRequest {}).await {
            Ok(reply) => reply.into_inner().message().await.err(),
            Err(s) => Some(s),
        };
        if ended.as_ref().is_some_and(refused) {
            return Ok(true);
        }
        // A closed connection may be a process that died, or one that dropped the call: only
        // a refused connection tells them apart. The first call after a broken connection may
        // fail with the old connection's error, before a new one is tried: ask a few times.
        for _ in 0..5 {
            match client.leader(LeaderRequest {}).await {
                Ok(_) => return Ok(false),
                Err(s) if refused(&s) => return Ok(true),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        Ok(false)
    }
}

pub(super) async fn write(leader: &mut Leader, request: &Request) -> Result<Written, ClusterError> {
    let reply = leader.client.write(encode(request)?).await;
    let (index, response) = decode(&leader.name, reply)?;
    Ok(Written { index, response })
}

pub(super) async fn renew(leader: &mut Leader, renewal: &Renewal) -> Result<u64, ClusterError> {
    let reply = leader.client.renew(encode(renewal)?).await;
    decode(&leader.name, reply)
}

fn encode<Q: Serialize>(request: &Q) -> Result<PeerPayload, ClusterError> {
    serde_json::to_vec(request)
        .map(|json| PeerPayload { json })
        .map_err(|e| ClusterError::Codec(format!("cannot encode the request: {e}")))
}

fn decode<A: DeserializeOwned>(
    leader: &str,
    reply: Result<tonic::Response<PeerPayload>, tonic::Status>,
) -> Result<A, ClusterError> {
    let reply = reply.map_err(|s| from_status(leader, s))?;
    serde_json::from_slice(&reply.into_inner().json)
        .map_err(|e| ClusterError::Codec(format!("the leader's reply does not decode: {e}")))
}

/// Whether the call failed because the peer's port refused the connection, which a live
/// process never does: a partitioned or slow one lets the call time out instead.
fn refused(s: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// What the leader's peer service answered, back as the error it stood for.
fn from_status(leader: &str, s: tonic::Status) -> ClusterError {
    use tonic::Code;
    if s.code() == Code::Unavailable && refused(&s) {
        return ClusterError::LeaderGone(leader.to_owned());
    }
    match s.code() {
        Code::PermissionDenied | Code::InvalidArgument | Code::FailedPrecondition => {
            ClusterError::Refused(s.message().to_owned())
        }
        _ => ClusterError::Leader {
            leader: leader.to_owned(),
            message: format!("{:?}: {}", s.code(), s.message()),
        },
    }
}

/// Who this node reaches, and how many voters it could lose before the cluster has no quorum.
fn member_gauges(members: &Members, up: &[(NodeId, bool)]) {
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    // Before init this node is in no membership; it reports no one, itself included.
    for (id, reached) in up.iter().filter(|(id, _)| members.get(*id).is_some()) {
        let name = members.name(*id);
        let role = match members.get(*id) {
            Some(n) if members.is_voter(*id) => n.role.as_str(),
            _ => "learner",
        };
        metrics::gauge!("fepha_member_up", "member" => name.clone()).set(flag(*reached));
        metrics::gauge!("fepha_member_info", "member" => name, "role" => role).set(1.0);
    }
    let voters: Vec<NodeId> = members.voters().collect();
    let reached = up
        .iter()
        .filter(|(id, on)| *on && voters.contains(id))
        .count();
    let quorum = voters.len() / 2 + 1;
    metrics::gauge!("fepha_cluster_fault_tolerance").set(reached as f64 - quorum as f64);
}
