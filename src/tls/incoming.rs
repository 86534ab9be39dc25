//! The server's side of mutual TLS: the accept loop and the handshake. Accepted TCP
//! connections go through the handshake concurrently (a slow or hostile client cannot stall
//! the others), each in a slot its listener's [`Admission`] grants, and reach tonic as
//! [`PeerConn`]s: those with a certificate on one stream, those without (admin port only) on
//! another, which is served with smaller limits.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::Acceptor;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::admission::{Admission, Limits, Slot};
use super::conn::{Connections, PeerConn, PeerInfo};
use super::verify::{self, ClientAuth};
use super::{Fingerprint, Identity, TrustStore};

pub fn server_config(
    identity: &Identity,
    trust: Arc<dyn TrustStore>,
    auth: ClientAuth,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(verify::provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verify::ClientVerifier::new(trust, auth)))
        .with_single_cert(vec![identity.cert_der.clone()], identity.key_der()?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

type Accepted = ReceiverStream<io::Result<PeerConn>>;

/// A listener's accepted connections.
pub struct Incoming {
    /// Clients that presented a trusted certificate.
    pub certified: Accepted,
    /// Clients that presented none (only where the configuration allows it).
    pub anonymous: Accepted,
}

/// Accepts TLS connections on `listener` for as long as the certified stream is polled.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    connections: Connections,
    what: &'static str,
    limits: Limits,
) -> Incoming {
    let (certified, certified_rx) = mpsc::channel(64);
    let (anonymous, anonymous_rx) = mpsc::channel(16);
    let admission = Admission::new(what, limits);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!("{what} listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if certified.is_closed() {
                return;
            }
            // Over a cap the socket is closed here and now: the accept loop never waits for
            // a slot, so the kernel's backlog never becomes the queue.
            let Ok(slot) = admission.handshake(remote.ip()) else {
                continue;
            };
            let (config, admission, connections) =
                (config.clone(), admission.clone(), connections.clone());
            let (certified, anonymous) = (certified.clone(), anonymous.clone());
            tokio::spawn(async move {
                let Some(tls) = handshake(config, tcp, remote, &admission).await else {
                    return;
                };
                drop(slot);
                let fingerprint = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .map(|cert| Fingerprint::of_der(cert));
                let certificate = fingerprint.is_some();
                let Ok(open) = admission.open(remote.ip(), certificate) else {
                    return;
                };
                let conn = conn(tls, remote, fingerprint, &connections, open, &admission);
                let to = if certificate { certified } else { anonymous };
                let _ = to.send(Ok(conn)).await;
            });
        }
    });
    Incoming {
        certified: ReceiverStream::new(certified_rx),
        anonymous: ReceiverStream::new(anonymous_rx),
    }
}

fn conn(
    tls: TlsStream<TcpStream>,
    remote: SocketAddr,
    fingerprint: Option<Fingerprint>,
    connections: &Connections,
    slot: Slot,
    admission: &Arc<Admission>,
) -> PeerConn {
    let info = PeerInfo {
        remote,
        fingerprint,
    };
    PeerConn::new(tls, info, connections, slot, admission)
}

fn count(what: &'static str, outcome: &'static str) {
    metrics::counter!("fepha_tls_handshakes_total", "listener" => what, "outcome" => outcome)
        .increment(1);
}

/// The handshake, in two deadlines: the ClientHello first (a client sends it with its first
/// packet, so an idle socket is dropped soon), then the rest.
async fn handshake(
    config: Arc<ServerConfig>,
    tcp: TcpStream,
    remote: SocketAddr,
    admission: &Admission,
) -> Option<TlsStream<TcpStream>> {
    let what = admission.what;
    let limits = admission.limits;
    let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
    let _ = tcp.set_nodelay(true);
    let mut hello = LazyConfigAcceptor::new(Acceptor::default(), tcp);
    let start = match tokio::time::timeout(limits.hello_timeout, &mut hello).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            count(what, "refused");
            tracing::info!(%remote, "{what} listener: not a TLS ClientHello: {e}");
            if let Some(tcp) = hello.take_io() {
                linger(tcp).await;
            }
            return None;
        }
        Err(_) => {
            count(what, "timeout");
            tracing::info!(%remote, "{what} listener: no ClientHello within {:?}", limits.hello_timeout);
            return None;
        }
    };
    let accept = start.into_stream(config).into_fallible();
    match tokio::time::timeout_at(deadline, accept).await {
        Ok(Ok(tls)) => {
            count(what, "ok");
            Some(tls)
        }
        Ok(Err((e, tcp))) => {
            count(what, "refused");
            if no_certificate(&e) {
                metrics::counter!("fepha_tls_refused_total", "side" => "server", "reason" => "no_certificate")
                    .increment(1);
                tracing::info!(%remote, "{what} listener: refused a client without a certificate");
            } else {
                tracing::info!(%remote, "{what} listener: TLS handshake refused: {e}");
            }
            linger(tcp).await;
            None
        }
        Err(_) => {
            count(what, "timeout");
            tracing::info!(%remote, "{what} listener: TLS handshake timed out");
            None
        }
    }
}

