//! A short fault campaign with fixed seeds: every fault the nemesis knows but the slow disk,
//! against the three-voter cluster and the witness variant, and every safety figure must be
//! 0. The long
//! campaign is the same binary with `--duration 30m` (docs/nemesis.md).
//! Needs root (network namespaces, tmpfs, tc) and Debian's `faketime`.

use std::collections::BTreeMap;
use std::process::Command;

/// Runs one campaign and checks the figures it prints (`name: value unit`).
fn run(seed: u64, variant: &str, duration: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_fepha-nemesis"))
        .args(["--seed", &seed.to_string(), "--duration", duration])
        .args(["--variant", variant, "--profile", "debug"])
        // Every fault but the slow disk, which needs loop devices and cgroup v1's blkio
        // throttle that not every machine has.
        .args(["--faults", "kill,pause,partition,clock,member,disk,netem"])
        .output()
        .expect("run fepha-nemesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let figures: BTreeMap<String, f64> = stdout
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(": ")?;
            Some((name.to_owned(), rest.split(' ').next()?.parse().ok()?))
        })
        .collect();
    for name in [
        "double_owner_windows_modbus",
        "double_owner_windows_104",
        "commands_executed_twice",
        "commands_executed_never_sent",
        "lost_changes_modbus",
        "lost_changes_104",
        "lost_config_versions",
        "panics",
        "unclean_exits",
    ] {
        assert_eq!(
            figures.get(name),
            Some(&0.0),
            "{name} (seed {seed}, {variant}):\n{stdout}\n--- stderr ---\n{stderr}"
        );
    }
    // Every safety figure is 0, and the campaign saw it through to its summary.
    assert!(
        out.status.success(),
        "the campaign (seed {seed}, {variant}) failed ({}):\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    // The campaign did something: faults, changes that were handed over, commands that ran.
    for name in [
        "faults_applied",
        "modbus_changes_handed_over",
        "iec104_changes_acknowledged",
        "commands_executed",
    ] {
        assert!(
            figures.get(name).is_some_and(|v| *v > 0.0),
            "{name} is not above 0 (seed {seed}, {variant}):\n{stdout}\n--- stderr ---\n{stderr}"
        );
    }
}

#[test]
fn a_short_campaign_of_every_fault_breaks_no_safety_property() {
    run(1, "voters3", "80s");
    run(2, "witness", "60s");
}
