//! `fepha run`: one node's daemon, and the composition root. It opens the store, starts
//! openraft, builds the cluster handle and each part of the node with only what that part
//! uses, serves the Raft, peer and admin gRPC services (mutual TLS) and the metrics exporter,
//! and at SIGTERM stops the parts in order: field I/O and the forwarder first (an RTU task
//! finishes the command it has started), then the lease loops, the watchers, the servers, and
//! openraft last.

mod gauges;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::admin;
use crate::cluster::{Cluster, NodeTrust, PeerPool, Reports};
use crate::config::{NodeConfig, Role};
use crate::ids::{FephaNode, NodeId};
use crate::lease::clock::OwnLease;
use crate::peer::PeerService;
use crate::proto::peer::peer_server::PeerServer;
use crate::proto::raft::raft_server::RaftServer;
use crate::raft::{Network, Raft, RaftService};
use crate::shutdown::{self, Part, Shutdown};
use crate::tls::{ClientAuth, Connections, Identity, Incoming, Limits, TrustStore};

/// How long each part may take to stop before its tasks are aborted.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("node id file {path} is corrupt: {content:?}")]
    NodeIdFile { path: String, content: String },
    #[error("cannot open the store: {0}")]
    Store(#[from] fepha_storage::OpenError),
    #[error("bad raft settings: {0}")]
    RaftConfig(#[from] Box<openraft::ConfigError>),
    #[error("raft failed: {0}")]
    Raft(String),
    #[error("cannot listen on {what} address {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("node identity: {0}")]
    Identity(#[from] crate::tls::IdentityError),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Runs the node until SIGTERM or SIGINT.
pub async fn run(config: NodeConfig) -> Result<(), NodeError> {
    let started = std::time::Instant::now();
    raise_fd_limit();
    let data_dir = &config.data_dir;
    let (id, identity) = prepare(&config)?;
    let (log_store, sm_store) = fepha_storage::open(&raft_dir(data_dir))?;
    let log_size = log_store.size();
    let state = sm_store.view();
    let trust = Arc::new(NodeTrust::new(
        identity.fingerprint.clone(),
        state.clone(),
        tls_dir(data_dir).join("pinned"),
    ));
    let raft = Raft::new(
        id,
        crate::raft::openraft_config(&config)?,
        Network::new(identity.clone(), trust.clone()),
        log_store,
        sm_store,
    )
    .await
    .map_err(|e| NodeError::Raft(e.to_string()))?;
    let leader_heard = Arc::new(crate::raft::LeaderHeard::default());
    let cluster = Cluster::new(
        id,
        raft.clone(),
        state,
        PeerPool::new(identity.clone(), trust.clone()),
        retired_marker(data_dir),
        leader_heard.clone(),
    );
    if cluster.is_retired() {
        tracing::warn!(
            "this node has left its cluster; it will not campaign (empty its data dir to reuse it)"
        );
        raft.runtime_config().elect(false);
    }

    let own = Arc::new(OwnLease::default());
    let reports = Arc::new(Reports::default());
    let registry = Arc::new(crate::forwarder::registry::Registry::default());
    let admin_cx = Arc::new(admin::Context {
        cluster: cluster.clone(),
        me: member_record(&config, &identity),
        identity: identity.clone(),
        trust: trust.clone(),
        peers: admin::client::Pool::new(Some(identity.clone()), trust.clone()),
        connections: registry.clone(),
        started,
        version: admin::reported_version(),
    });

    // Before the listeners, which count their first connections.
    let exporter = crate::metrics::exporter(config.metrics_addr, &config.name)?;
    // Only the admin port lets a client in without a certificate, to ask to join.
    let raft_tls = crate::tls::server_config(&identity, trust.clone(), ClientAuth::Required)?;
    let admin_tls = crate::tls::server_config(&identity, trust.clone(), ClientAuth::Optional)?;
    let connections: [Connections; 2] = Default::default();
    let [raft_conns, admin_conns] = connections.clone();
    let raft_listener = listen("raft", config.raft_addr, raft_tls, raft_conns).await?;
    let admin_listener = listen("admin", config.admin_addr, admin_tls, admin_conns).await?;

    // The parts, in the order they stop. Each may use the ones after it until it has stopped.
    let mut field = Part::new("field I/O and forwarder");
    if config.role == Role::Voter {
        let acquisition = Arc::new(crate::acquisition::Field {
            cluster: cluster.clone(),
            own: own.clone(),
            reports: reports.clone(),
            source_ip: config.field_source_ip,
        });
        field.spawn(crate::acquisition::run(acquisition, field.signal()));
        let host = Arc::new(crate::forwarder::Host {
            cluster: cluster.clone(),
            own: own.clone(),
            registry: registry.clone(),
            name: config.name.clone(),
            listen_ip: config.forwarder_ip,
            quorum_fresh: Duration::from_millis(config.raft.election_timeout_min_ms),
        });
        field.spawn(crate::forwarder::run(host, field.signal()));
    }
    let mut leases = Part::new("lease loops");
    let session = crate::lease::session::Session {
        cluster: cluster.clone(),
        reports,
        own,
    };
    leases.spawn(crate::lease::session::run(session, leases.signal()));
    leases.spawn(crate::lease::leader::run(cluster.clone(), leases.signal()));
    let mut watchers = Part::new("watchers");
    watchers.spawn(crate::raft::watch_raft(raft.clone(), watchers.signal()));
    watchers.spawn(crate::raft::bound_the_log(
        raft.clone(),
        log_size,
        watchers.signal(),
    ));
    watchers.spawn(crate::raft::step_down_without_quorum(
        cluster.clone(),
        config.raft.clone(),
        watchers.signal(),
    ));
    watchers.spawn(crate::raft::campaign_when_the_leader_dies(
        cluster.clone(),
        config.raft.clone(),
        watchers.signal(),
    ));
    watchers.spawn(cluster.clone().keep_peers_connected(watchers.signal()));
    watchers.spawn(gauges::run(cluster.clone(), registry, watchers.signal()));
    watchers.spawn(cut_revoked(
        cluster.clone(),
        admin_cx.clone(),
        connections,
        watchers.signal(),
    ));
    // The exporter has no stop of its own: it is dropped when its part stops, rather than
    // holding the part for its whole patience.
    let stop_exporting = watchers.signal();
    watchers.spawn(async move {
        tokio::select! {
            () = exporter => {}
            () = stop_exporting.wait() => {}
        }
    });
    let mut servers = Part::new("gRPC servers");
    servers.spawn(serve_raft(
        RaftService::new(raft.clone(), trust.clone(), leader_heard),
        cluster.clone(),
        trust.clone(),
        raft_listener,
        servers.signal(),
    ));
    servers.spawn(serve_admin(admin_cx, admin_listener, servers.signal()));
    tracing::info!(
        node = %config.name, id, raft = %config.raft_addr, admin = %config.admin_addr,
        metrics = %config.metrics_addr, fingerprint = %identity.fingerprint, "node started"
    );

    // A storage failure makes openraft stop itself; the node then exits rather than lingering,
    // and with a failure status, so that a supervisor restarts it (systemd's on-failure).
    let waiter = raft.wait(None);
    let (reason, failed) = tokio::select! {
        s = shutdown::signal() => (s.unwrap_or("signal handler failed"), false),
        r = waiter.state(openraft::ServerState::Shutdown, "raft stopped") => {
            if let Err(e) = r { tracing::error!("raft stopped: {e}"); }
            ("raft stopped", true)
        }
    };
    tracing::info!("shutting down ({reason})");
    // The servers stop taking calls last: a stopping RTU task may still need the leader's
    // peer service, and other nodes this node's Raft.
    for part in [field, leases, watchers, servers] {
        part.stop(STOP_PATIENCE).await;
    }
    if let Err(e) = raft.shutdown().await {
        tracing::error!("raft shutdown: {e}");
    }
    tracing::info!("stopped");
    if failed {
        return Err(NodeError::Raft(
            "raft stopped by itself (a storage error: see the log above)".into(),
        ));
    }
    Ok(())
}

async fn listen(
    what: &'static str,
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    connections: Connections,
) -> Result<Incoming, NodeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Listen { what, addr, source })?;
    Ok(crate::tls::incoming(
        listener,
        tls,
        connections,
        what,
        Limits::default(),
    ))
}

/// Trust changes only reach new handshakes; connections already open with a certificate
/// that has just been revoked are cut here, within a fifth of a second, and so are this
/// node's own channels to nodes that are no longer members.
async fn cut_revoked(
    cluster: Cluster,
    admin: Arc<admin::Context>,
    connections: [Connections; 2],
    shutdown: Shutdown,
) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        metrics::counter!("fepha_tls_revocation_checks_total").increment(1);
        let members = cluster.members();
        admin.peers.retain(&members.admin_addrs());
        cluster.peers().retain(&members.raft_addrs());
        for connections in &connections {
            let cut = connections.close_untrusted(admin.trust.as_ref());
            if cut > 0 {
                metrics::counter!("fepha_tls_connections_cut_total").increment(cut as u64);
                tracing::warn!("cut {cut} connection(s) whose certificate is no longer trusted");
            }
        }
    }
}

