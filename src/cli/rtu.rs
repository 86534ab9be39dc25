//! `fepha rtu list`.

use std::time::Duration;

use serde_json::json;

use super::call::{Target, retrying};
use super::output::outln;
use crate::proto::admin::*;

pub async fn list(target: &Target, as_json: bool, timeout: Duration) -> anyhow::Result<()> {
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
                       "reachable_from": r.reachable_from, "unreachable_from": r.unreachable_from})
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
    }
    Ok(())
}
