//! The replicated state machine: the commands proposed to the log and what applying them does.
//!
//! It holds the site configuration document (as text, with a version and a bounded history)
//! and the trust list; openraft itself keeps the membership beside them.

pub mod ownership;
pub mod trust;

use std::collections::VecDeque;

use openraft::LogId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::raft::{NodeId, TypeConfig};

/// How many past configuration versions are remembered (their digests, not their text).
pub const CONFIG_HISTORY_LEN: usize = 1000;

/// A command in the replicated log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Replace the site configuration. `applied_at_ms` is stamped by the proposing node so that
    /// every node stores the same value.
    ApplyConfig {
        text: String,
        applied_at_ms: u64,
    },
    Trust(trust::TrustCommand),
    Ownership(ownership::OwnershipCommand),
}

/// What applying a command returned.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub enum Response {
    #[default]
    None,
    ConfigApplied {
        version: u64,
        sha256: String,
    },
    Trust(Result<(), trust::TrustRefusal>),
    Ownership(Result<(), ownership::OwnershipRefusal>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDoc {
    pub version: u64,
    pub text: String,
    pub sha256: String,
    pub log_index: u64,
    pub applied_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub version: u64,
    pub sha256: String,
    pub log_index: u64,
    pub applied_at_ms: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SiteState {
    pub config: Option<ConfigDoc>,
    /// Oldest first, at most [`CONFIG_HISTORY_LEN`] entries.
    pub history: VecDeque<ConfigSummary>,
    // Defaults, so that a snapshot taken before a part existed still loads.
    #[serde(default)]
    pub trust: trust::Trust,
    #[serde(default)]
    pub ownership: ownership::Ownership,
}

impl SiteState {
    pub fn config_version(&self) -> u64 {
        self.config.as_ref().map_or(0, |c| c.version)
    }
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl fepha_storage::AppState<TypeConfig> for SiteState {
    fn apply(&mut self, log_id: &LogId<NodeId>, data: &Request) -> Response {
        match data {
            Request::ApplyConfig {
                text,
                applied_at_ms,
            } => {
                let version = self.config_version() + 1;
                let sha256 = sha256_hex(text);
                self.history.push_back(ConfigSummary {
                    version,
                    sha256: sha256.clone(),
                    log_index: log_id.index,
                    applied_at_ms: *applied_at_ms,
                    bytes: text.len() as u64,
                });
                while self.history.len() > CONFIG_HISTORY_LEN {
                    self.history.pop_front();
                }
                self.config = Some(ConfigDoc {
                    version,
                    text: text.clone(),
                    sha256: sha256.clone(),
                    log_index: log_id.index,
                    applied_at_ms: *applied_at_ms,
                });
                Response::ConfigApplied { version, sha256 }
            }
            Request::Trust(command) => Response::Trust(self.trust.apply(command)),
            Request::Ownership(command) => Response::Ownership(self.ownership.apply(command)),
        }
    }
}

#[cfg(test)]
mod tests {
    use fepha_storage::AppState;
    use openraft::CommittedLeaderId;

    use super::*;

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    #[test]
    fn versions_grow_and_history_is_bounded() {
        let mut s = SiteState::default();
        for i in 1..=(CONFIG_HISTORY_LEN as u64 + 5) {
            let r = s.apply(
                &log_id(i),
                &Request::ApplyConfig {
                    text: format!("v{i}"),
                    applied_at_ms: i,
                },
            );
            match r {
                Response::ConfigApplied { version, .. } => assert_eq!(version, i),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(s.history.len(), CONFIG_HISTORY_LEN);
        assert_eq!(s.history.front().map(|h| h.version), Some(6));
        let doc = s.config.expect("config applied");
        assert_eq!(doc.text, format!("v{}", CONFIG_HISTORY_LEN + 5));
        assert_eq!(doc.sha256, sha256_hex(&doc.text));
    }
}
