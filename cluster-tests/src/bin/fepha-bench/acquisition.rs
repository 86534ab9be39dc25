//! The acquisition group: RTU take-over after its owner's SIGKILL, latency from a device's
//! register to every node, and point throughput and memory with 50 RTUs × 200 points (see the
//! figures in `main.rs`).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fepha::admin::client::Credentials;
use fepha::proto::admin::PointListRequest;
use fepha_cluster_tests::field::{SimDevice, device_addr, metric};
use fepha_cluster_tests::sitegen::{self, SiteSpec};
use fepha_cluster_tests::{Cluster, admin_client, percentile};
use nix::sys::signal::Signal;
use rand::Rng;
use tokio_modbus::client::{Writer, tcp};
use tokio_modbus::slave::Slave;

use crate::Args;
use crate::leases::Leases;

const ALL: [usize; 3] = [0, 1, 2];
/// The poll interval of every RTU here.
const POLL_MS: u64 = 100;
/// Samples of the device-to-cluster latency.
const LATENCY_SAMPLES: usize = 50;
/// The holding register of the take-over and latency RTU's one point.
const REGISTER: u16 = 10;
/// The throughput configuration: devices × unit ids each × points per RTU.
const DEVICES: u8 = 5;
const UNITS: u8 = 10;
const POINTS: u16 = 200;
/// How long the 50 × 200 configuration may take to be owned and polled everywhere.
const LONG_WAIT: Duration = Duration::from_secs(120);
/// How long a node that applies no point changes is given to catch up before the measurement.
const CATCH_UP: Duration = Duration::from_secs(20);
/// How long the throughput configuration runs before it is measured.
const SETTLE: Duration = Duration::from_secs(3);

pub fn run(args: &Args) {
    let c = crate::three_voters("acquisition", &args.raft);
    let b = Bench {
        creds: c.credentials(),
        leases: Leases::new(&c),
        c: &c,
    };
    let sim = SimDevice::start(&c, device_addr(&c, 0, 5020), ONE_RTU_PROFILE);
    c.apply_ok(0, &one_rtu_site(sim.addr));

    let rounds: Vec<Takeover> = (0..args.rounds)
        .map(|k| {
            let t = b.takeover_round(&sim, k % 2 == 1);
            eprintln!(
                "fepha-bench: take-over round {k}: {} ms ({}the leader's RTU)",
                t.ms,
                if t.owner_was_leader { "" } else { "not " }
            );
            t
        })
        .collect();
    let all: Vec<u64> = rounds.iter().map(|t| t.ms).collect();
    println!("rtu_takeover_ms_p50: {} ms", percentile(&all, 50.0));
    println!("rtu_takeover_ms_p99: {} ms", percentile(&all, 99.0));
    for (leader, suffix) in [(false, "owner_not_leader"), (true, "owner_leader")] {
        let some: Vec<u64> = rounds
            .iter()
            .filter(|t| t.owner_was_leader == leader)
            .map(|t| t.ms)
            .collect();
        if !some.is_empty() {
            eprintln!("fepha-bench: {} rounds with {suffix}", some.len());
            println!(
                "rtu_takeover_ms_p50_{suffix}: {} ms",
                percentile(&some, 50.0)
            );
        }
    }

    let pauses: Vec<u64> = (0..args.rounds.min(10))
        .map(|k| {
            let gap = b.poll_pause_round(&sim);
            eprintln!("fepha-bench: leader failover round {k}: the owner's longest pause {gap} ms");
            gap
        })
        .collect();
    println!(
        "owner_poll_pause_ms_across_leader_failover_max: {} ms (poll interval {POLL_MS} ms)",
        pauses.iter().max().copied().unwrap_or(0)
    );

    let latencies = b.device_to_cluster(sim.addr);
    for p in [50.0, 99.0] {
        println!(
            "device_to_cluster_latency_ms_p{p}: {:.1} ms",
            percentile(&latencies, p) as f64 / 1000.0
        );
    }

    b.throughput_and_memory(sim, args.seconds, crate::load_poll_ms(args.offer));
}

/// A device for one RTU: a few holding registers that change only when written.
const ONE_RTU_PROFILE: &str = r#"
unit_ids = [1]
seed = 1
[holding_registers]
count = 16
"#;

