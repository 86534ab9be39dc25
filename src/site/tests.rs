use super::validate::Issue;
use super::*;

const EXAMPLE: &str = include_str!("../../examples/site.toml");
const DEMO: &str = include_str!("../../examples/demo-site.toml");

fn issues(text: &str) -> Vec<Issue> {
    parse(text).expect_err("must be refused")
}

/// The example with `from` replaced by `to` (which must occur).
fn example_with(from: &str, to: &str) -> String {
    assert!(EXAMPLE.contains(from), "the example has no {from:?}");
    EXAMPLE.replacen(from, to, 1)
}

fn has(issues: &[Issue], path: &str, words: &str) -> bool {
    issues
        .iter()
        .any(|i| i.path == path && i.message.contains(words) && i.line.is_some())
}

#[test]
fn the_examples_are_valid() {
    let site = parse(EXAMPLE).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(site.rtus.len(), 4);
    assert_eq!(site.points.len(), 22);
    assert_eq!(site.forwarders[0].maps.len(), 23);
    parse(DEMO).unwrap_or_else(|e| panic!("{e:?}"));
}

#[test]
fn each_kind_of_error_is_named_with_its_key_path_and_line() {
    let cases = [
        (
            example_with("id = \"feeder-b\"", "id = \"feeder-a\""),
            "rtu[1].id",
            "duplicate RTU id",
        ),
        (
            example_with("id = \"feeder-b.current\"", "id = \"feeder-a.current\""),
            "point[7].id",
            "duplicate point id",
        ),
        (
            example_with("ioa = 1002", "ioa = 1001"),
            "forwarder[0].map[1].ioa",
            "duplicate IOA",
        ),
        (
            example_with("rtu = \"feeder-b\"", "rtu = \"feeder-z\""),
            "point[6].rtu",
            "no RTU is called",
        ),
        (
            example_with("\"10.10.1.22:502\"", "\"10.10.1.22\""),
            "rtu[2].channel[0].endpoints[1]",
            "is not host:port",
        ),
        (
            example_with("address = 2\n", "address = 2\ndeadband = 1.0\n"),
            "point[1].deadband",
            "a deadband is for measured values",
        ),
        (
            example_with(
                "point = \"feeder-a.energy\"",
                "point = \"feeder-a.nothing\"",
            ),
            "forwarder[0].map[9].point",
            "no point is called",
        ),
        (
            example_with("table = \"coil\"", "table = \"holding\""),
            "point[5].table",
            "cannot live",
        ),
        (
            example_with("ioa = 5022", "ioa = 16777216"),
            "forwarder[0].map[13].ioa",
            "outside",
        ),
        (
            example_with("common_address = 47", "common_address = 0"),
            "forwarder[0].common_address",
            "reserved",
        ),
        (
            example_with("session_ttl_ms = 1000", "session_ttl_ms = 50"),
            "timers.session_ttl_ms",
            "outside",
        ),
        (
            example_with("batch_max_changes = 1000", "batch_max_changes = 10001"),
            "timers.batch_max_changes",
            "outside 1..=10000",
        ),
    ];
    for (text, path, words) in cases {
        let found = issues(&text);
        assert!(
            has(&found, path, words),
            "expected {path}: {words}; got {found:?}"
        );
    }
}

#[test]
fn the_line_is_the_offending_line() {
    let text = example_with("ioa = 1002", "ioa = 1001");
    let found = issues(&text);
    let line = found[0].line.expect("a line");
    let offending = text.lines().nth(line - 1).expect("the line exists");
    assert!(
        offending.contains("ioa = 1001"),
        "line {line}: {offending:?}"
    );
}

#[test]
fn every_problem_is_listed_not_only_the_first() {
    let text =
        example_with("ioa = 1002", "ioa = 1001").replacen("rtu = \"feeder-b\"", "rtu = \"x\"", 1);
    assert_eq!(issues(&text).len(), 2);
}

#[test]
fn syntax_errors_and_unknown_keys_are_reported_with_a_line() {
    let found = issues(&example_with("unit_id = 2", "unit_id = \"two\""));
    assert!(
        found[0].line.is_some() && found[0].message.contains("invalid type"),
        "{found:?}"
    );
    let found = issues(&example_with(
        "standby = \"hot\"",
        "standby = \"hot\"\ncolour = 1",
    ));
    assert!(found[0].message.contains("colour"), "{found:?}");
    let found = issues("[site\nname = 1");
    assert!(found[0].line.is_some(), "{found:?}");
}

