//! Where a cluster's nodes listen: a private loopback block, or network namespaces.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

pub const RAFT_PORT: u16 = 7101;
pub const ADMIN_PORT: u16 = 7102;
pub const METRICS_PORT: u16 = 9101;
/// Held open for a block's lifetime by whoever owns it; no node listens on it.
const RESERVATION_PORT: u16 = 7100;

/// Blocks taken by this process; the reservation socket guards against other processes.
static TAKEN: Mutex<Option<HashSet<(u8, u8)>>> = Mutex::new(None);

/// 127.X.Y.0/24, node n (1-based) on 127.X.Y.n.
#[derive(Debug)]
pub struct LoopbackBlock {
    x: u8,
    y: u8,
    _reservation: TcpListener,
}

impl LoopbackBlock {
    /// A random block whose ports are free for nodes 1..=max_nodes.
    pub fn reserve(max_nodes: u8) -> LoopbackBlock {
        let mut rng = rand::rng();
        for _ in 0..500 {
            let (x, y) = (rng.random_range(10..250u8), rng.random_range(10..250u8));
            let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
            let taken = taken.get_or_insert_with(HashSet::new);
            if taken.contains(&(x, y)) {
                continue;
            }
            let Ok(reservation) =
                TcpListener::bind((Ipv4Addr::new(127, x, y, 254), RESERVATION_PORT))
            else {
                continue;
            };
            let free = (1..=max_nodes).all(|n| {
                [RAFT_PORT, ADMIN_PORT, METRICS_PORT]
                    .iter()
                    .all(|p| TcpListener::bind((Ipv4Addr::new(127, x, y, n), *p)).is_ok())
            });
            if free {
                taken.insert((x, y));
                return LoopbackBlock {
                    x,
                    y,
                    _reservation: reservation,
                };
            }
        }
        panic!("found no free 127.X.Y.0/24 block for a test cluster");
    }

    pub fn ip(&self, node: usize) -> IpAddr {
        let n = u8::try_from(node + 1).expect("fewer than 250 nodes");
        IpAddr::V4(Ipv4Addr::new(127, self.x, self.y, n))
    }
}

impl Drop for LoopbackBlock {
    fn drop(&mut self) {
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = taken.as_mut() {
            t.remove(&(self.x, self.y));
        }
    }
}

/// One network namespace per node, each with a veth link to a bridge in a hub namespace.
/// Setting a node's link down on the hub side cuts it off from every other node while its
/// own CLI still reaches it.
#[derive(Debug)]
pub struct Namespaces {
    hub: String,
    nodes: Vec<String>,
    subnet: (u8, u8),
}

static NAMESPACE_SETS: AtomicUsize = AtomicUsize::new(0);

impl Namespaces {
    pub fn create(count: usize) -> Result<Namespaces, String> {
        remove_stale();
        let pid = std::process::id();
        let base = format!(
            "fpt-{pid}-{}",
            NAMESPACE_SETS.fetch_add(1, Ordering::SeqCst)
        );
        // Addresses exist only inside these namespaces, so they cannot collide with anything.
        let subnet = (201, u8::try_from(pid % 200).expect("below 200"));
        let mut ns = Namespaces {
            hub: format!("{base}-hub"),
            nodes: Vec::new(),
            subnet,
        };
        ip(&["netns", "add", &ns.hub]).map_err(|e| {
            format!(
                "cannot create network namespace {} (the partition test needs root and iproute2): {e}",
                ns.hub
            )
        })?;
        ip(&["-n", &ns.hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &ns.hub, "link", "set", "br0", "up"])?;
        for i in 0..count {
            let name = format!("{base}-n{}", i + 1);
            ip(&["netns", "add", &name])?;
            ns.nodes.push(name.clone());
            let hub_end = hub_link(i);
            ip(&[
                "-n", &ns.hub, "link", "add", &hub_end, "type", "veth", "peer", "name", "eth0",
                "netns", &name,
            ])?;
            ip(&["-n", &ns.hub, "link", "set", &hub_end, "master", "br0"])?;
            ip(&["-n", &ns.hub, "link", "set", &hub_end, "up"])?;
            let cidr = format!("{}/24", ns.ip(i));
            ip(&["-n", &name, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &name, "link", "set", "eth0", "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            no_neighbour_queue(&name)?;
        }
        Ok(ns)
    }

    pub fn count(&self) -> usize {
        self.nodes.len()
    }

    pub fn ip(&self, node: usize) -> IpAddr {
        let n = u8::try_from(node + 1).expect("fewer than 250 nodes");
        IpAddr::V4(Ipv4Addr::new(10, self.subnet.0, self.subnet.1, n))
    }

    pub fn namespace(&self, node: usize) -> &str {
        &self.nodes[node]
    }

    /// The namespace that holds the bridge; whatever runs there reaches every node's link.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// Cuts `node` off from all the others.
    pub fn cut(&self, node: usize) -> Result<(), String> {
        ip(&["-n", &self.hub, "link", "set", &hub_link(node), "down"])
    }

    pub fn heal(&self, node: usize) -> Result<(), String> {
        ip(&["-n", &self.hub, "link", "set", &hub_link(node), "up"])
    }
}

impl Drop for Namespaces {
    /// The caller has killed the processes; deleting a node namespace deletes its veth pair.
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain([&self.hub]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// As docs/install.md asks of a field box: while a neighbour is being resolved (after the
/// link came back), no packet waits for it. Linux would otherwise keep what a node sent
/// during a cut for up to three seconds and send it when the link returns, when another
/// node may own the device; an abortive close cannot recall it from there.
fn no_neighbour_queue(namespace: &str) -> Result<(), String> {
    // /proc/sys/net is the namespace's own for a process in it.
    ip(&[
        "netns",
        "exec",
        namespace,
        "sh",
        "-c",
        "echo 0 > /proc/sys/net/ipv4/neigh/eth0/unres_qlen_bytes",
    ])
}

fn hub_link(node: usize) -> String {
    format!("v{}", node + 1)
}

pub fn addr(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces left behind by a test process that was killed before its Drop ran.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("fpt-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
            for p in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                if let Ok(p) = p.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = ip(&["netns", "del", name]);
    }
}
