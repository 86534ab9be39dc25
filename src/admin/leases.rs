//! Session renewals and `rtu list`.

use std::time::Instant;

use tonic::Status;

use super::access::Caller;
use super::route::{now_ms, on_leader, write_error};
use crate::node::Node;
use crate::proto::admin::*;
use crate::state::ownership::{Link, OwnershipCommand, Reach};
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
    renew_own(node, req)
        .await
        .map(|log_index| RenewReply { log_index })
}

/// This node's own renewal, routed to the leader. Returns its log index.
pub async fn renew_own(node: &Node, req: RenewRequest) -> Result<u64, Status> {
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
            let links = req
                .links
                .iter()
                .map(|r| {
                    let links = r
                        .links
                        .iter()
                        .map(|l| Link {
                            channel: l.channel.clone(),
                            endpoint: l.endpoint.clone(),
                            up: l.up,
                            index: l.index,
                        })
                        .collect();
                    (r.rtu.clone(), links)
                })
                .collect();
            let command = OwnershipCommand::Renew {
                node: req.node_id,
                number: req.session,
                now_ms: now_ms(),
                reach,
                applied: req.applied_index,
                links,
                name: node
                    .metrics()
                    .membership_config
                    .membership()
                    .get_node(&req.node_id)
                    .map(|n| n.name.clone())
                    .unwrap_or_default(),
            };
            let written = node
                .raft
                .client_write(Request::Ownership(command))
                .await
                .map_err(write_error)?;
            match written.data {
                Response::Ownership(Ok(())) => Ok(RenewReply {
                    log_index: written.log_id.index,
                }),
                Response::Ownership(Err(refusal)) => {
                    Err(Status::failed_precondition(refusal.to_string()))
                }
                other => Err(Status::internal(format!("unexpected reply {other:?}"))),
            }
        },
    )
    .await
    .map(|r| r.log_index)
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
            let site = node.site();
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
                    let links = ownership
                        .links
                        .get(id)
                        .iter()
                        .flat_map(|by_node| by_node.iter())
                        .flat_map(|(n, links)| {
                            links.iter().map(move |l| NodeLink {
                                node: name(n),
                                channel: l.channel.clone(),
                                endpoint: l.endpoint.clone(),
                                up: l.up,
                            })
                        })
                        .collect();
                    RtuLease {
                        links,
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

/// How long `rtu move` waits for the old owner to let go and the target to get the lease.
const MOVE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Releases the RTU for the named node; the leader's lease loop grants it once the old owner
/// has seen the release. Waits for that grant.
pub async fn rtu_move(
    node: &Node,
    caller: &Caller,
    req: RtuMoveRequest,
) -> Result<RtuMoveReply, Status> {
    caller.may_send(req.forwarded)?;
    on_leader(
        node,
        req,
        |mut leader, req| async move { leader.rtu_move(req).await },
        |req| async move {
            let m = node.metrics();
            let membership = m.membership_config.membership();
            let (to, info) = membership
                .nodes()
                .find(|(_, n)| n.name == req.to)
                .ok_or_else(|| Status::not_found(format!("no member named {:?}", req.to)))?;
            let to = *to;
            if info.role != crate::config::Role::Voter {
                return Err(Status::failed_precondition(format!(
                    "{} is a {}; only voters own RTUs",
                    req.to, info.role
                )));
            }
            let ownership = node.state.read(|s| s.ownership.clone());
            let lease = ownership.leases.get(&req.rtu).ok_or_else(|| {
                Status::failed_precondition(format!(
                    "RTU {:?} has no owner now (unknown, or being handed over)",
                    req.rtu
                ))
            })?;
            if lease.owner == to {
                return Ok(RtuMoveReply { epoch: lease.epoch });
            }
            if !ownership.sessions.contains_key(&to) {
                return Err(Status::failed_precondition(format!(
                    "{} has no live session",
                    req.to
                )));
            }
            let reach = ownership.reach.get(&req.rtu).and_then(|r| r.get(&to));
            if !req.force && reach != Some(&Reach::Reachable) {
                return Err(Status::failed_precondition(format!(
                    "{} does not report RTU {} reachable ({}); use --force to move it anyway",
                    req.to,
                    req.rtu,
                    match reach {
                        Some(_) => "it reports it unreachable",
                        None => "it reports nothing",
                    }
                )));
            }
            let release = OwnershipCommand::Release {
                rtu: req.rtu.clone(),
                epoch: lease.epoch,
                to: Some(to),
                deliberate: true,
            };
            let written = node
                .raft
                .client_write(Request::Ownership(release))
                .await
                .map_err(write_error)?;
            if let Response::Ownership(Err(refusal)) = written.data {
                return Err(Status::aborted(refusal.to_string()));
            }
            let granted = node
                .wait_for(Instant::now() + MOVE_WAIT, |n| {
                    n.state.read(|s| {
                        s.ownership
                            .leases
                            .get(&req.rtu)
                            .map(|l| (l.owner, l.epoch))
                    })
                })
                .await;
            match granted {
                Some((owner, epoch)) if owner == to => Ok(RtuMoveReply { epoch }),
                Some(_) => Err(Status::aborted(
                    "the RTU went to another node (the target lost its session)",
                )),
                None => Err(Status::deadline_exceeded(
                    "released, but the old owner has not let go yet; it will be granted when it does",
                )),
            }
        },
    )
    .await
}
