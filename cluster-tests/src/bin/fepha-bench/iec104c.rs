//! The iec104c group: IEC 104 acquisition from `fepha sim iec104` devices (see the figures in
//! `main.rs`). An RTU's take-over after its owner's SIGKILL, the latency from a change at the
//! device to the ASDU at a master upstream (through both 104 hops), and the events committed
//! per second from 50 devices, with and without `ack_after_commit`, every change counted.
//!
//! The master of the latency figure is written here on the fepha codec, as the iec104 group's:
//! STARTDT act on every node (the leader confirms), an S frame after [`ACK_AFTER`] I frames or
//! [`ACK_TIMER`], TESTFR answered. It reads the wall clock when the bytes come off the socket,
//! since the device's time tag, which the change carries through the cluster, is wall clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use fepha::admin::client::Credentials;
use fepha::iec104::{Apdu, Asdu, Cause, SeqNo, UFunction, decode_apdu};
use fepha::proto::admin::{PointInfo, PointListRequest};
use fepha_cluster_tests::field::{device_addr, metric, owner_not_leader};
use fepha_cluster_tests::sim104::{LogLine, Sim104};
use fepha_cluster_tests::{Cluster, admin_client, labelled_metric, percentile};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Args;
use crate::leases::Leases;

const ALL: [usize; 3] = [0, 1, 2];
/// The devices' common address; the forwarder's port and common address.
const DEVICE_CA: u16 = 5;
const FWD_PORT: u16 = 2404;
const FWD_CA: u16 = 47;
/// The devices' port (the throughput devices' second run: the next one).
const DEV_PORT: u16 = 2404;

/// RTU d, of the take-over and latency figures: one indication that toggles every
/// [`D_TOGGLE_MS`], at IOA [`D_IOA`] on the device and [`D_UP_IOA`] upstream.
const D_IOA: u32 = 100;
const D_UP_IOA: u32 = 1001;
const D_TOGGLE_MS: u64 = 20;
/// Its rounds, and the standbys' probes.
const POLL_MS: u64 = 100;
/// Changes measured for the latency figures.
const LATENCY_SAMPLES: usize = 200;
/// The master's S frame after this many unacknowledged I frames (the forwarder's w is 8)...
const ACK_AFTER: u16 = 4;
/// ...or once this much time has passed with any unacknowledged.
const ACK_TIMER: Duration = Duration::from_millis(5);

/// The throughput site: devices, indications on each, each toggling this often.
const DEVICES: u8 = 50;
const POINTS: u32 = 100;
const TOGGLE_MS: u64 = 50;
/// The throughput devices begin their toggles this long after the first of them was
/// started: time to start them all, apply the site, and for every owner to connect,
/// interrogate and commit the answers.
const LEAD: Duration = Duration::from_secs(20);
/// From the first toggle to the measurement window.
const WARM_UP: Duration = Duration::from_secs(1);
/// Toggles go on this long after the window, so that it ends under full load.
const TAIL: Duration = Duration::from_secs(1);
/// The longest the cluster may take to commit the devices' backlog after the last toggle.
const DRAIN: Duration = Duration::from_secs(90);
/// How long any one thing waited for may take.
const WAIT: Duration = Duration::from_secs(20);

pub fn run(args: &Args) {
    let c = crate::three_voters("iec104c", &args.raft);
    let b = Bench {
        creds: c.credentials(),
        leases: Leases::new(&c),
        c: &c,
    };
    let sim = Sim104::start_for(&c, device_addr(&c, 0, DEV_PORT), &one_rtu_profile());
    c.apply_ok(0, &one_rtu_site(sim.addr()));

    let rounds: Vec<Takeover> = (0..args.rounds)
        .map(|k| {
            let t = b.takeover_round(&sim, k % 2 == 1);
            eprintln!(
                "fepha-bench: 104 take-over round {k}: {} ms, {} the new owner ({}the \
                 leader's RTU; the device saw its STARTDT after {} ms)",
                t.ms,
                c.name(t.to),
                if t.owner_was_leader { "" } else { "not " },
                t.startdt_ms.map_or("?".into(), |v| v.to_string()),
            );
            t
        })
        .collect();
    let all: Vec<u64> = rounds.iter().map(|t| t.ms).collect();
    println!("rtu_takeover_ms_104_p50: {} ms", percentile(&all, 50.0));
    println!("rtu_takeover_ms_104_p99: {} ms", percentile(&all, 99.0));
    for (leader, which) in [(false, "not the leader"), (true, "the leader")] {
        let some: Vec<u64> = rounds
            .iter()
            .filter(|t| t.owner_was_leader == leader)
            .map(|t| t.ms)
            .collect();
        if !some.is_empty() {
            eprintln!(
                "fepha-bench: 104 take-over, owner {which}: p50 {} ms over {} rounds",
                percentile(&some, 50.0),
                some.len()
            );
        }
    }

    let took = b.device_to_master();
    for p in [50.0, 99.0] {
        println!(
            "device_to_master_latency_ms_104_p{p}: {:.1} ms",
            percentile(&took, p) as f64 / 1000.0
        );
    }
    drop(sim);

    let mut previous = Vec::new();
    for (k, (ack, suffix)) in [(true, ""), (false, "_no_ack_after_commit")]
        .into_iter()
        .enumerate()
    {
        let (r, sims) = b.throughput(args.seconds, ack, DEV_PORT + k as u16, previous);
        println!("iec104c_events_per_s{suffix}: {:.0} events/s", r.rate);
        println!("iec104c_events_lost{suffix}: {} events", r.lost);
        previous = sims;
    }
    drop(previous);
}

