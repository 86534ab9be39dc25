//! Prometheus metrics: the exporter on `metrics_addr`, and the help text of every series.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;

#[derive(Debug, thiserror::Error)]
#[error("cannot start the metrics exporter on {addr}: {message}")]
pub struct MetricsError {
    addr: SocketAddr,
    message: String,
}

/// Installs the global recorder and returns the exporter's HTTP server, to be spawned.
pub(crate) fn exporter(
    addr: SocketAddr,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, MetricsError> {
    let err = |e: &dyn std::fmt::Display| MetricsError {
        addr,
        message: e.to_string(),
    };
    // Binding here, not inside the exporter, so a taken port fails `fepha run` at once.
    let probe = std::net::TcpListener::bind(addr).map_err(|e| err(&e))?;
    drop(probe);
    let (recorder, server) = PrometheusBuilder::new()
        .with_http_listener(addr)
        .build()
        .map_err(|e| err(&e))?;
    metrics::set_global_recorder(recorder).map_err(|e| err(&e))?;
    describe();
    Ok(async move {
        if let Err(e) = server.await {
            tracing::error!("metrics exporter stopped: {e:?}");
        }
    })
}

/// Every gauge a node exports, with its help text.
pub(crate) const GAUGES: &[(&str, &str)] = &[
    ("fepha_raft_term", "Current Raft term"),
    (
        "fepha_raft_last_log_index",
        "Index of the last entry in this node's log",
    ),
    (
        "fepha_raft_applied_index",
        "Index of the last entry applied to the state machine",
    ),
    (
        "fepha_raft_snapshot_index",
        "Last log index covered by this node's snapshot",
    ),
    (
        "fepha_raft_is_leader",
        "1 while this node is the Raft leader",
    ),
    ("fepha_raft_has_leader", "1 while this node knows a leader"),
    ("fepha_raft_voters", "Voters in the membership"),
    (
        "fepha_lease_valid",
        "1 while this node's own lease clock allows field I/O",
    ),
    (
        "fepha_acquisition_rtus",
        "RTU tasks running on this node (owned or standing by)",
    ),
];

/// Every counter a node exports, with its help text.
pub(crate) const COUNTERS: &[(&str, &str)] = &[
    (
        "fepha_raft_metrics_updates_total",
        "Changes of openraft's metrics seen",
    ),
    (
        "fepha_raft_quorum_checks_total",
        "Runs of the leader's quorum check",
    ),
    (
        "fepha_raft_quorum_lost_total",
        "Times this leader stepped down for lack of a quorum",
    ),
    (
        "fepha_raft_rpc_sent_total",
        "Raft RPCs sent, by rpc and outcome",
    ),
    (
        "fepha_raft_rpc_received_total",
        "Raft RPCs received, by rpc",
    ),
    ("fepha_raft_rpc_rejected_total", "Raft RPCs refused, by rpc"),
    (
        "fepha_admin_requests_total",
        "Admin API calls, by method and result code",
    ),
    (
        "fepha_raft_campaigns_leader_gone_total",
        "Elections this node started at once because the leader's port refused connections",
    ),
    (
        "fepha_peer_probes_total",
        "Calls that keep this node's connections to the other members' peer services open",
    ),
    (
        "fepha_peer_probes_unanswered_total",
        "Of those, the ones a member did not answer in time",
    ),
    (
        "fepha_peer_requests_total",
        "Node-to-node peer calls (renewals, forwarded writes), by method and result code",
    ),
    ("fepha_tls_handshakes_total", "TLS handshakes, by listener"),
    (
        "fepha_tls_refused_total",
        "TLS handshakes refused, by listener",
    ),
    (
        "fepha_tls_revocation_checks_total",
        "Runs of the loop that cuts connections of revoked certificates",
    ),
    (
        "fepha_tls_connections_cut_total",
        "Open connections cut because their certificate was revoked",
    ),
    ("fepha_lease_plans_total", "Runs of the leader's lease plan"),
    (
        "fepha_lease_commands_total",
        "Lease decisions the leader proposed (grants, releases, expiries)",
    ),
    (
        "fepha_lease_renewals_total",
        "This node's session renewals, by outcome",
    ),
    (
        "fepha_acquisition_rounds_total",
        "Poll or probe rounds of RTU tasks, by RTU",
    ),
    (
        "fepha_acquisition_failures_total",
        "Failed polls of an endpoint, by RTU",
    ),
    (
        "fepha_point_batches_total",
        "Log entries of point changes this node wrote",
    ),
    (
        "fepha_point_changes_total",
        "Point changes this node wrote to the log",
    ),
    (
        "fepha_point_batches_refused_total",
        "Batches of this node's point changes refused for a stale epoch",
    ),
    (
        "fepha_point_write_retries_total",
        "Point batches retried because the cluster had no leader",
    ),
    ("fepha_commands_total", "Commands executed, by outcome"),
    (
        "fepha_points_applied_total",
        "Point changes applied to this node's state machine",
    ),
    (
        "fepha_events_applied_total",
        "Events appended to this node's state machine",
    ),
    (
        "fepha_stale_writes_total",
        "Writes this node's state machine refused for a stale epoch",
    ),
];

/// Describes every metric and registers the label-less counters at zero, so that a dashboard
/// or an alert finds each series from the start, not only after its first event.
fn describe() {
    for (name, help) in GAUGES {
        metrics::describe_gauge!(*name, *help);
    }
    for (name, help) in COUNTERS {
        metrics::describe_counter!(*name, *help);
    }
    for name in [
        "fepha_raft_quorum_lost_total",
        "fepha_raft_metrics_updates_total",
        "fepha_raft_quorum_checks_total",
        "fepha_points_applied_total",
        "fepha_events_applied_total",
        "fepha_stale_writes_total",
        "fepha_point_batches_refused_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dashboard may only use series that a node exports.
    #[test]
    fn dashboard_uses_only_exported_metrics() {
        let dashboard = include_str!("../grafana/fepha-cluster.json");
        let known: Vec<&str> = GAUGES.iter().chain(COUNTERS).map(|(n, _)| *n).collect();
        let mut used = 0;
        for (i, _) in dashboard.match_indices("fepha_") {
            let name: String = dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            assert!(
                known.contains(&name.as_str()),
                "dashboard uses unknown metric {name}"
            );
            used += 1;
        }
        assert!(
            used >= 5,
            "the dashboard should chart the cluster's metrics"
        );
    }
}
