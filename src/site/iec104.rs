//! What an IEC 104 RTU's entry says: the `[rtu.iec104]` table (common address, originator,
//! link parameters, the periods of interrogation and clock synchronisation) and how a point
//! of such an RTU names its type and address. The site checks them when it validates;
//! acquisition uses the same answers.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{DecodeLevel, Point, PointKind, Table};
use crate::iec104::{LinkParams, TypeId};

/// The `[rtu.iec104]` table of a 104 RTU.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Iec104Rtu {
    /// The common address of the device's ASDUs; a point may name another one.
    pub common_address: Spanned<u16>,
    /// The originator address fepha puts in its ASDUs.
    #[serde(default)]
    pub originator: u8,
    #[serde(default = "default_k")]
    pub k: Spanned<u16>,
    #[serde(default = "default_w")]
    pub w: Spanned<u16>,
    /// Connection establishment time-out.
    #[serde(default = "default_t0")]
    pub t0_s: Spanned<f64>,
    #[serde(default = "default_t1")]
    pub t1_s: Spanned<f64>,
    #[serde(default = "default_t2")]
    pub t2_s: Spanned<f64>,
    #[serde(default = "default_t3")]
    pub t3_s: Spanned<f64>,
    /// A general interrogation follows every STARTDT, and then one every this many seconds;
    /// 0 (the default) only after STARTDT.
    #[serde(default = "zero")]
    pub gi_period_s: Spanned<f64>,
    /// A counter interrogation every this many seconds; 0 (the default) never.
    #[serde(default = "zero")]
    pub counter_period_s: Spanned<f64>,
    /// A clock synchronisation after STARTDT and every this many seconds; 0 (the default)
    /// never, for devices that take their time from GPS or NTP.
    #[serde(default = "zero")]
    pub clock_sync_period_s: Spanned<f64>,
    /// Acknowledge the device's I frames only once what they carried is committed in the log
    /// (the default), so that a device resends to the next owner what a dying one had not
    /// made safe. Off, frames are acknowledged on receipt, as a plain master does.
    #[serde(default = "yes")]
    pub ack_after_commit: bool,
    /// How long the device may take to confirm a command (ACTCON, then ACTTERM).
    #[serde(default = "default_command_timeout")]
    pub command_timeout_ms: Spanned<u64>,
    /// How much of the traffic with the device is logged.
    #[serde(default)]
    pub decode: DecodeLevel,
}

fn default_k() -> Spanned<u16> {
    Spanned::new(0..0, 12)
}
fn default_w() -> Spanned<u16> {
    Spanned::new(0..0, 8)
}
fn default_t0() -> Spanned<f64> {
    Spanned::new(0..0, 30.0)
}
fn default_t1() -> Spanned<f64> {
    Spanned::new(0..0, 15.0)
}
fn default_t2() -> Spanned<f64> {
    Spanned::new(0..0, 10.0)
}
fn default_t3() -> Spanned<f64> {
    Spanned::new(0..0, 20.0)
}
fn zero() -> Spanned<f64> {
    Spanned::new(0..0, 0.0)
}
fn yes() -> bool {
    true
}
fn default_command_timeout() -> Spanned<u64> {
    Spanned::new(0..0, 5_000)
}