// ---- sites and profiles ----

/// RTU d's device: one time-tagged indication toggling every [`D_TOGGLE_MS`].
fn one_rtu_profile() -> String {
    format!(
        "common_address = {DEVICE_CA}\n\
         [[point]]\nioa = {D_IOA}\ntype = \"M_SP_TB_1\"\nvalue = false\n\
         [[schedule]]\nkind = \"toggle\"\nioa = {D_IOA}\nevery_ms = {D_TOGGLE_MS}\n"
    )
}

/// The `[[rtu]]` table of a 104 RTU at `endpoint`: a GI after STARTDT only, our t2 1 s (a
/// device that stops sending is acknowledged within a second).
fn rtu(id: &str, endpoint: SocketAddr, ack_after_commit: bool) -> String {
    format!(
        "\n[[rtu]]\nid = \"{id}\"\nprotocol = \"iec104\"\nstandby = \"probe\"\n\
         poll_interval_ms = {POLL_MS}\n\
         [rtu.iec104]\ncommon_address = {DEVICE_CA}\nt0_s = 2\nt2_s = 1\ngi_period_s = 0\n\
         counter_period_s = 0\nack_after_commit = {ack_after_commit}\n\
         [[rtu.channel]]\nname = \"lan\"\nendpoints = [\"{endpoint}\"]\n"
    )
}

/// RTU d with its indication, mapped to [`D_UP_IOA`] by the forwarder.
fn one_rtu_site(endpoint: SocketAddr) -> String {
    format!(
        "[site]\nname = \"bench: one 104 RTU\"\n{}\n\
         [[point]]\nid = \"d.s\"\nrtu = \"d\"\nkind = \"single\"\ntype = \"M_SP_TB_1\"\n\
         ioa = {D_IOA}\n\n\
         [[forwarder]]\nname = \"cc\"\nport = {FWD_PORT}\ncommon_address = {FWD_CA}\n\
         [[forwarder.map]]\npoint = \"d.s\"\nioa = {D_UP_IOA}\n",
        rtu("d", endpoint, true)
    )
}

/// [`POINTS`] time-tagged indications that all toggle together every [`TOGGLE_MS`], `count`
/// times from `start_ms` after the device's start; a queue that never drops. (Together: the
/// sim's CPU goes mostly to its wake-ups, about 45 µs each; staggering the points over the
/// period costs 50 devices more than a core.)
fn burst_profile(start_ms: u64, count: u64) -> String {
    let mut p = format!("common_address = {DEVICE_CA}\nqueue = 10000000\n");
    for i in 0..POINTS {
        let ioa = 100 + i;
        let _ = write!(
            p,
            "[[point]]\nioa = {ioa}\ntype = \"M_SP_TB_1\"\nvalue = false\n\
             [[schedule]]\nkind = \"toggle\"\nioa = {ioa}\nevery_ms = {TOGGLE_MS}\n\
             count = {count}\nstart_after_ms = {start_ms}\n"
        );
    }
    p
}

/// One RTU per device, [`POINTS`] indications each; no forwarder.
fn many_rtus_site(devices: &[SocketAddr], ack_after_commit: bool) -> String {
    let mut s = format!(
        "[site]\nname = \"bench: {} 104 RTUs, ack_after_commit = {ack_after_commit}\"\n",
        devices.len()
    );
    for (k, addr) in devices.iter().enumerate() {
        s.push_str(&rtu(&format!("t{k}"), *addr, ack_after_commit));
    }
    for k in 0..devices.len() {
        for i in 0..POINTS {
            let _ = write!(
                s,
                "[[point]]\nid = \"t{k}.{i}\"\nrtu = \"t{k}\"\nkind = \"single\"\n\
                 type = \"M_SP_TB_1\"\nioa = {}\n",
                100 + i
            );
        }
    }
    s
}

