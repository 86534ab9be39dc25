//! An RTU's endpoints as both protocols' tasks see them (channels in order, each channel's
//! endpoints in order) and what a task reports of them: which endpoints are up, and whether
//! the RTU is reachable. The report goes to the leader with every session renewal.

use std::collections::BTreeMap;

use super::probe::Endpoint;
use crate::cluster::{Report, Reports};
use crate::site::Rtu;
use crate::state::ownership::{Link, Reach};

/// Every endpoint, channels in order and each channel's endpoints in order.
pub(crate) fn endpoints(rtu: &Rtu) -> Vec<Endpoint> {
    rtu.channels
        .iter()
        .enumerate()
        .flat_map(|(c, ch)| (0..ch.endpoints.len()).map(move |e| (c, e)))
        .collect()
}

/// The endpoint's `host:port`.
pub(crate) fn endpoint(rtu: &Rtu, (c, e): Endpoint) -> String {
    rtu.channels
        .get(c)
        .and_then(|ch| ch.endpoints.get(e))
        .map(|e| e.get_ref().clone())
        .unwrap_or_default()
}

/// Says what this node reaches of `rtu`.
pub(crate) fn report(
    reports: &Reports,
    rtu: &Rtu,
    reach: Option<Reach>,
    up: &BTreeMap<Endpoint, bool>,
) {
    let links = up
        .iter()
        .map(|((c, e), up)| Link {
            channel: rtu
                .channels
                .get(*c)
                .map(|ch| ch.name.get_ref().clone())
                .unwrap_or_default(),
            endpoint: endpoint(rtu, (*c, *e)),
            up: *up,
            index: u32::try_from(*e).unwrap_or(u32::MAX),
        })
        .collect();
    reports.set(rtu.id.get_ref(), Report { reach, links });
}
