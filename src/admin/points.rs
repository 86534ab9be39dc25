//! Nodes' own writes (point batches, command progress), `point list` and `point write`.

use std::time::{Duration, Instant};

use tonic::Status;

use super::access::Caller;
use super::route::{now_ms, on_leader, write_error};
use crate::node::Node;
use crate::proto::admin::*;
use crate::state::commands::{CommandOp, CommandState};
use crate::state::{Request, Response};

/// How long `point write` waits for the owner's outcome unless told otherwise.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node may write for itself; configuration, trust and ownership go other ways.
fn node_may_write(request: &Request) -> bool {
    match request {
        Request::Points(_) => true,
        // A node submits and cancels commands for the 104 masters it serves.
        Request::Command(_) => true,
        Request::Forwarding(_) => true,
        _ => false,
    }
}

pub async fn node_write(
    node: &Node,
    caller: &Caller,
    req: NodeWriteRequest,
) -> Result<NodeWriteReply, Status> {
    let fingerprint = caller.node()?;
    let request: Request = serde_json::from_slice(&req.request)
        .map_err(|e| Status::invalid_argument(format!("not a log request: {e}")))?;
    if !node_may_write(&request) {
        return Err(Status::permission_denied(
            "a node writes only point batches, commands and forwarding positions",
        ));
    }
    // A node writes in its own name only. A forwarded write comes from the node that made it
    // (nodes forward only their own writes), so the same check holds on the leader.
    let m = node.metrics();
    let writer = m
        .membership_config
        .membership()
        .nodes()
        .find(|(_, n)| n.fingerprint == fingerprint.as_str())
        .map(|(id, _)| *id);
    let claims: Vec<u64> = match &request {
        Request::Points(batches) => batches.iter().map(|b| b.node).collect(),
        Request::Command(CommandOp::Start { node, .. }) => vec![*node],
        Request::Forwarding(op) => {
            use crate::state::forwarding::ForwardingOp;
            match op {
                ForwardingOp::Acked { node, .. } => vec![*node],
                ForwardingOp::Claim { holder, .. } | ForwardingOp::Release { holder, .. } => {
                    vec![holder.node]
                }
            }
        }
        _ => Vec::new(),
    };
    if claims.iter().any(|n| Some(*n) != writer) {
        return Err(Status::permission_denied(
            "a node writes point changes and commands in its own name only",
        ));
    }
    let response = propose(node, request, req.forwarded).await?;
    let response = serde_json::to_vec(&response)
        .map_err(|e| Status::internal(format!("cannot encode the reply: {e}")))?;
    Ok(NodeWriteReply { response })
}

/// This node's own write, proposed here if it leads or sent to the leader.
pub async fn write_own(node: &Node, request: Request) -> Result<Response, Status> {
    propose(node, request, false).await
}

async fn propose(node: &Node, request: Request, forwarded: bool) -> Result<Response, Status> {
    let bytes = serde_json::to_vec(&request)
        .map_err(|e| Status::internal(format!("cannot encode the request: {e}")))?;
    let req = NodeWriteRequest {
        request: bytes,
        forwarded,
    };
    let reply = on_leader(
        node,
        req,
        |mut leader, req| async move { leader.node_write(req).await },
        |_| async move {
            let written = node.raft.client_write(request).await.map_err(write_error)?;
            let response = serde_json::to_vec(&written.data)
                .map_err(|e| Status::internal(format!("cannot encode the reply: {e}")))?;
            Ok(NodeWriteReply { response })
        },
    )
    .await?;
    serde_json::from_slice(&reply.response)
        .map_err(|e| Status::internal(format!("the leader's reply does not decode: {e}")))
}

