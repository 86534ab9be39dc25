//! RTU ownership: every RTU of the site gets an owner among the voters; when the owner dies its
//! RTUs move at once under a new epoch; a recovered node takes nothing back; a witness never
//! owns anything. (Field I/O under these leases comes with acquisition.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fepha_cluster_tests::Cluster;
use fepha_cluster_tests::field::rtus;

/// Three RTUs whose endpoints nobody polls yet.
const SITE: &str = r#"
[site]
name = "lease test"

[[rtu]]
id = "r1"
protocol = "modbus"
  [[rtu.channel]]
  name = "lan"
  endpoints = ["127.0.0.1:1"]

[[rtu]]
id = "r2"
protocol = "modbus"
  [[rtu.channel]]
  name = "lan"
  endpoints = ["127.0.0.1:1"]

[[rtu]]
id = "r3"
protocol = "modbus"
  [[rtu.channel]]
  name = "lan"
  endpoints = ["127.0.0.1:1"]
"#;

/// RTU id → (owner name, epoch), as node `i` reports the leader's view.
fn owners(c: &Cluster, i: usize) -> Result<BTreeMap<String, (String, u64)>, String> {
    Ok(rtus(c, i)?
        .into_iter()
        .map(|(rtu, v)| (rtu, (v.owner, v.epoch)))
        .collect())
}

fn all_owned_by(
    c: &Cluster,
    i: usize,
    allowed: &[&str],
) -> Result<BTreeMap<String, (String, u64)>, String> {
    let o = owners(c, i)?;
    if o.len() == 3
        && o.values()
            .all(|(owner, _)| allowed.contains(&owner.as_str()))
    {
        Ok(o)
    } else {
        Err(format!("owners now: {o:?}"))
    }
}

#[test]
fn the_dead_owners_rtus_move_at_once_and_never_go_back() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    c.apply_ok(0, SITE);
    let names: Vec<String> = (0..3).map(|i| c.name(i).to_string()).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let before = c.wait_until("every RTU has an owner", || all_owned_by(&c, 0, &all));
    assert!(before.values().all(|(_, epoch)| *epoch == 1), "{before:?}");

    let (victim_name, _) = before["r1"].clone();
    let victim = (0..3)
        .find(|&i| c.name(i) == victim_name)
        .expect("the owner is a node");
    let survivors: Vec<&str> = all.iter().copied().filter(|n| *n != victim_name).collect();
    let observer = (victim + 1) % 3;
    c.kill(victim);
    let killed_at = Instant::now();
    let after = c.wait_until("the dead owner's RTUs move", || {
        all_owned_by(&c, observer, &survivors)
    });
    eprintln!("RTUs moved {:?} after the SIGKILL", killed_at.elapsed());
    for (rtu, (owner, epoch)) in &before {
        let moved = owner == &victim_name;
        let expected = if moved { epoch + 1 } else { *epoch };
        assert_eq!(after[rtu].1, expected, "{rtu}: {before:?} -> {after:?}");
    }

    // The old owner comes back and catches up; for three TTLs nothing moves back to it.
    c.start(&[victim]);
    c.wait_converged(&[0, 1, 2]);
    let window = Instant::now() + Duration::from_secs(3);
    while Instant::now() < window {
        let now = owners(&c, victim).unwrap_or_else(|e| c.fail(&e));
        assert_eq!(
            now, after,
            "ownership changed after {victim_name} came back"
        );
    }
}

#[test]
fn a_witness_never_owns_an_rtu() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "witness"]);
    c.apply_ok(0, SITE);
    let voters = [c.name(0).to_string(), c.name(1).to_string()];
    let voters: Vec<&str> = voters.iter().map(String::as_str).collect();
    let before = c.wait_until("every RTU has a voter as owner", || {
        all_owned_by(&c, 2, &voters)
    });
    let (owner, _) = before["r1"].clone();
    let (dead, alive) = if owner == voters[0] { (0, 1) } else { (1, 0) };
    c.kill(dead);
    c.wait_until(
        "the other voter owns everything, the witness nothing",
        || all_owned_by(&c, 2, &[voters[alive]]),
    );
}
