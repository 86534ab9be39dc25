//! `fepha token create` and `fepha cert list|allow|revoke|issue-operator`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::call::{KnownNode, NODES_FILE, Target, retrying, status_error};
use super::output::outln;
use crate::proto::admin::*;
use crate::tls::Identity;

pub(super) async fn token_create(
    target: &Target,
    ttl: Duration,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = target.connect().await?;
    let reply = retrying(timeout, || {
        let mut c = client.clone();
        async move {
            c.token_create(TokenCreateRequest {
                ttl_s: ttl.as_secs(),
                forwarded: false,
            })
            .await
        }
    })
    .await?
    .into_inner();
    outln!("{}", reply.token);
    eprintln!(
        "one-time join token, valid for {} s: on the new box, `fepha join --token TOKEN`",
        ttl.as_secs()
    );
    Ok(())
}

pub(super) async fn list(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let reply = target
        .connect()
        .await?
        .cert_list(CertListRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if as_json {
        let trusted: Vec<_> = reply
            .trusted
            .iter()
            .map(|e| {
                json!({"fingerprint": e.fingerprint, "name": e.name, "role": e.role,
                       "added_at_ms": e.added_at_ms, "added_by": e.added_by})
            })
            .collect();
        let pending: Vec<_> = reply
            .pending
            .iter()
            .map(|p| {
                json!({"fingerprint": p.fingerprint, "name": p.name, "admin_addr": p.admin_addr,
                       "requested_at_ms": p.requested_at_ms})
            })
            .collect();
        outln!("{:#}", json!({"trusted": trusted, "pending": pending}));
        return Ok(());
    }
    outln!(
        "{:<12} {:<9} {:<64}  ADDED BY",
        "NAME",
        "ROLE",
        "FINGERPRINT"
    );
    for e in &reply.trusted {
        outln!(
            "{:<12} {:<9} {:<64}  {}",
            e.name,
            e.role,
            e.fingerprint,
            e.added_by
        );
    }
    if !reply.pending.is_empty() {
        outln!("\npending join requests (`fepha cert allow FINGERPRINT` lets one in):");
        for p in &reply.pending {
            outln!(
                "{:<12} {:<9} {:<64}  from {}",
                p.name,
                "node",
                p.fingerprint,
                p.admin_addr
            );
        }
    }
    Ok(())
}

pub(super) async fn allow(
    target: &Target,
    fingerprint: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = target.connect().await?;
    retrying(timeout, || {
        let mut c = client.clone();
        let fingerprint = fingerprint.to_owned();
        async move {
            c.cert_allow(CertAllowRequest {
                fingerprint,
                forwarded: false,
            })
            .await
        }
    })
    .await?;
    outln!("{fingerprint} is trusted; the waiting node joins now");
    Ok(())
}

pub(super) async fn revoke(target: &Target, what: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = target.connect().await?;
    let reply = retrying(timeout, || {
        let mut c = client.clone();
        let target = what.to_owned();
        async move {
            c.cert_revoke(CertRevokeRequest {
                target,
                forwarded: false,
            })
            .await
        }
    })
    .await?
    .into_inner();
    let membership = if reply.was_member {
        " and removed from the membership"
    } else {
        ""
    };
    outln!(
        "{} ({}) is no longer trusted{membership}",
        reply.name,
        reply.fingerprint
    );
    Ok(())
}

/// Makes an operator's key and certificate, trusts it, and writes them with the list of nodes
/// the operator's CLI is to trust.
pub(super) async fn issue_operator(
    target: &Target,
    name: &str,
    out: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    if out.join(crate::tls::KEY_FILE).exists() {
        anyhow::bail!(
            "{} already holds a key; choose another --out",
            out.display()
        );
    }
    let identity = Identity::generate(name)?;
    let client = target.connect().await?;
    retrying(timeout, || {
        let mut c = client.clone();
        let request = CertTrustRequest {
            fingerprint: identity.fingerprint.to_string(),
            name: name.to_owned(),
            role: "operator".into(),
            forwarded: false,
        };
        async move { c.cert_trust(request).await }
    })
    .await?;
    let status = client
        .clone()
        .status(StatusRequest { local_only: true })
        .await
        .map_err(status_error)?
        .into_inner();
    let nodes: Vec<KnownNode> = status
        .members
        .iter()
        .filter_map(|m| {
            Some(KnownNode {
                name: m.name.clone(),
                fingerprint: m.fingerprint.parse().ok()?,
                admin_addr: m.admin_addr.clone(),
            })
        })
        .collect();
    identity.save(out)?;
    let path = out.join(NODES_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&nodes)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let first = nodes
        .first()
        .map_or("ADMIN_ADDR", |n| n.admin_addr.as_str());
    outln!(
        "operator {name} is trusted ({}); its key is in {}.\nUse it with: fepha --identity {} --admin {first} status",
        identity.fingerprint,
        out.display(),
        out.display()
    );
    Ok(())
}

/// Adds (or replaces, by name) a node in an operator identity's list of nodes to trust: after
/// a restore, the cluster runs on boxes with new certificates.
pub(super) fn pin_node(
    dir: &Path,
    name: &str,
    fingerprint: &str,
    admin_addr: &str,
) -> anyhow::Result<()> {
    let fingerprint: crate::tls::Fingerprint = fingerprint.parse()?;
    let path = dir.join(NODES_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut nodes: Vec<KnownNode> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a list of nodes", path.display()))?;
    nodes.retain(|n| n.name != name && n.fingerprint != fingerprint);
    nodes.insert(
        0,
        KnownNode {
            name: name.to_owned(),
            fingerprint: fingerprint.clone(),
            admin_addr: admin_addr.to_owned(),
        },
    );
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&nodes)?)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    outln!(
        "this identity now trusts node {name} ({fingerprint}) at {admin_addr}, first of {}",
        nodes.len()
    );
    Ok(())
}
