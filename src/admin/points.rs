//! `point list` and `point write`.

use std::time::Duration;

use tonic::Status;

use super::Context;
use super::access::Caller;
use super::route::on_leader;
use crate::acquisition::control::{self, ControlError};
use crate::cluster::CommandOutcome;
use crate::proto::admin::*;
use crate::state::points::Value;

/// How long `point write` waits for the owner's outcome unless told otherwise.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn point_list(cx: &Context, req: PointListRequest) -> PointListReply {
    let Some(site) = cx.cluster.site() else {
        return PointListReply::default();
    };
    let members = cx.cluster.members();
    let (states, link_ids, last_event_seq, renewed_names) = cx.cluster.read(|s| {
        (
            s.points.points.clone(),
            s.points.link_ids.clone(),
            s.points.next_seq.saturating_sub(1),
            s.ownership.names.clone(),
        )
    });
    let configured = site
        .points
        .iter()
        .filter(|p| req.rtu.is_empty() || *p.rtu.get_ref() == req.rtu)
        .filter(|p| !p.kind.get_ref().is_command())
        .map(|p| {
            let kind = format!("{:?}", p.kind.get_ref()).to_lowercase();
            (p.id.get_ref().clone(), p.rtu.get_ref().clone(), kind)
        });
    let links = site
        .rtus
        .iter()
        .map(|r| r.id.get_ref())
        .filter(|rtu| req.rtu.is_empty() || **rtu == req.rtu)
        .flat_map(|rtu| {
            let prefix = crate::state::links::combined_id(rtu);
            link_ids
                .iter()
                .filter(move |id| {
                    id.strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
                })
                .map(move |id| (id.clone(), rtu.clone(), "link".to_owned()))
        })
        .collect::<Vec<_>>();
    let points = configured
        .chain(links)
        .map(|(id, rtu, kind)| {
            let mut info = PointInfo {
                id: id.clone(),
                rtu,
                kind,
                ..Default::default()
            };
            if let Some(s) = states.get(&id) {
                info.value = match (info.kind.as_str(), s.value) {
                    ("link", Value::Single(up)) => if up { "up" } else { "down" }.to_owned(),
                    _ => s.value.to_string(),
                };
                info.number = number(&s.value);
                info.has_value = true;
                info.invalid = s.quality.invalid;
                info.not_topical = s.quality.not_topical;
                info.time_ms = s.time_ms;
                // The RTU's combined link point is the cluster's, not one node's.
                // A node no longer a member (removed, or of the cluster a restore came from)
                // is still known by the name its renewals gave.
                if s.source != 0 {
                    info.source = match (members.get(s.source), renewed_names.get(&s.source)) {
                        (None, Some(name)) => name.clone(),
                        _ => members.name(s.source),
                    };
                }
                info.epoch = s.epoch;
            }
            info
        })
        .collect();
    PointListReply {
        points,
        last_event_seq,
    }
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Single(b) => f64::from(u8::from(*b)),
        Value::Double(d) => f64::from(*d),
        Value::Measured(m) => *m,
        Value::Counter(c) => *c as f64,
        Value::Step { value, .. } => f64::from(*value),
        Value::Bits(b) => f64::from(*b),
    }
}

/// A command through the log to the RTU's owner; replies with its outcome.
pub(super) async fn point_write(
    cx: &Context,
    caller: &Caller,
    req: PointWriteRequest,
) -> Result<PointWriteReply, Status> {
    caller.may_send(req.forwarded)?;
    let origin = caller.describe(cx);
    on_leader(
        cx,
        req,
        |mut leader, req| async move { leader.point_write(req).await },
        |req| async move {
            let timeout = match req.timeout_ms {
                0 => DEFAULT_COMMAND_TIMEOUT,
                ms => Duration::from_millis(ms),
            };
            let outcome =
                control::write_point(&cx.cluster, &req.point, &req.value, origin, timeout)
                    .await
                    .map_err(|e| match e {
                        ControlError::NoSite => Status::failed_precondition(e.to_string()),
                        ControlError::NoSuchPoint(_) => Status::not_found(e.to_string()),
                        ControlError::NotACommand(..)
                        | ControlError::BadValue(_)
                        | ControlError::BadValue104(_) => Status::invalid_argument(e.to_string()),
                        ControlError::Cluster(e) => Status::from(e),
                    })?;
            let (id, outcome, ok) = match outcome {
                CommandOutcome::Refused(refusal) => {
                    return Err(Status::failed_precondition(refusal.to_string()));
                }
                CommandOutcome::Done { id } => (id, "done".to_owned(), true),
                CommandOutcome::NotStarted { id, reason }
                | CommandOutcome::Declined { id, reason }
                | CommandOutcome::Failed { id, reason } => (id, reason, false),
                CommandOutcome::Unknown { id } => (
                    id,
                    "timed out while the owner was executing it; outcome unknown".to_owned(),
                    false,
                ),
            };
            Ok(PointWriteReply { id, outcome, ok })
        },
    )
    .await
}