/// RTU `d` polled every [`POLL_MS`], with one measured point on [`REGISTER`].
fn one_rtu_site(endpoint: SocketAddr) -> String {
    format!(
        r#"
[site]
name = "bench: one RTU"

[[rtu]]
id = "d"
protocol = "modbus"
poll_interval_ms = {POLL_MS}
timeout_ms = 1000
standby = "probe"
  [[rtu.channel]]
  name = "lan"
  endpoints = ["{endpoint}"]

[[point]]
id = "d.v"
rtu = "d"
kind = "measured"
table = "holding"
address = {REGISTER}
format = "u16"
"#
    )
}

/// One RTU per unit id of every device, [`POINTS`] u16 measured points each, with
/// descriptions (the generated site of [`sitegen`]).
fn many_rtus_site(devices: &[SocketAddr], poll_ms: u64) -> String {
    sitegen::site(&SiteSpec {
        name: "bench: 50 RTUs x 200 points".into(),
        devices: devices.to_vec(),
        units: UNITS,
        points: POINTS,
        poll_interval_ms: poll_ms,
        descriptions: crate::descriptions(),
        forwarder: None,
    })
}

struct Takeover {
    ms: u64,
    owner_was_leader: bool,
}

struct Bench<'a> {
    c: &'a Cluster,
    creds: Credentials,
    leases: Leases<'a>,
}

