//! The state machine adapter: the sled store applies each normal entry to [`SiteState`], whose
//! rules know nothing of openraft.

use openraft::LogId;

use super::{NodeId, TypeConfig};
use crate::state::{Request, Response, SiteState};

impl fepha_storage::AppState<TypeConfig> for SiteState {
    fn apply(&mut self, log_id: &LogId<NodeId>, data: &Request) -> Response {
        SiteState::apply(self, log_id.index, data)
    }
}