#[test]
fn diff_names_what_changed() {
    let old = parse(EXAMPLE).expect("valid");
    let new = parse(
        &example_with("poll_interval_ms = 1000", "poll_interval_ms = 2000")
            .replacen(
                "[[point]]\nid = \"transformer.fan-cmd\"",
                "[[point]]\nid = \"transformer.fan\"",
                1,
            )
            .replacen(
                "point = \"transformer.fan-cmd\"",
                "point = \"transformer.fan\"",
                1,
            ),
    )
    .expect("valid");
    let changes: Vec<String> = diff(&old, &new).iter().map(|c| c.to_string()).collect();
    assert_eq!(
        changes,
        [
            "~ rtu transformer",
            "+ point transformer.fan",
            "- point transformer.fan-cmd",
            "~ forwarder control-centre"
        ]
    );
    assert!(diff(&old, &old).is_empty());
}

#[test]
fn link_status_points_can_be_mapped_for_channels_and_endpoints_that_exist() {
    let map = |point: &str| {
        example_with(
            "point = \"feeder-a.energy\"",
            &format!("point = \"{point}\""),
        )
    };
    for ok in ["feeder-a.link", "feeder-a.link.fep1.station-lan.0"] {
        parse(&map(ok)).unwrap_or_else(|e| panic!("{ok}: {e:?}"));
    }
    for bad in [
        "feeder-a.link.fep1.nowhere.0",
        "feeder-a.link.fep1.station-lan.1",
        "feeder-a.link.fep1",
        "feeder-z.link",
    ] {
        let found = issues(&map(bad));
        assert!(
            has(&found, "forwarder[0].map[9].point", "no point is called"),
            "{bad}: {found:?}"
        );
    }
}

#[test]
fn a_bad_iec104_rtu_is_refused_with_the_key_path_and_line_of_each_problem() {
    let cases = [
        (
            example_with("type = \"M_ST_TB_1\"", "type = \"M_XX_TB_1\""),
            "point[18].type",
            "unknown type",
        ),
        (
            example_with("type = \"M_ST_TB_1\"", "type = \"M_SP_TB_1\""),
            "point[18].type",
            "carries a Single point",
        ),
        (
            example_with("  w = 8 ", "  w = 13 "),
            "rtu[3].iec104.w",
            "outside 1..=k",
        ),
        (
            example_with("  t2_s = 10 ", "  t2_s = 15 "),
            "rtu[3].iec104.t2_s",
            "shorter than t1",
        ),
        (
            // The time-tagged twin is the same point.
            example_with(
                "type = \"M_SP_TB_1\"\nioa = 102",
                "type = \"M_DP_NA_1\"\nioa = 101",
            ),
            "point[15].ioa",
            "duplicate 104 address \"M_DP_NA_1 IOA 101 at common address 5\"",
        ),
        (
            example_with(
                "standby = \"probe\"                # never hot",
                "standby = \"hot\" #",
            ),
            "rtu[3].standby",
            "hot standby is for Modbus RTUs",
        ),
        (
            example_with("  common_address = 5 ", "  common_address = 65535 "),
            "rtu[3].iec104.common_address",
            "reserved",
        ),
        (
            example_with("  gi_period_s = 900", "  gi_period_s = -1"),
            "rtu[3].iec104.gi_period_s",
            "is not 0 or a time",
        ),
        (
            example_with(
                "type = \"M_BO_NA_1\"\nioa = 204",
                "type = \"M_BO_NA_1\"\nioa = 204\ntable = \"coil\"",
            ),
            "point[19].table",
            "for points of Modbus RTUs",
        ),
        (
            example_with("type = \"M_IT_NA_1\"\nioa = 301", "type = \"M_IT_NA_1\""),
            "point[20]",
            "needs a type and an ioa",
        ),
        (
            example_with("protocol = \"iec104\"", "protocol = \"modbus\""),
            "rtu[3].iec104",
            "is for iec104 RTUs",
        ),
        (
            example_with(
                "id = \"feeder-a.breaker\"\nrtu = \"feeder-a\"",
                "id = \"feeder-a.breaker\"\nrtu = \"feeder-a\"\nioa = 4",
            ),
            "point[0].ioa",
            "for points of iec104 RTUs",
        ),
    ];
    for (text, path, words) in cases {
        let found = issues(&text);
        assert!(
            has(&found, path, words),
            "expected {path}: {words}; got {found:?}"
        );
    }
    let missing = example_with(
        "  [rtu.iec104]\n  common_address = 5 ",
        "  [rtu.nothing]\n  common_address = 5 ",
    );
    assert!(!issues(&missing).is_empty());
}
