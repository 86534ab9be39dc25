//! RTU ownership leases: the leader's decisions (`plan`). The loops that renew sessions and
//! run the plan on the leader come with acquisition.

pub mod plan;

#[cfg(test)]
mod tests;
