//! Disaster recovery: a site that lost every box comes back from a snapshot file saved on a
//! follower, and a two-box site whose peer and witness are gone carries on with its survivor
//! alone; what must not come back (old leases, old members, their certificates) does not.

use std::path::Path;
use std::time::Duration;

use fepha_cluster_tests::field::{
    PointView, SimDevice, device_addr, metric, one_rtu_site, owner, points, wait_points,
};
use fepha_cluster_tests::{CliOutput, Cluster, labelled_metric, site_config};
use serde_json::Value;

/// The registers `one_rtu_site` reads, fixed: alarm on, breaker closed (10), 230.5 as an f32
/// at holding 10, 70000 as a u32 at input 20.
const PROFILE: &str = r#"
unit_ids = [1]
seed = 3
[coils]
count = 8
[discrete_inputs]
count = 8
values = [true, false, true, false]
[input_registers]
count = 32
values = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 4464]
[holding_registers]
count = 40
values = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17254, 32768]
"#;

const VALUES: [(&str, f64); 4] = [
    ("d.alarm", 1.0),
    ("d.breaker", 2.0),
    ("d.power", 230.5),
    ("d.energy", 70000.0),
];

fn audit(c: &Cluster, i: usize) -> Result<Vec<Value>, String> {
    let out = c.cli(i, &["audit", "--json"]);
    if !out.success() {
        return Err(format!("audit: {}", out.stderr.trim()));
    }
    serde_json::from_str(&out.stdout).map_err(|e| format!("audit --json: {e}: {}", out.stdout))
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v["removed"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    n.sort();
    n
}

/// `fepha --identity DIR ARGS...`, as an operator off the box.
fn operator(c: &Cluster, dir: &Path, args: &[&str]) -> CliOutput {
    let mut all = vec!["--identity", dir.to_str().expect("a UTF-8 path")];
    all.extend_from_slice(args);
    c.run_bare(&all, Duration::from_secs(20))
}

#[test]
fn a_site_that_lost_every_box_comes_back_from_a_follower_snapshot() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let sim = SimDevice::start(&c, device_addr(&c, 0, 5020), PROFILE);
    c.apply_ok(leader, &one_rtu_site(sim.addr, 150, "probe"));
    c.apply_ok(leader, &one_rtu_site(sim.addr, 100, "probe"));
    wait_points(&c, &[0, 1, 2], &VALUES);
    let alice = c.dir().join("alice");
    let alice_arg = alice.to_string_lossy().into_owned();
    c.cli_ok(
        leader,
        &["cert", "issue-operator", "alice", "--out", &alice_arg],
    );
    let old_owner = c.wait_until("RTU d has an owner", || owner(&c, leader));
    let follower = (leader + 1) % 3;
    c.wait_converged(&[0, 1, 2]);
    let config = c.config_show(follower).unwrap_or_else(|e| c.fail(&e));
    let history = c.config_history(follower).unwrap_or_else(|e| c.fail(&e));
    let image = points(&c, follower).unwrap_or_else(|e| c.fail(&e));
    assert_eq!(config.version, 2);

    let file = c.dir().join("site.snap");
    let file_arg = file.to_string_lossy().into_owned();
    let out = c.cli_ok(follower, &["snapshot", "save", &file_arg]);
    assert!(
        out.contains("log index") && out.contains("config v2"),
        "{out}"
    );
    // A path that cannot be written is a clear error, and leaves nothing behind.
    let bad = c.cli(follower, &["snapshot", "save", "/nonexistent-dir/x.snap"]);
    assert!(
        !bad.success() && bad.stderr.contains("cannot write /nonexistent-dir/x.snap"),
        "{bad:?}"
    );

    // Every box is lost.
    c.kill_at_once(&[0, 1, 2]);
    for i in 0..3 {
        std::fs::remove_dir_all(&c.node(i).data_dir).expect("wipe a data dir");
    }

    // A fresh box, never started, restores the file and starts alone.
    let fresh = c.add_node("voter");
    let out = c.cli_ok(fresh, &["snapshot", "restore", &file_arg]);
    assert!(out.contains("config v2"), "{out}");
    c.start(&[fresh]);
    c.wait_for_leader(&[fresh]);
    c.wait_for_members(&[fresh], &[fresh]);

    let restored = c.config_show(fresh).unwrap_or_else(|e| c.fail(&e));
    assert_eq!(
        (restored.version, &restored.sha256, &restored.text),
        (config.version, &config.sha256, &config.text)
    );
    assert_eq!(
        c.config_history(fresh).unwrap_or_else(|e| c.fail(&e)),
        history
    );
    // The image is the saved one: the values the old owner read, under its epoch.
    let have = points(&c, fresh).unwrap_or_else(|e| c.fail(&e));
    for (id, _) in VALUES {
        let (was, now): (&PointView, _) = (&image[id], have.get(id));
        assert_eq!(
            now.map(|p| (p.number, &p.source)),
            Some((was.number, &was.source))
        );
    }

    // Trust: the operator still is, the old nodes are not.
    let certs = c.cert_list(fresh).unwrap_or_else(|e| c.fail(&e));
    let mut trusted: Vec<(&str, &str)> = certs
        .trusted
        .iter()
        .map(|e| (e.name.as_str(), e.role.as_str()))
        .collect();
    trusted.sort();
    assert_eq!(trusted, [("alice", "operator"), ("fep4", "node")]);
    let fingerprint = c.fingerprint(fresh);
    let admin = c.admin_addr(fresh);
    let out = operator(
        &c,
        &alice,
        &[
            "cert",
            "pin-node",
            "fep4",
            &fingerprint,
            "--node-admin",
            &admin,
        ],
    );
    assert!(out.success(), "{out:?}");
    let out = operator(&c, &alice, &["--admin", &admin, "status", "--json"]);
    assert!(out.success() && out.stdout.contains("\"fep4\""), "{out:?}");

    // The RTU is granted again, under an epoch above every old one.
    let view = c.wait_until("RTU d has a new owner", || {
        let v = owner(&c, fresh)?;
        (v.owner == "fep4")
            .then_some(v.clone())
            .ok_or(format!("{v:?}"))
    });
    assert!(view.epoch > old_owner.epoch, "{view:?} after {old_owner:?}");
    assert!(image.values().all(|p| p.epoch < view.epoch), "{image:?}");
    wait_points(&c, &[fresh], &VALUES);

    // Other fresh boxes join with tokens as usual, and see the same state and record.
    let second = c.add_node("voter");
    c.start(&[second]);
    c.join(second, fresh);
    c.wait_for_members(&[fresh, second], &[fresh, second]);
    c.wait_converged(&[fresh, second]);
    let joined = c.config_show(second).unwrap_or_else(|e| c.fail(&e));
    assert_eq!(joined.sha256, config.sha256);
    let records = c.wait_until("both list the restore", || {
        let (a, b) = (audit(&c, fresh)?, audit(&c, second)?);
        (a == b && a.len() == 1)
            .then_some(a)
            .ok_or("not yet".to_owned())
    });
    assert_eq!(records[0]["kind"], "restore");
    assert_eq!(names(&records[0]), ["fep1", "fep2", "fep3"]);
    assert_eq!(records[0]["node"], "fep4");
}

