//! Information elements: what follows each information object address.
//!
//! One [`Element`] variant per kind of element; the variants with an optional time tag
//! stand for both the plain type and its CP56Time2a twin (`M_SP_NA_1` without a time,
//! `M_SP_TB_1` with one), because a forwarder chooses between them by whether it has a
//! time, not by a different value.

use super::error::EncodeError;
use super::qualifiers::{
    CommandQualifier, CounterQualifier, DoubleCommandState, DoublePointValue, InitCause,
    SetpointQualifier, StepDirection,
};
use super::quality::{CounterQuality, Quality};
use super::reader::{Reader, Short};
use super::time::{Cp56Time2a, TimeError};
use super::types::TypeId;

/// Normalized values (NVA) are fractions `value / 32768` in `-1.0..1.0`.
pub fn nva_to_f32(value: i16) -> f32 {
    f32::from(value) / 32768.0
}

/// The NVA nearest to `value`, saturating at the ends of `-1.0..1.0`; NaN maps to 0.
pub fn f32_to_nva(value: f32) -> i16 {
    // `as` saturates and maps NaN to 0, which is the behaviour wanted here.
    (value * 32768.0).round() as i16
}

/// One information element. See the module docs for how time tags map to type ids.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Element {
    /// `M_SP_NA_1` / `M_SP_TB_1`. `quality.overflow` is not transmitted.
    SinglePoint {
        value: bool,
        quality: Quality,
        time: Option<Cp56Time2a>,
    },
    /// `M_DP_NA_1` / `M_DP_TB_1`. `quality.overflow` is not transmitted.
    DoublePoint {
        value: DoublePointValue,
        quality: Quality,
        time: Option<Cp56Time2a>,
    },
    /// `M_ST_NA_1` / `M_ST_TB_1`: a step position (VTI), e.g. of a transformer tap
    /// changer. `value` is the seven-bit two's complement I7, `-64..=63`; encoding one
    /// outside that range is [`EncodeError::FieldOutOfRange`]. `transient` is the T bit:
    /// the equipment is moving between positions.
    StepPosition {
        value: i8,
        transient: bool,
        quality: Quality,
        time: Option<Cp56Time2a>,
    },
    /// `M_BO_NA_1` / `M_BO_TB_1`: a bitstring of 32 bits (BSI), bit 1 of the first octet
    /// being the least significant bit of `value`.
    Bitstring {
        value: u32,
        quality: Quality,
        time: Option<Cp56Time2a>,
    },
    /// `M_ME_NA_1` / `M_ME_TD_1`: see [`nva_to_f32`].
    Normalized {
        value: i16,
        quality: Quality,
        time: Option<Cp56Time2a>,
    },
    /// `M_ME_NB_1` / `M_ME_TE_1`.
    Scaled {
        value: i16,
        quality: Quality,
        time: Option<Cp56Time2a>,
    },
    /// `M_ME_NC_1` / `M_ME_TF_1`.
    Float {
        value: f32,
        quality: Quality,
        time: Option<Cp56Time2a>,
    },
    /// `M_IT_NA_1` / `M_IT_TB_1`: a binary counter reading (BCR).
    IntegratedTotal {
        value: i32,
        quality: CounterQuality,
        time: Option<Cp56Time2a>,
    },
    /// `M_EI_NA_1`.
    EndOfInit(InitCause),
    /// `C_SC_NA_1` / `C_SC_TA_1`.
    SingleCommand {
        on: bool,
        qualifier: CommandQualifier,
        time: Option<Cp56Time2a>,
    },
    /// `C_DC_NA_1` / `C_DC_TA_1`.
    DoubleCommand {
        state: DoubleCommandState,
        qualifier: CommandQualifier,
        time: Option<Cp56Time2a>,
    },
    /// `C_RC_NA_1` / `C_RC_TA_1`.
    RegulatingStep {
        step: StepDirection,
        qualifier: CommandQualifier,
        time: Option<Cp56Time2a>,
    },
    /// `C_SE_NA_1` / `C_SE_TA_1`.
    SetpointNormalized {
        value: i16,
        qualifier: SetpointQualifier,
        time: Option<Cp56Time2a>,
    },
    /// `C_SE_NB_1` / `C_SE_TB_1`.
    SetpointScaled {
        value: i16,
        qualifier: SetpointQualifier,
        time: Option<Cp56Time2a>,
    },
    /// `C_SE_NC_1` / `C_SE_TC_1`.
    SetpointFloat {
        value: f32,
        qualifier: SetpointQualifier,
        time: Option<Cp56Time2a>,
    },
    /// `C_IC_NA_1`: the qualifier of interrogation (QOI), see [`QOI_STATION`](super::QOI_STATION).
    Interrogation { qoi: u8 },
    /// `C_CI_NA_1`.
    CounterInterrogation(CounterQualifier),
    /// `C_CS_NA_1`.
    ClockSync(Cp56Time2a),
}

