//! RTU ownership leases: the leader's decisions (`plan`, pure) and its loop (`leader`), every
//! node's session renewals (`session`), the owner's own deadline (`clock`, pure), and the
//! deliberate hand-overs of `rtu move` (`handover`).

pub mod clock;
pub mod handover;
pub mod leader;
pub mod plan;
pub mod session;

#[cfg(test)]
mod tests;
