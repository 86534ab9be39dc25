//! Forming a cluster and leaving it.

use fepha_cluster_tests::{Cluster, site_config};

#[test]
fn three_voters_bootstrap_and_agree_on_leader_and_members() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let all = [0, 1, 2];

    let statuses = c.wait_for_members(&all, &all);
    for s in &statuses {
        assert_eq!(s.leader.as_deref(), Some(c.name(leader)), "{}", s.summary());
        assert!(
            s.members.iter().all(|m| m.role == "voter"),
            "{}",
            s.summary()
        );
        let expected_state = if s.node == c.name(leader) {
            "leader"
        } else {
            "follower"
        };
        assert_eq!(s.state, expected_state, "{}", s.summary());
    }
    // Each node's view of who is reachable is its own; all three are up, so all see all.
    c.wait_until("every node sees every member reachable", || {
        for s in c.statuses(&all) {
            let s = s?;
            if let Some(m) = s.members.iter().find(|m| !m.reachable) {
                return Err(format!("{} sees {} unreachable", s.node, m.name));
            }
        }
        Ok(())
    });
    // The leader knows how far each member has replicated.
    let s = c.status(leader).expect("leader status");
    assert!(
        s.members.iter().all(|m| m.matched_index.is_some()),
        "the leader should know every member's matched index: {s:?}"
    );

    // The metrics agree with the status.
    c.wait_until("the metrics show exactly one leader", || {
        let mut leaders = Vec::new();
        for i in all {
            let text = c.metrics(i)?;
            let v = metric(&text, "fepha_raft_is_leader")
                .ok_or(format!("{} exports no fepha_raft_is_leader", c.name(i)))?;
            if v == 1.0 {
                leaders.push(i);
            }
        }
        if leaders == [leader] {
            Ok(())
        } else {
            Err(format!("fepha_raft_is_leader is 1 on {leaders:?}"))
        }
    });
}

#[test]
fn leave_shrinks_the_membership_and_the_rest_keep_committing() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (goes_first, stays) = (followers[0], followers[1]);

    // A follower leaves by itself.
    c.cli_ok(goes_first, &["leave"]);
    let rest = [leader, stays];
    c.wait_for_members(&rest, &rest);
    let a = c.apply_ok(stays, &site_config("after-local-leave", 1));
    c.wait_until("both remaining nodes apply the new config", || {
        for i in rest {
            let show = c.config_show(i)?;
            if show.version != a.version {
                return Err(format!("{} shows version {}", c.name(i), show.version));
            }
        }
        Ok(())
    });

    // The remaining follower removes the leader by name: the request is forwarded to the
    // leader, which commits its own removal and hands over to the one node left.
    let leader_name = c.name(leader).to_owned();
    c.cli_ok(stays, &["leave", "--node", &leader_name]);
    c.wait_for_members(&[stays], &[stays]);
    assert_eq!(c.wait_for_leader(&[stays]), stays);
    let b = c.apply_ok(stays, &site_config("after-leave-by-name", 2));
    assert!(b.version > a.version, "{b:?} after {a:?}");
    let show = c.config_show(stays).expect("config show");
    assert_eq!(show.version, b.version);
    assert_eq!(show.text, site_config("after-leave-by-name", 2));
}

#[test]
fn leave_is_refused_while_it_would_stall_the_cluster() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (down, leaving) = (followers[0], followers[1]);
    c.kill(down);

    // Leader and `leaving` are a majority of three; of the two left after the removal, only
    // the leader would answer, and joint consensus needs both.
    let leaving_name = c.name(leaving).to_owned();
    let out = c.cli(leader, &["leave", "--node", &leaving_name]);
    assert!(!out.success(), "the removal went ahead: {out:?}");
    assert!(
        out.stderr.contains(&format!(
            "removing {leaving_name} now would stall the cluster"
        )) && out.stderr.contains(&format!("down: {}", c.name(down))),
        "{out:?}"
    );
    // Refused before anything was written: the cluster still commits, with all three voters.
    c.apply_ok(leaving, &site_config("refused-leave", 1));
    let s = c.status(leader).expect("status");
    assert_eq!(
        s.members.iter().filter(|m| m.voter).count(),
        3,
        "{}",
        s.summary()
    );

    // With the down voter back, the same removal goes through.
    c.start(&[down]);
    let all = [0, 1, 2];
    c.wait_for_members(&all, &all);
    c.wait_until("the down voter answers again", || {
        let s = c.status(leader)?;
        match s.members.iter().find(|m| m.name == c.name(down)) {
            Some(m) if m.reachable => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    c.cli_ok(leader, &["leave", "--node", &leaving_name]);
    let rest = [leader, down];
    c.wait_for_members(&rest, &rest);
}

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}
