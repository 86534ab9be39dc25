//! What the 104 forwarders keep in the log: per redundancy group, the newest event its
//! master has acknowledged, so that whichever node serves the group next resends from there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::raft::NodeId;

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
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarding {
    /// Per group key, the event sequence number up to which its master has acknowledged
    /// (every event at or below it was received or is not sent by that forwarder).
    pub acked: BTreeMap<String, u64>,
}

impl Forwarding {
    pub fn apply(&mut self, op: &ForwardingOp) {
        match op {
            ForwardingOp::Acked { acks, .. } => {
                for (key, seq) in acks {
                    let at = self.acked.entry(key.clone()).or_default();
                    // Two nodes' batches may arrive out of order after a failover: a
                    // position never goes back, so a master is never sent less than it has.
                    *at = (*at).max(*seq);
                }
            }
        }
    }

    /// Drops the groups of forwarders (or groups) the configuration no longer has.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.acked.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_only_move_forward() {
        let mut f = Forwarding::default();
        let key = group_key("cc", "main");
        f.apply(&ForwardingOp::Acked {
            node: 1,
            acks: vec![(key.clone(), 10)],
        });
        f.apply(&ForwardingOp::Acked {
            node: 2,
            acks: vec![(key.clone(), 7), (group_key("cc", "other"), 3)],
        });
        assert_eq!(f.acked.get(&key), Some(&10));
        assert_eq!(f.acked.get("cc/other"), Some(&3));
        f.retain(|k| k.starts_with("cc/main"));
        assert_eq!(f.acked.len(), 1);
    }
}
