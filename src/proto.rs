//! Code generated from proto/ by build.rs, and what the services' replies promise beyond it.

/// The message of the UNAVAILABLE a node answers while the cluster has no leader; the CLI
/// retries on it, and shows it once it gives up waiting for an election.
pub const NO_LEADER: &str = "the cluster has no leader";

pub mod raft {
    tonic::include_proto!("fepha.raft");
}

pub mod admin {
    tonic::include_proto!("fepha.admin");
}

pub mod peer {
    tonic::include_proto!("fepha.peer");
}
