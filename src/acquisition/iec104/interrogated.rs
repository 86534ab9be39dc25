//! Indication changes that only an interrogation showed, held back for a moment.
//!
//! A device answers an interrogation before the spontaneous reports still in its queue
//! (lib60870 sends answers from a queue of higher priority). A change the device has queued
//! but not sent yet is then in the interrogation's answer first, without its time tag, and
//! its spontaneous report, with the device's time tag, follows. Reported at once, both
//! would be events upstream, and the operator would see one switching twice. So such a
//! change updates the point's value at once but waits `GRACE` for its event: a spontaneous
//! report of the point in that time carries the change itself, with the right time, and the
//! interrogation's event is dropped; otherwise (a device that queues nothing, or a change
//! made while no master listened) the interrogation's event goes out, late by `GRACE` and
//! stamped when the answer came.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::state::points::{Change, Quality, Value};

/// Long enough for a device's queue of unsent reports to follow its interrogation answer
/// on a loaded link (a take-over: the whole backlog comes after the answer).
pub(super) const GRACE: Duration = Duration::from_secs(2);

struct Held {
    value: Value,
    quality: Quality,
    time_ms: u64,
    due: Instant,
}

#[derive(Default)]
pub(super) struct Interrogated {
    held: HashMap<String, Held>,
}

impl Interrogated {
    /// An interrogation showed `point` changed to `value`; its event waits.
    pub(super) fn hold(
        &mut self,
        point: &str,
        now: Instant,
        value: Value,
        quality: Quality,
        time_ms: u64,
    ) {
        let due = now + GRACE;
        self.held.insert(
            point.to_owned(),
            Held {
                value,
                quality,
                time_ms,
                due,
            },
        );
    }

    /// A spontaneous report of `point` came: the device reports its changes itself.
    pub(super) fn reported(&mut self, point: &str) {
        self.held.remove(point);
    }

    pub(super) fn next_due(&self) -> Option<Instant> {
        self.held.values().map(|h| h.due).min()
    }

    /// The events whose wait is over at `now` (all of them with `all`, when the link is
    /// lost), for the points whose value is still the one the interrogation showed.
    pub(super) fn due(
        &mut self,
        now: Instant,
        all: bool,
        current: impl Fn(&str) -> Option<Value>,
    ) -> Vec<Change> {
        let ready: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| all || h.due <= now)
            .map(|(p, _)| p.clone())
            .collect();
        ready
            .into_iter()
            .filter_map(|point| {
                let h = self.held.remove(&point)?;
                (current(&point) == Some(h.value)).then_some(Change {
                    point,
                    value: h.value,
                    quality: h.quality,
                    time_ms: h.time_ms,
                    event: true,
                })
            })
            .collect()
    }

    pub(super) fn clear(&mut self) {
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_change_is_dropped_by_a_report_and_sent_after_the_grace_otherwise() {
        let mut i = Interrogated::default();
        let on = Value::Single(true);
        let t = Instant::now();
        i.hold("a", t, on, Quality::GOOD, 10);
        i.hold("b", t, on, Quality::GOOD, 11);
        i.hold("c", t, on, Quality::GOOD, 12);
        assert_eq!(i.next_due(), Some(t + GRACE));
        assert!(
            i.due(t + GRACE / 2, false, |_| Some(on)).is_empty(),
            "not yet"
        );
        i.reported("a");
        // c changed again since: its own report or interrogation speaks for it.
        let sent = i.due(t + GRACE, false, |p| Some(Value::Single(p != "c")));
        let points: Vec<(&str, u64, bool)> = sent
            .iter()
            .map(|c| (c.point.as_str(), c.time_ms, c.event))
            .collect();
        assert_eq!(points, vec![("b", 11, true)]);
        assert_eq!(i.next_due(), None);
    }

    #[test]
    fn a_lost_link_sends_every_held_change_at_once() {
        let mut i = Interrogated::default();
        let t = Instant::now();
        let off = Value::Single(false);
        i.hold("a", t, off, Quality::GOOD, 10);
        assert_eq!(i.due(t, true, |_| Some(off)).len(), 1);
        assert!(i.due(t, true, |_| Some(off)).is_empty());
    }
}
