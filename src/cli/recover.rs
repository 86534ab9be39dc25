//! `fepha recover --force-single-node`: the survivor of a site whose other members are gone
//! for good carries on alone, with its state intact. Run on the survivor's box while its node
//! is stopped.

use std::time::Duration;

use anyhow::bail;

use super::output::outln;
use super::snapshot::user_at_host;
use crate::cluster::Cluster;
use crate::config::{NodeConfig, Role};
use crate::raft::offline::{self, Plan, RecoveryError};
use crate::state::recovery::{AuditKind, AuditRecord};

/// A member that accepts a TCP connection within this is alive.
const PROBE: Duration = Duration::from_secs(1);

pub(super) async fn force_single_node(config: &NodeConfig, confirmed: bool) -> anyhow::Result<()> {
    if config.role != Role::Voter {
        bail!(
            "node {} is a witness, which does no field I/O; recover a voter instead",
            config.name
        );
    }
    let store = offline::open(&crate::node::raft_dir(&config.data_dir))?;
    if store.is_empty()? {
        return Err(RecoveryError::Empty.into());
    }
    let (id, identity) = crate::node::prepare(config)?;
    let plan = offline::plan(&store, id)?;
    let alive = answering(&plan).await;
    if !alive.is_empty() {
        bail!(
            "refusing to recover: {} still answer{}. Two clusters serving one site would \
             both poll and control the same devices. Stop those nodes for good (or make \
             sure they cannot come back), then run this again.",
            alive.join(", "),
            if alive.len() == 1 { "s" } else { "" }
        );
    }
    let what = describe(config, &plan);
    if !confirmed {
        bail!(
            "refusing to recover without confirmation. This would:\n{what}\n\
             None of them answers now. If they are down for good, run again with \
             --yes-the-others-are-down"
        );
    }
    let record = AuditRecord {
        kind: AuditKind::ForceSingleNode,
        at_ms: Cluster::now_ms(),
        by: user_at_host(),
        node: config.name.clone(),
        node_id: id,
        removed: plan.removed_members(),
        last_index_before: plan.last_index(),
        committed_before: plan.committed.as_ref().map_or(0, |c| c.index),
        detail: format!(
            "forced to a single node; {} entries past the last known commit kept",
            plan.uncommitted
        ),
    };
    let me = crate::node::member_record(config, &identity);
    offline::recover(&store, plan, (id, me), record)?;
    outln!(
        "done:\n{what}\nStart the node (`systemctl start fepha` or `fepha run`); it leads \
         alone. Add new boxes with `fepha token create` here and `fepha join --token` there."
    );
    Ok(())
}

fn describe(config: &NodeConfig, plan: &Plan) -> String {
    let removed: Vec<String> = plan
        .removed
        .iter()
        .map(|(id, n)| format!("{} ({}, id {id})", n.name, n.role))
        .collect();
    format!(
        "  - make node {} the only member (voter) of its cluster, keeping its state up to log \
         index {} (the last it knew committed: {}; {} entries after that are kept too)\n  \
         - remove {} from the membership and revoke their certificates, so they are refused \
         if they come back\n  - end every RTU lease: the RTUs are granted again, under higher \
         epochs\n  - record this in the replicated audit log (`fepha audit`)",
        config.name,
        plan.last_index(),
        plan.committed.as_ref().map_or(0, |c| c.index),
        plan.uncommitted,
        removed.join(", ")
    )
}

/// The removed members that accept a connection on their raft or admin address.
async fn answering(plan: &Plan) -> Vec<String> {
    let probes = plan.removed.iter().flat_map(|(_, n)| {
        [("raft", &n.raft_addr), ("admin", &n.admin_addr)].map(|(what, addr)| async move {
            let connect = tokio::net::TcpStream::connect(addr.as_str());
            let answers = matches!(tokio::time::timeout(PROBE, connect).await, Ok(Ok(_)));
            answers.then(|| format!("{} (on its {what} address {addr})", n.name))
        })
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}
