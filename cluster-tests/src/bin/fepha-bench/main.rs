//! Benchmark of a three-node fepha cluster on loopback, with the release binary:
//!
//! ```text
//! cargo build --release --bin fepha && cargo run --release -p fepha-cluster-tests --bin fepha-bench
//! cargo run --release -p fepha-cluster-tests --bin fepha-bench -- --only acquisition --rounds 10
//! cargo run --release -p fepha-cluster-tests --bin fepha-bench -- --rounds 50 --seconds 10
//! ```
//!
//! `--only raft|acquisition|iec104|iec104c|scale` runs one group (default: all, each on a fresh
//! cluster); `--rounds N` (default 20) is the number of failover rounds of the raft and iec104
//! groups and of take-over rounds of the acquisition and iec104c groups; `--seconds S` (default
//! 5) how long each throughput figure is measured; `--raft 'profile = "fast"'` gives the nodes
//! those `[raft]` lines (`;` separates several); `--idle-seconds S` (default 60) how long the
//! raft group watches an idle cluster for false elections; `--offer N` (default 100 000) the
//! point changes per second the 10 000-point loads of the acquisition and iec104 groups offer,
//! set by their poll interval (10 000 × 1000 / N ms, 1 s down to 10 ms). With the defaults a
//! run takes two to four
//! minutes on two cores, and about three more for the iec104c group. Prints one `name: value
//! unit` line per figure; progress and per-node details go to stderr.
//!
//! The raft group ([`raft`]):
//! - `raft_elections_idle`: the growth of the highest Raft term over `--idle-seconds` of an
//!   idle cluster. Every leader was alive, so each election is a false one.
//! - `commit_latency_us_p50_wN`, `commit_latency_us_p99_wN`, `commits_per_s_wN`: `config apply`
//!   through the leader's admin API by N = 1 and N = 64 concurrent writers, for `--seconds`
//!   each.
//! - `leader_failover_ms_p50`, `leader_failover_ms_p99`: per round, SIGKILL the leader while
//!   writers hit the other two nodes continuously; the time from the kill to the first commit
//!   of a write sent after it. The killed node is restarted and caught up before the next
//!   round. Writers give up on a write after 50 ms and send another.
//! - `leader_failover_silent_ms_p50`, `..._p99`: the same rounds with SIGSTOP instead (then
//!   SIGCONT): a leader that falls silent, as a box that lost power or its link, whose
//!   connections stay open, so that only openraft's timers see it.
//! - `tls_handshake_status_ms_p50`, `tls_handshake_status_ms_p99`: 200 times, a fresh
//!   connection to the leader's admin API (TCP, mutual TLS handshake, HTTP/2) and one `status`
//!   call (`local_only`) on it. Every connection is a full handshake: fepha has no TLS session
//!   resumption.
//!
//! The acquisition group ([`acquisition`]), against `fepha sim modbus` devices; each node opens
//! its field connections from its own loopback IP, so a device's request log tells the nodes
//! apart:
//! - `rtu_takeover_ms_p50`, `rtu_takeover_ms_p99`: one RTU polled every 100 ms (standby
//!   `probe`). Per round, SIGKILL the RTU's owner; the time from the kill (wall clock) to the
//!   first request from another node in the device's log (its `time_ms`, same clock). Even
//!   rounds first `rtu move` the RTU off the Raft leader, odd rounds onto it, so half the
//!   kills are the leader's: those include an election (the new leader counts the dead
//!   owner's TTL from when it applied its last renewal). The killed node is restarted and
//!   caught up before the next round.
//! - `rtu_takeover_ms_p50_owner_not_leader`, `rtu_takeover_ms_p50_owner_leader`: the same,
//!   over the rounds whose killed owner was not (was) the leader at the kill.
//! - `owner_poll_pause_ms_across_leader_failover_max`: the same RTU, its owner not the leader;
//!   per round (at most 10), SIGKILL the leader; the longest gap between two of the owner's
//!   requests in the device's log, from a second before the kill to two seconds after the new
//!   leader; the largest over the rounds. The poll interval is the least it can be.
//! - `device_to_cluster_latency_ms_p50`, `device_to_cluster_latency_ms_p99`: the same RTU;
//!   50 times, write a new value into a holding register of the device (Modbus, unit 1) and
//!   poll `PointList` on all three nodes' admin APIs until each shows it; from the device's
//!   acknowledgement of the write until the last node shows the value. Samples start at a
//!   random phase of the poll interval.
//! - `site_apply_ms_10000_points`: `config apply` (through the leader, CLI) of 50 RTUs × 200
//!   measured points with descriptions (the generated site of
//!   [`fepha_cluster_tests::sitegen`]), about 1.6 MiB of TOML, until it is committed.
//! - `point_updates_per_s`: with that configuration (u16 holding registers, no deadband) on
//!   5 devices × 10 unit ids, every register ramping by 1 every 20 ms (at least twice per
//!   poll) so that every 100 ms poll changes every point (100 000 changes/s offered; see
//!   `--offer`, printed as `point_updates_offered_per_s`): once every RTU has been polled in
//!   the last second (by the devices' logs), every node applies changes (or 20 s have
//!   passed: a node that never catches up is measured as it is) and 3 s more, the growth of
//!   `fepha_points_applied_total` on each node's /metrics over `--seconds`; the slowest
//!   node's rate. Stderr also gives each node's rate and CPU, the RTUs each node polls, the
//!   changes the owners wrote (`fepha_point_changes_total`), elections meanwhile and each
//!   node's applied and last log index.
//! - `raft_elections_loaded`: the growth of the highest Raft term over that window (false
//!   elections under the load; `--seconds 180` for several minutes of it).
//! - `node_rss_mib_10000_points`: the largest VmRSS (/proc/PID/status) of the three nodes,
//!   sampled every second of that window and once after.
//!
//! Nothing in the 10 000-point part asks the nodes for RTUs or points: every `RtuList` and
//! `PointList` parses the whole site configuration again, which takes seconds at that size.
//!
//! The iec104 group ([`iec104`]), with a raw 104 master written on fepha's codec (STARTDT on
//! every node, an S frame after 4 I frames or 5 ms):
//! - `iec104_failover_ms_p50`, `iec104_failover_ms_p99`: one RTU polled every 20 ms whose
//!   device ramps a register every 10 ms, mapped; a master connected to all three nodes. Per
//!   round, the RTU's owner is made another node than the leader, then the leader is
//!   SIGKILLed; the time from the kill to the first spontaneous ASDU on a connection to
//!   another node (a resent one counts). Stderr also gives the new leader's STARTDT con and
//!   the first ASDU of an event polled after the kill. The killed node is restarted and
//!   caught up (and a master connected to it) before the next round.
//! - `device_to_master_latency_ms_p50`, `..._p99`: the same RTU polled every 100 ms, owned by
//!   a node that is not the leader; 50 times, at a random phase, write a new value into a
//!   holding register of the device (Modbus) and wait for the spontaneous ASDU with it; from
//!   the device's acknowledgement of the write to the master's read of the ASDU.
//!   `device_to_master_latency_ms_fast_p50`, `..._p99`: the same at poll_interval_ms = 10,
//!   the least the site check accepts.
//! - `gi_ms_10000_points`: 50 RTUs × 200 measured points, all mapped (IOAs 1..=10 000), no
//!   device running (every point unread, sent invalid); median of 5 general interrogations
//!   from the C_IC_NA_1 sent to its ACTTERM received. Stderr gives each, and the number of
//!   information objects received (warns unless 10 000).
//! - `asdu_per_s`: that site with devices whose every register ramps every 20 ms, so that
//!   every 100 ms poll changes every point (100 000 events/s offered); once data flows and
//!   5 s more, the spontaneous ASDUs per second the master on the leader receives over 10 s.
//!   `iec104_events_dropped_total`: the leader's `fepha_iec104_events_dropped_total` after
//!   that window (events passed over because a master fell more than the forwarder's
//!   `queue` behind); stderr gives the drops within the window, the events sent and the
//!   changes the owners wrote, and the CPU of the leader and of the bench. Then, for the
//!   diagnosis only (stderr), the same measurement with the forwarder's k = 96, w = 64.
//!
//! The iec104c group ([`iec104c`]), IEC 104 acquisition from `fepha sim iec104` devices:
//! - `rtu_takeover_ms_104_p50`, `rtu_takeover_ms_104_p99`: one 104 RTU whose device toggles a
//!   time-tagged indication every 20 ms (standby `probe`). Per round, SIGKILL the RTU's owner;
//!   the time from the kill until a surviving node's `PointList` shows a value of the point
//!   written by another owner (a later epoch), polled through both survivors' admin APIs.
//!   Rounds alternate as the acquisition group's (owner not the leader, then the leader);
//!   stderr splits them and gives when the device logged the new owner's STARTDT. The killed
//!   node is restarted and caught up before the next round.
//! - `device_to_master_latency_ms_104_p50`, `..._p99`: the same RTU, owned by a node that is
//!   not the leader, its indication mapped by the forwarder; a raw master (as the iec104
//!   group's) on every node. For 200 changes, from the device's time tag (wall clock, whole
//!   ms: up to 1 ms too high) to the master's read of the spontaneous ASDU carrying it.
//! - `iec104c_events_per_s`, `iec104c_events_lost`: 50 devices (one RTU each, no forwarder),
//!   each toggling 100 time-tagged indications together every 50 ms (100 000 changes/s
//!   offered, more than two cores commit; the devices take turns within the period). RTU tk is
//!   moved to node k % 3 first; the toggles all start at one instant once every device has
//!   been interrogated by its owner and the log is quiet; the growth of
//!   `fepha_events_applied_total` on the leader over `--seconds` after 1 s of warm-up. The
//!   toggles stop 1 s after the window; once the log holds as many new events as changes and
//!   every device has had every change acknowledged (or nothing moved for 10 s), the changes
//!   the devices logged (`change` lines) minus the events the log gained are the lost ones.
//!   `iec104c_events_per_s_no_ack_after_commit` and `iec104c_events_lost_no_ack_after_commit`:
//!   the same (new devices, the site changed) with `ack_after_commit = false`, the owner
//!   acknowledging on receipt. Stderr gives the events applied each second, the CPU of the
//!   nodes and the devices, the owners, the events beyond the changes (a GI answer after a
//!   link restart, a change written twice), when the log and the devices caught up, the
//!   devices' largest unacknowledged queue, their link restarts, and the nodes' session
//!   renewals by outcome, elections and repeated reports during the burst.
//!
//! The scale group ([`scale`]): a generated site ([`fepha_cluster_tests::sitegen`]) of 500
//! RTUs × 200 u16 measured points, every point with a description of 30-40 characters and
//! mapped by a 104 forwarder (about 21 MiB of TOML in ordinary tables), on 10 `fepha sim
//! modbus` devices × 50 unit ids whose registers do not change, polled every second:
//! - `site_apply_ms_100000_points`: `config apply` through the leader (CLI) until it returns
//!   committed; stderr gives when every node had applied it.
//! - `node_rss_mib_100000_points`: the largest VmRSS of the three nodes, sampled every second
//!   for `--seconds` (at least 5) once every device sees all its RTUs polled.
//! - `gi_ms_100000_points`: median of 3 general interrogations of the whole image through a
//!   master on the leader (as the iec104 group's), from C_IC_NA_1 to ACTTERM.
//! - `restart_to_serving_ms_100000_points`: SIGKILL of a node that is not the leader and its
//!   restart: from the start until it answers `status` and has applied the leader's applied
//!   index at the kill (and the site).
//! - `snapshot_bytes_100000_points`: the leader's `fepha_raft_snapshot_size_bytes` once it has
//!   taken a snapshot after the apply and purged its log (the group's nodes snapshot every
//!   500 entries, keeping 50).
//! - `snapshot_install_ms_100000_points`: a fresh fourth node joins; from its `join` until it
//!   has installed the snapshot and applied the site.
//!
//! `FEPHA_BIN` overrides the binary (default `<target>/release/fepha`).
//! `FEPHA_BENCH_NO_DESCRIPTIONS=1` writes the 10 000-point sites without point descriptions
//! (about 1 MiB instead of 1.6), for a binary whose site limit was still 1 MiB.
//!
//! A benchmark killed by a signal the harness cannot catch leaves its `fepha run` children
//! behind; this one kills its children on SIGINT, SIGTERM and SIGHUP, and warns when it finds
//! `fepha run` processes it did not start, since they compete for the CPU.

