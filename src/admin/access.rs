//! Who may call what. The TLS handshake has already refused unknown certificates; this
//! decides per request, so a certificate revoked while its connection was open is refused
//! from the next call on, and a client without a certificate can only ask to join.

use tonic::{Request, Status};

use super::Context;
use crate::tls::{Fingerprint, PeerInfo, PeerRole, TrustStore};

#[derive(Debug, Clone)]
pub(super) enum Caller {
    /// TLS without a client certificate: a node asking to join.
    Anonymous,
    Node(Fingerprint),
    Operator(Fingerprint),
}

impl Caller {
    pub(super) fn of<T>(cx: &Context, request: &Request<T>) -> Result<Caller, Status> {
        let fingerprint = request
            .extensions()
            .get::<PeerInfo>()
            .ok_or_else(|| Status::unauthenticated("not a TLS connection"))?
            .fingerprint
            .clone();
        let Some(fingerprint) = fingerprint else {
            return Ok(Caller::Anonymous);
        };
        match cx.trust.role_of(&fingerprint) {
            Some(PeerRole::Node) => Ok(Caller::Node(fingerprint)),
            Some(PeerRole::Operator) => Ok(Caller::Operator(fingerprint)),
            None => Err(Status::unauthenticated(format!(
                "certificate {fingerprint} is not trusted by this cluster"
            ))),
        }
    }

    /// A node or an operator.
    pub(super) fn trusted(&self) -> Result<(), Status> {
        match self {
            Caller::Anonymous => Err(Status::unauthenticated(
                "this call needs a trusted certificate; without one a node can only ask to join",
            )),
            _ => Ok(()),
        }
    }

    pub(super) fn node(&self) -> Result<&Fingerprint, Status> {
        match self {
            Caller::Node(f) => Ok(f),
            Caller::Operator(_) => Err(Status::permission_denied("only a node may make this call")),
            Caller::Anonymous => Err(Status::unauthenticated("only a node may make this call")),
        }
    }

    /// A request marked as forwarded comes from a node, or is refused.
    pub(super) fn may_send(&self, forwarded: bool) -> Result<(), Status> {
        self.trusted()?;
        if forwarded {
            self.node()?;
        }
        Ok(())
    }

    /// For audit fields such as `added_by`.
    pub(super) fn describe(&self, cx: &Context) -> String {
        let fingerprint = match self {
            Caller::Anonymous => return "a client without a certificate".into(),
            Caller::Node(f) | Caller::Operator(f) => f,
        };
        cx.cluster
            .state()
            .read(|s| s.trust.entries.get(fingerprint).map(|e| e.name.clone()))
            .unwrap_or_else(|| {
                if *fingerprint == cx.identity.fingerprint {
                    cx.me.name.clone()
                } else {
                    fingerprint.short().to_string()
                }
            })
    }
}
