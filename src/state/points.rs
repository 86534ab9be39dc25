//! The replicated point image and event stream. Owners write batches of changes under their
//! lease epoch; the state machine fences each batch (see `Ownership::fence`), updates the
//! points and appends events with a cluster-wide sequence number.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::recent::Recent;
use crate::ids::NodeId;

/// Events kept for masters that reconnect; the oldest go first.
pub const EVENTS_KEPT: usize = 100_000;
/// Events older than this (by their time tag) are trimmed too.
pub const EVENT_MAX_AGE_MS: u64 = 24 * 3600 * 1000;

/// A point's value, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Single(bool),
    /// IEC 60870-5 double point: 0 intermediate, 1 off, 2 on, 3 indeterminate.
    Double(u8),
    /// Scaled to engineering units.
    Measured(f64),
    Counter(i64),
    /// IEC 60870-5 step position (a transformer tap, say): -64..=63, and whether the
    /// equipment is moving between steps.
    Step {
        value: i8,
        transient: bool,
    },
    /// IEC 60870-5 bitstring of 32 bits.
    Bits(u32),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Single(b) => write!(f, "{}", if *b { "on" } else { "off" }),
            Value::Double(0) => f.write_str("intermediate"),
            Value::Double(1) => f.write_str("off"),
            Value::Double(2) => f.write_str("on"),
            Value::Double(_) => f.write_str("indeterminate"),
            Value::Measured(v) => write!(f, "{v}"),
            Value::Counter(c) => write!(f, "{c}"),
            Value::Step {
                value,
                transient: false,
            } => write!(f, "step {value}"),
            Value::Step {
                value,
                transient: true,
            } => write!(f, "step {value} (moving)"),
            Value::Bits(b) => write!(f, "{b:#010x}"),
        }
    }
}

/// IEC 60870-5 quality bits: the first two fepha sets itself (a lost link makes a point
/// invalid and not topical); all of them are kept as a 104 device reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quality {
    /// IV: the value could not be acquired correctly (the link to the device is down).
    pub invalid: bool,
    /// NT: the value was not refreshed when it was due.
    pub not_topical: bool,
    /// SB: set by an operator or an automatic source at the device, not measured.
    #[serde(default, skip_serializing_if = "is_false")]
    pub substituted: bool,
    /// BL: the device blocks its transmission; it is the value from before blocking.
    #[serde(default, skip_serializing_if = "is_false")]
    pub blocked: bool,
    /// OV: the measurand overflowed its representation at the device.
    #[serde(default, skip_serializing_if = "is_false")]
    pub overflow: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Quality {
    pub const GOOD: Quality = Quality {
        invalid: false,
        not_topical: false,
        substituted: false,
        blocked: false,
        overflow: false,
    };
    pub const LINK_DOWN: Quality = Quality {
        invalid: true,
        not_topical: true,
        ..Quality::GOOD
    };
    pub const INVALID: Quality = Quality {
        invalid: true,
        ..Quality::GOOD
    };

    pub fn is_good(self) -> bool {
        self == Quality::GOOD
    }
}

/// One point's latest state as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointState {
    pub value: Value,
    pub quality: Quality,
    /// When the owner read it (its wall clock, ms since the epoch).
    pub time_ms: u64,
    pub epoch: u64,
    pub source: NodeId,
}

/// One change an owner saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub point: String,
    pub value: Value,
    pub quality: Quality,
    pub time_ms: u64,
    /// Whether the change must reach every master (change of state of an indication, or a
    /// measurement crossing its deadband).
    pub event: bool,
}

/// Changes of one RTU's points, written by its owner under one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub rtu: String,
    pub epoch: u64,
    pub node: NodeId,
    pub changes: Vec<Change>,
    /// The node's write that carries this batch (every batch of one entry has the same), so
    /// that an entry proposed again applies once; see [`Points::first_time`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<WriteId>,
}

/// One entry of point batches as its node's writer numbered it. A writer has one entry in
/// flight at a time and numbers them in order; `writer` is random per process, so a
/// restarted node (whose clock may have moved back) starts a numbering of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteId {
    pub writer: u64,
    pub n: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub point: String,
    pub value: Value,
    pub quality: Quality,
    pub time_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Points {
    pub points: BTreeMap<String, PointState>,
    /// Oldest first, sequence numbers without gaps.
    pub events: VecDeque<Event>,
    /// The sequence number the next event gets (the first is 1).
    pub next_seq: u64,
    /// The ids of the link-status points (see `links`).
    #[serde(default)]
    pub link_ids: std::collections::BTreeSet<String>,
    /// Per node, the last write of point batches applied.
    #[serde(default)]
    pub writes: BTreeMap<NodeId, WriteId>,
    /// The newest reports of each 104 RTU, which outlive the events masters have.
    #[serde(default)]
    pub recent: Recent,
}

