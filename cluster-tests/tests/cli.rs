//! The CLI's answers when things are wrong.

use std::time::Duration;

use fepha_cluster_tests::{Cluster, site_config};

/// `fepha run` with node.toml changed by `edit` must refuse to start and name `key`.
fn run_refuses(c: &Cluster, case: &str, edit: impl Fn(&str) -> String, key: &str) {
    let good = std::fs::read_to_string(&c.node(0).config_path).expect("node.toml");
    let bad = edit(&good);
    assert_ne!(bad, good, "{case}: the edit changed nothing");
    let path = c.dir().join(format!("{case}.toml"));
    std::fs::write(&path, &bad).expect("write bad node.toml");
    let out = c.run_bare(
        &["run", "-c", path.to_str().expect("utf-8 path")],
        Duration::from_secs(15),
    );
    assert!(
        out.code.is_some_and(|code| code != 0),
        "{case}: `fepha run` should exit non-zero on\n{bad}\ngot exit {:?}, stderr: {}",
        out.code,
        out.stderr
    );
    assert!(
        out.stderr.starts_with("error:") && out.stderr.contains(key),
        "{case}: stderr should start with `error:` and name `{key}`: {}",
        out.stderr
    );
}

#[test]
fn run_refuses_a_bad_node_toml_and_names_the_key() {
    let mut c = Cluster::new();
    c.add_node("voter");
    run_refuses(
        &c,
        "unknown-key",
        |t| format!("{t}colour = \"red\"\n"),
        "colour",
    );
    run_refuses(
        &c,
        "unknown-raft-key",
        |t| format!("{t}[raft]\nheartbeat = 50\n"),
        "heartbeat",
    );
    let drop_line = |key: &'static str| {
        move |t: &str| {
            t.lines()
                .filter(|l| !l.starts_with(key))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        }
    };
    run_refuses(
        &c,
        "missing-admin-addr",
        drop_line("admin_addr"),
        "admin_addr",
    );
    run_refuses(&c, "missing-name", drop_line("name"), "name");
    let replace = |key: &'static str, value: &'static str| {
        move |t: &str| {
            t.lines()
                .map(|l| match l.starts_with(key) {
                    true => format!("{key} = \"{value}\"\n"),
                    false => format!("{l}\n"),
                })
                .collect::<String>()
        }
    };
    run_refuses(
        &c,
        "raft-addr-no-port",
        replace("raft_addr", "127.0.0.1"),
        "raft_addr",
    );
    run_refuses(
        &c,
        "admin-addr-hostname",
        replace("admin_addr", "localhost:7102"),
        "admin_addr",
    );
    run_refuses(
        &c,
        "metrics-addr-unspecified",
        replace("metrics_addr", "0.0.0.0:9101"),
        "metrics_addr",
    );
}

#[test]
fn status_of_a_node_that_is_not_running_says_cannot_reach() {
    let mut c = Cluster::new();
    let i = c.add_node("voter");
    for args in [&["status"][..], &["status", "--json"], &["config", "show"]] {
        let out = c.cli(i, args);
        assert!(
            out.code.is_some_and(|code| code != 0),
            "`fepha {}` against a stopped node: exit {:?}",
            args.join(" "),
            out.code
        );
        assert!(
            out.stderr.contains("cannot reach"),
            "`fepha {}` should say it cannot reach the node: {}",
            args.join(" "),
            out.stderr
        );
    }
}

/// Kills the two nodes other than `survivor`; a write through it must fail, saying why.
fn write_without_quorum_says_no_leader(c: &Cluster, survivor: usize) {
    let before = c.status(survivor).expect("survivor status").config_version;
    c.kill_at_once(&(0..3).filter(|&i| i != survivor).collect::<Vec<_>>());
    let result = c.apply(survivor, &site_config("no-quorum", 1), "2s");
    let err = match result {
        Ok(a) => c.fail(&format!("a write without quorum was acknowledged: {a:?}")),
        Err(e) => e,
    };
    if !err.contains("the cluster has no leader") {
        c.fail(&format!(
            "`config apply --timeout 2s` through {} should say the cluster has no leader: {err}",
            c.name(survivor)
        ));
    }
    let after = c.status(survivor).expect("survivor status").config_version;
    assert_eq!(after, before, "the survivor applied a write without quorum");
}

#[test]
fn write_on_a_lone_former_leader_says_the_cluster_has_no_leader() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    write_without_quorum_says_no_leader(&c, leader);
}

#[test]
fn write_on_a_lone_follower_says_the_cluster_has_no_leader() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    write_without_quorum_says_no_leader(&c, (leader + 1) % 3);
}
