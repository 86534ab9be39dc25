//! The leader's lease loop: it remembers when it took each node's renewal, on its own clock,
//! and proposes what `plan` decides, several times a TTL.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::plan::{View, plan};
use crate::config::Role;
use crate::node::Node;
use crate::raft::NodeId;
use crate::shutdown::Shutdown;
use crate::state::{Request, Response};

/// When this node, as leader, took each node's last renewal. Forgotten when leadership ends:
/// a new leadership starts from its own first moment (see `plan::View::leader_since_ms`).
#[derive(Debug, Default)]
pub struct Heard {
    inner: Mutex<(Option<Instant>, BTreeMap<NodeId, Instant>)>,
}

impl Heard {
    pub fn renewal(&self, node: NodeId) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.0.is_some() {
            inner.1.insert(node, Instant::now());
        }
    }

    /// While leading: since when, and when each node was heard. None otherwise.
    pub fn view(&self, leading: bool) -> Option<(Instant, BTreeMap<NodeId, Instant>)> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !leading {
            *inner = (None, BTreeMap::new());
            return None;
        }
        let since = *inner.0.get_or_insert_with(Instant::now);
        Some((since, inner.1.clone()))
    }
}

fn ms_since(base: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(base).as_millis() as u64
}

pub async fn run(node: Arc<Node>, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let m = node.metrics();
        let Some((since, heard)) = node.heard.view(m.state == ServerState::Leader) else {
            continue;
        };
        metrics::counter!("fepha_lease_plans_total").increment(1);
        let Some(current) = node.site() else {
            continue;
        };
        let config_applied_at_ms = node
            .state
            .read(|s| s.config.as_ref().map_or(0, |c| c.applied_at_ms));
        let members: BTreeMap<NodeId, Role> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.role))
            .collect();
        let ownership = node.state.read(|s| s.ownership.clone());
        let rtus: Vec<String> = current
            .rtus
            .iter()
            .map(|r| r.id.get_ref().clone())
            .collect();
        let heard_ms = heard
            .iter()
            .map(|(n, t)| (*n, ms_since(since, *t)))
            .collect();
        let t = &current.timers;
        let commands = plan(&View {
            ownership: &ownership,
            rtus: &rtus,
            members: &members,
            heard_ms: &heard_ms,
            leader_since_ms: 0,
            now_ms: ms_since(since, Instant::now()),
            wall_ms: crate::admin::now_ms(),
            config_applied_at_ms,
            ttl_ms: *t.session_ttl_ms.get_ref(),
            backoff_ms: *t.handover_backoff_ms.get_ref(),
            backoff_max_ms: *t.handover_backoff_max_ms.get_ref(),
        });
        for command in commands {
            tracing::info!(?command, "lease decision");
            metrics::counter!("fepha_lease_commands_total").increment(1);
            match node.raft.client_write(Request::Ownership(command)).await {
                Ok(w) if matches!(w.data, Response::Ownership(Ok(()))) => {}
                // The state moved under the plan (or leadership did): plan again next tick.
                Ok(w) => {
                    tracing::debug!("lease decision refused: {:?}", w.data);
                    break;
                }
                Err(e) => {
                    tracing::debug!("lease decision not proposed: {e}");
                    break;
                }
            }
        }
    }
}
