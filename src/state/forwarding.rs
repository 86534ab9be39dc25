//! What the 104 forwarders keep in the log: per redundancy group, the newest event its
//! master has acknowledged, so that whichever node serves the group next resends from there;
//! and in mode `all`, where every node serves, which connection holds each group.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// A group's key: `forwarder/group`.
pub fn group_key(forwarder: &str, group: &str) -> String {
    format!("{forwarder}/{group}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardingOp {
    /// Acknowledged positions, in a batch; each only moves a group forward.
    Acked {
        node: NodeId,
        acks: Vec<(String, u64)>,
    },
    /// A STARTDT on `conn` of `node` (mode `all`). With `take` the group's connection is
    /// asked to let go and `conn` gets the group once it has (or its node's session ended).
    Claim {
        key: String,
        holder: Holder,
        take: bool,
    },
    /// The connection stopped or closed.
    Release { key: String, holder: Holder },
}

/// A started connection: its node and its number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub node: NodeId,
    pub conn: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarding {
    /// Per group key, the event sequence number up to which its master has acknowledged
    /// (every event at or below it was received or is not sent by that forwarder).
    pub acked: BTreeMap<String, u64>,
    /// Mode `all`: the connection that holds each group.
    #[serde(default)]
    pub holders: BTreeMap<String, Holder>,
    /// Mode `all`: the connection each group moves to once its holder lets go.
    #[serde(default)]
    pub next: BTreeMap<String, Holder>,
    /// The group keys the configuration has; None in a state from before they were kept,
    /// until the next configuration is applied.
    #[serde(default)]
    pub configured: Option<BTreeSet<String>>,
}

impl Forwarding {
    /// `live` says whether a node still has a session: a dead node's connection holds
    /// nothing.
    pub fn apply(&mut self, op: &ForwardingOp, live: impl Fn(NodeId) -> bool) {
        match op {
            ForwardingOp::Acked { acks, .. } => {
                for (key, seq) in acks {
                    let at = self.acked.entry(key.clone()).or_default();
                    // Two nodes' batches may arrive out of order after a failover: a
                    // position never goes back, so a master is never sent less than it has.
                    *at = (*at).max(*seq);
                }
            }
            ForwardingOp::Claim { key, holder, take } => match self.holders.get(key) {
                Some(h) if h != holder && live(h.node) => {
                    if *take {
                        self.next.insert(key.clone(), *holder);
                    }
                }
                _ => {
                    self.holders.insert(key.clone(), *holder);
                    self.next.remove(key);
                }
            },
            ForwardingOp::Release { key, holder } => {
                if self.next.get(key) == Some(holder) {
                    self.next.remove(key);
                }
                if self.holders.get(key) == Some(holder) {
                    self.holders.remove(key);
                    if let Some(next) = self.next.remove(key)
                        && live(next.node)
                    {
                        self.holders.insert(key.clone(), next);
                    }
                }
            }
        }
    }

    /// Takes the configuration's group keys, and drops the groups of forwarders (or
    /// groups) it no longer has.
    pub fn configure(&mut self, groups: BTreeSet<String>) {
        self.acked.retain(|k, _| groups.contains(k));
        self.holders.retain(|k, _| groups.contains(k));
        self.next.retain(|k, _| groups.contains(k));
        self.configured = Some(groups);
    }

    /// The newest event that every configured group has acknowledged: no master needs it,
    /// nor any before it, again. None while a configured group has no position yet: such a
    /// group starts at the newest event when its master first starts, but its position
    /// reaches the log only later, and the events between must still be there then. With
    /// no group at all every event is: a group added later starts at the newest.
    pub fn acknowledged_by_all(&self) -> Option<u64> {
        self.configured
            .as_ref()?
            .iter()
            .map(|k| self.acked.get(k).copied())
            .try_fold(u64::MAX, |min, at| Some(min.min(at?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_needed_until_every_configured_group_has_acknowledged_them() {
        let mut f = Forwarding::default();
        let (a, b) = (group_key("cc", "a"), group_key("cc", "b"));
        let ack = |key: &str, seq| ForwardingOp::Acked {
            node: 1,
            acks: vec![(key.to_string(), seq)],
        };
        f.apply(&ack(&a, 7), |_| true);
        assert_eq!(f.acknowledged_by_all(), None, "no configuration known");
        f.configure([a.clone(), b.clone()].into());
        assert_eq!(f.acknowledged_by_all(), None, "group b never started");
        f.apply(&ack(&b, 5), |_| true);
        assert_eq!(f.acknowledged_by_all(), Some(5));
        f.apply(&ack(&b, 9), |_| true);
        assert_eq!(f.acknowledged_by_all(), Some(7));
        f.configure([b.clone()].into());
        assert_eq!(f.acknowledged_by_all(), Some(9));
        assert!(!f.acked.contains_key(&a));
        f.configure(BTreeSet::new());
        assert_eq!(
            f.acknowledged_by_all(),
            Some(u64::MAX),
            "no master needs any"
        );
    }

    #[test]
    fn positions_only_move_forward() {
        let mut f = Forwarding::default();
        let key = group_key("cc", "main");
        f.apply(
            &ForwardingOp::Acked {
                node: 1,
                acks: vec![(key.clone(), 10)],
            },
            |_| true,
        );
        f.apply(
            &ForwardingOp::Acked {
                node: 2,
                acks: vec![(key.clone(), 7), (group_key("cc", "other"), 3)],
            },
            |_| true,
        );
        assert_eq!(f.acked.get(&key), Some(&10));
        assert_eq!(f.acked.get("cc/other"), Some(&3));
        f.configure([key.clone()].into());
        assert_eq!(f.acked.len(), 1);
    }

    fn claim(f: &mut Forwarding, node: NodeId, conn: u64, take: bool, live: &[NodeId]) {
        let op = ForwardingOp::Claim {
            key: "cc/m".into(),
            holder: Holder { node, conn },
            take,
        };
        f.apply(&op, |n| live.contains(&n));
    }

    fn release(f: &mut Forwarding, node: NodeId, conn: u64) {
        let op = ForwardingOp::Release {
            key: "cc/m".into(),
            holder: Holder { node, conn },
        };
        f.apply(&op, |_| true);
    }

    fn holder(f: &Forwarding) -> Option<(NodeId, u64)> {
        f.holders.get("cc/m").map(|h| (h.node, h.conn))
    }

    #[test]
    fn a_taking_claim_waits_for_the_holder_to_let_go() {
        let mut f = Forwarding::default();
        claim(&mut f, 1, 7, true, &[1, 2]);
        assert_eq!(holder(&f), Some((1, 7)));
        claim(&mut f, 2, 3, true, &[1, 2]);
        assert_eq!(holder(&f), Some((1, 7)));
        assert_eq!(f.next.get("cc/m"), Some(&Holder { node: 2, conn: 3 }));
        release(&mut f, 1, 7);
        assert_eq!(holder(&f), Some((2, 3)));
        assert!(f.next.is_empty());
    }

    #[test]
    fn after_stop_claims_wait_and_a_dead_holder_holds_nothing() {
        let mut f = Forwarding::default();
        claim(&mut f, 1, 7, false, &[1, 2]);
        claim(&mut f, 2, 3, false, &[1, 2]);
        assert_eq!(holder(&f), Some((1, 7)));
        assert!(f.next.is_empty());
        // Node 1's session ended: the next claim takes the group at once.
        claim(&mut f, 2, 3, false, &[2]);
        assert_eq!(holder(&f), Some((2, 3)));
        // A late release of the dead holder changes nothing.
        release(&mut f, 1, 7);
        assert_eq!(holder(&f), Some((2, 3)));
    }
}
