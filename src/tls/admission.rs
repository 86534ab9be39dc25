//! What a listener lets a client hold before it knows who is calling: a slot for a TLS
//! handshake in flight (per source address and in all), and on the admin port a slot for a
//! connection without a certificate once its handshake is done. Over a cap the connection
//! is closed at once and counted, so that a flood costs the node a file descriptor for a
//! moment, never the accept loop or the backlog that members and operators wait in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One listener's caps and deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole ClientHello must have arrived by then; an idle socket is dropped.
    pub hello_timeout: Duration,
    /// The whole handshake, ClientHello included.
    pub handshake_timeout: Duration,
    /// Handshakes in flight from one source address.
    pub handshakes_per_address: usize,
    /// Handshakes in flight in all.
    pub handshakes: usize,
    /// Open connections without a certificate from one source address (admin port).
    pub anonymous_per_address: usize,
    /// Open connections without a certificate in all (admin port).
    pub anonymous: usize,
    /// A connection without a certificate that sends nothing for this long is closed.
    pub anonymous_idle: Duration,
}

impl Default for Limits {
    /// A member's or an operator's client sends its ClientHello with its first packet and
    /// finishes in milliseconds, and opens a handful of connections at once; a joining node
    /// one or two, and one request a second.
    fn default() -> Limits {
        Limits {
            hello_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            handshakes_per_address: 64,
            handshakes: 512,
            anonymous_per_address: 8,
            anonymous: 64,
            anonymous_idle: Duration::from_secs(10),
        }
    }
}

/// Why a connection was closed without being served: the `reason` of
/// `fepha_tls_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    HandshakesPerAddress,
    Handshakes,
    AnonymousPerAddress,
    Anonymous,
    AnonymousIdle,
}

impl Closed {
    /// In declaration order, which indexes [`Admission`]'s counters.
    pub(super) const ALL: [Closed; 5] = [
        Closed::HandshakesPerAddress,
        Closed::Handshakes,
        Closed::AnonymousPerAddress,
        Closed::Anonymous,
        Closed::AnonymousIdle,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Closed::HandshakesPerAddress => "handshakes_per_address",
            Closed::Handshakes => "handshakes",
            Closed::AnonymousPerAddress => "anonymous_per_address",
            Closed::Anonymous => "anonymous",
            Closed::AnonymousIdle => "anonymous_idle",
        }
    }

    fn counter(self, listener: &'static str) -> metrics::Counter {
        metrics::counter!("fepha_tls_connections_closed_total", "listener" => listener, "reason" => self.as_str())
    }
}

/// Slots taken, by source address and in all.
#[derive(Debug, Default)]
struct Counts {
    by_address: HashMap<IpAddr, usize>,
    total: usize,
}

impl Counts {
    fn take(&mut self, ip: IpAddr, per_address: usize, total: usize) -> Result<(), Which> {
        let mine = self.by_address.get(&ip).copied().unwrap_or(0);
        if mine >= per_address {
            return Err(Which::Address);
        }
        if self.total >= total {
            return Err(Which::Total);
        }
        self.by_address.insert(ip, mine + 1);
        self.total += 1;
        Ok(())
    }

    fn give(&mut self, ip: IpAddr) {
        if let Some(n) = self.by_address.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&ip);
            }
            self.total -= 1;
        }
    }
}

enum Which {
    Address,
    Total,
}

/// In the order of [`Admission`]'s gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Handshake = 0,
    Anonymous = 1,
    Certified = 2,
}

/// One listener's slots.
pub(super) struct Admission {
    pub(super) what: &'static str,
    pub(super) limits: Limits,
    handshakes: Mutex<Counts>,
    anonymous: Mutex<Counts>,
    /// The series, looked up once: a flood is counted without a lookup per connection.
    closed: [metrics::Counter; Closed::ALL.len()],
    gauges: [metrics::Gauge; 3],
    /// When the last warning about closed connections was logged (ms since `started`).
    warned_ms: AtomicU64,
    started: Instant,
}

/// How often a flood is worth a warning in the log; each connection is logged at debug.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Admission({}, {:?})", self.what, self.limits)
    }
}

