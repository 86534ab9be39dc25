//! `fepha run`: one node's daemon. Opens the store, starts openraft and serves the Raft and
//! admin gRPC services (mutual TLS) and the metrics exporter until SIGTERM.

mod trust;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
pub use trust::NodeTrust;

use crate::admin::AdminService;
use crate::config::NodeConfig;
use crate::proto::admin::admin_server::AdminServer;
use crate::proto::raft::raft_server::RaftServer;
use crate::raft::{FephaNode, Network, NodeId, Raft, RaftService, StateView};
use crate::shutdown::{self, Shutdown};
use crate::tls::{Connections, Identity, PeerConn};

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
    #[error("{what} server failed: {source}")]
    Serve {
        what: &'static str,
        source: tonic::transport::Error,
    },
}

/// What the admin API needs to know about the running node.
pub struct Node {
    pub id: NodeId,
    pub me: FephaNode,
    pub raft: Raft,
    pub state: StateView,
    pub config: NodeConfig,
    pub identity: Identity,
    pub trust: Arc<NodeTrust>,
    /// Channels to the other nodes' admin APIs, for forwarding and status probes.
    pub peers: crate::admin::client::Pool,
    /// Open connections to this node's listeners, cut when their certificate is revoked.
    pub connections: [Connections; 2],
    /// As leader: when each node's session renewal arrived.
    pub heard: crate::lease::leader::Heard,
    /// This node's own lease.
    pub own: crate::lease::session::Own,
    /// What this node's RTU tasks report about their RTUs.
    pub acquisition: Arc<crate::acquisition::Reports>,
    /// The 104 connections open on this node.
    pub forwarders: crate::forwarder::registry::Registry,
    /// The applied site configuration, parsed once per version (see `site`).
    site: std::sync::Mutex<Option<(u64, Arc<crate::site::Site>)>>,
}

impl Node {
    /// Set once this node has been removed from its cluster, so it never campaigns again,
    /// also after a restart.
    pub fn retired_marker(&self) -> std::path::PathBuf {
        retired_marker(&self.config.data_dir)
    }

    pub fn is_retired(&self) -> bool {
        self.retired_marker().exists()
    }

    /// The applied site configuration, parsed once per version for every task and call that
    /// needs it. None before the first `config apply`.
    pub fn site(&self) -> Option<Arc<crate::site::Site>> {
        let version = self.state.read(|s| s.config.as_ref().map(|c| c.version))?;
        let mut cache = self
            .site
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((v, site)) = cache.as_ref()
            && *v == version
        {
            return Some(site.clone());
        }
        // Read again with the text: the version may have moved on meanwhile.
        let (version, text) = self
            .state
            .read(|s| s.config.as_ref().map(|c| (c.version, c.text.clone())))?;
        let site = Arc::new(crate::site::parse(&text).ok()?);
        *cache = Some((version, site.clone()));
        Some(site)
    }

