//! A TCP proxy in front of a field device that fails chosen clients on command.
//!
//! Every cluster node opens its field connections from its own loopback IP (node.toml's
//! `field_source_ip`), so denying one source IP breaks one node's channel to the device while
//! the other nodes' channels, through the same proxy, keep working.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy that cannot reach its target resets the client after this long, as an unreachable
/// device would time out.
const CONNECT: Duration = Duration::from_secs(5);

/// Which sources are refused; every connection watches it.
#[derive(Debug, Default, Clone)]
struct Policy {
    denied: HashSet<IpAddr>,
    deny_all: bool,
}

impl Policy {
    fn allows(&self, ip: IpAddr) -> bool {
        !self.deny_all && !self.denied.contains(&ip)
    }
}

#[derive(Debug, Default)]
struct Counts {
    accepted: HashMap<IpAddr, u64>,
    open: HashMap<IpAddr, u64>,
}

/// Runs until dropped, on a runtime of its own, so tests with or without tokio can use it.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    policy: watch::Sender<Policy>,
    counts: Arc<Mutex<Counts>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Listens on `listen` (port 0: any free port; see [`Proxy::addr`]) and forwards every
    /// allowed connection to `target`.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> Proxy {
        assert!(
            listen.ip().is_loopback() && target.ip().is_loopback(),
            "test proxies stay on loopback: {listen} -> {target}"
        );
        // Bound here, not on the runtime, so the port is known and taken when this returns.
        let std_listener = std::net::TcpListener::bind(listen)
            .unwrap_or_else(|e| panic!("proxy cannot listen on {listen}: {e}"));
        std_listener
            .set_nonblocking(true)
            .expect("make the proxy listener non-blocking");
        let addr = std_listener
            .local_addr()
            .expect("the proxy listener has an address");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("proxy")
            .enable_all()
            .build()
            .expect("build the proxy's runtime");
        let (policy, _) = watch::channel(Policy::default());
        let counts = Arc::new(Mutex::new(Counts::default()));
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(std_listener).expect("register the proxy listener")
        };
        rt.spawn(accept_loop(
            listener,
            target,
            policy.clone(),
            Arc::clone(&counts),
        ));
        Proxy {
            addr,
            target,
            policy,
            counts,
            rt: Some(rt),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Resets every connection from `ip` now, and every later one as soon as it is accepted.
    pub fn deny(&self, ip: IpAddr) {
        self.policy.send_modify(|p| {
            p.denied.insert(ip);
        });
    }

    /// Undoes [`Proxy::deny`] for `ip` (a [`Proxy::deny_all`] still holds).
    pub fn allow(&self, ip: IpAddr) {
        self.policy.send_modify(|p| {
            p.denied.remove(&ip);
        });
    }

    /// Resets every connection, from anywhere, until [`Proxy::allow_all`]: the device is gone.
    pub fn deny_all(&self) {
        self.policy.send_modify(|p| p.deny_all = true);
    }

    /// Undoes [`Proxy::deny_all`] and every [`Proxy::deny`].
    pub fn allow_all(&self) {
        self.policy.send_modify(|p| *p = Policy::default());
    }

    /// How many connections from `ip` the proxy has accepted so far, refused ones included,
    /// so a test can tell that a denied node kept trying.
    pub fn connections_from(&self, ip: IpAddr) -> u64 {
        lock(&self.counts).accepted.get(&ip).copied().unwrap_or(0)
    }

    /// How many connections from `ip` are being forwarded right now.
    pub fn open_from(&self, ip: IpAddr) -> u64 {
        lock(&self.counts).open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Unlike dropping the runtime, this does not block, so a proxy may be dropped inside
        // an async test too. The tasks end, and with them every socket.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(|e| e.into_inner())
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    policy: watch::Sender<Policy>,
    counts: Arc<Mutex<Counts>>,
) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            // Out of file descriptors and the like: the next accept may work, and a busy loop
            // would starve the connections.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let ip = peer.ip();
        *lock(&counts).accepted.entry(ip).or_default() += 1;
        // Subscribed before the first look, so no change after it can be missed.
        let mut rx = policy.subscribe();
        if !rx.borrow_and_update().allows(ip) {
            reset(&client);
            continue;
        }
        tokio::spawn(forward(client, ip, target, rx, Arc::clone(&counts)));
    }
}

/// Carries one connection until either end closes it or its source is denied.
async fn forward(
    mut client: TcpStream,
    ip: IpAddr,
    target: SocketAddr,
    mut policy: watch::Receiver<Policy>,
    counts: Arc<Mutex<Counts>>,
) {
    let mut upstream = match tokio::time::timeout(CONNECT, TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        _ => {
            reset(&client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    *lock(&counts).open.entry(ip).or_default() += 1;
    let denied = {
        let copy = copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                _ = &mut copy => break false,
                changed = policy.changed() => {
                    // The proxy is being dropped: the runtime goes too.
                    if changed.is_err() {
                        break true;
                    }
                    if !policy.borrow_and_update().allows(ip) {
                        break true;
                    }
                }
            }
        }
    };
    if let Some(n) = lock(&counts).open.get_mut(&ip) {
        *n = n.saturating_sub(1);
    }
    if denied {
        // Both ends see a broken link, not an orderly close.
        reset(&client);
        reset(&upstream);
    }
}

/// With SO_LINGER 0 the close that follows sends RST instead of FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}
