//! The station's monitored points and commands: what kind each is, the value it holds, how it
//! changes on its own (toggle, ramp) or on a command, and how it becomes an information
//! element.

use serde_json::{Value as Json, json};

use crate::iec104::{
    CounterQuality, Cp56Time2a, DoubleCommandState, DoublePointValue, Element, Quality,
    StepDirection, TypeId, f32_to_nva, nva_to_f32,
};

/// What a monitored point holds; the type's time-tagged twin is the same kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// M_SP_NA_1 / M_SP_TB_1.
    Single,
    /// M_DP_NA_1 / M_DP_TB_1.
    Double,
    /// M_ST_NA_1 / M_ST_TB_1: a step position, -64..=63.
    Step,
    /// M_BO_NA_1 / M_BO_TB_1: 32 bits, as an unsigned number.
    Bitstring,
    /// M_ME_NA_1 / M_ME_TD_1: a fraction in -1.0..1.0.
    Normalized,
    /// M_ME_NB_1 / M_ME_TE_1.
    Scaled,
    /// M_ME_NC_1 / M_ME_TF_1.
    Float,
    /// M_IT_NA_1 / M_IT_TB_1: integrated totals, read by counter interrogation.
    Counter,
}

impl Kind {
    /// The kind of a monitored type, and whether the type carries a time tag.
    pub(crate) fn of(type_id: TypeId) -> Option<(Kind, bool)> {
        use TypeId as T;
        let kind = match type_id {
            T::MSpNa1 | T::MSpTb1 => Kind::Single,
            T::MDpNa1 | T::MDpTb1 => Kind::Double,
            T::MStNa1 | T::MStTb1 => Kind::Step,
            T::MBoNa1 | T::MBoTb1 => Kind::Bitstring,
            T::MMeNa1 | T::MMeTd1 => Kind::Normalized,
            T::MMeNb1 | T::MMeTe1 => Kind::Scaled,
            T::MMeNc1 | T::MMeTf1 => Kind::Float,
            T::MItNa1 | T::MItTb1 => Kind::Counter,
            _ => return None,
        };
        Some((kind, type_id.has_time()))
    }

    /// Single and double points, which toggle; the others are numbers, which ramp.
    pub(crate) fn is_indication(self) -> bool {
        matches!(self, Kind::Single | Kind::Double)
    }

    /// The smallest and largest value a ramp may reach by default (the type's range; a
    /// normalized value as a fraction).
    pub(crate) fn range(self) -> (f64, f64) {
        match self {
            Kind::Single | Kind::Double => (0.0, 0.0),
            Kind::Step => (-64.0, 63.0),
            Kind::Bitstring => (0.0, f64::from(u32::MAX)),
            Kind::Normalized => (-1.0, f64::from(i16::MAX) / 32768.0),
            Kind::Scaled => (f64::from(i16::MIN), f64::from(i16::MAX)),
            Kind::Float => (f64::from(f32::MIN), f64::from(f32::MAX)),
            Kind::Counter => (f64::from(i32::MIN), f64::from(i32::MAX)),
        }
    }
}

/// A point's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    Bool(bool),
    Double(DoublePointValue),
    Step(i8),
    Bitstring(u32),
    /// The NVA, see [`nva_to_f32`].
    Normalized(i16),
    Scaled(i16),
    Float(f32),
    Counter(i32),
}

impl Value {
    /// The value of `kind` nearest to `number` (a normalized value as a fraction), saturating
    /// at the ends of the type's range; `None` for indications.
    pub(crate) fn number(kind: Kind, number: f64) -> Option<Value> {
        // `as` saturates, which is what a simulated measurand does at the end of its range.
        Some(match kind {
            Kind::Single | Kind::Double => return None,
            Kind::Step => Value::Step(number.round().clamp(-64.0, 63.0) as i8),
            Kind::Bitstring => Value::Bitstring(number.round() as u32),
            Kind::Normalized => Value::Normalized(f32_to_nva(number as f32)),
            Kind::Scaled => Value::Scaled(number.round() as i16),
            Kind::Float => Value::Float(number as f32),
            Kind::Counter => Value::Counter(number.round() as i32),
        })
    }

    /// A number as f64 (a normalized value as a fraction); `None` for indications.
    pub(crate) fn as_f64(self) -> Option<f64> {
        match self {
            Value::Bool(_) | Value::Double(_) => None,
            Value::Step(v) => Some(f64::from(v)),
            Value::Bitstring(v) => Some(f64::from(v)),
            Value::Normalized(v) => Some(f64::from(nva_to_f32(v))),
            Value::Scaled(v) => Some(f64::from(v)),
            Value::Float(v) => Some(f64::from(v)),
            Value::Counter(v) => Some(f64::from(v)),
        }
    }
}