mod acquisition;
mod iec104;
mod iec104c;
mod leases;
mod raft;
mod scale;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use fepha_cluster_tests::{Cluster, Options, Profile};

/// The command line.
pub struct Args {
    pub rounds: usize,
    pub seconds: u64,
    pub only: Option<Group>,
    /// The nodes' `[raft]` lines (`--raft 'profile = "fast"'`); empty for the defaults.
    pub raft: String,
    /// How long the raft group watches an idle cluster for false elections.
    pub idle_seconds: u64,
    /// Point changes per second the 10 000-point loads offer (`--offer`).
    pub offer: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Raft,
    Acquisition,
    Iec104,
    Iec104c,
    Scale,
}

fn main() {
    let args = parse_args();
    kill_children_on_signal();
    warn_about_strays();
    if args.only.is_none_or(|g| g == Group::Raft) {
        raft::run(&args);
    }
    if args.only.is_none_or(|g| g == Group::Acquisition) {
        acquisition::run(&args);
    }
    if args.only.is_none_or(|g| g == Group::Iec104) {
        iec104::run(&args);
    }
    if args.only.is_none_or(|g| g == Group::Iec104c) {
        iec104c::run(&args);
    }
    if args.only.is_none_or(|g| g == Group::Scale) {
        scale::run(&args);
    }
}

