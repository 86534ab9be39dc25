//! The IEC 60870-5-104 codec: bytes in, frames out, and back. No I/O, no timers, no
//! connection state. [`link`] builds the state machine of one connection on it (k/w
//! windows, t1..t3, STARTDT/STOPDT/TESTFR), for either station: the forwarder serves
//! masters as the controlled station, acquisition polls devices as the controlling one.
//!
//! Two layers, decoded separately (as stepfunc's dnp3 and rodbus keep a link/frame layer
//! apart from the application layer, each a parser over a buffer):
//!
//! - [`apci`]: the stream framing. [`decode_apdu`] takes one APDU off the front of a
//!   receive buffer and reports how many octets it used, or `Ok(None)` if it needs more.
//!   An I-frame's ASDU comes out as bytes.
//! - [`asdu`]: [`Asdu::decode`] turns those bytes into typed information objects
//!   ([`InfoObject`], [`Element`]) and [`Asdu::encode`] does the reverse; [`Asdu::pack`]
//!   groups point values into as few ASDUs as fit (SQ=1 where IOAs are consecutive) for
//!   interrogation replies.
//!
//! The codec is written for hostile input: no input makes it panic, nothing it allocates
//! is larger than one ASDU (249 octets) or its objects (127 at most), and every length is
//! checked against the declared one exactly. Unknown values that a station has to answer
//! rather than drop decode to something the caller can answer with: unknown causes of
//! transmission are a [`Cause`] like any other, the "not permitted" double command states
//! have variants, and an unknown type id is an [`AsduError::UnknownType`] that carries the
//! header and first IOA, with [`mirror_raw`] to send it back with COT 44.
//!
//! Only the fixed IEC 104 field sizes are supported (COT 2 octets, common address 2, IOA
//! 3) and only the types in [`TypeId`].
//!
//! # Fuzzing
//!
//! Besides the property tests, cargo-fuzz targets feed arbitrary bytes to both decoders
//! (`iec104_decode`) and scripts of frames and timer ticks to [`link`] (`iec104_link`);
//! their bodies are in `crate::fuzzing`, and docs/fuzzing.md says how to run them. The
//! test suite replays their corpus.

pub mod apci;
pub mod asdu;
mod cause;
mod elements;
mod error;
pub(crate) mod frame_log;
pub(crate) mod link;
mod params;
mod qualifiers;
mod quality;
mod reader;
mod time;
mod types;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use apci::{Apdu, IFrame, MAX_APDU_LEN, SeqNo, UFunction, decode_apdu};
pub use asdu::{
    Asdu, AsduHeader, InfoObject, MAX_ASDU_LEN, MAX_IOA, MAX_OBJECTS, max_objects, mirror_raw,
};
pub use cause::Cause;
pub use elements::{Element, f32_to_nva, nva_to_f32};
pub use error::{ApciError, AsduError, EncodeError, UnknownType};
pub use params::{LinkParams, ParamError};
pub use qualifiers::{
    CommandQualifier, CounterQualifier, DoubleCommandState, DoublePointValue, FreezeMode,
    InitCause, QOI_STATION, SetpointQualifier, StepDirection,
};
pub use quality::{CounterQuality, Quality};
pub use time::{Cp56Time2a, TimeError};
pub use types::TypeId;
