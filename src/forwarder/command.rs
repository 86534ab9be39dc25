//! A master's command, through the log to the RTU's owner and back: ACTCON once the owner
//! has started it (negative if nobody does in time, or the RTU has no owner), ACTTERM with
//! its real outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::serve::Served;
use super::station::Execute;
use crate::admin::{now_ms, write_own};
use crate::iec104::{Asdu, Cause};
use crate::node::Node;
use crate::state::commands::{CommandOp, CommandState};
use crate::state::{Request, Response};

pub async fn execute(
    served: Arc<Served>,
    exec: Execute,
    origin: String,
    replies: mpsc::UnboundedSender<Asdu>,
) {
    let node = &served.node;
    let con = |negative| exec.request.reply(Cause::ACTIVATION_CON, negative);
    let term = |negative| exec.request.reply(Cause::ACTIVATION_TERMINATION, negative);
    let send = |asdu| {
        // The connection may have closed meanwhile; the outcome is in the log regardless.
        let _ = replies.send(asdu);
    };
    let rtu = node.site().and_then(|site| {
        site.points
            .iter()
            .find(|p| *p.id.get_ref() == exec.point)
            .map(|p| p.rtu.get_ref().clone())
    });
    let Some(rtu) = rtu else {
        return send(con(true));
    };
    let submit = CommandOp::Submit {
        point: exec.point.clone(),
        rtu,
        value: exec.value,
        origin,
        now_ms: now_ms(),
    };
    let id = match write_own(node, Request::Command(submit)).await {
        Ok(Response::Command(Ok(id))) => id,
        other => {
            tracing::warn!(point = %exec.point, "command not accepted: {other:?}");
            metrics::counter!("fepha_iec104_commands_total", "outcome" => "refused").increment(1);
            return send(con(true));
        }
    };
    let timeout = Duration::from_millis(served.spec.command_timeout_ms);
    let mut state = wait(node, id, timeout, |s, _| {
        !matches!(s, CommandState::Pending)
    })
    .await;
    if state.is_none() {
        let cancel = CommandOp::Cancel {
            id,
            reason: "no owner started it in time".into(),
        };
        // Refused if the owner started it meanwhile: then its outcome follows.
        let _ = write_own(node, Request::Command(cancel)).await;
        state = wait(node, id, timeout, |s, _| {
            !matches!(s, CommandState::Pending)
        })
        .await;
    }
    let outcome = match state {
        None => "timeout",
        Some((CommandState::Failed(reason), false)) => {
            tracing::info!(point = %exec.point, id, "command refused: {reason}");
            send(con(true));
            "refused"
        }
        Some((CommandState::Pending, _)) => {
            send(con(true));
            "timeout"
        }
        Some((CommandState::Done, _)) => {
            send(con(false));
            send(term(false));
            "done"
        }
        Some((CommandState::Failed(reason), true)) => {
            tracing::info!(point = %exec.point, id, "command failed: {reason}");
            send(con(false));
            send(term(true));
            "failed"
        }
        Some((CommandState::Executing { .. }, _)) => {
            send(con(false));
            let done = wait(node, id, timeout, |s, _| s.is_finished()).await;
            let ok = matches!(done, Some((CommandState::Done, _)));
            send(term(!ok));
            if ok { "done" } else { "failed" }
        }
    };
    metrics::counter!("fepha_iec104_commands_total", "outcome" => outcome).increment(1);
}

/// The command's state and whether an owner started it, once `ready` holds, or None after
/// `timeout`. A forgotten command counts as failed.
async fn wait(
    node: &Node,
    id: u64,
    timeout: Duration,
    ready: impl Fn(&CommandState, bool) -> bool,
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
            (_, Some((state, started))) if ready(&state, started) => Some((state, started)),
            (true, None) => Some((CommandState::Failed("forgotten".into()), false)),
            _ => None,
        }
    })
    .await
}
