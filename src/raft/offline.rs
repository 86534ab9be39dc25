//! Restore and forced recovery, done on the store of a node that is stopped.
//!
//! openraft changes a membership only through a quorum, which a site that lost its other
//! boxes does not have. So both rebuild the store instead: the state to keep, changed by
//! `state::recovery`, becomes the store's snapshot with a fresh membership of this node alone,
//! at a log index past everything the old log held, and with a vote of a newer term. The log
//! is emptied. At its next start the node is the only voter, elects itself, and serves new
//! members that snapshot like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership, Vote};

use super::backup::Applied;
use super::{FephaNode, NodeId, TypeConfig};
use crate::state::SiteState;
use crate::state::recovery::{AuditRecord, RemovedMember};
use crate::state::trust::TrustEntry;

type Store = fepha_storage::Offline<TypeConfig, SiteState>;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(
        "the node's store {0} is in use: stop the node (`systemctl stop fepha`) and run this again"
    )]
    Running(String),
    #[error("cannot open the node's store: {0}")]
    Open(fepha_storage::OpenError),
    #[error(transparent)]
    Store(#[from] fepha_storage::OfflineError),
    #[error(
        "this node already holds a cluster's state; a restore needs a node that was never \
         initialised (an empty data dir)"
    )]
    NotEmpty,
    #[error("this node holds no cluster state: there is nothing to recover")]
    Empty,
    #[error("this node (id {0}) is not a voter of the cluster it holds: it cannot carry on alone")]
    NotAVoter(NodeId),
    #[error("this node is already the only member of its cluster")]
    Alone,
}

/// A stopped node's store. Fails while the node runs: sled locks its files.
pub fn open(raft_dir: &Path) -> Result<Store, RecoveryError> {
    Store::open(raft_dir).map_err(|e| {
        // sled says so in an `Other` I/O error; it has no kind of its own.
        if e.to_string().contains("could not acquire lock") {
            RecoveryError::Running(raft_dir.display().to_string())
        } else {
            RecoveryError::Open(e)
        }
    })
}

/// What a forced recovery would do, for the operator to confirm.
pub struct Plan {
    pub applied: Applied,
    pub committed: Option<LogId<NodeId>>,
    pub uncommitted: u64,
    /// The term of the node's vote: the new one must be newer.
    pub vote_term: u64,
    /// The members it removes, with the addresses to check that they are down.
    pub removed: Vec<(NodeId, FephaNode)>,
}

impl Plan {
    pub fn last_index(&self) -> u64 {
        self.applied.last_applied.as_ref().map_or(0, |l| l.index)
    }

    pub fn removed_members(&self) -> Vec<RemovedMember> {
        self.removed
            .iter()
            .map(|(id, n)| RemovedMember {
                id: *id,
                name: n.name.clone(),
                fingerprint: n.fingerprint.clone(),
            })
            .collect()
    }
}

/// Reads everything node `me` holds and who else is a member.
pub fn plan(store: &Store, me: NodeId) -> Result<Plan, RecoveryError> {
    if store.is_empty()? {
        return Err(RecoveryError::Empty);
    }
    let contents = store.read()?;
    let membership = contents.applied.membership.membership();
    if !membership.voter_ids().any(|v| v == me) {
        return Err(RecoveryError::NotAVoter(me));
    }
    let removed: Vec<(NodeId, FephaNode)> = membership
        .nodes()
        .filter(|(id, _)| **id != me)
        .map(|(id, n)| (*id, n.clone()))
        .collect();
    if removed.is_empty() {
        return Err(RecoveryError::Alone);
    }
    Ok(Plan {
        committed: contents.committed,
        uncommitted: contents.uncommitted,
        vote_term: contents.vote.map_or(0, |v| v.leader_id().term),
        applied: contents.applied,
        removed,
    })
}

/// Makes node `me` the only member of the state `plan` read, with `record` in the state.
pub fn recover(
    store: &Store,
    plan: Plan,
    me: (NodeId, FephaNode),
    record: AuditRecord,
) -> Result<(), RecoveryError> {
    let mut applied = plan.applied;
    applied.state.recovered(record);
    install(store, applied, plan.vote_term, me)
}

/// Starts a new cluster of node `me` alone from a saved state.
pub fn restore(
    store: &Store,
    mut applied: Applied,
    me: (NodeId, FephaNode),
    trust: TrustEntry,
    record: AuditRecord,
) -> Result<(), RecoveryError> {
    if !store.is_empty()? {
        return Err(RecoveryError::NotEmpty);
    }
    applied.state.restored(trust, record);
    install(store, applied, 0, me)
}

/// The state at one index past its last one, under a term newer than any the node saw, with
/// node `me` the only voter.
fn install(
    store: &Store,
    mut applied: Applied,
    vote_term: u64,
    (id, node): (NodeId, FephaNode),
) -> Result<(), RecoveryError> {
    let last = applied.last_applied.as_ref();
    let term = vote_term.max(last.map_or(0, |l| l.leader_id.term)) + 1;
    let index = last.map_or(0, |l| l.index) + 1;
    let log_id = LogId::new(CommittedLeaderId::new(term, id), index);
    let membership = Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, node)]));
    applied.membership = StoredMembership::new(Some(log_id), membership);
    applied.last_applied = Some(log_id);
    // Not committed: the node starts as a follower and elects itself, as after any restart.
    store.install(&Vote::new(term, id), &applied)?;
    Ok(())
}
