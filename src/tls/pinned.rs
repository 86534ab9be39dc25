//! A fixed set of node fingerprints: what a CLI trusts when it dials a node.

use std::collections::BTreeSet;

use super::{Fingerprint, PeerRole, TrustStore};

#[derive(Debug, Clone, Default)]
pub struct PinnedNodes(pub BTreeSet<Fingerprint>);

impl TrustStore for PinnedNodes {
    fn role_of(&self, fingerprint: &Fingerprint) -> Option<PeerRole> {
        self.0.contains(fingerprint).then_some(PeerRole::Node)
    }
}
