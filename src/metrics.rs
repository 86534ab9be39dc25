//! Prometheus metrics: the exporter on `metrics_addr`, and the help text of every family.
//!
//! Conventions (Prometheus'): base units, `_total` counters, `_seconds` histograms; labels
//! per node (a global `node` label), RTU, channel, endpoint, forwarder and group, never per
//! point or register, so a site's size does not become the scrape's.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

#[derive(Debug, thiserror::Error)]
#[error("cannot start the metrics exporter on {addr}: {message}")]
pub struct MetricsError {
    addr: SocketAddr,
    message: String,
}

/// Installs the global recorder and returns the exporter's HTTP server and the process
/// collector, to be spawned together.
pub(crate) fn exporter(
    addr: SocketAddr,
    node: &str,
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
        .add_global_label("node", node)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .map_err(|e| err(&e))?
        .build()
        .map_err(|e| err(&e))?;
    metrics::set_global_recorder(recorder).map_err(|e| err(&e))?;
    describe();
    let process = metrics_process::Collector::default();
    process.describe();
    Ok(async move {
        let collect = async {
            // Sampled more often than any scrape interval would need, so a scrape never
            // shows a minute-old resident size.
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                process.collect();
                metrics::counter!("fepha_process_samples_total").increment(1);
            }
        };
        tokio::select! {
            r = server => if let Err(e) = r {
                tracing::error!("metrics exporter stopped: {e:?}");
            },
            () = collect => {}
        }
    })
}

/// From a fast Modbus read on a LAN (a millisecond) to a poll that ran into its timeout.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

use Kind::{Counter, Gauge, Histogram};

