//! What the controlled station answers to an ASDU from a master: interrogations, clock
//! synchronisation, selects and the negative confirmations of the standard. No I/O; a
//! command to execute is handed back to the caller, which runs it through the log.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::image::{Carrier, Image};
use crate::iec104::{Asdu, Cause, Cp56Time2a, DoubleCommandState, Element, QOI_STATION, TypeId};
use crate::site::PointKind;
use crate::state::points::{PointState, Value};

/// The broadcast common address, accepted for station-wide commands.
const BROADCAST: u16 = 0xFFFF;

/// A command the caller proposes to the log; ACTCON and ACTTERM follow its outcome.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Execute {
    pub request: Asdu,
    pub point: String,
    pub value: Value,
    /// The master selected the point first (select-before-operate).
    pub selected: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reaction {
    /// Send these, in order.
    Send(Vec<Asdu>),
    Execute(Execute),
}

/// Why a select or an execute was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SelectRefusal {
    /// Another connection holds a live select on the point.
    Foreign,
    /// This connection's select ran out before its execute.
    Expired,
    /// The execute is not the command that was selected.
    Different,
}

#[derive(Debug, Clone, PartialEq)]
struct Select {
    conn: u64,
    value: Value,
    until: Instant,
}

/// The selects (of select-before-operate) of one forwarder on this node, across its
/// connections.
#[derive(Debug, Default)]
pub(crate) struct Selects {
    held: HashMap<u32, Select>,
}

impl Selects {
    pub(crate) fn select(
        &mut self,
        ioa: u32,
        conn: u64,
        value: Value,
        now: Instant,
        timeout: Duration,
    ) -> Result<(), SelectRefusal> {
        if let Some(s) = self.held.get(&ioa)
            && s.conn != conn
            && s.until > now
        {
            return Err(SelectRefusal::Foreign);
        }
        let until = now + timeout;
        self.held.insert(ioa, Select { conn, value, until });
        Ok(())
    }

    /// Whether `conn` may execute `value` on `ioa` now. Without any select it may (direct
    /// execute); its own select is used up either way.
    pub(crate) fn execute(
        &mut self,
        ioa: u32,
        conn: u64,
        value: Value,
        now: Instant,
    ) -> Result<(), SelectRefusal> {
        let Some(s) = self.held.get(&ioa) else {
            return Ok(());
        };
        if s.conn != conn {
            if s.until > now {
                return Err(SelectRefusal::Foreign);
            }
            self.held.remove(&ioa);
            return Ok(());
        }
        let s = self.held.remove(&ioa);
        match s {
            Some(s) if s.until <= now => Err(SelectRefusal::Expired),
            Some(s) if s.value != value => Err(SelectRefusal::Different),
            _ => Ok(()),
        }
    }

    /// Whether `conn` holds a live select on `ioa`.
    pub(crate) fn holds(&self, ioa: u32, conn: u64, now: Instant) -> bool {
        self.held
            .get(&ioa)
            .is_some_and(|s| s.conn == conn && s.until > now)
    }

    /// A deactivation of `conn`'s select; false if it held none that was still live.
    pub(crate) fn deselect(&mut self, ioa: u32, conn: u64, now: Instant) -> bool {
        match self.held.get(&ioa) {
            Some(s) if s.conn == conn => {
                let live = s.until > now;
                self.held.remove(&ioa);
                live
            }
            _ => false,
        }
    }

    /// A closed connection's selects go with it.
    pub(crate) fn forget(&mut self, conn: u64) {
        self.held.retain(|_, s| s.conn != conn);
    }
}

/// Everything [`react`] needs besides the ASDU.
pub(crate) struct Context<'a> {
    pub image: &'a Image,
    pub conn: u64,
    pub now: Instant,
    /// The node's clock, for clock synchronisation's ACTCON.
    pub now_ms: i64,
    pub select_timeout: Duration,
    pub selects: &'a mut Selects,
}

/// The answer to one ASDU from a master. `states` is read only for interrogations.
pub(crate) fn react(
    asdu: &Asdu,
    cx: Context<'_>,
    states: impl FnOnce() -> BTreeMap<String, PointState>,
) -> Reaction {
    let station_wide = matches!(
        asdu.type_id,
        TypeId::CIcNa1 | TypeId::CCiNa1 | TypeId::CCsNa1
    );
    let ca = cx.image.common_address;
    if asdu.common_address != ca && !(station_wide && asdu.common_address == BROADCAST) {
        return refuse(asdu, Cause::UNKNOWN_COMMON_ADDRESS);
    }
    if is_command(asdu.type_id) {
        return command(asdu, cx);
    }
    if !station_wide {
        // A monitor-direction type, or one this station does not serve, from a master.
        return refuse(asdu, Cause::UNKNOWN_TYPE);
    }
    if asdu.cause != Cause::ACTIVATION {
        return refuse(asdu, Cause::UNKNOWN_CAUSE);
    }
    let [object] = asdu.objects.as_slice() else {
        return refuse(asdu, Cause::ACTIVATION_CON);
    };
    if object.ioa != 0 {
        return refuse(asdu, Cause::UNKNOWN_IOA);
    }
    // Replies carry the station's own address, also to a broadcast.
    let mut request = asdu.clone();
    request.common_address = ca;
    let con = request.reply(Cause::ACTIVATION_CON, false);
    let term = request.reply(Cause::ACTIVATION_TERMINATION, false);
    let data = match object.element {
        Element::Interrogation { qoi } if qoi == QOI_STATION => cx.image.interrogation(&states()),
        // No point belongs to a group: those interrogations are answered, empty.
        Element::Interrogation { qoi } if (21..=36).contains(&qoi) => Ok(Vec::new()),
        Element::CounterInterrogation(q) if q.request == 5 => cx.image.counters(&states()),
        Element::CounterInterrogation(q) if (1..=4).contains(&q.request) => Ok(Vec::new()),
        Element::ClockSync(theirs) => {
            // The node keeps the time of its operating system: the master learns it
            // rather than setting it. A clock outside 2000..2099 answers invalid.
            let now =
                Cp56Time2a::from_unix_ms(cx.now_ms).unwrap_or_else(|_| theirs.with_invalid(true));
            let mut con = con;
            if let Some(o) = con.objects.first_mut() {
                o.element = Element::ClockSync(now);
            }
            return Reaction::Send(vec![con]);
        }
        _ => return refuse(asdu, Cause::ACTIVATION_CON),
    };
    match data {
        Ok(mut data) => {
            let mut out = Vec::with_capacity(data.len() + 2);
            out.push(con);
            out.append(&mut data);
            out.push(term);
            Reaction::Send(out)
        }
        Err(e) => {
            tracing::error!("cannot encode the interrogation reply: {e}");
            refuse(asdu, Cause::ACTIVATION_CON)
        }
    }
}

