//! The simulated station's profile: its common address and link parameters, its points and
//! their start values, which points change on their own, and how it answers commands.
//!
//! ```toml
//! common_address = 47
//! # k = 12, w = 8, t1_s = 15, t2_s = 10, t3_s = 20   (the defaults; seconds may be fractions)
//! # queue = 10000                 # spontaneous changes kept until acknowledged
//!
//! [[point]]
//! ioa = 100
//! type = "M_SP_TB_1"              # M_SP_*, M_DP_*, M_ST_*, M_BO_*, M_ME_*, M_IT_* (NA/TB/TD/...)
//! value = true                    # optional: bool (single), 0..=3 (double), a number otherwise
//! quality = ["invalid"]           # optional: invalid not_topical substituted blocked overflow
//!                                 # (steps also transient; counters: invalid carry adjusted)
//!
//! [[schedule]]
//! kind = "toggle"                 # toggle (single, double) | ramp (numbers)
//! ioa = 100
//! every_ms = 1000
//! # count = 10                    # stop after this many changes
//! # start_after_ms = 1000         # the first change (default every_ms after the start)
//! # ramp only: step = 1, min, max # past max it starts again at min (default: the type's range)
//!
//! [[command]]
//! ioa = 5001
//! type = "C_SC_NA_1"              # C_SC, C_DC, C_RC, C_SE_NA/NB/NC; the _TA_ twin is the same
//! # answer = "positive"           # positive | negative | silent (never confirms)
//! # term_delay_ms = 0             # ACTTERM this long after the execute's ACTCON
//! # feedback_ioa = 100            # this point takes the commanded value, sent spontaneously
//! ```
//!
//! Parsing is strict (`deny_unknown_fields`), and every check names the key it refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::points::{CommandKind, Flags, Kind, Point, Value};
use crate::iec104::{DoublePointValue, LinkParams, MAX_IOA, ParamError, TypeId, f32_to_nva};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProfileError {
    #[error("cannot read the profile {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("profile {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("profile {}: `{key}`: {reason}", path.display())]
    BadValue {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// How a command entry answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Answer {
    /// ACTCON, and ACTTERM for an execute.
    #[default]
    Positive,
    /// A negative ACTCON.
    Negative,
    /// Nothing at all.
    Silent,
}

impl Answer {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Answer::Positive => "positive",
            Answer::Negative => "negative",
            Answer::Silent => "silent",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ScheduleKind {
    Toggle,
    Ramp,
}

/// A validated profile.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Profile {
    pub common_address: u16,
    pub params: LinkParams,
    /// The most spontaneous changes kept unacknowledged; beyond it the oldest is dropped.
    pub queue: usize,
    /// In profile order; IOAs are unique.
    pub points: Vec<Point>,
    pub schedules: Vec<Schedule>,
    /// By IOA.
    pub commands: BTreeMap<u32, Command>,
}

/// A point that changes on its own.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Schedule {
    pub ioa: u32,
    pub change: Change,
    pub every: Duration,
    /// When the first change comes, after the start.
    pub start_after: Duration,
    /// Stop after this many changes; `None`: never stop.
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Change {
    Toggle,
    Ramp { step: f64, min: f64, max: f64 },
}

/// How the station answers commands to one IOA.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Command {
    pub ioa: u32,
    pub kind: CommandKind,
    pub answer: Answer,
    pub term_delay: Duration,
    pub feedback_ioa: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    common_address: u16,
    #[serde(default = "default_k")]
    k: u16,
    #[serde(default = "default_w")]
    w: u16,
    #[serde(default = "default_t1")]
    t1_s: f64,
    #[serde(default = "default_t2")]
    t2_s: f64,
    #[serde(default = "default_t3")]
    t3_s: f64,
    #[serde(default = "default_queue")]
    queue: usize,
    #[serde(default, rename = "point")]
    points: Vec<RawPoint>,
    #[serde(default, rename = "schedule")]
    schedules: Vec<RawSchedule>,
    #[serde(default, rename = "command")]
    commands: Vec<RawCommand>,
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
fn default_queue() -> usize {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoint {
    ioa: u32,
    #[serde(rename = "type")]
    type_name: String,
    value: Option<toml::Value>,
    #[serde(default)]
    quality: Vec<String>,
}

/// One flat struct rather than an enum tagged by `kind`, as in the Modbus sim's profile: a
/// tagged enum loses the key in toml's error messages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    kind: ScheduleKind,
    ioa: u32,
    every_ms: u64,
    count: Option<u64>,
    start_after_ms: Option<u64>,
    step: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    ioa: u32,
    #[serde(rename = "type")]
    type_name: String,
    #[serde(default)]
    answer: Answer,
    #[serde(default)]
    term_delay_ms: u64,
    feedback_ioa: Option<u32>,
}

/// The offending key and why.
type Bad = (String, String);

fn bad<T>(key: impl Into<String>, reason: impl Into<String>) -> Result<T, Bad> {
    Err((key.into(), reason.into()))
}

impl Profile {
    pub(crate) fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Profile::parse(path, &text)
    }

    /// Parses and validates; `path` is only used in error messages.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Profile, ProfileError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ProfileError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Profile::validate(raw).map_err(|(key, reason)| ProfileError::BadValue {
            path: path.to_owned(),
            key,
            reason,
        })
    }

    /// The point at `ioa`.
    #[cfg(test)]
    pub(crate) fn point(&self, ioa: u32) -> Option<&Point> {
        self.points.iter().find(|p| p.ioa == ioa)
    }

    fn validate(raw: Raw) -> Result<Profile, Bad> {
        if matches!(raw.common_address, 0 | u16::MAX) {
            return bad(
                "common_address",
                format!(
                    "{} is not a station address (0 is unused, 65535 is the broadcast address)",
                    raw.common_address
                ),
            );
        }
        let params = LinkParams {
            k: raw.k,
            w: raw.w,
            t1: seconds("t1_s", raw.t1_s)?,
            t2: seconds("t2_s", raw.t2_s)?,
            t3: seconds("t3_s", raw.t3_s)?,
        };
        if let Err(e) = params.validate() {
            let key = match e {
                ParamError::K(_) => "k",
                ParamError::W { .. } => "w",
                ParamError::T2NotBelowT1 { .. } => "t2_s",
            };
            return bad(key, e.to_string());
        }
        if raw.queue == 0 {
            return bad("queue", "must keep at least 1 event");
        }

        let mut points: Vec<Point> = Vec::with_capacity(raw.points.len());
        for (i, p) in raw.points.into_iter().enumerate() {
            let key = |field: &str| format!("point[{i}].{field}");
            check_ioa(&key("ioa"), p.ioa)?;
            if let Some(j) = points.iter().position(|q| q.ioa == p.ioa) {
                return bad(key("ioa"), format!("{} is point[{j}]'s IOA too", p.ioa));
            }
            let Some((kind, timed)) = type_of(&p.type_name).and_then(Kind::of) else {
                return bad(
                    key("type"),
                    format!(
                        "{:?} is not a monitored type this sim serves (one of {})",
                        p.type_name,
                        monitored_types().join(", ")
                    ),
                );
            };
            let value = initial_value(kind, p.value.as_ref()).map_err(|r| (key("value"), r))?;
            let mut flags = Flags::default();
            for name in &p.quality {
                if !Flags::names(kind).contains(&name.as_str()) || !flags.set(name) {
                    return bad(
                        key("quality"),
                        format!(
                            "{name:?} is not a quality flag of {} (one of {})",
                            p.type_name,
                            Flags::names(kind).join(", ")
                        ),
                    );
                }
            }
            points.push(Point {
                ioa: p.ioa,
                kind,
                timed,
                value,
                flags,
            });
        }

        let mut schedules = Vec::with_capacity(raw.schedules.len());
        for (i, s) in raw.schedules.into_iter().enumerate() {
            let key = |field: &str| format!("schedule[{i}].{field}");
            let Some(point) = points.iter().find(|p| p.ioa == s.ioa) else {
                return bad(key("ioa"), format!("no [[point]] has IOA {}", s.ioa));
            };
            if s.every_ms == 0 {
                return bad(key("every_ms"), "must be at least 1");
            }
            if s.count == Some(0) {
                return bad(key("count"), "must be at least 1 (leave it out: no end)");
            }
            let change = match s.kind {
                ScheduleKind::Toggle => {
                    if !point.kind.is_indication() {
                        return bad(
                            key("kind"),
                            format!("IOA {} is a number: use ramp, not toggle", s.ioa),
                        );
                    }
                    for (field, present) in [
                        ("step", s.step.is_some()),
                        ("min", s.min.is_some()),
                        ("max", s.max.is_some()),
                    ] {
                        if present {
                            return bad(key(field), "a toggle takes no such key");
                        }
                    }
                    Change::Toggle
                }
                ScheduleKind::Ramp => {
                    if point.kind.is_indication() {
                        return bad(
                            key("kind"),
                            format!("IOA {} is an indication: use toggle, not ramp", s.ioa),
                        );
                    }
                    let (low, high) = point.kind.range();
                    let step = s.step.unwrap_or(1.0);
                    if !step.is_finite() || step == 0.0 {
                        return bad(key("step"), format!("{step} is not a non-zero number"));
                    }
                    let min = s.min.unwrap_or(low);
                    let max = s.max.unwrap_or(high);
                    for (field, v) in [("min", min), ("max", max)] {
                        if !(low..=high).contains(&v) {
                            return bad(
                                key(field),
                                format!("{v} is outside the point's range {low}..={high}"),
                            );
                        }
                    }
                    if max <= min {
                        return bad(key("max"), format!("{max} is not above min ({min})"));
                    }
                    Change::Ramp { step, min, max }
                }
            };
            schedules.push(Schedule {
                ioa: s.ioa,
                change,
                every: Duration::from_millis(s.every_ms),
                start_after: Duration::from_millis(s.start_after_ms.unwrap_or(s.every_ms)),
                count: s.count,
            });
        }

        let mut commands = BTreeMap::new();
        for (i, c) in raw.commands.into_iter().enumerate() {
            let key = |field: &str| format!("command[{i}].{field}");
            check_ioa(&key("ioa"), c.ioa)?;
            if commands.contains_key(&c.ioa) {
                return bad(key("ioa"), format!("IOA {} has another [[command]]", c.ioa));
            }
            let Some(kind) = type_of(&c.type_name).and_then(CommandKind::of) else {
                return bad(
                    key("type"),
                    format!(
                        "{:?} is not a command type this sim answers (one of {})",
                        c.type_name,
                        command_types().join(", ")
                    ),
                );
            };
            if let Some(ioa) = c.feedback_ioa {
                let Some(point) = points.iter().find(|p| p.ioa == ioa) else {
                    return bad(key("feedback_ioa"), format!("no [[point]] has IOA {ioa}"));
                };
                if !kind.feeds(point.kind) {
                    return bad(
                        key("feedback_ioa"),
                        format!(
                            "a {} cannot set point {ioa} ({:?})",
                            kind.plain_type().mnemonic(),
                            point.kind
                        ),
                    );
                }
                if c.answer != Answer::Positive {
                    return bad(
                        key("feedback_ioa"),
                        "only a positive answer executes, so only it has feedback",
                    );
                }
            }
            commands.insert(
                c.ioa,
                Command {
                    ioa: c.ioa,
                    kind,
                    answer: c.answer,
                    term_delay: Duration::from_millis(c.term_delay_ms),
                    feedback_ioa: c.feedback_ioa,
                },
            );
        }

        Ok(Profile {
            common_address: raw.common_address,
            params,
            queue: raw.queue,
            points,
            schedules,
            commands,
        })
    }
}

