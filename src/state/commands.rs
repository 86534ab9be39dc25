//! Controls waiting for, or done by, an RTU's owner. A command is executed at most once: the
//! owner marks it executing in the log, under its epoch, before it touches the device.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::points::Value;
use crate::ids::NodeId;

/// Finished commands kept for `point write` and the forwarder to read their outcome.
pub const FINISHED_KEPT: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandState {
    /// Proposed; the owner has not started it.
    Pending,
    /// The owner is writing it to the device.
    Executing {
        node: NodeId,
        epoch: u64,
    },
    Done,
    Failed(String),
}

impl CommandState {
    pub fn is_finished(&self) -> bool {
        matches!(self, CommandState::Done | CommandState::Failed(_))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub id: u64,
    pub point: String,
    pub rtu: String,
    pub value: Value,
    /// Who asked, for the log and `point write`'s answer (an operator, a 104 master).
    pub origin: String,
    pub requested_at_ms: u64,
    pub state: CommandState,
    /// Set once an owner started it: a failure after that may have reached the device
    /// (the 104 forwarder answers ACTTERM, not a negative ACTCON).
    #[serde(default)]
    pub started: bool,
    /// The master selected the point first (select-before-operate): the owner of a 104
    /// RTU selects it on the device too, right before the execute.
    #[serde(default)]
    pub select: bool,
    /// A 104 device confirmed the execute (positive ACTCON); its ACTTERM is the outcome.
    #[serde(default)]
    pub confirmed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandOp {
    /// A new command. Fails at once if the RTU has no owner.
    Submit {
        point: String,
        rtu: String,
        value: Value,
        origin: String,
        now_ms: u64,
        #[serde(default)]
        select: bool,
    },
    /// The owner starts it (fenced by the caller with the owner's epoch).
    Start { id: u64, node: NodeId, epoch: u64 },
    /// The owner's outcome (fenced likewise).
    Finish {
        id: u64,
        epoch: u64,
        outcome: Result<(), String>,
    },
    /// The device confirmed the execute (fenced likewise).
    Confirm { id: u64, epoch: u64 },
    /// The requester gave up waiting: a command nobody started fails and never runs.
    Cancel { id: u64, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandRefusal {
    #[error("no command {0}")]
    Unknown(u64),
    #[error("command {0} was already started or finished")]
    NotPending(u64),
    #[error("command {0} is not executing under epoch {1}")]
    NotExecuting(u64, u64),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Commands {
    pub commands: BTreeMap<u64, Command>,
    pub next_id: u64,
    /// The ids of pending commands: every owner looks for its own at every applied entry, so
    /// this must not mean a walk over the finished ones.
    #[serde(default)]
    pending: BTreeSet<u64>,
}

impl Commands {
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        &mut self,
        point: &str,
        rtu: &str,
        value: Value,
        origin: &str,
        now_ms: u64,
        select: bool,
        owned: bool,
    ) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let state = if owned {
            self.pending.insert(id);
            CommandState::Pending
        } else {
            CommandState::Failed(format!("RTU {rtu} has no owner"))
        };
        self.commands.insert(
            id,
            Command {
                id,
                point: point.into(),
                rtu: rtu.into(),
                value,
                origin: origin.into(),
                requested_at_ms: now_ms,
                state,
                started: false,
                select,
                confirmed: false,
            },
        );
        self.trim();
        id
    }

    pub fn start(&mut self, id: u64, node: NodeId, epoch: u64) -> Result<(), CommandRefusal> {
        let c = self
            .commands
            .get_mut(&id)
            .ok_or(CommandRefusal::Unknown(id))?;
        if c.state != CommandState::Pending {
            return Err(CommandRefusal::NotPending(id));
        }
        c.state = CommandState::Executing { node, epoch };
        c.started = true;
        self.pending.remove(&id);
        Ok(())
    }

    pub fn finish(
        &mut self,
        id: u64,
        epoch: u64,
        outcome: &Result<(), String>,
    ) -> Result<(), CommandRefusal> {
        let c = self
            .commands
            .get_mut(&id)
            .ok_or(CommandRefusal::Unknown(id))?;
        match c.state {
            CommandState::Executing { epoch: e, .. } if e == epoch => {
                c.state = match outcome {
                    Ok(()) => CommandState::Done,
                    Err(reason) => CommandState::Failed(reason.clone()),
                };
                Ok(())
            }
            _ => Err(CommandRefusal::NotExecuting(id, epoch)),
        }
    }

    pub fn confirm(&mut self, id: u64, epoch: u64) -> Result<(), CommandRefusal> {
        let c = self
            .commands
            .get_mut(&id)
            .ok_or(CommandRefusal::Unknown(id))?;
        match c.state {
            CommandState::Executing { epoch: e, .. } if e == epoch => {
                c.confirmed = true;
                Ok(())
            }
            _ => Err(CommandRefusal::NotExecuting(id, epoch)),
        }
    }

    pub fn cancel(&mut self, id: u64, reason: &str) -> Result<(), CommandRefusal> {
        let c = self
            .commands
            .get_mut(&id)
            .ok_or(CommandRefusal::Unknown(id))?;
        if c.state != CommandState::Pending {
            return Err(CommandRefusal::NotPending(id));
        }
        c.state = CommandState::Failed(reason.into());
        self.pending.remove(&id);
        Ok(())
    }

    /// Commands of `rtu` that its owner should start.
    pub fn pending_for<'a>(&'a self, rtu: &'a str) -> impl Iterator<Item = &'a Command> + 'a {
        self.pending
            .iter()
            .filter_map(|id| self.commands.get(id))
            .filter(move |c| c.rtu == rtu && c.state == CommandState::Pending)
    }

    /// The owner of an RTU lost it (or died) while commands were executing: their outcome is
    /// unknown, and they must not run again.
    pub fn abandon(&mut self, rtu: &str) {
        for c in self.commands.values_mut() {
            if c.rtu == rtu && matches!(c.state, CommandState::Executing { .. }) {
                c.state = CommandState::Failed("the owner lost its lease while executing".into());
            }
        }
    }

    /// After every unfinished command was failed at once (a recovery): none is pending.
    pub fn forget_pending(&mut self) {
        self.pending.clear();
    }

    fn trim(&mut self) {
        let finished = self
            .commands
            .values()
            .filter(|c| c.state.is_finished())
            .count();
        let mut excess = finished.saturating_sub(FINISHED_KEPT);
        if excess == 0 {
            return;
        }
        self.commands.retain(|_, c| {
            if excess > 0 && c.state.is_finished() {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_runs_at_most_once_and_only_under_the_epoch_that_started_it() {
        let mut c = Commands::default();
        let id = c.submit("p", "r", Value::Single(true), "op", 1, false, true);
        assert_eq!(c.pending_for("r").count(), 1);
        assert_eq!(c.start(id, 5, 2), Ok(()));
        assert_eq!(c.start(id, 5, 2), Err(CommandRefusal::NotPending(id)));
        assert_eq!(c.pending_for("r").count(), 0);
        assert_eq!(
            c.finish(id, 1, &Ok(())),
            Err(CommandRefusal::NotExecuting(id, 1))
        );
        assert_eq!(c.finish(id, 2, &Ok(())), Ok(()));
        assert_eq!(c.commands[&id].state, CommandState::Done);
        assert_eq!(c.cancel(id, "late"), Err(CommandRefusal::NotPending(id)));
    }

    #[test]
    fn without_an_owner_a_command_fails_at_once_and_a_cancelled_one_never_starts() {
        let mut c = Commands::default();
        let orphan = c.submit("p", "r", Value::Single(true), "op", 1, false, false);
        assert!(matches!(c.commands[&orphan].state, CommandState::Failed(_)));
        let id = c.submit("p", "r", Value::Single(true), "op", 1, false, true);
        assert_eq!(c.cancel(id, "timeout"), Ok(()));
        assert_eq!(c.start(id, 5, 1), Err(CommandRefusal::NotPending(id)));
    }
}
