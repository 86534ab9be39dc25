//! The site configuration: checked whole before anything is proposed, every problem named with
//! its key path and line, and a refused file changes nothing on any node.

use fepha_cluster_tests::Cluster;

const EXAMPLE: &str = include_str!("../../examples/site.toml");

fn with(from: &str, to: &str) -> String {
    assert!(EXAMPLE.contains(from), "the example has no {from:?}");
    EXAMPLE.replacen(from, to, 1)
}

#[test]
fn broken_configurations_are_refused_with_the_named_error_and_change_nothing() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    let applied = c.apply_ok(0, EXAMPLE);
    assert_eq!(applied.version, 1);

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
            with("\"10.10.1.22:502\"", "\"10.10.1.22\""),
            "rtu[2].channel[0].endpoints[1]: \"10.10.1.22\" is not host:port",
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