fn seconds(key: &str, s: f64) -> Result<Duration, Bad> {
    if s.is_finite() && s > 0.0 && s < 86_400.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        bad(key, format!("{s} is not a time between 0 and one day"))
    }
}

fn check_ioa(key: &str, ioa: u32) -> Result<(), Bad> {
    if ioa == 0 || ioa > MAX_IOA {
        return bad(key, format!("{ioa} is outside 1..={MAX_IOA}"));
    }
    Ok(())
}

/// The type with the standard mnemonic `name` (exactly, e.g. "M_SP_TB_1").
fn type_of(name: &str) -> Option<TypeId> {
    TypeId::ALL.into_iter().find(|t| t.mnemonic() == name)
}

fn monitored_types() -> Vec<&'static str> {
    TypeId::ALL
        .into_iter()
        .filter(|t| Kind::of(*t).is_some())
        .map(TypeId::mnemonic)
        .collect()
}

fn command_types() -> Vec<&'static str> {
    TypeId::ALL
        .into_iter()
        .filter(|t| CommandKind::of(*t).is_some())
        .map(TypeId::mnemonic)
        .collect()
}

/// A point's start value from the profile (absent: off, 0).
fn initial_value(kind: Kind, value: Option<&toml::Value>) -> Result<Value, String> {
    use toml::Value as T;
    let number = |v: &T| match v {
        T::Integer(i) => Some(*i as f64),
        T::Float(f) => Some(*f),
        _ => None,
    };
    let Some(v) = value else {
        return Ok(match kind {
            Kind::Single => Value::Bool(false),
            Kind::Double => Value::Double(DoublePointValue::Off),
            Kind::Step => Value::Step(0),
            Kind::Bitstring => Value::Bitstring(0),
            Kind::Normalized => Value::Normalized(0),
            Kind::Scaled => Value::Scaled(0),
            Kind::Float => Value::Float(0.0),
            Kind::Counter => Value::Counter(0),
        });
    };
    match kind {
        Kind::Single => match v {
            T::Boolean(b) => Ok(Value::Bool(*b)),
            _ => Err(format!("{v} is not true or false")),
        },
        Kind::Double => match v {
            T::Integer(0) => Ok(Value::Double(DoublePointValue::Intermediate)),
            T::Integer(1) => Ok(Value::Double(DoublePointValue::Off)),
            T::Integer(2) => Ok(Value::Double(DoublePointValue::On)),
            T::Integer(3) => Ok(Value::Double(DoublePointValue::Indeterminate)),
            _ => Err(format!(
                "{v} is not a double point state (0 intermediate, 1 off, 2 on, 3 indeterminate)"
            )),
        },
        Kind::Step => match v {
            T::Integer(i @ -64..=63) => Ok(Value::Step(*i as i8)),
            _ => Err(format!("{v} is not a step position in -64..=63")),
        },
        Kind::Bitstring => match v {
            T::Integer(i) => u32::try_from(*i)
                .map(Value::Bitstring)
                .map_err(|_| format!("{i} is outside 0..=4294967295")),
            _ => Err(format!("{v} is not an integer")),
        },
        Kind::Normalized => match number(v) {
            Some(n) if (-1.0..=1.0).contains(&n) => Ok(Value::Normalized(f32_to_nva(n as f32))),
            _ => Err(format!("{v} is not a fraction in -1.0..=1.0")),
        },
        Kind::Scaled => match v {
            T::Integer(i) => i16::try_from(*i)
                .map(Value::Scaled)
                .map_err(|_| format!("{i} is outside -32768..=32767")),
            _ => Err(format!("{v} is not an integer")),
        },
        Kind::Float => match number(v) {
            Some(n) if n.is_finite() && n.abs() <= f64::from(f32::MAX) => {
                Ok(Value::Float(n as f32))
            }
            _ => Err(format!("{v} is not a finite 32-bit float")),
        },
        Kind::Counter => match v {
            T::Integer(i) => i32::try_from(*i)
                .map(Value::Counter)
                .map_err(|_| format!("{i} is outside the 32-bit counter range")),
            _ => Err(format!("{v} is not an integer")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Profile, ProfileError> {
        Profile::parse(Path::new("p.toml"), text)
    }

    #[test]
    fn example_profile_is_valid() {
        let p = parse(include_str!("../../../examples/sim-iec104-profile.toml"))
            .expect("example parses");
        assert_eq!(p.common_address, 47);
        assert_eq!(p.params, LinkParams::default());
        assert_eq!(p.queue, 10_000);
        assert!(p.points.len() >= 7);
        assert!(!p.schedules.is_empty());
        assert!(p.commands.len() >= 3);
    }

    #[test]
    fn a_good_profile() {
        let p = parse(
            r#"
common_address = 7
k = 4
w = 2
t1_s = 2
t2_s = 0.5
t3_s = 5
queue = 3

[[point]]
ioa = 1
type = "M_SP_TB_1"
value = true
quality = ["invalid", "blocked"]

[[point]]
ioa = 2
type = "M_DP_NA_1"
value = 2

[[point]]
ioa = 3
type = "M_ME_NA_1"
value = -0.5

[[point]]
ioa = 4
type = "M_IT_NA_1"
value = 1000
quality = ["carry"]

[[point]]
ioa = 5
type = "M_ME_TF_1"

[[point]]
ioa = 6
type = "M_ST_TB_1"
value = -3
quality = ["transient"]

[[point]]
ioa = 7
type = "M_BO_NA_1"
value = 0xdeadbeef

[[schedule]]
kind = "toggle"
ioa = 1
every_ms = 100
count = 3

[[schedule]]
kind = "ramp"
ioa = 5
every_ms = 50
start_after_ms = 10
step = 0.5
min = -2
max = 2

[[command]]
ioa = 10
type = "C_DC_TA_1"
term_delay_ms = 200
feedback_ioa = 2

[[command]]
ioa = 11
type = "C_SE_NC_1"
answer = "silent"
"#,
        )
        .expect("parses");
        assert_eq!(p.common_address, 7);
        assert_eq!(p.params.k, 4);
        assert_eq!(p.params.t2, Duration::from_millis(500));
        assert_eq!(p.queue, 3);
        let single = p.point(1).expect("point 1");
        assert!(single.timed && single.flags.invalid && single.flags.blocked);
        assert_eq!(single.value, Value::Bool(true));
        assert_eq!(
            p.point(2).map(|p| p.value),
            Some(Value::Double(DoublePointValue::On))
        );
        assert_eq!(p.point(3).map(|p| p.value), Some(Value::Normalized(-16384)));
        assert_eq!(p.point(4).map(|p| p.flags.carry), Some(true));
        assert_eq!(p.point(5).map(|p| p.value), Some(Value::Float(0.0)));
        let step = p.point(6).expect("point 6");
        assert_eq!((step.value, step.flags.transient), (Value::Step(-3), true));
        assert_eq!(
            p.point(7).map(|p| p.value),
            Some(Value::Bitstring(0xdead_beef))
        );
        assert_eq!(p.schedules[0].count, Some(3));
        assert_eq!(p.schedules[0].start_after, Duration::from_millis(100));
        assert_eq!(
            p.schedules[1].change,
            Change::Ramp {
                step: 0.5,
                min: -2.0,
                max: 2.0
            }
        );
        assert_eq!(p.schedules[1].start_after, Duration::from_millis(10));
        let dc = &p.commands[&10];
        assert_eq!(
            dc.kind,
            CommandKind::Double,
            "the _TA_ twin is the same command"
        );
        assert_eq!(dc.term_delay, Duration::from_millis(200));
        assert_eq!(dc.feedback_ioa, Some(2));
        assert_eq!(p.commands[&11].answer, Answer::Silent);
    }

    #[test]
    fn errors_name_the_key() {
        let point = "[[point]]\nioa = 1\ntype = \"M_SP_NA_1\"\n";
        let number = "[[point]]\nioa = 2\ntype = \"M_ME_NB_1\"\n";
        let ca = "common_address = 1\n";
        let cases = [
            ("common_addres = 1".to_owned(), "common_addres"),
            ("common_address = 0".to_owned(), "common_address"),
            ("common_address = 70000".to_owned(), "common_address"),
            (format!("{ca}k = 0"), "k"),
            (format!("{ca}k = 4\nw = 5"), "w"),
            (format!("{ca}t1_s = 5"), "t2_s"),
            (format!("{ca}t3_s = -1"), "t3_s"),
            (format!("{ca}queue = 0"), "queue"),
            (
                format!("{ca}[[point]]\nioa = 1\ntype = \"M_XX_NA_1\""),
                "point[0].type",
            ),
            (
                format!("{ca}[[point]]\nioa = 0\ntype = \"M_SP_NA_1\""),
                "point[0].ioa",
            ),
            (format!("{ca}{point}{point}"), "point[1].ioa"),
            (format!("{ca}{point}value = 1"), "point[0].value"),
            (format!("{ca}{number}value = 1.5"), "point[0].value"),
            (format!("{ca}{number}value = 40000"), "point[0].value"),
            (
                format!("{ca}{point}quality = [\"overflow\"]"),
                "point[0].quality",
            ),
            (format!("{ca}{point}colour = 1"), "colour"),
            (
                format!("{ca}[[point]]\nioa = 1\ntype = \"M_ST_NA_1\"\nvalue = 64"),
                "point[0].value",
            ),
            (
                format!("{ca}[[point]]\nioa = 1\ntype = \"M_BO_NA_1\"\nvalue = -1"),
                "point[0].value",
            ),
            (
                format!("{ca}{point}[[schedule]]\nkind = \"ramp\"\nioa = 1\nevery_ms = 5"),
                "schedule[0].kind",
            ),
            (
                format!("{ca}{point}[[schedule]]\nkind = \"toggle\"\nioa = 9\nevery_ms = 5"),
                "schedule[0].ioa",
            ),
            (
                format!("{ca}{point}[[schedule]]\nkind = \"toggle\"\nioa = 1\nevery_ms = 0"),
                "schedule[0].every_ms",
            ),
            (
                format!(
                    "{ca}{point}[[schedule]]\nkind = \"toggle\"\nioa = 1\nevery_ms = 5\nstep = 1"
                ),
                "schedule[0].step",
            ),
            (
                format!("{ca}{point}[[schedule]]\nkind = \"blink\"\nioa = 1\nevery_ms = 5"),
                "kind",
            ),
            (
                format!(
                    "{ca}{number}[[schedule]]\nkind = \"ramp\"\nioa = 2\nevery_ms = 5\nmax = 99999"
                ),
                "schedule[0].max",
            ),
            (
                format!(
                    "{ca}{number}[[schedule]]\nkind = \"ramp\"\nioa = 2\nevery_ms = 5\ncount = 0"
                ),
                "schedule[0].count",
            ),
            (
                format!("{ca}[[command]]\nioa = 5\ntype = \"M_SP_NA_1\""),
                "command[0].type",
            ),
            (
                format!("{ca}[[command]]\nioa = 5\ntype = \"C_SC_NA_1\"\nanswer = \"maybe\""),
                "answer",
            ),
            (
                format!("{ca}[[command]]\nioa = 5\ntype = \"C_SC_NA_1\"\nfeedback_ioa = 1"),
                "command[0].feedback_ioa",
            ),
            (
                format!("{ca}{number}[[command]]\nioa = 5\ntype = \"C_SC_NA_1\"\nfeedback_ioa = 2"),
                "command[0].feedback_ioa",
            ),
            (
                format!(
                    "{ca}[[command]]\nioa = 5\ntype = \"C_SC_NA_1\"\n[[command]]\nioa = 5\ntype = \"C_DC_NA_1\""
                ),
                "command[1].ioa",
            ),
        ];
        for (text, key) in cases {
            let e = parse(&text).expect_err(&text).to_string();
            assert!(e.contains(key), "{text:?}: {e:?} does not name {key}");
        }
    }
}
