//! A rolling upgrade, as docs/install.md tells a field engineer to do it: one node at a time
//! is stopped cleanly (SIGTERM), started again from a new binary and let catch up, while an
//! IEC 104 device (`fepha sim iec104`, which queues every change until an owner acknowledges
//! it) toggles indications and a c104 master connected to every node takes them. Every change
//! the device made reaches the master, and data keeps coming after every step.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fepha_cluster_tests::Cluster;
use fepha_cluster_tests::field::{device_addr, owner_not_leader};
use fepha_cluster_tests::master::{Asdu, Dir, Init, LinkState, Master};
use fepha_cluster_tests::sim104::Sim104;
use fepha_cluster_tests::toggling::{CA, POINTS, PORT, device_changes, profile, site};

const WAIT: Duration = Duration::from_secs(30);

/// The highest change number the device has made (sent or still queued).
fn last_change(sim: &Sim104) -> u64 {
    sim.events("change")
        .iter()
        .filter_map(|l| l.u64("change"))
        .max()
        .unwrap_or(0)
}

/// (forwarder IOA, time tag in Unix ms) of every spontaneous single point the master
/// received, read from the frames off the wire: c104 acknowledges a frame before its point
/// callback runs and drops pending callbacks when a connection closes, as the stopped
/// leader's does.
fn master_changes(m: &Master) -> BTreeSet<(u32, i64)> {
    m.asdus()
        .iter()
        .filter(|a| a.dir == Dir::Rx && a.cot == Asdu::SPONTANEOUS && a.type_id == 30)
        .flat_map(|a| singles_with_time(&a.hex))
        .collect()
}

/// The objects of an M_SP_TB_1 with SQ=0 (type, VSQ, COT 2, CA 2, then per object IOA 3,
/// SIQ, CP56Time2a 7): IOA and time tag. Empty if the frame is not that.
fn singles_with_time(hex: &str) -> Vec<(u32, i64)> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    let Some(bytes) = bytes else {
        return Vec::new();
    };
    if bytes.get(1).is_none_or(|vsq| vsq & 0x80 != 0) {
        return Vec::new();
    }
    let Some(objects) = bytes.get(6..) else {
        return Vec::new();
    };
    objects
        .chunks_exact(11)
        .map(|o| {
            let ioa = u32::from(o[0]) | u32::from(o[1]) << 8 | u32::from(o[2]) << 16;
            (ioa, cp56_unix_ms(&o[4..11]))
        })
        .collect()
}

/// A CP56Time2a (taken as UTC) in Unix ms, computed here rather than by fepha's codec, whose
/// output is what is being checked.
fn cp56_unix_ms(t: &[u8]) -> i64 {
    let ms = i64::from(u16::from_le_bytes([t[0], t[1]]));
    let minute = i64::from(t[2] & 0x3f);
    let hour = i64::from(t[3] & 0x1f);
    let day = i64::from(t[4] & 0x1f);
    let month = i64::from(t[5] & 0x0f);
    let year = 2000 + i64::from(t[6] & 0x7f);
    // Days from 1970-01-01 to the date, by the proleptic Gregorian calendar.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + hour) * 60 + minute) * 60_000 + ms
}

/// The device's changes not at the master, by (change number, device IOA, time tag).
fn missing(sim: &Sim104, m: &Master, upto: u64) -> Result<Vec<(u64, u64, i64)>, String> {
    let made: Vec<(u64, u64, i64)> = device_changes(sim)
        .into_iter()
        .map(|(n, (ioa, t))| (n, ioa, t))
        .collect();
    let sent = made.iter().filter(|c| c.0 <= upto).count() as u64;
    if sent < upto {
        return Err(format!(
            "the device has sent {sent} of its first {upto} changes to an owner"
        ));
    }
    let have = master_changes(m);
    Ok(made
        .into_iter()
        .filter(|&(n, ioa, t)| n <= upto && !have.contains(&(ioa as u32 + 1000, t)))
        .collect())
}

/// A copy of the binary at another path: the "new version" each node is started from.
fn new_binary(c: &Cluster) -> PathBuf {
    let dir = c.dir().join("upgrade");
    std::fs::create_dir_all(&dir).expect("make the upgrade directory");
    let bin = dir.join("fepha");
    std::fs::copy(c.binary(), &bin).expect("copy the binary");
    bin
}

