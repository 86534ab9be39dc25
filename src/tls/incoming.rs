//! The server's side of mutual TLS: accepted TCP connections go through the TLS handshake
//! concurrently (a slow or hostile client cannot stall the others) and reach tonic as
//! [`PeerConn`]s, which carry the client's fingerprint to the handlers and can be cut the
//! moment their certificate stops being trusted.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};

use super::{Fingerprint, Identity, PeerRole, TrustStore, verify};

/// A handshake that takes longer than this is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; more connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;

/// What the handlers learn about the connection a request came on.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// None for a client that presented no certificate (it may only ask to join).
    pub fingerprint: Option<Fingerprint>,
}

/// The calling node's fingerprint, for a service only member nodes may call (`service`
/// names it in the refusals). Checked on every request, so a certificate revoked while its
/// connection was open is refused from the next request on.
pub fn require_node<'a, T>(
    request: &'a tonic::Request<T>,
    trust: &dyn TrustStore,
    service: &str,
) -> Result<&'a Fingerprint, tonic::Status> {
    let fingerprint = request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.fingerprint.as_ref())
        .ok_or_else(|| {
            tonic::Status::unauthenticated(format!("{service} needs a node certificate"))
        })?;
    match trust.role_of(fingerprint) {
        Some(PeerRole::Node) => Ok(fingerprint),
        Some(PeerRole::Operator) => Err(tonic::Status::permission_denied(format!(
            "an operator certificate cannot speak {service}"
        ))),
        None => Err(tonic::Status::unauthenticated(format!(
            "certificate {fingerprint} is not trusted"
        ))),
    }
}

pub fn server_config(
    identity: &Identity,
    trust: Arc<dyn TrustStore>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(verify::provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verify::ClientVerifier::new(trust)))
        .with_single_cert(vec![identity.cert_der.clone()], identity.key_der()?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// One open connection: its client's fingerprint, and the token that cuts it.
type Open = (Option<Fingerprint>, CancellationToken);

/// The open connections of one listener, by client fingerprint.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    open: Arc<Mutex<Vec<Open>>>,
}

impl Connections {
    fn register(&self, fingerprint: Option<Fingerprint>) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().push((fingerprint, token.clone()));
        token
    }

    /// Closes every connection whose certificate is no longer trusted; returns how many.
    pub fn close_untrusted(&self, trust: &dyn TrustStore) -> usize {
        let mut open = self.lock();
        // A connection that ended by itself has cancelled its token on drop.
        open.retain(|(_, token)| !token.is_cancelled());
        let mut closed = 0;
        open.retain(|(fingerprint, token)| {
            let trusted = fingerprint
                .as_ref()
                .is_none_or(|f| trust.role_of(f).is_some());
            if !trusted {
                token.cancel();
                closed += 1;
            }
            trusted
        });
        closed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Open>> {
        // A poisoned lock only means a panic elsewhere; the list itself is intact.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Accepts TLS connections on `listener` for as long as the returned stream is polled.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    connections: Connections,
    what: &'static str,
) -> ReceiverStream<io::Result<PeerConn>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (tcp, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!("{what} listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let (acceptor, tx, connections) = (acceptor.clone(), tx.clone(), connections.clone());
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(conn) = handshake(&acceptor, tcp, remote, &connections, what).await {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    connections: &Connections,
    what: &'static str,
) -> Option<PeerConn> {
    let _ = tcp.set_nodelay(true);
    let accept = acceptor.accept(tcp).into_fallible();
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err((e, tcp))) => {
            metrics::counter!("fepha_tls_handshakes_total", "listener" => what, "outcome" => "refused")
                .increment(1);
            tracing::info!(%remote, "{what} listener: TLS handshake refused: {e}");
            linger(tcp).await;
            return None;
        }
        Err(_) => {
            metrics::counter!("fepha_tls_handshakes_total", "listener" => what, "outcome" => "timeout")
                .increment(1);
            tracing::info!(%remote, "{what} listener: TLS handshake timed out");
            return None;
        }
    };
    metrics::counter!("fepha_tls_handshakes_total", "listener" => what, "outcome" => "ok")
        .increment(1);
    let fingerprint = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| Fingerprint::of_der(cert));
    let token = connections.register(fingerprint.clone());
    Some(PeerConn {
        closed: Box::pin(token.clone().cancelled_owned()),
        _registered: token.drop_guard(),
        inner: tls,
        info: PeerInfo {
            remote,
            fingerprint,
        },
    })
}

