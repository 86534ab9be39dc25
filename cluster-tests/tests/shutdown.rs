//! A node stopped with SIGTERM stops its parts in order: an RTU task that has a command on
//! the device finishes it, and writes its outcome to the log, before the node exits.

use std::time::{Duration, Instant};

use fepha_cluster_tests::Cluster;
use fepha_cluster_tests::field::{SimDevice, device_addr, one_rtu_site, owner_not_leader};
use nix::sys::signal::Signal;

/// A device that takes 600 ms to confirm a write (the site's RTU timeout is 1000 ms).
const SLOW_BREAKER: &str = r#"
unit_ids = [1]
write_delay_ms = 600
[coils]
count = 16
[discrete_inputs]
count = 16
[input_registers]
count = 32
[holding_registers]
count = 40
"#;

#[test]
fn a_stopping_owner_finishes_the_command_it_has_started() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    let sim = SimDevice::start(&c, device_addr(&c, 0, 5020), SLOW_BREAKER);
    c.apply_ok(0, &one_rtu_site(sim.addr, 100, "probe"));
    let (owner, _) = owner_not_leader(&c);
    let leader = c.wait_for_leader(&[0, 1, 2]);
    let owner_ip = c.ip(owner);

    let (out, signalled) = c.block_on(async {
        let write = c.cli_async(
            leader,
            &["point", "write", "d.trip", "on"],
            Duration::from_secs(20),
        );
        // SIGTERM once the write is on the device and not yet confirmed.
        let stop = async {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let on_device = sim
                    .requests()
                    .iter()
                    .any(|r| r.ip == owner_ip && r.function == "write_single_coil");
                if on_device {
                    c.node(owner).signal(Signal::SIGTERM);
                    return true;
                }
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::join!(write, stop)
    });
    assert!(signalled, "the owner never wrote the command to the device");
    // The node must exit cleanly (and in time) all the same.
    c.terminate(owner);
    assert!(
        out.success() && out.stdout.contains("done"),
        "the command was cut off by the owner's stop: {out:?}"
    );
}