// ---- take-over ----

struct Takeover {
    ms: u64,
    to: usize,
    owner_was_leader: bool,
    /// From the kill to the STARTDT the device logged from another node.
    startdt_ms: Option<u64>,
}

struct Bench<'a> {
    c: &'a Cluster,
    creds: Credentials,
    leases: Leases<'a>,
}

impl Bench<'_> {
    /// Point d.s as node `i` has applied it.
    fn d_point(&self, i: usize) -> Result<PointInfo, String> {
        let addr = self.c.admin_addr(i);
        self.c.block_on(async {
            let mut client = admin_client(&self.creds, &addr).await?;
            let reply = client
                .point_list(PointListRequest { rtu: "d".into() })
                .await
                .map_err(|s| format!("point list: {s}"))?;
            reply
                .into_inner()
                .points
                .into_iter()
                .find(|p| p.id == "d.s")
                .ok_or("no point d.s".to_owned())
        })
    }

    /// One SIGKILL of RTU d's owner, first moved onto the leader (`on_leader`) or off it;
    /// the time from the kill until a surviving node has applied a value of d.s written by
    /// another owner (a later epoch). Then restarts the node and waits until it has caught up.
    fn takeover_round(&self, sim: &Sim104, on_leader: bool) -> Takeover {
        let c = self.c;
        let leader = c.wait_for_leader(&ALL);
        let owner = self.leases.placed("d", leader, on_leader);
        let epoch = c.wait_until(
            "the owner's changes are applied, every node reaches the device",
            || {
                let lease = self.leases.owned(leader, "d")?;
                if lease.owner != c.name(owner) || lease.reachable_from.len() < 3 {
                    return Err(format!("{lease:?}"));
                }
                let p = self.d_point(leader)?;
                let fresh = p.time_ms + 1000 >= now_ms();
                if p.source != c.name(owner) || p.epoch != lease.epoch || !fresh || p.invalid {
                    return Err(format!("d.s {p:?}, lease {lease:?}"));
                }
                Ok(lease.epoch)
            },
        );
        let owner_was_leader = c.wait_for_leader(&ALL) == owner;

        c.node(owner).signal(Signal::SIGKILL);
        let t0 = Instant::now();
        let killed_ms = now_ms();
        c.kill(owner);
        let survivors: Vec<usize> = ALL.into_iter().filter(|&i| i != owner).collect();
        let (to, took) = self.first_new_value(&survivors, c.name(owner), epoch, t0);
        let startdt_ms = started_lines(&sim.lines())
            .into_iter()
            .find(|l| l.time_ms >= killed_ms)
            .map(|l| l.time_ms - killed_ms);
        c.start(&[owner]);
        caught_up(c, owner);
        Takeover {
            ms: took.as_millis() as u64,
            to,
            owner_was_leader,
            startdt_ms,
        }
    }

    /// Polls `PointList` on the `survivors` until one has d.s from an owner other than
    /// `killed` under an epoch after `epoch`: that node's index and the time since `t0`.
    fn first_new_value(
        &self,
        survivors: &[usize],
        killed: &str,
        epoch: u64,
        t0: Instant,
    ) -> (usize, Duration) {
        let c = self.c;
        let found = c.block_on(async {
            let mut clients = Vec::new();
            for &i in survivors {
                clients.push((i, admin_client(&self.creds, &c.admin_addr(i)).await?));
            }
            loop {
                for (i, client) in &mut clients {
                    let call = client.point_list(PointListRequest { rtu: "d".into() });
                    let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(2), call).await
                    else {
                        continue;
                    };
                    let new = reply.into_inner().points.iter().any(|p| {
                        p.id == "d.s"
                            && p.has_value
                            && p.epoch > epoch
                            && !p.source.is_empty()
                            && p.source != killed
                    });
                    if new {
                        return Ok((*i, t0.elapsed()));
                    }
                }
                if t0.elapsed() > WAIT {
                    return Err(format!("no new owner's value of d.s within {WAIT:?}"));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        found.unwrap_or_else(|e: String| c.fail(&e))
    }

    // ---- latency ----

    /// Microseconds, per change of d.s at the device (its time tag, in ms), until the first
    /// master receives the spontaneous ASDU with it. RTU d is owned by a node that is not
    /// the leader, so the change crosses the owner, the leader's log and its forwarder.
    fn device_to_master(&self) -> Vec<u64> {
        let c = self.c;
        let (owner, _) = owner_not_leader(c);
        let leader = c.wait_for_leader(&ALL);
        eprintln!(
            "fepha-bench: 104 latency: owner {}, leader {}",
            c.name(owner),
            c.name(leader)
        );
        let (tx, rx) = channel();
        let tasks: Vec<_> = ALL
            .iter()
            .map(|&i| {
                let addr = SocketAddr::new(c.ip(i), FWD_PORT);
                c.runtime().spawn(master(i, addr, tx.clone()))
            })
            .collect();
        drop(tx);
        // The forwarder first sends the events it kept while no master was there: samples
        // begin once what arrives is live.
        let live = wait_for(&rx, WAIT, |r| {
            (r.ioa == D_UP_IOA && r.time_ms.is_some_and(|t| r.at_us / 1000 < t as u64 + 100))
                .then_some(())
        });
        if live.is_none() {
            c.fail(&format!(
                "no live change of d.s reached a master within {WAIT:?}"
            ));
        }
        let since = now_ms() as i64 + 100;
        let mut seen = BTreeSet::new();
        let mut took = Vec::with_capacity(LATENCY_SAMPLES);
        let deadline =
            Instant::now() + WAIT + Duration::from_millis(LATENCY_SAMPLES as u64 * D_TOGGLE_MS);
        while took.len() < LATENCY_SAMPLES {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = match rx.recv_timeout(left) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    c.fail(&format!(
                        "{} of {LATENCY_SAMPLES} changes reached a master",
                        took.len()
                    ))
                }
            };
            if let (D_UP_IOA, Some(t)) = (r.ioa, r.time_ms)
                && t >= since
                && seen.insert(t)
            {
                took.push(r.at_us.saturating_sub(t as u64 * 1000));
            }
        }
        for t in tasks {
            t.abort();
        }
        let nodes: BTreeSet<usize> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|r| r.node)
            .collect();
        if nodes.len() > 1 {
            eprintln!("fepha-bench: WARNING: spontaneous data came from nodes {nodes:?}");
        }
        took
    }

    // ---- throughput ----

    /// One burst: [`DEVICES`] devices on `port` toggle [`POINTS`] indications every
    /// [`TOGGLE_MS`] for [`WARM_UP`] + `seconds` + [`TAIL`], with the site's
    /// `ack_after_commit`; the events the leader applies per second over the `seconds` after
    /// [`WARM_UP`], then, once the backlog is committed, every change the devices made
    /// against the events the log gained. The devices of the previous burst are stopped once
    /// the new site points elsewhere; this burst's are returned (still running).
    fn throughput(
        &self,
        seconds: u64,
        ack: bool,
        port: u16,
        previous: Vec<Sim104>,
    ) -> (Burst, Vec<Sim104>) {
        let c = self.c;
        let active = WARM_UP + Duration::from_secs(seconds) + TAIL;
        let count = active.as_millis() as u64 / TOGGLE_MS;
        let expected = u64::from(DEVICES) * u64::from(POINTS) * count;
        let first_ms = now_ms() + LEAD.as_millis() as u64;
        let t = Instant::now();
        let sims: Vec<Sim104> = (1..=DEVICES)
            .map(|k| {
                // The devices take turns within the period.
                let turn = u64::from(k) * TOGGLE_MS / u64::from(DEVICES);
                let start_ms = (first_ms + turn).saturating_sub(now_ms());
                Sim104::start_for(c, device_addr(c, k, port), &burst_profile(start_ms, count))
            })
            .collect();
        let addrs: Vec<SocketAddr> = sims.iter().map(Sim104::addr).collect();
        let started = t.elapsed();
        let leader = c.wait_for_leader(&ALL);
        let text = many_rtus_site(&addrs, ack);
        let t = Instant::now();
        if let Err(e) = c.apply(leader, &text, "60s") {
            c.fail(&format!("the {DEVICES}-RTU site was not applied: {e}"));
        }
        eprintln!(
            "fepha-bench: ack_after_commit = {ack}: {DEVICES} devices started in {} ms, the \
             site ({} KiB) applied in {} ms",
            started.as_millis(),
            text.len() / 1024,
            t.elapsed().as_millis()
        );
        drop(previous);
        self.settle(&sims);
        let quiet_by = Instant::now() + WAIT;
        let applied = |i: usize| metric(c, i, "fepha_events_applied_total").unwrap_or(0.0);
        loop {
            let a = applied(leader);
            std::thread::sleep(Duration::from_millis(300));
            if applied(leader) == a {
                break;
            }
            if Instant::now() > quiet_by {
                eprintln!("fepha-bench: WARNING: the log never went quiet before the burst");
                break;
            }
        }
        let ready_ms = now_ms();
        if ready_ms + 200 > first_ms {
            eprintln!(
                "fepha-bench: WARNING: ready {} ms after the devices began toggling (LEAD is \
                 too short): the count includes what came before",
                (ready_ms + 200).saturating_sub(first_ms)
            );
        } else {
            eprintln!(
                "fepha-bench: ready {} ms before the devices begin toggling",
                first_ms - ready_ms
            );
        }
        std::thread::sleep(Duration::from_millis(
            first_ms.saturating_sub(now_ms() + 200),
        ));
        let seq_before = last_event_seq(self, leader);
        let events_before = applied(leader);
        let health_before = Health::of(c);

        // The window.
        std::thread::sleep(Duration::from_millis(
            (first_ms + WARM_UP.as_millis() as u64).saturating_sub(now_ms()),
        ));
        let pids: Vec<u32> = ALL.iter().filter_map(|&i| c.node(i).pid()).collect();
        let sim_pids = sim_pids(&addrs);
        let cpu0 = (
            pids.iter().map(|&p| cpu_ticks(p)).collect::<Vec<_>>(),
            sim_pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>(),
        );
        let window_from_ms = now_ms();
        let (t_a, e_a) = (Instant::now(), applied(leader));
        let mut per_second = Vec::new();
        let mut last = e_a;
        for _ in 0..seconds {
            std::thread::sleep(Duration::from_secs(1));
            let e = applied(leader);
            per_second.push(e - last);
            last = e;
        }
        let (t_b, e_b) = (Instant::now(), last);
        let window_to_ms = now_ms();
        let cpu1 = (
            pids.iter().map(|&p| cpu_ticks(p)).collect::<Vec<_>>(),
            sim_pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>(),
        );
        let window = t_b.duration_since(t_a).as_secs_f64();
        let rate = (e_b - e_a) / window;

        // The backlog, then the count.
        let end_ms = first_ms + active.as_millis() as u64;
        std::thread::sleep(Duration::from_millis(end_ms.saturating_sub(now_ms())));
        let drain = Instant::now();
        let mut stalled = Instant::now();
        let mut seen = applied(leader);
        let mut all_in = None;
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = applied(leader);
            if now > seen {
                seen = now;
                stalled = Instant::now();
            }
            let complete = (seen - events_before) as u64 >= expected;
            if complete && all_in.is_none() {
                all_in = Some(drain.elapsed().as_millis());
            }
            // Reading the devices' logs is costly: only once the count is reached.
            let all_acked = complete && sims.iter().all(|s| unacknowledged(&s.lines()) == 0);
            if all_acked {
                break;
            }
            if stalled.elapsed() > Duration::from_secs(10) || drain.elapsed() > DRAIN {
                eprintln!(
                    "fepha-bench: WARNING: stopped waiting for the backlog {} ms after the \
                     last toggle ({:.0} of {expected} events; all acknowledged: {all_acked})",
                    drain.elapsed().as_millis(),
                    seen - events_before
                );
                break;
            }
        }
        // Wait one more beat for stragglers, then count.
        std::thread::sleep(Duration::from_millis(500));
        let committed = (applied(leader) - events_before) as u64;
        let seq_after = last_event_seq(self, leader);
        let health = Health::of(c).since(&health_before);
        let tally = Tally::of(&sims, first_ms, window_from_ms, window_to_ms);
        let lost = tally.changes.saturating_sub(committed);
        let extra = committed.saturating_sub(tally.changes);

        let pct = |a: u64, b: u64| (b - a) as f64 / CLK_TCK / window * 100.0;
        let node_cpu: Vec<String> = ALL
            .iter()
            .zip(cpu0.0.iter().zip(&cpu1.0))
            .map(|(&i, (a, b))| format!("{} {:.0}%", c.name(i), pct(*a, *b)))
            .collect();
        eprintln!(
            "fepha-bench: ack_after_commit = {ack}: events applied by {} per second \
             {per_second:?}; {:.0} changes/s offered ({:.0} made in the window); CPU {}, \
             the devices {:.0}%; owners (by the devices' started links) {:?}",
            c.name(leader),
            f64::from(DEVICES) * f64::from(POINTS) * 1000.0 / TOGGLE_MS as f64,
            tally.in_window as f64 / window,
            node_cpu.join(", "),
            pct(cpu0.1, cpu1.1),
            tally.owners(c),
        );
        eprintln!(
            "fepha-bench: ack_after_commit = {ack}: the devices made {} changes ({expected} \
             scheduled), the log gained {committed} events ({} event numbers, link points \
             included); {lost} lost, {extra} more than made; as many events as changes in the log \
             {} ms after the last toggle, the devices' last acknowledgement after {} ms; the \
             most changes a device held unacknowledged {}; {} dropped by a device queue, {} \
             links closed and {} restarted during the burst ({} STARTDTs while another node's \
             link was started), {} changes still unacknowledged; leases now {:?}",
            tally.changes,
            seq_after.saturating_sub(seq_before),
            all_in.map_or("(never)".to_owned(), |ms| ms.to_string()),
            tally.last_ack_ms.saturating_sub(end_ms),
            tally.most_queued,
            tally.dropped,
            tally.closed,
            tally.restarted,
            tally.taken_from_another_node,
            tally.unacked,
            self.lease_owners(),
        );
        eprintln!(
            "fepha-bench: ack_after_commit = {ack}: during the burst: session renewals {:?}, \
             Raft term {} -> {}, {} 104 links closed on a link error, {} reports \
             dropped as repeated (already in the log)",
            health.renewals, health_before.term, health.term, health.links_closed, health.repeated,
        );
        if tally.changes != expected {
            eprintln!(
                "fepha-bench: WARNING: the devices made {} changes, not the {expected} scheduled",
                tally.changes
            );
        }
        (Burst { rate, lost }, sims)
    }
}

