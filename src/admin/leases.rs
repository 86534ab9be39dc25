//! Session renewals and `rtu list`.

use std::time::Instant;

use tonic::Status;

use super::access::Caller;
use super::route::{now_ms, on_leader, write_error};
use crate::node::Node;
use crate::proto::admin::*;
use crate::state::ownership::{OwnershipCommand, Reach};
use crate::state::{Request, Response};

/// A node renews its own session: its certificate must be the one the membership records.
pub async fn renew(node: &Node, caller: &Caller, req: RenewRequest) -> Result<RenewReply, Status> {
    let fingerprint = caller.node()?;
    if !req.forwarded {
        let own = node
            .metrics()
            .membership_config
            .membership()
            .get_node(&req.node_id)
            .is_some_and(|n| n.fingerprint == fingerprint.as_str());
        if !own {
            return Err(Status::permission_denied(
                "a node renews its own session only",
            ));
        }
    }
    renew_own(node, req).await.map(|()| RenewReply {})
}

/// This node's own renewal, routed to the leader.
pub async fn renew_own(node: &Node, req: RenewRequest) -> Result<(), Status> {
    on_leader(
        node,
        req,
        |mut leader, req| async move { leader.renew(req).await },
        |req| async move {
            // Counted from its arrival here, on this leader's clock.
            node.heard.renewal(req.node_id);
            let reach = req
                .reach
                .iter()
                .map(|r| {
                    let reach = if r.reachable {
                        Reach::Reachable
                    } else {
                        Reach::Unreachable
                    };
                    (r.rtu.clone(), reach)
                })
                .collect();
            let command = OwnershipCommand::Renew {
                node: req.node_id,
                number: req.session,
                now_ms: now_ms(),
                reach,
            };
            let written = node
                .raft
                .client_write(Request::Ownership(command))
                .await
                .map_err(write_error)?;
            match written.data {
                Response::Ownership(Ok(())) => Ok(RenewReply {}),
                Response::Ownership(Err(refusal)) => {
                    Err(Status::failed_precondition(refusal.to_string()))
                }
                other => Err(Status::internal(format!("unexpected reply {other:?}"))),
            }
        },
    )
    .await
    .map(|_| ())
}

pub async fn rtu_list(
    node: &Node,
    caller: &Caller,
    req: RtuListRequest,
) -> Result<RtuListReply, Status> {
    caller.may_send(req.forwarded)?;
    on_leader(
        node,
        req,
        |mut leader, req| async move { leader.rtu_list(req).await },
        |_| async move {
            let mut cache = None;
            let site = crate::lease::leader::applied_site(node, &mut cache);
            let ttl = site
                .as_ref()
                .map_or(1000, |s| *s.timers.session_ttl_ms.get_ref());
            let m = node.metrics();
            let membership = m.membership_config.membership();
            let name = |id: &u64| {
                membership
                    .get_node(id)
                    .map_or_else(|| id.to_string(), |n| n.name.clone())
            };
            let heard = node.heard.view(true).map(|(_, h)| h).unwrap_or_default();
            let ownership = node.state.read(|s| s.ownership.clone());
            let rtus = site
                .iter()
                .flat_map(|s| s.rtus.iter())
                .map(|r| {
                    let id = r.id.get_ref();
                    let lease = ownership.leases.get(id);
                    let left = lease.and_then(|l| heard.get(&l.owner)).map_or(0, |t| {
                        ttl.saturating_sub(Instant::now().duration_since(*t).as_millis() as u64)
                    });
                    let reach = ownership.reach.get(id);
                    let from = |want: Reach| -> Vec<String> {
                        reach
                            .iter()
                            .flat_map(|r| r.iter())
                            .filter(|(_, r)| **r == want)
                            .map(|(n, _)| name(n))
                            .collect()
                    };
                    RtuLease {
                        rtu: id.clone(),
                        owner: lease.map(|l| name(&l.owner)).unwrap_or_default(),
                        epoch: lease.map_or(0, |l| l.epoch),
                        lease_left_ms: left,
                        reachable_from: from(Reach::Reachable),
                        unreachable_from: from(Reach::Unreachable),
                    }
                })
                .collect();
            Ok(RtuListReply { rtus })
        },
    )
    .await
}
