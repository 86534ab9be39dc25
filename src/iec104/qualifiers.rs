//! Command states and the qualifiers of commands and system commands (QOC, QOS, QCC,
//! COI), each one octet or part of one.
//!
//! Fields whose wire width is narrower than their Rust type are checked when encoding
//! instead of being masked, so a bad value is reported rather than sent as another one.

use super::error::EncodeError;

/// A double point (DPI) or a double command's state (DCS): 0 and 3 are the "neither"
/// states, which must stay representable because stations do send them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DoublePointValue {
    /// 0: intermediate (in transit between off and on).
    Intermediate,
    Off,
    On,
    /// 3: indeterminate (both or neither contacts).
    Indeterminate,
}

/// The state of a double command (DCS). 0 and 3 are "not permitted", but decode so that
/// the receiver can answer them with a negative confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DoubleCommandState {
    NotPermitted0,
    Off,
    On,
    NotPermitted3,
}

/// The step of a regulating step command (RCS); 0 and 3 are "not permitted", as for DCS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepDirection {
    NotPermitted0,
    Lower,
    Higher,
    NotPermitted3,
}

macro_rules! two_bit_enum {
    ($name:ident: $zero:ident, $one:ident, $two:ident, $three:ident) => {
        impl $name {
            pub(super) fn from_bits(bits: u8) -> Self {
                match bits & 0x03 {
                    0 => Self::$zero,
                    1 => Self::$one,
                    2 => Self::$two,
                    _ => Self::$three,
                }
            }

            pub(super) fn bits(self) -> u8 {
                match self {
                    Self::$zero => 0,
                    Self::$one => 1,
                    Self::$two => 2,
                    Self::$three => 3,
                }
            }
        }
    };
}
two_bit_enum!(DoublePointValue: Intermediate, Off, On, Indeterminate);
two_bit_enum!(DoubleCommandState: NotPermitted0, Off, On, NotPermitted3);
two_bit_enum!(StepDirection: NotPermitted0, Lower, Higher, NotPermitted3);

/// The qualifier of command (QOC) shared by single, double and step commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CommandQualifier {
    /// QU, 0..=31: 0 no additional definition, 1 short pulse, 2 long pulse, 3 persistent.
    pub qualifier: u8,
    /// S/E: true selects (first step of select-before-operate), false executes.
    pub select: bool,
}

impl CommandQualifier {
    pub(super) fn encode(&self, low_bits: u8) -> Result<u8, EncodeError> {
        check("command qualifier", self.qualifier, 0x1f)?;
        Ok(low_bits | (self.qualifier << 2) | if self.select { 0x80 } else { 0 })
    }

    pub(super) fn decode(bits: u8) -> Self {
        Self {
            qualifier: (bits >> 2) & 0x1f,
            select: bits & 0x80 != 0,
        }
    }
}

/// The qualifier of set point command (QOS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SetpointQualifier {
    /// QL, 0..=127 (0 is the default).
    pub ql: u8,
    /// S/E: true selects, false executes.
    pub select: bool,
}

impl SetpointQualifier {
    pub(super) fn encode(&self) -> Result<u8, EncodeError> {
        check("set point qualifier", self.ql, 0x7f)?;
        Ok(self.ql | if self.select { 0x80 } else { 0 })
    }

    pub(super) fn decode(bits: u8) -> Self {
        Self {
            ql: bits & 0x7f,
            select: bits & 0x80 != 0,
        }
    }
}

/// FRZ, the freeze part of a counter interrogation qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FreezeMode {
    /// Read without freezing or resetting.
    Read,
    FreezeWithoutReset,
    FreezeWithReset,
    Reset,
}
two_bit_enum!(FreezeMode: Read, FreezeWithoutReset, FreezeWithReset, Reset);

/// The qualifier of counter interrogation command (QCC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CounterQualifier {
    /// RQT, 0..=63: 1..=4 request counter group 1..=4, 5 the general counter request.
    pub request: u8,
    pub freeze: FreezeMode,
}

impl CounterQualifier {
    pub(super) fn encode(&self) -> Result<u8, EncodeError> {
        check("counter request qualifier", self.request, 0x3f)?;
        Ok(self.request | (self.freeze.bits() << 6))
    }

    pub(super) fn decode(bits: u8) -> Self {
        Self {
            request: bits & 0x3f,
            freeze: FreezeMode::from_bits(bits >> 6),
        }
    }
}

/// The cause of initialization (COI) of an end-of-initialization message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct InitCause {
    /// 0..=127: 0 local power on, 1 local manual reset, 2 remote reset.
    pub cause: u8,
    /// BI: initialized after a change of local parameters.
    pub after_parameter_change: bool,
}

impl InitCause {
    pub(super) fn encode(&self) -> Result<u8, EncodeError> {
        check("cause of initialization", self.cause, 0x7f)?;
        Ok(self.cause | if self.after_parameter_change { 0x80 } else { 0 })
    }

    pub(super) fn decode(bits: u8) -> Self {
        Self {
            cause: bits & 0x7f,
            after_parameter_change: bits & 0x80 != 0,
        }
    }
}

/// QOI 20, station (general) interrogation; 21..=36 interrogate groups 1..=16.
pub const QOI_STATION: u8 = 20;

pub(super) fn check(field: &'static str, value: u8, max: u8) -> Result<(), EncodeError> {
    if value > max {
        return Err(EncodeError::FieldOutOfRange {
            field,
            value: value.into(),
        });
    }
    Ok(())
}