impl Admission {
    pub(super) fn new(what: &'static str, limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            what,
            limits,
            handshakes: Mutex::default(),
            anonymous: Mutex::default(),
            closed: Closed::ALL.map(|why| why.counter(what)),
            gauges: [Kind::Handshake, Kind::Anonymous, Kind::Certified].map(|k| gauge(what, k)),
            warned_ms: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        })
    }

    /// A slot for one handshake from `ip`, or why there is none.
    pub(super) fn handshake(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Closed> {
        let taken = lock(&self.handshakes).take(
            ip,
            self.limits.handshakes_per_address,
            self.limits.handshakes,
        );
        match taken {
            Ok(()) => Ok(self.slot(ip, Kind::Handshake)),
            Err(Which::Address) => Err(self.refuse(ip, Closed::HandshakesPerAddress)),
            Err(Which::Total) => Err(self.refuse(ip, Closed::Handshakes)),
        }
    }

    /// A slot for an open connection: always for one with a certificate (the handshake has
    /// checked it), within the caps for one without.
    pub(super) fn open(self: &Arc<Self>, ip: IpAddr, certified: bool) -> Result<Slot, Closed> {
        if certified {
            return Ok(self.slot(ip, Kind::Certified));
        }
        let taken = lock(&self.anonymous).take(
            ip,
            self.limits.anonymous_per_address,
            self.limits.anonymous,
        );
        match taken {
            Ok(()) => Ok(self.slot(ip, Kind::Anonymous)),
            Err(Which::Address) => Err(self.refuse(ip, Closed::AnonymousPerAddress)),
            Err(Which::Total) => Err(self.refuse(ip, Closed::Anonymous)),
        }
    }

    fn gauge(&self, kind: Kind) -> &metrics::Gauge {
        &self.gauges[kind as usize]
    }

    fn slot(self: &Arc<Self>, ip: IpAddr, kind: Kind) -> Slot {
        self.gauge(kind).increment(1.0);
        Slot {
            admission: self.clone(),
            ip,
            kind,
        }
    }

    /// Counts and logs a closed connection; a warning at most every [`WARN_EVERY`].
    pub(super) fn refuse(&self, ip: IpAddr, why: Closed) -> Closed {
        self.closed[why as usize].increment(1);
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.warned_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                %ip, reason = why.as_str(),
                "{} listener: closing connections that pass its limits (see fepha_tls_connections_closed_total)",
                self.what
            );
        } else {
            tracing::debug!(%ip, reason = why.as_str(), "{} listener: connection closed", self.what);
        }
        why
    }
}

fn lock(counts: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    // A poisoned lock only means a panic elsewhere; the counts are intact.
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

fn gauge(listener: &'static str, kind: Kind) -> metrics::Gauge {
    match kind {
        Kind::Handshake => {
            metrics::gauge!("fepha_tls_handshakes_in_flight", "listener" => listener)
        }
        Kind::Anonymous => {
            metrics::gauge!("fepha_tls_connections_open", "listener" => listener, "client" => "none")
        }
        Kind::Certified => {
            metrics::gauge!("fepha_tls_connections_open", "listener" => listener, "client" => "certificate")
        }
    }
}

/// Registers this listener's series at zero, so that they exist before the first client.
pub fn register_listener(listener: &'static str, anonymous: bool) {
    gauge(listener, Kind::Handshake).set(0.0);
    gauge(listener, Kind::Certified).set(0.0);
    let mut reasons = vec![Closed::HandshakesPerAddress, Closed::Handshakes];
    if anonymous {
        gauge(listener, Kind::Anonymous).set(0.0);
        reasons = Closed::ALL.to_vec();
    }
    for why in reasons {
        why.counter(listener).increment(0);
    }
}

/// A taken slot; given back when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
    kind: Kind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.gauge(self.kind).decrement(1.0);
        match self.kind {
            Kind::Handshake => lock(&self.admission.handshakes).give(self.ip),
            Kind::Anonymous => lock(&self.admission.anonymous).give(self.ip),
            Kind::Certified => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            handshakes_per_address: 2,
            handshakes: 3,
            anonymous_per_address: 1,
            anonymous: 2,
            ..Limits::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn handshakes_are_capped_per_address_and_in_all_and_given_back() {
        let a = Admission::new("test", limits());
        let first = a.handshake(ip(1)).expect("first");
        let second = a.handshake(ip(1)).expect("second");
        assert_eq!(a.handshake(ip(1)).err(), Some(Closed::HandshakesPerAddress));
        let other = a.handshake(ip(2)).expect("another address");
        assert_eq!(a.handshake(ip(3)).err(), Some(Closed::Handshakes));
        drop(first);
        let again = a.handshake(ip(1)).expect("a slot given back is free again");
        drop((second, other, again));
        assert_eq!(lock(&a.handshakes).total, 0);
        assert!(lock(&a.handshakes).by_address.is_empty());
    }

    #[test]
    fn only_connections_without_a_certificate_are_capped() {
        let a = Admission::new("test", limits());
        let certified: Vec<Slot> = (0..10)
            .map(|_| a.open(ip(1), true).expect("certified"))
            .collect();
        let anon = a.open(ip(1), false).expect("first anonymous");
        assert_eq!(
            a.open(ip(1), false).err(),
            Some(Closed::AnonymousPerAddress)
        );
        let other = a.open(ip(2), false).expect("another address");
        assert_eq!(a.open(ip(3), false).err(), Some(Closed::Anonymous));
        drop((anon, other, certified));
        assert_eq!(lock(&a.anonymous).total, 0);
    }
}
