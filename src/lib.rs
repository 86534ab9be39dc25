//! fepha: a clustered front-end processor for power SCADA.
//!
//! A few `fepha run` nodes form a Raft group (openraft over gRPC, stored in sled) that holds
//! the site configuration and the membership; docs/architecture.md describes the layers.
//!
//! What other crates use (the command line, the codec, the generated protocol, the store's
//! types, TLS and the admin client for the cluster tests) is public; the rest is the node's
//! own, and `unreachable_pub` keeps it so.

#![warn(unreachable_pub)]

mod acquisition;
pub mod admin;
pub mod cli;
mod cluster;
pub mod config;
mod forwarder;
// The cargo-fuzz targets' bodies (fuzz/, docs/fuzzing.md); public only for the fuzz crate
// and the corpus replay test.
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub mod iec104;
mod lease;
pub mod metrics;
pub mod node;
mod peer;
pub mod proto;
pub mod raft;
mod shutdown;
mod sim;
mod site;
pub mod state;
pub mod tls;

/// The software version every node reports in its status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit fepha was built from (`unknown` outside a git checkout).
pub const COMMIT: &str = match option_env!("FEPHA_COMMIT") {
    Some(c) => c,
    None => "unknown",
};
