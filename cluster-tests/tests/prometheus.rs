//! The control room's view, tested with a real Prometheus: it scrapes a three-node cluster
//! that runs the demo's site (a simulated Modbus device, a simulated 104 station and a c104
//! master on every node), every node's output passes `promtool check metrics`, every metric
//! family and every query of every dashboard panel returns data, and the alerts fire when
//! their condition is made real (a node killed, then two) and resolve when it is undone.

use std::net::SocketAddr;
use std::time::Duration;

use fepha_cluster_tests::Cluster;
use fepha_cluster_tests::field::{SimDevice, device_addr};
use fepha_cluster_tests::master::{Init, LinkState, Master};
use fepha_cluster_tests::prometheus::{Prometheus, project_file, promtool_check_metrics};
use fepha_cluster_tests::sim104::Sim104;

const WAIT: Duration = Duration::from_secs(30);
/// An alert's `for` plus a few evaluations.
const ALERT_WAIT: Duration = Duration::from_secs(60);

fn read(rel: &str) -> String {
    std::fs::read_to_string(project_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `expr` of every panel of the dashboard.
fn dashboard_queries() -> Vec<(String, String)> {
    let d: serde_json::Value =
        serde_json::from_str(&read("grafana/dashboards/fepha.json")).expect("dashboard JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            out.push((title, t["expr"].as_str().expect("an expr").to_owned()));
        }
    }
    out
}

fn wait_firing(c: &Cluster, prom: &Prometheus, alerts: &[&str], firing: bool) {
    let what = format!(
        "{alerts:?} {}",
        if firing { "fire" } else { "no longer fire" }
    );
    fepha_cluster_tests::wait_until(
        ALERT_WAIT,
        &what,
        || {
            let now = prom.firing().map_err(|e| e.to_string())?;
            let done = alerts.iter().all(|a| now.iter().any(|f| f == a) == firing);
            done.then_some(()).ok_or(format!("firing: {now:?}"))
        },
        || format!("{}\nprometheus:\n{}", c.report(), prom.log_tail()),
    );
}

#[test]
fn prometheus_scrapes_every_family_every_panel_and_alerts_fire_and_resolve() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    let modbus_addr = device_addr(&c, 0, 5020);
    let _modbus = SimDevice::start(&c, modbus_addr, &read("examples/sim-profile.toml"));
    let station = Sim104::start_for(
        &c,
        device_addr(&c, 1, 5021),
        &read("examples/sim-iec104-profile.toml"),
    );
    let site = read("examples/demo-site.toml")
        .replace("127.0.0.1:5020", &modbus_addr.to_string())
        .replace("127.0.0.1:5021", &station.addr().to_string());
    c.apply_ok(0, &site);
    let conns: Vec<(SocketAddr, Init)> = (0..3)
        .map(|i| (SocketAddr::new(c.ip(i), 2404), Init::All))
        .collect();
    let points = [
        (1001, "M_DP_TB_1"),
        (2001, "M_ME_TF_1"),
        (1101, "M_SP_TB_1"),
        (1102, "M_DP_TB_1"),
        (2101, "M_ME_TF_1"),
        (2102, "M_ST_TB_1"),
    ];
    let master = Master::start(&conns, 1, &points).expect("c104 master");
    let leader = c.wait_for_leader(&[0, 1, 2]);
    master
        .wait_state(leader, LinkState::Open, WAIT)
        .unwrap_or_else(|e| c.fail(&format!("the master's link to the leader: {e:#}")));
    // A command at the device, so that its outcome is counted.
    // The RTU may not have an owner yet just after the site was applied: retry until it runs.
    c.wait_until("a command reaches the Modbus device", || {
        let out = c.cli(leader, &["point", "write", "sim.breaker-cmd", "on"]);
        out.success()
            .then_some(())
            .ok_or(format!("{}{}", out.stdout, out.stderr))
    });

    let targets: Vec<SocketAddr> = (0..3).map(|i| c.node(i).metrics_addr).collect();
    let prom = Prometheus::start(
        &c.dir().join("prometheus"),
        SocketAddr::new(c.ip(0), 19090),
        &targets,
    )
    .unwrap_or_else(|e| c.fail(&format!("{e:#}")));
    let query = |expr: &str| prom.query(expr).map_err(|e| format!("{e:#}"));
    c.wait_until("Prometheus scrapes all three nodes", || {
        let up = query("sum(up{job=\"fepha\"})")?;
        let n = up
            .first()
            .and_then(|r| r["value"][1].as_str())
            .unwrap_or("0")
            .to_owned();
        (n == "3").then_some(()).ok_or(format!("up: {n}"))
    });

    for i in 0..3 {
        let text = c.metrics(i).unwrap_or_else(|e| c.fail(&e));
        if let Err(e) = promtool_check_metrics(&text) {
            c.fail(&format!("{}'s metrics: {e:#}", c.name(i)));
        }
    }

    // Every family a node declares, and the standard process metrics, hold data.
    let mut families: Vec<String> = fepha::metrics::FAMILIES
        .iter()
        .map(|(name, kind, _)| match kind {
            fepha::metrics::Kind::Histogram => format!("{name}_count"),
            _ => (*name).to_owned(),
        })
        .collect();
    families.extend(
        [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_start_time_seconds",
        ]
        .map(String::from),
    );
    for family in &families {
        c.wait_until(&format!("Prometheus holds {family}"), || {
            let r = query(family)?;
            (!r.is_empty()).then_some(()).ok_or("no series".into())
        });
    }
    for (panel, expr) in dashboard_queries() {
        c.wait_until(&format!("panel {panel:?} shows data ({expr})"), || {
            let r = query(&expr)?;
            (!r.is_empty()).then_some(()).ok_or("no data".into())
        });
    }

    // Healthy: the cluster alerts are silent once the rules have run.
    c.wait_until("the rules have been evaluated", || {
        prom.rules_evaluated()
            .map_err(|e| e.to_string())?
            .then_some(())
            .ok_or("not yet".into())
    });
    let quiet = [
        "FephaMemberDown",
        "FephaNoLeader",
        "FephaInsufficientMembers",
        "FephaNoFaultToleranceLeft",
        "FephaRtuWithoutOwner",
        "FephaRtuAllLinksDown",
        "FephaEventsDropped",
        "FephaVersionSkew",
    ];
    let firing = prom.firing().unwrap_or_else(|e| c.fail(&format!("{e:#}")));
    for a in quiet {
        assert!(
            !firing.iter().any(|f| f == a),
            "{a} fires on a healthy cluster: {firing:?}"
        );
    }

    // One node down: a member is down and one more failure would stop the cluster.
    let one = (leader + 1) % 3;
    c.kill(one);
    wait_firing(
        &c,
        &prom,
        &["FephaMemberDown", "FephaNoFaultToleranceLeft"],
        true,
    );
    c.start(&[one]);
    wait_firing(
        &c,
        &prom,
        &["FephaMemberDown", "FephaNoFaultToleranceLeft"],
        false,
    );

    // Two nodes down: the last one has no leader and no quorum.
    let two = [(leader + 1) % 3, (leader + 2) % 3];
    c.kill_at_once(&two);
    wait_firing(
        &c,
        &prom,
        &["FephaNoLeader", "FephaInsufficientMembers"],
        true,
    );
    c.start(&two);
    c.wait_for_leader(&[0, 1, 2]);
    wait_firing(
        &c,
        &prom,
        &[
            "FephaNoLeader",
            "FephaInsufficientMembers",
            "FephaMemberDown",
        ],
        false,
    );
}

/// The alerting rules load, and their unit tests (prometheus/alerts_test.yml) pass.
#[test]
fn the_alerting_rules_check_and_their_unit_tests_pass() {
    let dir = project_file("prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (scripts/test installs Debian's prometheus package)");
        assert!(
            out.status.success(),
            "promtool {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
