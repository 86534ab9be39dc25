//! APDU framing: the application protocol control information (APCI) of IEC 60870-5-104.
//!
//! ```text
//! octet 1    start 0x68
//! octet 2    length of the rest, 4..=253
//! octet 3-6  control field:
//!            I: N(S) << 1 (2 octets LE, bit 0 = 0) | N(R) << 1 (2 octets LE)
//!            S: 0x01 0x00                          | N(R) << 1 (2 octets LE)
//!            U: function | 0x03, 0x00              | 0x00 0x00
//! then       I-frames only: the ASDU, 1..=249 octets
//! ```
//!
//! An I-frame's ASDU is kept as bytes here and decoded with [`Asdu::decode`] (or
//! [`IFrame::decode_asdu`]) separately, because the two layers fail differently: an APCI
//! error leaves the stream unframed and ends the connection, while an undecodable ASDU
//! arrived in a well-formed I-frame that must still be acknowledged, and may need an
//! answer (COT 44) built from its raw bytes.
//!
//! Decoding is lenient about the control field's reserved bits (the padding octets of S-
//! and U-frames, bit 0 of N(R)'s octet), as lib60870 is; encoding always writes them zero.

use super::asdu::{Asdu, MAX_ASDU_LEN};
use super::error::{ApciError, AsduError, EncodeError};

/// The first octet of every APDU.
pub const START: u8 = 0x68;
/// The largest APDU: start, length and 253 more octets.
pub const MAX_APDU_LEN: usize = 2 + MAX_LENGTH as usize;

const CONTROL_LEN: u8 = 4;
const MAX_LENGTH: u8 = 253;

/// A send or receive sequence number, counting I-frames modulo 32768.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SeqNo(u16);

impl SeqNo {
    pub const ZERO: SeqNo = SeqNo(0);
    pub const MODULUS: u16 = 0x8000;

    /// `None` at 32768 and above.
    pub const fn new(value: u16) -> Option<SeqNo> {
        if value < Self::MODULUS {
            Some(SeqNo(value))
        } else {
            None
        }
    }

    /// `value` reduced modulo 32768.
    pub const fn wrapping(value: u16) -> SeqNo {
        SeqNo(value % Self::MODULUS)
    }

    pub const fn value(self) -> u16 {
        self.0
    }

    pub const fn next(self) -> SeqNo {
        Self::wrapping(self.0 + 1)
    }

    /// How many steps from `self` forward to `later`, modulo 32768. With `self` the oldest
    /// unacknowledged N(S) and `later` the next one to send, this is the number of I-frames
    /// in flight, to compare with k; a received N(R) acknowledges `self.distance_to(n_r)`.
    pub const fn distance_to(self, later: SeqNo) -> u16 {
        later.0.wrapping_sub(self.0) % Self::MODULUS
    }
}

/// The functions of a U-frame; exactly one is set in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UFunction {
    StartDtAct,
    StartDtCon,
    StopDtAct,
    StopDtCon,
    TestFrAct,
    TestFrCon,
}

impl UFunction {
    pub const ALL: [UFunction; 6] = [
        Self::StartDtAct,
        Self::StartDtCon,
        Self::StopDtAct,
        Self::StopDtCon,
        Self::TestFrAct,
        Self::TestFrCon,
    ];

    /// The first control octet, format bits included.
    pub const fn control_octet(self) -> u8 {
        let function = match self {
            Self::StartDtAct => 0x04,
            Self::StartDtCon => 0x08,
            Self::StopDtAct => 0x10,
            Self::StopDtCon => 0x20,
            Self::TestFrAct => 0x40,
            Self::TestFrCon => 0x80,
        };
        function | 0x03
    }

    /// The confirmation that answers an activation, `None` for a confirmation.
    pub const fn confirmation(self) -> Option<UFunction> {
        match self {
            Self::StartDtAct => Some(Self::StartDtCon),
            Self::StopDtAct => Some(Self::StopDtCon),
            Self::TestFrAct => Some(Self::TestFrCon),
            Self::StartDtCon | Self::StopDtCon | Self::TestFrCon => None,
        }
    }

    fn from_control_octet(octet: u8) -> Option<UFunction> {
        Self::ALL.into_iter().find(|f| f.control_octet() == octet)
    }
}

/// An information transfer frame. `asdu` is never empty nor longer than 249 octets when
/// it comes from [`decode_apdu`]; [`Apdu::encode`] checks the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IFrame {
    pub send_seq: SeqNo,
    pub recv_seq: SeqNo,
    pub asdu: Vec<u8>,
}

impl IFrame {
    pub fn decode_asdu(&self) -> Result<Asdu, AsduError> {
        Asdu::decode(&self.asdu)
    }
}

/// One APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apdu {
    I(IFrame),
    /// A supervisory frame: acknowledges I-frames up to `recv_seq` (exclusive).
    S {
        recv_seq: SeqNo,
    },
    U(UFunction),
}