/// Every family a node exports (besides the standard `process_*` ones), with its help text.
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "fepha_build_info",
        Gauge,
        "1, labelled with the version and commit this node runs",
    ),
    (
        "fepha_process_samples_total",
        Counter,
        "Samples of the process metrics taken",
    ),
    (
        "fepha_state_samples_total",
        Counter,
        "Samples of the ownership, link and forwarder gauges taken",
    ),
    // Raft
    ("fepha_raft_term", Gauge, "Current Raft term"),
    (
        "fepha_raft_last_log_index",
        Gauge,
        "Index of the last entry in this node's log",
    ),
    (
        "fepha_raft_committed_index",
        Gauge,
        "On the leader: index of the last entry a majority of voters holds",
    ),
    (
        "fepha_raft_applied_index",
        Gauge,
        "Index of the last entry applied to the state machine",
    ),
    (
        "fepha_raft_apply_lag_entries",
        Gauge,
        "Entries in this node's log not applied yet",
    ),
    (
        "fepha_raft_replication_lag_entries",
        Gauge,
        "On the leader: entries each peer is behind the leader's log, by peer",
    ),
    (
        "fepha_raft_snapshot_index",
        Gauge,
        "Last log index covered by this node's snapshot",
    ),
    (
        "fepha_raft_snapshot_size_bytes",
        Gauge,
        "Size of the last snapshot this node built or installed",
    ),
    (
        "fepha_raft_log_stored_bytes",
        Gauge,
        "Bytes this node's log entries take as stored (about what they cost in memory)",
    ),
    (
        "fepha_raft_snapshots_for_log_bytes_total",
        Counter,
        "Snapshots asked for because the log since the last one grew past its size bound",
    ),
    (
        "fepha_raft_is_leader",
        Gauge,
        "1 while this node is the Raft leader",
    ),
    (
        "fepha_raft_has_leader",
        Gauge,
        "1 while this node knows a leader",
    ),
    ("fepha_raft_voters", Gauge, "Voters in the membership"),
    (
        "fepha_raft_elections_total",
        Counter,
        "Terms this node has seen begin (each is an election somewhere in the cluster)",
    ),
    (
        "fepha_raft_leader_changes_total",
        Counter,
        "Times this node saw a different node become leader",
    ),
    (
        "fepha_raft_proposal_duration_seconds",
        Histogram,
        "Time from proposing an entry on the leader to its being applied there",
    ),
    (
        "fepha_raft_metrics_updates_total",
        Counter,
        "Changes of openraft's metrics seen",
    ),
    (
        "fepha_raft_quorum_checks_total",
        Counter,
        "Runs of the leader's quorum check",
    ),
    (
        "fepha_raft_quorum_lost_total",
        Counter,
        "Times this leader stepped down for lack of a quorum",
    ),
    (
        "fepha_raft_rpc_sent_total",
        Counter,
        "Raft RPCs sent, by rpc and outcome",
    ),
    (
        "fepha_raft_rpc_received_total",
        Counter,
        "Raft RPCs received, by rpc",
    ),
    (
        "fepha_raft_rpc_rejected_total",
        Counter,
        "Raft RPCs refused, by rpc",
    ),
    (
        "fepha_raft_campaigns_leader_gone_total",
        Counter,
        "Elections this node started at once because the leader's port refused connections",
    ),
    // Members
    (
        "fepha_member_up",
        Gauge,
        "1 while this node reaches the member's peer service (itself included), by member",
    ),
    (
        "fepha_member_info",
        Gauge,
        "1 for each member in the membership, by member and role",
    ),
    (
        "fepha_cluster_fault_tolerance",
        Gauge,
        "Voters this node reaches beyond a bare majority; below 0 there is no quorum",
    ),
    (
        "fepha_site_config_version",
        Gauge,
        "Version of the site configuration this node has applied (0: none)",
    ),
    (
        "fepha_admin_requests_total",
        Counter,
        "Admin API calls, by method and result code",
    ),
    (
        "fepha_peer_probes_total",
        Counter,
        "Calls that keep this node's connections to the other members' peer services open",
    ),
    (
        "fepha_peer_probes_unanswered_total",
        Counter,
        "Of those, the ones a member did not answer in time",
    ),
    (
        "fepha_peer_requests_total",
        Counter,
        "Node-to-node peer calls (renewals, forwarded writes), by method and result code",
    ),
    // TLS
    (
        "fepha_tls_handshakes_total",
        Counter,
        "TLS handshakes, by listener and outcome",
    ),
    (
        "fepha_tls_refused_total",
        Counter,
        "Certificates refused, by side (server: a client's, client: a server's) and reason (untrusted, no_certificate)",
    ),
    (
        "fepha_tls_handshakes_in_flight",
        Gauge,
        "TLS handshakes in progress, by listener",
    ),
    (
        "fepha_tls_connections_open",
        Gauge,
        "TLS connections open, by listener and client (certificate, none)",
    ),
    (
        "fepha_tls_connections_closed_total",
        Counter,
        "Connections closed unserved because they passed a listener's limits, by listener and reason",
    ),
    (
        "fepha_tls_revocation_checks_total",
        Counter,
        "Runs of the loop that cuts connections of revoked certificates",
    ),
    (
        "fepha_tls_connections_cut_total",
        Counter,
        "Open connections cut because their certificate was revoked",
    ),
    // Leases and RTUs
    (
        "fepha_lease_plans_total",
        Counter,
        "Runs of the leader's lease plan",
    ),
    (
        "fepha_lease_commands_total",
        Counter,
        "Lease decisions the leader proposed (grants, releases, expiries)",
    ),
    (
        "fepha_lease_renewals_total",
        Counter,
        "This node's session renewals, by outcome",
    ),
    (
        "fepha_lease_valid",
        Gauge,
        "1 while this node's own lease clock allows field I/O",
    ),
    (
        "fepha_rtu_owner",
        Gauge,
        "1 while the log gives this node the RTU's lease, by RTU",
    ),
    (
        "fepha_rtu_has_owner",
        Gauge,
        "1 while the log gives the RTU's lease to some node, by RTU",
    ),
    (
        "fepha_rtu_epoch",
        Gauge,
        "Fencing epoch of the RTU's current lease, by RTU",
    ),
    (
        "fepha_rtu_handovers_total",
        Counter,
        "On the leader: leases moved from one node to another or freed, by RTU and reason",
    ),
    (
        "fepha_link_up",
        Gauge,
        "1 while this node's link to the endpoint works, by RTU, channel and endpoint",
    ),
    (
        "fepha_acquisition_rtus",
        Gauge,
        "RTU tasks running on this node (owned or standing by)",
    ),
    (
        "fepha_acquisition_rounds_total",
        Counter,
        "Poll or probe rounds of RTU tasks, by RTU",
    ),
    (
        "fepha_acquisition_failures_total",
        Counter,
        "Failed polls of an endpoint, by RTU",
    ),
    (
        "fepha_poll_duration_seconds",
        Histogram,
        "Duration of one Modbus poll round of an owned RTU, by RTU",
    ),
    (
        "fepha_poll_errors_total",
        Counter,
        "Failed field exchanges, by RTU and kind (connect, timeout, exception, io, closed, t1, protocol)",
    ),
    // Points and events
    (
        "fepha_point_batches_total",
        Counter,
        "Log entries of point changes this node wrote",
    ),
    (
        "fepha_point_changes_total",
        Counter,
        "Point changes this node wrote to the log",
    ),
    (
        "fepha_point_batches_refused_total",
        Counter,
        "Batches of this node's point changes refused for a stale epoch",
    ),
    (
        "fepha_point_write_retries_total",
        Counter,
        "Point batches retried because the cluster had no leader",
    ),
    (
        "fepha_points_applied_total",
        Counter,
        "Point changes applied to this node's state machine",
    ),
    (
        "fepha_events_applied_total",
        Counter,
        "Events appended to this node's state machine",
    ),
    (
        "fepha_stale_writes_total",
        Counter,
        "Writes this node's state machine refused for a stale epoch",
    ),
    (
        "fepha_commands_total",
        Counter,
        "Commands executed at a device, by outcome",
    ),
    // IEC 104 acquisition
    (
        "fepha_iec104c_asdus_received_total",
        Counter,
        "ASDUs received from 104 devices, by RTU",
    ),
    (
        "fepha_iec104c_link_closed_total",
        Counter,
        "Links to 104 devices closed, by RTU and reason",
    ),
    (
        "fepha_iec104c_unknown_objects_total",
        Counter,
        "Information objects from a 104 device that map to no point, by RTU",
    ),
    (
        "fepha_iec104c_undecodable_asdus_total",
        Counter,
        "ASDUs from a 104 device that did not decode, by RTU",
    ),
    (
        "fepha_iec104_repeated_reports_total",
        Counter,
        "Reports a 104 device resent that the log already held, by RTU",
    ),
    // IEC 104 forwarder
    (
        "fepha_iec104_connections_total",
        Counter,
        "Master connections accepted, by forwarder",
    ),
    (
        "fepha_iec104_connections_open",
        Gauge,
        "Master connections open on this node",
    ),
    (
        "fepha_iec104_connections",
        Gauge,
        "Master connections open, by forwarder, group and state (stopped, waiting, started)",
    ),
    (
        "fepha_iec104_connections_refused_total",
        Counter,
        "Master connections closed at once because their address is in no group",
    ),
    (
        "fepha_iec104_connections_closed_total",
        Counter,
        "Master connections closed by the link layer",
    ),
    (
        "fepha_iec104_listen_errors_total",
        Counter,
        "Failures to listen on a forwarder's address",
    ),
    (
        "fepha_iec104_accept_errors_total",
        Counter,
        "Failures to accept a master's connection",
    ),
    (
        "fepha_iec104_asdus_sent_total",
        Counter,
        "ASDUs sent to masters, by forwarder and group",
    ),
    (
        "fepha_iec104_asdus_received_total",
        Counter,
        "ASDUs received from masters, by forwarder and group",
    ),
    (
        "fepha_iec104_bytes_received_total",
        Counter,
        "Bytes received from masters",
    ),
    (
        "fepha_iec104_bad_asdus_total",
        Counter,
        "ASDUs from masters that did not decode (the connection is closed)",
    ),
    (
        "fepha_iec104_unacked_frames",
        Gauge,
        "I frames sent to masters and not acknowledged yet, by forwarder and group",
    ),
    (
        "fepha_iec104_events_waiting",
        Gauge,
        "Events in the log that the group has not acknowledged, by forwarder and group",
    ),
    (
        "fepha_iec104_event_age_seconds",
        Histogram,
        "Age of an event (now minus its time tag) when it is sent to a master, by forwarder and group",
    ),
    (
        "fepha_iec104_events_sent_total",
        Counter,
        "Events sent to masters",
    ),
    (
        "fepha_iec104_events_dropped_total",
        Counter,
        "Events a group lost because its queue bound was passed",
    ),
    (
        "fepha_iec104_ack_records_total",
        Counter,
        "Group acknowledgements written to the log",
    ),
    (
        "fepha_iec104_group_moves_total",
        Counter,
        "Started connections closed because their group moved to another connection",
    ),
    (
        "fepha_iec104_leadership_closes_total",
        Counter,
        "Started connections closed because this node stopped serving the forwarder",
    ),
    (
        "fepha_iec104_commands_total",
        Counter,
        "Commands from masters, by outcome",
    ),
];