/// Counters of the nodes' health, summed over the nodes (the term: the highest).
struct Health {
    renewals: BTreeMap<&'static str, u64>,
    term: u64,
    links_closed: u64,
    repeated: u64,
}

impl Health {
    fn of(c: &Cluster) -> Health {
        let texts: Vec<String> = ALL.iter().filter_map(|&i| c.metrics(i).ok()).collect();
        let renewals = ["ok", "lagging", "failed", "timeout"]
            .into_iter()
            .map(|o| {
                let n: f64 = texts
                    .iter()
                    .filter_map(|t| {
                        labelled_metric(t, "fepha_lease_renewals_total", &[("outcome", o)])
                    })
                    .sum();
                (o, n as u64)
            })
            .collect();
        let sum = |name: &str| -> u64 {
            ALL.iter().filter_map(|&i| metric(c, i, name)).sum::<f64>() as u64
        };
        Health {
            renewals,
            term: c
                .statuses(&ALL)
                .into_iter()
                .filter_map(Result::ok)
                .map(|s| s.term)
                .max()
                .unwrap_or(0),
            links_closed: sum("fepha_iec104c_link_closed_total"),
            repeated: sum("fepha_iec104_repeated_reports_total"),
        }
    }

    /// The counters' growth since `before`; the term as it is now.
    fn since(&self, before: &Health) -> Health {
        Health {
            renewals: self
                .renewals
                .iter()
                .map(|(o, n)| (*o, n - before.renewals.get(o).copied().unwrap_or(0)))
                .collect(),
            term: self.term,
            links_closed: self.links_closed.saturating_sub(before.links_closed),
            repeated: self.repeated.saturating_sub(before.repeated),
        }
    }
}

