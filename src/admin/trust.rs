//! `token create`, the enrolment of new nodes, and `cert list|allow|revoke|issue-operator`.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::ChangeMembers;
use tonic::Status;

use super::Context;
use super::access::Caller;
use super::route::{on_leader, write_error};
use super::token::{JoinToken, TokenNode};
use crate::cluster::Cluster;
use crate::proto::admin::*;
use crate::state::trust::{self, PendingJoin, TrustCommand, TrustEntry};
use crate::state::{Request, Response, sha256_hex};
use crate::tls::{Fingerprint, PeerRole, TrustStore};

/// Longest life of a join token: long enough to carry it to the new box, short enough that
/// a forgotten one is no standing door.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

fn parse_fingerprint(text: &str) -> Result<Fingerprint, Status> {
    text.parse()
        .map_err(|e: crate::tls::BadFingerprint| Status::invalid_argument(e.to_string()))
}

/// Proposes a trust change on the leader and turns a refusal into a clear status.
async fn propose(cx: &Context, command: TrustCommand) -> Result<u64, Status> {
    let written = cx.cluster.propose_here(Request::Trust(command)).await?;
    match written.response {
        Response::Trust(Ok(())) => Ok(written.index),
        Response::Trust(Err(refusal)) => Err(Status::permission_denied(refusal.to_string())),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

/// Every node of the membership, with the fingerprint it joined with.
fn cluster_nodes(cx: &Context) -> Vec<TrustedNode> {
    cx.cluster
        .members()
        .nodes()
        .map(|(_, n)| TrustedNode {
            name: n.name.clone(),
            fingerprint: n.fingerprint.clone(),
            admin_addr: n.admin_addr.clone(),
        })
        .collect()
}

pub(super) async fn token_create(
    cx: &Context,
    caller: &Caller,
    req: TokenCreateRequest,
) -> Result<TokenCreateReply, Status> {
    caller.may_send(req.forwarded)?;
    let ttl = Duration::from_secs(req.ttl_s);
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(Status::invalid_argument(format!(
            "a token lives between 1 s and {} h",
            MAX_TOKEN_TTL.as_secs() / 3600
        )));
    }
    on_leader(
        cx,
        req,
        |mut leader, req| async move { leader.token_create(req).await },
        |_| async move {
            let now = Cluster::now_ms();
            let id = hex::encode(rand::random::<[u8; 6]>());
            let secret = hex::encode(rand::random::<[u8; 24]>());
            let expires_at_ms = now + ttl.as_millis() as u64;
            propose(
                cx,
                TrustCommand::CreateToken(trust::JoinToken {
                    id: id.clone(),
                    secret_sha256: sha256_hex(&secret),
                    created_at_ms: now,
                    expires_at_ms,
                    used_by: None,
                }),
            )
            .await?;
            let nodes = cluster_nodes(cx)
                .into_iter()
                .map(|n| TokenNode {
                    name: n.name,
                    admin_addr: n.admin_addr,
                    fingerprint: n.fingerprint,
                })
                .collect();
            let token = JoinToken {
                id,
                secret,
                expires_at_ms,
                nodes,
            };
            Ok(TokenCreateReply {
                token: token.encode(),
                expires_at_ms,
            })
        },
    )
    .await
}

/// Runs on any member; anyone may call it, as the new node has no trusted certificate yet.
pub(super) async fn enrol(
    cx: &Context,
    caller: &Caller,
    req: EnrolRequest,
) -> Result<EnrolReply, Status> {
    if req.forwarded {
        caller.node()?;
    }
    let fingerprint = parse_fingerprint(&req.fingerprint)?;
    if req.name.is_empty() {
        return Err(Status::invalid_argument(
            "a joining node must give its name",
        ));
    }
    on_leader(
        cx,
        req,
        |mut leader, req| async move { leader.enrol(req).await },
        |req| async move {
            let now = Cluster::now_ms();
            let (command, status) = if req.token_id.is_empty() {
                let pending = PendingJoin {
                    fingerprint: fingerprint.clone(),
                    name: req.name.clone(),
                    admin_addr: req.admin_addr.clone(),
                    requested_at_ms: now,
                };
                (TrustCommand::RequestJoin(pending), "pending")
            } else {
                let entry = TrustEntry {
                    fingerprint: fingerprint.clone(),
                    name: req.name.clone(),
                    role: PeerRole::Node,
                    added_at_ms: now,
                    added_by: format!("token {}", req.token_id),
                };
                let command = TrustCommand::UseToken {
                    id: req.token_id.clone(),
                    secret_sha256: sha256_hex(&req.token_secret),
                    entry,
                    now_ms: now,
                };
                (command, "trusted")
            };
            propose(cx, command).await?;
            tracing::info!(name = %req.name, %fingerprint, status, "a node asked to join");
            // A request for an already trusted certificate stays trusted.
            let status = match cx.trust.role_of(&fingerprint) {
                Some(_) => "trusted",
                None => status,
            };
            Ok(EnrolReply {
                status: status.into(),
                nodes: cluster_nodes(cx),
            })
        },
    )
    .await
}

pub(super) fn enrol_status(cx: &Context, req: EnrolStatusRequest) -> Result<EnrolReply, Status> {
    let fingerprint = parse_fingerprint(&req.fingerprint)?;
    let status = cx.cluster.state().read(|s| {
        if s.trust.entries.contains_key(&fingerprint) {
            "trusted"
        } else if s.trust.pending.contains_key(&fingerprint) {
            "pending"
        } else {
            "unknown"
        }
    });
    Ok(EnrolReply {
        status: status.into(),
        nodes: cluster_nodes(cx),
    })
}

pub(super) fn list(cx: &Context) -> CertListReply {
    cx.cluster.state().read(|s| CertListReply {
        trusted: s
            .trust
            .entries
            .values()
            .map(|e| CertEntry {
                fingerprint: e.fingerprint.to_string(),
                name: e.name.clone(),
                role: e.role.as_str().into(),
                added_at_ms: e.added_at_ms,
                added_by: e.added_by.clone(),
            })
            .collect(),
        pending: s
            .trust
            .pending
            .values()
            .map(|p| PendingEntry {
                fingerprint: p.fingerprint.to_string(),
                name: p.name.clone(),
                admin_addr: p.admin_addr.clone(),
                requested_at_ms: p.requested_at_ms,
            })
            .collect(),
    })
}

pub(super) async fn allow(
    cx: &Context,
    caller: &Caller,
    req: CertAllowRequest,
) -> Result<CertAllowReply, Status> {
    caller.may_send(req.forwarded)?;
    let fingerprint = parse_fingerprint(&req.fingerprint)?;
    on_leader(
        cx,
        req,
        |mut leader, req| async move { leader.cert_allow(req).await },
        |_| async move {
            let by = caller.describe(cx);
            propose(
                cx,
                TrustCommand::Allow {
                    fingerprint,
                    by,
                    now_ms: Cluster::now_ms(),
                },
            )
            .await?;
            Ok(CertAllowReply {})
        },
    )
    .await
}

pub(super) async fn trust_operator(
    cx: &Context,
    caller: &Caller,
    req: CertTrustRequest,
) -> Result<CertTrustReply, Status> {
    caller.may_send(req.forwarded)?;
    let fingerprint = parse_fingerprint(&req.fingerprint)?;
    if req.role != "operator" {
        return Err(Status::invalid_argument(
            "only operator certificates are trusted this way; nodes join with a token or an allow",
        ));
    }
    on_leader(
        cx,
        req,
        |mut leader, req| async move { leader.cert_trust(req).await },
        |req| async move {
            let entry = TrustEntry {
                fingerprint,
                name: req.name.clone(),
                role: PeerRole::Operator,
                added_at_ms: Cluster::now_ms(),
                added_by: format!("issued by {}", caller.describe(cx)),
            };
            propose(cx, TrustCommand::Add(entry)).await?;
            Ok(CertTrustReply {})
        },
    )
    .await
}

pub(super) async fn revoke(
    cx: &Context,
    caller: &Caller,
    req: CertRevokeRequest,
) -> Result<CertRevokeReply, Status> {
    caller.may_send(req.forwarded)?;
    on_leader(cx, req, |mut leader, req| async move { leader.cert_revoke(req).await }, |req| async move {
            let entry = cx.cluster
                .state()
                .read(|s| match req.target.parse::<Fingerprint>() {
                    Ok(f) => s.trust.entries.get(&f).cloned(),
                    Err(_) => s.trust.by_name(&req.target).cloned(),
                })
                .ok_or_else(|| {
                    Status::not_found(format!("no trusted certificate is {}", req.target))
                })?;
            if entry.fingerprint == cx.identity.fingerprint {
                return Err(Status::failed_precondition(format!(
                    "{} is the leader; stop it (another node takes over) and revoke it then",
                    entry.name
                )));
            }
            let member = cx
                .cluster
                .members()
                .by_fingerprint(entry.fingerprint.as_str())
                .map(|(id, _)| id);
            propose(
                cx,
                TrustCommand::Revoke {
                    fingerprint: entry.fingerprint.clone(),
                },
            )
            .await?;
            tracing::warn!(name = %entry.name, fingerprint = %entry.fingerprint, "certificate revoked");
            if let Some(id) = member {
                let voter = cx.cluster.members().is_voter(id);
                let change = if voter {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                cx.cluster.raft()
                    .change_membership(change, false)
                    .await
                    .map_err(write_error)?;
            }
            Ok(CertRevokeReply {
                fingerprint: entry.fingerprint.to_string(),
                name: entry.name,
                was_member: member.is_some(),
            })
        })
    .await
}
