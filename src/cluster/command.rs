//! A command to a point, through the log to its RTU's owner and back: submitted, started by
//! the owner (marked executing under its epoch before it touches the device), finished with
//! an outcome. One implementation for `point write` and the 104 forwarder.

use std::time::{Duration, Instant};

use super::{Cluster, ClusterError};
use crate::state::commands::{CommandOp, CommandState};
use crate::state::points::Value;
use crate::state::{CommandRefusal, Request, Response};

/// What a command is for and who asked.
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub point: String,
    pub rtu: String,
    pub value: Value,
    /// Who asked, for the log and the owner's records.
    pub origin: String,
    /// The master selected the point first (select-before-operate).
    pub select: bool,
    /// The device confirms the execute itself (a 104 RTU's ACTCON): the caller hears it has
    /// started only then, and a refusal by the device is [`CommandOutcome::Declined`].
    pub device_confirms: bool,
}

/// How a command ended, as far as its caller can tell.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandOutcome {
    /// The log refused it (no owner for the RTU, say): nothing was sent.
    Refused(CommandRefusal),
    /// It never reached the device: nobody started it in time (it was cancelled so that it
    /// can never run later) or the owner refused it before starting.
    NotStarted {
        id: u64,
        reason: String,
    },
    Done {
        id: u64,
    },
    /// The device refused it, or never confirmed it (a 104 RTU's negative or missing
    /// ACTCON).
    Declined {
        id: u64,
        reason: String,
    },
    /// Started, then failed (the device refused, the lease ran out).
    Failed {
        id: u64,
        reason: String,
    },
    /// Started, but no outcome reached the log in time.
    Unknown {
        id: u64,
    },
}

impl Cluster {
    /// Submits the command and waits for its outcome: at most `timeout` for an owner to start
    /// it (then it is cancelled, unless the owner started it meanwhile), and as long again
    /// for the outcome once started. `on_started` runs once the owner has started it, or,
    /// for a device that confirms, once the device has.
    pub async fn run_command(
        &self,
        command: NewCommand,
        timeout: Duration,
        on_started: impl FnOnce(),
    ) -> Result<CommandOutcome, ClusterError> {
        let confirms = command.device_confirms;
        let submit = CommandOp::Submit {
            point: command.point,
            rtu: command.rtu,
            value: command.value,
            origin: command.origin,
            now_ms: Cluster::now_ms(),
            select: command.select,
        };
        let id = match self.command_op(submit).await? {
            Ok(id) => id,
            Err(refusal) => return Ok(CommandOutcome::Refused(refusal)),
        };
        let not_pending = |s: &Seen| !matches!(s.state, CommandState::Pending);
        let mut seen = self.wait_command(id, timeout, not_pending).await;
        if seen.is_none() {
            let cancel = CommandOp::Cancel {
                id,
                reason: "no owner started it in time".into(),
            };
            // Refused if the owner started it meanwhile: then its outcome follows.
            let _ = self.command_op(cancel).await;
            seen = self.wait_command(id, timeout, not_pending).await;
        }
        let Some(mut seen) = seen else {
            return Ok(CommandOutcome::NotStarted {
                id,
                reason: "no owner started it in time".into(),
            });
        };
        if !seen.started {
            return Ok(match seen.state {
                CommandState::Failed(reason) => CommandOutcome::NotStarted { id, reason },
                _ => CommandOutcome::NotStarted {
                    id,
                    reason: "no owner started it in time".into(),
                },
            });
        }
        if confirms && matches!(seen.state, CommandState::Executing { .. }) {
            let confirmed = |s: &Seen| s.confirmed || s.state.is_finished();
            match self.wait_command(id, timeout, confirmed).await {
                Some(s) => seen = s,
                None => {
                    return Ok(CommandOutcome::Declined {
                        id,
                        reason: "the device did not confirm in time".into(),
                    });
                }
            }
        }
        if confirms
            && !seen.confirmed
            && let CommandState::Failed(reason) = seen.state
        {
            return Ok(CommandOutcome::Declined { id, reason });
        }
        on_started();
        if matches!(seen.state, CommandState::Executing { .. }) {
            let finished = |s: &Seen| s.state.is_finished();
            match self.wait_command(id, timeout, finished).await {
                Some(s) => seen = s,
                None => return Ok(CommandOutcome::Unknown { id }),
            }
        }
        Ok(match seen.state {
            CommandState::Done => CommandOutcome::Done { id },
            CommandState::Failed(reason) => CommandOutcome::Failed { id, reason },
            CommandState::Pending | CommandState::Executing { .. } => {
                CommandOutcome::Unknown { id }
            }
        })
    }

    /// Proposes one step of a command's life.
    pub async fn command_op(
        &self,
        op: CommandOp,
    ) -> Result<Result<u64, CommandRefusal>, ClusterError> {
        match self.propose(Request::Command(op)).await?.response {
            Response::Command(r) => Ok(r),
            other => Err(ClusterError::Codec(format!("unexpected reply {other:?}"))),
        }
    }

    /// What the log says of the command once `ready` accepts it, or None after `timeout`. A
    /// forgotten command counts as failed.
    async fn wait_command(
        &self,
        id: u64,
        timeout: Duration,
        ready: impl Fn(&Seen) -> bool,
    ) -> Option<Seen> {
        self.wait_for(Instant::now() + timeout, |c| {
            // A follower may not have applied the submission yet; once it has, a command
            // that is gone was trimmed with the oldest finished ones.
            let now = c.read(|s| {
                let known = s.commands.next_id >= id;
                let command = s.commands.commands.get(&id);
                let seen = command.map(|c| Seen {
                    state: c.state.clone(),
                    started: c.started,
                    confirmed: c.confirmed,
                });
                (known, seen)
            });
            match now {
                (_, Some(seen)) if ready(&seen) => Some(seen),
                (true, None) => Some(Seen {
                    state: CommandState::Failed("the command was forgotten".into()),
                    started: false,
                    confirmed: false,
                }),
                _ => None,
            }
        })
        .await
    }
}

/// A command as the log has it.
struct Seen {
    state: CommandState,
    started: bool,
    confirmed: bool,
}
