//! The owner's own lease deadline. A node may do field I/O with its RTUs only until the time it
//! *sent* its last acknowledged renewal, plus the TTL, minus a margin for clock drift. The
//! leader counts expiry from when it *received* that renewal, or from when it *applied* it,
//! both later; so the owner always stops first, whatever the network did.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(crate) struct LeaseClock {
    ttl: Duration,
    drift: Duration,
    /// When the newest renewal that the cluster acknowledged was sent.
    acked_sent_at: Option<Instant>,
}

impl LeaseClock {
    pub(crate) fn new(ttl: Duration, drift: Duration) -> LeaseClock {
        LeaseClock {
            ttl,
            drift,
            acked_sent_at: None,
        }
    }

    /// The same clock with the timers of a newly applied site configuration.
    pub(crate) fn with_timers(&self, ttl: Duration, drift: Duration) -> LeaseClock {
        LeaseClock {
            ttl,
            drift,
            acked_sent_at: self.acked_sent_at,
        }
    }

    /// The renewal sent at `sent_at` was committed. Acknowledgements may arrive out of order;
    /// the deadline never moves back.
    pub(crate) fn acknowledged(&mut self, sent_at: Instant) {
        if self.acked_sent_at.is_none_or(|t| sent_at > t) {
            self.acked_sent_at = Some(sent_at);
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.acked_sent_at
            .map(|t| t + self.ttl.saturating_sub(self.drift))
    }

    /// Whether field I/O is allowed at `now`.
    pub(crate) fn valid_at(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now < d)
    }
}

/// This node's own lease clock, shared by the session loop that moves it and the tasks that
/// obey it (the RTU tasks, the forwarder in mode `all`).
#[derive(Debug)]
pub(crate) struct OwnLease {
    clock: Mutex<LeaseClock>,
}

impl Default for OwnLease {
    fn default() -> OwnLease {
        let t = crate::site::Timers::default();
        OwnLease {
            clock: Mutex::new(LeaseClock::new(
                Duration::from_millis(*t.session_ttl_ms.get_ref()),
                Duration::from_millis(*t.drift_margin_ms.get_ref()),
            )),
        }
    }
}

impl OwnLease {
    /// Whether this node may do field I/O now.
    pub(crate) fn valid(&self) -> bool {
        self.update(|c| c.valid_at(Instant::now()))
    }

    /// Changes the clock under its lock.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut LeaseClock) -> R) -> R {
        let mut clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_millis(1000);
    const DRIFT: Duration = Duration::from_millis(100);

    #[test]
    fn valid_from_the_send_time_of_the_last_acknowledged_renewal() {
        let t0 = Instant::now();
        let mut c = LeaseClock::new(TTL, DRIFT);
        assert!(!c.valid_at(t0), "nothing acknowledged yet");
        c.acknowledged(t0);
        assert_eq!(c.deadline(), Some(t0 + Duration::from_millis(900)));
        assert!(c.valid_at(t0 + Duration::from_millis(899)));
        assert!(!c.valid_at(t0 + Duration::from_millis(900)));
    }

    #[test]
    fn a_late_acknowledgement_of_an_older_renewal_does_not_move_the_deadline_back() {
        let t0 = Instant::now();
        let mut c = LeaseClock::new(TTL, DRIFT);
        c.acknowledged(t0 + Duration::from_millis(300));
        c.acknowledged(t0);
        assert_eq!(c.deadline(), Some(t0 + Duration::from_millis(1200)));
    }
}