/// Initial quality flags of a point (the profile's `quality` list).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    pub invalid: bool,
    pub not_topical: bool,
    pub substituted: bool,
    pub blocked: bool,
    pub overflow: bool,
    /// The T bit of a step position: the equipment is moving.
    pub transient: bool,
    pub carry: bool,
    pub adjusted: bool,
}

impl Flags {
    /// The flag names a point of `kind` may carry.
    pub(crate) fn names(kind: Kind) -> &'static [&'static str] {
        match kind {
            Kind::Single | Kind::Double => &["invalid", "not_topical", "substituted", "blocked"],
            Kind::Normalized | Kind::Scaled | Kind::Float | Kind::Bitstring => &[
                "invalid",
                "not_topical",
                "substituted",
                "blocked",
                "overflow",
            ],
            Kind::Step => &[
                "invalid",
                "not_topical",
                "substituted",
                "blocked",
                "overflow",
                "transient",
            ],
            Kind::Counter => &["invalid", "carry", "adjusted"],
        }
    }

    /// Sets the flag `name`; `false` if there is no such flag.
    pub(crate) fn set(&mut self, name: &str) -> bool {
        let flag = match name {
            "invalid" => &mut self.invalid,
            "not_topical" => &mut self.not_topical,
            "substituted" => &mut self.substituted,
            "blocked" => &mut self.blocked,
            "overflow" => &mut self.overflow,
            "transient" => &mut self.transient,
            "carry" => &mut self.carry,
            "adjusted" => &mut self.adjusted,
            _ => return false,
        };
        *flag = true;
        true
    }

    fn quality(self) -> Quality {
        Quality {
            invalid: self.invalid,
            not_topical: self.not_topical,
            substituted: self.substituted,
            blocked: self.blocked,
            overflow: self.overflow,
        }
    }

    fn counter_quality(self) -> CounterQuality {
        CounterQuality {
            sequence: 0,
            carry: self.carry,
            adjusted: self.adjusted,
            invalid: self.invalid,
        }
    }
}

/// One monitored point.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Point {
    pub ioa: u32,
    pub kind: Kind,
    /// Whether the point's type carries a time tag (M_SP_TB_1 rather than M_SP_NA_1):
    /// spontaneous changes are sent with one, interrogation replies never are.
    pub timed: bool,
    pub value: Value,
    pub flags: Flags,
}

impl Point {
    /// The point as an element, with `time` if given (the caller gives one only for a
    /// spontaneous change of a time-tagged point).
    pub(crate) fn element(&self, time: Option<Cp56Time2a>) -> Element {
        let quality = self.flags.quality();
        match self.value {
            Value::Bool(value) => Element::SinglePoint {
                value,
                quality,
                time,
            },
            Value::Double(value) => Element::DoublePoint {
                value,
                quality,
                time,
            },
            Value::Step(value) => Element::StepPosition {
                value,
                transient: self.flags.transient,
                quality,
                time,
            },
            Value::Bitstring(value) => Element::Bitstring {
                value,
                quality,
                time,
            },
            Value::Normalized(value) => Element::Normalized {
                value,
                quality,
                time,
            },
            Value::Scaled(value) => Element::Scaled {
                value,
                quality,
                time,
            },
            Value::Float(value) => Element::Float {
                value,
                quality,
                time,
            },
            Value::Counter(value) => Element::IntegratedTotal {
                value,
                quality: self.flags.counter_quality(),
                time,
            },
        }
    }

    /// The next value of a toggle: a single point flips, a double point goes from on to off
    /// and from anything else to on. `false` (and no change) for a number.
    pub(crate) fn toggle(&mut self) -> bool {
        self.value = match self.value {
            Value::Bool(b) => Value::Bool(!b),
            Value::Double(DoublePointValue::On) => Value::Double(DoublePointValue::Off),
            Value::Double(_) => Value::Double(DoublePointValue::On),
            _ => return false,
        };
        true
    }

    /// The next value of a ramp: up by `step`; past `max` it starts again at `min` (past
    /// `min`, for a negative step, at `max`). `false` (and no change) for an indication.
    pub(crate) fn ramp(&mut self, step: f64, min: f64, max: f64) -> bool {
        let Some(now) = self.value.as_f64() else {
            return false;
        };
        let mut next = now + step;
        if next > max {
            next = min;
        } else if next < min {
            next = max;
        }
        match Value::number(self.kind, next) {
            Some(v) => {
                self.value = v;
                true
            }
            None => false,
        }
    }
}

/// What a command entry controls; the type's time-tagged twin (C_SC_TA_1 for C_SC_NA_1) is
/// the same command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandKind {
    Single,
    Double,
    Step,
    SetNormalized,
    SetScaled,
    SetFloat,
}

