//! `fepha status` and `fepha members`.

use serde_json::{Value, json};

use super::call::{Target, status_error};
use super::output::outln;

use crate::proto::admin::*;

async fn fetch(target: &Target) -> anyhow::Result<StatusReply> {
    Ok(target
        .connect()
        .await?
        .status(StatusRequest { local_only: false })
        .await
        .map_err(status_error)?
        .into_inner())
}

fn member_json(m: &Member) -> Value {
    json!({
        "name": m.name,
        "id": m.id,
        "role": m.role,
        "voter": m.voter,
        "reachable": m.reachable,
        "matched_index": m.matched_index,
        "raft_addr": m.raft_addr,
        "admin_addr": m.admin_addr,
        "fingerprint": m.fingerprint,
    })
}

pub(super) async fn status(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let s = fetch(target).await?;
    if as_json {
        let value = json!({
            "node": s.node,
            "node_id": s.node_id,
            "role": s.role,
            "state": s.state,
            "leader": s.leader,
            "term": s.term,
            "last_log_index": s.last_log_index,
            "applied_index": s.applied_index,
            "config_version": s.config_version,
            "version": s.version,
            "snapshot_index": s.snapshot_index,
            "purged_index": s.purged_index,
            "fingerprint": s.fingerprint,
            "members": s.members.iter().map(member_json).collect::<Vec<_>>(),
        });
        outln!("{value:#}");
        return Ok(());
    }
    outln!(
        "node {} (id {}, {}, fepha {}): {}",
        s.node,
        s.node_id,
        s.role,
        s.version,
        s.state
    );
    outln!("fingerprint {}", s.fingerprint);
    outln!(
        "leader {}  term {}  last log index {}  applied index {}  config version {}",
        s.leader.as_deref().unwrap_or("none"),
        s.term,
        s.last_log_index,
        s.applied_index,
        s.config_version
    );
    print_members(&s.members);
    Ok(())
}

pub(super) async fn members(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let s = fetch(target).await?;
    if as_json {
        let list: Vec<_> = s.members.iter().map(member_json).collect();
        outln!("{:#}", json!(list));
    } else {
        print_members(&s.members);
    }
    Ok(())
}

fn print_members(members: &[Member]) {
    outln!(
        "{:<12} {:<8} {:<6} {:<10} {:>8}  {:<22} ADMIN",
        "NAME",
        "ROLE",
        "VOTER",
        "REACHABLE",
        "MATCHED",
        "RAFT"
    );
    for m in members {
        let matched = m
            .matched_index
            .map_or_else(|| "-".to_string(), |i| i.to_string());
        outln!(
            "{:<12} {:<8} {:<6} {:<10} {:>8}  {:<22} {}",
            m.name,
            m.role,
            if m.voter { "yes" } else { "no" },
            if m.reachable { "yes" } else { "NO" },
            matched,
            m.raft_addr,
            m.admin_addr
        );
    }
}