/// Raft and the peer service share the raft address: both are node-to-node.
async fn serve_raft(
    raft: RaftService,
    cluster: Cluster,
    trust: Arc<NodeTrust>,
    incoming: Incoming,
    shutdown: Shutdown,
) {
    let trust: Arc<dyn TrustStore> = trust;
    let limit = crate::raft::MAX_MESSAGE_BYTES;
    let service = RaftServer::new(raft)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let peer = PeerServer::new(PeerService::new(cluster, trust, shutdown.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    // The handshake has refused every client without a certificate.
    let served = Server::builder()
        .add_service(service)
        .add_service(peer)
        .serve_with_incoming_shutdown(incoming.certified, shutdown.wait())
        .await;
    if let Err(e) = served {
        tracing::error!("raft server: {e}");
    }
}

/// How long a call without a certificate may take, and how many it may have open on one
/// connection: an enrolment is one short call at a time.
const ENROLMENT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
const ENROLMENT_STREAMS: u32 = 4;

/// Two servers of one service: connections with a certificate, and those without, which
/// may only ask to join and get smaller limits.
async fn serve_admin(cx: Arc<admin::Context>, incoming: Incoming, shutdown: Shutdown) {
    let certified = Server::builder()
        .add_service(admin::service(cx.clone()))
        .serve_with_incoming_shutdown(incoming.certified, shutdown.clone().wait());
    let anonymous = Server::builder()
        .timeout(ENROLMENT_CALL_TIMEOUT)
        .max_concurrent_streams(ENROLMENT_STREAMS)
        .concurrency_limit_per_connection(ENROLMENT_STREAMS as usize)
        .http2_max_header_list_size(16 << 10)
        .add_service(admin::enrolment_service(cx))
        .serve_with_incoming_shutdown(incoming.anonymous, shutdown.wait());
    let (certified, anonymous) = tokio::join!(certified, anonymous);
    for (which, served) in [("admin", certified), ("admin (enrolment)", anonymous)] {
        if let Err(e) = served {
            tracing::error!("{which} server: {e}");
        }
    }
}

/// Every connection is a file descriptor, and a flood on one port must not leave another
/// without: the soft limit (often 1024) goes up to the hard one (systemd's unit sets 65536).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!("open files limit raised from {soft} to {hard}"),
            Err(e) => tracing::warn!("open files limit stays at {soft}: {e}"),
        },
        Ok((soft, _)) => tracing::info!("open files limit: {soft}"),
        Err(e) => tracing::warn!("cannot read the open files limit: {e}"),
    }
}

