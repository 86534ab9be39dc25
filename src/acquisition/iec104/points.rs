//! A 104 RTU's points by the device's address: what a received information object means as
//! a fepha point (value in engineering units, the device's quality bits, its time tag), and
//! how a command to a point is addressed. No I/O.

use std::collections::{BTreeSet, HashMap};

use crate::iec104::{
    Asdu, Cause, CommandQualifier, CounterQuality, DoubleCommandState, DoublePointValue, Element,
    InfoObject, Quality, SetpointQualifier, TypeId, f32_to_nva,
};
use crate::site::{Point, PointKind, untimed};
use crate::state::points::{self, Value};

/// One monitored point as the device addresses it.
#[derive(Debug, Clone)]
struct Monitored {
    id: String,
    kind: PointKind,
    scale: f64,
    offset: f64,
}

/// A command point as the device addresses it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Commanded {
    pub type_id: TypeId,
    pub common_address: u16,
    pub ioa: u32,
    scale: f64,
    offset: f64,
}

/// What one received information object says about one point.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reading {
    pub point: String,
    pub value: Value,
    pub quality: points::Quality,
    /// The device's time tag (Unix ms), when it sent a valid one.
    pub device_time_ms: Option<u64>,
    /// Sent spontaneously (a change the device saw) rather than as an interrogation's
    /// answer or a periodic value.
    pub spontaneous: bool,
}

/// Why an ASDU's object was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unmapped {
    /// No point of this RTU has that (common address, type, IOA).
    Unknown { type_id: TypeId, ca: u16, ioa: u32 },
    /// A value the point cannot hold (a NaN, a counter out of range after scaling).
    BadValue { point: String },
}

/// The monitored points of one RTU by (common address, type without time tag, IOA), and
/// its command points by id.
#[derive(Debug, Default)]
pub(crate) struct PointMap {
    monitored: HashMap<(u16, TypeId, u32), Monitored>,
    commanded: HashMap<String, Commanded>,
    common_addresses: BTreeSet<u16>,
}

impl PointMap {
    /// The map of an RTU's points; points without a known type or IOA are left out (the
    /// site check refuses them).
    pub(crate) fn new(rtu_ca: u16, points: &[Point]) -> PointMap {
        let mut map = PointMap::default();
        map.common_addresses.insert(rtu_ca);
        for p in points {
            let (Some(type_id), Some(ioa)) = (p.iec104_type(), p.ioa.as_ref()) else {
                continue;
            };
            let ca = p.common_address.as_ref().map_or(rtu_ca, |c| *c.get_ref());
            let ioa = *ioa.get_ref();
            map.common_addresses.insert(ca);
            let kind = *p.kind.get_ref();
            if kind.is_command() {
                let commanded = Commanded {
                    type_id,
                    common_address: ca,
                    ioa,
                    scale: p.scale,
                    offset: p.offset,
                };
                map.commanded.insert(p.id.get_ref().clone(), commanded);
            } else {
                let monitored = Monitored {
                    id: p.id.get_ref().clone(),
                    kind,
                    scale: p.scale,
                    offset: p.offset,
                };
                map.monitored.insert((ca, untimed(type_id), ioa), monitored);
            }
        }
        map
    }

    /// Every common address the RTU's points use: each gets its own interrogation.
    pub(crate) fn common_addresses(&self) -> impl Iterator<Item = u16> + '_ {
        self.common_addresses.iter().copied()
    }

    pub(crate) fn command(&self, point: &str) -> Option<&Commanded> {
        self.commanded.get(point)
    }

    /// The readings of a monitoring ASDU, and the objects that are not this RTU's points.
    pub(crate) fn read(&self, asdu: &Asdu) -> (Vec<Reading>, Vec<Unmapped>) {
        let mut readings = Vec::with_capacity(asdu.objects.len());
        let mut unmapped = Vec::new();
        let spontaneous = asdu.cause == Cause::SPONTANEOUS;
        let key_type = untimed(asdu.type_id);
        for object in &asdu.objects {
            let Some(m) = self
                .monitored
                .get(&(asdu.common_address, key_type, object.ioa))
            else {
                unmapped.push(Unmapped::Unknown {
                    type_id: asdu.type_id,
                    ca: asdu.common_address,
                    ioa: object.ioa,
                });
                continue;
            };
            match reading(m, object, spontaneous) {
                Some(r) => readings.push(r),
                None => unmapped.push(Unmapped::BadValue {
                    point: m.id.clone(),
                }),
            }
        }
        (readings, unmapped)
    }
}

fn quality(q: Quality) -> points::Quality {
    points::Quality {
        invalid: q.invalid,
        not_topical: q.not_topical,
        substituted: q.substituted,
        blocked: q.blocked,
        overflow: q.overflow,
    }
}

fn counter_quality(q: CounterQuality) -> points::Quality {
    points::Quality {
        invalid: q.invalid,
        ..points::Quality::GOOD
    }
}

