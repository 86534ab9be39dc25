//! How often clients without a certificate may call: a token bucket per source address and
//! one for all of them. A joining node asks about once a second; a client that asks much
//! faster is refused with RESOURCE_EXHAUSTED until its bucket refills, and every refusal
//! is counted by `fepha_admin_requests_total`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use tonic::Status;

#[derive(Debug, Clone, Copy)]
struct Rate {
    burst: f64,
    per_second: f64,
}

const PER_ADDRESS: Rate = Rate {
    burst: 10.0,
    per_second: 2.0,
};
const IN_ALL: Rate = Rate {
    burst: 50.0,
    per_second: 20.0,
};
/// Addresses remembered at once; a full bucket is as good as none, so those go first.
const MAX_ADDRESSES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = now;
    }
}

#[derive(Debug)]
pub(super) struct Throttle {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    in_all: Bucket,
    by_address: HashMap<IpAddr, Bucket>,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle {
            state: Mutex::new(State {
                in_all: Bucket::full(IN_ALL, Instant::now()),
                by_address: HashMap::new(),
            }),
        }
    }
}

impl Throttle {
    /// Takes one call's token for `ip`, or says why not.
    pub(super) fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Status> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { in_all, by_address } = &mut *state;
        if by_address.len() >= MAX_ADDRESSES && !by_address.contains_key(&ip) {
            by_address.retain(|_, b| {
                b.refill(PER_ADDRESS, now);
                b.tokens < PER_ADDRESS.burst
            });
        }
        if by_address.len() >= MAX_ADDRESSES && !by_address.contains_key(&ip) {
            return Err(busy());
        }
        let mine = by_address
            .entry(ip)
            .or_insert_with(|| Bucket::full(PER_ADDRESS, now));
        mine.refill(PER_ADDRESS, now);
        in_all.refill(IN_ALL, now);
        if mine.tokens < 1.0 {
            return Err(Status::resource_exhausted(format!(
                "too many requests without a certificate from {ip}: at most {} a second; try again in a moment",
                PER_ADDRESS.per_second
            )));
        }
        if in_all.tokens < 1.0 {
            return Err(busy());
        }
        mine.tokens -= 1.0;
        in_all.tokens -= 1.0;
        Ok(())
    }
}

fn busy() -> Status {
    Status::resource_exhausted(
        "too many requests without a certificate right now; try again in a moment",
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn one_address_gets_its_burst_then_its_rate() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..10 {
            assert!(t.admit(ip(1), now).is_ok());
        }
        let refused = t.admit(ip(1), now).expect_err("over the burst");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("from 127.0.0.1"), "{refused:?}");
        // Another address is not held up by the first.
        assert!(t.admit(ip(2), now).is_ok());
        // Half a second refills one token at two a second.
        let later = now + Duration::from_millis(500);
        assert!(t.admit(ip(1), later).is_ok());
        assert!(t.admit(ip(1), later).is_err());
    }

    #[test]
    fn many_addresses_together_meet_the_overall_rate() {
        let t = Throttle::default();
        let now = Instant::now();
        let admitted = (0..100u8).filter(|i| t.admit(ip(*i), now).is_ok()).count();
        assert_eq!(admitted, 50);
        let later = now + Duration::from_secs(1);
        let admitted = (100..200u8)
            .filter(|i| t.admit(ip(*i), later).is_ok())
            .count();
        assert_eq!(admitted, 20);
    }
}