impl Apdu {
    /// An I-frame carrying `asdu`, encoded now so that an ASDU that cannot be sent is
    /// reported before a sequence number is spent on it.
    pub fn i_frame(send_seq: SeqNo, recv_seq: SeqNo, asdu: &Asdu) -> Result<Apdu, EncodeError> {
        let mut bytes = Vec::with_capacity(asdu.encoded_len());
        asdu.encode(&mut bytes)?;
        Ok(Apdu::I(IFrame {
            send_seq,
            recv_seq,
            asdu: bytes,
        }))
    }

    /// Appends the APDU to `out`; on error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Apdu::I(frame) => {
                let asdu_len = frame.asdu.len();
                if !(1..=MAX_ASDU_LEN).contains(&asdu_len) {
                    return Err(EncodeError::AsduLength(asdu_len));
                }
                let [s_lo, s_hi] = (frame.send_seq.value() << 1).to_le_bytes();
                let [r_lo, r_hi] = (frame.recv_seq.value() << 1).to_le_bytes();
                // At most 4 + 249 = 253, checked above.
                let length = CONTROL_LEN + asdu_len as u8;
                out.extend_from_slice(&[START, length, s_lo, s_hi, r_lo, r_hi]);
                out.extend_from_slice(&frame.asdu);
            }
            Apdu::S { recv_seq } => {
                let [r_lo, r_hi] = (recv_seq.value() << 1).to_le_bytes();
                out.extend_from_slice(&[START, CONTROL_LEN, 0x01, 0x00, r_lo, r_hi]);
            }
            Apdu::U(function) => {
                out.extend_from_slice(&[START, CONTROL_LEN, function.control_octet(), 0, 0, 0]);
            }
        }
        Ok(())
    }
}

/// Takes the first APDU off the front of a receive buffer.
///
/// Returns the APDU and how many octets it took, `Ok(None)` if `buf` holds only the start
/// of one (read more and call again with the same bytes), or an error as soon as the bytes
/// seen cannot start a valid APDU. Nothing is allocated beyond the ASDU's at most 249
/// octets, whatever `buf` holds.
pub fn decode_apdu(buf: &[u8]) -> Result<Option<(Apdu, usize)>, ApciError> {
    let Some(&start) = buf.first() else {
        return Ok(None);
    };
    if start != START {
        return Err(ApciError::BadStart(start));
    }
    let Some(&length) = buf.get(1) else {
        return Ok(None);
    };
    if !(CONTROL_LEN..=MAX_LENGTH).contains(&length) {
        return Err(ApciError::BadLength(length));
    }
    let total = 2 + usize::from(length);
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    let Some((control, asdu)) = frame
        .get(2..)
        .and_then(|rest| rest.split_first_chunk::<4>())
    else {
        // Unreachable: length >= 4 was checked. An error, not a panic, if it ever is not.
        return Err(ApciError::BadLength(length));
    };
    let [c1, c2, c3, c4] = *control;
    let recv_seq = SeqNo::wrapping(u16::from_le_bytes([c3, c4]) >> 1);

    let apdu = if c1 & 0x01 == 0 {
        if asdu.is_empty() {
            return Err(ApciError::EmptyIFrame);
        }
        Apdu::I(IFrame {
            send_seq: SeqNo::wrapping(u16::from_le_bytes([c1, c2]) >> 1),
            recv_seq,
            asdu: asdu.to_vec(),
        })
    } else if c1 & 0x03 == 0x01 {
        if !asdu.is_empty() {
            return Err(ApciError::UnexpectedAsdu { kind: 'S', length });
        }
        Apdu::S { recv_seq }
    } else {
        if !asdu.is_empty() {
            return Err(ApciError::UnexpectedAsdu { kind: 'U', length });
        }
        Apdu::U(UFunction::from_control_octet(c1).ok_or(ApciError::BadUFunction(c1))?)
    };
    Ok(Some((apdu, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_wrap() {
        let last = SeqNo::new(32767).expect("in range");
        assert_eq!(last.next(), SeqNo::ZERO);
        assert_eq!(SeqNo::new(32768), None);
        assert_eq!(last.distance_to(SeqNo::ZERO), 1);
        assert_eq!(SeqNo::ZERO.distance_to(last), 32767);
        assert_eq!(SeqNo::wrapping(32768 + 5).value(), 5);
    }

    #[test]
    fn confirmations() {
        assert_eq!(
            UFunction::TestFrAct.confirmation(),
            Some(UFunction::TestFrCon)
        );
        assert_eq!(UFunction::StartDtCon.confirmation(), None);
    }

    #[test]
    fn max_sequence_numbers_encode() {
        let last = SeqNo::new(32767).expect("in range");
        let mut out = Vec::new();
        Apdu::I(IFrame {
            send_seq: last,
            recv_seq: last,
            asdu: vec![0],
        })
        .encode(&mut out)
        .expect("valid");
        assert_eq!(out, [0x68, 5, 0xfe, 0xff, 0xfe, 0xff, 0]);
    }
}
