//! The field side of a test cluster: device addresses in the cluster's loopback block,
//! `fepha sim modbus` as a process with its request log, and what the nodes say about RTUs
//! and points.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Cluster;

/// Device `k` of the cluster: 127.X.Y.(200+k), in the cluster's own block, so tests that run
/// side by side never share a device.
pub fn device_addr(c: &Cluster, k: u8, port: u16) -> SocketAddr {
    let IpAddr::V4(node) = c.ip(0) else {
        panic!("loopback clusters are IPv4");
    };
    let [a, x, y, _] = node.octets();
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, x, y, 200 + k)), port)
}

/// `fepha sim modbus` with a request log, killed when dropped.
pub struct SimDevice {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    stderr: PathBuf,
}

/// One request in the sim's log.
#[derive(Debug, Clone)]
pub struct Request {
    pub time_ms: u64,
    pub ip: IpAddr,
    pub function: String,
}

impl SimDevice {
    pub fn start(c: &Cluster, addr: SocketAddr, profile: &str) -> SimDevice {
        let n = c.dir().read_dir().map_or(0, |d| d.count());
        let profile_path = c.dir().join(format!("sim-{n}.toml"));
        std::fs::write(&profile_path, profile).expect("write the sim profile");
        let log = c.dir().join(format!("sim-{n}.jsonl"));
        let stderr = c.dir().join(format!("sim-{n}.log"));
        let child = Command::new(c.binary())
            .args(["sim", "modbus", "--listen", &addr.to_string(), "--profile"])
            .arg(&profile_path)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).expect("sim stderr file"))
            .spawn()
            .expect("start fepha sim modbus");
        let mut sim = SimDevice {
            child,
            addr,
            log,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = sim.child.try_wait() {
                panic!("the sim exited with {status}: {}", sim.stderr_text());
            }
            assert!(
                Instant::now() < deadline,
                "the sim does not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sim
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Every request logged so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|v| {
                let client: SocketAddr = v["client"].as_str()?.parse().ok()?;
                Some(Request {
                    time_ms: v["time_ms"].as_u64()?,
                    ip: client.ip(),
                    function: v["function"].as_str().unwrap_or_default().to_owned(),
                })
            })
            .collect()
    }
}