impl Points {
    /// Whether an entry of point batches from `node` is new, noting it if so. An entry
    /// proposed again (its writer gave up waiting on a leader that went away, and that
    /// leader's entry survived into the next term) is not: its changes are in already.
    pub fn first_time(&mut self, node: NodeId, write: Option<WriteId>) -> bool {
        let Some(w) = write else { return true };
        match self.writes.get(&node) {
            Some(last) if last.writer == w.writer && last.n >= w.n => false,
            _ => {
                self.writes.insert(node, w);
                true
            }
        }
    }

    /// Applies an owner's batch that the fence let through. Returns how many events it added.
    pub fn apply(&mut self, batch: &Batch) -> u64 {
        if self.next_seq == 0 {
            self.next_seq = 1;
        }
        let mut added = 0;
        for c in &batch.changes {
            self.points.insert(
                c.point.clone(),
                PointState {
                    value: c.value,
                    quality: c.quality,
                    time_ms: c.time_ms,
                    epoch: batch.epoch,
                    source: batch.node,
                },
            );
            if c.event {
                self.events.push_back(Event {
                    seq: self.next_seq,
                    point: c.point.clone(),
                    value: c.value,
                    quality: c.quality,
                    time_ms: c.time_ms,
                });
                self.next_seq += 1;
                added += 1;
            }
        }
        self.recent.note(&batch.rtu, &batch.changes);
        self.trim(batch.changes.iter().map(|c| c.time_ms).max().unwrap_or(0));
        added
    }

    /// Forgets points that the site configuration no longer has (link points go with their
    /// RTU's leases, see `links`).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let links = &self.link_ids;
        self.points
            .retain(|id, _| keep(id) || links.contains(id.as_str()));
    }

    /// Forgets the events at or below `seq`, which every redundancy group has.
    pub fn forget_events_through(&mut self, seq: u64) {
        while self.events.front().is_some_and(|e| e.seq <= seq) {
            self.events.pop_front();
        }
    }

    /// Events after `seq`, at most `limit`.
    pub fn events_after(&self, seq: u64, limit: usize) -> impl Iterator<Item = &Event> {
        let first = self.events.front().map_or(0, |e| e.seq);
        let skip = seq.saturating_add(1).saturating_sub(first) as usize;
        self.events.iter().skip(skip).take(limit)
    }

    fn trim(&mut self, now_ms: u64) {
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
        let oldest = now_ms.saturating_sub(EVENT_MAX_AGE_MS);
        while self.events.front().is_some_and(|e| e.time_ms < oldest) {
            self.events.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(point: &str, v: f64, event: bool) -> Change {
        Change {
            point: point.into(),
            value: Value::Measured(v),
            quality: Quality::GOOD,
            time_ms: 1000,
            event,
        }
    }

    #[test]
    fn an_entry_proposed_again_is_seen_as_such() {
        let mut p = Points::default();
        let w = |writer, n| Some(WriteId { writer, n });
        assert!(p.first_time(7, w(1, 1)));
        assert!(!p.first_time(7, w(1, 1)), "the same entry again");
        assert!(p.first_time(7, w(1, 2)));
        assert!(
            !p.first_time(7, w(1, 1)),
            "an older entry of the same writer"
        );
        assert!(
            p.first_time(8, w(1, 1)),
            "another node's numbering is its own"
        );
        // A restarted node: a writer of its own, whatever its numbers.
        assert!(p.first_time(7, w(2, 1)));
        assert!(p.first_time(7, None), "unnumbered batches always apply");
    }

    #[test]
    fn events_are_numbered_without_gaps_and_read_after_a_sequence() {
        let mut p = Points::default();
        let batch = Batch {
            rtu: "r".into(),
            epoch: 3,
            node: 7,
            changes: vec![change("a", 1.0, true), change("b", 2.0, false)],
            write: None,
        };
        assert_eq!(p.apply(&batch), 1);
        assert_eq!(p.apply(&batch), 1);
        assert_eq!(p.points["a"].epoch, 3);
        assert_eq!(p.points["b"].value, Value::Measured(2.0));
        let seqs: Vec<u64> = p.events_after(0, 10).map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        let after: Vec<u64> = p.events_after(1, 10).map(|e| e.seq).collect();
        assert_eq!(after, vec![2]);
        assert_eq!(p.events_after(2, 10).count(), 0);
    }
}
