//! `rtu move`: an RTU handed over on purpose. The leader releases it for the target; its
//! lease loop grants it once the old owner has applied the release, and this waits for that
//! grant. Also what `rtu list` shows of every lease.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, ClusterError};
use crate::config::Role;
use crate::state::ownership::{OwnershipCommand, Reach};
use crate::state::{Request, Response};

/// How long a move waits for the old owner to let go and the target to get the lease.
const MOVE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum MoveError {
    #[error("no member named {0:?}")]
    NoSuchMember(String),
    #[error("{0} is a {1}; only voters own RTUs")]
    NotAVoter(String, Role),
    #[error("RTU {0:?} has no owner now (unknown, or being handed over)")]
    NoOwner(String),
    #[error("{0} has no live session")]
    NoSession(String),
    #[error("{to} does not report RTU {rtu} reachable ({why}); use --force to move it anyway")]
    NotReachable {
        to: String,
        rtu: String,
        why: &'static str,
    },
    #[error("{0}")]
    Refused(String),
    #[error("the RTU went to another node (the target lost its session)")]
    WentElsewhere,
    #[error("released, but the old owner has not let go yet; it will be granted when it does")]
    NotYet,
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Moves `rtu` to the member named `to`, on the leader. Returns the new epoch.
pub(crate) async fn move_rtu(
    cluster: &Cluster,
    rtu: &str,
    to: &str,
    force: bool,
) -> Result<u64, MoveError> {
    let members = cluster.members();
    let (target, info) = members
        .by_name(to)
        .ok_or_else(|| MoveError::NoSuchMember(to.to_owned()))?;
    if info.role != Role::Voter {
        return Err(MoveError::NotAVoter(to.to_owned(), info.role));
    }
    let ownership = cluster.read(|s| s.ownership.clone());
    let lease = ownership
        .leases
        .get(rtu)
        .ok_or_else(|| MoveError::NoOwner(rtu.to_owned()))?;
    if lease.owner == target {
        return Ok(lease.epoch);
    }
    if !ownership.sessions.contains_key(&target) {
        return Err(MoveError::NoSession(to.to_owned()));
    }
    let reach = ownership.reach.get(rtu).and_then(|r| r.get(&target));
    if !force && reach != Some(&Reach::Reachable) {
        return Err(MoveError::NotReachable {
            to: to.to_owned(),
            rtu: rtu.to_owned(),
            why: match reach {
                Some(_) => "it reports it unreachable",
                None => "it reports nothing",
            },
        });
    }
    let release = OwnershipCommand::Release {
        rtu: rtu.to_owned(),
        epoch: lease.epoch,
        to: Some(target),
        deliberate: true,
    };
    let written = cluster.propose_here(Request::Ownership(release)).await?;
    if let Response::Ownership(Err(refusal)) = written.response {
        return Err(MoveError::Refused(refusal.to_string()));
    }
    let granted = cluster
        .wait_for(Instant::now() + MOVE_WAIT, |c| {
            c.read(|s| s.ownership.leases.get(rtu).map(|l| (l.owner, l.epoch)))
        })
        .await;
    match granted {
        Some((owner, epoch)) if owner == target => Ok(epoch),
        Some(_) => Err(MoveError::WentElsewhere),
        None => Err(MoveError::NotYet),
    }
}

/// One RTU's lease as the leader sees it, for `rtu list`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LeaseView {
    pub rtu: String,
    /// Empty while nobody owns it.
    pub owner: String,
    pub epoch: u64,
    /// What is left of the owner's session by this leader's clock.
    pub left_ms: u64,
    pub reachable_from: Vec<String>,
    pub unreachable_from: Vec<String>,
    /// (node, channel, endpoint, up) of every node's link.
    pub links: Vec<(String, String, String, bool)>,
}

/// Every RTU of the applied configuration with its lease, on the leader.
pub(crate) fn leases(cluster: &Cluster) -> Vec<LeaseView> {
    let Some(site) = cluster.site() else {
        return Vec::new();
    };
    let ttl = *site.timers.session_ttl_ms.get_ref();
    let members = cluster.members();
    // As the lease loop counts it: the later of this leader's two clocks.
    let mut heard = BTreeMap::new();
    if let Some((taken, applied)) = cluster.renewals().view(true) {
        for (node, at) in taken.into_iter().chain(applied) {
            let t = heard.entry(node).or_insert(at);
            *t = (*t).max(at);
        }
    }
    let ownership = cluster.read(|s| s.ownership.clone());
    site.rtus
        .iter()
        .map(|r| {
            let id = r.id.get_ref();
            let lease = ownership.leases.get(id);
            let left_ms = lease.and_then(|l| heard.get(&l.owner)).map_or(0, |t| {
                ttl.saturating_sub(Instant::now().duration_since(*t).as_millis() as u64)
            });
            let reach = ownership.reach.get(id);
            let from = |want: Reach| -> Vec<String> {
                reach
                    .iter()
                    .flat_map(|r| r.iter())
                    .filter(|(_, r)| **r == want)
                    .map(|(n, _)| members.name(*n))
                    .collect()
            };
            let links = ownership
                .links
                .get(id)
                .iter()
                .flat_map(|by_node| by_node.iter())
                .flat_map(|(n, links)| {
                    let node = members.name(*n);
                    links
                        .iter()
                        .map(move |l| (node.clone(), l.channel.clone(), l.endpoint.clone(), l.up))
                })
                .collect();
            LeaseView {
                rtu: id.clone(),
                owner: lease.map(|l| members.name(l.owner)).unwrap_or_default(),
                epoch: lease.map_or(0, |l| l.epoch),
                left_ms,
                reachable_from: from(Reach::Reachable),
                unreachable_from: from(Reach::Unreachable),
                links,
            }
        })
        .collect()
}
