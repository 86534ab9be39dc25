//! The application service data unit: a six-octet data unit identifier, then the
//! information objects.
//!
//! ```text
//! octet 1    type identification
//! octet 2    SQ | number of objects (7 bits)
//! octet 3    T (test) | P/N (negative) | cause of transmission (6 bits)
//! octet 4    originator address
//! octet 5-6  common address of ASDU, little endian
//! then       SQ=0: (IOA 3 octets, element) * number
//!            SQ=1: IOA 3 octets, element * number (the IOAs count up from the first)
//! ```
//!
//! These are the field sizes IEC 60870-5-104 fixes (COT 2 octets, CA 2, IOA 3); the
//! variable sizes of -101 are not supported.

use super::cause::Cause;
use super::elements::{Element, ElementFault};
use super::error::{AsduError, EncodeError, UnknownType};
use super::reader::{Reader, Short};
use super::types::TypeId;

/// The most octets an ASDU can have: the APDU length field's 253 less the control field.
pub const MAX_ASDU_LEN: usize = 249;
/// The highest information object address, three octets.
pub const MAX_IOA: u32 = 0x00ff_ffff;
/// The number of objects is a seven-bit field.
pub const MAX_OBJECTS: usize = 127;

const HEADER_LEN: usize = 6;
const IOA_LEN: usize = 3;

/// The data unit identifier without the type, as read from any ASDU, even one whose type is
/// unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsduHeader {
    pub sq: bool,
    /// The number of information objects the sender declared.
    pub count: u8,
    pub cause: Cause,
    pub negative: bool,
    pub test: bool,
    pub originator: u8,
    pub common_address: u16,
}

/// One information object: its address and its element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InfoObject {
    pub ioa: u32,
    pub element: Element,
}

/// A decoded ASDU, or one to encode.
///
/// `type_id` is explicit although every element knows its own, so that an ASDU always has
/// a type; [`Asdu::encode`] rejects objects of another type. With `sq` set, the objects'
/// IOAs must count up by one from the first.
#[derive(Debug, Clone, PartialEq)]
pub struct Asdu {
    pub type_id: TypeId,
    pub sq: bool,
    pub cause: Cause,
    /// P/N: a negative confirmation.
    pub negative: bool,
    /// T: the ASDU was generated under test conditions and must not act on the process.
    pub test: bool,
    pub originator: u8,
    pub common_address: u16,
    pub objects: Vec<InfoObject>,
}

impl Asdu {
    /// An SQ=0 ASDU whose type is that of its objects, with originator 0 and no P/N or T.
    pub fn new(
        cause: Cause,
        common_address: u16,
        objects: Vec<InfoObject>,
    ) -> Result<Asdu, EncodeError> {
        let first = objects.first().ok_or(EncodeError::NoObjects)?;
        let asdu = Asdu {
            type_id: first.element.type_id(),
            sq: false,
            cause,
            negative: false,
            test: false,
            originator: 0,
            common_address,
            objects,
        };
        asdu.validate()?;
        Ok(asdu)
    }

    /// An ASDU of one object, as commands and their confirmations are.
    pub fn single(cause: Cause, common_address: u16, ioa: u32, element: Element) -> Asdu {
        Asdu {
            type_id: element.type_id(),
            sq: false,
            cause,
            negative: false,
            test: false,
            originator: 0,
            common_address,
            objects: vec![InfoObject { ioa, element }],
        }
    }

    /// The same ASDU with another cause, as a controlled station mirrors a command in its
    /// confirmation (COT 7 or 9, P/N on refusal) and termination (COT 10).
    pub fn reply(&self, cause: Cause, negative: bool) -> Asdu {
        Asdu {
            cause,
            negative,
            ..self.clone()
        }
    }

