//! openraft's log store and state machine store on sled.
//!
//! The crate knows nothing of fepha's commands: the state machine's contents are any
//! [`AppState`], so that the openraft storage suite can run against these stores with a
//! small test state, and fepha's own state stays in the fepha crate.

mod codec;
mod db;
mod durable;
mod error;
mod log_size;
mod log_store;
mod log_tail;
mod offline;
mod snapshot;
mod snapshot_codec;
mod snapshot_files;
mod state_machine;
mod view;

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

pub use error::{Corrupt, OpenError};
pub use log_size::LogSize;
pub use log_store::LogStore;
pub use offline::{Contents, Offline, OfflineError};
use openraft::{Entry, LogId, RaftTypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
pub use snapshot::SnapshotBuilder;
pub use snapshot_codec::EncodeError;
pub use state_machine::StateMachineStore;
pub use view::{Applied, StateView};

use crate::db::Db;

/// The application's replicated state: what the state machine holds besides openraft's
/// own bookkeeping (last applied log id and membership).
pub trait AppState<C: RaftTypeConfig>:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Applies one normal entry. Must be deterministic: every node applies the same entries
    /// in the same order and must reach the same state.
    fn apply(&mut self, log_id: &LogId<C::NodeId>, data: &C::D) -> C::R;
}

/// Opens (or creates) the sled database in `dir` and returns the two stores built on it.
pub fn open<C, S>(dir: &Path) -> Result<(LogStore<C>, StateMachineStore<C, S>), OpenError>
where
    C: RaftTypeConfig<Entry = Entry<C>, SnapshotData = Cursor<Vec<u8>>>,
    Entry<C>: Clone,
    C::R: Default,
    S: AppState<C>,
{
    let db = Arc::new(Db::open(dir)?);
    let log = LogStore::new(db.clone())?;
    let sm = StateMachineStore::new(db)?;
    Ok((log, sm))
}
