//! A standby's idle connections: TCP to each endpoint, sending nothing of its own, to learn
//! what it could reach. Modbus and IEC 104 RTUs probe alike. A 104 probe never sends
//! STARTDT, so a device that serves one started master sees only the owner's; it does answer
//! the device's TESTFR act, as the standard has a stopped connection tested, or the device
//! would close it after its t1.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::link::{self, LinkError};

/// An endpoint by channel and position.
pub(crate) type Endpoint = (usize, usize);

/// TESTFR act and con, the only frames a 104 probe answers and sends.
const TESTFR_ACT: [u8; 6] = [0x68, 0x04, 0x43, 0x00, 0x00, 0x00];
const TESTFR_CON: [u8; 6] = [0x68, 0x04, 0x83, 0x00, 0x00, 0x00];

struct Idle {
    stream: TcpStream,
    /// Stayed open for a whole round.
    proven: bool,
    /// The last bytes read, so that a TESTFR act split across reads is still seen.
    tail: Vec<u8>,
}

#[derive(Default)]
pub(crate) struct Probes {
    /// Answer the device's TESTFR acts (IEC 104 RTUs).
    answer_testfr: bool,
    open: BTreeMap<Endpoint, Idle>,
    /// Connections being made, and to where.
    connecting: JoinSet<(Endpoint, Result<TcpStream, LinkError>)>,
    pending: BTreeSet<Endpoint>,
}

impl Probes {
    /// Probes of a 104 RTU: they answer TESTFR.
    pub(crate) fn iec104() -> Probes {
        Probes {
            answer_testfr: true,
            ..Probes::default()
        }
    }

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
                    let idle = Idle {
                        stream,
                        proven: false,
                        tail: Vec::new(),
                    };
                    self.open.insert(at, idle);
                }
                Err(_) => {
                    up.insert(at, false);
                }
            }
        }
        // A device that accepts and at once closes (full, or behind a failed gateway) is not
        // reachable: a connection counts only once it has stayed open for a round.
        let answer = self.answer_testfr;
        self.open.retain(|at, idle| {
            idle.proven = still_open(idle, answer);
            idle.proven && all.iter().any(|(a, _)| a == at)
        });
        for (at, endpoint) in all {
            match self.open.get(at).map(|i| i.proven) {
                Some(true) => {
                    up.insert(*at, true);
                }
                // Connected a moment ago: not known yet either way.
                Some(false) => {
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

/// Whether the device has not closed the idle connection; reads what it sent, and answers
/// its TESTFR acts if `answer`.
fn still_open(idle: &mut Idle, answer: bool) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match idle.stream.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                if !answer {
                    continue;
                }
                idle.tail
                    .extend_from_slice(buf.get(..n).unwrap_or_default());
                let acts = idle
                    .tail
                    .windows(TESTFR_ACT.len())
                    .filter(|w| *w == TESTFR_ACT)
                    .count();
                // Keep only what could be the start of a split act.
                let keep = idle.tail.len().min(TESTFR_ACT.len() - 1);
                idle.tail.drain(..idle.tail.len() - keep);
                for _ in 0..acts {
                    // A full send buffer on an idle connection: the device is gone anyway.
                    if idle.stream.try_write(&TESTFR_CON).is_err() {
                        return false;
                    }
                }
            }
            Err(e) => return e.kind() == std::io::ErrorKind::WouldBlock,
        }
    }
}