impl Drop for SimDevice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One RTU as `rtu list --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtuView {
    pub owner: String,
    pub epoch: u64,
    pub reachable_from: Vec<String>,
    pub unreachable_from: Vec<String>,
}

/// RTU id → what node `i` reports (the leader's view).
pub fn rtus(c: &Cluster, i: usize) -> Result<BTreeMap<String, RtuView>, String> {
    let out = c.cli(i, &["rtu", "list", "--json", "--timeout", "3s"]);
    if !out.success() {
        return Err(format!("rtu list: {}", out.stderr.trim()));
    }
    let list: Vec<Value> =
        serde_json::from_str(&out.stdout).map_err(|e| format!("rtu list --json: {e}"))?;
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(list
        .iter()
        .map(|r| {
            (
                r["rtu"].as_str().unwrap_or_default().to_owned(),
                RtuView {
                    owner: r["owner"].as_str().unwrap_or_default().to_owned(),
                    epoch: r["epoch"].as_u64().unwrap_or(0),
                    reachable_from: names(&r["reachable_from"]),
                    unreachable_from: names(&r["unreachable_from"]),
                },
            )
        })
        .collect())
}

/// One point as `point list --json` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PointView {
    pub number: Option<f64>,
    pub invalid: bool,
    pub not_topical: bool,
    pub source: String,
    pub epoch: u64,
}

/// Point id → what node `i` has applied.
pub fn points(c: &Cluster, i: usize) -> Result<BTreeMap<String, PointView>, String> {
    let out = c.cli(i, &["point", "list", "--json"]);
    if !out.success() {
        return Err(format!("point list: {}", out.stderr.trim()));
    }
    let list: Vec<Value> =
        serde_json::from_str(&out.stdout).map_err(|e| format!("point list --json: {e}"))?;
    Ok(list
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap_or_default().to_owned(),
                PointView {
                    number: p["number"].as_f64(),
                    invalid: p["invalid"].as_bool().unwrap_or(false),
                    not_topical: p["not_topical"].as_bool().unwrap_or(false),
                    source: p["source"].as_str().unwrap_or_default().to_owned(),
                    epoch: p["epoch"].as_u64().unwrap_or(0),
                },
            )
        })
        .collect())
}

/// Waits until every node in `among` has `want` (point id → number) with good quality.
pub fn wait_points(c: &Cluster, among: &[usize], want: &[(&str, f64)]) {
    c.wait_until(&format!("every node has the points {want:?}"), || {
        for &i in among {
            let have = points(c, i)?;
            for (id, number) in want {
                let p = have
                    .get(*id)
                    .ok_or(format!("{} has no point {id}", c.name(i)))?;
                let close = p.number.is_some_and(|n| (n - number).abs() < 1e-6);
                if !close || p.invalid || p.not_topical {
                    return Err(format!("{} has {id} = {p:?}, want {number}", c.name(i)));
                }
            }
        }
        Ok(())
    });
}

/// The node index whose name is `name`.
pub fn index_named(c: &Cluster, name: &str) -> usize {
    c.index_of(name)
        .unwrap_or_else(|| panic!("{name:?} is not a node of this cluster"))
}

/// A counter or gauge from node `i`'s /metrics, summed over its labels.
pub fn metric(c: &Cluster, i: usize, name: &str) -> Option<f64> {
    let text = c.metrics(i).ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            l.as_bytes()
                .get(name.len())
                .is_some_and(|b| *b == b' ' || *b == b'{')
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// RTU `d`'s view from node `i`, once it has an owner.
pub fn owner(c: &Cluster, i: usize) -> Result<RtuView, String> {
    let view = rtus(c, i)?.remove("d").ok_or("no RTU d")?;
    if view.owner.is_empty() {
        return Err(format!("RTU d has no owner: {view:?}"));
    }
    Ok(view)
}

/// Moves RTU d away from the leader, so that a kill of its owner measures the lease alone.
/// Returns the owner, and the node it was moved from if it was moved.
pub fn owner_not_leader(c: &Cluster) -> (usize, Option<String>) {
    owner_placed(c, false)
}

/// Moves RTU d onto the Raft leader, so that a kill of its owner kills the leader too.
/// Returns the owner (the leader), and the node it was moved from if it was moved.
pub fn owner_leader(c: &Cluster) -> (usize, Option<String>) {
    owner_placed(c, true)
}

fn owner_placed(c: &Cluster, on_leader: bool) -> (usize, Option<String>) {
    let leader = c.wait_for_leader(&[0, 1, 2]);
    let view = c.wait_until("RTU d has an owner", || owner(c, 0));
    let now = index_named(c, &view.owner);
    if on_leader == (now == leader) {
        return (now, None);
    }
    let to = if on_leader { leader } else { (leader + 1) % 3 };
    c.wait_until(&format!("{} reaches the device", c.name(to)), || {
        let v = owner(c, 0)?;
        v.reachable_from
            .iter()
            .any(|n| n == c.name(to))
            .then_some(())
            .ok_or(format!("{v:?}"))
    });
    let out = c.cli(0, &["rtu", "move", "d", "--to", c.name(to)]);
    assert!(out.success(), "rtu move: {}", out.stderr);
    (to, Some(view.owner))
}

/// A site with one Modbus RTU `d` at `endpoint`: a point of every monitored kind (a single,
/// a double, an f32 measurement with a deadband, a u32 counter) and two commands (a coil, a
/// scaled i16 setpoint), the way the acquisition and forwarder tests use it.
pub fn one_rtu_site(endpoint: SocketAddr, poll_ms: u64, standby: &str) -> String {
    format!(
        r#"
[site]
name = "one RTU"

[[rtu]]
id = "d"
protocol = "modbus"
poll_interval_ms = {poll_ms}
timeout_ms = 1000
standby = "{standby}"
  [[rtu.channel]]
  name = "lan"
  endpoints = ["{endpoint}"]

[[point]]
id = "d.alarm"
rtu = "d"
kind = "single"
table = "discrete_input"
address = 0

[[point]]
id = "d.breaker"
rtu = "d"
kind = "double"
table = "discrete_input"
address = 2

[[point]]
id = "d.power"
rtu = "d"
kind = "measured"
table = "holding"
address = 10
format = "f32"
deadband = 0.5

[[point]]
id = "d.energy"
rtu = "d"
kind = "counter"
table = "input"
address = 20
format = "u32"

[[point]]
id = "d.trip"
rtu = "d"
kind = "single_command"
table = "coil"
address = 0

[[point]]
id = "d.limit"
rtu = "d"
kind = "setpoint"
table = "holding"
address = 30
format = "i16"
scale = 0.1
"#
    )
}
