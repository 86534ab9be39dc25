//! The site under test: the nodes in network namespaces, a Modbus device behind a tap, a 104
//! device, and a redundant c104 master with a link to every node.
//!
//! Every node has a namespace of its own with a veth to a bridge in a hub namespace. The
//! campaign process moves its main thread into the hub before it starts anything of the
//! field side, so the devices, the tap and the master (and their threads and processes) live
//! there: the bridge gets one more address, `.254`, for the tap and the 104 device, and the
//! master reaches each node's forwarder on the node's own address. Nothing of it is outside
//! the namespaces the campaign made.

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use fepha_cluster_tests::master::{Init, LinkState, Master};
use fepha_cluster_tests::sim104::Sim104;
use fepha_cluster_tests::{Cluster, Options, Profile, PyDevice};

use crate::clock::FakeClock;
use crate::slowdisk::SlowDisk;
use crate::tap::Tap;

pub const MODBUS_PORT: u16 = 1502;
pub const DEVICE_104_PORT: u16 = 2404;
pub const FORWARDER_PORT: u16 = 2404;
pub const CA: u16 = 47;
/// Sequence points on the Modbus device: holding registers 0.., forwarded at 2000 + k.
pub const SEQ_POINTS: u16 = 4;
pub const SEQ_IOA: u32 = 2000;
/// The setpoint commands write to (holding register), forwarded at this IOA.
pub const SETPOINT_REGISTER: u16 = 50;
pub const SETPOINT_IOA: u32 = 5001;
/// Indications of the 104 device (IOA 100 + k there), forwarded at 1100 + k.
pub const SIM_POINTS: u32 = 4;
pub const SIM_IOA: u32 = 100;
pub const SIM_FORWARDED_IOA: u32 = 1100;
/// Each indication of the 104 device toggles this often.
pub const SIM_TOGGLE_MS: u64 = 400;
pub const POLL_MS: u64 = 100;
pub const SESSION_TTL_MS: u64 = 1000;
/// The node with the small tmpfs data directory, and how small.
pub const DISK_NODE: usize = 1;
const DISK_SIZE: &str = "256m";
/// The box that is the spare at first: it joins when a member leaves.
pub const SPARE: usize = 3;
/// The member that leaves first. From then on the two swap: the box that left is wiped and
/// is the next spare.
pub const LEAVER: usize = 2;
/// The node whose data directory is on the throttled loop device (with `slowdisk`).
pub const SLOW_NODE: usize = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Voters3,
    Witness,
}

impl Variant {
    pub fn roles(self) -> [&'static str; 3] {
        match self {
            Variant::Voters3 => ["voter", "voter", "voter"],
            Variant::Witness => ["voter", "voter", "witness"],
        }
    }
}

// Fields drop in order after `Drop::drop` has killed the nodes: the slow disk and the tmpfs
// before the cluster, whose directory holds their mount points and the image.
pub struct World {
    /// The slow node's loop device and cgroup, with the `slowdisk` fault; undone when the
    /// world goes.
    pub slow: Option<SlowDisk>,
    /// The disk node's tmpfs, unmounted when the world goes.
    _tmpfs: Tmpfs,
    pub c: Cluster,
    pub hub_ip: IpAddr,
    pub device: PyDevice,
    pub tap: Tap,
    pub sim: Sim104,
    pub master: Master,
    /// Each node's wall clock, when the clock fault is on (empty otherwise).
    pub clocks: Vec<FakeClock>,
    /// The nodes that are members now, by index.
    pub members: Mutex<Vec<usize>>,
    /// Config versions `config apply` said were committed: (version, sha256).
    pub committed: Mutex<Vec<(u64, String)>>,
    /// Blackhole routes in force, (in the namespace of, to the address of) → how many
    /// partitions want it: two partitions may share a route, and healing one must not heal
    /// the other.
    routes: Mutex<HashMap<(usize, usize), u32>>,
    /// The kernel has no netem: the slow-network fault used a token bucket.
    pub netem_missing: AtomicBool,
    /// Copy the cluster's directory (logs, history, device logs) before it is removed.
    pub keep: bool,
}