pub fn point_list(node: &Node, req: PointListRequest) -> PointListReply {
    let Some(site) = node.site() else {
        return PointListReply::default();
    };
    let membership = node.metrics().membership_config.membership().clone();
    let name = |id: u64| {
        membership
            .get_node(&id)
            .map_or_else(|| id.to_string(), |n| n.name.clone())
    };
    let (states, link_ids, last_event_seq) = node.state.read(|s| {
        (
            s.points.points.clone(),
            s.points.link_ids.clone(),
            s.points.events.back().map_or(0, |e| e.seq),
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
                    ("link", crate::state::points::Value::Single(up)) => {
                        if up { "up" } else { "down" }.to_owned()
                    }
                    _ => s.value.to_string(),
                };
                info.number = number(&s.value);
                info.has_value = true;
                info.invalid = s.quality.invalid;
                info.not_topical = s.quality.not_topical;
                info.time_ms = s.time_ms;
                // The RTU's combined link point is the cluster's, not one node's.
                if s.source != 0 {
                    info.source = name(s.source);
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

fn number(v: &crate::state::points::Value) -> f64 {
    use crate::state::points::Value;
    match v {
        Value::Single(b) => f64::from(u8::from(*b)),
        Value::Double(d) => f64::from(*d),
        Value::Measured(m) => *m,
        Value::Counter(c) => *c as f64,
    }
}

/// Proposes the command, then waits until its owner has recorded an outcome. A command that
/// nobody started within the timeout is cancelled, so it can never run later.
pub async fn point_write(
    node: &Node,
    caller: &Caller,
    req: PointWriteRequest,
) -> Result<PointWriteReply, Status> {
    caller.may_send(req.forwarded)?;
    let origin = caller.describe(node);
    on_leader(
        node,
        req,
        |mut leader, req| async move { leader.point_write(req).await },
        |req| async move {
            let site = node
                .site()
                .ok_or_else(|| Status::failed_precondition("no site configuration applied"))?;
            let point = site
                .points
                .iter()
                .find(|p| *p.id.get_ref() == req.point)
                .ok_or_else(|| Status::not_found(format!("no point {:?}", req.point)))?;
            if !point.kind.get_ref().is_command() {
                return Err(Status::invalid_argument(format!(
                    "{} is a {:?} point, not a command",
                    req.point,
                    point.kind.get_ref()
                )));
            }
            let value = crate::acquisition::command::parse_value(point, &req.value)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            // Checked here too, so a value the device cannot take is refused before the log.
            crate::acquisition::command::encode(point, &value)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let submit = CommandOp::Submit {
                point: req.point.clone(),
                rtu: point.rtu.get_ref().clone(),
                value,
                origin,
                now_ms: now_ms(),
            };
            let id = match command_write(node, submit).await? {
                Ok(id) => id,
                Err(refusal) => return Err(Status::failed_precondition(refusal.to_string())),
            };
            let timeout = match req.timeout_ms {
                0 => DEFAULT_COMMAND_TIMEOUT,
                ms => Duration::from_millis(ms),
            };
            let state = wait_outcome(node, id, timeout).await;
            let state = match state {
                Some(s) => s,
                None => {
                    let cancel = CommandOp::Cancel {
                        id,
                        reason: "no owner started it in time".into(),
                    };
                    // Refused if the owner started it meanwhile: then wait a little more.
                    let _ = command_write(node, cancel).await?;
                    wait_outcome(node, id, timeout).await.unwrap_or_else(|| {
                        CommandState::Failed(
                            "timed out while the owner was executing it; outcome unknown".into(),
                        )
                    })
                }
            };
            Ok(match state {
                CommandState::Done => PointWriteReply {
                    id,
                    outcome: "done".into(),
                    ok: true,
                },
                CommandState::Failed(reason) => PointWriteReply {
                    id,
                    outcome: reason,
                    ok: false,
                },
                other => PointWriteReply {
                    id,
                    outcome: format!("{other:?}"),
                    ok: false,
                },
            })
        },
    )
    .await
}

async fn command_write(
    node: &Node,
    op: CommandOp,
) -> Result<Result<u64, crate::state::CommandRefusal>, Status> {
    let written = node
        .raft
        .client_write(Request::Command(op))
        .await
        .map_err(write_error)?;
    match written.data {
        Response::Command(r) => Ok(r),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

/// The command's final state once it has one, or None after `timeout`.
async fn wait_outcome(node: &Node, id: u64, timeout: Duration) -> Option<CommandState> {
    wait_command(node, id, timeout, CommandState::is_finished)
        .await
        .map(|(state, _)| state)
}

/// The command's state and whether an owner started it, once `ready` accepts the state, or
/// None after `timeout`. A forgotten command counts as failed.
pub async fn wait_command(
    node: &Node,
    id: u64,
    timeout: Duration,
    ready: impl Fn(&CommandState) -> bool,
) -> Option<(CommandState, bool)> {
    node.wait_for(Instant::now() + timeout, |n| {
        // A follower may not have applied the submission yet; once it has, a command that
        // is gone was trimmed with the oldest finished ones.
        let now = n.state.read(|s| {
            let known = s.commands.next_id >= id;
            let command = s.commands.commands.get(&id);
            (known, command.map(|c| (c.state.clone(), c.started)))
        });
        match now {
            (_, Some((state, started))) if ready(&state) => Some((state, started)),
            (true, None) => Some((
                CommandState::Failed("the command was forgotten".into()),
                false,
            )),
            _ => None,
        }
    })
    .await
}
