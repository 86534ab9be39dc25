//! The small types every layer names: a node's id and what the membership records about it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Role;

pub type NodeId = u64;

/// What the membership records about each node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FephaNode {
    pub name: String,
    pub raft_addr: String,
    pub admin_addr: String,
    pub role: Role,
    /// SHA-256 of the node's certificate.
    pub fingerprint: String,
}

impl fmt::Display for FephaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, raft {})", self.name, self.role, self.raft_addr)
    }
}
