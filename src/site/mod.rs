//! The site configuration: one TOML document describing the RTUs, their channels and points,
//! the 104 forwarders and their IOA maps, and the timers. It is validated whole before it is
//! proposed, and every node applies it at the same log index.

mod check;
mod diff;
mod forwarding;
mod iec104;
mod validate;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub(crate) use check::Counts;
pub(crate) use check::{MAX_CONFIG_BYTES, check, check_size};
pub(crate) use diff::diff;
pub(crate) use iec104::Iec104Rtu;
pub(crate) use iec104::{kind_of, untimed};
pub(crate) use validate::parse;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub site: SiteInfo,
    #[serde(default)]
    pub timers: Timers,
    #[serde(default, rename = "rtu")]
    pub rtus: Vec<Rtu>,
    #[serde(default, rename = "point")]
    pub points: Vec<Point>,
    #[serde(default, rename = "forwarder")]
    pub forwarders: Vec<Forwarder>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteInfo {
    pub name: Spanned<String>,
}

/// Lease and batching timers (see docs/architecture.md, "The lease protocol").
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timers {
    /// How long a node's session (and so its RTU leases) lives without a renewal.
    pub session_ttl_ms: Spanned<u64>,
    /// Subtracted from the owner's local deadline, for clock drift between boxes.
    pub drift_margin_ms: Spanned<u64>,
    /// First back-off before an RTU is handed over again; it doubles up to the maximum.
    pub handover_backoff_ms: Spanned<u64>,
    pub handover_backoff_max_ms: Spanned<u64>,
    /// Point changes are batched into one log entry per this many ms or this many changes.
    pub batch_ms: Spanned<u64>,
    pub batch_max_changes: Spanned<u32>,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            session_ttl_ms: Spanned::new(0..0, 1000),
            drift_margin_ms: Spanned::new(0..0, 100),
            handover_backoff_ms: Spanned::new(0..0, 1000),
            handover_backoff_max_ms: Spanned::new(0..0, 60_000),
            batch_ms: Spanned::new(0..0, 5),
            batch_max_changes: Spanned::new(0..0, 1000),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Modbus,
    /// IEC 60870-5-104: the RTU is a controlled station, fepha its controlling station.
    Iec104,
}

/// What the nodes that do not own an RTU do with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Standby {
    /// Nothing.
    Cold,
    /// Open a TCP connection to each endpoint and send nothing, to report reachability.
    #[default]
    Probe,
    /// Also poll read-only, for an instant take-over where the device allows several masters
    /// (Modbus only: a 104 device serves one started master per redundancy group).
    Hot,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rtu {
    pub id: Spanned<String>,
    pub protocol: Protocol,
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: Spanned<u64>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: Spanned<u64>,
    #[serde(default)]
    pub standby: Standby,
    #[serde(default, rename = "channel")]
    pub channels: Vec<Channel>,
    /// The IEC 104 parameters; required for, and only for, `protocol = "iec104"`.
    #[serde(default)]
    pub iec104: Option<Iec104Rtu>,
}

fn default_unit_id() -> u8 {
    1
}

fn default_poll_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}

fn default_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}

/// One way to reach an RTU: endpoints tried in order.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub name: Spanned<String>,
    pub endpoints: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PointKind {
    Single,
    Double,
    Measured,
    Counter,
    SingleCommand,
    DoubleCommand,
    Setpoint,
    /// A step position (IEC 104 RTUs only).
    Step,
    /// A bitstring of 32 bits (IEC 104 RTUs only).
    Bitstring,
}

impl PointKind {
    pub fn is_indication(self) -> bool {
        matches!(self, PointKind::Single | PointKind::Double)
    }

    pub fn is_command(self) -> bool {
        matches!(
            self,
            PointKind::SingleCommand | PointKind::DoubleCommand | PointKind::Setpoint
        )
    }
}

/// The Modbus table a point lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Coil,
    DiscreteInput,
    Holding,
    Input,
}

impl Table {
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    U16,
    I16,
    U32,
    I32,
    F32,
}

impl Format {
    /// Registers the value spans.
    pub fn registers(self) -> u16 {
        match self {
            Format::U16 | Format::I16 => 1,
            Format::U32 | Format::I32 | Format::F32 => 2,
        }
    }
}