/// The `kind`s of `fepha_poll_errors_total`, by protocol.
pub(crate) const MODBUS_ERRORS: &[&str] = &["connect", "timeout", "io", "exception"];
pub(crate) const IEC104_ERRORS: &[&str] = &["connect", "io", "closed", "t1", "protocol"];

/// Registers at zero the counters of one RTU, when a site names it, so that a rate or an
/// alert on them has a series before the first failure.
pub(crate) fn register_rtu(rtu: &str, iec104: bool) {
    let id = || rtu.to_owned();
    metrics::counter!("fepha_acquisition_failures_total", "rtu" => id()).increment(0);
    for reason in ["moved", "unreachable", "session_expired"] {
        metrics::counter!("fepha_rtu_handovers_total", "rtu" => id(), "reason" => reason)
            .increment(0);
    }
    let kinds = if iec104 { IEC104_ERRORS } else { MODBUS_ERRORS };
    for kind in kinds {
        metrics::counter!("fepha_poll_errors_total", "rtu" => id(), "kind" => *kind).increment(0);
    }
    if iec104 {
        for name in [
            "fepha_iec104c_asdus_received_total",
            "fepha_iec104c_unknown_objects_total",
            "fepha_iec104c_undecodable_asdus_total",
            "fepha_iec104_repeated_reports_total",
        ] {
            metrics::counter!(name, "rtu" => id()).increment(0);
        }
        for reason in ["t1", "protocol", "local"] {
            metrics::counter!("fepha_iec104c_link_closed_total", "rtu" => id(), "reason" => reason)
                .increment(0);
        }
    }
}

