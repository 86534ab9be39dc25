//! A leader cut off from the network. Each node runs in its own network namespace, linked
//! to a bridge by a veth pair; the test sets the leader's link down and up again.
//! This needs root (`ip netns add`); without it the test fails and says so.

use std::collections::BTreeSet;

use fepha_cluster_tests::{Cluster, Options, site_config};

#[test]
fn an_isolated_leader_steps_down_and_rejoins_without_divergence() {
    let mut c = Cluster::with(Options {
        namespaces: Some(3),
        ..Options::default()
    });
    let old = c.bootstrap(&["voter", "voter", "voter"]);
    let majority: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let mut acked = vec![c.apply_ok(old, &site_config("before-the-cut", 0))];
    let before = c.wait_converged(&[0, 1, 2])[old].clone();

    c.cut(old);
    let new = c.wait_for_leader(&majority);
    assert_ne!(new, old);
    // What the cut-off node had applied once the majority had moved on. Not the figure from
    // before the cut: the nodes write all the time (session renewals), and the old leader may
    // commit a last entry whose acknowledgements were on their way when the link went down.
    let cut_off = c.status(old).expect("status of the cut-off node");
    let new_term = c.status(new).expect("new leader status").term;
    assert!(
        new_term > before.term,
        "term {new_term} after {}",
        before.term
    );
    for n in 1..=3 {
        acked.push(c.apply_ok(majority[n % 2], &site_config("majority", n as u64)));
    }

    c.wait_until(
        &format!("the cut-off {} stops saying it leads", c.name(old)),
        || {
            let s = c.status(old)?;
            if s.is_leader() {
                Err(s.summary())
            } else {
                Ok(())
            }
        },
    );
    match c.apply(old, &site_config("through-the-cut-off-node", 99), "3s") {
        Ok(a) => c.fail(&format!("the cut-off node acknowledged a write: {a:?}")),
        Err(e) if e.contains("the cluster has no leader") => {}
        Err(e) => c.fail(&format!(
            "the cut-off node's write failed for another reason: {e}"
        )),
    }
    let s = c.status(old).expect("status of the cut-off node");
    assert_eq!(
        (s.applied_index, s.config_version),
        (cut_off.applied_index, before.config_version),
        "the cut-off node applied something: {}",
        s.summary()
    );

    c.heal(old);
    let statuses = c.wait_converged(&[0, 1, 2]);
    let last = acked.last().expect("acked writes");
    assert!(statuses.iter().all(|s| s.config_version == last.version));
    // Healing must not cost the majority its leader: the stepped-down node kept its term low
    // enough that the leader's heartbeats are simply accepted.
    for s in &statuses {
        assert_eq!(
            (s.leader.as_deref(), s.term),
            (Some(c.name(new)), new_term),
            "healing disturbed the cluster: {}",
            s.summary()
        );
    }

    // No divergent entry: the three histories are identical and hold exactly the writes that
    // were acknowledged, so nothing sent through the cut-off node got in.
    let histories: Vec<_> = (0..3)
        .map(|i| c.config_history(i).unwrap_or_else(|e| c.fail(&e)))
        .collect();
    for (i, h) in histories.iter().enumerate() {
        assert_eq!(h, &histories[0], "{} and {} differ", c.name(i), c.name(0));
    }
    let got: BTreeSet<(u64, String)> = histories[0]
        .iter()
        .map(|e| (e.version, e.sha256.clone()))
        .collect();
    let want: BTreeSet<(u64, String)> = acked
        .iter()
        .map(|a| (a.version, a.sha256.clone()))
        .collect();
    assert_eq!(got, want);
}
