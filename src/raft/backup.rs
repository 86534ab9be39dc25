//! The snapshot file that `fepha snapshot save` writes and `fepha snapshot restore` reads:
//!
//! ```text
//! fepha snapshot\n
//! {"format":1, ... the header as one line of JSON ...}\n
//! the body: the state machine's own snapshot encoding, `bytes` long, with its SHA-256
//! ```
//!
//! The header says what the file restores (which cluster, which log index) without decoding
//! the body; the digest catches a truncated or damaged file before anything is written.

use serde::{Deserialize, Serialize};

use super::{NodeId, TypeConfig};
use crate::state::{SiteState, sha256_hex_bytes};

/// The format this fepha writes and the only one it reads.
pub const FORMAT: u32 = 1;
const MAGIC: &[u8] = b"fepha snapshot\n";
/// A header is a few hundred bytes; anything this long is not one.
const MAX_HEADER: usize = 64 * 1024;

pub type Applied = fepha_storage::Applied<TypeConfig, SiteState>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    pub fepha_version: String,
    /// The cluster it came from: its id, its site's name and its members then.
    pub cluster_id: String,
    pub site: String,
    pub members: Vec<String>,
    pub saved_from: String,
    pub saved_from_id: NodeId,
    pub saved_at_ms: u64,
    /// The log id of the last entry in the saved state.
    pub last_index: u64,
    pub last_term: u64,
    pub config_version: u64,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("this is not a fepha snapshot file")]
    NotASnapshot,
    #[error("the snapshot header is damaged: {0}")]
    Header(String),
    #[error("the snapshot file has format version {found}; this fepha reads version {FORMAT} only")]
    Format { found: u64 },
    #[error("the snapshot file is truncated: its body has {have} of {want} bytes")]
    Truncated { want: u64, have: u64 },
    #[error("the snapshot file is damaged: its body has {have} bytes, {want} were written")]
    TooLong { want: u64, have: u64 },
    #[error("the snapshot file is damaged: its body's SHA-256 does not match its header")]
    Digest,
    #[error("the snapshot body does not decode: {0}")]
    Body(#[from] fepha_storage::Corrupt),
    #[error("the saved state has no log index (an uninitialised node has nothing to save)")]
    Empty,
    #[error("encoding the snapshot header: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    EncodeBody(#[from] fepha_storage::EncodeError),
}

/// The whole file for `applied`, saved by node `saved_from`.
pub fn encode(
    applied: &Applied,
    saved_from: (&str, NodeId),
    saved_at_ms: u64,
) -> Result<Vec<u8>, BackupError> {
    let last = applied.last_applied.as_ref().ok_or(BackupError::Empty)?;
    let body = applied.to_bytes()?;
    let state = &applied.state;
    let site = state
        .config
        .as_ref()
        .and_then(|c| crate::site::parse(&c.text).ok())
        .map(|s| s.site.name.into_inner())
        .unwrap_or_default();
    let header = Header {
        format: FORMAT,
        fepha_version: env!("CARGO_PKG_VERSION").to_owned(),
        cluster_id: state.cluster_id.clone(),
        site,
        members: applied
            .membership
            .nodes()
            .map(|(_, n)| n.name.clone())
            .collect(),
        saved_from: saved_from.0.to_owned(),
        saved_from_id: saved_from.1,
        saved_at_ms,
        last_index: last.index,
        last_term: last.leader_id.term,
        config_version: state.config_version(),
        bytes: body.len() as u64,
        sha256: sha256_hex_bytes(&body),
    };
    let mut file = MAGIC.to_vec();
    serde_json::to_writer(&mut file, &header)?;
    file.push(b'\n');
    file.extend_from_slice(&body);
    Ok(file)
}

/// The header alone, checked for its format.
pub fn header(file: &[u8]) -> Result<(Header, &[u8]), BackupError> {
    let rest = file.strip_prefix(MAGIC).ok_or(BackupError::NotASnapshot)?;
    let end = rest
        .iter()
        .take(MAX_HEADER)
        .position(|b| *b == b'\n')
        .ok_or_else(|| BackupError::Header("no end of header".into()))?;
    let (line, body) = (&rest[..end], &rest[end + 1..]);
    // The format first: a newer file's other fields may mean something else.
    let loose: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| BackupError::Header(e.to_string()))?;
    match loose.get("format").and_then(serde_json::Value::as_u64) {
        Some(f) if f == u64::from(FORMAT) => {}
        Some(found) => return Err(BackupError::Format { found }),
        None => return Err(BackupError::Header("no format version".into())),
    }
    let header: Header =
        serde_json::from_value(loose).map_err(|e| BackupError::Header(e.to_string()))?;
    Ok((header, body))
}

/// The header and the state, once the body is whole and undamaged.
pub fn decode(file: &[u8]) -> Result<(Header, Applied), BackupError> {
    let (header, body) = header(file)?;
    let have = body.len() as u64;
    if have < header.bytes {
        return Err(BackupError::Truncated {
            want: header.bytes,
            have,
        });
    }
    if have > header.bytes {
        return Err(BackupError::TooLong {
            want: header.bytes,
            have,
        });
    }
    if sha256_hex_bytes(body) != header.sha256 {
        return Err(BackupError::Digest);
    }
    let applied = Applied::from_bytes("snapshot file body", body)?;
    if applied.last_applied.as_ref().map(|l| l.index) != Some(header.last_index) {
        return Err(BackupError::Header(
            "the header's log index is not the body's".into(),
        ));
    }
    Ok((header, applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};

    fn applied() -> Applied {
        let mut a = Applied {
            last_applied: Some(LogId::new(CommittedLeaderId::new(3, 1), 42)),
            ..Applied::default()
        };
        a.state.cluster_id = "c0ffee".into();
        a
    }

    #[test]
    fn a_file_round_trips_and_says_what_it_holds() {
        let file = encode(&applied(), ("fep2", 2), 5).expect("encodes");
        let (h, a) = decode(&file).expect("decodes");
        assert_eq!((h.last_index, h.last_term, h.format), (42, 3, FORMAT));
        assert_eq!(h.cluster_id, "c0ffee");
        assert_eq!(h.saved_from, "fep2");
        assert_eq!(a.state.cluster_id, "c0ffee");
    }

    #[test]
    fn damaged_truncated_and_foreign_files_are_refused() {
        let file = encode(&applied(), ("fep2", 2), 5).expect("encodes");
        assert!(matches!(
            decode(&file[..file.len() - 3]),
            Err(BackupError::Truncated { .. })
        ));
        let mut flipped = file.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x20;
        assert!(matches!(decode(&flipped), Err(BackupError::Digest)));
        let longer = [file.as_slice(), b"x"].concat();
        assert!(matches!(decode(&longer), Err(BackupError::TooLong { .. })));
        assert!(matches!(
            decode(b"hello world"),
            Err(BackupError::NotASnapshot)
        ));
        let text = String::from_utf8_lossy(&file).replace("\"format\":1", "\"format\":2");
        assert!(matches!(
            decode(text.as_bytes()),
            Err(BackupError::Format { found: 2 })
        ));
        assert!(matches!(
            decode(&file[..MAGIC.len() + 10]),
            Err(BackupError::Header(_))
        ));
    }
}
