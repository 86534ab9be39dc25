//! The scale group: a generated site of 500 RTUs × 200 points (100 000 points, with
//! descriptions, every point mapped by a 104 forwarder) on three nodes, polled against
//! `fepha sim modbus` devices: how long it takes to apply, the nodes' memory, a general
//! interrogation of the whole image, the snapshot's size and its installation on a fresh
//! node, and a node's restart (see the figures in `main.rs`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fepha_cluster_tests::field::{SimDevice, device_addr, metric};
use fepha_cluster_tests::sitegen::{self, ForwarderSpec, SiteSpec};
use fepha_cluster_tests::{Cluster, Options, Profile, percentile};
use nix::sys::signal::Signal;

use crate::Args;

const ALL: [usize; 3] = [0, 1, 2];
/// 10 devices × 50 unit ids × 200 points.
const DEVICES: u8 = 10;
const UNITS: u8 = 50;
const POINTS: u16 = 200;
/// The devices' registers do not change: this is the memory of a site at rest, polled.
const POLL_MS: u64 = 1000;
const GIS: usize = 3;
/// Generous: every step here moves tens of megabytes on a shared two-core box.
const LONG_WAIT: Duration = Duration::from_secs(300);

pub fn run(args: &Args) {
    // Snapshots early enough that a node joining after the apply is sent one.
    let mut c = Cluster::with(Options {
        profile: Profile::Release,
        raft: "snapshot_after_entries = 500\nkeep_entries_after_snapshot = 50".into(),
        ..Options::default()
    });
    eprintln!(
        "fepha-bench scale: {} in {}",
        c.binary().display(),
        c.dir().display()
    );
    crate::remove_on_signal(c.dir());
    c.bootstrap(&["voter", "voter", "voter"]);

    let profile = device_profile();
    let sims: Vec<SimDevice> = (1..=DEVICES)
        .map(|k| SimDevice::start(&c, device_addr(&c, k, 5020), &profile))
        .collect();
    let spec = SiteSpec {
        name: "bench: 500 RTUs x 200 points".into(),
        devices: sims.iter().map(|s| s.addr).collect(),
        units: UNITS,
        points: POINTS,
        poll_interval_ms: POLL_MS,
        descriptions: true,
        forwarder: Some(ForwarderSpec {
            port: crate::iec104::PORT,
            common_address: crate::iec104::CA,
            window: None,
        }),
    };
    let text = sitegen::site(&spec);
    eprintln!(
        "fepha-bench: the 100 000-point site is {} bytes ({:.1} MiB)",
        text.len(),
        text.len() as f64 / f64::from(1 << 20)
    );

    // Apply: from the CLI's call until it returns committed, then until every node has
    // applied it.
    let leader = c.wait_for_leader(&ALL);
    let t = Instant::now();
    let applied = match c.apply(leader, &text, "600s") {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fepha-bench: the 100 000-point site was not applied: {e}");
            println!("site_apply_ms_100000_points: failed");
            return;
        }
    };
    println!(
        "site_apply_ms_100000_points: {} ms",
        t.elapsed().as_millis()
    );
    let version = applied.version;
    fepha_cluster_tests::wait_until(
        LONG_WAIT,
        "every node applies the 100 000-point site",
        || {
            let v: Vec<u64> = c
                .statuses(&ALL)
                .into_iter()
                .map(|s| s.map_or(0, |s| s.config_version))
                .collect();
            v.iter()
                .all(|&n| n >= version)
                .then_some(())
                .ok_or(format!("config versions {v:?}, want {version}"))
        },
        || c.report(),
    );
    eprintln!(
        "fepha-bench: every node applied it {} ms after the CLI was started",
        t.elapsed().as_millis()
    );

    // Polled: every device answers all its unit ids every second (two reads per RTU).
    let t = Instant::now();
    fepha_cluster_tests::wait_until(
        LONG_WAIT,
        "every RTU is polled",
        || {
            let since = now_ms().saturating_sub(2000);
            let per_device: Vec<usize> = sims
                .iter()
                .map(|s| s.requests().iter().filter(|r| r.time_ms >= since).count())
                .collect();
            let want = 2 * 2 * usize::from(UNITS) * 9 / 10;
            per_device
                .iter()
                .all(|&n| n >= want)
                .then_some(())
                .ok_or(format!(
                    "requests per device in 2 s {per_device:?}, want {want}"
                ))
        },
        || c.report(),
    );
    eprintln!(
        "fepha-bench: every RTU polled {} ms after every node applied",
        t.elapsed().as_millis()
    );

    let pids: Vec<u32> = ALL
        .iter()
        .map(|&i| c.node(i).pid().expect("the node runs"))
        .collect();
    let mut rss = [0u64; 3];
    for _ in 0..args.seconds.max(5) {
        std::thread::sleep(Duration::from_secs(1));
        for (k, &p) in pids.iter().enumerate() {
            rss[k] = rss[k].max(crate::acquisition::vm_rss_kib(p));
        }
    }
    eprintln!("fepha-bench: VmRSS per node (KiB) {rss:?}");
    for (k, &p) in pids.iter().enumerate() {
        eprintln!("fepha-bench: {}: {}", c.name(k), memory_map(p));
    }
    println!(
        "node_rss_mib_100000_points: {:.1} MiB",
        rss.iter().copied().max().unwrap_or(0) as f64 / 1024.0
    );

    let gis = crate::iec104::interrogations(&c, GIS);
    for (k, (ms, objects)) in gis.iter().enumerate() {
        eprintln!("fepha-bench: GI {k}: {ms:.1} ms, {objects} information objects");
        if *objects != spec.point_count() {
            eprintln!(
                "fepha-bench: WARNING: GI {k} gave {objects} information objects, not {}",
                spec.point_count()
            );
        }
    }
    let us: Vec<u64> = gis.iter().map(|(ms, _)| (ms * 1000.0) as u64).collect();
    println!(
        "gi_ms_100000_points: {:.1} ms",
        percentile(&us, 50.0) as f64 / 1000.0
    );

    restart(&c, version);
    snapshot_install(&mut c, version);
    drop(sims);
}

