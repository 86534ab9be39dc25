//! The client's side of mutual TLS: endpoints that present an identity (or none, to ask to
//! join) and accept only servers whose fingerprint is trusted.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

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

/// Channels to other nodes by address, kept open between calls: a fresh connection per call
/// would add a TCP, TLS and HTTP/2 handshake to every one. A channel connects lazily and
/// reconnects by itself; a dead node shows up as a failed call.
#[derive(Debug)]
pub struct Channels {
    identity: Option<Identity>,
    trust: Arc<dyn TrustStore>,
    /// The longest any call on these channels may take.
    call_timeout: Duration,
    open: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    pub fn new(
        identity: Option<Identity>,
        trust: Arc<dyn TrustStore>,
        call_timeout: Duration,
    ) -> Channels {
        Channels {
            identity,
            trust,
            call_timeout,
            open: Mutex::default(),
        }
    }

    /// The channel to `addr`, made on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, BadEndpoint> {
        // A poisoned lock only means another caller panicked; the map is still usable.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = open.get(addr) {
            return Ok(channel.clone());
        }
        let channel = endpoint(addr, self.identity.as_ref(), self.trust.clone())?
            .connect_timeout(Duration::from_secs(1))
            .timeout(self.call_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        open.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Drops the channels to addresses not in `keep` (nodes that left or were revoked), which
    /// closes their connections.
    pub fn retain(&self, keep: &BTreeSet<String>) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|addr, _| keep.contains(addr));
    }
}

/// Why a node might have dropped our connections: a raw TLS handshake with the same identity,
/// then one read, which brings the server's refusal (an `access_denied` alert) if there is
/// one. Some(reason) when the node refuses this certificate.
///
/// Needed because gRPC clients often report only "connection closed": in TLS 1.3 the client
/// finishes the handshake before the server has judged its certificate, and the request that
/// follows is cancelled before the alert is read.
pub async fn refusal(
    addr: &str,
    identity: Option<&Identity>,
    trust: Arc<dyn TrustStore>,
) -> Option<String> {
    use tokio::io::AsyncReadExt;

    let probe = async {
        let builder = rustls::ClientConfig::builder_with_provider(super::verify::provider())
            .with_safe_default_protocol_versions()
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerVerifier::new(trust)));
        let config = match identity {
            Some(id) => builder
                .with_client_auth_cert(vec![id.cert_der.clone()], id.key_der().ok()?)
                .ok()?,
            None => builder.with_no_client_auth(),
        };
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_matches(['[', ']']);
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).ok()?;
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let mut tls = match connector.connect(name, tcp).await {
            Ok(tls) => tls,
            Err(e) => return Some(e.to_string()),
        };
        let mut byte = [0u8; 1];
        match tls.read(&mut byte).await {
            Err(e) => Some(e.to_string()),
            Ok(_) => None,
        }
    };
    let reason = tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()??;
    reason
        .contains("AccessDenied")
        .then(|| "the node refused this certificate: it is not trusted by the cluster (TLS alert AccessDenied)".to_string())
}
