//! One started connection's place in the replicated event stream: the last event taken,
//! which event each unacknowledged I frame finished, and how far the master has
//! acknowledged. No I/O.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub(crate) struct Stream {
    /// The last event sequence number sent or passed over (not mapped here).
    cursor: u64,
    /// Per sent, unacknowledged I frame in send order, the cursor once it was sent.
    inflight: VecDeque<u64>,
    acked: u64,
    /// The most events that may wait behind the cursor.
    queue: u64,
    dropped: u64,
}

impl Stream {
    /// A stream that goes on after event `acked`.
    pub(crate) fn new(acked: u64, queue: u32) -> Stream {
        Stream {
            cursor: acked,
            inflight: VecDeque::new(),
            acked,
            queue: u64::from(queue.max(1)),
            dropped: 0,
        }
    }

    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// Events dropped so far, because the queue bound was passed or the node no longer
    /// had them.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Moves the cursor over what can no longer be sent: events beyond the queue bound
    /// behind `head` (the newest event), and events older than `oldest` (the oldest the
    /// node keeps). Returns how many were dropped now.
    pub(crate) fn bound(&mut self, head: u64, oldest: Option<u64>) -> u64 {
        let mut to = self.cursor;
        if head.saturating_sub(to) > self.queue {
            to = head - self.queue;
        }
        if let Some(oldest) = oldest {
            to = to.max(oldest.saturating_sub(1));
        }
        let lost = to - self.cursor;
        self.cursor = to;
        self.dropped += lost;
        lost
    }

    /// Event `seq` was taken (sent in the next I frame, or passed over).
    pub(crate) fn take(&mut self, seq: u64) {
        self.cursor = self.cursor.max(seq);
    }

    /// An I frame went out; it finishes the events taken so far.
    pub(crate) fn sent(&mut self) {
        self.inflight.push_back(self.cursor);
    }

    /// The master acknowledged the oldest `n` I frames. Returns the new acknowledged
    /// position if it moved.
    pub(crate) fn acknowledged(&mut self, n: u16) -> Option<u64> {
        let before = self.acked;
        for _ in 0..n {
            match self.inflight.pop_front() {
                Some(at) => self.acked = self.acked.max(at),
                None => break,
            }
        }
        (self.acked > before).then_some(self.acked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_move_the_position_per_frame() {
        let mut s = Stream::new(10, 100);
        s.take(11);
        s.sent();
        // A confirmation in between carries no new event.
        s.sent();
        s.take(12);
        s.take(13);
        s.sent();
        assert_eq!(s.acknowledged(1), Some(11));
        assert_eq!(s.acknowledged(1), None);
        assert_eq!(s.acknowledged(5), Some(13));
        assert_eq!(s.cursor(), 13);
    }

    #[test]
    fn the_queue_bound_drops_the_oldest_and_counts_them() {
        let mut s = Stream::new(0, 100);
        assert_eq!(s.bound(150, Some(1)), 50);
        assert_eq!(s.cursor(), 50);
        // The node trimmed events the stream had not reached.
        assert_eq!(s.bound(150, Some(81)), 30);
        assert_eq!(s.cursor(), 80);
        assert_eq!(s.bound(150, Some(81)), 0);
        assert_eq!(s.dropped(), 80);
    }
}
