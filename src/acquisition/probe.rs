//! A standby's idle connections: TCP to each endpoint, sending nothing, to learn what it
//! could reach. Modbus and IEC 104 RTUs probe alike (a 104 probe never sends STARTDT, so a
//! device that serves one started master sees only the owner's).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::link::{self, LinkError};

/// An endpoint by channel and position.
pub(crate) type Endpoint = (usize, usize);

#[derive(Default)]
pub(crate) struct Probes {
    /// Idle connections, and whether each has stayed open for a whole round.
    open: BTreeMap<Endpoint, (TcpStream, bool)>,
    /// Connections being made, and to where.
    connecting: JoinSet<(Endpoint, Result<TcpStream, LinkError>)>,
    pending: BTreeSet<Endpoint>,
}

impl Probes {
    pub(crate) fn clear(&mut self) {
        self.open.clear();
        self.connecting.abort_all();
        self.pending.clear();
    }

    /// The idle connection to `at` makes way for a real one.
    pub(crate) fn remove(&mut self, at: Endpoint) {
        self.open.remove(&at);
    }

    /// One round over `all` (the endpoints not in use by the owner's session): `up` learns
    /// what answered, and what is not known yet is left out of it.
    pub(crate) fn round(
        &mut self,
        all: &[(Endpoint, String)],
        timeout: Duration,
        source: Option<IpAddr>,
        up: &mut BTreeMap<Endpoint, bool>,
    ) {
        // Attempts run beside the rounds: an endpoint that swallows SYNs must not slow the
        // owner's polls down to its connect timeout.
        while let Some(done) = self.connecting.try_join_next() {
            let Ok((at, result)) = done else { continue };
            self.pending.remove(&at);
            match result {
                Ok(stream) => {
                    self.open.insert(at, (stream, false));
                }
                Err(_) => {
                    up.insert(at, false);
                }
            }
        }
        // A device that accepts and at once closes (full, or behind a failed gateway) is not
        // reachable: a connection counts only once it has stayed open for a round.
        self.open.retain(|at, (stream, proven)| {
            *proven = link::still_open(stream);
            *proven && all.iter().any(|(a, _)| a == at)
        });
        for (at, endpoint) in all {
            match self.open.get(at) {
                Some((_, true)) => {
                    up.insert(*at, true);
                }
                // Connected a moment ago: not known yet either way.
                Some((_, false)) => {
                    up.remove(at);
                }
                // Being retried: the last word stands.
                None if self.pending.contains(at) => {}
                None => {
                    let (at, endpoint) = (*at, endpoint.clone());
                    self.pending.insert(at);
                    self.connecting.spawn(async move {
                        (at, link::connect(&endpoint, source, timeout).await)
                    });
                }
            }
        }
    }
}
