//! A certificate's identity: the SHA-256 of its DER encoding, as 64 lower-case hex digits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fingerprint(String);

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a certificate fingerprint (64 hex digits of SHA-256, colons allowed)")]
pub struct BadFingerprint(String);

impl Fingerprint {
    pub fn of_der(der: &[u8]) -> Fingerprint {
        Fingerprint(hex::encode(Sha256::digest(der)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 16 digits: enough to tell certificates apart in a listing.
    pub fn short(&self) -> &str {
        &self.0[..16]
    }
}

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    /// Accepts what operators paste: upper or lower case, with or without colons, with or
    /// without a `sha256:` prefix.
    fn from_str(text: &str) -> Result<Fingerprint, BadFingerprint> {
        let trimmed = text.trim();
        let bare = trimmed.strip_prefix("sha256:").unwrap_or(trimmed);
        let digits: String = bare.chars().filter(|c| *c != ':').collect();
        if digits.len() == 64 && digits.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(Fingerprint(digits.to_ascii_lowercase()))
        } else {
            Err(BadFingerprint(text.to_owned()))
        }
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = BadFingerprint;

    fn try_from(text: String) -> Result<Fingerprint, BadFingerprint> {
        text.parse()
    }
}

impl From<Fingerprint> for String {
    fn from(f: Fingerprint) -> String {
        f.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_operators_paste() {
        let fp = Fingerprint::of_der(b"certificate");
        let upper_with_colons = fp
            .as_str()
            .to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            upper_with_colons.parse::<Fingerprint>().ok(),
            Some(fp.clone())
        );
        assert_eq!(
            format!("sha256:{fp}").parse::<Fingerprint>().ok(),
            Some(fp.clone())
        );
        assert!("abc".parse::<Fingerprint>().is_err());
        assert!("g".repeat(64).parse::<Fingerprint>().is_err());
    }
}
