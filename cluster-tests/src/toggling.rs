//! A small IEC 104 site for the fault tests: a `fepha sim iec104` device whose indications
//! toggle one after another, acquired by the cluster as RTU `d` and forwarded to a master,
//! and the ledger of every change the device made, read from its log.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::sim104::Sim104;

/// The forwarder's port and common address.
pub const PORT: u16 = 2404;
pub const CA: u16 = 47;
/// Indications at the device (IOA 100..) and at the forwarder (IOA 1100..).
pub const POINTS: u32 = 4;

/// The device's profile: each indication toggles every `every_ms`, `count` times, after a
/// pause that lets the cluster settle first; the indications are spread evenly over the
/// period, so one changes every `every_ms / POINTS`.
pub fn profile(every_ms: u64, count: u64, start_after_ms: u64) -> String {
    let mut p = String::from("common_address = 5\nk = 12\nw = 8\n");
    for i in 0..POINTS {
        p += &format!(
            "[[point]]\nioa = {}\ntype = \"M_SP_TB_1\"\nvalue = false\n",
            100 + i
        );
        p += &format!(
            "[[schedule]]\nkind = \"toggle\"\nioa = {}\nevery_ms = {every_ms}\ncount = {count}\nstart_after_ms = {}\n",
            100 + i,
            start_after_ms + u64::from(i) * every_ms / u64::from(POINTS)
        );
    }
    p
}

/// The site: RTU `d` on `device` with short link timers and a one-second session TTL, so
/// that faults are over quickly, and forwarder `cc` serving its points.
pub fn site(name: &str, device: SocketAddr) -> String {
    let mut s = format!(
        r#"[site]
name = "{name}"
[timers]
session_ttl_ms = 1000
[[rtu]]
id = "d"
protocol = "iec104"
standby = "probe"
poll_interval_ms = 100
  [rtu.iec104]
  common_address = 5
  t0_s = 1
  t1_s = 3
  t2_s = 1
  t3_s = 5
  [[rtu.channel]]
  name = "lan"
  endpoints = ["{device}"]
"#
    );
    for i in 0..POINTS {
        s += &format!(
            "[[point]]\nid = \"d.p{i}\"\nrtu = \"d\"\nkind = \"single\"\ntype = \"M_SP_TB_1\"\nioa = {}\n",
            100 + i
        );
    }
    s += &format!("[[forwarder]]\nname = \"cc\"\nport = {PORT}\ncommon_address = {CA}\n");
    for i in 0..POINTS {
        s += &format!(
            "  [[forwarder.map]]\n  point = \"d.p{i}\"\n  ioa = {}\n",
            1100 + i
        );
    }
    s
}

/// Every change the device has sent an owner: change number → (device IOA, time tag in Unix
/// ms), from the first frame that carried it. A change made while no owner was connected has
/// no frame yet and is not here.
pub fn device_changes(sim: &Sim104) -> BTreeMap<u64, (u64, i64)> {
    let mut out = BTreeMap::new();
    for line in sim.events("sent") {
        for o in line.objects() {
            let (Some(change), Some(ioa), Some(t)) = (
                o.get("change").and_then(|v| v.as_u64()),
                o.get("ioa").and_then(|v| v.as_u64()),
                o.get("time_ms").and_then(|v| v.as_i64()),
            ) else {
                continue;
            };
            out.entry(change).or_insert((ioa, t));
        }
    }
    out
}