/// The executable node `i` runs, from /proc.
fn running_binary(c: &Cluster, i: usize) -> PathBuf {
    let pid = c.node(i).pid().expect("the node runs");
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("read the node's /proc exe link")
}

/// Waits until node `i` is back: a voter that names the same leader as the others, the
/// leader sees it reachable, and it has applied everything the leader had applied once it
/// was up again.
fn wait_caught_up(c: &Cluster, i: usize) {
    let leader = c.wait_for_leader(&[0, 1, 2]);
    let target = c
        .status(leader)
        .unwrap_or_else(|e| c.fail(&format!("the leader's status: {e}")))
        .applied_index;
    c.wait_until(&format!("{} caught up to {target}", c.name(i)), || {
        let l = c.status(leader)?;
        let me = l
            .members
            .iter()
            .find(|m| m.name == c.name(i))
            .ok_or("not a member any more")?;
        if !me.voter || !me.reachable || me.matched_index.is_none_or(|x| x < target) {
            return Err(format!("the leader sees {me:?}"));
        }
        let s = c.status(i)?;
        if s.applied_index < target || s.leader.as_deref() != Some(c.name(leader)) {
            return Err(s.summary());
        }
        Ok(())
    });
}

#[test]
fn a_rolling_upgrade_of_every_node_loses_no_indication_change() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    // Each indication toggles every 200 ms (one change every 50 ms in all) for far longer
    // than the upgrade takes; the test counts the changes made until it is done.
    let sim = Sim104::start_for(&c, device_addr(&c, 0, 0), &profile(200, 5000, 2000));
    c.apply_ok(0, &site("rolling upgrade", sim.addr()));
    let (owner, _) = owner_not_leader(&c);
    let leader = c.wait_for_leader(&[0, 1, 2]);
    let other = 3 - owner - leader;
    let points: Vec<(u32, &str)> = (0..POINTS).map(|i| (1100 + i, "M_SP_TB_1")).collect();
    let conns: Vec<(SocketAddr, Init)> = (0..3)
        .map(|i| (SocketAddr::new(c.ip(i), PORT), Init::All))
        .collect();
    let m = Master::start(&conns, CA, &points).expect("c104 master");
    if let Err(e) = m.wait_state(leader, LinkState::Open, WAIT) {
        c.fail(&format!("the master's link to the leader: {e:#}"));
    }
    let fresh_data = |what: &str| {
        let mark = m.mark();
        if let Err(e) = m.wait_asdu(WAIT, what, |a| {
            a.seq > mark && a.dir == Dir::Rx && a.cot == Asdu::SPONTANEOUS
        }) {
            c.fail(&format!("{e:#}\n{}\n{}", m.stderr_tail(20), sim.report()));
        }
    };
    fresh_data("the first changes at the master");

    // A plain follower first, then the RTU's owner, then the leader: each role is upgraded
    // while it holds that role.
    let new_bin = new_binary(&c);
    for (i, role) in [
        (other, "follower"),
        (owner, "RTU owner"),
        (leader, "leader"),
    ] {
        eprintln!("upgrading {} ({role})", c.name(i));
        c.terminate(i);
        c.start_from(i, &new_bin);
        assert_eq!(
            running_binary(&c, i),
            new_bin,
            "{} runs the old binary",
            c.name(i)
        );
        wait_caught_up(&c, i);
        fresh_data(&format!("changes at the master after upgrading the {role}"));
    }

    // Every change the device made until now reaches the master, with its time tag.
    let upto = last_change(&sim);
    assert!(upto > 40, "the device made only {upto} changes");
    c.wait_until(&format!("the master has the first {upto} changes"), || {
        let lost = missing(&sim, &m, upto)?;
        if lost.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} changes not at the master, first {:?}",
                lost.len(),
                lost.first()
            ))
        }
    });
    assert!(
        sim.events("dropped").is_empty(),
        "the device dropped changes for its queue bound\n{}",
        sim.report()
    );
    for i in 0..3 {
        assert_eq!(running_binary(&c, i), new_bin, "{}", c.name(i));
    }
    let started = sim.events("started").len();
    eprintln!("{upto} changes through the upgrade; the device saw {started} STARTDTs");
    assert!(
        started >= 2,
        "the RTU never changed owner\n{}",
        sim.report()
    );
}