impl Bench<'_> {
    /// RTUs per owner, as the leader's `RtuList` has them.
    fn lease_owners(&self) -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        let leader = self.c.wait_for_leader(&ALL);
        for l in self.leases.list(leader).unwrap_or_default() {
            *by.entry(l.owner).or_default() += 1;
        }
        by
    }

    /// Gives RTU `tk` (device `sims[k]`) to node `k % 3`, so that every burst has the same
    /// owners whatever the leader decided (a site change may leave them lopsided): a third of
    /// the RTUs each, one third on the leader. Returns once every device's started link is
    /// its node's and has answered the GI to its end.
    fn settle(&self, sims: &[Sim104]) {
        let c = self.c;
        let node_of = |k: usize| ALL[k % 3];
        fepha_cluster_tests::wait_until(
            LEAD,
            "every RTU is on its node and its device interrogated",
            || {
                let leader = c.wait_for_leader(&ALL);
                let mut moving = 0;
                for l in self.leases.list(leader)? {
                    let Some(k) = l
                        .rtu
                        .strip_prefix('t')
                        .and_then(|k| k.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    let to = c.name(node_of(k));
                    if l.owner != to {
                        moving += 1;
                        if l.reachable_from.iter().any(|n| n == to) {
                            let _ = self.leases.move_rtu(leader, &l.rtu, to);
                        }
                    }
                }
                let waiting = sims
                    .iter()
                    .enumerate()
                    .filter(|(k, s)| !interrogated(&s.lines(), c.ip(node_of(*k))))
                    .count();
                if moving + waiting > 0 {
                    return Err(format!(
                        "{moving} RTUs not on their node, {waiting} devices not interrogated \
                         by it"
                    ));
                }
                Ok(())
            },
            || c.report(),
        );
        eprintln!("fepha-bench: RTU tk on node k % 3, every device interrogated by its owner");
    }
}

