//! Who may do field I/O with which RTU: node sessions, RTU leases with fencing epochs, and
//! what each node reports it can reach. Times in here are the proposing leader's, carried in
//! the commands, so that every node applies the same decisions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// A node's standing claim to its leases, renewed through the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Grows each time the node opens a new session (after an expiry or a restart), so that a
    /// renewal of an old session cannot revive it.
    pub number: u64,
    /// The leader's clock when it last took a renewal; informational (a new leader does not
    /// trust an old leader's clock, see `lease::plan`).
    pub renewed_at_ms: u64,
    /// The log index the node had applied when it sent its last renewal: once that is past a
    /// release, the node has seen that it lost the RTU.
    #[serde(default)]
    pub applied: u64,
    /// The log index of its last renewal: what it says about its RTUs is as of then.
    #[serde(default)]
    pub renewed_index: u64,
}

/// An RTU taken from a live owner (a hand-over or a move): nobody may have it until the old
/// owner has seen the release, or its session has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub from: NodeId,
    pub session: u64,
    /// The log index of the release.
    pub index: u64,
    /// Who gets it next, if the leader chose already.
    pub to: Option<NodeId>,
    /// The lease it ended, for the hand-over count and back-off.
    pub lease: Lease,
    /// An operator's move: it does not count as a hand-over.
    pub deliberate: bool,
}

/// One node's link state with one endpoint of one RTU channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub channel: String,
    pub endpoint: String,
    pub up: bool,
    /// The endpoint's position in its channel, from 0.
    #[serde(default)]
    pub index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: NodeId,
    /// The owner's session number when the lease was granted: the lease dies with it.
    pub session: u64,
    /// The fencing token: grows with every grant of this RTU, never reused.
    pub epoch: u64,
    pub granted_at_ms: u64,
    /// Hand-overs in a row; each waits twice as long as the one before (capped).
    pub handovers: u32,
    /// No new hand-over of this RTU before this time (leader's clock).
    pub backoff_until_ms: u64,
}

