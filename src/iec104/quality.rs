//! Quality descriptors (IEC 60870-5-101 7.2.6.3/7.2.6.4 and the BCR flags of 7.2.6.9).
//!
//! Single and double points (SIQ/DIQ) and measurands (QDS) share the IV, NT, SB and BL bits
//! in the top nibble; only measurands have OV, in bit 0, where points keep their value. One
//! [`Quality`] type serves all three so that a point's quality can be forwarded without
//! caring what kind of value it qualifies.

use super::error::EncodeError;

const OV: u8 = 0x01;
const BL: u8 = 0x10;
const SB: u8 = 0x20;
const NT: u8 = 0x40;
const IV: u8 = 0x80;

/// The quality of a monitored point or measurand; all false is "good".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Quality {
    /// IV: the value is not reliable (source failed, out of range).
    pub invalid: bool,
    /// NT: the last update is older than the source considers current.
    pub not_topical: bool,
    /// SB: the value was set by an operator or an automatic source, not measured.
    pub substituted: bool,
    /// BL: transmission of the value is blocked; it is the value from before blocking.
    pub blocked: bool,
    /// OV: the measurand overflowed its representation. Single and double points have no
    /// such bit, so for them it is not transmitted and always decodes as false.
    pub overflow: bool,
}

impl Quality {
    pub const GOOD: Quality = Quality {
        invalid: false,
        not_topical: false,
        substituted: false,
        blocked: false,
        overflow: false,
    };

    pub fn is_good(&self) -> bool {
        *self == Self::GOOD
    }

    /// The IV/NT/SB/BL bits, as SIQ and DIQ carry them beside the value.
    pub(super) fn point_bits(&self) -> u8 {
        flag(self.invalid, IV)
            | flag(self.not_topical, NT)
            | flag(self.substituted, SB)
            | flag(self.blocked, BL)
    }

    pub(super) fn from_point_bits(bits: u8) -> Self {
        Self {
            overflow: false,
            ..Self::from_qds(bits & !OV)
        }
    }

    pub(super) fn qds(&self) -> u8 {
        self.point_bits() | flag(self.overflow, OV)
    }

    pub(super) fn from_qds(bits: u8) -> Self {
        Self {
            invalid: bits & IV != 0,
            not_topical: bits & NT != 0,
            substituted: bits & SB != 0,
            blocked: bits & BL != 0,
            overflow: bits & OV != 0,
        }
    }
}

/// The status octet of a binary counter reading (BCR).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CounterQuality {
    /// SQ: the sequence number of the reading, 0..=31, incremented by the station on every
    /// freeze so that a master can spot lost readings.
    pub sequence: u8,
    /// CY: the counter wrapped since the previous reading.
    pub carry: bool,
    /// CA: the counter was adjusted since the previous reading.
    pub adjusted: bool,
    /// IV: the reading is not reliable.
    pub invalid: bool,
}

impl CounterQuality {
    pub(super) fn encode(&self) -> Result<u8, EncodeError> {
        if self.sequence > 0x1f {
            return Err(EncodeError::FieldOutOfRange {
                field: "BCR sequence number",
                value: self.sequence.into(),
            });
        }
        Ok(self.sequence
            | flag(self.carry, 0x20)
            | flag(self.adjusted, 0x40)
            | flag(self.invalid, 0x80))
    }

    pub(super) fn decode(bits: u8) -> Self {
        Self {
            sequence: bits & 0x1f,
            carry: bits & 0x20 != 0,
            adjusted: bits & 0x40 != 0,
            invalid: bits & 0x80 != 0,
        }
    }
}

fn flag(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qds_bits() {
        let q = Quality {
            invalid: true,
            blocked: true,
            overflow: true,
            ..Quality::GOOD
        };
        assert_eq!(q.qds(), 0x91);
        assert_eq!(Quality::from_qds(0x91), q);
        assert_eq!(q.point_bits(), 0x90, "points have no OV bit");
        assert_eq!(
            Quality::from_point_bits(0x61),
            Quality {
                not_topical: true,
                substituted: true,
                ..Quality::GOOD
            }
        );
    }

    #[test]
    fn counter_bits() {
        let q = CounterQuality {
            sequence: 5,
            carry: true,
            adjusted: false,
            invalid: true,
        };
        assert_eq!(q.encode(), Ok(0xa5));
        assert_eq!(CounterQuality::decode(0xa5), q);
        let too_big = CounterQuality { sequence: 32, ..q };
        assert!(too_big.encode().is_err());
    }
}