/// Why an element did not decode; the ASDU layer adds the IOA.
#[derive(Debug)]
pub(super) enum ElementFault {
    Short,
    Time(TimeError),
}

impl From<Short> for ElementFault {
    fn from(_: Short) -> Self {
        Self::Short
    }
}

impl From<TimeError> for ElementFault {
    fn from(error: TimeError) -> Self {
        Self::Time(error)
    }
}

impl Element {
    pub fn type_id(&self) -> TypeId {
        use TypeId::*;
        let (plain, timed, time) = match self {
            Self::SinglePoint { time, .. } => (MSpNa1, MSpTb1, time),
            Self::DoublePoint { time, .. } => (MDpNa1, MDpTb1, time),
            Self::StepPosition { time, .. } => (MStNa1, MStTb1, time),
            Self::Bitstring { time, .. } => (MBoNa1, MBoTb1, time),
            Self::Normalized { time, .. } => (MMeNa1, MMeTd1, time),
            Self::Scaled { time, .. } => (MMeNb1, MMeTe1, time),
            Self::Float { time, .. } => (MMeNc1, MMeTf1, time),
            Self::IntegratedTotal { time, .. } => (MItNa1, MItTb1, time),
            Self::SingleCommand { time, .. } => (CScNa1, CScTa1, time),
            Self::DoubleCommand { time, .. } => (CDcNa1, CDcTa1, time),
            Self::RegulatingStep { time, .. } => (CRcNa1, CRcTa1, time),
            Self::SetpointNormalized { time, .. } => (CSeNa1, CSeTa1, time),
            Self::SetpointScaled { time, .. } => (CSeNb1, CSeTb1, time),
            Self::SetpointFloat { time, .. } => (CSeNc1, CSeTc1, time),
            Self::EndOfInit(_) => return MEiNa1,
            Self::Interrogation { .. } => return CIcNa1,
            Self::CounterInterrogation(_) => return CCiNa1,
            Self::ClockSync(_) => return CCsNa1,
        };
        if time.is_some() { timed } else { plain }
    }

    /// The element's time tag, if its type has one.
    pub fn time(&self) -> Option<Cp56Time2a> {
        match self {
            Self::SinglePoint { time, .. }
            | Self::DoublePoint { time, .. }
            | Self::StepPosition { time, .. }
            | Self::Bitstring { time, .. }
            | Self::Normalized { time, .. }
            | Self::Scaled { time, .. }
            | Self::Float { time, .. }
            | Self::IntegratedTotal { time, .. }
            | Self::SingleCommand { time, .. }
            | Self::DoubleCommand { time, .. }
            | Self::RegulatingStep { time, .. }
            | Self::SetpointNormalized { time, .. }
            | Self::SetpointScaled { time, .. }
            | Self::SetpointFloat { time, .. } => *time,
            Self::ClockSync(time) => Some(*time),
            Self::EndOfInit(_) | Self::Interrogation { .. } | Self::CounterInterrogation(_) => None,
        }
    }

