//! The membership as one node has applied it, with the lookups every subsystem makes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::Role;
use crate::ids::{FephaNode, NodeId};

type Stored = openraft::StoredMembership<NodeId, FephaNode>;

/// A snapshot of the membership; cheap to take (openraft shares it).
#[derive(Debug, Clone)]
pub struct Members {
    stored: Arc<Stored>,
}

impl Members {
    pub(super) fn new(stored: Arc<Stored>) -> Members {
        Members { stored }
    }

    fn membership(&self) -> &openraft::Membership<NodeId, FephaNode> {
        self.stored.membership()
    }

    /// Whether a membership has been committed or is known at all (an uninitialised node has
    /// none).
    pub fn is_initialised(&self) -> bool {
        self.stored.log_id().is_some() || self.membership().nodes().count() > 0
    }

    pub fn get(&self, id: NodeId) -> Option<&FephaNode> {
        self.membership().get_node(&id)
    }

    /// The member's name, or its id when it is not (or no longer) a member.
    pub fn name(&self, id: NodeId) -> String {
        self.get(id)
            .map_or_else(|| id.to_string(), |n| n.name.clone())
    }

    pub fn by_name(&self, name: &str) -> Option<(NodeId, &FephaNode)> {
        self.nodes().find(|(_, n)| n.name == name)
    }

    pub fn by_fingerprint(&self, fingerprint: &str) -> Option<(NodeId, &FephaNode)> {
        self.nodes().find(|(_, n)| n.fingerprint == fingerprint)
    }

    /// Every member, learners included, by id.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &FephaNode)> {
        self.membership().nodes().map(|(id, n)| (*id, n))
    }

    /// The ids that vote (voter and witness members).
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.membership().voter_ids()
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters().any(|v| v == id)
    }

    /// Every member's role.
    pub fn roles(&self) -> BTreeMap<NodeId, Role> {
        self.nodes().map(|(id, n)| (id, n.role)).collect()
    }

    /// Every member's admin address.
    pub fn admin_addrs(&self) -> std::collections::BTreeSet<String> {
        self.nodes().map(|(_, n)| n.admin_addr.clone()).collect()
    }

    /// Every member's raft address.
    pub fn raft_addrs(&self) -> std::collections::BTreeSet<String> {
        self.nodes().map(|(_, n)| n.raft_addr.clone()).collect()
    }

    /// openraft's record, for the calls that change the membership.
    pub fn stored(&self) -> &Stored {
        &self.stored
    }
}
