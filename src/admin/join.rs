//! `fepha join`, on the joining node: get trusted (with a token, or by waiting for an
//! operator's `cert allow`), then ask to be added to the membership.
//!
//! The node pins the cluster first, from the token or the `--fingerprint` given with
//! `--peer`: it talks to no server with another certificate, and it accepts the leader's
//! Raft connections before the replicated trust list has reached it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Status;

use super::Context;
use super::client::{Credentials, dial};
use super::token::JoinToken;
use crate::proto::admin::*;
use crate::tls::{Fingerprint, TrustStore};

/// How long a join waits for an operator to allow it.
const PENDING_WAIT: Duration = Duration::from_secs(15 * 60);
/// How long a member may take to apply the trust entry that lets this node's certificate in.
const TRUST_SPREAD: Duration = Duration::from_secs(15);

pub(super) async fn join(cx: &Context, req: JoinRequest) -> Result<JoinReply, Status> {
    if super::route::is_initialised(cx).await? {
        return Err(Status::already_exists(format!(
            "node {} is already part of a cluster; to move it, `fepha leave` and empty its data dir",
            cx.me.name
        )));
    }
    let (peers, token) = if req.token.is_empty() {
        if req.peer.is_empty() || req.peer_fingerprint.is_empty() {
            return Err(Status::invalid_argument(
                "join needs --token, or --peer with the peer's --fingerprint",
            ));
        }
        let fingerprint = parse(&req.peer_fingerprint)?;
        (vec![(req.peer.clone(), fingerprint)], None)
    } else {
        let token =
            JoinToken::decode(&req.token).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let peers = token
            .nodes
            .iter()
            .map(|n| Ok((n.admin_addr.clone(), parse(&n.fingerprint)?)))
            .collect::<Result<Vec<_>, Status>>()?;
        (peers, Some(token))
    };
    pin(cx, peers.iter().map(|(_, f)| f.clone()))?;

    let anonymous = Credentials {
        identity: None,
        trust: cx.trust.clone() as Arc<dyn TrustStore>,
    };
    let request = EnrolRequest {
        token_id: token.as_ref().map(|t| t.id.clone()).unwrap_or_default(),
        token_secret: token.as_ref().map(|t| t.secret.clone()).unwrap_or_default(),
        fingerprint: cx.identity.fingerprint.to_string(),
        name: cx.me.name.clone(),
        admin_addr: cx.me.admin_addr.clone(),
        forwarded: false,
    };
    let (peer, mut reply) = first_answer(&peers, &anonymous, request).await?;
    let deadline = Instant::now() + PENDING_WAIT;
    while reply.status == "pending" {
        if Instant::now() > deadline {
            return Err(Status::deadline_exceeded(
                "no operator allowed this node's certificate in time",
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = async {
            let mut client = dial(&peer, Duration::from_secs(2), &anonymous).await.ok()?;
            let request = EnrolStatusRequest {
                fingerprint: cx.identity.fingerprint.to_string(),
            };
            client.enrol_status(request).await.ok()
        };
        if let Some(r) = status.await {
            reply = r.into_inner();
        }
    }
    // Whichever node leads will replicate to this one: trust all of them.
    pin(
        cx,
        reply
            .nodes
            .iter()
            .filter_map(|n| n.fingerprint.parse().ok()),
    )?;
    tracing::info!(peer, "trusted by the cluster; asking to be added");
    add_self(cx, &peer).await?;
    let members = cx.cluster.members();
    let leader = cx
        .cluster
        .leader()
        .and_then(|id| members.get(id).map(|n| n.name.clone()))
        .unwrap_or_default();
    Ok(JoinReply {
        leader,
        node_id: cx.cluster.id(),
    })
}

fn parse(text: &str) -> Result<Fingerprint, Status> {
    text.parse()
        .map_err(|e: crate::tls::BadFingerprint| Status::invalid_argument(e.to_string()))
}

fn pin(cx: &Context, fingerprints: impl IntoIterator<Item = Fingerprint>) -> Result<(), Status> {
    cx.trust
        .pin(fingerprints)
        .map_err(|e| Status::internal(format!("cannot keep the cluster's fingerprints: {e}")))
}

/// Asks each member in turn; the first that answers decides. A refusal (a used, expired or
/// unknown token) is final; an unreachable member is not.
async fn first_answer(
    peers: &[(String, Fingerprint)],
    credentials: &Credentials,
    request: EnrolRequest,
) -> Result<(String, EnrolReply), Status> {
    let mut last = Status::unavailable("no member of the cluster was given");
    for (addr, _) in peers {
        let mut client = match dial(addr, Duration::from_secs(2), credentials).await {
            Ok(c) => c,
            Err(e) => {
                last = Status::unavailable(e.to_string());
                continue;
            }
        };
        match client.enrol(request.clone()).await {
            Ok(reply) => return Ok((addr.clone(), reply.into_inner())),
            Err(s) if s.code() == tonic::Code::Unavailable => last = s,
            Err(s) => return Err(s),
        }
    }
    Err(last)
}

/// The member that let us in may take a moment to apply the entry (and so to accept our
/// certificate): retry until it does.
async fn add_self(cx: &Context, peer: &str) -> Result<(), Status> {
    let deadline = Instant::now() + TRUST_SPREAD;
    loop {
        let attempt = async {
            let mut client = cx
                .peers
                .get(peer)
                .map_err(|e| Status::unavailable(e.to_string()))?;
            client
                .add_member(AddMemberRequest {
                    member: Some(super::status::me(cx)),
                    forwarded: false,
                })
                .await
        };
        match attempt.await {
            Ok(_) => return Ok(()),
            // A member that has not applied our trust entry yet refuses the handshake, which
            // shows up as any of these, depending on where the call was when it did.
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unauthenticated
                        | tonic::Code::Unknown
                        | tonic::Code::Unavailable
                        | tonic::Code::Cancelled
                ) && Instant::now() < deadline =>
            {
                tracing::debug!("not added yet: {}", s.message());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => return Err(s),
        }
    }
}
