//! Losing the leader, or any one voter, and coming back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fepha_cluster_tests::field::metric;
use fepha_cluster_tests::{Cluster, Options, admin_client, rpc_status, site_config};

/// Two voters and a witness, led by a voter.
fn two_voters_and_a_witness() -> (Cluster, usize) {
    let mut c = Cluster::new();
    let mut leader = c.bootstrap(&["voter", "voter", "witness"]);
    let witness = 2;
    if leader == witness {
        // The tests below need a voter to lead: make the witness miss enough heartbeats.
        c.stop(witness);
        leader = c.wait_for_leader(&[0, 1]);
        c.cont(witness);
        assert_eq!(c.wait_for_leader(&[0, 1, 2]), leader);
    }
    (c, leader)
}

/// Kills voter `victim`; the two survivors must elect a leader, see the victim as
/// unreachable, and commit writes sent through either of them.
fn survives_losing(c: &Cluster, victim: usize) {
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    c.kill(victim);
    let leader = c.wait_for_leader(&survivors);
    assert_ne!(leader, victim);
    c.wait_until(
        &format!("the survivors see {} unreachable", c.name(victim)),
        || {
            for s in c.statuses(&survivors) {
                let s = s?;
                let m = s
                    .members
                    .iter()
                    .find(|m| m.name == c.name(victim))
                    .ok_or(format!(
                        "{} lost {} from the membership",
                        s.node,
                        c.name(victim)
                    ))?;
                if m.reachable {
                    return Err(format!("{} still sees {} reachable", s.node, m.name));
                }
            }
            Ok(())
        },
    );
    let mut last = None;
    for (n, &via) in survivors.iter().enumerate() {
        let text = site_config("two-plus-witness", n as u64);
        last = Some((c.apply_ok(via, &text), text));
    }
    let (applied, text) = last.expect("two writes");
    c.wait_until("both survivors show the last config", || {
        for &i in &survivors {
            let show = c.config_show(i)?;
            if show.version != applied.version || show.text != text {
                return Err(format!("{} shows version {}", c.name(i), show.version));
            }
        }
        Ok(())
    });
}

#[test]
fn witness_cluster_survives_sigkill_of_the_leading_voter() {
    let (c, leader) = two_voters_and_a_witness();
    survives_losing(&c, leader);
}

#[test]
fn witness_cluster_survives_sigkill_of_the_following_voter() {
    let (c, leader) = two_voters_and_a_witness();
    let follower = 1 - leader;
    survives_losing(&c, follower);
}

#[test]
fn killed_leader_is_replaced_and_catches_up_after_restart() {
    let mut c = Cluster::new();
    let old = c.bootstrap(&["voter", "voter", "voter"]);
    c.apply_ok(old, &site_config("before-kill", 1));
    let old_term = c.status(old).expect("leader status").term;

    c.kill(old);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = c.wait_for_leader(&survivors);
    let new_status = c.status(new).expect("new leader status");
    assert!(
        new_status.term > old_term,
        "{} after term {old_term}",
        new_status.summary()
    );
    let follower = survivors
        .iter()
        .copied()
        .find(|&i| i != new)
        .expect("two survivors");
    let applied = c.apply_ok(follower, &site_config("after-kill", 2));

    c.start(&[old]);
    let statuses = c.wait_converged(&[0, 1, 2]);
    for s in &statuses {
        assert_eq!(s.config_version, applied.version, "{}", s.summary());
        assert!(s.applied_index >= applied.log_index, "{}", s.summary());
    }
    let show = c
        .config_show(old)
        .expect("config show on the restarted node");
    assert_eq!(show.text, site_config("after-kill", 2));
    assert_eq!(show.sha256, applied.sha256);
}

/// What one poll of one node said.
#[derive(Debug, Clone)]
struct Seen {
    node: String,
    term: u64,
    state: String,
    at: Instant,
}

