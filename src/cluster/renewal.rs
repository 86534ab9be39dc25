//! Session renewals: what a node says about its RTUs (its tasks' reports), the renewal it
//! sends, and the leader's record of when it took each one, on its own clock.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{Cluster, ClusterError, forward};
use crate::ids::NodeId;
use crate::state::Response;
use crate::state::ownership::{Link, OwnershipCommand, Reach};

/// Something per RTU id.
pub(super) type ByRtu<T> = Vec<(String, T)>;

/// One node's session renewal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Renewal {
    pub node: NodeId,
    /// The session's number: new with every process, so a restarted node never continues
    /// its old session.
    pub session: u64,
    /// By RTU, whether this node reaches it.
    pub reach: ByRtu<Reach>,
    /// By RTU, this node's links to it.
    pub links: ByRtu<Vec<Link>>,
    /// The node's applied index when it sent this: the leader grants a released RTU only
    /// once its old owner has applied the release.
    pub applied_index: u64,
}

/// What this node says about one RTU in its session renewals.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    pub reach: Option<Reach>,
    pub links: Vec<Link>,
}

/// Every RTU task's latest report; a change of reach wakes the session loop for an early
/// renewal, so that a failed owner is replaced without waiting for the next regular one.
#[derive(Debug, Default)]
pub(crate) struct Reports {
    by_rtu: Mutex<BTreeMap<String, Report>>,
    pub changed: Notify,
}

impl Reports {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Report>> {
        self.by_rtu.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set(&self, rtu: &str, report: Report) {
        let old = self.lock().insert(rtu.to_owned(), report.clone());
        if old.is_none_or(|o| o.reach != report.reach) {
            self.changed.notify_one();
        }
    }

    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|rtu, _| keep(rtu));
    }

    /// Reach and links by RTU, for a renewal.
    pub(crate) fn renewal(&self) -> (ByRtu<Reach>, ByRtu<Vec<Link>>) {
        let by_rtu = self.lock();
        let reach = by_rtu
            .iter()
            .filter_map(|(rtu, r)| r.reach.map(|reach| (rtu.clone(), reach)))
            .collect();
        let links = by_rtu
            .iter()
            .map(|(rtu, r)| (rtu.clone(), r.links.clone()))
            .collect();
        (reach, links)
    }
}

/// Two clocks of this node's own for every session: when it, as leader, took the node's last
/// renewal (forgotten when leadership ends), and when it applied that node's last renewal
/// (kept on every node, leader or not). A new leader counts a dead owner's TTL from the
/// second: never from an old leader's clock, and never from before the owner sent it.
#[derive(Debug, Default)]
pub struct Renewals {
    inner: Mutex<Clocks>,
}

#[derive(Debug, Default)]
struct Clocks {
    leading: bool,
    heard: BTreeMap<NodeId, Instant>,
    /// By node: the session number and log index of the last renewal applied, and when this
    /// node first saw it applied.
    applied: BTreeMap<NodeId, (u64, u64, Instant)>,
}

/// A session as applied: its node, number and last renewal's index.
pub(crate) type AppliedRenewal = (NodeId, u64, u64);

/// When each node was heard by this leader, and when its last renewal was applied here.
pub(crate) type RenewalTimes = (BTreeMap<NodeId, Instant>, BTreeMap<NodeId, Instant>);

impl Renewals {
    fn lock(&self) -> MutexGuard<'_, Clocks> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn heard(&self, node: NodeId) {
        let mut clocks = self.lock();
        if clocks.leading {
            clocks.heard.insert(node, Instant::now());
        }
    }

    /// The sessions as the applied state has them now. A renewal not seen before is stamped
    /// with the time of this call, which is after it was applied (later is the safe side).
    pub fn observe(&self, sessions: impl IntoIterator<Item = AppliedRenewal>) {
        let now = Instant::now();
        let mut clocks = self.lock();
        let mut seen = BTreeMap::new();
        for (node, number, index) in sessions {
            let at = match clocks.applied.get(&node) {
                Some(&(n, i, at)) if (n, i) == (number, index) => at,
                _ => now,
            };
            seen.insert(node, (number, index, at));
        }
        clocks.applied = seen;
    }

    /// While leading: when each node was heard, and when its last renewal was applied here.
    /// None otherwise.
    pub fn view(&self, leading: bool) -> Option<RenewalTimes> {
        let mut clocks = self.lock();
        if !leading {
            clocks.leading = false;
            clocks.heard.clear();
            return None;
        }
        clocks.leading = true;
        let applied = clocks
            .applied
            .iter()
            .map(|(node, (_, _, at))| (*node, *at))
            .collect();
        Some((clocks.heard.clone(), applied))
    }
}

impl Cluster {
    /// Renews this node's session through the leader. Returns the renewal's log index.
    pub async fn renew(&self, renewal: Renewal) -> Result<u64, ClusterError> {
        match self.route().await? {
            forward::Route::Local => self.renew_here(renewal).await,
            forward::Route::Leader(mut leader) => forward::renew(&mut leader, &renewal).await,
        }
    }

    /// Takes a renewal as leader: counted from its arrival here, on this leader's clock.
    pub async fn renew_here(&self, renewal: Renewal) -> Result<u64, ClusterError> {
        self.renewals().heard(renewal.node);
        let name = self
            .members()
            .get(renewal.node)
            .map(|n| n.name.clone())
            .unwrap_or_default();
        let command = OwnershipCommand::Renew {
            node: renewal.node,
            number: renewal.session,
            now_ms: Cluster::now_ms(),
            reach: renewal.reach,
            applied: renewal.applied_index,
            links: renewal.links,
            name,
        };
        let written = self
            .propose_here(crate::state::Request::Ownership(command))
            .await?;
        match written.response {
            Response::Ownership(Ok(())) => Ok(written.index),
            Response::Ownership(Err(refusal)) => Err(ClusterError::Refused(refusal.to_string())),
            other => Err(ClusterError::Codec(format!("unexpected reply {other:?}"))),
        }
    }
}
