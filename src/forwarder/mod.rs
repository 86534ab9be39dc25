//! The IEC 60870-5-104 forwarder: the controlled-station (server) side that SCADA masters
//! connect to.
//!
//! [`link`] holds the per-connection state machine (STARTDT/STOPDT/TESTFR, the k and w
//! windows, timers t1..t3), sans-IO: the caller feeds it bytes and the current time, and
//! drains bytes to write and events. [`image`] maps the replicated point image to the
//! forwarder's IOAs and 104 types: interrogation replies and spontaneous ASDUs.

pub mod image;
pub mod link;
