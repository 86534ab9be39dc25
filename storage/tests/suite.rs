//! openraft's own conformance suite for storage implementations.

mod common;

use common::{Sm, TestConfig};
use fepha_storage::LogStore;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TestConfig, LogStore<TestConfig>, Sm, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore<TestConfig>, Sm), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (log, sm) =
            common::open(dir.path()).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        Ok((dir, log, sm))
    }
}

/// Synchronous: the suite builds a runtime of its own for each case.
#[test]
fn openraft_storage_suite() -> Result<(), Box<dyn std::error::Error>> {
    Suite::test_all(Builder)?;
    Ok(())
}