#[test]
fn a_damaged_file_or_an_initialised_node_is_refused_and_nothing_changes() {
    let mut c = Cluster::new();
    let node = c.bootstrap(&["voter"]);
    c.apply_ok(node, &site_config("restore refusals", 1));
    let file = c.dir().join("good.snap");
    let file_arg = file.to_string_lossy().into_owned();
    c.cli_ok(node, &["snapshot", "save", &file_arg]);
    let good = std::fs::read(&file).expect("the saved file");

    let fresh = c.add_node("voter");
    let write = |name: &str, bytes: &[u8]| {
        let path = c.dir().join(name);
        std::fs::write(&path, bytes).expect("write a test file");
        path.to_string_lossy().into_owned()
    };
    let truncated = write("truncated.snap", &good[..good.len() - 10]);
    let mut flipped = good.clone();
    let last = flipped.len() - 5;
    flipped[last] ^= 1;
    let flipped = write("flipped.snap", &flipped);
    let text = String::from_utf8_lossy(&good).replacen("\"format\":1", "\"format\":2", 1);
    let newer = write("newer.snap", text.as_bytes());
    let garbage = write("garbage.snap", b"PK\x03\x04 not a snapshot");
    for (path, why) in [
        (&truncated, "truncated"),
        (&flipped, "SHA-256 does not match"),
        (&newer, "format version 2"),
        (&garbage, "not a fepha snapshot"),
    ] {
        let out = c.cli(fresh, &["snapshot", "restore", path]);
        assert!(
            !out.success() && out.stderr.contains(why),
            "{path}: {out:?}"
        );
        assert!(
            !c.node(fresh).data_dir.exists(),
            "a refused restore made {}",
            c.node(fresh).data_dir.display()
        );
    }

    // The initialised node, running and then stopped.
    let before = c.status(node).unwrap_or_else(|e| c.fail(&e));
    let out = c.cli(node, &["snapshot", "restore", &file_arg]);
    assert!(
        !out.success() && out.stderr.contains("stop the node"),
        "{out:?}"
    );
    c.terminate(node);
    let out = c.cli(node, &["snapshot", "restore", &file_arg]);
    assert!(
        !out.success() && out.stderr.contains("already holds a cluster's state"),
        "{out:?}"
    );
    c.start(&[node]);
    c.wait_for_leader(&[node]);
    let after = c.status(node).unwrap_or_else(|e| c.fail(&e));
    assert_eq!(
        (after.config_version, after.membership(), after.node_id),
        (before.config_version, before.membership(), before.node_id)
    );
    assert!(audit(&c, node).unwrap_or_else(|e| c.fail(&e)).is_empty());
}