/// Closes a refused connection so that the client learns why. rustls has sent the alert, but
/// the client (in TLS 1.3 it deems the handshake done first) may already have sent its
/// request; closing a socket with unread data makes the kernel reset the connection, and the
/// reset throws the alert away at the client. So end our side, and read what the client still
/// sends until it closes too (briefly: a refused client gets no more of our time).
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}

/// One accepted TLS connection.
pub struct PeerConn {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
    /// Ready once the connection is to be cut.
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Tells the registry, by cancelling, that this connection is gone.
    _registered: DropGuard,
}

fn cut() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the peer's certificate is no longer trusted",
    )
}

impl AsyncRead for PeerConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Polling the cancellation also registers this reader's waker: an idle connection is
        // woken up to be cut.
        if this.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for PeerConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rustls::ClientConfig;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;
    use tokio_stream::StreamExt;

    use super::*;
    use crate::tls::PeerRole;

    #[derive(Debug, Default)]
    struct Trusted(Mutex<BTreeSet<Fingerprint>>);

    impl TrustStore for Trusted {
        fn role_of(&self, f: &Fingerprint) -> Option<PeerRole> {
            let set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            set.contains(f).then_some(PeerRole::Node)
        }
    }

    impl Trusted {
        fn set(&self, fingerprints: &[&Fingerprint]) {
            let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            *set = fingerprints.iter().map(|f| (*f).clone()).collect();
        }
    }

    async fn connect(
        addr: SocketAddr,
        me: &Identity,
        trust: Arc<dyn TrustStore>,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let config = ClientConfig::builder_with_provider(verify::provider())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::ServerVerifier::new(trust)))
            .with_client_auth_cert(
                vec![me.cert_der.clone()],
                me.key_der().map_err(io::Error::other)?,
            )
            .map_err(io::Error::other)?;
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("127.0.0.1").map_err(io::Error::other)?;
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    #[tokio::test]
    async fn untrusted_clients_are_refused_and_revoked_ones_cut()
    -> Result<(), Box<dyn std::error::Error>> {
        let (server, good, stranger) = (
            Identity::generate("server")?,
            Identity::generate("good")?,
            Identity::generate("stranger")?,
        );
        let trust = Arc::new(Trusted::default());
        trust.set(&[&server.fingerprint, &good.fingerprint]);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let connections = Connections::default();
        let config = server_config(&server, trust.clone())?;
        let mut accepted = incoming(listener, config, connections.clone(), "test");

        let mut client = connect(addr, &good, trust.clone()).await?;
        let mut conn = accepted.next().await.ok_or("no connection")??;
        assert_eq!(conn.info.fingerprint.as_ref(), Some(&good.fingerprint));
        client.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");

        // TLS 1.3 lets the client finish first; the refusal arrives as an alert.
        let mut refused = connect(addr, &stranger, trust.clone()).await?;
        let err = refused
            .read(&mut buf)
            .await
            .expect_err("a stranger must be refused");
        assert!(err.to_string().contains("AccessDenied"), "{err}");

        trust.set(&[&server.fingerprint]);
        assert_eq!(connections.close_untrusted(trust.as_ref()), 1);
        let err = conn
            .read(&mut buf)
            .await
            .expect_err("a revoked connection is cut");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        Ok(())
    }
}
