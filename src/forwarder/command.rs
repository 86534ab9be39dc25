//! A master's command, through the log to the RTU's owner and back: ACTCON once the owner
//! has started it (negative if nobody does in time, or the RTU has no owner), ACTTERM with
//! its real outcome.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::serve::Served;
use super::station::Execute;
use crate::cluster::{CommandOutcome, NewCommand};
use crate::iec104::{Asdu, Cause};
use crate::site::Protocol;

pub(crate) async fn execute(
    served: Arc<Served>,
    exec: Execute,
    origin: String,
    replies: mpsc::UnboundedSender<Asdu>,
) {
    let cluster = &served.host.cluster;
    let con = |negative| exec.request.reply(Cause::ACTIVATION_CON, negative);
    let term = |negative| exec.request.reply(Cause::ACTIVATION_TERMINATION, negative);
    let send = |asdu| {
        // The connection may have closed meanwhile; the outcome is in the log regardless.
        let _ = replies.send(asdu);
    };
    let rtu = cluster.site().and_then(|site| {
        let rtu = site
            .points
            .iter()
            .find(|p| *p.id.get_ref() == exec.point)
            .map(|p| p.rtu.get_ref().clone())?;
        let confirms = site
            .rtus
            .iter()
            .any(|r| *r.id.get_ref() == rtu && r.protocol == Protocol::Iec104);
        Some((rtu, confirms))
    });
    let Some((rtu, device_confirms)) = rtu else {
        return send(con(true));
    };
    let command = NewCommand {
        point: exec.point.clone(),
        rtu,
        value: exec.value,
        origin,
        select: exec.selected,
        device_confirms,
    };
    let timeout = Duration::from_millis(served.spec.command_timeout_ms);
    let outcome = cluster
        .run_command(command, timeout, || send(con(false)))
        .await;
    let counted = match outcome {
        Ok(CommandOutcome::Refused(refusal)) => {
            tracing::warn!(point = %exec.point, "command not accepted: {refusal}");
            send(con(true));
            "refused"
        }
        Err(e) => {
            tracing::warn!(point = %exec.point, "command not accepted: {e}");
            send(con(true));
            "refused"
        }
        Ok(CommandOutcome::NotStarted { id, reason }) => {
            tracing::info!(point = %exec.point, id, "command not started: {reason}");
            send(con(true));
            "timeout"
        }
        Ok(CommandOutcome::Declined { id, reason }) => {
            tracing::info!(point = %exec.point, id, "command declined by the device: {reason}");
            send(con(true));
            "declined"
        }
        Ok(CommandOutcome::Done { .. }) => {
            send(term(false));
            "done"
        }
        Ok(CommandOutcome::Failed { id, reason }) => {
            tracing::info!(point = %exec.point, id, "command failed: {reason}");
            send(term(true));
            "failed"
        }
        Ok(CommandOutcome::Unknown { .. }) => {
            send(term(true));
            "failed"
        }
    };
    metrics::counter!("fepha_iec104_commands_total", "outcome" => counted).increment(1);
}
