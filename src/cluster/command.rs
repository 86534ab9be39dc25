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
    /// for the outcome once started. `on_started` runs once the owner has started it.
    pub async fn run_command(
        &self,
        command: NewCommand,
        timeout: Duration,
        on_started: impl FnOnce(),
    ) -> Result<CommandOutcome, ClusterError> {
        let submit = CommandOp::Submit {
            point: command.point,
            rtu: command.rtu,
            value: command.value,
            origin: command.origin,
            now_ms: Cluster::now_ms(),
        };
        let id = match self.command_op(submit).await? {
            Ok(id) => id,
            Err(refusal) => return Ok(CommandOutcome::Refused(refusal)),
        };
        let not_pending = |s: &CommandState| !matches!(s, CommandState::Pending);
        let mut state = self.wait_command(id, timeout, not_pending).await;
        if state.is_none() {
            let cancel = CommandOp::Cancel {
                id,
                reason: "no owner started it in time".into(),
            };
            // Refused if the owner started it meanwhile: then its outcome follows.
            let _ = self.command_op(cancel).await;
            state = self.wait_command(id, timeout, not_pending).await;
        }
        Ok(match state {
            None | Some((CommandState::Pending, _)) => CommandOutcome::NotStarted {
                id,
                reason: "no owner started it in time".into(),
            },
            Some((CommandState::Failed(reason), false)) => {
                CommandOutcome::NotStarted { id, reason }
            }
            Some((CommandState::Done, _)) => {
                on_started();
                CommandOutcome::Done { id }
            }
            Some((CommandState::Failed(reason), true)) => {
                on_started();
                CommandOutcome::Failed { id, reason }
            }
            Some((CommandState::Executing { .. }, _)) => {
                on_started();
                match self
                    .wait_command(id, timeout, CommandState::is_finished)
                    .await
                {
                    Some((CommandState::Done, _)) => CommandOutcome::Done { id },
                    Some((CommandState::Failed(reason), _)) => {
                        CommandOutcome::Failed { id, reason }
                    }
                    _ => CommandOutcome::Unknown { id },
                }
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

    /// The command's state and whether an owner started it, once `ready` accepts the state,
    /// or None after `timeout`. A forgotten command counts as failed.
    async fn wait_command(
        &self,
        id: u64,
        timeout: Duration,
        ready: impl Fn(&CommandState) -> bool,
    ) -> Option<(CommandState, bool)> {
        self.wait_for(Instant::now() + timeout, |c| {
            // A follower may not have applied the submission yet; once it has, a command
            // that is gone was trimmed with the oldest finished ones.
            let now = c.read(|s| {
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
}
