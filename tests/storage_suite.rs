//! openraft's storage conformance suite against the sled stores with fepha's own type
//! configuration and state machine (the storage crate runs it with a small test state).

use fepha::raft::{LogStore, StateMachineStore, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (log, sm) = fepha_storage::open(dir.path())
            .map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        Ok((dir, log, sm))
    }
}

/// Synchronous: the suite builds a runtime of its own for each case.
#[test]
fn openraft_storage_suite_with_fepha_state() -> Result<(), Box<dyn std::error::Error>> {
    Suite::test_all(Builder)?;
    Ok(())
}