    /// Packs objects into as few ASDUs as fit, in order, for interrogation replies and
    /// bursts of spontaneous data. Runs of two or more objects of one type with
    /// consecutive IOAs go into SQ=1 ASDUs, which save three octets per object; the others
    /// are grouped by type into SQ=0 ASDUs. A change of type always starts a new ASDU.
    pub fn pack(
        cause: Cause,
        common_address: u16,
        objects: &[InfoObject],
    ) -> Result<Vec<Asdu>, EncodeError> {
        if let Some(bad) = objects.iter().find(|o| o.ioa > MAX_IOA) {
            return Err(EncodeError::IoaOutOfRange(bad.ioa));
        }
        let make = |sq, objects: &[InfoObject], type_id| Asdu {
            type_id,
            sq,
            cause,
            negative: false,
            test: false,
            originator: 0,
            common_address,
            objects: objects.to_vec(),
        };
        let mut asdus = Vec::new();
        let mut loose: Vec<InfoObject> = Vec::new();
        let flush = |loose: &mut Vec<InfoObject>, asdus: &mut Vec<Asdu>| {
            if let Some(first) = loose.first() {
                asdus.push(make(false, loose, first.element.type_id()));
                loose.clear();
            }
        };
        let mut rest = objects;
        while let Some((first, tail)) = rest.split_first() {
            let type_id = first.element.type_id();
            let run = rest
                .iter()
                .zip(0u32..)
                .take_while(|(o, i)| {
                    o.element.type_id() == type_id && first.ioa.checked_add(*i) == Some(o.ioa)
                })
                .count();
            if run >= 2 {
                flush(&mut loose, &mut asdus);
                let (sequence, after) = rest.split_at_checked(run).unwrap_or((rest, &[]));
                for chunk in sequence.chunks(max_objects(type_id, true)) {
                    asdus.push(make(true, chunk, type_id));
                }
                rest = after;
            } else {
                let other_type = loose
                    .first()
                    .is_some_and(|o| o.element.type_id() != type_id);
                if other_type || loose.len() >= max_objects(type_id, false) {
                    flush(&mut loose, &mut asdus);
                }
                loose.push(*first);
                rest = tail;
            }
        }
        flush(&mut loose, &mut asdus);
        Ok(asdus)
    }

    /// The encoded size, whether or not it is within [`MAX_ASDU_LEN`].
    pub fn encoded_len(&self) -> usize {
        let n = self.objects.len();
        let element = self.type_id.element_len();
        if self.sq {
            HEADER_LEN + IOA_LEN + n * element
        } else {
            HEADER_LEN + n * (IOA_LEN + element)
        }
    }

