//! IEC 104 acquisition under faults, with a device that resends what no master acknowledged
//! (`fepha sim iec104`, one redundancy group): the owner is SIGKILLed during a burst of
//! changes and every change still reaches the upstream master, counted on the wire; an owner
//! SIGSTOPped past its lease says nothing to the device once it wakes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use fepha_cluster_tests::Cluster;
use fepha_cluster_tests::field::{device_addr, owner_not_leader, rtus};
use fepha_cluster_tests::master::{Asdu, Init, LinkState, Master};
use fepha_cluster_tests::sim104::Sim104;
use fepha_cluster_tests::toggling::{CA, POINTS, PORT, device_changes, profile, site};
use fepha_cluster_tests::wait_until;

const WAIT: Duration = Duration::from_secs(30);

/// The RTU's owner as the leader among `alive` sees it.
fn owner_index(c: &Cluster, alive: &[usize]) -> Result<usize, String> {
    let view = rtus(c, c.wait_for_leader(alive))?;
    let owner = view.get("d").map(|v| v.owner.clone()).unwrap_or_default();
    c.index_of(&owner)
        .ok_or(format!("RTU d has no owner: {view:?}"))
}

#[test]
fn killing_the_owner_during_a_burst_loses_no_change_and_the_device_never_has_two_started_links() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    // 4 points, one change every 10 ms in all, for about 2.4 s after a 3 s pause.
    let count = 60;
    let sim = Sim104::start_for(&c, device_addr(&c, 0, 0), &profile(40, count, 3000));
    c.apply_ok(0, &site("104 failover", sim.addr()));
    let (owner, _) = owner_not_leader(&c);
    let points: Vec<(u32, &str)> = (0..POINTS).map(|i| (1100 + i, "M_SP_TB_1")).collect();
    let conns: Vec<(SocketAddr, Init)> = (0..3)
        .map(|i| (SocketAddr::new(c.ip(i), PORT), Init::All))
        .collect();
    let m = Master::start(&conns, CA, &points).expect("c104 master");
    let leader = c.wait_for_leader(&[0, 1, 2]);
    if let Err(e) = m.wait_state(leader, LinkState::Open, WAIT) {
        c.fail(&format!("the master's link to the leader: {e:#}"));
    }
    // Kill the owner in the middle of the burst: once the device has made a third of it.
    let total = u64::from(POINTS) * count;
    sim.wait_until(WAIT, "a third of the burst", |lines| {
        let n = lines.iter().filter(|l| l.event == "change").count() as u64;
        (n >= total / 3)
            .then_some(())
            .ok_or(format!("{n} changes so far"))
    });
    c.kill(owner);
    let alive: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let new_owner = c.wait_until("another node owns the RTU", || {
        let now = owner_index(&c, &alive)?;
        (now != owner)
            .then_some(now)
            .ok_or_else(|| "still the old owner".to_string())
    });
    assert_ne!(new_owner, owner);
    // Every change the device made reaches the master, with the device's time tag.
    let arrived = |m: &Master| -> BTreeSet<(u64, i64)> {
        m.received()
            .iter()
            .filter(|r| r.cot == Asdu::SPONTANEOUS)
            .filter_map(|r| Some((u64::from(r.ioa - 1000), r.time_ms?)))
            .collect()
    };
    let missing = |m: &Master| -> Vec<(u64, u64, i64)> {
        let have = arrived(m);
        device_changes(&sim)
            .into_iter()
            .filter(|(_, (ioa, t))| !have.contains(&(*ioa, *t)))
            .map(|(n, (ioa, t))| (n, ioa, t))
            .collect()
    };
    // A failure here needs all three sides: the nodes, what the device sent and had
    // acknowledged on which connection, and what the master got.
    let report = || format!("{}\n{}\n{}", c.report(), sim.report(), m.report());
    let waited = wait_until(
        WAIT,
        "every change of the burst at the master",
        || {
            let made = device_changes(&sim).len() as u64;
            if made < total {
                return Err(format!("the device has made {made} of {total} changes"));
            }
            let lost = missing(&m);
            if lost.is_empty() {
                Ok(made)
            } else {
                Err(format!(
                    "{} changes not at the master, first {:?}",
                    lost.len(),
                    lost.first()
                ))
            }
        },
        report,
    );
    assert_eq!(waited, total);
    // And each once: what the device sent again to the new owner (committed by the old one,
    // not yet acknowledged) is known from the log and not an event twice. The leader's
    // forwarder did not move, so nothing is resent upstream either.
    let received = m.received();
    let spontaneous: Vec<_> = received
        .iter()
        .filter(|r| r.cot == Asdu::SPONTANEOUS)
        .collect();
    if spontaneous.len() as u64 != total {
        let mut times: std::collections::BTreeMap<(u32, Option<i64>), Vec<u64>> =
            Default::default();
        for r in &spontaneous {
            times.entry((r.ioa, r.time_ms)).or_default().push(r.seq);
        }
        let twice: Vec<_> = times.iter().filter(|(_, seqs)| seqs.len() > 1).collect();
        panic!(
            "{} spontaneous updates at the master for {total} changes; twice ((ioa, time): \
             master log numbers): {twice:?}\n{}",
            spontaneous.len(),
            report()
        );
    }
    let resent: u64 = sim
        .events("started")
        .iter()
        .filter_map(|s| s.u64("resent"))
        .sum();
    eprintln!("the device resent {resent} changes to the new owner");
    // A new STARTDT never found another connection still started: the old owner's died with
    // its process, and the standbys never sent one.
    let started = sim.events("started");
    assert!(started.len() >= 2, "{}", sim.report());
    for s in &started {
        assert!(
            s.body.get("previous").is_none_or(|p| p.is_null()),
            "two started links at once: {s:?}\n{}",
            sim.report()
        );
    }
}

#[test]
fn an_owner_stopped_past_its_lease_sends_nothing_to_the_device_after_waking() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    let sim = Sim104::start_for(&c, device_addr(&c, 0, 0), &profile(200, 100, 500));
    c.apply_ok(0, &site("104 failover", sim.addr()));
    let (owner, _) = owner_not_leader(&c);
    let first = sim.wait_line(WAIT, "the owner's STARTDT", |l| l.event == "started");
    let old_conn = first.conn.expect("a started line names its connection");
    c.stop(owner);
    let alive: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let new_owner = c.wait_until("another node owns the RTU", || {
        let now = owner_index(&c, &alive)?;
        (now != owner)
            .then_some(now)
            .ok_or_else(|| "still the old owner".to_string())
    });
    let taken = sim.wait_line(WAIT, "the new owner's STARTDT", |l| {
        l.event == "started" && l.conn != Some(old_conn)
    });
    // Give the stopped owner's lease time to be long gone, then wake it.
    c.cont(owner);
    let woken_at = sim.lines().len();
    // It learns it lost the RTU and closes its connection without another frame.
    sim.wait_line(WAIT, "the woken owner's connection closed", |l| {
        l.event == "closed" && l.conn == Some(old_conn)
    });
    let after: Vec<_> = sim
        .lines()
        .into_iter()
        .skip(woken_at)
        .filter(|l| l.conn == Some(old_conn) && l.event != "closed")
        .collect();
    assert!(
        after.is_empty(),
        "the woken owner ({}) still talked to the device: {after:?}",
        c.name(owner)
    );
    assert_ne!(new_owner, owner);
    assert!(taken.index > first.index);
}
