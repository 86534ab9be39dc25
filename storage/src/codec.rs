//! How values and log keys are laid out in sled.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Corrupt;

/// Big-endian, so that sled's byte order is the log's index order.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub(crate) fn log_index(key: &[u8]) -> Result<u64, Corrupt> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| Corrupt::new(format!("log/{key:?}"), "log key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

pub(crate) fn decode<T: DeserializeOwned>(
    key: impl fmt::Display,
    bytes: &[u8],
) -> Result<T, Corrupt> {
    serde_json::from_slice(bytes).map_err(|e| Corrupt::new(key, e))
}