impl CommandKind {
    pub(crate) fn of(type_id: TypeId) -> Option<CommandKind> {
        use TypeId as T;
        Some(match type_id {
            T::CScNa1 | T::CScTa1 => CommandKind::Single,
            T::CDcNa1 | T::CDcTa1 => CommandKind::Double,
            T::CRcNa1 | T::CRcTa1 => CommandKind::Step,
            T::CSeNa1 | T::CSeTa1 => CommandKind::SetNormalized,
            T::CSeNb1 | T::CSeTb1 => CommandKind::SetScaled,
            T::CSeNc1 | T::CSeTc1 => CommandKind::SetFloat,
            _ => return None,
        })
    }

    /// The type without a time tag, for messages.
    pub(crate) fn plain_type(self) -> TypeId {
        match self {
            CommandKind::Single => TypeId::CScNa1,
            CommandKind::Double => TypeId::CDcNa1,
            CommandKind::Step => TypeId::CRcNa1,
            CommandKind::SetNormalized => TypeId::CSeNa1,
            CommandKind::SetScaled => TypeId::CSeNb1,
            CommandKind::SetFloat => TypeId::CSeNc1,
        }
    }

    /// Whether a point of `kind` can take the commanded value as feedback.
    pub(crate) fn feeds(self, kind: Kind) -> bool {
        match self {
            CommandKind::Single | CommandKind::Double => kind.is_indication(),
            CommandKind::Step => {
                matches!(
                    kind,
                    Kind::Step | Kind::Scaled | Kind::Float | Kind::Counter
                )
            }
            CommandKind::SetNormalized | CommandKind::SetScaled | CommandKind::SetFloat => {
                !kind.is_indication()
            }
        }
    }
}

/// The value a command element asks for, for the feedback point `point`: `None` if the
/// command's state is one the standard does not permit (DCS or RCS 0 and 3), or the element
/// is no command.
pub(crate) fn commanded(element: &Element, point: &Point) -> Option<Value> {
    let indication = |on: bool| match point.kind {
        Kind::Double => Some(Value::Double(if on {
            DoublePointValue::On
        } else {
            DoublePointValue::Off
        })),
        Kind::Single => Some(Value::Bool(on)),
        _ => None,
    };
    match *element {
        Element::SingleCommand { on, .. } => indication(on),
        Element::DoubleCommand { state, .. } => match state {
            DoubleCommandState::On => indication(true),
            DoubleCommandState::Off => indication(false),
            DoubleCommandState::NotPermitted0 | DoubleCommandState::NotPermitted3 => None,
        },
        Element::RegulatingStep { step, .. } => {
            let by = match step {
                StepDirection::Higher => 1.0,
                StepDirection::Lower => -1.0,
                StepDirection::NotPermitted0 | StepDirection::NotPermitted3 => return None,
            };
            Value::number(point.kind, point.value.as_f64()? + by)
        }
        Element::SetpointNormalized { value, .. } => {
            Value::number(point.kind, f64::from(nva_to_f32(value)))
        }
        Element::SetpointScaled { value, .. } => Value::number(point.kind, f64::from(value)),
        Element::SetpointFloat { value, .. } => Value::number(point.kind, f64::from(value)),
        _ => None,
    }
}

/// Whether a command element asks for a state the standard does not permit.
pub(crate) fn not_permitted(element: &Element) -> bool {
    matches!(
        element,
        Element::DoubleCommand {
            state: DoubleCommandState::NotPermitted0 | DoubleCommandState::NotPermitted3,
            ..
        } | Element::RegulatingStep {
            step: StepDirection::NotPermitted0 | StepDirection::NotPermitted3,
            ..
        }
    )
}

/// The S/E bit of a command element: `Some(true)` selects, `Some(false)` executes, `None`
/// for anything that is no select-before-operate command.
pub(crate) fn select_bit(element: &Element) -> Option<bool> {
    match element {
        Element::SingleCommand { qualifier, .. }
        | Element::DoubleCommand { qualifier, .. }
        | Element::RegulatingStep { qualifier, .. } => Some(qualifier.select),
        Element::SetpointNormalized { qualifier, .. }
        | Element::SetpointScaled { qualifier, .. }
        | Element::SetpointFloat { qualifier, .. } => Some(qualifier.select),
        _ => None,
    }
}

fn double_json(v: DoublePointValue) -> Json {
    json!(match v {
        DoublePointValue::Intermediate => 0,
        DoublePointValue::Off => 1,
        DoublePointValue::On => 2,
        DoublePointValue::Indeterminate => 3,
    })
}

