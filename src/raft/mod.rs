//! openraft wiring: the type configuration, the gRPC transport in both directions, and the
//! openraft settings derived from node.toml. Everything openraft-specific stays in here so
//! that moving to openraft 0.10 touches this module and the storage crate only.

pub mod backup;
mod gauges;
mod leader_watch;
mod log_bound;
mod network;
pub mod offline;
mod quorum_watch;
mod service;
mod state_machine;

use std::io::Cursor;
use std::sync::Arc;

pub use gauges::watch_raft;
pub use leader_watch::campaign_when_the_leader_dies;
pub use log_bound::bound_the_log;
pub use network::Network;
pub use quorum_watch::step_down_without_quorum;
pub use service::{LeaderHeard, RaftService};

use crate::config::NodeConfig;
pub use crate::ids::{FephaNode, NodeId};
use crate::state::{Request, Response};

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Request,
        R = Response,
        Node = FephaNode,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogStore = fepha_storage::LogStore<TypeConfig>;
pub type StateMachineStore = fepha_storage::StateMachineStore<TypeConfig, crate::state::SiteState>;
pub type StateView = fepha_storage::StateView<TypeConfig, crate::state::SiteState>;
pub type Membership = openraft::StoredMembership<NodeId, FephaNode>;

/// The largest Raft or peer message, either way. An AppendEntries is cut to
/// [`network::SEND_BUDGET`] unless its first entry alone is larger; the largest entries are a
/// site configuration (at most [`crate::site::MAX_CONFIG_BYTES`] of text, at worst twice that
/// as JSON) and a point batch (at most `batch_max_changes` = 10 000 changes and one poll
/// round's more, a few MiB). A snapshot travels in pieces of [`SNAPSHOT_CHUNK`]; a peer call
/// carries one request.
pub const MAX_MESSAGE_BYTES: usize = 2 * crate::site::MAX_CONFIG_BYTES + (16 << 20);
/// A follower cut off for a while is brought back with a snapshot in pieces of this size.
pub const SNAPSHOT_CHUNK: u64 = 1 << 20;

/// openraft's settings for this node.
pub fn openraft_config(
    cfg: &NodeConfig,
) -> Result<Arc<openraft::Config>, Box<openraft::ConfigError>> {
    let t = &cfg.raft;
    let config = openraft::Config {
        cluster_name: "fepha".into(),
        heartbeat_interval: t.heartbeat_ms,
        election_timeout_min: t.election_timeout_min_ms,
        election_timeout_max: t.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(t.snapshot_after_entries),
        max_in_snapshot_log_to_keep: t.keep_entries_after_snapshot,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK,
        // openraft 0.9 gives each AppendEntries one heartbeat interval (50 ms) to complete. A
        // point batch is up to ~100 KiB of JSON, so its default of 300 entries per request
        // can never arrive in time, and a follower that fell behind under load never caught
        // up. 16 entries keep a request near 1.5 MiB at worst, and network.rs cuts it at
        // 1 MiB, unless a single entry is larger.
        max_payload_entries: 16,
        ..Default::default()
    };
    Ok(Arc::new(config.validate()?))
}