/// The data dir, the node's id and its key and certificate, made at its first start (or by a
/// restore before it).
pub fn prepare(config: &NodeConfig) -> Result<(NodeId, Identity), NodeError> {
    create_private_dir(&config.data_dir)?;
    let id = node_id(&config.data_dir)?;
    let identity = Identity::load_or_create(&tls_dir(&config.data_dir), &config.name)?;
    Ok((id, identity))
}

/// This node as the membership records it.
pub fn member_record(config: &NodeConfig, identity: &Identity) -> FephaNode {
    FephaNode {
        name: config.name.clone(),
        raft_addr: config.raft_addr.to_string(),
        admin_addr: config.admin_addr.to_string(),
        role: config.role,
        fingerprint: identity.fingerprint.to_string(),
    }
}

/// The sled store of the Raft log and state machine.
pub fn raft_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("raft")
}

/// The node's key, certificate and join pins.
pub fn tls_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("tls")
}

fn retired_marker(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("retired")
}

fn create_private_dir(path: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| NodeError::DataDir {
            path: path.display().to_string(),
            source,
        })
}

/// The node's Raft id: made once, at random, when the data dir is new. A name can be reused
/// by a rebuilt box; an id never is, so a wiped node can never be mistaken for its old self.
/// Ids are odd, so never 0: the quorum watch votes for id 0 to elect nobody.
fn node_id(data_dir: &Path) -> Result<NodeId, NodeError> {
    let path = data_dir.join("node_id");
    let io_err = |source| NodeError::DataDir {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| NodeError::NodeIdFile {
            path: path.display().to_string(),
            content: text,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id: NodeId = rand::random::<u64>() >> 1 | 1;
            let tmp = data_dir.join("node_id.tmp");
            let mut f = std::fs::File::create(&tmp).map_err(io_err)?;
            writeln!(f, "{id}").map_err(io_err)?;
            f.sync_all().map_err(io_err)?;
            std::fs::rename(&tmp, &path).map_err(io_err)?;
            Ok(id)
        }
        Err(e) => Err(io_err(e)),
    }
}
