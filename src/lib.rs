//! fepha: a clustered front-end processor for power SCADA.
//!
//! A few `fepha run` nodes form a Raft group (openraft over gRPC, stored in sled) that holds
//! the site configuration and the membership; docs/architecture.md describes the layers.

pub mod acquisition;
pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod forwarder;
pub mod ids;
pub mod iec104;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod proto;
pub mod raft;
pub mod shutdown;
pub mod sim;
pub mod site;
pub mod state;
pub mod tls;

/// The software version every node reports in its status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
