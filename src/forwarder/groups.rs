//! Which connection of each redundancy group is started on this node. Only the serving
//! node starts connections (see `gate`), so holding this per node keeps one started
//! connection per group cluster-wide.

use std::collections::HashMap;

use tokio::sync::mpsc;

use crate::site::Takeover;

/// Why a connection is told to close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kick {
    /// Another connection of its group was started.
    GroupMoved { to: u64 },
}

#[derive(Debug)]
struct Holder {
    conn: u64,
    kick: mpsc::UnboundedSender<Kick>,
}

#[derive(Debug, Default)]
pub(crate) struct Groups {
    started: HashMap<String, Holder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The connection holds the group now.
    Granted,
    /// Another connection has it: ask again once it is released.
    Wait,
}

impl Groups {
    /// A STARTDT on `conn`. Under `OnStart` the group's connection is told to close and
    /// `conn` waits until it has (so the two never send at once), then gets the group.
    pub(crate) fn claim(
        &mut self,
        group: &str,
        conn: u64,
        kick: &mpsc::UnboundedSender<Kick>,
        takeover: Takeover,
    ) -> Claim {
        if let Some(h) = self.started.get(group)
            && h.conn != conn
            && !h.kick.is_closed()
        {
            if takeover == Takeover::OnStart {
                let _ = h.kick.send(Kick::GroupMoved { to: conn });
            }
            return Claim::Wait;
        }
        self.started.insert(
            group.to_string(),
            Holder {
                conn,
                kick: kick.clone(),
            },
        );
        Claim::Granted
    }

    /// `conn` stopped or closed.
    pub(crate) fn release(&mut self, group: &str, conn: u64) {
        if self.started.get(group).is_some_and(|h| h.conn == conn) {
            self.started.remove(group);
        }
    }

    #[cfg(test)]
    fn holder(&self, group: &str) -> Option<u64> {
        self.started
            .get(group)
            .filter(|h| !h.kick.is_closed())
            .map(|h| h.conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_start_moves_the_group_and_kicks_the_old_holder() {
        let mut g = Groups::default();
        let (a, mut a_rx) = mpsc::unbounded_channel();
        let (b, _b_rx) = mpsc::unbounded_channel();
        assert_eq!(g.claim("m", 1, &a, Takeover::OnStart), Claim::Granted);
        // The new connection waits until the old one has gone.
        assert_eq!(g.claim("m", 2, &b, Takeover::OnStart), Claim::Wait);
        assert_eq!(a_rx.try_recv(), Ok(Kick::GroupMoved { to: 2 }));
        assert_eq!(g.holder("m"), Some(1));
        // Someone else's release does not free the group.
        g.release("m", 2);
        assert_eq!(g.holder("m"), Some(1));
        g.release("m", 1);
        assert_eq!(g.claim("m", 2, &b, Takeover::OnStart), Claim::Granted);
        assert_eq!(g.holder("m"), Some(2));
        g.release("m", 2);
        assert_eq!(g.holder("m"), None);
    }

    #[test]
    fn after_stop_keeps_the_first_until_it_goes() {
        let mut g = Groups::default();
        let (a, a_rx) = mpsc::unbounded_channel();
        let (b, _b_rx) = mpsc::unbounded_channel();
        assert_eq!(g.claim("m", 1, &a, Takeover::AfterStop), Claim::Granted);
        assert_eq!(g.claim("m", 2, &b, Takeover::AfterStop), Claim::Wait);
        // Another group is independent.
        assert_eq!(g.claim("n", 2, &b, Takeover::AfterStop), Claim::Granted);
        // A holder whose task has gone no longer blocks the group.
        drop(a_rx);
        assert_eq!(g.claim("m", 2, &b, Takeover::AfterStop), Claim::Granted);
    }
}
