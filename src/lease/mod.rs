//! RTU ownership leases: the leader's decisions (`plan`) and the owner's own deadline
//! (`clock`). The loops that renew sessions and run the plan on the leader come with
//! acquisition.

pub mod clock;
pub mod plan;

#[cfg(test)]
mod tests;
