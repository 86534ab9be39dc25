//! `rtu list` and `rtu move`, on the leader; the rules are the lease module's.

use tonic::Status;

use super::Context;
use super::access::Caller;
use super::route::on_leader;
use crate::lease::handover::{self, MoveError};
use crate::proto::admin::*;

pub(super) async fn rtu_list(
    cx: &Context,
    caller: &Caller,
    req: RtuListRequest,
) -> Result<RtuListReply, Status> {
    caller.may_send(req.forwarded)?;
    on_leader(
        cx,
        req,
        |mut leader, req| async move { leader.rtu_list(req).await },
        |_| async move {
            let rtus = handover::leases(&cx.cluster)
                .into_iter()
                .map(|l| RtuLease {
                    links: l
                        .links
                        .into_iter()
                        .map(|(node, channel, endpoint, up)| NodeLink {
                            node,
                            channel,
                            endpoint,
                            up,
                        })
                        .collect(),
                    rtu: l.rtu,
                    owner: l.owner,
                    epoch: l.epoch,
                    lease_left_ms: l.left_ms,
                    reachable_from: l.reachable_from,
                    unreachable_from: l.unreachable_from,
                })
                .collect();
            Ok(RtuListReply { rtus })
        },
    )
    .await
}

pub(super) async fn rtu_move(
    cx: &Context,
    caller: &Caller,
    req: RtuMoveRequest,
) -> Result<RtuMoveReply, Status> {
    caller.may_send(req.forwarded)?;
    on_leader(
        cx,
        req,
        |mut leader, req| async move { leader.rtu_move(req).await },
        |req| async move {
            handover::move_rtu(&cx.cluster, &req.rtu, &req.to, req.force)
                .await
                .map(|epoch| RtuMoveReply { epoch })
                .map_err(|e| match e {
                    MoveError::NoSuchMember(_) => Status::not_found(e.to_string()),
                    MoveError::Refused(_) | MoveError::WentElsewhere => {
                        Status::aborted(e.to_string())
                    }
                    MoveError::NotYet => Status::deadline_exceeded(e.to_string()),
                    MoveError::Cluster(e) => Status::from(e),
                    _ => Status::failed_precondition(e.to_string()),
                })
        },
    )
    .await
}