    /// Appends the encoded ASDU to `out`; on error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_into(out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let len = self.validate()?;
        out.reserve(len);
        let [ca_lo, ca_hi] = self.common_address.to_le_bytes();
        out.extend_from_slice(&[
            self.type_id.code(),
            // validate() bounds the count to 127.
            self.objects.len() as u8 | bit(self.sq, 0x80),
            self.cause.value() | bit(self.negative, 0x40) | bit(self.test, 0x80),
            self.originator,
            ca_lo,
            ca_hi,
        ]);
        for (i, object) in self.objects.iter().enumerate() {
            if i == 0 || !self.sq {
                out.extend_from_slice(&ioa_bytes(object.ioa));
            }
            object.element.encode(out)?;
        }
        Ok(())
    }

    /// Checks everything but the elements' own fields; returns the encoded length.
    fn validate(&self) -> Result<usize, EncodeError> {
        let first = self.objects.first().ok_or(EncodeError::NoObjects)?;
        if self.objects.len() > MAX_OBJECTS {
            return Err(EncodeError::TooManyObjects(self.objects.len()));
        }
        for (object, i) in self.objects.iter().zip(0u32..) {
            if object.ioa > MAX_IOA {
                return Err(EncodeError::IoaOutOfRange(object.ioa));
            }
            let found = object.element.type_id();
            if found != self.type_id {
                return Err(EncodeError::MixedTypes {
                    expected: self.type_id,
                    found,
                    ioa: object.ioa,
                });
            }
            // first.ioa <= MAX_IOA and i < 128, so this cannot overflow.
            let expected = first.ioa + i;
            if self.sq && object.ioa != expected {
                return Err(EncodeError::NotSequential {
                    expected,
                    found: object.ioa,
                });
            }
        }
        let len = self.encoded_len();
        if len > MAX_ASDU_LEN {
            return Err(EncodeError::TooLong(len));
        }
        Ok(len)
    }

    /// Decodes one whole ASDU; `bytes` must hold it exactly, no more and no less.
    pub fn decode(bytes: &[u8]) -> Result<Asdu, AsduError> {
        if bytes.len() > MAX_ASDU_LEN {
            return Err(AsduError::TooLong { len: bytes.len() });
        }
        let mut r = Reader::new(bytes);
        let (code, header) =
            read_header(&mut r).map_err(|Short| AsduError::Truncated { len: bytes.len() })?;
        let Some(type_id) = TypeId::from_code(code) else {
            return Err(AsduError::UnknownType(UnknownType {
                type_id: code,
                header,
                ioa: r.u24_le().ok(),
            }));
        };
        if header.count == 0 {
            return Err(AsduError::NoObjects { type_id });
        }
        let count = usize::from(header.count);
        let element_len = type_id.element_len();
        let expected = if header.sq {
            HEADER_LEN + IOA_LEN + count * element_len
        } else {
            HEADER_LEN + count * (IOA_LEN + element_len)
        };
        let length_mismatch = AsduError::LengthMismatch {
            type_id,
            sq: header.sq,
            count: header.count,
            expected,
            actual: bytes.len(),
        };
        if expected != bytes.len() {
            return Err(length_mismatch);
        }

        let mut sequence_ioas = None;
        if header.sq {
            let first = r.u24_le().map_err(|Short| length_mismatch.clone())?;
            if first + u32::from(header.count) - 1 > MAX_IOA {
                return Err(AsduError::IoaOverflow {
                    first,
                    count: header.count,
                });
            }
            sequence_ioas = Some(first..);
        }
        // Bounded by the count check above: at most 127 objects.
        let mut objects = Vec::with_capacity(count);
        for _ in 0..count {
            let ioa = match sequence_ioas.as_mut().and_then(Iterator::next) {
                Some(ioa) => ioa,
                None => r.u24_le().map_err(|Short| length_mismatch.clone())?,
            };
            let element = Element::decode(type_id, &mut r).map_err(|fault| match fault {
                ElementFault::Short => length_mismatch.clone(),
                ElementFault::Time(source) => AsduError::InvalidTime { ioa, source },
            })?;
            objects.push(InfoObject { ioa, element });
        }
        Ok(Asdu {
            type_id,
            sq: header.sq,
            cause: header.cause,
            negative: header.negative,
            test: header.test,
            originator: header.originator,
            common_address: header.common_address,
            objects,
        })
    }
}

/// A copy of a raw ASDU with its cause replaced, keeping the T bit: how a station answers
/// an ASDU it cannot decode (COT 44 for an unknown type, 45..47 for other refusals)
/// without understanding its objects. `None` if `raw` is no ASDU by length.
pub fn mirror_raw(raw: &[u8], cause: Cause, negative: bool) -> Option<Vec<u8>> {
    if !(HEADER_LEN..=MAX_ASDU_LEN).contains(&raw.len()) {
        return None;
    }
    let mut out = raw.to_vec();
    let cot = out.get_mut(2)?;
    *cot = (*cot & 0x80) | bit(negative, 0x40) | cause.value();
    Some(out)
}

fn read_header(r: &mut Reader<'_>) -> Result<(u8, AsduHeader), Short> {
    let code = r.u8()?;
    let vsq = r.u8()?;
    let cot = r.u8()?;
    let header = AsduHeader {
        sq: vsq & 0x80 != 0,
        count: vsq & 0x7f,
        cause: Cause::from_bits(cot),
        negative: cot & 0x40 != 0,
        test: cot & 0x80 != 0,
        originator: r.u8()?,
        common_address: r.u16_le()?,
    };
    Ok((code, header))
}

/// How many objects of `type_id` fit in one ASDU.
pub fn max_objects(type_id: TypeId, sq: bool) -> usize {
    let room = MAX_ASDU_LEN - HEADER_LEN;
    let element = type_id.element_len();
    let fit = if sq {
        (room - IOA_LEN) / element
    } else {
        room / (IOA_LEN + element)
    };
    fit.min(MAX_OBJECTS)
}

fn ioa_bytes(ioa: u32) -> [u8; 3] {
    let [a, b, c, _] = ioa.to_le_bytes();
    [a, b, c]
}

fn bit(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}
