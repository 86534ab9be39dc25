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

/// When this node, as leader, took each node's last renewal. Forgotten when leadership ends:
/// a new leadership starts from its own first moment (see `lease::plan::View`).
#[derive(Debug, Default)]
pub struct Renewals {
    inner: Mutex<(Option<Instant>, BTreeMap<NodeId, Instant>)>,
}

impl Renewals {
    fn heard(&self, node: NodeId) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.0.is_some() {
            inner.1.insert(node, Instant::now());
        }
    }

    /// While leading: since when, and when each node was heard. None otherwise.
    pub fn view(&self, leading: bool) -> Option<(Instant, BTreeMap<NodeId, Instant>)> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !leading {
            *inner = (None, BTreeMap::new());
            return None;
        }
        let since = *inner.0.get_or_insert_with(Instant::now);
        Some((since, inner.1.clone()))
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
