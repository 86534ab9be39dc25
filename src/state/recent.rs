//! The newest reports of each IEC 104 RTU, kept apart from the event queue.
//!
//! A 104 device keeps the I frames its master has not acknowledged and sends them again to
//! the next master. An owner acknowledges only what is committed, so frames an owner had
//! committed but not yet acknowledged when it died come again to the node that takes over,
//! which must know them for what they are, not new changes. They are always among the RTU's
//! newest reports: the device sends nothing after them that was committed before them. So
//! per RTU the last `k` frames' worth is enough, and the event queue itself can be forgotten
//! once every master has it (see `SiteState::forget_acknowledged_events`), which bounds the
//! state by the site instead of its history.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::points::{Change, Value};

/// The most information objects one ASDU carries (the variable structure qualifier's 7 bits).
pub const OBJECTS_PER_ASDU: usize = 127;

/// One report as a taking-over owner compares it: point, device time tag, value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub point: String,
    pub time_ms: u64,
    pub value: Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Recent {
    /// Per 104 RTU of the configuration, how many reports to keep: its `k` (the frames a
    /// device may hold unacknowledged) times the most objects a frame carries.
    pub bound: BTreeMap<String, usize>,
    /// Per RTU, oldest first.
    pub by_rtu: BTreeMap<String, VecDeque<Report>>,
}

impl Recent {
    /// Takes the configuration's 104 RTUs and their `k`; the others' reports are dropped.
    pub fn configure(&mut self, k_by_rtu: BTreeMap<String, u16>) {
        self.bound = k_by_rtu
            .into_iter()
            .map(|(rtu, k)| (rtu, usize::from(k) * OBJECTS_PER_ASDU))
            .collect();
        let bound = &self.bound;
        self.by_rtu.retain(|rtu, _| bound.contains_key(rtu));
        for (rtu, kept) in &mut self.by_rtu {
            let max = bound.get(rtu).copied().unwrap_or(0);
            while kept.len() > max {
                kept.pop_front();
            }
        }
    }

    /// Notes the events of a batch that the fence let through, if its RTU speaks 104.
    pub fn note(&mut self, rtu: &str, changes: &[Change]) {
        let Some(&max) = self.bound.get(rtu) else {
            return;
        };
        let kept = self.by_rtu.entry(rtu.to_owned()).or_default();
        for c in changes.iter().filter(|c| c.event) {
            kept.push_back(Report {
                point: c.point.clone(),
                time_ms: c.time_ms,
                value: c.value,
            });
        }
        while kept.len() > max {
            kept.pop_front();
        }
    }

    /// The RTU's reports, oldest first.
    pub fn of(&self, rtu: &str) -> impl Iterator<Item = &Report> {
        self.by_rtu.get(rtu).into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::points::Quality;

    fn change(i: u64) -> Change {
        Change {
            point: format!("p{}", i % 3),
            value: Value::Counter(i as i64),
            quality: Quality::default(),
            time_ms: 1000 + i,
            event: !i.is_multiple_of(5),
        }
    }

    #[test]
    fn each_104_rtu_keeps_its_newest_k_frames_worth_of_events() {
        let mut r = Recent::default();
        r.configure(BTreeMap::from([("a".to_owned(), 2)]));
        let changes: Vec<Change> = (1..=400).map(change).collect();
        r.note("a", &changes);
        r.note("modbus", &changes);
        let kept: Vec<u64> = r.of("a").map(|x| x.time_ms - 1000).collect();
        assert_eq!(kept.len(), 2 * OBJECTS_PER_ASDU);
        assert_eq!(kept.last(), Some(&399), "no event at 400, a multiple of 5");
        assert!(
            kept.iter().all(|i| !i.is_multiple_of(5)),
            "only events are kept"
        );
        assert_eq!(r.of("modbus").count(), 0, "not a 104 RTU");
        r.configure(BTreeMap::from([("a".to_owned(), 1)]));
        assert_eq!(
            r.of("a").count(),
            OBJECTS_PER_ASDU,
            "a smaller k keeps fewer"
        );
        assert_eq!(r.of("a").last().map(|x| x.time_ms), Some(1399));
        r.configure(BTreeMap::new());
        assert!(
            r.by_rtu.is_empty(),
            "an RTU the site no longer has is forgotten"
        );
    }
}