/// The snapshot the leader holds once it has taken one after the apply, and a fresh node
/// that joins and is sent it: from the `join` until it has applied the site.
fn snapshot_install(c: &mut Cluster, version: u64) {
    let leader = c.wait_for_leader(&ALL);
    let apply_index = c.status(leader).map_or(0, |s| s.applied_index);
    let bytes = fepha_cluster_tests::wait_until(
        LONG_WAIT,
        "the leader takes a snapshot after the apply and purges its log",
        || {
            let s = c.status(leader)?;
            if s.snapshot_index < apply_index || s.purged_index == 0 {
                return Err(format!(
                    "snapshot at {}, purged to {}, applied {apply_index}",
                    s.snapshot_index, s.purged_index
                ));
            }
            metric(c, leader, "fepha_raft_snapshot_size_bytes")
                .filter(|b| *b > 0.0)
                .ok_or("no snapshot size yet".to_owned())
        },
        || c.report(),
    );
    println!("snapshot_bytes_100000_points: {bytes:.0} bytes");

    let fresh = c.add_node("voter");
    c.start(&[fresh]);
    let t = Instant::now();
    c.join(fresh, leader);
    fepha_cluster_tests::wait_until(
        LONG_WAIT,
        "the fresh node applies the site",
        || {
            let s = c.status(fresh)?;
            (s.config_version >= version && s.snapshot_index > 0)
                .then_some(())
                .ok_or(format!(
                    "config v{} (want {version}), snapshot at {}, applied {}",
                    s.config_version, s.snapshot_index, s.applied_index
                ))
        },
        || c.report(),
    );
    println!(
        "snapshot_install_ms_100000_points: {} ms",
        t.elapsed().as_millis()
    );
}

/// SIGKILL of a node that is not the leader and its restart: from the start until it
/// answers `status` and has applied what the leader had applied at the kill.
fn restart(c: &Cluster, version: u64) {
    let leader = c.wait_for_leader(&ALL);
    let victim = (leader + 1) % 3;
    c.node(victim).signal(Signal::SIGKILL);
    c.kill(victim);
    let target = c.status(leader).map_or(0, |s| s.applied_index);
    let t = Instant::now();
    c.spawn(&[victim]);
    let mut answered = None;
    fepha_cluster_tests::wait_until(
        LONG_WAIT,
        "the restarted node serves",
        || {
            let s = c.status(victim)?;
            answered.get_or_insert_with(|| t.elapsed());
            (s.applied_index >= target && s.config_version >= version)
                .then_some(())
                .ok_or(format!(
                    "applied {} of {target}, config v{}",
                    s.applied_index, s.config_version
                ))
        },
        || c.report(),
    );
    let took = t.elapsed();
    eprintln!(
        "fepha-bench: the restarted node answered status after {} ms, had applied {target} after {} ms",
        answered.map_or(0, |a| a.as_millis()),
        took.as_millis()
    );
    println!(
        "restart_to_serving_ms_100000_points: {} ms",
        took.as_millis()
    );
}

/// [`UNITS`] unit ids of [`POINTS`] holding registers each, unchanging.
fn device_profile() -> String {
    let units: Vec<String> = (1..=UNITS).map(|u| u.to_string()).collect();
    format!(
        "unit_ids = [{}]\nseed = 1\n[holding_registers]\ncount = {POINTS}\n",
        units.join(", ")
    )
}

/// Where a process's resident memory is, from /proc/PID/smaps: the brk heap, anonymous
/// mappings (glibc's thread arenas and large allocations), files, and the largest anonymous
/// ones; in MiB.
pub fn memory_map(pid: u32) -> String {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return "no smaps".into();
    };
    let (mut heap, mut anon, mut file, mut other) = (0u64, 0u64, 0u64, 0u64);
    let mut anons: Vec<(u64, u64)> = Vec::new();
    let mut name = String::new();
    let mut size = 0u64;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: "start-end perms offset dev inode [name]".
            name = fields.nth(4).unwrap_or("").to_owned();
            let mut range = first.split('-');
            let start = range.next().and_then(|a| u64::from_str_radix(a, 16).ok());
            let end = range.next().and_then(|a| u64::from_str_radix(a, 16).ok());
            size = end.zip(start).map_or(0, |(e, s)| (e - s) >> 10);
        } else if first == "Rss:" {
            let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            match name.as_str() {
                "[heap]" => heap += kib,
                "" => {
                    anon += kib;
                    anons.push((kib, size));
                }
                n if n.starts_with('/') => file += kib,
                _ => other += kib,
            }
        }
    }
    anons.sort_unstable_by(|a, b| b.cmp(a));
    let largest: Vec<String> = anons
        .iter()
        .take(6)
        .map(|(rss, size)| format!("{}/{}", rss >> 10, size >> 10))
        .collect();
    format!(
        "heap {} MiB, anonymous {} MiB in {} mappings (largest rss/size {}), files {} MiB, other {} MiB",
        heap >> 10,
        anon >> 10,
        anons.len(),
        largest.join(" "),
        file >> 10,
        other >> 10
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
