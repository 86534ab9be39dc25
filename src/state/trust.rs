//! The replicated trust list: which certificates may talk to the cluster, the join requests
//! waiting for an operator, and the one-time join tokens (of which only a hash is kept).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::tls::{Fingerprint, PeerRole};

/// Pending join requests kept at most: anyone may ask to join, so the list must not grow
/// without bound; the oldest request gives way.
pub const MAX_PENDING: usize = 32;

/// Used and expired tokens are kept this long, so that using one again is refused as "used"
/// or "expired" rather than "unknown".
const TOKEN_RECORD_MS: u64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustEntry {
    pub fingerprint: Fingerprint,
    pub name: String,
    pub role: PeerRole,
    pub added_at_ms: u64,
    /// Who let it in: "init", "token <id>", "allowed by <name>", "issued by <name>".
    pub added_by: String,
}

/// A node that asked to join without a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingJoin {
    pub fingerprint: Fingerprint,
    pub name: String,
    pub admin_addr: String,
    pub requested_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub id: String,
    pub secret_sha256: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub used_by: Option<Fingerprint>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Trust {
    pub entries: BTreeMap<Fingerprint, TrustEntry>,
    pub pending: BTreeMap<Fingerprint, PendingJoin>,
    pub tokens: BTreeMap<String, JoinToken>,
}

/// A change to the trust list. Times come from the proposing leader, so that every node
/// applies the same decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TrustCommand {
    Add(TrustEntry),
    Revoke {
        fingerprint: Fingerprint,
    },
    RequestJoin(PendingJoin),
    Allow {
        fingerprint: Fingerprint,
        by: String,
        now_ms: u64,
    },
    CreateToken(JoinToken),
    UseToken {
        id: String,
        secret_sha256: String,
        entry: TrustEntry,
        now_ms: u64,
    },
}

/// Why a trust change was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TrustRefusal {
    #[error("this token is not known to the cluster (or was altered)")]
    TokenUnknown,
    #[error("this token has already been used")]
    TokenUsed,
    #[error("this token has expired")]
    TokenExpired,
    #[error("no join request is pending for fingerprint {0}")]
    NotPending(Fingerprint),
    #[error("the name {name} is already trusted with another certificate ({fingerprint})")]
    NameTaken {
        name: String,
        fingerprint: Fingerprint,
    },
    #[error("fingerprint {0} is not trusted")]
    NotTrusted(Fingerprint),
}

impl Trust {
    pub fn role_of(&self, fingerprint: &Fingerprint) -> Option<PeerRole> {
        self.entries.get(fingerprint).map(|e| e.role)
    }

    pub fn by_name(&self, name: &str) -> Option<&TrustEntry> {
        self.entries.values().find(|e| e.name == name)
    }

    pub fn apply(&mut self, command: &TrustCommand) -> Result<(), TrustRefusal> {
        match command {
            TrustCommand::Add(entry) => self.add(entry.clone()),
            TrustCommand::Revoke { fingerprint } => {
                self.pending.remove(fingerprint);
                self.entries
                    .remove(fingerprint)
                    .map(|_| ())
                    .ok_or_else(|| TrustRefusal::NotTrusted(fingerprint.clone()))
            }
            TrustCommand::RequestJoin(request) => {
                if !self.entries.contains_key(&request.fingerprint) {
                    self.pending
                        .insert(request.fingerprint.clone(), request.clone());
                }
                while self.pending.len() > MAX_PENDING {
                    let oldest = self
                        .pending
                        .values()
                        .min_by_key(|p| p.requested_at_ms)
                        .map(|p| p.fingerprint.clone());
                    if let Some(f) = oldest {
                        self.pending.remove(&f);
                    }
                }
                Ok(())
            }
            TrustCommand::Allow {
                fingerprint,
                by,
                now_ms,
            } => {
                let request = self
                    .pending
                    .get(fingerprint)
                    .ok_or_else(|| TrustRefusal::NotPending(fingerprint.clone()))?;
                self.add(TrustEntry {
                    fingerprint: fingerprint.clone(),
                    name: request.name.clone(),
                    role: PeerRole::Node,
                    added_at_ms: *now_ms,
                    added_by: format!("allowed by {by}"),
                })
            }
            TrustCommand::CreateToken(token) => {
                self.tokens
                    .retain(|_, t| t.expires_at_ms + TOKEN_RECORD_MS > token.created_at_ms);
                self.tokens.insert(token.id.clone(), token.clone());
                Ok(())
            }
            TrustCommand::UseToken {
                id,
                secret_sha256,
                entry,
                now_ms,
            } => {
                let token = self.tokens.get(id).ok_or(TrustRefusal::TokenUnknown)?;
                if token.secret_sha256 != *secret_sha256 {
                    return Err(TrustRefusal::TokenUnknown);
                }
                if token.used_by.is_some() {
                    return Err(TrustRefusal::TokenUsed);
                }
                if *now_ms > token.expires_at_ms {
                    return Err(TrustRefusal::TokenExpired);
                }
                self.add(entry.clone())?;
                if let Some(token) = self.tokens.get_mut(id) {
                    token.used_by = Some(entry.fingerprint.clone());
                }
                Ok(())
            }
        }
    }

