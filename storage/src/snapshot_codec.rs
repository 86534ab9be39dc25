//! The compact encoding: of a whole applied state (the data of a snapshot, sent to followers
//! and kept on disk, and the body of a snapshot file an operator saves), and of each log
//! entry in sled.
//!
//! MessagePack with field names (rmp-serde's struct maps), in an LZ4 frame with a content
//! checksum, after a magic. Field names keep it self-describing like JSON: a node still
//! reads a snapshot written before a field existed (`serde(default)`), which a rolling
//! upgrade needs, since an older leader may send its snapshot to a newer follower. LZ4
//! because the site document (tens of MiB of TOML for a large site) is most of a state and
//! compresses several times over at hundreds of MB/s.
//!
//! A state that starts with `{` is the JSON that earlier versions wrote, and is still read.

use std::io::{BufReader, BufWriter, Read};

use lz4_flex::frame::{FrameDecoder, FrameEncoder, FrameInfo};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Corrupt;

/// "fepha state", version 2 (version 1 was JSON).
const MAGIC: &[u8; 8] = b"FEPHAST2";

/// A state that could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("encoding the state: {0}")]
    Serialize(#[from] rmp_serde::encode::Error),
    #[error("compressing the state: {0}")]
    Compress(#[from] lz4_flex::frame::Error),
    #[error("compressing the state: {0}")]
    Buffer(std::io::Error),
}

/// The buffer between MessagePack and the LZ4 frame, each way: one LZ4 block.
const BUFFER: usize = 64 << 10;

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut info = FrameInfo::new();
    info.content_checksum = true;
    let frame = FrameEncoder::with_frame_info(info, MAGIC.to_vec());
    // MessagePack writes a few bytes at a time, which the frame encoder takes slowly: a log
    // entry's encoding was most of its cost without the buffer.
    let mut buffered = BufWriter::with_capacity(BUFFER, frame);
    let mut serializer = rmp_serde::Serializer::new(&mut buffered).with_struct_map();
    value.serialize(&mut serializer)?;
    let frame = buffered
        .into_inner()
        .map_err(|e| EncodeError::Buffer(e.into_error()))?;
    Ok(frame.finish()?)
}

/// Decodes either encoding; `what` names the source for the error.
pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Corrupt> {
    if let Some(frame) = bytes.strip_prefix(MAGIC) {
        // As in `encode`: MessagePack reads a few bytes at a time.
        let mut decoder = BufReader::with_capacity(BUFFER, FrameDecoder::new(frame));
        let value = rmp_serde::from_read(&mut decoder).map_err(|e| Corrupt::new(what, e))?;
        // The checksum is checked at the frame's end, which the decoder reaches only when
        // asked for more: a damaged tail must not pass as a state.
        let mut rest = [0u8; 1];
        match decoder.read(&mut rest) {
            Ok(0) => Ok(value),
            Ok(_) => Err(Corrupt::new(what, "bytes after the state")),
            Err(e) => Err(Corrupt::new(what, e)),
        }
    } else if bytes.first() == Some(&b'{') {
        serde_json::from_slice(bytes).map_err(|e| Corrupt::new(what, e))
    } else {
        Err(Corrupt::new(what, "not a fepha state (unknown encoding)"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::{decode, encode};

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Old {
        text: String,
        by_id: BTreeMap<u64, Option<u32>>,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct New {
        text: String,
        by_id: BTreeMap<u64, Option<u32>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        added: Option<u8>,
    }

    fn old() -> Old {
        Old {
            text: "[site]\nname = \"x\"\n".repeat(1000),
            by_id: BTreeMap::from([(1, Some(2)), (3, None)]),
        }
    }

    #[test]
    fn a_state_round_trips_smaller_and_reads_into_a_newer_shape()
    -> Result<(), Box<dyn std::error::Error>> {
        let bytes = encode(&old())?;
        assert!(bytes.len() < old().text.len() / 4, "{} bytes", bytes.len());
        let back: Old = decode("test", &bytes)?;
        assert_eq!(back, old());
        let newer: New = decode("test", &bytes)?;
        assert_eq!(newer.added, None);
        assert_eq!(newer.by_id, old().by_id);
        Ok(())
    }

    #[test]
    fn the_json_of_earlier_versions_is_still_read() -> Result<(), Box<dyn std::error::Error>> {
        let back: Old = decode("test", &serde_json::to_vec(&old())?)?;
        assert_eq!(back, old());
        Ok(())
    }

    #[test]
    fn damage_anywhere_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let bytes = encode(&old())?;
        for at in [0, 5, 8, 12, bytes.len() / 2, bytes.len() - 2] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(
                decode::<Old>("test", &damaged).is_err(),
                "damage at {at} passed"
            );
        }
        assert!(decode::<Old>("test", &bytes[..bytes.len() - 3]).is_err());
        assert!(decode::<Old>("test", b"").is_err());
        Ok(())
    }
}
