//! One listener per `[[forwarder]]` of the site, on this node's `forwarder_ip`, restarted
//! when its part of the configuration changes (its masters reconnect then).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use super::Host;
use super::acks::{self, AckBook};
use super::groups::Groups;
use super::image::Image;
use super::station::Selects;
use crate::iec104::LinkParams;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::site::Forwarder;

/// How long a listener whose port is taken waits before it tries again.
const BIND_RETRY: Duration = Duration::from_millis(250);

/// What every connection of one forwarder shares.
pub(crate) struct Served {
    pub host: Arc<Host>,
    pub name: String,
    pub spec: Forwarder,
    pub image: Image,
    pub params: LinkParams,
    pub selects: Mutex<Selects>,
    pub groups: Mutex<Groups>,
    pub book: Arc<AckBook>,
    /// Wakes connections waiting for a group when one is released.
    pub released: Notify,
    /// What the connections leave running when they close: commands on their way to an
    /// outcome (and their cancellation), claims and releases of a group in the log. The
    /// listener waits for them before it ends.
    pub tasks: TaskTracker,
}

struct Running {
    /// What the listener serves, shared with it: the map of a large site is megabytes, and
    /// was kept twice.
    served: Arc<Served>,
    stop: ShutdownTrigger,
    listener: tokio::task::JoinHandle<()>,
}

/// Keeps this node's listeners in line with the applied site configuration until shutdown.
pub(crate) async fn run(host: Arc<Host>, shutdown: Shutdown) {
    let book = Arc::new(AckBook::default());
    let recorder = tokio::spawn(acks::record(
        host.cluster.clone(),
        book.clone(),
        shutdown.clone(),
    ));
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut changes = host.cluster.raft().metrics();
    let mut seen_version = None;
    let stop = shutdown.clone().wait();
    tokio::pin!(stop);
    loop {
        let version = host.cluster.read(|s| s.config_version());
        if seen_version != Some(version) {
            seen_version = Some(version);
            let site = host.cluster.site();
            let wanted: Vec<&Forwarder> = site.iter().flat_map(|s| s.forwarders.iter()).collect();
            running.retain(|name, r| {
                let keep = wanted.iter().any(|f| f.name.get_ref() == name);
                if !keep {
                    r.stop.trigger();
                }
                keep
            });
            for spec in wanted {
                let Some(site) = site.as_ref() else { break };
                let name = spec.name.get_ref().clone();
                let image = Image::new(site, spec);
                if let Some(r) = running.get(&name)
                    && r.served.spec == *spec
                    && r.served.image == image
                {
                    continue;
                }
                if let Some(old) = running.remove(&name) {
                    // The new listener binds the same port: the old one must have let go.
                    old.stop.trigger();
                    let _ = tokio::time::timeout(Duration::from_secs(1), old.listener).await;
                }
                let Ok(params) = spec.link_params() else {
                    tracing::error!(forwarder = %name, "bad link parameters; not served");
                    continue;
                };
                let (trigger, own) = shutdown::channel();
                let served = Arc::new(Served {
                    host: host.clone(),
                    name: name.clone(),
                    spec: spec.clone(),
                    image,
                    params,
                    selects: Mutex::default(),
                    groups: Mutex::default(),
                    book: book.clone(),
                    released: Notify::new(),
                    tasks: TaskTracker::new(),
                });
                let listener = tokio::spawn(listen(served.clone(), shutdown.clone(), own));
                running.insert(
                    name,
                    Running {
                        served,
                        stop: trigger,
                        listener,
                    },
                );
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            _ = &mut stop => break,
        }
    }
    // Each listener closes its connections, and waits for what they left running, before
    // it ends.
    for (_, r) in running {
        r.stop.trigger();
        let _ = r.listener.await;
    }
    let _ = recorder.await;
}

/// Accepts masters until the node or this forwarder stops.
async fn listen(served: Arc<Served>, node_stop: Shutdown, own_stop: Shutdown) {
    let addr = SocketAddr::new(served.host.listen_ip, *served.spec.port.get_ref());
    let stopped = async {
        tokio::select! {
            _ = node_stop.clone().wait() => {}
            _ = own_stop.clone().wait() => {}
        }
    };
    tokio::pin!(stopped);
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => {
                metrics::counter!("fepha_iec104_listen_errors_total").increment(1);
                tracing::error!(forwarder = %served.name, %addr, "cannot listen: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(BIND_RETRY) => {}
                    _ = &mut stopped => return,
                }
            }
        }
    };
    tracing::info!(forwarder = %served.name, %addr, "104 forwarder listening");
    // The connections are this listener's: they end before it does.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = &mut stopped => break,
        };
        match accepted {
            Ok((socket, peer)) => {
                metrics::counter!("fepha_iec104_connections_total", "forwarder" => served.name.clone()).increment(1);
                let _ = socket.set_nodelay(true);
                connections.spawn(super::connection::run(
                    served.clone(),
                    socket,
                    peer,
                    [node_stop.clone(), own_stop.clone()],
                ));
            }
            Err(e) => {
                metrics::counter!("fepha_iec104_accept_errors_total").increment(1);
                tracing::warn!(forwarder = %served.name, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Every connection watches the same stop signals and closes itself.
    while connections.join_next().await.is_some() {}
    served.tasks.close();
    served.tasks.wait().await;
}