/// What a node says about one RTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reach {
    /// At least one endpoint answers.
    Reachable,
    /// Every channel failed for one full round.
    Unreachable,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ownership {
    pub sessions: BTreeMap<NodeId, Session>,
    /// By RTU id.
    pub leases: BTreeMap<String, Lease>,
    /// By RTU id, then node.
    pub reach: BTreeMap<String, BTreeMap<NodeId, Reach>>,
    /// The last epoch granted per RTU, kept when the lease is gone, so epochs never repeat.
    pub epochs: BTreeMap<String, u64>,
    /// By RTU id: released from a live owner, not yet granted again.
    #[serde(default)]
    pub released: BTreeMap<String, Released>,
    /// By RTU id, then node: each node's link state per channel and endpoint.
    #[serde(default)]
    pub links: BTreeMap<String, BTreeMap<NodeId, Vec<Link>>>,
    /// Node names as their renewals gave them.
    #[serde(default)]
    pub names: BTreeMap<NodeId, String>,
    /// Writes refused because their epoch was not the RTU's current one.
    pub stale_writes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OwnershipCommand {
    /// A node's renewal, with what it reaches. Opens a session if `number` is new.
    Renew {
        node: NodeId,
        number: u64,
        now_ms: u64,
        reach: Vec<(String, Reach)>,
        #[serde(default)]
        applied: u64,
        /// By RTU: the node's links, replacing what it said before.
        #[serde(default)]
        links: Vec<(String, Vec<Link>)>,
        /// The node's name, for the ids of its link points.
        #[serde(default)]
        name: String,
    },
    /// Take `rtu` from its live owner; `to` gets it once the owner has seen this.
    Release {
        rtu: String,
        epoch: u64,
        to: Option<NodeId>,
        deliberate: bool,
    },
    /// The leader saw no renewal for a TTL: the session and its leases end.
    Expire { node: NodeId, number: u64 },
    /// Give `rtu` to `node`; `epoch` must be one above the last epoch of the RTU. The leader
    /// decides the hand-over count and the back-off that follows from it.
    Grant {
        rtu: String,
        node: NodeId,
        epoch: u64,
        now_ms: u64,
        handovers: u32,
        backoff_ms: u64,
    },
    /// Forget RTUs that the site configuration no longer has.
    Drop { rtus: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OwnershipRefusal {
    #[error("session {number} of node {node} is not its current session")]
    OldSession { node: NodeId, number: u64 },
    #[error("epoch {given} is not the next epoch of RTU {rtu} (last was {last})")]
    BadEpoch { rtu: String, given: u64, last: u64 },
    #[error("node {0} has no session")]
    NoSession(NodeId),
    #[error("write under epoch {given} for RTU {rtu}, whose epoch is {current:?}")]
    StaleEpoch {
        rtu: String,
        given: u64,
        current: Option<u64>,
    },
}

impl Ownership {
    /// Applies `command`, found at log `index`.
    pub fn apply(
        &mut self,
        index: u64,
        command: &OwnershipCommand,
    ) -> Result<(), OwnershipRefusal> {
        match command {
            OwnershipCommand::Renew {
                node,
                number,
                now_ms,
                reach,
                applied,
                links,
                name,
            } => {
                match self.sessions.get(node) {
                    Some(s) if s.number > *number => {
                        return Err(OwnershipRefusal::OldSession {
                            node: *node,
                            number: *number,
                        });
                    }
                    Some(s) if s.number < *number => self.end_session(*node),
                    _ => {}
                }
                self.sessions.insert(
                    *node,
                    Session {
                        number: *number,
                        renewed_at_ms: *now_ms,
                        applied: *applied,
                        renewed_index: index,
                    },
                );
                for (rtu, r) in reach {
                    self.reach.entry(rtu.clone()).or_default().insert(*node, *r);
                }
                if !name.is_empty() {
                    self.names.insert(*node, name.clone());
                }
                for (rtu, l) in links {
                    self.links
                        .entry(rtu.clone())
                        .or_default()
                        .insert(*node, l.clone());
                }
                Ok(())
            }
            OwnershipCommand::Release {
                rtu,
                epoch,
                to,
                deliberate,
            } => {
                let current = self.leases.get(rtu).map(|l| l.epoch);
                if current != Some(*epoch) {
                    return Err(OwnershipRefusal::StaleEpoch {
                        rtu: rtu.clone(),
                        given: *epoch,
                        current,
                    });
                }
                if let Some(lease) = self.leases.remove(rtu) {
                    self.released.insert(
                        rtu.clone(),
                        Released {
                            from: lease.owner,
                            session: lease.session,
                            index,
                            to: *to,
                            lease,
                            deliberate: *deliberate,
                        },
                    );
                }
                Ok(())
            }
            OwnershipCommand::Expire { node, number } => match self.sessions.get(node) {
                Some(s) if s.number == *number => {
                    self.end_session(*node);
                    Ok(())
                }
                _ => Err(OwnershipRefusal::OldSession {
                    node: *node,
                    number: *number,
                }),
            },
            OwnershipCommand::Grant {
                rtu,
                node,
                epoch,
                now_ms,
                handovers,
                backoff_ms,
            } => {
                let session = self
                    .sessions
                    .get(node)
                    .ok_or(OwnershipRefusal::NoSession(*node))?
                    .number;
                let last = self.epochs.get(rtu).copied().unwrap_or(0);
                if *epoch != last + 1 {
                    return Err(OwnershipRefusal::BadEpoch {
                        rtu: rtu.clone(),
                        given: *epoch,
                        last,
                    });
                }
                self.epochs.insert(rtu.clone(), *epoch);
                self.released.remove(rtu);
                self.leases.insert(
                    rtu.clone(),
                    Lease {
                        owner: *node,
                        session,
                        epoch: *epoch,
                        granted_at_ms: *now_ms,
                        handovers: *handovers,
                        backoff_until_ms: now_ms.saturating_add(*backoff_ms),
                    },
                );
                Ok(())
            }
            OwnershipCommand::Drop { rtus } => {
                for rtu in rtus {
                    self.leases.remove(rtu);
                    self.reach.remove(rtu);
                    self.released.remove(rtu);
                    self.links.remove(rtu);
                }
                Ok(())
            }
        }
    }

    /// The check every write from an owner goes through: only the RTU's current epoch may
    /// write, whatever the writer's clock says. Refusals are counted.
    pub fn fence(&mut self, rtu: &str, epoch: u64) -> Result<(), OwnershipRefusal> {
        let current = self.leases.get(rtu).map(|l| l.epoch);
        if current == Some(epoch) {
            Ok(())
        } else {
            self.stale_writes += 1;
            Err(OwnershipRefusal::StaleEpoch {
                rtu: rtu.to_owned(),
                given: epoch,
                current,
            })
        }
    }

    /// The epoch of every RTU that has an owner now.
    pub fn epochs_owned(&self) -> BTreeMap<String, u64> {
        self.leases
            .iter()
            .map(|(rtu, l)| (rtu.clone(), l.epoch))
            .collect()
    }

    /// Whether a released RTU may be granted again: its old owner has applied the release,
    /// or its session is over.
    pub fn release_seen(&self, rtu: &str) -> bool {
        self.released.get(rtu).is_none_or(|r| {
            self.sessions
                .get(&r.from)
                .is_none_or(|s| s.number != r.session || s.applied >= r.index)
        })
    }

    /// RTUs owned by `node` now.
    pub fn owned_by(&self, node: NodeId) -> impl Iterator<Item = (&String, &Lease)> {
        self.leases.iter().filter(move |(_, l)| l.owner == node)
    }

    fn end_session(&mut self, node: NodeId) {
        self.sessions.remove(&node);
        // The leases go, the epochs stay: the next grant of each RTU fences the old owner out.
        self.leases.retain(|_, l| l.owner != node);
        for by_node in self.reach.values_mut() {
            by_node.remove(&node);
        }
        for by_node in self.links.values_mut() {
            by_node.remove(&node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renew(node: NodeId, number: u64, reach: &[(&str, Reach)]) -> OwnershipCommand {
        OwnershipCommand::Renew {
            node,
            number,
            now_ms: 0,
            reach: reach.iter().map(|(r, x)| (r.to_string(), *x)).collect(),
            applied: 0,
            links: Vec::new(),
            name: String::new(),
        }
    }

    fn grant(rtu: &str, node: NodeId, epoch: u64) -> OwnershipCommand {
        OwnershipCommand::Grant {
            rtu: rtu.into(),
            node,
            epoch,
            now_ms: 10,
            handovers: u32::try_from(epoch - 1).unwrap_or(0),
            backoff_ms: 100,
        }
    }

    #[test]
    fn epochs_grow_with_every_grant_and_fence_old_owners() {
        let mut o = Ownership::default();
        assert_eq!(
            o.apply(1, &renew(1, 1, &[("rtu", Reach::Reachable)])),
            Ok(())
        );
        assert_eq!(o.apply(1, &renew(3, 1, &[])), Ok(()));
        assert_eq!(o.apply(1, &grant("rtu", 1, 1)), Ok(()));
        assert_eq!(o.fence("rtu", 1), Ok(()));
        // Node 1's session expires; node 3 gets the RTU under epoch 2.
        assert_eq!(
            o.apply(1, &OwnershipCommand::Expire { node: 1, number: 1 }),
            Ok(())
        );
        assert!(o.leases.is_empty());
        assert!(matches!(
            o.apply(1, &grant("rtu", 3, 1)),
            Err(OwnershipRefusal::BadEpoch { .. })
        ));
        assert_eq!(o.apply(1, &grant("rtu", 3, 2)), Ok(()));
        assert_eq!(o.leases["rtu"].handovers, 1);
        // The deposed owner's late write is refused and counted.
        assert!(o.fence("rtu", 1).is_err());
        assert_eq!(o.fence("rtu", 2), Ok(()));
        assert_eq!(o.stale_writes, 1);
    }

    #[test]
    fn a_new_session_ends_the_old_one_and_an_old_renewal_is_refused() {
        let mut o = Ownership::default();
        assert_eq!(o.apply(1, &renew(1, 1, &[])), Ok(()));
        assert_eq!(o.apply(1, &grant("rtu", 1, 1)), Ok(()));
        // The node restarted: its new session does not inherit the old leases.
        assert_eq!(o.apply(1, &renew(1, 2, &[])), Ok(()));
        assert!(o.leases.is_empty());
        assert!(matches!(
            o.apply(1, &renew(1, 1, &[])),
            Err(OwnershipRefusal::OldSession { .. })
        ));
        assert!(matches!(
            o.apply(1, &OwnershipCommand::Expire { node: 1, number: 1 }),
            Err(OwnershipRefusal::OldSession { .. })
        ));
        assert!(matches!(
            o.apply(1, &grant("rtu", 9, 2)),
            Err(OwnershipRefusal::NoSession(9))
        ));
    }
}
