//! rustls verifiers that trust certificate fingerprints instead of a CA.
//!
//! Each side checks that the other proved possession of its certificate's key (the handshake
//! signature, through rustls' own signature checks) and that the certificate's fingerprint is
//! in the trust list; names and dates in the certificates mean nothing here.

use std::fmt::Debug;
use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use serde::{Deserialize, Serialize};

use super::Fingerprint;

/// What a trusted certificate may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerRole {
    /// A cluster node: Raft RPCs and the admin API.
    Node,
    /// A person or a tool off the box: the admin API only.
    Operator,
}

impl PeerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRole::Node => "node",
            PeerRole::Operator => "operator",
        }
    }
}

/// Who is trusted right now. Asked at every handshake and every request, so that a change
/// reaches new connections at once.
pub trait TrustStore: Send + Sync + Debug + 'static {
    fn role_of(&self, fingerprint: &Fingerprint) -> Option<PeerRole>;
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The proof that the peer holds its certificate's key: rustls' own checks of the handshake
/// signature, shared by both verifiers.
#[derive(Debug)]
struct Signatures(WebPkiSupportedAlgorithms);

impl Signatures {
    fn new() -> Signatures {
        Signatures(provider().signature_verification_algorithms)
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
}

/// A refused certificate ends the handshake with an `access_denied` alert, which tells the
/// peer that its certificate was understood and is not welcome.
fn refused() -> Error {
    Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// Whether a listener lets a client in without a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Node to node (the Raft port): a client without one fails the handshake.
    Required,
    /// The admin port: a client without one may only ask to join (see `admin::access`).
    Optional,
}

/// The server's check of a client certificate.
#[derive(Debug)]
pub(super) struct ClientVerifier {
    trust: Arc<dyn TrustStore>,
    signatures: Signatures,
    auth: ClientAuth,
}

impl ClientVerifier {
    pub(super) fn new(trust: Arc<dyn TrustStore>, auth: ClientAuth) -> ClientVerifier {
        ClientVerifier {
            trust,
            signatures: Signatures::new(),
            auth,
        }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.auth == ClientAuth::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let fingerprint = Fingerprint::of_der(end_entity);
        match self.trust.role_of(&fingerprint) {
            Some(_) => Ok(ClientCertVerified::assertion()),
            None => {
                metrics::counter!("fepha_tls_refused_total", "side" => "server", "reason" => "untrusted").increment(1);
                tracing::warn!(%fingerprint, "refused a client certificate that is not trusted");
                Err(refused())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.0.supported_schemes()
    }
}

/// The client's check of a server certificate: servers are always nodes.
#[derive(Debug)]
pub(super) struct ServerVerifier {
    trust: Arc<dyn TrustStore>,
    signatures: Signatures,
}

impl ServerVerifier {
    pub(super) fn new(trust: Arc<dyn TrustStore>) -> ServerVerifier {
        ServerVerifier {
            trust,
            signatures: Signatures::new(),
        }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let fingerprint = Fingerprint::of_der(end_entity);
        match self.trust.role_of(&fingerprint) {
            Some(PeerRole::Node) => Ok(ServerCertVerified::assertion()),
            _ => {
                metrics::counter!("fepha_tls_refused_total", "side" => "client", "reason" => "untrusted").increment(1);
                tracing::warn!(%fingerprint, "refused a server certificate that is not a trusted node");
                Err(Error::General(format!(
                    "the server's certificate {fingerprint} is not a trusted fepha node"
                )))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.0.supported_schemes()
    }
}