fn reading(m: &Monitored, object: &InfoObject, spontaneous: bool) -> Option<Reading> {
    let measured = |raw: f64| {
        let v = raw * m.scale + m.offset;
        v.is_finite().then_some(Value::Measured(v))
    };
    let (value, q, time) = match object.element {
        Element::SinglePoint {
            value,
            quality: q,
            time,
        } => (Value::Single(value), quality(q), time),
        Element::DoublePoint {
            value,
            quality: q,
            time,
        } => {
            let d = match value {
                DoublePointValue::Intermediate => 0,
                DoublePointValue::Off => 1,
                DoublePointValue::On => 2,
                DoublePointValue::Indeterminate => 3,
            };
            (Value::Double(d), quality(q), time)
        }
        Element::StepPosition {
            value,
            transient,
            quality: q,
            time,
        } => (Value::Step { value, transient }, quality(q), time),
        Element::Bitstring {
            value,
            quality: q,
            time,
        } => (Value::Bits(value), quality(q), time),
        Element::Normalized {
            value,
            quality: q,
            time,
        } => (
            measured(f64::from(crate::iec104::nva_to_f32(value)))?,
            quality(q),
            time,
        ),
        Element::Scaled {
            value,
            quality: q,
            time,
        } => (measured(f64::from(value))?, quality(q), time),
        Element::Float {
            value,
            quality: q,
            time,
        } => (measured(f64::from(value))?, quality(q), time),
        Element::IntegratedTotal {
            value,
            quality: q,
            time,
        } => {
            let scaled = (f64::from(value) * m.scale + m.offset).round();
            // i64::MAX as f64 is 2^63, itself out of range.
            if !(scaled >= i64::MIN as f64 && scaled < i64::MAX as f64) {
                return None;
            }
            (Value::Counter(scaled as i64), counter_quality(q), time)
        }
        _ => return None,
    };
    if !fits(m.kind, &value) {
        return None;
    }
    let device_time_ms = time
        .filter(|t| !t.invalid())
        .and_then(|t| u64::try_from(t.to_unix_ms()).ok());
    Some(Reading {
        point: m.id.clone(),
        value,
        quality: q,
        device_time_ms,
        spontaneous,
    })
}

/// Whether the value is of the point's kind (the site check pairs types with kinds, so
/// this only fails for a configuration that changed under a running task).
fn fits(kind: PointKind, value: &Value) -> bool {
    matches!(
        (kind, value),
        (PointKind::Single, Value::Single(_))
            | (PointKind::Double, Value::Double(_))
            | (PointKind::Step, Value::Step { .. })
            | (PointKind::Bitstring, Value::Bits(_))
            | (PointKind::Measured, Value::Measured(_))
            | (PointKind::Counter, Value::Counter(_))
    )
}

/// Why a command could not be put into an ASDU.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum CommandError {
    #[error("{value} is not a value for a {type_id} command")]
    WrongValue { value: Value, type_id: TypeId },
}

impl Commanded {
    /// The activation of this command with `value`, as a select (S/E = 1) or an execute.
    pub(crate) fn asdu(
        &self,
        value: &Value,
        select: bool,
        originator: u8,
    ) -> Result<Asdu, CommandError> {
        let wrong = || CommandError::WrongValue {
            value: *value,
            type_id: self.type_id,
        };
        let qoc = CommandQualifier {
            qualifier: 0,
            select,
        };
        let qos = SetpointQualifier { ql: 0, select };
        // The device takes raw values: undo the point's scaling.
        let raw = |v: f64| (v - self.offset) / self.scale;
        let element = match (untimed(self.type_id), value) {
            (TypeId::CScNa1, Value::Single(on)) => Element::SingleCommand {
                on: *on,
                qualifier: qoc,
                time: None,
            },
            (TypeId::CDcNa1, Value::Double(d)) => Element::DoubleCommand {
                state: match d {
                    1 => DoubleCommandState::Off,
                    2 => DoubleCommandState::On,
                    _ => return Err(wrong()),
                },
                qualifier: qoc,
                time: None,
            },
            (TypeId::CSeNc1, Value::Measured(v)) => Element::SetpointFloat {
                value: raw(*v) as f32,
                qualifier: qos,
                time: None,
            },
            (TypeId::CSeNb1, Value::Measured(v)) => {
                let r = raw(*v).round();
                if !(-32768.0..=32767.0).contains(&r) {
                    return Err(wrong());
                }
                Element::SetpointScaled {
                    value: r as i16,
                    qualifier: qos,
                    time: None,
                }
            }
            (TypeId::CSeNa1, Value::Measured(v)) => Element::SetpointNormalized {
                value: f32_to_nva(raw(*v) as f32),
                qualifier: qos,
                time: None,
            },
            _ => return Err(wrong()),
        };
        let mut asdu = Asdu::single(Cause::ACTIVATION, self.common_address, self.ioa, element);
        asdu.originator = originator;
        Ok(asdu)
    }

    /// Whether `asdu` answers this command (a confirmation or termination of the same type,
    /// common address and IOA).
    pub(crate) fn answered_by(&self, asdu: &Asdu) -> bool {
        untimed(asdu.type_id) == untimed(self.type_id)
            && asdu.common_address == self.common_address
            && asdu.objects.first().is_some_and(|o| o.ioa == self.ioa)
    }
}

#[cfg(test)]
#[path = "points_tests.rs"]
mod tests;
