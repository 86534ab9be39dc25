//! The IEC 60870-5-104 forwarder: the controlled-station (server) side that SCADA masters
//! connect to.
//!
//! The protocol parts have no I/O: [`link`] is one connection's state machine (STARTDT/
//! STOPDT/TESTFR, the k and w windows, timers t1..t3), [`image`] maps the replicated point
//! image to a forwarder's IOAs and 104 types, [`station`] answers what a master asks.
//! [`serve`] runs one listener per `[[forwarder]]` of the site, [`connection`] one task per
//! master connection; [`groups`] keeps at most one connection per redundancy group started,
//! [`stream`] tracks which events a connection has sent and had acknowledged, and
//! [`acks`] records the acknowledged positions in the log.

pub mod acks;
pub mod command;
pub mod connection;
pub mod gate;
pub mod groups;
pub mod image;
pub mod link;
pub mod registry;
pub mod serve;
pub mod station;
pub mod stream;

use std::net::IpAddr;
use std::time::Duration;

use crate::site::Forwarder;

pub use serve::run;

/// The name of the group of a forwarder that declares none.
pub const DEFAULT_GROUP: &str = "default";

/// The link parameters a forwarder's configuration gives, or why they are not numbers.
pub fn link_params(forwarder: &Forwarder) -> Result<link::LinkParams, String> {
    let secs = |name: &str, s: f64| {
        if s.is_finite() && s > 0.0 && s < 86_400.0 {
            Ok(Duration::from_secs_f64(s))
        } else {
            Err(format!("{name} = {s} is not a time between 0 and one day"))
        }
    };
    Ok(link::LinkParams {
        k: forwarder.k,
        w: forwarder.w,
        t1: secs("t1_s", forwarder.t1_s)?,
        t2: secs("t2_s", forwarder.t2_s)?,
        t3: secs("t3_s", forwarder.t3_s)?,
    })
}

/// The forwarder's redundancy groups by name.
pub fn group_names(forwarder: &Forwarder) -> Vec<String> {
    if forwarder.groups.is_empty() {
        return vec![DEFAULT_GROUP.to_string()];
    }
    forwarder
        .groups
        .iter()
        .map(|g| g.name.get_ref().clone())
        .collect()
}

/// The group a master at `ip` belongs to; None if the forwarder's groups leave it out.
pub fn group_of(forwarder: &Forwarder, ip: IpAddr) -> Option<String> {
    if forwarder.groups.is_empty() {
        return Some(DEFAULT_GROUP.to_string());
    }
    let listed = |g: &crate::site::Group| {
        g.masters
            .iter()
            .any(|m| m.get_ref().parse::<IpAddr>().is_ok_and(|a| a == ip))
    };
    forwarder
        .groups
        .iter()
        .find(|g| listed(g))
        .or_else(|| forwarder.groups.iter().find(|g| g.masters.is_empty()))
        .map(|g| g.name.get_ref().clone())
}
