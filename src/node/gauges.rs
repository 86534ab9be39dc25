//! Gauges sampled from the replicated state and this node's 104 connections: who owns each
//! RTU under which epoch, this node's links, the config version, and each redundancy group's
//! connections and backlog. Sampled, not pushed from where they change, because they are
//! read from several layers and a scrape needs only a recent value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::forwarder::registry::Registry;
use crate::shutdown::Shutdown;
use crate::state::forwarding::group_key;

const EVERY: Duration = Duration::from_secs(1);

pub(super) async fn run(cluster: Cluster, connections: Arc<Registry>, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut registered = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        metrics::counter!("fepha_state_samples_total").increment(1);
        let version = cluster.read(|s| s.config_version());
        if version != registered
            && let Some(site) = cluster.site()
        {
            for rtu in &site.rtus {
                let iec104 = rtu.protocol == crate::site::Protocol::Iec104;
                crate::metrics::register_rtu(rtu.id.get_ref(), iec104);
            }
            registered = version;
        }
        sample(&cluster, &connections);
    }
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

fn sample(cluster: &Cluster, connections: &Registry) {
    let me = cluster.id();
    let site = cluster.site();
    cluster.read(|s| {
        metrics::gauge!("fepha_site_config_version").set(s.config_version() as f64);
        let Some(site) = &site else { return };
        let own = &s.ownership;
        for rtu in &site.rtus {
            let id = rtu.id.get_ref().clone();
            let lease = own.leases.get(&id);
            metrics::gauge!("fepha_rtu_owner", "rtu" => id.clone())
                .set(flag(lease.is_some_and(|l| l.owner == me)));
            metrics::gauge!("fepha_rtu_has_owner", "rtu" => id.clone()).set(flag(lease.is_some()));
            let epoch = lease.map_or_else(|| own.epochs.get(&id).copied().unwrap_or(0), |l| l.epoch);
            metrics::gauge!("fepha_rtu_epoch", "rtu" => id.clone()).set(epoch as f64);
            let links = own.links.get(&id).and_then(|by_node| by_node.get(&me));
            for link in links.into_iter().flatten() {
                metrics::gauge!(
                    "fepha_link_up",
                    "rtu" => id.clone(),
                    "channel" => link.channel.clone(),
                    "endpoint" => link.endpoint.clone(),
                )
                .set(flag(link.up));
            }
        }
        let head = s.points.next_seq.saturating_sub(1);
        for fwd in &site.forwarders {
            let name = fwd.name.get_ref();
            for group in fwd.group_names() {
                let acked = s
                    .forwarding
                    .acked
                    .get(&group_key(name, &group))
                    .copied()
                    .unwrap_or(0);
                metrics::gauge!("fepha_iec104_events_waiting", "forwarder" => name.clone(), "group" => group)
                    .set(head.saturating_sub(acked) as f64);
            }
        }
    });
    if let Some(site) = &site {
        connection_gauges(site, connections);
    }
}

/// Per forwarder and group: connections by state and I frames not acknowledged. Every
/// configured group is written, with zeros, so that "no started connection" is a series.
fn connection_gauges(site: &crate::site::Site, connections: &Registry) {
    const STATES: [&str; 4] = ["stopped", "waiting", "started", "stopping"];
    let mut count: BTreeMap<(String, String, &str), u64> = BTreeMap::new();
    let mut unacked: BTreeMap<(String, String), u64> = BTreeMap::new();
    for fwd in &site.forwarders {
        for group in fwd.group_names() {
            let name = fwd.name.get_ref().clone();
            for state in STATES {
                count.insert((name.clone(), group.clone(), state), 0);
            }
            unacked.insert((name, group), 0);
        }
    }
    for conn in connections.list() {
        let Some(group) = conn.group else { continue };
        let state = STATES
            .into_iter()
            .find(|s| *s == conn.state)
            .unwrap_or("waiting");
        let key = (conn.forwarder.clone(), group.clone(), state);
        if let Some(n) = count.get_mut(&key) {
            *n += 1;
        }
        if let Some(n) = unacked.get_mut(&(conn.forwarder, group)) {
            *n += u64::from(conn.unacked);
        }
    }
    for ((forwarder, group, state), n) in count {
        metrics::gauge!("fepha_iec104_connections", "forwarder" => forwarder, "group" => group, "state" => state)
            .set(n as f64);
    }
    for ((forwarder, group), n) in unacked {
        metrics::gauge!("fepha_iec104_unacked_frames", "forwarder" => forwarder, "group" => group)
            .set(n as f64);
    }
}