impl Bench<'_> {
    /// One SIGKILL of RTU d's owner, first moved onto the leader (`on_leader`) or off it;
    /// the time from the kill to another node's first request in the device's log. Then
    /// restarts the node and waits until it has caught up.
    fn takeover_round(&self, sim: &SimDevice, on_leader: bool) -> Takeover {
        let c = self.c;
        let leader = c.wait_for_leader(&ALL);
        let owner = self.leases.placed("d", leader, on_leader);
        let owner_ip = c.ip(owner);
        c.wait_until(
            "only the owner polls, every node reaches the device",
            || {
                let lease = self.leases.owned(leader, "d")?;
                if lease.owner != c.name(owner) || lease.reachable_from.len() < 3 {
                    return Err(format!("{lease:?}"));
                }
                let since = now_ms().saturating_sub(3 * POLL_MS);
                let recent: Vec<IpAddr> = sim
                    .requests()
                    .into_iter()
                    .filter(|r| r.time_ms >= since)
                    .map(|r| r.ip)
                    .collect();
                (!recent.is_empty() && recent.iter().all(|ip| *ip == owner_ip))
                    .then_some(())
                    .ok_or(format!("recent requests from {recent:?}"))
            },
        );
        let owner_was_leader = c.wait_for_leader(&ALL) == owner;

        c.node(owner).signal(Signal::SIGKILL);
        let killed_ms = now_ms();
        c.kill(owner);
        let others: Vec<IpAddr> = ALL
            .into_iter()
            .filter(|&i| i != owner)
            .map(|i| c.ip(i))
            .collect();
        let first_ms = c.wait_until("another node polls the device", || {
            sim.requests()
                .into_iter()
                .find(|r| r.time_ms >= killed_ms && others.contains(&r.ip))
                .map(|r| r.time_ms)
                .ok_or("nobody else yet".to_owned())
        });
        c.start(&[owner]);
        c.wait_converged(&ALL);
        Takeover {
            ms: first_ms - killed_ms,
            owner_was_leader,
        }
    }

    /// One SIGKILL of the leader while RTU d's owner is another node: the longest gap between
    /// two of the owner's requests in the device's log, from a second before the kill until
    /// two seconds after the new leader. An owner that stays alive should poll on as if
    /// nothing happened. Then restarts the node and waits until it has caught up.
    fn poll_pause_round(&self, sim: &SimDevice) -> u64 {
        let c = self.c;
        let leader = c.wait_for_leader(&ALL);
        let owner = self.leases.placed("d", leader, false);
        let owner_ip = c.ip(owner);
        std::thread::sleep(Duration::from_secs(2));
        let killed_ms = now_ms();
        c.kill(leader);
        let survivors: Vec<usize> = ALL.into_iter().filter(|&i| i != leader).collect();
        c.wait_for_leader(&survivors);
        std::thread::sleep(Duration::from_secs(2));
        let until = now_ms();
        let times: Vec<u64> = sim
            .requests()
            .into_iter()
            .filter(|r| r.ip == owner_ip && r.time_ms + 1000 >= killed_ms && r.time_ms <= until)
            .map(|r| r.time_ms)
            .collect();
        let gap = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(until - killed_ms);
        c.start(&[leader]);
        c.wait_converged(&ALL);
        gap
    }

    /// Microseconds, per sample, from the device's acknowledgement of a write of a new value
    /// into [`REGISTER`] until every node's `PointList` shows it.
    fn device_to_cluster(&self, device: SocketAddr) -> Vec<u64> {
        let c = self.c;
        c.wait_until("RTU d has an owner", || self.leases.owned(0, "d"));
        let addrs: Vec<String> = ALL.iter().map(|&i| c.admin_addr(i)).collect();
        c.block_on(async {
            let stream = tokio::net::TcpStream::connect(device)
                .await
                .expect("connect to the device");
            stream.set_nodelay(true).expect("TCP_NODELAY");
            let mut modbus = tcp::attach_slave(stream, Slave(1));
            let mut clients = Vec::new();
            for addr in &addrs {
                clients.push(admin_client(&self.creds, addr).await.expect("dial a node"));
            }
            let mut took = Vec::with_capacity(LATENCY_SAMPLES);
            for k in 0..LATENCY_SAMPLES {
                let phase = rand::rng().random_range(0..POLL_MS);
                tokio::time::sleep(Duration::from_millis(phase)).await;
                let value = 20_000 + k as u16;
                modbus
                    .write_single_register(REGISTER, value)
                    .await
                    .expect("write to the device")
                    .expect("the device takes the write");
                let written = Instant::now();
                let seen = futures::future::join_all(clients.iter_mut().map(|client| async move {
                    loop {
                        let call = client.point_list(PointListRequest { rtu: "d".into() });
                        if let Ok(reply) = call.await
                            && reply.into_inner().points.iter().any(|p| {
                                p.id == "d.v" && p.has_value && p.number == f64::from(value)
                            })
                        {
                            return written.elapsed();
                        }
                        assert!(
                            written.elapsed() < Duration::from_secs(10),
                            "{value} did not reach every node within 10 s"
                        );
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }))
                .await;
                let last = seen.into_iter().max().unwrap_or_default();
                took.push(last.as_micros() as u64);
            }
            took
        })
    }

    /// Applies the 50 × 200 configuration on devices of its own (then stops `old`), lets it
    /// settle, and measures how fast every node applies point changes and how much memory the
    /// nodes take. Nothing here asks the nodes for RTUs or points: with 10 000 points, every
    /// `rtu list` and `point list` costs the node seconds of CPU (see `main.rs`).
    fn throughput_and_memory(&self, old: SimDevice, seconds: u64, poll_ms: u64) {
        let c = self.c;
        let profile = c.dir().join("bench-ramp.toml");
        std::fs::write(&profile, crate::ramp_profile(UNITS, POINTS, poll_ms))
            .expect("write the ramp profile");
        let mut sims: Vec<RampDevice> = (1..=DEVICES)
            .map(|k| RampDevice::start(c, device_addr(c, k, 5020), &profile))
            .collect();
        let text = many_rtus_site(&sims.iter().map(|s| s.addr).collect::<Vec<_>>(), poll_ms);
        let leader = c.wait_for_leader(&ALL);
        let term = c.status(leader).map_or(0, |s| s.term);
        let t = Instant::now();
        if let Err(e) = c.apply(leader, &text, "240s") {
            eprintln!("fepha-bench: the 50 x 200 configuration was not applied: {e}");
            return;
        }
        let took = t.elapsed();
        eprintln!(
            "fepha-bench: applied {} KiB of site configuration in {} ms",
            text.len() / 1024,
            took.as_millis(),
        );
        println!("site_apply_ms_10000_points: {} ms", took.as_millis());
        drop(old);

        // Settled once every RTU has been polled in the last second and every node applies
        // point changes.
        let settle = Instant::now();
        let mut last: BTreeMap<(usize, u8), (IpAddr, u64)> = BTreeMap::new();
        let rtus = usize::from(DEVICES) * usize::from(UNITS);
        fepha_cluster_tests::wait_until(
            LONG_WAIT,
            "every RTU is polled",
            || {
                for (d, sim) in sims.iter_mut().enumerate() {
                    for (unit, ip, time_ms) in sim.new_requests() {
                        last.insert((d, unit), (ip, time_ms));
                    }
                }
                let since = now_ms().saturating_sub(1000);
                let polled = last.values().filter(|(_, t)| *t >= since).count();
                if polled < rtus {
                    return Err(format!("{polled} of {rtus} RTUs polled in the last second"));
                }
                Ok(())
            },
            || c.report(),
        );
        // A node that applies nothing is measured as it is (its rate is the slowest), after
        // it has had a while to catch up.
        let deadline = Instant::now() + CATCH_UP;
        loop {
            let before: Vec<Option<f64>> = ALL
                .iter()
                .map(|&i| metric(c, i, "fepha_points_applied_total"))
                .collect();
            std::thread::sleep(Duration::from_millis(500));
            let idle: Vec<&str> = before
                .into_iter()
                .enumerate()
                .filter(|(i, n)| metric(c, *i, "fepha_points_applied_total") <= *n)
                .map(|(i, _)| c.name(i))
                .collect();
            if idle.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "fepha-bench: WARNING: {idle:?} applied no point changes for {CATCH_UP:?}; \
                     measuring anyway"
                );
                break;
            }
        }
        let mut owners = BTreeMap::<&str, usize>::new();
        for (ip, _) in last.values() {
            let name = ALL
                .iter()
                .find(|&&i| c.ip(i) == *ip)
                .map_or("?", |&i| c.name(i));
            *owners.entry(name).or_default() += 1;
        }
        eprintln!(
            "fepha-bench: every RTU polled {} ms after the apply (RTUs per node {owners:?}); \
             Raft term {term} before the apply, {} now; settling for {SETTLE:?}",
            settle.elapsed().as_millis(),
            max_term(c)
        );
        std::thread::sleep(SETTLE);

        let pids: Vec<u32> = ALL
            .iter()
            .map(|&i| c.node(i).pid().expect("the node runs"))
            .collect();
        let cpu_before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
        let sim_pids: Vec<u32> = sims.iter().map(|s| s.child.id()).collect();
        let sim_cpu_before: u64 = sim_pids.iter().map(|&p| cpu_ticks(p)).sum();
        let written_before = written(c);
        let term_before = max_term(c);
        let before: Vec<(Instant, f64)> = ALL.iter().map(|&i| applied(c, i)).collect();
        let mut rss_kib = 0;
        for _ in 0..seconds {
            std::thread::sleep(Duration::from_secs(1));
            rss_kib = pids
                .iter()
                .map(|&p| vm_rss_kib(p))
                .max()
                .unwrap_or(0)
                .max(rss_kib);
        }
        let after: Vec<(Instant, f64)> = ALL.iter().map(|&i| applied(c, i)).collect();
        let written_after = written(c);
        let term_after = max_term(c);
        let cpu_after: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
        let sim_cpu_after: u64 = sim_pids.iter().map(|&p| cpu_ticks(p)).sum();
        rss_kib = pids
            .iter()
            .map(|&p| vm_rss_kib(p))
            .max()
            .unwrap_or(0)
            .max(rss_kib);

        let rates: Vec<f64> = before
            .iter()
            .zip(&after)
            .map(|((t0, n0), (t1, n1))| (n1 - n0) / t1.duration_since(*t0).as_secs_f64())
            .collect();
        let window = seconds as f64;
        for (i, rate) in rates.iter().enumerate() {
            eprintln!(
                "fepha-bench: {}: {rate:.0} point changes applied/s, {:.0}% CPU",
                c.name(i),
                (cpu_after[i] - cpu_before[i]) as f64 / CLK_TCK / window * 100.0
            );
        }
        eprintln!(
            "fepha-bench: owners wrote {:.0} point changes/s in {:.0} log entries/s; the devices \
             took {:.0}% CPU",
            (written_after.0 - written_before.0) / window,
            (written_after.1 - written_before.1) / window,
            (sim_cpu_after - sim_cpu_before) as f64 / CLK_TCK / window * 100.0
        );
        // Every leader was alive: each of these elections was a false one.
        println!(
            "raft_elections_loaded: {} elections",
            term_after - term_before
        );
        let applied: Vec<String> = c
            .statuses(&ALL)
            .into_iter()
            .zip(ALL)
            .map(|(s, i)| match s {
                Ok(s) => format!("{} {}/{}", c.name(i), s.applied_index, s.last_log_index),
                Err(_) => format!("{} ?", c.name(i)),
            })
            .collect();
        eprintln!(
            "fepha-bench: applied/last log index: {}",
            applied.join(", ")
        );
        for (i, &p) in pids.iter().enumerate() {
            eprintln!(
                "fepha-bench: {}: {}",
                c.name(i),
                crate::scale::memory_map(p)
            );
        }
        let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "point_updates_offered_per_s: {:.0} updates/s (poll {poll_ms} ms)",
            crate::load_offered(poll_ms)
        );
        println!("point_updates_per_s: {slowest:.0} updates/s");
        println!(
            "node_rss_mib_10000_points: {:.1} MiB",
            rss_kib as f64 / 1024.0
        );
        drop(sims);
    }
}

