//! The codec's errors. Decode errors describe the offending input so that the caller can
//! log it and decide; encode errors describe what in the caller's value cannot be sent.

use thiserror::Error;

use super::asdu::AsduHeader;
use super::time::TimeError;
use super::types::TypeId;

/// Why bytes from the stream are not an APDU. The stream cannot be resynchronised after
/// one of these (there is no frame delimiter to hunt for), so the connection should close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ApciError {
    #[error("APDU starts with {0:#04x}, not 0x68")]
    BadStart(u8),
    #[error("APDU length {0} is outside 4..=253")]
    BadLength(u8),
    #[error("U-frame control octet {0:#04x} does not name exactly one function")]
    BadUFunction(u8),
    #[error("{kind}-frame of length {length}; only I-frames carry an ASDU")]
    UnexpectedAsdu { kind: char, length: u8 },
    #[error("I-frame without an ASDU")]
    EmptyIFrame,
}

/// Why bytes are not a supported ASDU. Except for [`AsduError::UnknownType`], whose
/// answer is prescribed (COT 44), these mean the peer sent garbage.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AsduError {
    #[error("ASDU of {len} octets is shorter than its 6-octet header")]
    Truncated { len: usize },
    #[error("ASDU of {len} octets is longer than the 249 an APDU can carry")]
    TooLong { len: usize },
    #[error(
        "unknown type id {} (cause {}, common address {})",
        .0.type_id, .0.header.cause, .0.header.common_address
    )]
    UnknownType(UnknownType),
    #[error("{type_id} declares no information objects")]
    NoObjects { type_id: TypeId },
    #[error("{type_id} with {count} objects (SQ={sq}) needs {expected} octets, but has {actual}")]
    LengthMismatch {
        type_id: TypeId,
        sq: bool,
        count: u8,
        expected: usize,
        actual: usize,
    },
    #[error("SQ=1 run of {count} objects from IOA {first:#x} passes 0xFFFFFF")]
    IoaOverflow { first: u32, count: u8 },
    #[error("invalid time tag at IOA {ioa}: {source}")]
    InvalidTime { ioa: u32, source: TimeError },
}

/// What could be read of an ASDU whose type this codec does not know: enough to answer it
/// with COT 44 (see [`super::mirror_raw`]) and to log it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownType {
    pub type_id: u8,
    pub header: AsduHeader,
    /// The first information object address, if the ASDU is long enough to hold one.
    pub ioa: Option<u32>,
}

/// Why a value cannot be encoded. Nothing is left in the output buffer when this happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("an ASDU needs at least one information object")]
    NoObjects,
    #[error("{0} information objects; an ASDU holds at most 127")]
    TooManyObjects(usize),
    #[error("the ASDU would be {0} octets; at most 249 fit in an APDU")]
    TooLong(usize),
    #[error("IOA {0:#x} does not fit in three octets")]
    IoaOutOfRange(u32),
    #[error("object at IOA {ioa} is {found}, but the ASDU is {expected}")]
    MixedTypes {
        expected: TypeId,
        found: TypeId,
        ioa: u32,
    },
    #[error("SQ=1 needs consecutive IOAs: expected {expected}, found {found}")]
    NotSequential { expected: u32, found: u32 },
    #[error("{field} {value} is out of range")]
    FieldOutOfRange { field: &'static str, value: u32 },
    #[error("an I-frame's ASDU must be 1..=249 octets, not {0}")]
    AsduLength(usize),
}
