//! The handle every subsystem of a node uses for what it asks of the cluster: propose a
//! write (here when this node leads, forwarded to the leader otherwise), renew the node's
//! session, wait until the applied state says something, run a command to its outcome, read
//! the members, the applied site configuration and the clock.
//!
//! Domain types go in and out: a local proposal is handed to openraft as it is, and only a
//! forwarded one is serialised, for the peer service (`proto/peer.proto`). Nothing here knows
//! the operator's admin API.

mod command;
mod error;
mod forward;
mod members;
mod renewal;
mod trust;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub(crate) use command::{CommandOutcome, NewCommand};
pub(crate) use error::ClusterError;
pub(crate) use forward::PeerPool;
pub(crate) use members::Members;
pub(crate) use renewal::{Renewal, Renewals, Report, Reports};
pub(crate) use trust::NodeTrust;

use crate::ids::NodeId;
use crate::raft::{Raft, StateView};
use crate::site::{Site, Timers};
use crate::state::{Request, Response, SiteState};

/// Cheap to clone: every task holds one.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    raft: Raft,
    state: StateView,
    peers: PeerPool,
    renewals: Renewals,
    /// The applied site configuration, parsed once per version.
    site: Mutex<Option<(u64, Arc<Site>)>>,
    /// Present once this node has been removed from its cluster: it never campaigns again,
    /// also after a restart.
    retired_marker: PathBuf,
    /// When the Raft service last took a leader's AppendEntries.
    leader_heard: Arc<crate::raft::LeaderHeard>,
}

/// A write that the log took, with where.
#[derive(Debug, Clone)]
pub struct Written {
    pub index: u64,
    pub response: Response,
}

impl Cluster {
    pub fn new(
        id: NodeId,
        raft: Raft,
        state: StateView,
        peers: PeerPool,
        retired_marker: PathBuf,
        leader_heard: Arc<crate::raft::LeaderHeard>,
    ) -> Cluster {
        Cluster {
            inner: Arc::new(Inner {
                id,
                raft,
                state,
                peers,
                renewals: Renewals::default(),
                site: Mutex::new(None),
                retired_marker,
                leader_heard,
            }),
        }
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// openraft itself, for what only the Raft layer and membership changes do.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn state(&self) -> &StateView {
        &self.inner.state
    }

    /// Reads the applied state.
    pub fn read<R>(&self, f: impl FnOnce(&SiteState) -> R) -> R {
        self.inner.state.read(f)
    }

    /// The index of the last entry applied here.
    pub fn applied_index(&self) -> u64 {
        self.inner.state.last_applied().map_or(0, |l| l.index)
    }

    /// openraft's current metrics, copied out so that no borrow is held across an await.
    pub fn metrics(&self) -> openraft::RaftMetrics<NodeId, crate::ids::FephaNode> {
        self.inner.raft.metrics().borrow().clone()
    }

    /// The membership as this node has it.
    pub fn members(&self) -> Members {
        Members::new(self.inner.raft.metrics().borrow().membership_config.clone())
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.inner.id)
    }

    /// When this node, as leader, took each node's last session renewal.
    pub fn renewals(&self) -> &Renewals {
        &self.inner.renewals
    }

    pub(crate) fn peers(&self) -> &PeerPool {
        &self.inner.peers
    }

    /// Wall-clock milliseconds since the Unix epoch, as stamped into the log.
    pub fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// The applied site configuration, parsed once per version for every task and call that
    /// needs it. None before the first `config apply`.
    pub fn site(&self) -> Option<Arc<Site>> {
        let version = self.read(|s| s.config.as_ref().map(|c| c.version))?;
        let mut cache = self
            .inner
            .site
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((v, site)) = cache.as_ref()
            && *v == version
        {
            return Some(site.clone());
        }
        // Read again with the text: the version may have moved on meanwhile.
        let (version, text) =
            self.read(|s| s.config.as_ref().map(|c| (c.version, c.text.clone())))?;
        let site = Arc::new(crate::site::parse(&text).ok()?);
        *cache = Some((version, site.clone()));
        Some(site)
    }

    /// The applied configuration's timers, or the defaults before the first `config apply`.
    pub fn timers(&self) -> Timers {
        self.site()
            .map_or_else(Timers::default, |s| s.timers.clone())
    }

    pub fn is_retired(&self) -> bool {
        self.inner.retired_marker.exists()
    }

    /// Records that this node was removed from its cluster, and stops it campaigning.
    pub fn retire(&self) -> std::io::Result<()> {
        std::fs::write(&self.inner.retired_marker, b"removed from the cluster\n")?;
        self.inner.raft.runtime_config().elect(false);
        Ok(())
    }

    pub fn retired_marker(&self) -> &std::path::Path {
        &self.inner.retired_marker
    }

    /// How long ago the Raft service last took a leader's AppendEntries; None if never.
    pub fn leader_heard_ago(&self) -> Option<Duration> {
        self.inner.leader_heard.ago()
    }

    /// Waits until `check` gives a value, looking again at every change of openraft's metrics
    /// (each applied entry is one), until `deadline`. None if the deadline passes or raft stops.
    pub async fn wait_for<T>(
        &self,
        deadline: Instant,
        mut check: impl FnMut(&Cluster) -> Option<T>,
    ) -> Option<T> {
        let mut changes = self.inner.raft.metrics();
        loop {
            if let Some(v) = check(self) {
                return Some(v);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Whether the entry at `index` has been applied here by `deadline`.
    pub async fn wait_applied(&self, index: u64, deadline: Instant) -> bool {
        self.wait_for(deadline, |c| (c.applied_index() >= index).then_some(()))
            .await
            .is_some()
    }

    /// Proposes `request`: here if this node leads, else on the leader through the peer
    /// service. A write forwarded to a node that has just lost the leadership fails; the
    /// caller retries.
    pub async fn propose(&self, request: Request) -> Result<Written, ClusterError> {
        match self.route().await? {
            forward::Route::Local => self.propose_here(request).await,
            forward::Route::Leader(mut leader) => forward::write(&mut leader, &request).await,
        }
    }

    /// Proposes `request` to this node's own Raft, which must lead.
    pub async fn propose_here(&self, request: Request) -> Result<Written, ClusterError> {
        let started = Instant::now();
        let written = self
            .inner
            .raft
            .client_write(request)
            .await
            .map_err(ClusterError::from_write)?;
        metrics::histogram!("fepha_raft_proposal_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(Written {
            index: written.log_id.index,
            response: written.data,
        })
    }

    /// Whether this node has been initialised or has joined a cluster.
    pub async fn is_initialised(&self) -> Result<bool, ClusterError> {
        self.inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Stopped(e.to_string()))
    }
}