struct Burst {
    rate: f64,
    lost: u64,
}

/// What the throughput devices' logs say about one burst.
#[derive(Default)]
struct Tally {
    /// Scheduled changes made.
    changes: u64,
    /// Of those, within the measurement window.
    in_window: u64,
    dropped: u64,
    /// Connections closed, and STARTDTs (links started again), after the first toggle.
    closed: u64,
    restarted: u64,
    /// STARTDTs from one node while a link from another node was still started, over the
    /// devices' whole logs: two nodes serving one device.
    taken_from_another_node: u64,
    /// The changes still unacknowledged at the end, summed.
    unacked: u64,
    most_queued: u64,
    /// The devices' last `ack` line.
    last_ack_ms: u64,
    /// The IP of each device's last started link.
    owners: Vec<Option<IpAddr>>,
}

impl Tally {
    fn of(sims: &[Sim104], first_ms: u64, from_ms: u64, to_ms: u64) -> Tally {
        let mut t = Tally::default();
        for sim in sims {
            let lines = sim.lines();
            let mut peers = BTreeMap::new();
            let mut owner = None;
            for l in &lines {
                match l.event.as_str() {
                    "change" if l.str("source") == Some("schedule") => {
                        t.changes += 1;
                        if (from_ms..to_ms).contains(&l.time_ms) {
                            t.in_window += 1;
                        }
                    }
                    "dropped" => t.dropped += 1,
                    "closed" if l.time_ms >= first_ms => t.closed += 1,
                    "accepted" => {
                        let peer = l.str("peer").and_then(|p| p.parse::<SocketAddr>().ok());
                        peers.insert(l.conn, peer.map(|p| p.ip()));
                    }
                    "started" => {
                        if l.time_ms >= first_ms {
                            t.restarted += 1;
                        }
                        owner = peers.get(&l.conn).copied().flatten();
                        let previous = l.u64("previous").and_then(|p| peers.get(&Some(p)));
                        if previous.is_some_and(|p| *p != owner) {
                            t.taken_from_another_node += 1;
                        }
                    }
                    "ack" => {
                        t.most_queued = t.most_queued.max(l.u64("queued").unwrap_or(0));
                        t.last_ack_ms = t.last_ack_ms.max(l.time_ms);
                    }
                    _ => {}
                }
            }
            t.unacked += unacknowledged(&lines);
            t.owners.push(owner);
        }
        t
    }

