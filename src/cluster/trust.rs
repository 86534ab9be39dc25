//! Whom this node trusts right now: itself, the replicated trust list, and, until it has been
//! let into a cluster, the fingerprints pinned from the token (or the peer) it joins with.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{PoisonError, RwLock};

use crate::raft::StateView;
use crate::tls::{Fingerprint, PeerRole, TrustStore};

pub struct NodeTrust {
    own: Fingerprint,
    state: StateView,
    pinned: RwLock<BTreeSet<Fingerprint>>,
    /// The pins survive a restart in the middle of a join.
    pin_file: PathBuf,
}

impl std::fmt::Debug for NodeTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeTrust({})", self.own)
    }
}

impl NodeTrust {
    pub fn new(own: Fingerprint, state: StateView, pin_file: PathBuf) -> NodeTrust {
        // A damaged pin file only costs a join that has to be started again.
        let pinned = std::fs::read_to_string(&pin_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        NodeTrust {
            own,
            state,
            pinned: RwLock::new(pinned),
            pin_file,
        }
    }

    pub fn own(&self) -> &Fingerprint {
        &self.own
    }

    /// Trusts `fingerprints` as nodes until the replicated trust list takes over.
    pub fn pin(&self, fingerprints: impl IntoIterator<Item = Fingerprint>) -> std::io::Result<()> {
        let mut pinned = self.pinned.write().unwrap_or_else(PoisonError::into_inner);
        pinned.extend(fingerprints);
        let text: String = pinned.iter().map(|f| format!("{f}\n")).collect();
        std::fs::write(&self.pin_file, text)
    }

    /// Whether the replicated trust list has reached this node and lets it in.
    pub fn admitted(&self) -> bool {
        self.state.read(|s| s.trust.entries.contains_key(&self.own))
    }
}

impl TrustStore for NodeTrust {
    fn role_of(&self, fingerprint: &Fingerprint) -> Option<PeerRole> {
        if *fingerprint == self.own {
            return Some(PeerRole::Node);
        }
        let (role, admitted) = self.state.read(|s| {
            (
                s.trust.role_of(fingerprint),
                s.trust.entries.contains_key(&self.own),
            )
        });
        if role.is_some() || admitted {
            return role;
        }
        let pinned = self.pinned.read().unwrap_or_else(PoisonError::into_inner);
        pinned.contains(fingerprint).then_some(PeerRole::Node)
    }
}