/// The highest Raft term the nodes report (0 for none that answers).
fn max_term(c: &Cluster) -> u64 {
    c.statuses(&ALL)
        .into_iter()
        .filter_map(Result::ok)
        .map(|s| s.term)
        .max()
        .unwrap_or(0)
}

/// A `fepha sim modbus` device of the throughput configuration, whose request log is read
/// from where the last read ended (it grows by 200 lines a second).
struct RampDevice {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    read: u64,
}

impl RampDevice {
    fn start(c: &Cluster, addr: SocketAddr, profile: &Path) -> RampDevice {
        let log = c.dir().join(format!("bench-ramp-{}.jsonl", addr.ip()));
        let stderr = std::fs::File::create(log.with_extension("log")).expect("sim stderr");
        let child = Command::new(c.binary())
            .args(["sim", "modbus", "--listen", &addr.to_string(), "--profile"])
            .arg(profile)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start fepha sim modbus");
        let device = RampDevice {
            child,
            addr,
            log,
            read: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the sim does not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        device
    }

    /// (unit id, client IP, time_ms) of each request logged since the last call.
    fn new_requests(&mut self) -> Vec<(u8, IpAddr, u64)> {
        let Ok(mut file) = std::fs::File::open(&self.log) else {
            return Vec::new();
        };
        let mut text = String::new();
        if file.seek(SeekFrom::Start(self.read)).is_err() || file.read_to_string(&mut text).is_err()
        {
            return Vec::new();
        }
        // Only whole lines; a line being written is read next time.
        let whole = text.rfind('\n').map_or(0, |n| n + 1);
        self.read += whole as u64;
        text[..whole]
            .lines()
            .filter_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                let client: SocketAddr = v["client"].as_str()?.parse().ok()?;
                Some((
                    u8::try_from(v["unit"].as_u64()?).ok()?,
                    client.ip(),
                    v["time_ms"].as_u64()?,
                ))
            })
            .collect()
    }
}