fn command(asdu: &Asdu, cx: Context<'_>) -> Reaction {
    let activation = asdu.cause == Cause::ACTIVATION;
    if !activation && asdu.cause != Cause::DEACTIVATION {
        return refuse(asdu, Cause::UNKNOWN_CAUSE);
    }
    let con_cause = if activation {
        Cause::ACTIVATION_CON
    } else {
        Cause::DEACTIVATION_CON
    };
    // One object per command, and none under test conditions: a test must not act on the
    // process, and this station has no way to pretend.
    let [object] = asdu.objects.as_slice() else {
        return refuse(asdu, con_cause);
    };
    if asdu.sq || asdu.test {
        return refuse(asdu, con_cause);
    }
    let Some(mapped) = cx.image.by_ioa(object.ioa) else {
        return refuse(asdu, Cause::UNKNOWN_IOA);
    };
    let Carrier::Command(kind) = mapped.carrier else {
        return refuse(asdu, Cause::UNKNOWN_IOA);
    };
    // A command of another kind than the point's is a (type, IOA) pair the station does
    // not have.
    let Some((value, select)) = command_value(kind, &object.element) else {
        return refuse(asdu, Cause::UNKNOWN_IOA);
    };
    let Some(value) = value else {
        return refuse(asdu, con_cause);
    };
    let (ioa, conn) = (object.ioa, cx.conn);
    if !activation {
        let held = select && cx.selects.deselect(ioa, conn, cx.now);
        return Reaction::Send(vec![asdu.reply(con_cause, !held)]);
    }
    if select {
        let ok = cx
            .selects
            .select(ioa, conn, value, cx.now, cx.select_timeout)
            .is_ok();
        return Reaction::Send(vec![asdu.reply(con_cause, !ok)]);
    }
    let selected = cx.selects.holds(ioa, conn, cx.now);
    match cx.selects.execute(ioa, conn, value, cx.now) {
        Ok(()) => Reaction::Execute(Execute {
            request: asdu.clone(),
            point: mapped.point.clone(),
            value,
            selected,
        }),
        Err(_) => refuse(asdu, con_cause),
    }
}

/// The value a command element sets on a point of `kind`, and whether it is a select.
/// None if the element is not a command for that kind; Some((None, _)) if its value is
/// not permitted (a double command's states 0 and 3).
fn command_value(kind: PointKind, element: &Element) -> Option<(Option<Value>, bool)> {
    Some(match (kind, element) {
        (PointKind::SingleCommand, Element::SingleCommand { on, qualifier, .. }) => {
            (Some(Value::Single(*on)), qualifier.select)
        }
        (
            PointKind::DoubleCommand,
            Element::DoubleCommand {
                state, qualifier, ..
            },
        ) => {
            let value = match state {
                DoubleCommandState::On => Some(Value::Double(2)),
                DoubleCommandState::Off => Some(Value::Double(1)),
                _ => None,
            };
            (value, qualifier.select)
        }
        (
            PointKind::Setpoint,
            Element::SetpointFloat {
                value, qualifier, ..
            },
        ) => (Some(Value::Measured(f64::from(*value))), qualifier.select),
        (
            PointKind::Setpoint,
            Element::SetpointScaled {
                value, qualifier, ..
            },
        ) => (Some(Value::Measured(f64::from(*value))), qualifier.select),
        (
            PointKind::Setpoint,
            Element::SetpointNormalized {
                value, qualifier, ..
            },
        ) => (
            Some(Value::Measured(f64::from(crate::iec104::nva_to_f32(
                *value,
            )))),
            qualifier.select,
        ),
        _ => return None,
    })
}

fn is_command(type_id: TypeId) -> bool {
    matches!(
        type_id,
        TypeId::CScNa1
            | TypeId::CDcNa1
            | TypeId::CRcNa1
            | TypeId::CSeNa1
            | TypeId::CSeNb1
            | TypeId::CSeNc1
            | TypeId::CScTa1
            | TypeId::CDcTa1
            | TypeId::CRcTa1
            | TypeId::CSeTa1
            | TypeId::CSeTb1
            | TypeId::CSeTc1
    )
}

/// The request mirrored with `cause` and P/N set.
pub(crate) fn refuse(asdu: &Asdu, cause: Cause) -> Reaction {
    Reaction::Send(vec![asdu.reply(cause, true)])
}

#[cfg(test)]
#[path = "station_tests.rs"]
mod tests;
