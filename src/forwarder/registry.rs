//! The 104 connections open on this node, for `fepha iec104 connections`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnInfo {
    pub id: u64,
    pub forwarder: String,
    /// None when the forwarder's groups leave the master out (it is closed at once).
    pub group: Option<String>,
    pub peer: String,
    /// stopped, waiting (STARTDT not confirmed yet), started or stopping.
    pub state: String,
    pub opened_ms: u64,
    pub sent_i_frames: u64,
    pub received_i_frames: u64,
    pub unacked: u16,
    pub k: u16,
    pub w: u16,
    /// The newest event the master acknowledged on this connection.
    pub acked_event: u64,
    /// The newest event sent (or passed over) on this connection.
    pub sent_event: u64,
    pub dropped_events: u64,
}

#[derive(Debug, Default)]
pub struct Registry {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, ConnInfo>>,
}

impl Registry {
    /// A new connection's id, unique on this node until it restarts.
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn update(&self, info: ConnInfo) {
        self.lock().insert(info.id, info);
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub fn list(&self) -> Vec<ConnInfo> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ConnInfo>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