    /// Devices per owning node.
    fn owners(&self, c: &Cluster) -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        for ip in &self.owners {
            let name = ALL
                .iter()
                .find(|&&i| Some(c.ip(i)) == *ip)
                .map_or("?".to_owned(), |&i| c.name(i).to_owned());
            *by.entry(name).or_default() += 1;
        }
        by
    }
}

/// The log's newest event number, as node `i` has applied it (link points' events too).
fn last_event_seq(b: &Bench, i: usize) -> u64 {
    let addr = b.c.admin_addr(i);
    b.c.block_on(async {
        let mut client = admin_client(&b.creds, &addr).await.ok()?;
        let reply = client
            .point_list(PointListRequest { rtu: "t0".into() })
            .await
            .ok()?;
        Some(reply.into_inner().last_event_seq)
    })
    .unwrap_or(0)
}

/// The `started` lines of a device's log.
fn started_lines(lines: &[LogLine]) -> Vec<&LogLine> {
    lines.iter().filter(|l| l.event == "started").collect()
}

/// Whether the device's last started link is from `ip` and has answered a GI to its end
/// (ACTTERM sent).
fn interrogated(lines: &[LogLine], ip: IpAddr) -> bool {
    let Some(start) = started_lines(lines).last().map(|l| (l.index, l.conn)) else {
        return false;
    };
    let from = lines.iter().any(|l| {
        l.event == "accepted"
            && l.conn == start.1
            && l.str("peer")
                .and_then(|p| p.parse::<SocketAddr>().ok())
                .is_some_and(|p| p.ip() == ip)
    });
    from && lines.iter().any(|l| {
        l.index > start.0
            && l.event == "sent"
            && l.conn == start.1
            && l.str("type") == Some("C_IC_NA_1")
            && l.u64("cause") == Some(10)
    })
}

/// The changes the device holds unacknowledged: those its last `ack` line says are queued,
/// and every change made after it (all of them if there is no `ack` yet).
fn unacknowledged(lines: &[LogLine]) -> u64 {
    let last = lines.iter().rposition(|l| l.event == "ack");
    let queued = last
        .and_then(|i| lines.get(i))
        .and_then(|l| l.u64("queued"))
        .unwrap_or(0);
    let after = last.map_or(0, |i| i + 1);
    let later = lines
        .get(after..)
        .unwrap_or_default()
        .iter()
        .filter(|l| l.event == "change")
        .count();
    queued + later as u64
}