impl Drop for RampDevice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `fepha_points_applied_total` of node `i`, and when it was read.
fn applied(c: &Cluster, i: usize) -> (Instant, f64) {
    let n = metric(c, i, "fepha_points_applied_total").unwrap_or_else(|| {
        c.fail(&format!(
            "{} has no fepha_points_applied_total in /metrics",
            c.name(i)
        ))
    });
    (Instant::now(), n)
}

/// Point changes the owners wrote to the log, and the log entries they took, summed over the
/// nodes.
fn written(c: &Cluster) -> (f64, f64) {
    let sum = |name| -> f64 { ALL.iter().filter_map(|&i| metric(c, i, name)).sum() };
    (
        sum("fepha_point_changes_total"),
        sum("fepha_point_batches_total"),
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// VmRSS of `pid` in KiB; 0 if it cannot be read.
pub fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU time of `pid` in clock ticks; 0 if it cannot be read.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after "(comm)": state is the first; utime and stime are 12th and 13th.
            let after = &s[s.rfind(')')? + 1..];
            let mut fields = after.split_whitespace().skip(11);
            let utime: u64 = fields.next()?.parse().ok()?;
            let stime: u64 = fields.next()?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0)
}

/// The kernel's clock ticks per second (USER_HZ), the unit of /proc/PID/stat's CPU times:
/// 100 on every Linux architecture.
const CLK_TCK: f64 = 100.0;