#[test]
fn a_survivor_forced_to_a_single_node_leads_alone_and_the_removed_peer_cannot_disturb() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "witness"]);
    let (a, b, w) = (0, 1, 2);
    c.apply_ok(a, &site_config("two boxes", 1));
    c.wait_converged(&[a, b, w]);

    // The witness dies, then the survivor's node is stopped for the recovery; the peer is
    // still up, so it is refused.
    c.kill(w);
    c.terminate(a);
    let yes = [
        "recover",
        "--force-single-node",
        "--yes-the-others-are-down",
    ];
    let out = c.cli(a, &yes);
    assert!(
        !out.success() && out.stderr.contains("fep2") && out.stderr.contains("still answer"),
        "{out:?}"
    );
    c.kill(b);
    let out = c.cli(a, &["recover", "--force-single-node"]);
    assert!(
        !out.success()
            && out.stderr.contains("without confirmation")
            && out.stderr.contains("fep2")
            && out.stderr.contains("fep3"),
        "{out:?}"
    );
    let out = c.cli_ok(a, &yes);
    assert!(out.contains("only member"), "{out}");

    c.start(&[a]);
    c.wait_for_leader(&[a]);
    c.wait_for_members(&[a], &[a]);
    let applied = c.apply_ok(a, &site_config("two boxes", 2));
    assert_eq!(applied.version, 2);
    let records = audit(&c, a).unwrap_or_else(|e| c.fail(&e));
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record["kind"], "force-single-node");
    assert_eq!(record["node"], "fep1");
    assert_eq!(names(record), ["fep2", "fep3"]);
    assert!(record["last_index_before"].as_u64() > Some(0), "{record}");
    assert!(record["by"].as_str().is_some_and(|s| s.contains('@')));

    // A fresh box joins the survivor with a token and sees the same record.
    let fresh = c.add_node("voter");
    c.start(&[fresh]);
    c.join(fresh, a);
    c.wait_for_members(&[a, fresh], &[a, fresh]);
    c.wait_until("the new member lists the recovery", || {
        let seen = audit(&c, fresh)?;
        (seen == records).then_some(()).ok_or(format!("{seen:?}"))
    });

    // The old peer comes back with its old data: it campaigns, and is refused at the
    // handshake, so the recovered cluster's leader and term stay as they are.
    let term = c.status(a).unwrap_or_else(|e| c.fail(&e)).term;
    let refused = |c: &Cluster| {
        let text = c.metrics(a).unwrap_or_default();
        labelled_metric(&text, "fepha_tls_refused_total", &[("side", "server")]).unwrap_or(0.0)
    };
    let before = refused(&c);
    c.start(&[b]);
    c.wait_until("the survivor refuses the old peer several times", || {
        let now = refused(&c);
        (now >= before + 3.0)
            .then_some(())
            .ok_or(format!("{now} refusals, {before} before"))
    });
    for i in [a, fresh] {
        let s = c.status(i).unwrap_or_else(|e| c.fail(&e));
        assert_eq!(
            (s.leader.as_deref(), s.term, s.member_names()),
            (
                Some("fep1"),
                term,
                vec!["fep1".to_owned(), "fep4".to_owned()]
            ),
            "{}",
            s.summary()
        );
    }
    let old = c.status(b).unwrap_or_else(|e| c.fail(&e));
    assert_ne!(old.state, "leader", "{}", old.summary());
    assert_eq!(c.apply_ok(a, &site_config("two boxes", 3)).version, 3);
    assert!(metric(&c, a, "fepha_tls_refused_total").is_some());
}