/// The order of the two registers of a 32-bit value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    /// High word first (the Modbus convention).
    #[default]
    Big,
    Little,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    pub id: Spanned<String>,
    pub rtu: Spanned<String>,
    pub kind: Spanned<PointKind>,
    /// Modbus points: the table and the zero-based address (a double indication uses this
    /// bit and the next). Read through [`Point::modbus_table`] and [`Point::modbus_address`].
    #[serde(default)]
    pub table: Option<Spanned<Table>>,
    #[serde(default)]
    pub address: Option<Spanned<u16>>,
    /// IEC 104 points: the device's type (the standard's mnemonic, such as `M_SP_TB_1`; the
    /// plain and the time-tagged twin are the same point), its IOA, and its common address
    /// when it is not the RTU's.
    #[serde(default, rename = "type")]
    pub type_id: Option<Spanned<String>>,
    #[serde(default)]
    pub ioa: Option<Spanned<u32>>,
    #[serde(default)]
    pub common_address: Option<Spanned<u16>>,
    #[serde(default)]
    pub format: Option<Spanned<Format>>,
    #[serde(default)]
    pub word_order: WordOrder,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    /// Measured values only: a change smaller than this is not an event.
    #[serde(default)]
    pub deadband: Option<Spanned<f64>>,
    #[serde(default)]
    pub description: Option<String>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMode {
    /// Only the Raft leader starts data transfer.
    #[default]
    Leader,
    /// Every node serves the identical stream.
    All,
}

/// What a STARTDT on a second connection of a redundancy group does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Takeover {
    /// The group moves to the new connection; the old one is closed and its unacknowledged
    /// events go again on the new one (what redundant masters expect).
    #[default]
    OnStart,
    /// The started connection keeps the group until it is stopped or fails; the new
    /// connection's STARTDT waits until then.
    AfterStop,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Forwarder {
    pub name: Spanned<String>,
    pub port: Spanned<u16>,
    pub common_address: Spanned<u16>,
    #[serde(default)]
    pub mode: ForwardMode,
    /// IEC 104 link parameters: windows k and w, timers t1..t3 in seconds.
    #[serde(default = "default_k")]
    pub k: u16,
    #[serde(default = "default_w")]
    pub w: u16,
    #[serde(default = "default_t1")]
    pub t1_s: f64,
    #[serde(default = "default_t2")]
    pub t2_s: f64,
    #[serde(default = "default_t3")]
    pub t3_s: f64,
    #[serde(default)]
    pub takeover: Takeover,
    /// Events kept per group while no master of the group has acknowledged them; beyond
    /// this the oldest are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: u32,
    /// How long a select (of select-before-operate) stays valid for its execute.
    #[serde(default = "default_select_timeout")]
    pub select_timeout_ms: u64,
    /// How long a master's command may wait for its RTU's owner to execute it.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_ms: u64,
    /// Redundancy groups by master address; none declared means one group for everyone.
    #[serde(default, rename = "group")]
    pub groups: Vec<Group>,
    #[serde(default, rename = "map")]
    pub maps: Vec<IoaMap>,
    /// How much of the traffic with the masters is logged.
    #[serde(default)]
    pub decode: DecodeLevel,
}

/// How much of each IEC 104 frame is logged, for debugging in the field (at `info`, target
/// `fepha::iec104::frames`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodeLevel {
    #[default]
    Nothing,
    /// The APCI: frame format, sequence numbers, U function.
    Apci,
    /// The APCI and the ASDU's data unit identifier (type, cause, common address).
    Header,
    /// Everything, each information object included.
    Objects,
}

impl DecodeLevel {
    /// The frame log of this level, if it logs at all.
    pub(crate) fn frame_log(self) -> Option<crate::iec104::frame_log::FrameLog> {
        use crate::iec104::frame_log::{Depth, FrameLog};
        let depth = match self {
            DecodeLevel::Nothing => return None,
            DecodeLevel::Apci => Depth::Apci,
            DecodeLevel::Header => Depth::Header,
            DecodeLevel::Objects => Depth::Objects,
        };
        Some(FrameLog::new(depth))
    }
}

fn default_k() -> u16 {
    12
}
fn default_w() -> u16 {
    8
}
fn default_t1() -> f64 {
    15.0
}
fn default_t2() -> f64 {
    10.0
}
fn default_t3() -> f64 {
    20.0
}
fn default_queue() -> u32 {
    10_000
}
fn default_select_timeout() -> u64 {
    10_000
}
fn default_command_timeout() -> u64 {
    5_000
}

/// A redundancy group (IEC 60870-5-104 edition 2): the connections of one master, of which
/// at most one is started at a time, cluster-wide.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: Spanned<String>,
    /// The master's IP addresses; a group without any takes every master not listed
    /// elsewhere.
    #[serde(default)]
    pub masters: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IoaMap {
    pub point: Spanned<String>,
    pub ioa: Spanned<u32>,
}