    /// Appends exactly `self.type_id().element_len()` octets, or nothing on error.
    pub(super) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        // Everything fallible is computed before the first push.
        let (body, time): (&[u8], _) = match *self {
            Self::SinglePoint {
                value,
                quality,
                time,
            } => (&[quality.point_bits() | u8::from(value)], time),
            Self::DoublePoint {
                value,
                quality,
                time,
            } => (&[quality.point_bits() | value.bits()], time),
            Self::StepPosition {
                value,
                transient,
                quality,
                time,
            } => (&[vti(value, transient)?, quality.qds()], time),
            Self::Bitstring {
                value,
                quality,
                time,
            } => {
                let [a, b, c, d] = value.to_le_bytes();
                (&[a, b, c, d, quality.qds()], time)
            }
            Self::Normalized {
                value,
                quality,
                time,
            }
            | Self::Scaled {
                value,
                quality,
                time,
            } => {
                let [a, b] = value.to_le_bytes();
                (&[a, b, quality.qds()], time)
            }
            Self::Float {
                value,
                quality,
                time,
            } => {
                let [a, b, c, d] = value.to_le_bytes();
                (&[a, b, c, d, quality.qds()], time)
            }
            Self::IntegratedTotal {
                value,
                quality,
                time,
            } => {
                let [a, b, c, d] = value.to_le_bytes();
                (&[a, b, c, d, quality.encode()?], time)
            }
            Self::EndOfInit(coi) => (&[coi.encode()?], None),
            Self::SingleCommand {
                on,
                qualifier,
                time,
            } => (&[qualifier.encode(u8::from(on))?], time),
            Self::DoubleCommand {
                state,
                qualifier,
                time,
            } => (&[qualifier.encode(state.bits())?], time),
            Self::RegulatingStep {
                step,
                qualifier,
                time,
            } => (&[qualifier.encode(step.bits())?], time),
            Self::SetpointNormalized {
                value,
                qualifier,
                time,
            }
            | Self::SetpointScaled {
                value,
                qualifier,
                time,
            } => {
                let [a, b] = value.to_le_bytes();
                (&[a, b, qualifier.encode()?], time)
            }
            Self::SetpointFloat {
                value,
                qualifier,
                time,
            } => {
                let [a, b, c, d] = value.to_le_bytes();
                (&[a, b, c, d, qualifier.encode()?], time)
            }
            Self::Interrogation { qoi } => (&[qoi], None),
            Self::CounterInterrogation(qcc) => (&[qcc.encode()?], None),
            Self::ClockSync(time) => (&[], Some(time)),
        };
        out.extend_from_slice(body);
        if let Some(time) = time {
            out.extend_from_slice(&time.encode());
        }
        Ok(())
    }

    /// Reads one element of `type_id`, whose length the caller has already checked.
    pub(super) fn decode(type_id: TypeId, r: &mut Reader<'_>) -> Result<Element, ElementFault> {
        use TypeId::*;
        let element = match type_id {
            MSpNa1 | MSpTb1 => {
                let siq = r.u8()?;
                Self::SinglePoint {
                    value: siq & 0x01 != 0,
                    quality: Quality::from_point_bits(siq),
                    time: time_tag(type_id, r)?,
                }
            }
            MDpNa1 | MDpTb1 => {
                let diq = r.u8()?;
                Self::DoublePoint {
                    value: DoublePointValue::from_bits(diq),
                    quality: Quality::from_point_bits(diq),
                    time: time_tag(type_id, r)?,
                }
            }
            MStNa1 | MStTb1 => {
                let vti = r.u8()?;
                Self::StepPosition {
                    value: i7(vti),
                    transient: vti & VTI_TRANSIENT != 0,
                    quality: Quality::from_qds(r.u8()?),
                    time: time_tag(type_id, r)?,
                }
            }
            MBoNa1 | MBoTb1 => Self::Bitstring {
                value: u32::from_le_bytes(r.array()?),
                quality: Quality::from_qds(r.u8()?),
                time: time_tag(type_id, r)?,
            },
            MMeNa1 | MMeTd1 => Self::Normalized {
                value: r.i16_le()?,
                quality: Quality::from_qds(r.u8()?),
                time: time_tag(type_id, r)?,
            },
            MMeNb1 | MMeTe1 => Self::Scaled {
                value: r.i16_le()?,
                quality: Quality::from_qds(r.u8()?),
                time: time_tag(type_id, r)?,
            },
            MMeNc1 | MMeTf1 => Self::Float {
                value: r.f32_le()?,
                quality: Quality::from_qds(r.u8()?),
                time: time_tag(type_id, r)?,
            },
            MItNa1 | MItTb1 => Self::IntegratedTotal {
                value: r.i32_le()?,
                quality: CounterQuality::decode(r.u8()?),
                time: time_tag(type_id, r)?,
            },
            MEiNa1 => Self::EndOfInit(InitCause::decode(r.u8()?)),
            CScNa1 | CScTa1 => {
                let sco = r.u8()?;
                Self::SingleCommand {
                    on: sco & 0x01 != 0,
                    qualifier: CommandQualifier::decode(sco),
                    time: time_tag(type_id, r)?,
                }
            }
            CDcNa1 | CDcTa1 => {
                let dco = r.u8()?;
                Self::DoubleCommand {
                    state: DoubleCommandState::from_bits(dco),
                    qualifier: CommandQualifier::decode(dco),
                    time: time_tag(type_id, r)?,
                }
            }
            CRcNa1 | CRcTa1 => {
                let rco = r.u8()?;
                Self::RegulatingStep {
                    step: StepDirection::from_bits(rco),
                    qualifier: CommandQualifier::decode(rco),
                    time: time_tag(type_id, r)?,
                }
            }
            CSeNa1 | CSeTa1 => Self::SetpointNormalized {
                value: r.i16_le()?,
                qualifier: SetpointQualifier::decode(r.u8()?),
                time: time_tag(type_id, r)?,
            },
            CSeNb1 | CSeTb1 => Self::SetpointScaled {
                value: r.i16_le()?,
                qualifier: SetpointQualifier::decode(r.u8()?),
                time: time_tag(type_id, r)?,
            },
            CSeNc1 | CSeTc1 => Self::SetpointFloat {
                value: r.f32_le()?,
                qualifier: SetpointQualifier::decode(r.u8()?),
                time: time_tag(type_id, r)?,
            },
            CIcNa1 => Self::Interrogation { qoi: r.u8()? },
            CCiNa1 => Self::CounterInterrogation(CounterQualifier::decode(r.u8()?)),
            CCsNa1 => Self::ClockSync(Cp56Time2a::decode(r.array()?)?),
        };
        Ok(element)
    }
}

