//! The event queue: every spontaneous change, numbered, kept until a master acknowledges the
//! I frame that carried it, and sent again from the oldest on the next STARTDT.
//!
//! Within one session (the time between one STARTDT confirmation and the next, on whichever
//! connection) the queue is sent front to back, so the frames of a session carry strictly
//! increasing change numbers, and since a link acknowledges its frames in send order, an
//! acknowledgement always covers every queued change up to the highest one its frames
//! carried. That is what [`EventQueue::acknowledge`] takes.
//!
//! Pure: no clock, no I/O, so the resend rules are tested here without a socket.

use std::collections::VecDeque;

use crate::iec104::{Element, max_objects};

/// One spontaneous change.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Queued {
    /// The change number, 1, 2, 3, ... per device.
    pub change: u64,
    pub ioa: u32,
    /// The point's element as it was sent the first time (with its time tag, if the point's
    /// type has one), and as it is sent again.
    pub element: Element,
}

#[derive(Debug)]
pub(crate) struct EventQueue {
    capacity: usize,
    events: VecDeque<Queued>,
    /// The number the next change gets.
    next_change: u64,
    /// Changes sent in this session: every queued change up to this number went out.
    sent_through: u64,
    dropped: u64,
}

impl EventQueue {
    /// A queue that keeps at most `capacity` changes (at least one).
    pub(crate) fn new(capacity: usize) -> EventQueue {
        EventQueue {
            capacity: capacity.max(1),
            events: VecDeque::new(),
            next_change: 1,
            sent_through: 0,
            dropped: 0,
        }
    }

    /// Queues a change and returns its number, and the oldest change if the queue was full
    /// and dropped it.
    pub(crate) fn push(&mut self, ioa: u32, element: Element) -> (u64, Option<Queued>) {
        let change = self.next_change;
        self.next_change += 1;
        let dropped = if self.events.len() >= self.capacity {
            self.dropped += 1;
            self.events.pop_front()
        } else {
            None
        };
        self.events.push_back(Queued {
            change,
            ioa,
            element,
        });
        (change, dropped)
    }

    /// A new session starts (STARTDT confirmed): every change still queued is due again,
    /// oldest first. Returns how many that are.
    pub(crate) fn restart(&mut self) -> usize {
        self.sent_through = 0;
        self.events.len()
    }

    /// The changes not yet sent in this session, oldest first (change numbers increase
    /// along the queue, so they are its tail).
    fn due(&self) -> std::collections::vec_deque::Iter<'_, Queued> {
        let sent = self
            .events
            .partition_point(|e| e.change <= self.sent_through);
        self.events.range(sent..)
    }

    /// The number of the oldest change not yet sent in this session.
    pub(crate) fn first_due(&self) -> Option<u64> {
        self.due().next().map(|e| e.change)
    }

    /// The next changes to send in one ASDU, and marks them sent: the oldest due change and
    /// those right after it of the same type, as many as fit.
    pub(crate) fn take_batch(&mut self) -> Vec<Queued> {
        let mut due = self.due().peekable();
        let Some(type_id) = due.peek().map(|e| e.element.type_id()) else {
            return Vec::new();
        };
        let batch: Vec<Queued> = due
            .take_while(|e| e.element.type_id() == type_id)
            .take(max_objects(type_id, false))
            .cloned()
            .collect();
        if let Some(last) = batch.last() {
            self.sent_through = last.change;
        }
        batch
    }

    /// A master acknowledged frames that carried changes up to `through`: they, and every
    /// older change still queued, are done. Returns the numbers of those removed.
    pub(crate) fn acknowledge(&mut self, through: u64) -> Vec<u64> {
        let mut done = Vec::new();
        while let Some(front) = self.events.front() {
            if front.change > through {
                break;
            }
            done.push(front.change);
            self.events.pop_front();
        }
        done
    }

    /// Changes kept, unacknowledged.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// Changes dropped because the queue was full, since the start.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The type the next batch will have.
    #[cfg(test)]
    fn next_type(&self) -> Option<crate::iec104::TypeId> {
        self.due().next().map(|e| e.element.type_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iec104::{Quality, TypeId};

    fn single(value: bool) -> Element {
        Element::SinglePoint {
            value,
            quality: Quality::GOOD,
            time: None,
        }
    }

    fn float(value: f32) -> Element {
        Element::Float {
            value,
            quality: Quality::GOOD,
            time: None,
        }
    }

    fn changes(batch: &[Queued]) -> Vec<u64> {
        batch.iter().map(|e| e.change).collect()
    }

    #[test]
    fn numbers_batches_and_acknowledges_in_order() {
        let mut q = EventQueue::new(100);
        assert_eq!(q.push(1, single(true)).0, 1);
        assert_eq!(q.push(2, single(false)).0, 2);
        assert_eq!(q.push(3, float(1.0)).0, 3);
        assert_eq!(q.push(1, single(false)).0, 4);
        assert_eq!(q.first_due(), Some(1));
        assert_eq!(
            changes(&q.take_batch()),
            [1, 2],
            "a change of type ends a batch"
        );
        assert_eq!(q.next_type(), Some(TypeId::MMeNc1));
        assert_eq!(changes(&q.take_batch()), [3]);
        assert_eq!(changes(&q.take_batch()), [4]);
        assert!(q.take_batch().is_empty());
        assert_eq!(q.first_due(), None);
        assert_eq!(q.acknowledge(2), [1, 2]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.acknowledge(2), Vec::<u64>::new(), "nothing twice");
        assert_eq!(q.acknowledge(4), [3, 4]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_new_session_resends_the_unacknowledged_oldest_first() {
        let mut q = EventQueue::new(100);
        for i in 0..5 {
            q.push(1, single(i % 2 == 0));
        }
        assert_eq!(changes(&q.take_batch()), [1, 2, 3, 4, 5]);
        q.acknowledge(2);
        q.push(1, single(true));
        // The master went away without acknowledging 3..=5; the next STARTDT gets them again,
        // before the new change 6.
        assert_eq!(q.restart(), 4);
        assert_eq!(q.first_due(), Some(3));
        assert_eq!(changes(&q.take_batch()), [3, 4, 5, 6]);
        // A late acknowledgement from the old connection still counts.
        assert_eq!(q.acknowledge(4), [3, 4]);
        q.push(1, single(false));
        assert_eq!(changes(&q.take_batch()), [7], "5 and 6 are not due again");
    }

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let mut q = EventQueue::new(3);
        for i in 0..3 {
            assert!(q.push(1, single(i % 2 == 0)).1.is_none());
        }
        let (n, dropped) = q.push(1, single(true));
        assert_eq!(n, 4);
        assert_eq!(dropped.map(|d| d.change), Some(1));
        assert_eq!(q.dropped(), 1);
        assert_eq!(q.len(), 3);
        assert_eq!(changes(&q.take_batch()), [2, 3, 4]);
        // Sent but dropped before its acknowledgement: the acknowledgement removes what is
        // left and does not fail.
        q.push(1, single(false));
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.acknowledge(4), [3, 4]);
        assert_eq!(changes(&q.take_batch()), [5]);
    }

    #[test]
    fn a_batch_holds_at_most_one_asdu() {
        let mut q = EventQueue::new(1000);
        for _ in 0..300 {
            q.push(7, single(true));
        }
        let most = max_objects(TypeId::MSpNa1, false);
        assert_eq!(q.take_batch().len(), most);
        assert_eq!(q.first_due(), Some(most as u64 + 1));
    }
}