#[test]
fn stopped_leader_steps_down_and_no_term_ever_has_two_leaders() {
    let mut c = Cluster::new();
    let old = c.bootstrap(&["voter", "voter", "voter"]);
    let old_term = c.status(old).expect("leader status").term;

    // One poller per node, asking the node alone (no probing of the others) as fast as it
    // answers, for the whole episode.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let pollers: Vec<_> = (0..3)
        .map(|i| {
            let (addr, seen, done) = (c.admin_addr(i), seen.clone(), done.clone());
            let creds = c.credentials();
            c.runtime().spawn(async move {
                let mut client = None;
                while !done.load(Ordering::SeqCst) {
                    if client.is_none() {
                        client = admin_client(&creds, &addr).await.ok();
                    }
                    if let Some(cl) = client.as_mut() {
                        match rpc_status(cl, Duration::from_secs(1)).await {
                            Ok(s) => seen.lock().expect("seen").push(Seen {
                                node: s.node,
                                term: s.term,
                                state: s.state,
                                at: Instant::now(),
                            }),
                            Err(_) => client = None,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    c.wait_until(
        "every poller has seen its node, and the leader lead",
        || {
            let seen = seen.lock().expect("seen");
            for i in 0..3 {
                if !seen.iter().any(|s| s.node == c.name(i)) {
                    return Err(format!("no poll answered by {} yet", c.name(i)));
                }
            }
            match seen
                .iter()
                .any(|s| s.node == c.name(old) && s.state == "leader")
            {
                true => Ok(()),
                false => Err("no poll saw the leader lead yet".into()),
            }
        },
    );

    c.stop(old);
    let stopped_at = Instant::now();
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = c.wait_for_leader(&others);
    assert_ne!(new, old);
    // Several election timeouts (max 300 ms) in all, whatever the election took.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(stopped_at.elapsed()));
    c.cont(old);
    let continued_at = Instant::now();

    c.wait_until(
        &format!(
            "{} steps down and follows a leader of a later term",
            c.name(old)
        ),
        || {
            let statuses: Vec<_> = c
                .statuses(&[0, 1, 2])
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
            let leader = statuses[0].leader.clone().ok_or("no leader")?;
            for s in &statuses {
                if s.leader.as_deref() != Some(leader.as_str()) || s.term <= old_term {
                    return Err(s.summary());
                }
            }
            let o = &statuses[old];
            if o.state == "follower" {
                Ok(())
            } else {
                Err(format!("the old leader says {}", o.summary()))
            }
        },
    );

    done.store(true, Ordering::SeqCst);
    c.block_on(async {
        for p in pollers {
            p.await.expect("poller task");
        }
    });
    let seen = seen.lock().expect("seen").clone();
    let mut leaders: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for s in seen.iter().filter(|s| s.state == "leader") {
        leaders.entry(s.term).or_default().insert(s.node.clone());
    }
    for (term, nodes) in &leaders {
        assert!(nodes.len() <= 1, "term {term} had two leaders: {nodes:?}");
    }
    // The check above means something only if the pollers saw both leaderships.
    assert!(
        leaders
            .get(&old_term)
            .is_some_and(|n| n.contains(c.name(old))),
        "no poll saw {} lead term {old_term}: {leaders:?}",
        c.name(old)
    );
    assert!(
        leaders.range(old_term + 1..).next().is_some(),
        "no poll saw a leader after term {old_term}: {leaders:?}"
    );
    // ...and if polling went on throughout: the others while the leader was stopped, the
    // old leader after it was continued.
    for &i in &others {
        let during = |s: &&Seen| s.node == c.name(i) && s.at > stopped_at && s.at < continued_at;
        assert!(
            seen.iter().filter(during).count() >= 5,
            "{} was hardly polled while the leader was stopped",
            c.name(i)
        );
    }
    assert!(
        seen.iter()
            .any(|s| s.node == c.name(old) && s.at > continued_at),
        "{} was never polled after SIGCONT",
        c.name(old)
    );
}

/// A crashed leader's port refuses connections at once: exactly one survivor, the one with
/// the longer log (or the lower id), campaigns as soon as the other's lease of the old leader
/// has run out, instead of both waiting out openraft's election timers. The timers here are
/// long enough to tell the two apart: the survivors' own timers would fire no earlier than
/// 3.5 s after the last heartbeat, the campaign comes about 2 s after it.
#[test]
fn a_crashed_leader_is_replaced_by_one_campaign_without_waiting_for_the_timers() {
    let mut c = Cluster::with(Options {
        raft: "heartbeat_ms = 50\nelection_timeout_min_ms = 1500\nelection_timeout_max_ms = 2000"
            .into(),
        ..Options::default()
    });
    let old = c.bootstrap(&["voter", "voter", "voter"]);
    c.apply_ok(old, &site_config("before-crash", 1));
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    c.wait_converged(&[0, 1, 2]);
    let old_term = c.status(old).expect("leader status").term;
    let campaigns = |i: usize| metric(&c, i, "fepha_raft_campaigns_leader_gone_total");
    let before: Vec<_> = survivors.iter().map(|&i| campaigns(i)).collect();

    let killed = Instant::now();
    c.kill(old);
    let new = c.wait_for_leader(&survivors);
    let took = killed.elapsed();
    let term = c.status(new).expect("new leader status").term;
    assert_eq!(term, old_term + 1, "one election, no split vote");
    let after: Vec<_> = survivors.iter().map(|&i| campaigns(i)).collect();
    let campaigned: Vec<usize> = survivors
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| a.unwrap_or(0.0) > b.unwrap_or(0.0))
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        campaigned,
        [new],
        "only the new leader campaigned for the dead one's place (after {took:?})"
    );
}
