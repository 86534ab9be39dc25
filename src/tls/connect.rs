//! The client's side of mutual TLS: endpoints that present an identity (or none, to ask to
//! join) and accept only servers whose fingerprint is trusted.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{ClientTlsConfig, Endpoint};

use super::{Identity, TrustStore, verify::ServerVerifier};

#[derive(Debug, thiserror::Error)]
#[error("{addr:?} is not an address to dial: {message}")]
pub struct BadEndpoint {
    pub addr: String,
    pub message: String,
}

pub fn endpoint(
    addr: &str,
    identity: Option<&Identity>,
    trust: Arc<dyn TrustStore>,
) -> Result<Endpoint, BadEndpoint> {
    let bad = |message: String| BadEndpoint {
        addr: addr.to_owned(),
        message,
    };
    let mut tls = ClientTlsConfig::new().timeout(Duration::from_secs(5));
    if let Some(identity) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            &identity.cert_pem,
            &identity.key_pem,
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| bad(e.to_string()))?
        .tls_config_with_verifier(tls, Arc::new(ServerVerifier::new(trust)))
        .map_err(|e| bad(e.to_string()))
}
