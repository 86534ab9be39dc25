//! `fepha rtu list` and `fepha rtu move`.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use super::call::{Target, retrying};
use super::output::{out, outln};
use crate::proto::admin::*;

pub(super) async fn fetch(target: &Target, timeout: Duration) -> anyhow::Result<RtuListReply> {
    let client = target.connect().await?;
    Ok(retrying(timeout, || {
        let mut c = client.clone();
        async move { c.rtu_list(RtuListRequest { forwarded: false }).await }
    })
    .await?
    .into_inner())
}

pub(super) async fn list(target: &Target, as_json: bool, timeout: Duration) -> anyhow::Result<()> {
    let reply = fetch(target, timeout).await?;
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
    } else {
        out!("{}", render(&reply));
    }
    Ok(())
}

/// The text of `fepha rtu list`: a line per RTU, then its links per node.
pub(super) fn render(reply: &RtuListReply) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<20} {:<12} {:>6} {:>10}  REACHABLE FROM",
        "RTU", "OWNER", "EPOCH", "LEASE LEFT"
    );
    for r in &reply.rtus {
        let owner = if r.owner.is_empty() { "-" } else { &r.owner };
        let _ = writeln!(
            text,
            "{:<20} {:<12} {:>6} {:>8}ms  {}",
            r.rtu,
            owner,
            r.epoch,
            r.lease_left_ms,
            r.reachable_from.join(",")
        );
        for l in &r.links {
            let _ = writeln!(
                text,
                "    {:<12} {:<12} {:<24} {}",
                l.node,
                l.channel,
                l.endpoint,
                if l.up { "up" } else { "down" }
            );
        }
    }
    text
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
