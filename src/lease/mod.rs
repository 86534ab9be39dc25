//! RTU ownership leases: the leader's decisions (`plan`) and its loop (`leader`), every node's
//! session renewals (`session`) and the owner's own deadline (`clock`).

pub mod clock;
pub mod leader;
pub mod plan;
pub mod session;

#[cfg(test)]
mod tests;