/// A time in seconds that is not one: the key and why.
pub(crate) type BadTime = (&'static str, String);

fn secs(name: &'static str, s: f64, zero_ok: bool) -> Result<Duration, BadTime> {
    let ok = s.is_finite() && s < 86_400.0 && (s > 0.0 || (zero_ok && s == 0.0));
    if ok {
        Ok(Duration::from_secs_f64(s))
    } else if zero_ok {
        Err((name, format!("{s} is not 0 or a time up to one day")))
    } else {
        Err((name, format!("{s} is not a time between 0 and one day")))
    }
}

/// A period that may be off (0).
fn period(name: &'static str, s: f64) -> Result<Option<Duration>, BadTime> {
    secs(name, s, true).map(|d| (!d.is_zero()).then_some(d))
}

impl Iec104Rtu {
    /// The link parameters, or the first key that is not a time.
    pub fn link_params(&self) -> Result<LinkParams, BadTime> {
        Ok(LinkParams {
            k: *self.k.get_ref(),
            w: *self.w.get_ref(),
            t1: secs("t1_s", *self.t1_s.get_ref(), false)?,
            t2: secs("t2_s", *self.t2_s.get_ref(), false)?,
            t3: secs("t3_s", *self.t3_s.get_ref(), false)?,
        })
    }

    pub fn t0(&self) -> Result<Duration, BadTime> {
        secs("t0_s", *self.t0_s.get_ref(), false)
    }

    pub fn gi_period(&self) -> Result<Option<Duration>, BadTime> {
        period("gi_period_s", *self.gi_period_s.get_ref())
    }

    pub fn counter_period(&self) -> Result<Option<Duration>, BadTime> {
        period("counter_period_s", *self.counter_period_s.get_ref())
    }

    pub fn clock_sync_period(&self) -> Result<Option<Duration>, BadTime> {
        period("clock_sync_period_s", *self.clock_sync_period_s.get_ref())
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(*self.command_timeout_ms.get_ref())
    }
}

/// The point kind each 104 type carries.
pub(crate) fn kind_of(type_id: TypeId) -> Option<PointKind> {
    use TypeId::*;
    Some(match type_id {
        MSpNa1 | MSpTb1 => PointKind::Single,
        MDpNa1 | MDpTb1 => PointKind::Double,
        MStNa1 | MStTb1 => PointKind::Step,
        MBoNa1 | MBoTb1 => PointKind::Bitstring,
        MMeNa1 | MMeTd1 | MMeNb1 | MMeTe1 | MMeNc1 | MMeTf1 => PointKind::Measured,
        MItNa1 | MItTb1 => PointKind::Counter,
        CScNa1 | CScTa1 => PointKind::SingleCommand,
        CDcNa1 | CDcTa1 => PointKind::DoubleCommand,
        CSeNa1 | CSeTa1 | CSeNb1 | CSeTb1 | CSeNc1 | CSeTc1 => PointKind::Setpoint,
        CRcNa1 | CRcTa1 | MEiNa1 | CIcNa1 | CCiNa1 | CCsNa1 => return None,
    })
}

/// The type without its time tag: the plain type and its CP56Time2a twin carry one point.
pub(crate) fn untimed(type_id: TypeId) -> TypeId {
    use TypeId::*;
    match type_id {
        MSpTb1 => MSpNa1,
        MDpTb1 => MDpNa1,
        MStTb1 => MStNa1,
        MBoTb1 => MBoNa1,
        MMeTd1 => MMeNa1,
        MMeTe1 => MMeNb1,
        MMeTf1 => MMeNc1,
        MItTb1 => MItNa1,
        CScTa1 => CScNa1,
        CDcTa1 => CDcNa1,
        CSeTa1 => CSeNa1,
        CSeTb1 => CSeNb1,
        CSeTc1 => CSeNc1,
        CRcTa1 => CRcNa1,
        other => other,
    }
}

impl Point {
    /// A Modbus point's table (validation makes sure a Modbus point has one).
    pub fn modbus_table(&self) -> Table {
        self.table.as_ref().map_or(Table::Coil, |t| *t.get_ref())
    }

    /// A Modbus point's address (validation makes sure a Modbus point has one).
    pub fn modbus_address(&self) -> u16 {
        self.address.as_ref().map_or(0, |a| *a.get_ref())
    }

    /// A 104 point's type, if it names one the codec knows.
    pub fn iec104_type(&self) -> Option<TypeId> {
        self.type_id
            .as_ref()
            .and_then(|t| TypeId::from_mnemonic(t.get_ref()))
    }
}
