//! Reaching a node's admin API, and retrying writes through an election.
//!
//! On the box, the CLI uses the node's own key (readable by root only) and trusts only that
//! node's certificate. Off the box, `--identity DIR` names an operator identity made by
//! `fepha cert issue-operator`, whose `nodes.json` lists the fingerprints to trust.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::admin::NO_LEADER;
use crate::admin::client::{Credentials, dial};
use crate::config::NodeConfig;
use crate::proto::admin::admin_client::AdminClient;
use crate::tls::{Fingerprint, Identity, PinnedNodes};

/// The nodes an operator identity trusts, written beside its key.
pub(super) const NODES_FILE: &str = "nodes.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct KnownNode {
    pub name: String,
    pub fingerprint: Fingerprint,
    pub admin_addr: String,
}

/// The node a command talks to, and how.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub addr: String,
    pub credentials: Credentials,
    /// For messages: "node fep1" or the address.
    pub label: String,
}

impl Target {
    /// The local node, with the node's own identity.
    pub(super) fn node(config: &NodeConfig) -> anyhow::Result<Target> {
        let dir = crate::node::tls_dir(&config.data_dir);
        if !dir.join(crate::tls::CERT_FILE).exists() {
            bail!(
                "cannot reach node {}: it has never started (no key in {}); start it with `fepha run`",
                config.name,
                dir.display()
            );
        }
        let identity = Identity::load(&dir).with_context(|| {
            format!(
                "cannot use node {}'s identity (on the box, run the CLI as the user that runs \
                 `fepha run`; elsewhere use --identity and --admin)",
                config.name
            )
        })?;
        let trust = PinnedNodes(BTreeSet::from([identity.fingerprint.clone()]));
        Ok(Target {
            addr: config.admin_addr.to_string(),
            credentials: Credentials {
                identity: Some(identity),
                trust: Arc::new(trust),
            },
            label: format!("node {}", config.name),
        })
    }

    /// An operator identity made by `fepha cert issue-operator`.
    pub(super) fn operator(dir: &Path, admin: Option<&str>) -> anyhow::Result<Target> {
        let identity = Identity::load(dir)?;
        let path = dir.join(NODES_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let nodes: Vec<KnownNode> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a list of nodes", path.display()))?;
        let addr = match (admin, nodes.first()) {
            (Some(a), _) => a.to_owned(),
            (None, Some(n)) => n.admin_addr.clone(),
            (None, None) => bail!("{} names no node; give --admin", path.display()),
        };
        let trust = PinnedNodes(nodes.into_iter().map(|n| n.fingerprint).collect());
        Ok(Target {
            label: addr.clone(),
            addr,
            credentials: Credentials {
                identity: Some(identity),
                trust: Arc::new(trust),
            },
        })
    }

    pub(super) async fn connect(&self) -> anyhow::Result<AdminClient<Channel>> {
        dial(&self.addr, Duration::from_secs(2), &self.credentials)
            .await
            .map_err(|e| anyhow!("{e} (is `fepha run` running for {}?)", self.label))
    }

    /// The fingerprint this CLI presents.
    pub(super) fn fingerprint(&self) -> Option<&Fingerprint> {
        self.credentials.identity.as_ref().map(|i| &i.fingerprint)
    }
}

/// Calls `f` until it succeeds, fails for a reason other than a missing leader, or
/// `deadline` has passed.
pub(super) async fn retrying<T, F, Fut>(deadline: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let start = Instant::now();
    loop {
        // A write that a leader has accepted but cannot commit (it lost its quorum) gets no
        // answer at all, so each attempt is bounded by what is left of the deadline too.
        let left = deadline.saturating_sub(start.elapsed());
        let Ok(answer) = tokio::time::timeout(left, f()).await else {
            bail!(
                "{NO_LEADER} that a quorum follows: nothing was committed within {:.1}s \
                 (a write already accepted may still commit later)",
                deadline.as_secs_f64()
            );
        };
        match answer {
            Ok(v) => return Ok(v),
            Err(s) if s.code() == Code::Unavailable => {
                if start.elapsed() >= deadline {
                    bail!(
                        "{NO_LEADER} (waited {:.1}s; last answer: {})",
                        deadline.as_secs_f64(),
                        s.message()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => return Err(status_error(s)),
        }
    }
}

/// A failed call, with the cause a transport failure hides below "operation was canceled"
/// (a refused certificate, a reset connection).
pub(super) fn status_error(s: Status) -> anyhow::Error {
    use std::error::Error;
    let mut text = crate::admin::client::with_causes(s.message().to_owned(), s.source());
    if matches!(s.code(), Code::Unknown | Code::Cancelled) && text.contains("AccessDenied") {
        text.push_str(" (this certificate is not trusted by the cluster)");
    }
    anyhow!("{text}")
}
