//! An accepted TLS connection as tonic sees it: a [`PeerConn`] carries the client's
//! fingerprint to the handlers, can be cut the moment its certificate stops being trusted,
//! and, without a certificate, is closed once it has been idle too long.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};

use super::admission::{Admission, Closed, Slot};
use super::{Fingerprint, PeerRole, TrustStore};

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
        let mut open = self.lock();
        // A connection that ended by itself has cancelled its token on drop; forgetting
        // those here too keeps the list as short as what is open, flood or not.
        open.retain(|(_, token)| !token.is_cancelled());
        open.push((fingerprint, token.clone()));
        token
    }

    /// Closes every connection whose certificate is no longer trusted; returns how many.
    pub fn close_untrusted(&self, trust: &dyn TrustStore) -> usize {
        let mut open = self.lock();
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

/// Closes a connection that has received nothing for `after`.
struct Idle {
    after: Duration,
    deadline: Pin<Box<Sleep>>,
    admission: Arc<Admission>,
    remote: SocketAddr,
}

/// One accepted TLS connection.
pub struct PeerConn {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
    /// Ready once the connection is to be cut.
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Tells the registry, by cancelling, that this connection is gone.
    _registered: DropGuard,
    /// This connection's place in its listener's counts.
    _slot: Slot,
    /// Connections without a certificate only.
    idle: Option<Idle>,
}

impl PeerConn {
    pub(super) fn new(
        inner: TlsStream<TcpStream>,
        info: PeerInfo,
        connections: &Connections,
        slot: Slot,
        admission: &Arc<Admission>,
    ) -> PeerConn {
        let token = connections.register(info.fingerprint.clone());
        let idle = info.fingerprint.is_none().then(|| {
            let after = admission.limits.anonymous_idle;
            Idle {
                after,
                deadline: Box::pin(tokio::time::sleep(after)),
                admission: admission.clone(),
                remote: info.remote,
            }
        });
        PeerConn {
            closed: Box::pin(token.clone().cancelled_owned()),
            _registered: token.drop_guard(),
            _slot: slot,
            inner,
            info,
            idle,
        }
    }

    pub fn info(&self) -> &PeerInfo {
        &self.info
    }
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
        // Polling the cancellation and the idle deadline also registers this reader's
        // waker: an idle connection is woken up to be cut.
        if this.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(cut()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(idle) = &mut this.idle {
            if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                let next = Instant::now() + idle.after;
                idle.deadline.as_mut().reset(next);
            } else if idle.deadline.as_mut().poll(cx).is_ready() {
                idle.admission
                    .refuse(idle.remote.ip(), Closed::AnonymousIdle);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "a connection without a certificate sent nothing for too long",
                )));
            }
        }
        read
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