/// The pids of this benchmark's `fepha sim iec104` children listening on `addrs`.
fn sim_pids(addrs: &[SocketAddr]) -> Vec<u32> {
    let me = std::process::id();
    let listens: BTreeSet<String> = addrs.iter().map(ToString::to_string).collect();
    crate::processes()
        .filter(|p| p.ppid == me)
        .filter(|p| {
            p.argv.get(1).map(String::as_str) == Some("sim")
                && p.argv.get(2).map(String::as_str) == Some("iec104")
                && p.argv.iter().any(|a| listens.contains(a))
        })
        .map(|p| p.pid)
        .collect()
}

// ---- the master ----

/// One information object of a spontaneous ASDU, and when its bytes were read.
#[derive(Debug)]
struct Received {
    node: usize,
    ioa: u32,
    time_ms: Option<i64>,
    /// Wall clock, µs since the Unix epoch.
    at_us: u64,
}

/// Runs a master on node `node`'s forwarder until the connection ends or the task is aborted.
async fn master(node: usize, addr: SocketAddr, tx: Sender<Received>) {
    if let Err(e) = session(node, addr, &tx).await {
        eprintln!("fepha-bench: master on node {node} ended: {e:#}");
    }
}

async fn session(node: usize, addr: SocketAddr, tx: &Sender<Received>) -> anyhow::Result<()> {
    let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
        .await
        .with_context(|| format!("connect to {addr}: timed out"))?
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut out = Vec::new();
    Apdu::U(UFunction::StartDtAct).encode(&mut out)?;
    wr.write_all(&out).await?;
    out.clear();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 16];
    let mut recv_seq = SeqNo::ZERO;
    let mut unacked: u16 = 0;
    let mut timer = tokio::time::interval(ACK_TIMER);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            read = rd.read(&mut chunk) => {
                let n = read.context("read")?;
                if n == 0 {
                    bail!("the node closed the connection");
                }
                let at_us = unix_us();
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                let mut used = 0;
                while let Some((apdu, len)) = decode_apdu(buf.get(used..).unwrap_or_default())
                    .map_err(|e| anyhow::anyhow!("bad APDU from the node: {e:?}"))?
                {
                    used += len;
                    match apdu {
                        Apdu::I(frame) => {
                            recv_seq = recv_seq.next();
                            unacked += 1;
                            let Ok(asdu) = Asdu::decode(&frame.asdu) else { continue };
                            if asdu.cause != Cause::SPONTANEOUS {
                                continue;
                            }
                            for o in &asdu.objects {
                                let _ = tx.send(Received {
                                    node,
                                    ioa: o.ioa,
                                    time_ms: o.element.time().map(|t| t.to_unix_ms()),
                                    at_us,
                                });
                            }
                        }
                        Apdu::U(UFunction::TestFrAct) => {
                            Apdu::U(UFunction::TestFrCon).encode(&mut out)?;
                        }
                        _ => {}
                    }
                }
                buf.drain(..used);
                if unacked >= ACK_AFTER {
                    Apdu::S { recv_seq }.encode(&mut out)?;
                    unacked = 0;
                }
            }
            _ = timer.tick() => {
                if unacked > 0 {
                    Apdu::S { recv_seq }.encode(&mut out)?;
                    unacked = 0;
                }
            }
        }
        if !out.is_empty() {
            wr.write_all(&out).await.context("write")?;
            out.clear();
        }
    }
}

/// Objects until `pick` returns Some, or `limit` passes.
fn wait_for<T>(
    rx: &Receiver<Received>,
    limit: Duration,
    mut pick: impl FnMut(&Received) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = rx.recv_timeout(left).ok()?;
        if let Some(t) = pick(&r) {
            return Some(t);
        }
    }
}

// ---- helpers ----

/// Waits until the restarted node `i` has applied what the leader had applied when it came
/// back, and every node names the same leader. (The cluster's own convergence check wants
/// equal applied indexes, which a device changing every 20 ms never lets happen.)
fn caught_up(c: &Cluster, i: usize) {
    let target = c.wait_until("the others agree on a leader", || {
        let leader = c.wait_for_leader(&ALL);
        Ok(c.status(leader)?.applied_index)
    });
    c.wait_until(&format!("{} catches up", c.name(i)), || {
        let statuses = c
            .statuses(&ALL)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let leaders: Vec<_> = statuses.iter().map(|s| s.leader.clone()).collect();
        if leaders.iter().any(|l| l.is_none() || *l != leaders[0]) {
            return Err(format!("leaders {leaders:?}"));
        }
        let applied = statuses[i].applied_index;
        if applied < target {
            return Err(format!("applied {applied} of {target}"));
        }
        Ok(())
    });
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
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

/// USER_HZ, the unit of /proc/PID/stat's CPU times.
const CLK_TCK: f64 = 100.0;