    /// A name belongs to one certificate: a second box calling itself `fep1` is refused
    /// rather than silently trusted beside the first.
    fn add(&mut self, entry: TrustEntry) -> Result<(), TrustRefusal> {
        if let Some(other) = self
            .entries
            .values()
            .find(|e| e.name == entry.name && e.fingerprint != entry.fingerprint)
        {
            return Err(TrustRefusal::NameTaken {
                name: entry.name,
                fingerprint: other.fingerprint.clone(),
            });
        }
        self.pending.remove(&entry.fingerprint);
        self.entries.insert(entry.fingerprint.clone(), entry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::of_der(&[n])
    }

    fn entry(n: u8, name: &str) -> TrustEntry {
        TrustEntry {
            fingerprint: fp(n),
            name: name.into(),
            role: PeerRole::Node,
            added_at_ms: 0,
            added_by: "test".into(),
        }
    }

    fn token(id: &str, expires_at_ms: u64) -> TrustCommand {
        TrustCommand::CreateToken(JoinToken {
            id: id.into(),
            secret_sha256: "s".into(),
            created_at_ms: 0,
            expires_at_ms,
            used_by: None,
        })
    }

    fn use_token(id: &str, secret: &str, n: u8, now_ms: u64) -> TrustCommand {
        TrustCommand::UseToken {
            id: id.into(),
            secret_sha256: secret.into(),
            entry: entry(n, &format!("node{n}")),
            now_ms,
        }
    }

    #[test]
    fn a_token_lets_in_once_before_it_expires() {
        let mut t = Trust::default();
        assert_eq!(t.apply(&token("a", 100)), Ok(()));
        assert_eq!(
            t.apply(&use_token("a", "wrong", 2, 10)),
            Err(TrustRefusal::TokenUnknown)
        );
        assert_eq!(t.apply(&use_token("a", "s", 2, 10)), Ok(()));
        assert_eq!(t.role_of(&fp(2)), Some(PeerRole::Node));
        assert_eq!(
            t.apply(&use_token("a", "s", 3, 11)),
            Err(TrustRefusal::TokenUsed)
        );
        assert_eq!(t.apply(&token("b", 100)), Ok(()));
        assert_eq!(
            t.apply(&use_token("b", "s", 3, 101)),
            Err(TrustRefusal::TokenExpired)
        );
        assert_eq!(
            t.apply(&use_token("c", "s", 3, 1)),
            Err(TrustRefusal::TokenUnknown)
        );
        assert_eq!(t.role_of(&fp(3)), None);
    }

    #[test]
    fn pending_requests_are_allowed_and_revoked() {
        let mut t = Trust::default();
        let request = PendingJoin {
            fingerprint: fp(4),
            name: "fep4".into(),
            admin_addr: "127.0.0.1:1".into(),
            requested_at_ms: 0,
        };
        assert_eq!(t.apply(&TrustCommand::RequestJoin(request)), Ok(()));
        assert!(t.pending.contains_key(&fp(4)));
        let allow = TrustCommand::Allow {
            fingerprint: fp(4),
            by: "fep1".into(),
            now_ms: 5,
        };
        assert_eq!(t.apply(&allow), Ok(()));
        assert!(t.pending.is_empty());
        assert_eq!(
            t.by_name("fep4").map(|e| e.fingerprint.clone()),
            Some(fp(4))
        );
        assert_eq!(t.apply(&allow), Err(TrustRefusal::NotPending(fp(4))));
        let revoke = TrustCommand::Revoke { fingerprint: fp(4) };
        assert_eq!(t.apply(&revoke), Ok(()));
        assert_eq!(t.role_of(&fp(4)), None);
        assert_eq!(t.apply(&revoke), Err(TrustRefusal::NotTrusted(fp(4))));
    }

    #[test]
    fn pending_requests_are_bounded_oldest_first() {
        let mut t = Trust::default();
        for n in 0..(MAX_PENDING as u8 + 3) {
            let request = PendingJoin {
                fingerprint: fp(n),
                name: format!("n{n}"),
                admin_addr: String::new(),
                requested_at_ms: u64::from(n),
            };
            assert_eq!(t.apply(&TrustCommand::RequestJoin(request)), Ok(()));
        }
        assert_eq!(t.pending.len(), MAX_PENDING);
        assert!(!t.pending.contains_key(&fp(2)));
        assert!(t.pending.contains_key(&fp(3)));
    }

    #[test]
    fn a_name_belongs_to_one_certificate() {
        let mut t = Trust::default();
        assert_eq!(t.apply(&TrustCommand::Add(entry(1, "fep1"))), Ok(()));
        assert!(matches!(
            t.apply(&TrustCommand::Add(entry(2, "fep1"))),
            Err(TrustRefusal::NameTaken { .. })
        ));
        assert_eq!(t.apply(&TrustCommand::Add(entry(1, "fep1"))), Ok(()));
    }
}
