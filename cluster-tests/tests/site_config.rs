//! The site configuration: checked whole before anything is proposed, every problem named with
//! its key path and line, and a refused file changes nothing on any node.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

use fepha_cluster_tests::Cluster;

const EXAMPLE: &str = include_str!("../../examples/site.toml");

/// The example's field endpoints (10.x addresses) and the loopback address each one becomes.
/// Nodes probe and poll the endpoints of an applied configuration, and tests must never send
/// anything off this machine; on 127.0.0.1 ports 1, 2, ... nothing listens, so every attempt
/// is refused at once, as with an RTU that is down.
fn endpoints() -> Vec<(String, String)> {
    let mut map: Vec<(String, String)> = Vec::new();
    for quoted in EXAMPLE.split('"').skip(1).step_by(2) {
        let Ok(addr) = quoted.parse::<SocketAddrV4>() else {
            continue;
        };
        if addr.ip().is_loopback() || map.iter().any(|(from, _)| from == quoted) {
            continue;
        }
        let port = u16::try_from(map.len() + 1).expect("fewer than 65535 endpoints");
        map.push((quoted.to_owned(), format!("127.0.0.1:{port}")));
    }
    map
}

/// The example with every field endpoint on loopback, and the masters of its redundancy
/// groups (bare addresses) too.
fn example() -> String {
    let mut text = EXAMPLE.to_owned();
    for (from, to) in endpoints() {
        text = text.replace(&format!("\"{from}\""), &format!("\"{to}\""));
    }
    let masters: Vec<Ipv4Addr> = EXAMPLE
        .split('"')
        .skip(1)
        .step_by(2)
        .filter_map(|quoted| quoted.parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback())
        .collect();
    for (i, ip) in masters.iter().enumerate() {
        let to = Ipv4Addr::new(127, 0, 1, u8::try_from(i + 1).expect("a few masters"));
        text = text.replace(&format!("\"{ip}\""), &format!("\"{to}\""));
    }
    assert_loopback_only(&text);
    text
}

/// The loopback address that replaces the example's endpoint `field`.
fn loopback_for(field: &str) -> String {
    endpoints()
        .into_iter()
        .find_map(|(from, to)| (from == field).then_some(to))
        .unwrap_or_else(|| panic!("the example has no endpoint {field}"))
}

/// Every IPv4 address anywhere in `text`, comments included, is on loopback.
fn assert_loopback_only(text: &str) {
    let outside: Vec<Ipv4Addr> = text
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|token| token.parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback())
        .collect();
    assert!(
        outside.is_empty(),
        "a test configuration names addresses off this machine: {outside:?}"
    );
}

fn with(from: &str, to: &str) -> String {
    let example = example();
    assert!(example.contains(from), "the example has no {from:?}");
    let text = example.replacen(from, to, 1);
    assert_loopback_only(&text);
    text
}

#[test]
fn the_loopback_example_names_only_closed_loopback_ports() {
    let map = endpoints();
    assert!(!map.is_empty(), "found no field endpoints in the example");
    for (_, to) in &map {
        let addr: SocketAddr = to.parse().expect("a loopback endpoint is host:port");
        // A listener there would get the nodes' probes and polls instead of a refusal.
        let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
        assert!(
            refused.is_err(),
            "something listens on {addr}, which the loopback site configuration uses as a dead RTU"
        );
    }
    assert_loopback_only(&example());
}

#[test]
fn broken_configurations_are_refused_with_the_named_error_and_change_nothing() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    let example = example();
    let applied = c.apply_ok(0, &example);
    assert_eq!(applied.version, 1);

    // The second gateway of the transformer's first channel, without its port.
    let gateway = loopback_for("10.10.1.22:502");
    let gateway_host = gateway.rsplit_once(':').expect("host:port").0.to_owned();
    let gateway_error =
        format!("rtu[2].channel[0].endpoints[1]: \"{gateway_host}\" is not host:port");
    let cases = [
        (
            with("id = \"feeder-b\"", "id = \"feeder-a\""),
            "rtu[1].id: duplicate RTU id",
        ),
        (
            with("rtu = \"feeder-b\"", "rtu = \"feeder-z\""),
            "point[6].rtu: no RTU is called",
        ),
        (
            with(&format!("\"{gateway}\""), &format!("\"{gateway_host}\"")),
            &*gateway_error,
        ),
        (
            with("address = 2\n", "address = 2\ndeadband = 1.0\n"),
            "point[1].deadband: a deadband is for measured values",
        ),
        (
            with("ioa = 1002", "ioa = 1001"),
            "forwarder[0].map[1].ioa: duplicate IOA",
        ),
        (with("unit_id = 2", "unit_id = \"two\""), "invalid type"),
        (
            with("standby = \"hot\"", "standby = \"hot\"\ncolour = 1"),
            "colour",
        ),
    ];
    for (i, (text, named)) in cases.iter().enumerate() {
        let err = c
            .apply(i % 3, text, "5s")
            .expect_err("a broken configuration must be refused");
        assert!(err.contains(named), "expected {named:?} in:\n{err}");
        assert!(err.contains("line "), "no line number in:\n{err}");
    }
    for s in c.wait_converged(&[0, 1, 2]) {
        assert_eq!(
            s.config_version,
            1,
            "a refused file changed something: {}",
            s.summary()
        );
    }

    // A dry run and a diff say what would change, and change nothing either.
    let file = c.dir().join("slower-transformer.toml");
    std::fs::write(
        &file,
        with("poll_interval_ms = 1000", "poll_interval_ms = 2000"),
    )
    .expect("write");
    let file = file.to_string_lossy().into_owned();
    let dry = c.cli_ok(1, &["config", "apply", "--dry-run", &file]);
    assert!(
        dry.contains("valid") && dry.contains("~ rtu transformer"),
        "{dry}"
    );
    let diff = c.cli_ok(2, &["config", "diff", &file]);
    assert_eq!(diff.trim(), "~ rtu transformer");
    for s in c.wait_converged(&[0, 1, 2]) {
        assert_eq!(
            s.config_version,
            1,
            "a dry run changed something: {}",
            s.summary()
        );
    }
    let out = c.cli_ok(0, &["config", "apply", &file]);
    assert!(
        out.contains("version 2") && out.contains("~ rtu transformer"),
        "{out}"
    );
}
