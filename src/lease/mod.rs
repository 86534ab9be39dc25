//! RTU ownership leases: the leader's decisions (`plan`, pure) and its loop (`leader`), every
//! node's session renewals (`session`), the owner's own deadline (`clock`, pure), and the
//! deliberate hand-overs of `rtu move` (`handover`).

pub(crate) mod clock;
pub(crate) mod handover;
pub(crate) mod leader;
pub(crate) mod plan;
pub(crate) mod session;

#[cfg(test)]
mod tests;