fn parse_args() -> Args {
    let mut parsed = Args {
        rounds: 20,
        seconds: 5,
        only: None,
        raft: String::new(),
        idle_seconds: 60,
        offer: 100_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || -> String {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        let number = |v: String| -> u64 {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{a} needs a number, not {v:?}")))
        };
        match a.as_str() {
            "--rounds" => parsed.rounds = usize::try_from(number(value())).unwrap_or(20),
            "--seconds" => parsed.seconds = number(value()),
            // `;` for a new line, so that several settings fit in one argument.
            "--raft" => parsed.raft = value().replace(';', "\n"),
            "--idle-seconds" => parsed.idle_seconds = number(value()),
            "--offer" => parsed.offer = number(value()),
            "--only" => {
                parsed.only = match value().as_str() {
                    "raft" => Some(Group::Raft),
                    "acquisition" => Some(Group::Acquisition),
                    "iec104" => Some(Group::Iec104),
                    "iec104c" => Some(Group::Iec104c),
                    "scale" => Some(Group::Scale),
                    "all" => None,
                    other => usage(&format!("unknown group {other:?}")),
                }
            }
            "-h" | "--help" => usage("benchmarks of a three-node cluster"),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if parsed.rounds == 0 || parsed.seconds == 0 {
        usage("--rounds and --seconds must be at least 1");
    }
    if !(MIN_OFFER..=MAX_OFFER).contains(&parsed.offer) {
        usage(&format!(
            "--offer must be {MIN_OFFER} to {MAX_OFFER} changes/s (a poll of 1 s to 10 ms)"
        ));
    }
    if parsed.rounds < 20 {
        eprintln!(
            "fepha-bench: {} rounds: the p99 figures are the largest sample",
            parsed.rounds
        );
    }
    parsed
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "fepha-bench: {msg}\nusage: fepha-bench [--only raft|acquisition|iec104|iec104c|scale] [--rounds N] [--seconds S] [--raft 'KEY = VALUE; ...'] [--idle-seconds S] [--offer CHANGES_PER_S]"
    );
    std::process::exit(2);
}

/// Whether the 10 000-point sites have descriptions: yes, unless `FEPHA_BENCH_NO_DESCRIPTIONS`
/// is set (to measure a binary whose site limit was still 1 MiB).
pub fn descriptions() -> bool {
    std::env::var_os("FEPHA_BENCH_NO_DESCRIPTIONS").is_none()
}

/// The points of the 10 000-point loads of the acquisition and iec104 groups, each of which
/// changes on every poll.
pub const LOAD_POINTS: u64 = 10_000;
/// `--offer`'s bounds: the poll intervals the site check accepts, 1 s down to 10 ms.
const MIN_OFFER: u64 = LOAD_POINTS;
const MAX_OFFER: u64 = LOAD_POINTS * 100;

/// The poll interval at which the 10 000-point load offers `offer` changes/s.
pub fn load_poll_ms(offer: u64) -> u64 {
    (LOAD_POINTS * 1000 / offer).clamp(10, 1000)
}

/// The changes/s the 10 000-point load offers when polled every `poll_ms`.
pub fn load_offered(poll_ms: u64) -> f64 {
    (LOAD_POINTS * 1000) as f64 / poll_ms as f64
}

/// A `fepha sim modbus` profile: `units` unit ids, each with `points` holding registers that
/// all step every half poll interval or every 20 ms, whichever is sooner, so that every poll finds every
/// register changed.
pub fn ramp_profile(units: u8, points: u16, poll_ms: u64) -> String {
    let every_ms = (poll_ms / 2).clamp(1, 20);
    let ids: Vec<String> = (1..=units).map(|u| u.to_string()).collect();
    let mut p = format!(
        "unit_ids = [{}]\nseed = 1\n[holding_registers]\ncount = {points}\n",
        ids.join(", ")
    );
    for a in 0..points {
        let _ = write!(
            p,
            "[[schedule]]\nkind = \"ramp\"\ntable = \"holding_registers\"\naddress = {a}\n\
             every_ms = {every_ms}\nmin = 0\nmax = 65535\nstep = 1\n"
        );
    }
    p
}

/// The directories of the clusters running now, removed on a signal.
static CLUSTER_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A fresh three-voter cluster of the release binary for the benchmark `group`, with the
/// nodes' `[raft]` lines `raft`, its directory removed should a signal end the benchmark.
pub fn three_voters(group: &str, raft: &str) -> Cluster {
    let mut c = Cluster::with(Options {
        profile: Profile::Release,
        raft: raft.to_owned(),
        ..Options::default()
    });
    eprintln!(
        "fepha-bench {group}: {} in {} [raft] {:?}",
        c.binary().display(),
        c.dir().display(),
        raft
    );
    remove_on_signal(c.dir());
    c.bootstrap(&["voter", "voter", "voter"]);
    c
}

/// Removes `dir` when a signal ends the benchmark (the harness does when the cluster drops).
pub fn remove_on_signal(dir: &Path) {
    CLUSTER_DIRS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(dir.to_owned());
}

/// The harness kills its processes when the cluster is dropped, which a signal skips: on
/// SIGINT, SIGTERM or SIGHUP, SIGKILL every child process of this one (nodes, devices, CLI
/// calls), remove the clusters' directories, then exit.
fn kill_children_on_signal() {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut streams = [
                (SignalKind::interrupt(), 2),
                (SignalKind::terminate(), 15),
                (SignalKind::hangup(), 1),
            ]
            .map(|(kind, n)| (signal(kind).expect("install a signal handler"), n));
            let [(int, i), (term, t), (hup, h)] = &mut streams;
            let n = tokio::select! {
                _ = int.recv() => *i,
                _ = term.recv() => *t,
                _ = hup.recv() => *h,
            };
            let me = std::process::id();
            let children: Vec<u32> = processes()
                .filter(|p| p.ppid == me)
                .map(|p| p.pid)
                .collect();
            for &pid in &children {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            for &pid in &children {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            }
            let dirs =
                std::mem::take(&mut *CLUSTER_DIRS.lock().unwrap_or_else(PoisonError::into_inner));
            for dir in &dirs {
                let _ = std::fs::remove_dir_all(dir);
            }
            eprintln!(
                "fepha-bench: signal {n}: killed {} child processes, removed {dirs:?}",
                children.len()
            );
            std::process::exit(128 + n);
        });
    });
}

/// Warns about `fepha run` processes that are not this benchmark's (an earlier run that was
/// killed): they take CPU from the nodes measured. They are not killed here: they may be
/// someone else's.
fn warn_about_strays() {
    let strays: Vec<u32> = processes()
        .filter(|p| p.is_fepha_run())
        .map(|p| p.pid)
        .collect();
    if !strays.is_empty() {
        eprintln!(
            "fepha-bench: WARNING: {} `fepha run` processes are already running (pids {strays:?}); \
             they compete for the CPU and lower every figure. Stop them first.",
            strays.len()
        );
    }
}

pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub argv: Vec<String>,
}

impl Process {
    fn is_fepha_run(&self) -> bool {
        let bin = self.argv.first().map(|a| a.rsplit('/').next().unwrap_or(a));
        bin == Some("fepha") && self.argv.get(1).map(String::as_str) == Some("run")
    }
}

/// Every process /proc shows, with its parent and command line.
pub fn processes() -> impl Iterator<Item = Process> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some(Process { pid, ppid, argv })
        })
}