fn no_certificate(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::NoCertificatesPresented))
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Mutex, PoisonError};

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
        me: Option<&Identity>,
        trust: Arc<dyn TrustStore>,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let builder = ClientConfig::builder_with_provider(verify::provider())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::ServerVerifier::new(trust)));
        let config = match me {
            Some(me) => builder
                .with_client_auth_cert(
                    vec![me.cert_der.clone()],
                    me.key_der().map_err(io::Error::other)?,
                )
                .map_err(io::Error::other)?,
            None => builder.with_no_client_auth(),
        };
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("127.0.0.1").map_err(io::Error::other)?;
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    struct Server {
        addr: SocketAddr,
        me: Identity,
        trust: Arc<Trusted>,
        connections: Connections,
        accepted: Incoming,
    }

    async fn server(
        auth: ClientAuth,
        limits: Limits,
    ) -> Result<Server, Box<dyn std::error::Error>> {
        let me = Identity::generate("server")?;
        let trust = Arc::new(Trusted::default());
        trust.set(&[&me.fingerprint]);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let connections = Connections::default();
        let config = server_config(&me, trust.clone(), auth)?;
        let accepted = incoming(listener, config, connections.clone(), "test", limits);
        Ok(Server {
            addr,
            me,
            trust,
            connections,
            accepted,
        })
    }

    /// Whether the server closes `tcp` within `within`.
    async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        loop {
            match tokio::time::timeout(within, tcp.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    #[tokio::test]
    async fn untrusted_clients_are_refused_and_revoked_ones_cut()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut s = server(ClientAuth::Optional, Limits::default()).await?;
        let (good, stranger) = (Identity::generate("good")?, Identity::generate("stranger")?);
        s.trust.set(&[&s.me.fingerprint, &good.fingerprint]);

        let mut client = connect(s.addr, Some(&good), s.trust.clone()).await?;
        let mut conn = s.accepted.certified.next().await.ok_or("no connection")??;
        assert_eq!(conn.info().fingerprint.as_ref(), Some(&good.fingerprint));
        client.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");

        // TLS 1.3 lets the client finish first; the refusal arrives as an alert.
        let mut refused = connect(s.addr, Some(&stranger), s.trust.clone()).await?;
        let err = refused
            .read(&mut buf)
            .await
            .expect_err("a stranger must be refused");
        assert!(err.to_string().contains("AccessDenied"), "{err}");

        s.trust.set(&[&s.me.fingerprint]);
        assert_eq!(s.connections.close_untrusted(s.trust.as_ref()), 1);
        let err = conn
            .read(&mut buf)
            .await
            .expect_err("a revoked connection is cut");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        Ok(())
    }

    #[tokio::test]
    async fn a_listener_that_requires_a_certificate_refuses_a_client_without_one()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut s = server(ClientAuth::Required, Limits::default()).await?;
        let mut anon = connect(s.addr, None, s.trust.clone()).await?;
        let mut buf = [0u8; 4];
        let err = anon
            .read(&mut buf)
            .await
            .expect_err("a client without a certificate must be refused");
        assert!(err.to_string().contains("CertificateRequired"), "{err}");
        // And a member still gets in.
        let _member = connect(s.addr, Some(&s.me), s.trust.clone()).await?;
        let conn = s.accepted.certified.next().await.ok_or("no connection")??;
        assert_eq!(conn.info().fingerprint.as_ref(), Some(&s.me.fingerprint));
        Ok(())
    }

    #[tokio::test]
    async fn clients_without_a_certificate_are_capped_and_closed_when_idle()
    -> Result<(), Box<dyn std::error::Error>> {
        let limits = Limits {
            anonymous_per_address: 2,
            anonymous_idle: Duration::from_millis(300),
            ..Limits::default()
        };
        let mut s = server(ClientAuth::Optional, limits).await?;
        let mut buf = [0u8; 4];
        let mut first = connect(s.addr, None, s.trust.clone()).await?;
        let mut conn = s.accepted.anonymous.next().await.ok_or("no connection")??;
        assert!(conn.info().fingerprint.is_none());
        let _second = connect(s.addr, None, s.trust.clone()).await?;
        let _kept = s.accepted.anonymous.next().await.ok_or("no connection")??;
        // The third from the same address is closed as soon as its handshake is done.
        let mut third = connect(s.addr, None, s.trust.clone()).await?;
        let end = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf)).await?;
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");

        // Traffic keeps a connection open; silence closes it.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            first.write_all(b"ping").await?;
            conn.read_exact(&mut buf).await?;
        }
        let t = std::time::Instant::now();
        let err = conn
            .read(&mut buf)
            .await
            .expect_err("an idle connection is closed");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        Ok(())
    }

    #[tokio::test]
    async fn idle_sockets_are_dropped_and_a_flood_from_one_address_leaves_room_for_others()
    -> Result<(), Box<dyn std::error::Error>> {
        let limits = Limits {
            hello_timeout: Duration::from_secs(1),
            handshakes_per_address: 4,
            ..Limits::default()
        };
        let mut s = server(ClientAuth::Required, limits).await?;
        let flood_from: SocketAddr = "127.0.0.2:0".parse()?;
        let mut flood = Vec::new();
        for _ in 0..20 {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(flood_from)?;
            flood.push(socket.connect(s.addr).await?);
        }
        // Those over the cap are closed at once, the others once the ClientHello is late.
        let t = std::time::Instant::now();
        for tcp in &mut flood[4..] {
            assert!(closed_within(tcp, Duration::from_millis(250)).await);
        }
        let _member = connect(s.addr, Some(&s.me), s.trust.clone()).await?;
        let conn = s.accepted.certified.next().await.ok_or("no connection")??;
        assert_eq!(conn.info().fingerprint.as_ref(), Some(&s.me.fingerprint));
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
        for tcp in &mut flood[..4] {
            assert!(closed_within(tcp, Duration::from_secs(3)).await);
        }
        Ok(())
    }
}
