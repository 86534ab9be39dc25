//! The parameters of one IEC 104 connection (k, w, t1..t3), as the standard names them; the
//! controlled station of the forwarder and a controlling station use the same ones.

use std::time::Duration;

use thiserror::Error;

use super::SeqNo;

/// The protocol parameters of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkParams {
    /// The most sent I frames that may be unacknowledged.
    pub k: u16,
    /// Acknowledge at the latest after receiving this many I frames.
    pub w: u16,
    /// Time-out for the acknowledgement of a sent I frame or TESTFR act.
    pub t1: Duration,
    /// Acknowledge received I frames at the latest after this long.
    pub t2: Duration,
    /// Send a TESTFR act after this long without receiving anything.
    pub t3: Duration,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            k: 12,
            w: 8,
            t1: Duration::from_secs(15),
            t2: Duration::from_secs(10),
            t3: Duration::from_secs(20),
        }
    }
}

impl LinkParams {
    /// Checks k in 1..=32767, w in 1..=k and t2 < t1. The standard's advice w <= 2k/3 is
    /// not enforced.
    pub fn validate(&self) -> Result<(), ParamError> {
        if !(1..SeqNo::MODULUS).contains(&self.k) {
            return Err(ParamError::K(self.k));
        }
        if !(1..=self.k).contains(&self.w) {
            return Err(ParamError::W {
                w: self.w,
                k: self.k,
            });
        }
        if self.t2 >= self.t1 {
            return Err(ParamError::T2NotBelowT1 {
                t1: self.t1,
                t2: self.t2,
            });
        }
        Ok(())
    }
}

/// Why [`LinkParams`] were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParamError {
    #[error("k = {0} is outside 1..=32767")]
    K(u16),
    #[error("w = {w} is outside 1..=k (k = {k})")]
    W { w: u16, k: u16 },
    #[error("t2 ({t2:?}) must be shorter than t1 ({t1:?})")]
    T2NotBelowT1 { t1: Duration, t2: Duration },
}
