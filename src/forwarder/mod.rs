//! The IEC 60870-5-104 forwarder: the controlled-station (server) side that SCADA masters
//! connect to.
//!
//! The protocol parts have no I/O: `iec104::link` is one connection's state machine
//! (STARTDT/STOPDT/TESTFR, the k and w windows, timers t1..t3), [`image`] maps the replicated
//! point image to a forwarder's IOAs and 104 types, [`station`] answers what a master asks.
//! [`serve`] runs one listener per `[[forwarder]]` of the site, [`connection`] one task per
//! master connection; [`groups`] keeps at most one connection per redundancy group started,
//! [`stream`] tracks which events a connection has sent and had acknowledged, and
//! [`acks`] records the acknowledged positions in the log.

pub(crate) mod acks;
pub(crate) mod command;
pub(crate) mod connection;
pub(crate) mod gate;
pub(crate) mod groups;
pub(crate) mod image;
pub(crate) mod registry;
pub(crate) mod serve;
pub(crate) mod station;
pub(crate) mod stream;

pub(crate) use serve::run;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::lease::clock::OwnLease;

/// The node as its forwarder sees it: what the listeners and connections use. Only voters
/// run a forwarder; a witness serves no master.
pub(crate) struct Host {
    pub cluster: Cluster,
    /// This node's own lease, which mode `all` (and a witness's stand-in) serves under.
    pub own: Arc<OwnLease>,
    /// The connections open here, for `fepha iec104 connections`.
    pub registry: Arc<registry::Registry>,
    /// This node's name, for the commands' origin.
    pub name: String,
    /// Where the listeners bind.
    pub listen_ip: IpAddr,
    /// A leader serves only while a quorum answered it this recently: the lower bound of the
    /// election timeout, before which nobody else can be elected.
    pub quorum_fresh: Duration,
}
