//! Why the cluster could not do what a subsystem asked. Every variant but `Refused` and
//! `Membership` is worth a retry once there is a leader again.

use openraft::error::{ClientWriteError, RaftError};

use crate::ids::{FephaNode, NodeId};

use crate::proto::NO_LEADER;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("this node is not part of a cluster yet")]
    NotInitialised,
    #[error("{NO_LEADER}")]
    NoLeader,
    /// A forwarded request reached a node that no longer leads.
    #[error("leadership is moving")]
    LeadershipMoving,
    #[error("leadership moved while proposing")]
    LeaderChanged,
    #[error("the membership change was refused: {0}")]
    Membership(String),
    #[error("raft has stopped: {0}")]
    Stopped(String),
    /// The leader's port refuses connections: its process is gone (see `Cluster::leader_gone`).
    #[error("leader {0} is gone: its port refuses connections")]
    LeaderGone(String),
    /// The leader could not be reached, or failed the call.
    #[error("leader {leader}: {message}")]
    Leader { leader: String, message: String },
    /// The leader refused the request itself (it is not this node's to make).
    #[error("{0}")]
    Refused(String),
    /// A reply that does not decode: a bug, or nodes of incompatible versions.
    #[error("{0}")]
    Codec(String),
}

/// How a gRPC service answers with it: anything a new leader would fix is UNAVAILABLE, which
/// the CLI and the nodes retry.
impl From<ClusterError> for tonic::Status {
    fn from(e: ClusterError) -> tonic::Status {
        match e {
            ClusterError::Membership(m) | ClusterError::Refused(m) => {
                tonic::Status::failed_precondition(m)
            }
            ClusterError::Codec(m) => tonic::Status::internal(m),
            ClusterError::NotInitialised => tonic::Status::failed_precondition(e.to_string()),
            other => tonic::Status::unavailable(other.to_string()),
        }
    }
}

impl ClusterError {
    pub(crate) fn from_write(e: RaftError<NodeId, ClientWriteError<NodeId, FephaNode>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                ClusterError::LeaderChanged
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                ClusterError::Membership(e.to_string())
            }
            RaftError::Fatal(e) => ClusterError::Stopped(e.to_string()),
        }
    }
}
