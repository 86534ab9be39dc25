//! Link-status points: for every node, channel and endpoint of an RTU a point that is on while
//! that node has a live link, and per RTU one that is on while any node has one. They are
//! ordinary points (with events on change), so a forwarder can map them to IOAs like the old
//! "virtual channel points". They follow the nodes' renewals; a node whose session ended
//! leaves its points invalid.

use std::collections::BTreeMap;

use super::ownership::Ownership;
use super::points::{Batch, Change, Points, Quality, Value};
use crate::ids::NodeId;

/// `<rtu>.link`: on while any node reaches the RTU.
pub fn combined_id(rtu: &str) -> String {
    format!("{rtu}.link")
}

/// `<rtu>.link.<node>.<channel>.<endpoint index>`.
pub fn endpoint_id(rtu: &str, node: &str, channel: &str, index: u32) -> String {
    format!("{rtu}.link.{node}.{channel}.{index}")
}

/// What the link points should say now: id → (up, reporting node).
fn wanted(o: &Ownership) -> BTreeMap<String, (bool, NodeId)> {
    let mut wanted = BTreeMap::new();
    for (rtu, by_node) in &o.links {
        let mut any = false;
        for (node, links) in by_node {
            let name = o
                .names
                .get(node)
                .cloned()
                .unwrap_or_else(|| node.to_string());
            for l in links {
                wanted.insert(endpoint_id(rtu, &name, &l.channel, l.index), (l.up, *node));
                any |= l.up;
            }
        }
        wanted.insert(combined_id(rtu), (any, 0));
    }
    wanted
}

impl Points {
    /// Brings the link points in line with the nodes' last reports; changes are events.
    pub fn sync_links(&mut self, o: &Ownership, now_ms: u64) {
        let wanted = wanted(o);
        let mut changes = Vec::new();
        for (id, (up, node)) in &wanted {
            let value = Value::Single(*up);
            let current = self.points.get(id);
            if current.is_none_or(|p| p.value != value || !p.quality.is_good()) {
                changes.push((*node, change(id, value, Quality::GOOD, now_ms)));
            }
        }
        let gone: Vec<String> = self
            .link_ids
            .iter()
            .filter(|id| !wanted.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            let rtu_left = !o
                .links
                .keys()
                .any(|rtu| id.starts_with(&format!("{rtu}.link")));
            if rtu_left {
                self.points.remove(&id);
                self.link_ids.remove(&id);
            } else if let Some(p) = self.points.get(&id)
                && p.quality != Quality::LINK_DOWN
            {
                changes.push((p.source, change(&id, p.value, Quality::LINK_DOWN, now_ms)));
            }
        }
        for (node, c) in changes {
            self.link_ids.insert(c.point.clone());
            let batch = Batch {
                rtu: String::new(),
                epoch: 0,
                node,
                changes: vec![c],
                write: None,
            };
            self.apply(&batch);
        }
    }
}

fn change(id: &str, value: Value, quality: Quality, now_ms: u64) -> Change {
    Change {
        point: id.to_owned(),
        value,
        quality,
        time_ms: now_ms,
        event: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ownership::{Link, OwnershipCommand};

    fn renew(node: NodeId, name: &str, up: bool) -> OwnershipCommand {
        OwnershipCommand::Renew {
            node,
            number: 1,
            now_ms: 5,
            reach: Vec::new(),
            applied: 0,
            links: vec![(
                "r".into(),
                vec![Link {
                    channel: "lan".into(),
                    endpoint: "127.0.0.1:502".into(),
                    up,
                    index: 0,
                }],
            )],
            name: name.into(),
        }
    }

    #[test]
    fn link_points_follow_the_reports_and_a_dead_node_leaves_them_invalid() {
        let mut o = Ownership::default();
        let mut p = Points::default();
        assert_eq!(o.apply(1, &renew(1, "fep1", true)), Ok(()));
        assert_eq!(o.apply(2, &renew(3, "fep2", false)), Ok(()));
        p.sync_links(&o, 5);
        assert_eq!(p.points["r.link"].value, Value::Single(true));
        assert_eq!(p.points["r.link.fep1.lan.0"].value, Value::Single(true));
        assert_eq!(p.points["r.link.fep2.lan.0"].value, Value::Single(false));
        assert_eq!(p.events.len(), 3);
        // Nothing changed: no new events.
        p.sync_links(&o, 6);
        assert_eq!(p.events.len(), 3);
        // fep1's session ends: its point goes invalid, the RTU's link goes down.
        assert_eq!(
            o.apply(3, &OwnershipCommand::Expire { node: 1, number: 1 }),
            Ok(())
        );
        p.sync_links(&o, 7);
        assert_eq!(p.points["r.link"].value, Value::Single(false));
        assert_eq!(p.points["r.link.fep1.lan.0"].quality, Quality::LINK_DOWN);
        // The RTU leaves the configuration: its link points go.
        assert_eq!(
            o.apply(
                4,
                &OwnershipCommand::Drop {
                    rtus: vec!["r".into()]
                }
            ),
            Ok(())
        );
        p.sync_links(&o, 8);
        assert!(p.points.is_empty(), "{:?}", p.points.keys());
    }
}
