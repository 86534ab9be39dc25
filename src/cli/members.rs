//! `fepha init`, `join`, `leave`.

use std::time::Duration;

use anyhow::{Context, bail};

use super::call::{Target, retrying, status_error};
use super::output::outln;
use crate::proto::admin::*;

/// The least time `join` waits, whatever `--timeout` says: the leader answers once this node
/// has caught up, which takes a while on a big log.
const JOIN_CATCH_UP: Duration = Duration::from_secs(120);
/// The least time a join without a token waits for an operator's `cert allow`.
const JOIN_PENDING: Duration = Duration::from_secs(15 * 60);

pub(super) async fn init(target: &Target, timeout: Duration) -> anyhow::Result<()> {
    let client = target.connect().await?;
    retrying(timeout, || {
        let mut c = client.clone();
        async move { c.init(InitRequest {}).await }
    })
    .await?;
    outln!("{} started a new cluster", target.label);
    Ok(())
}

/// How a node joins: with a token, or with a member's address and fingerprint (and then an
/// operator's `cert allow`).
pub(super) enum JoinWith {
    Token(String),
    Peer { addr: String, fingerprint: String },
}

pub(super) async fn join(target: &Target, with: JoinWith, timeout: Duration) -> anyhow::Result<()> {
    let client = target.connect().await?;
    let (request, wait) = match with {
        JoinWith::Token(token) => (
            JoinRequest {
                token,
                ..Default::default()
            },
            timeout.max(JOIN_CATCH_UP),
        ),
        JoinWith::Peer { addr, fingerprint } => {
            let own = target
                .fingerprint()
                .map_or_else(|| "?".into(), |f| f.to_string());
            outln!(
                "asked to join through {addr}; waiting for an operator to run, on any member:\n  \
                 fepha cert allow {own}"
            );
            let request = JoinRequest {
                peer: addr,
                peer_fingerprint: fingerprint,
                token: String::new(),
            };
            (request, timeout.max(JOIN_PENDING))
        }
    };
    let reply = retrying(wait, || {
        let mut c = client.clone();
        let request = request.clone();
        async move { c.join(request).await }
    })
    .await
    .with_context(|| format!("{} could not join", target.label))?
    .into_inner();
    outln!(
        "{} (id {}) joined the cluster; leader is {}",
        target.label,
        reply.node_id,
        reply.leader
    );
    Ok(())
}

pub(super) async fn leave(
    target: &Target,
    name: Option<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = target.connect().await?;
    let name = match name {
        Some(n) => n,
        None => {
            let status = client
                .clone()
                .status(StatusRequest { local_only: true })
                .await
                .map_err(status_error)?;
            status.into_inner().node
        }
    };
    if name.is_empty() {
        bail!("name the node to remove with --node");
    }
    retrying(timeout, || {
        let mut c = client.clone();
        let name = name.clone();
        async move {
            c.remove_member(RemoveMemberRequest {
                name,
                forwarded: false,
            })
            .await
        }
    })
    .await?;
    outln!("node {name} has left the cluster");
    Ok(())
}
