//! `fepha rtu list` and `fepha rtu move`.

use std::time::Duration;

use serde_json::json;

use super::call::{Target, retrying};
use super::output::outln;
use crate::proto::admin::*;

pub(super) async fn list(target: &Target, as_json: bool, timeout: Duration) -> anyhow::Result<()> {
    let client = target.connect().await?;
    let reply = retrying(timeout, || {
        let mut c = client.clone();
        async move { c.rtu_list(RtuListRequest { forwarded: false }).await }
    })
    .await?
    .into_inner();
    if as_json {
        let rtus: Vec<_> = reply
            .rtus
            .iter()
            .map(|r| {
                json!({"rtu": r.rtu, "owner": (!r.owner.is_empty()).then_some(&r.owner),
                       "epoch": r.epoch, "lease_left_ms": r.lease_left_ms,
                       "reachable_from": r.reachable_from, "unreachable_from": r.unreachable_from,
                       "links": r.links.iter().map(|l| json!({"node": l.node, "channel": l.channel,
                           "endpoint": l.endpoint, "up": l.up})).collect::<Vec<_>>()})
            })
            .collect();
        outln!("{:#}", json!(rtus));
        return Ok(());
    }
    outln!(
        "{:<20} {:<12} {:>6} {:>10}  REACHABLE FROM",
        "RTU",
        "OWNER",
        "EPOCH",
        "LEASE LEFT"
    );
    for r in &reply.rtus {
        let owner = if r.owner.is_empty() { "-" } else { &r.owner };
        outln!(
            "{:<20} {:<12} {:>6} {:>8}ms  {}",
            r.rtu,
            owner,
            r.epoch,
            r.lease_left_ms,
            r.reachable_from.join(",")
        );
        for l in &r.links {
            outln!(
                "    {:<12} {:<12} {:<24} {}",
                l.node,
                l.channel,
                l.endpoint,
                if l.up { "up" } else { "down" }
            );
        }
    }
    Ok(())
}

pub(super) async fn move_to(
    target: &Target,
    rtu: &str,
    to: &str,
    force: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = target.connect().await?;
    let reply = retrying(timeout, || {
        let mut c = client.clone();
        let request = RtuMoveRequest {
            rtu: rtu.to_owned(),
            to: to.to_owned(),
            force,
            forwarded: false,
        };
        async move { c.rtu_move(request).await }
    })
    .await?
    .into_inner();
    outln!("{rtu} is now owned by {to} (epoch {})", reply.epoch);
    Ok(())
}
