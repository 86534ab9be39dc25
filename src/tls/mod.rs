//! Mutual TLS for every gRPC connection, node to node and CLI to node. Trust is a list of
//! certificate fingerprints (replicated by the cluster), not a CA.

mod admission;
mod conn;
mod connect;
mod fingerprint;
mod identity;
mod incoming;
mod pinned;
mod verify;

pub use admission::{Limits, register_listener};
pub use conn::{Connections, PeerConn, PeerInfo, require_node};
pub use connect::{BadEndpoint, Channels, endpoint, refusal};
pub use fingerprint::{BadFingerprint, Fingerprint};
pub use identity::{CERT_FILE, Identity, IdentityError, KEY_FILE};
pub use incoming::{Incoming, incoming, server_config};
pub use pinned::PinnedNodes;
pub use verify::{ClientAuth, PeerRole, TrustStore};
