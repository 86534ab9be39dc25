//! A harness that runs real `fepha` processes for the cluster tests and the benchmark.
//!
//! A [`Cluster`] owns a temporary directory, one node.toml, data dir and log file per node,
//! and the `fepha run` processes; dropping it kills them all. Each cluster gets its own
//! loopback block 127.X.Y.0/24 (or its own network namespaces), so clusters of tests that run
//! in parallel, in one test binary or several, never see each other.
//!
//! Every wait is a condition polled until a deadline; when one times out, the panic carries
//! every node's last observed status and the tail of its log.

mod binary;
mod client;
mod cluster;
pub mod field;
pub mod master;
mod net;
mod node;
pub mod prometheus;
mod proxy;
mod pydevice;
pub mod sim104;
pub mod sitegen;
mod stats;
mod status;
pub mod toggling;
mod trust;
mod wait;

pub use binary::{Profile, fepha_binary};
pub use client::{admin_client, apply_rpc, raw_channel, raw_unary, rpc_status, send_bytes};
pub use cluster::{CliOutput, Cluster, Options, WAIT, site_config};
pub use net::{LoopbackBlock, Namespaces};
pub use node::NodeProc;
pub use proxy::Proxy;
pub use pydevice::{DeviceLayout, PyDevice};
pub use stats::percentile;
pub use status::{Applied, ConfigShow, HistoryEntry, Member, Status, Warning};
pub use trust::{
    CertEntry, CertList, MemberId, PendingEntry, StatusIds, error_chain, labelled_metric,
    plaintext_channel,
};
pub use wait::{POLL, wait_until};