impl World {
    pub fn build(
        variant: Variant,
        profile: Profile,
        duration: Duration,
        fake_clocks: bool,
        slow_disk: bool,
    ) -> Result<World> {
        let mut c = Cluster::with(Options {
            profile,
            namespaces: Some(4),
            ..Options::default()
        });
        let ns = c
            .namespaces()
            .ok_or_else(|| anyhow!("a namespace cluster"))?;
        let hub = ns.hub().to_owned();
        let IpAddr::V4(first) = ns.ip(0) else {
            bail!("the namespaces are IPv4");
        };
        let [a, b, x, _] = first.octets();
        let hub_ip = IpAddr::V4(Ipv4Addr::new(a, b, x, 254));
        run(
            "ip",
            &[
                "-n",
                &hub,
                "addr",
                "add",
                &format!("{hub_ip}/24"),
                "dev",
                "br0",
            ],
        )?;
        run("ip", &["-n", &hub, "link", "set", "lo", "up"])?;
        enter_namespace(&hub)?;

        let mut roles: Vec<&str> = variant.roles().to_vec();
        roles.push(roles[LEAVER]);
        let ids: Vec<usize> = roles.iter().map(|r| c.add_node(r)).collect();
        let clocks = if fake_clocks {
            crate::clock::verify(c.binary(), c.dir())?;
            ids.iter()
                .map(|&i| FakeClock::install(&c, i))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let data = c.node(DISK_NODE).data_dir.clone();
        std::fs::create_dir_all(&data)?;
        let tmpfs = Tmpfs::mount(data)?;
        let slow = if slow_disk {
            // Named after the campaign's pid: another campaign on the machine has its own.
            let cgroup = format!("fepha-nemesis-{}-{}", std::process::id(), c.name(SLOW_NODE));
            let disk = SlowDisk::create(
                &c.dir().join("slowdisk.img"),
                &c.node(SLOW_NODE).data_dir,
                &cgroup,
            )
            .context(
                "the slow-disk fault cannot be set up here; leave `slowdisk` out of --faults",
            )?;
            Some(disk)
        } else {
            None
        };
        let first3 = [0, 1, 2];
        c.start(&first3);
        if let (Some(disk), Some(pid)) = (&slow, c.node(SLOW_NODE).pid()) {
            disk.enrol(pid)?;
        }
        c.init(0);
        c.wait_for_leader(&[0]);
        for i in 1..3 {
            c.join(i, 0);
        }
        c.wait_for_members(&first3, &first3);
        c.wait_for_leader(&first3);

        let device = PyDevice::start(([127, 0, 0, 1], 0).into());
        let tap = Tap::start(SocketAddr::new(hub_ip, MODBUS_PORT), device.addr())?;
        let sim = Sim104::start_in(
            c.dir(),
            c.binary(),
            "sim104",
            SocketAddr::new(hub_ip, DEVICE_104_PORT),
            &sim_profile(duration),
        );
        let mut points: Vec<(u32, &str)> = (0..u32::from(SEQ_POINTS))
            .map(|k| (SEQ_IOA + k, "M_ME_TF_1"))
            .collect();
        points.extend((0..SIM_POINTS).map(|k| (SIM_FORWARDED_IOA + k, "M_SP_TB_1")));
        let conns: Vec<(SocketAddr, Init)> = ids
            .iter()
            .map(|&i| (SocketAddr::new(c.ip(i), FORWARDER_PORT), Init::None))
            .collect();
        let master = Master::start(&conns, CA, &points).context("the c104 master")?;
        let world = World {
            slow,
            c,
            hub_ip,
            device,
            tap,
            sim,
            master,
            clocks,
            members: Mutex::new(first3.to_vec()),
            _tmpfs: tmpfs,
            committed: Mutex::new(Vec::new()),
            routes: Mutex::new(HashMap::new()),
            netem_missing: AtomicBool::new(false),
            keep: false,
        };
        let applied = world
            .c
            .apply(0, &world.site(0), "15s")
            .map_err(|e| anyhow!("the first site config: {e}"))?;
        world.committed_push(applied.version, applied.sha256);
        world.wait_ready()?;
        Ok(world)
    }

    /// Puts node `i`'s process in the slow disk's cgroup if it is the slow node; a no-op
    /// otherwise. Its first writes after a start may pass unthrottled, before this runs.
    pub fn enrol(&self, i: usize) -> Result<()> {
        match (&self.slow, self.c.node(i).pid()) {
            (Some(disk), Some(pid)) if i == SLOW_NODE => disk.enrol(pid),
            _ => Ok(()),
        }
    }

    pub fn members(&self) -> Vec<usize> {
        self.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_members(&self, members: Vec<usize>) {
        *self.members.lock().unwrap_or_else(|e| e.into_inner()) = members;
    }

    pub fn committed_push(&self, version: u64, sha: String) {
        self.committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((version, sha));
    }

    pub fn committed(&self) -> Vec<(u64, String)> {
        self.committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until both RTUs are polled by some node and the master has a started link.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let polled = self.tap.requests().iter().any(|r| r.function == 3);
            let started = self.sim.events("started").len();
            let open = (0..self.master.conn_count())
                .any(|i| matches!(self.master.state(i), Ok(LinkState::Open)));
            if polled && started > 0 && open {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the site did not come up in 60 s: modbus polled {polled}, 104 starts \
                     {started}, master link open {open}\n{}",
                    self.c.report()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Adds (or, `add` false, gives up) a blackhole route in node `from`'s namespace to node
    /// `to`'s address.
    pub fn blackhole(&self, from: usize, to: usize, add: bool) -> Result<()> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let n = routes.entry((from, to)).or_default();
        let op = match (add, *n) {
            (true, 0) => Some("add"),
            (false, 1) => Some("del"),
            _ => None,
        };
        if let Some(op) = op {
            let dst = format!("{}/32", self.c.ip(to));
            run(
                "ip",
                &["-n", &self.ns(from), "route", op, "blackhole", &dst],
            )?;
        }
        *n = if add { *n + 1 } else { n.saturating_sub(1) };
        Ok(())
    }

    pub fn ns(&self, i: usize) -> String {
        self.c.node(i).netns.clone().unwrap_or_default()
    }

    /// The site: a Modbus RTU `m` with the sequence registers and a setpoint, a 104 RTU `s`
    /// with toggling indications, and a forwarder mapping all of it. `n` only changes the
    /// name, so every apply is a new version that restarts nothing.
    pub fn site(&self, n: u64) -> String {
        let modbus = SocketAddr::new(self.hub_ip, MODBUS_PORT);
        let iec104 = SocketAddr::new(self.hub_ip, DEVICE_104_PORT);
        let mut s = format!(
            r#"[site]
name = "nemesis {n}"
[timers]
session_ttl_ms = {SESSION_TTL_MS}

[[rtu]]
id = "m"
protocol = "modbus"
poll_interval_ms = {POLL_MS}
timeout_ms = 1000
standby = "probe"
  [[rtu.channel]]
  name = "lan"
  endpoints = ["{modbus}"]

[[point]]
id = "m.sp"
rtu = "m"
kind = "setpoint"
table = "holding"
address = {SETPOINT_REGISTER}
format = "u16"

[[rtu]]
id = "s"
protocol = "iec104"
standby = "probe"
poll_interval_ms = 100
  [rtu.iec104]
  common_address = 5
  t0_s = 1
  t1_s = 3
  t2_s = 1
  t3_s = 5
  [[rtu.channel]]
  name = "lan"
  endpoints = ["{iec104}"]
"#
        );
        for k in 0..SEQ_POINTS {
            s += &format!(
                "[[point]]\nid = \"m.seq{k}\"\nrtu = \"m\"\nkind = \"measured\"\ntable = \"holding\"\n\
                 address = {k}\nformat = \"u16\"\ndeadband = 0.5\n"
            );
        }
        for k in 0..SIM_POINTS {
            s += &format!(
                "[[point]]\nid = \"s.p{k}\"\nrtu = \"s\"\nkind = \"single\"\ntype = \"M_SP_TB_1\"\nioa = {}\n",
                SIM_IOA + k
            );
        }
        s += &format!(
            "[[forwarder]]\nname = \"cc\"\nport = {FORWARDER_PORT}\ncommon_address = {CA}\n"
        );
        for k in 0..SEQ_POINTS {
            s += &format!(
                "  [[forwarder.map]]\n  point = \"m.seq{k}\"\n  ioa = {}\n",
                SEQ_IOA + u32::from(k)
            );
        }
        for k in 0..SIM_POINTS {
            s += &format!(
                "  [[forwarder.map]]\n  point = \"s.p{k}\"\n  ioa = {}\n",
                SIM_FORWARDED_IOA + k
            );
        }
        s += &format!("  [[forwarder.map]]\n  point = \"m.sp\"\n  ioa = {SETPOINT_IOA}\n");
        s
    }
}

impl Drop for World {
    /// Kills every process, also when the campaign panicked; the cluster's directory goes
    /// with the cluster, copied first if `keep`.
    fn drop(&mut self) {
        for i in 0..self.c.len() {
            self.c.kill(i);
        }
        if self.keep {
            let kept =
                std::env::temp_dir().join(format!("fepha-nemesis-{}", crate::history::now_ms()));
            let (from, to) = (self.c.dir().to_string_lossy(), kept.to_string_lossy());
            match run("cp", &["-a", &from, &to]) {
                Ok(()) => eprintln!("kept the run's files in {to}"),
                Err(e) => eprintln!("cannot keep the run's files: {e}"),
            }
        }
    }
}

/// A small tmpfs mounted on a directory until dropped, also when the set-up fails half way.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf) -> Result<Tmpfs> {
        let size = format!("size={DISK_SIZE}");
        run(
            "mount",
            &["-t", "tmpfs", "-o", &size, "tmpfs", &dir.to_string_lossy()],
        )?;
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a node that still has a file open there must not keep it mounted.
        if let Err(e) = run("umount", &["-l", &self.0.to_string_lossy()]) {
            eprintln!("cannot unmount the disk node's tmpfs: {e}");
        }
    }
}

/// Four indications toggling one after another, for the whole run and a little more.
fn sim_profile(duration: Duration) -> String {
    let count = duration.as_millis() as u64 / SIM_TOGGLE_MS + 1;
    let mut p = String::from("common_address = 5\nk = 12\nw = 8\n");
    for k in 0..SIM_POINTS {
        p += &format!(
            "[[point]]\nioa = {}\ntype = \"M_SP_TB_1\"\nvalue = false\n",
            SIM_IOA + k
        );
        p += &format!(
            "[[schedule]]\nkind = \"toggle\"\nioa = {}\nevery_ms = {SIM_TOGGLE_MS}\ncount = {count}\nstart_after_ms = {}\n",
            SIM_IOA + k,
            5000 + u64::from(k) * SIM_TOGGLE_MS / u64::from(SIM_POINTS)
        );
    }
    p
}

/// Moves this thread (and so every thread and process it starts from now on) into `ns`.
fn enter_namespace(ns: &str) -> Result<()> {
    let f = File::open(format!("/run/netns/{ns}")).with_context(|| format!("namespace {ns}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns into {ns}"))?;
    Ok(())
}

pub fn run(cmd: &str, args: &[&str]) -> Result<()> {
    output(cmd, args).map(|_| ())
}

/// Runs `cmd` and returns its trimmed stdout.
pub fn output(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