/// The T bit of a VTI: the equipment is in transient state.
const VTI_TRANSIENT: u8 = 0x80;

/// The VTI octet: I7 in bits 1-7, T in bit 8.
fn vti(value: i8, transient: bool) -> Result<u8, EncodeError> {
    if !(-64..=63).contains(&value) {
        // The error carries a u32, so a negative value is shown as its octet.
        return Err(EncodeError::FieldOutOfRange {
            field: "VTI step position (two's complement octet)",
            value: value.cast_unsigned().into(),
        });
    }
    let transient = if transient { VTI_TRANSIENT } else { 0 };
    Ok(value.cast_unsigned() & 0x7f | transient)
}

/// I7, bits 1-7 of a VTI, sign-extended from its bit 7.
fn i7(vti: u8) -> i8 {
    (vti << 1).cast_signed() >> 1
}

fn time_tag(type_id: TypeId, r: &mut Reader<'_>) -> Result<Option<Cp56Time2a>, ElementFault> {
    if type_id.has_time() {
        Ok(Some(Cp56Time2a::decode(r.array()?)?))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nva_conversions() {
        assert_eq!(nva_to_f32(16384), 0.5);
        assert_eq!(f32_to_nva(0.5), 16384);
        assert_eq!(
            f32_to_nva(1.0),
            i16::MAX,
            "saturates: +1.0 is not representable"
        );
        assert_eq!(f32_to_nva(-1.0), i16::MIN);
        assert_eq!(f32_to_nva(f32::NAN), 0);
    }

    #[test]
    fn command_octets() {
        let select_on_short_pulse = Element::SingleCommand {
            on: true,
            qualifier: CommandQualifier {
                qualifier: 1,
                select: true,
            },
            time: None,
        };
        let mut out = Vec::new();
        select_on_short_pulse.encode(&mut out).expect("valid");
        assert_eq!(out, [0x80 | (1 << 2) | 1]);

        let bad = Element::SingleCommand {
            on: true,
            qualifier: CommandQualifier {
                qualifier: 32,
                select: false,
            },
            time: None,
        };
        assert!(bad.encode(&mut out).is_err());
        assert_eq!(out.len(), 1, "nothing appended on error");
    }

    #[test]
    fn vti_octets() {
        for (value, transient, octet) in [
            (0, false, 0x00),
            (1, false, 0x01),
            (63, false, 0x3F),
            (-1, false, 0x7F),
            (-3, true, 0xFD),
            (-64, false, 0x40),
            (-64, true, 0xC0),
            (63, true, 0xBF),
        ] {
            assert_eq!(vti(value, transient), Ok(octet), "{value} {transient}");
            assert_eq!(i7(octet), value, "{octet:#04x}");
            assert_eq!(octet & VTI_TRANSIENT != 0, transient);
        }
        for octet in 0..=u8::MAX {
            let value = i7(octet);
            assert!((-64..=63).contains(&value), "{octet:#04x}");
            assert_eq!(vti(value, octet & VTI_TRANSIENT != 0), Ok(octet));
        }
    }

    #[test]
    fn step_position_outside_i7_is_refused() {
        let mut out = vec![7];
        for value in [64, 127, -65, -128] {
            let element = Element::StepPosition {
                value,
                transient: false,
                quality: Quality::GOOD,
                time: None,
            };
            assert_eq!(
                element.encode(&mut out),
                Err(EncodeError::FieldOutOfRange {
                    field: "VTI step position (two's complement octet)",
                    value: u32::from(value.cast_unsigned()),
                }),
                "{value}"
            );
        }
        assert_eq!(out, [7], "nothing appended on error");
    }
}