    /// Waits until `check` gives a value, looking again at every change of openraft's metrics
    /// (each applied entry is one), until `deadline`. None if the deadline passes or raft stops.
    pub async fn wait_for<T>(
        &self,
        deadline: std::time::Instant,
        mut check: impl FnMut(&Node) -> Option<T>,
    ) -> Option<T> {
        let mut changes = self.raft.metrics();
        loop {
            if let Some(v) = check(self) {
                return Some(v);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match tokio::time::timeout(left, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// openraft's current metrics, copied out so that no borrow is held across an await.
    pub fn metrics(&self) -> openraft::RaftMetrics<NodeId, FephaNode> {
        self.raft.metrics().borrow().clone()
    }
}

/// Runs the node until SIGTERM or SIGINT.
pub async fn run(config: NodeConfig) -> Result<(), NodeError> {
    let data_dir = &config.data_dir;
    create_private_dir(data_dir)?;
    let id = node_id(data_dir)?;
    let identity = Identity::load_or_create(&tls_dir(data_dir), &config.name)?;
    let (log_store, sm_store) = fepha_storage::open(&data_dir.join("raft"))?;
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
    let me = FephaNode {
        name: config.name.clone(),
        raft_addr: config.raft_addr.to_string(),
        admin_addr: config.admin_addr.to_string(),
        role: config.role,
        fingerprint: identity.fingerprint.to_string(),
    };
    let node = Arc::new(Node {
        id,
        me,
        raft: raft.clone(),
        state,
        config: config.clone(),
        peers: crate::admin::client::Pool::new(Some(identity.clone()), trust.clone()),
        identity: identity.clone(),
        trust: trust.clone(),
        connections: Default::default(),
        heard: Default::default(),
        own: Default::default(),
        acquisition: Default::default(),
        forwarders: Default::default(),
        site: Default::default(),
    });

    if node.is_retired() {
        tracing::warn!(
            "this node has left its cluster; it will not campaign (empty its data dir to reuse it)"
        );
        raft.runtime_config().elect(false);
    }

    let tls = crate::tls::server_config(&identity, trust.clone())?;
    let [raft_conns, admin_conns] = node.connections.clone();
    let raft_listener = listen("raft", config.raft_addr, &tls, raft_conns).await?;
    let admin_listener = listen("admin", config.admin_addr, &tls, admin_conns).await?;
    let exporter = crate::metrics::exporter(config.metrics_addr)?;

    let (trigger, shutdown) = shutdown::channel();
    tokio::spawn(exporter);
    tokio::spawn(crate::metrics::watch_raft(raft.clone(), shutdown.clone()));
    tokio::spawn(cut_revoked(node.clone(), shutdown.clone()));
    tokio::spawn(crate::lease::leader::run(node.clone(), shutdown.clone()));
    tokio::spawn(crate::lease::session::run(node.clone(), shutdown.clone()));
    tokio::spawn(crate::acquisition::run(node.clone(), shutdown.clone()));
    tokio::spawn(crate::forwarder::run(node.clone(), shutdown.clone()));
    tokio::spawn(crate::raft::step_down_without_quorum(
        node.clone(),
        shutdown.clone(),
    ));
    let raft_server = tokio::spawn(serve_raft(node.clone(), raft_listener, shutdown.clone()));
    let admin_server = tokio::spawn(serve_admin(node.clone(), admin_listener, shutdown.clone()));
    tracing::info!(
        node = %config.name, id, raft = %config.raft_addr, admin = %config.admin_addr,
        metrics = %config.metrics_addr, fingerprint = %identity.fingerprint, "node started"
    );

    // A storage failure makes openraft stop itself; the node then exits rather than lingering.
    let waiter = raft.wait(None);
    let reason = tokio::select! {
        s = shutdown::signal() => s.unwrap_or("signal handler failed"),
        r = waiter.state(openraft::ServerState::Shutdown, "raft stopped") => {
            if let Err(e) = r { tracing::error!("raft stopped: {e}"); }
            "raft stopped"
        }
    };
    tracing::info!("shutting down ({reason})");
    trigger.trigger();
    if let Err(e) = raft.shutdown().await {
        tracing::error!("raft shutdown: {e}");
    }
    for (what, server) in [("raft", raft_server), ("admin", admin_server)] {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("{what} server: {e}"),
            Err(e) => tracing::error!("{what} server task: {e}"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}

type Incoming = ReceiverStream<std::io::Result<PeerConn>>;

async fn listen(
    what: &'static str,
    addr: std::net::SocketAddr,
    tls: &Arc<rustls::ServerConfig>,
    connections: Connections,
) -> Result<Incoming, NodeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Listen { what, addr, source })?;
    Ok(crate::tls::incoming(
        listener,
        tls.clone(),
        connections,
        what,
    ))
}

/// Trust changes only reach new handshakes; connections already open with a certificate
/// that has just been revoked are cut here, within a fifth of a second, and so are this
/// node's own channels to nodes that are no longer members.
async fn cut_revoked(node: Arc<Node>, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        metrics::counter!("fepha_tls_revocation_checks_total").increment(1);
        let members = node
            .metrics()
            .membership_config
            .membership()
            .nodes()
            .map(|(_, n)| n.admin_addr.clone())
            .collect();
        node.peers.retain(&members);
        for connections in &node.connections {
            let cut = connections.close_untrusted(node.trust.as_ref());
            if cut > 0 {
                metrics::counter!("fepha_tls_connections_cut_total").increment(cut as u64);
                tracing::warn!("cut {cut} connection(s) whose certificate is no longer trusted");
            }
        }
    }
}

async fn serve_raft(
    node: Arc<Node>,
    incoming: Incoming,
    shutdown: Shutdown,
) -> Result<(), NodeError> {
    let service = RaftServer::new(RaftService::new(node))
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown.wait())
        .await
        .map_err(|source| NodeError::Serve {
            what: "raft",
            source,
        })
}

async fn serve_admin(
    node: Arc<Node>,
    incoming: Incoming,
    shutdown: Shutdown,
) -> Result<(), NodeError> {
    Server::builder()
        .add_service(AdminServer::new(AdminService::new(node)))
        .serve_with_incoming_shutdown(incoming, shutdown.wait())
        .await
        .map_err(|source| NodeError::Serve {
            what: "admin",
            source,
        })
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
