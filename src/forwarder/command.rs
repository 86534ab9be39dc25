//! A master's command, through the log to the RTU's owner and back: ACTCON once the owner
//! has started it (negative if nobody does in time, or the RTU has no owner), ACTTERM with
//! its real outcome.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::serve::Served;
use super::station::Execute;
use crate::admin::{now_ms, wait_command, write_own};
use crate::iec104::{Asdu, Cause};
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
    let mut state = wait_command(node, id, timeout, |s| !matches!(s, CommandState::Pending)).await;
    if state.is_none() {
        let cancel = CommandOp::Cancel {
            id,
            reason: "no owner started it in time".into(),
        };
        // Refused if the owner started it meanwhile: then its outcome follows.
        let _ = write_own(node, Request::Command(cancel)).await;
        state = wait_command(node, id, timeout, |s| !matches!(s, CommandState::Pending)).await;
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
            let done = wait_command(node, id, timeout, CommandState::is_finished).await;
            let ok = matches!(done, Some((CommandState::Done, _)));
            send(term(!ok));
            if ok { "done" } else { "failed" }
        }
    };
    metrics::counter!("fepha_iec104_commands_total", "outcome" => outcome).increment(1);
}
