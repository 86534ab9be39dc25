//! A small raft type config and state for testing the stores.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use fepha_storage::{AppState, LogStore, OpenError, StateMachineStore};
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    pub key: String,
    pub value: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub previous: Option<u64>,
}

openraft::declare_raft_types!(
    pub TestConfig:
        D = Put,
        R = Reply,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TestConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    pub map: BTreeMap<String, u64>,
}

impl AppState<TestConfig> for KvState {
    fn apply(&mut self, _log_id: &LogId<u64>, put: &Put) -> Reply {
        Reply {
            previous: self.map.insert(put.key.clone(), put.value),
        }
    }
}

pub type Sm = StateMachineStore<TestConfig, KvState>;

pub fn open(dir: &Path) -> Result<(LogStore<TestConfig>, Sm), OpenError> {
    fepha_storage::open(dir)
}

pub fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

pub fn put(term: u64, index: u64, key: &str, value: u64) -> Entry<TestConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Put {
            key: key.to_owned(),
            value,
        }),
    }
}

pub fn membership(term: u64, index: u64, voters: &[u64]) -> Entry<TestConfig> {
    let voters = voters.iter().copied().collect();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], ())),
    }
}

pub fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
}

/// What a restarted node finds on disk: a copy of `dir`, taken once every handle on it has
/// been dropped. A copy, because sled's IO threads let go of the data file, and of the
/// lock on it, a moment after the database is dropped: reopening `dir` itself within the
/// same process can find it still locked.
pub fn restart(dir: &Path) -> std::io::Result<tempfile::TempDir> {
    let copy = tempfile::tempdir()?;
    copy_dir(dir, copy.path())?;
    Ok(copy)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
