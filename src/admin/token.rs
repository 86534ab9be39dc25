//! The join token's text form: what `fepha token create` prints and `fepha join --token` reads.
//!
//! `fepha1.<base64url(JSON)>.<checksum>`: the JSON names the token, carries its secret (the
//! cluster keeps only its SHA-256) and every node's admin address and fingerprint, so that the
//! joining box pins the cluster and cannot be fooled by a stranger on the network. The
//! checksum tells a token damaged in copying (or altered) from one the cluster refuses.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::state::sha256_hex;

const PREFIX: &str = "fepha1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenNode {
    pub name: String,
    pub admin_addr: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub id: String,
    pub secret: String,
    pub expires_at_ms: u64,
    pub nodes: Vec<TokenNode>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("this is not a fepha join token")]
    NotAToken,
    #[error("this join token is damaged or was altered (its checksum does not match)")]
    Altered,
}

impl JoinToken {
    pub fn encode(&self) -> String {
        // Serialising a struct of strings and numbers cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        let body = URL_SAFE_NO_PAD.encode(json);
        let sum = checksum(&body);
        format!("{PREFIX}.{body}.{sum}")
    }

    pub fn decode(text: &str) -> Result<JoinToken, TokenError> {
        let mut parts = text.trim().split('.');
        let (Some(PREFIX), Some(body), Some(sum), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::NotAToken);
        };
        if checksum(body) != sum {
            return Err(TokenError::Altered);
        }
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Altered)?;
        serde_json::from_slice(&json).map_err(|_| TokenError::Altered)
    }
}

fn checksum(body: &str) -> String {
    sha256_hex(body)[..12].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> JoinToken {
        JoinToken {
            id: "a1b2".into(),
            secret: "s3cr3t".into(),
            expires_at_ms: 42,
            nodes: vec![TokenNode {
                name: "fep1".into(),
                admin_addr: "127.0.0.1:7102".into(),
                fingerprint: "ab".repeat(32),
            }],
        }
    }

    #[test]
    fn round_trips() {
        assert_eq!(JoinToken::decode(&token().encode()), Ok(token()));
    }

    #[test]
    fn any_changed_character_is_caught() {
        let text = token().encode();
        for i in PREFIX.len() + 1..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(bytes).unwrap_or_default();
            if altered == text {
                continue;
            }
            assert!(
                JoinToken::decode(&altered).is_err(),
                "position {i} not caught"
            );
        }
        assert_eq!(JoinToken::decode("hello"), Err(TokenError::NotAToken));
    }
}