/// The value of an element as the log shows it: a bool for single points and commands,
/// 0..=3 for double points and double/step commands, a number for step positions,
/// bitstrings, measurands, counters and set points (a normalized value as a fraction), the QOI or QCC for interrogations, Unix ms
/// for a clock sync; null for anything else.
pub(crate) fn json_value(element: &Element) -> Json {
    let two_bits = |bits: u8| json!(bits);
    match *element {
        Element::SinglePoint { value, .. } => json!(value),
        Element::DoublePoint { value, .. } => double_json(value),
        Element::StepPosition { value, .. } => json!(value),
        Element::Bitstring { value, .. } => json!(value),
        Element::Normalized { value, .. } => json!(nva_to_f32(value)),
        Element::Scaled { value, .. } => json!(value),
        Element::Float { value, .. } => json!(value),
        Element::IntegratedTotal { value, .. } => json!(value),
        Element::SingleCommand { on, .. } => json!(on),
        Element::DoubleCommand { state, .. } => two_bits(match state {
            DoubleCommandState::NotPermitted0 => 0,
            DoubleCommandState::Off => 1,
            DoubleCommandState::On => 2,
            DoubleCommandState::NotPermitted3 => 3,
        }),
        Element::RegulatingStep { step, .. } => two_bits(match step {
            StepDirection::NotPermitted0 => 0,
            StepDirection::Lower => 1,
            StepDirection::Higher => 2,
            StepDirection::NotPermitted3 => 3,
        }),
        Element::SetpointNormalized { value, .. } => json!(nva_to_f32(value)),
        Element::SetpointScaled { value, .. } => json!(value),
        Element::SetpointFloat { value, .. } => json!(value),
        Element::Interrogation { qoi } => json!(qoi),
        Element::CounterInterrogation(q) => json!(q.request),
        Element::ClockSync(time) => json!(time.to_unix_ms()),
        _ => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(kind: Kind, value: Value) -> Point {
        Point {
            ioa: 1,
            kind,
            timed: false,
            value,
            flags: Flags::default(),
        }
    }

    #[test]
    fn toggles_and_ramps() {
        let mut p = point(Kind::Double, Value::Double(DoublePointValue::Intermediate));
        assert!(p.toggle());
        assert_eq!(p.value, Value::Double(DoublePointValue::On));
        assert!(p.toggle());
        assert_eq!(p.value, Value::Double(DoublePointValue::Off));
        assert!(!p.ramp(1.0, 0.0, 1.0), "an indication does not ramp");

        let mut p = point(Kind::Scaled, Value::Scaled(9));
        assert!(!p.toggle(), "a number does not toggle");
        assert!(p.ramp(1.0, 5.0, 10.0));
        assert_eq!(p.value, Value::Scaled(10));
        assert!(p.ramp(1.0, 5.0, 10.0));
        assert_eq!(p.value, Value::Scaled(5), "past max starts again at min");

        let mut p = point(Kind::Step, Value::Step(62));
        assert!(p.ramp(1.0, -64.0, 63.0));
        assert!(p.ramp(1.0, -64.0, 63.0));
        assert_eq!(p.value, Value::Step(-64));

        let mut p = point(Kind::Normalized, Value::Normalized(0));
        assert!(p.ramp(0.5, -1.0, 0.9));
        assert_eq!(p.value, Value::Normalized(16384));
    }

    #[test]
    fn commanded_values() {
        use crate::iec104::{CommandQualifier, SetpointQualifier};
        let q = CommandQualifier::default();
        let double = point(Kind::Double, Value::Double(DoublePointValue::Off));
        let on = Element::SingleCommand {
            on: true,
            qualifier: q,
            time: None,
        };
        assert_eq!(
            commanded(&on, &double),
            Some(Value::Double(DoublePointValue::On))
        );
        let bad = Element::DoubleCommand {
            state: DoubleCommandState::NotPermitted3,
            qualifier: q,
            time: None,
        };
        assert!(not_permitted(&bad));
        assert_eq!(commanded(&bad, &double), None);
        let scaled = point(Kind::Scaled, Value::Scaled(3));
        let higher = Element::RegulatingStep {
            step: StepDirection::Higher,
            qualifier: q,
            time: None,
        };
        assert_eq!(commanded(&higher, &scaled), Some(Value::Scaled(4)));
        let set = Element::SetpointFloat {
            value: 12.5,
            qualifier: SetpointQualifier::default(),
            time: None,
        };
        let float = point(Kind::Float, Value::Float(0.0));
        assert_eq!(commanded(&set, &float), Some(Value::Float(12.5)));
        assert_eq!(json_value(&set), json!(12.5));
        assert_eq!(select_bit(&set), Some(false));
    }
}