/// Describes every family and registers the label-less counters at zero, so that a dashboard
/// or an alert finds each series from the start, not only after its first event.
fn describe() {
    for (name, kind, help) in FAMILIES {
        match kind {
            Counter => metrics::describe_counter!(*name, *help),
            Gauge => metrics::describe_gauge!(*name, *help),
            Histogram => metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help),
        }
    }
    metrics::gauge!(
        "fepha_build_info",
        "version" => crate::VERSION,
        "commit" => crate::COMMIT,
    )
    .set(1.0);
    for name in [
        "fepha_raft_quorum_lost_total",
        "fepha_raft_metrics_updates_total",
        "fepha_raft_quorum_checks_total",
        "fepha_raft_elections_total",
        "fepha_raft_leader_changes_total",
        "fepha_raft_campaigns_leader_gone_total",
        "fepha_points_applied_total",
        "fepha_events_applied_total",
        "fepha_stale_writes_total",
        "fepha_point_batches_total",
        "fepha_point_changes_total",
        "fepha_point_batches_refused_total",
        "fepha_point_write_retries_total",
        "fepha_peer_probes_total",
        "fepha_peer_probes_unanswered_total",
        "fepha_tls_revocation_checks_total",
        "fepha_tls_connections_cut_total",
        "fepha_lease_plans_total",
        "fepha_lease_commands_total",
        "fepha_iec104_connections_refused_total",
        "fepha_iec104_connections_closed_total",
        "fepha_iec104_listen_errors_total",
        "fepha_iec104_accept_errors_total",
        "fepha_iec104_bytes_received_total",
        "fepha_iec104_bad_asdus_total",
        "fepha_iec104_events_sent_total",
        "fepha_iec104_events_dropped_total",
        "fepha_iec104_ack_records_total",
        "fepha_iec104_group_moves_total",
        "fepha_iec104_leadership_closes_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for listener in ["raft", "admin"] {
        for outcome in ["ok", "refused", "timeout"] {
            metrics::counter!("fepha_tls_handshakes_total", "listener" => listener, "outcome" => outcome)
                .increment(0);
        }
    }
    for side in ["server", "client"] {
        metrics::counter!("fepha_tls_refused_total", "side" => side, "reason" => "untrusted")
            .increment(0);
    }
    metrics::counter!("fepha_tls_refused_total", "side" => "server", "reason" => "no_certificate")
        .increment(0);
    crate::tls::register_listener("raft", false);
    crate::tls::register_listener("admin", true);
    for outcome in ["done", "failed"] {
        metrics::counter!("fepha_commands_total", "outcome" => outcome).increment(0);
    }
    for outcome in ["done", "failed", "refused", "timeout", "declined"] {
        metrics::counter!("fepha_iec104_commands_total", "outcome" => outcome).increment(0);
    }
    for rpc in ["append_entries", "vote", "install_snapshot"] {
        metrics::counter!("fepha_raft_rpc_rejected_total", "rpc" => rpc).increment(0);
    }
    metrics::gauge!("fepha_iec104_connections_open").set(0.0);
    metrics::gauge!("fepha_raft_snapshot_size_bytes").set(0.0);
    metrics::gauge!("fepha_raft_log_stored_bytes").set(0.0);
    metrics::counter!("fepha_raft_snapshots_for_log_bytes_total").increment(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dashboard and the alerts may only use families that a node exports.
    #[test]
    fn dashboard_and_alerts_use_only_exported_families() {
        let process = [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ];
        for (file, text) in [
            (
                "dashboard",
                include_str!("../grafana/dashboards/fepha.json"),
            ),
            ("alerts", include_str!("../prometheus/alerts.yml")),
        ] {
            let mut used = 0;
            for prefix in ["fepha_", "process_"] {
                for (i, _) in text.match_indices(prefix) {
                    let name: String = text[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    let family = name.strip_suffix("_bucket").unwrap_or(&name);
                    let known =
                        FAMILIES.iter().any(|(n, _, _)| *n == family) || process.contains(&family);
                    assert!(known, "the {file} uses {name}, which no node exports");
                    used += 1;
                }
            }
            assert!(used >= 10, "the {file} should use the nodes' metrics");
        }
    }

    #[test]
    fn families_follow_the_naming_conventions() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, kind, help) in FAMILIES {
            assert!(seen.insert(*name), "{name} is listed twice");
            assert!(name.starts_with("fepha_"), "{name}");
            assert!(!help.is_empty(), "{name} has no help text");
            match kind {
                Counter => assert!(name.ends_with("_total"), "counter {name}"),
                Histogram => assert!(name.ends_with("_seconds"), "histogram {name}"),
                Gauge => assert!(!name.ends_with("_total"), "gauge {name}"),
            }
        }
    }
}
