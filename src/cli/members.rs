//! `fepha init`, `join`, `leave`.

use std::time::Duration;

use anyhow::Context;

use super::call::{local, retrying};
use super::output::outln;
use crate::config::NodeConfig;
use crate::proto::admin::*;

pub async fn init(config: &NodeConfig, timeout: Duration) -> anyhow::Result<()> {
    let client = local(config).await?;
    retrying(timeout, || {
        let mut c = client.clone();
        async move { c.init(InitRequest {}).await }
    })
    .await?;
    outln!("node {} started a new cluster", config.name);
    Ok(())
}

/// The least time `join` waits, whatever `--timeout` says.
const JOIN_CATCH_UP: Duration = Duration::from_secs(120);

pub async fn join(config: &NodeConfig, peer: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = local(config).await?;
    // The leader answers once this node has caught up, which takes a while on a big log.
    let reply = retrying(timeout.max(JOIN_CATCH_UP), || {
        let mut c = client.clone();
        let peer = peer.to_owned();
        async move { c.join(JoinRequest { peer }).await }
    })
    .await
    .with_context(|| format!("node {} could not join through {peer}", config.name))?
    .into_inner();
    outln!(
        "node {} (id {}) joined the cluster as a {}; leader is {}",
        config.name,
        reply.node_id,
        config.role,
        reply.leader
    );
    Ok(())
}

pub async fn leave(
    config: &NodeConfig,
    name: Option<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = local(config).await?;
    let name = name.unwrap_or_else(|| config.name.clone());
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
