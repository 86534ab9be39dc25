//! `fepha demo`: a whole local site on loopback, for a newcomer to see it work.
//!
//! The nodes are real `fepha run` child processes, so they can be killed and restarted by
//! hand while the demo runs. Whatever ends the demo (Ctrl-C, SIGTERM, SIGHUP, its stdout
//! closing as in `fepha demo | head`) stops the nodes and removes the site's files, so the
//! next demo finds its ports free; if the demo itself is killed, the nodes stop with it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use tokio::signal::unix::{SignalKind, signal};

type Listener = tokio::signal::unix::Signal;
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::call::{Target, retrying};
use super::output::{clean_up_when_gone, outln, stdout_gone};
use crate::config::NodeConfig;
use crate::proto::admin::*;

const NODES: [&str; 3] = ["fep1", "fep2", "fep3"];
const SITE: &str = include_str!("../../examples/demo-site.toml");
const PROFILE: &str = include_str!("../../examples/sim-profile.toml");
const PROFILE_104: &str = include_str!("../../examples/sim-iec104-profile.toml");
/// Where the simulated devices listen; examples/demo-site.toml reads them there.
const DEVICE: &str = "127.0.0.1:5020";
const DEVICE_104: &str = "127.0.0.1:5021";

struct DemoNode {
    config: NodeConfig,
    path: PathBuf,
    child: Child,
}

/// The environment variable that tells a demo node which process is its demo.
const PARENT_ENV: &str = "FEPHA_DEMO_PARENT";

pub(super) async fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    // Listening from the start: a Ctrl-C while the site starts must clean up as well.
    let mut endings = Endings::new().context("cannot listen for signals")?;
    clean_up_when_gone();
    let (dir, _temp) = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            (d, None)
        }
        None => {
            let t = tempfile::Builder::new().prefix("fepha-demo-").tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    let (stop_device, device_stopped) = tokio::sync::oneshot::channel::<()>();
    let device = start_device(stop_device_future(device_stopped)).await?;
    let mut nodes = Vec::new();
    let started = tokio::select! {
        r = start_all(&dir, &mut nodes) => r.map(|()| true),
        why = endings.next() => {
            tracing::info!("{why}: stopping the demo site while it starts");
            Ok(false)
        }
    };
    if matches!(started, Ok(true)) {
        print_intro(&dir, &nodes).await;
        watch(&dir, &mut nodes, &mut endings).await;
    }
    stop_all(&mut nodes).await;
    let _ = stop_device.send(());
    let _ = device.await;
    started.map(|_| ())
}

/// Runs the demo's screen until something ends it.
async fn watch(dir: &Path, nodes: &mut [DemoNode], endings: &mut Endings) {
    let mut watch = Watch::default();
    loop {
        if stdout_gone() {
            tracing::info!("stdout closed: stopping the demo site");
            return;
        }
        tokio::select! {
            why = endings.next() => {
                outln!("\n{why} received: stopping the demo site");
                return;
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if let Err(e) = watch.step(dir, nodes).await {
                    outln!("{e:#}");
                    return;
                }
            }
        }
    }
}

/// The signals that end the demo: Ctrl-C, SIGTERM, and SIGHUP (its terminal closed).
struct Endings {
    term: Listener,
    int: Listener,
    hup: Listener,
}

impl Endings {
    fn new() -> std::io::Result<Endings> {
        Ok(Endings {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Called by `fepha run` first: a node the demo started stops when its demo dies, even by
/// SIGKILL, instead of holding the demo's ports for good.
pub(super) fn stop_with_parent() -> anyhow::Result<()> {
    let Some(parent) = std::env::var_os(PARENT_ENV) else {
        return Ok(());
    };
    // The kernel sends the signal when the thread that forked us ends; the demo forks from
    // its runtime's worker threads, which live as long as the demo.
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).context("cannot follow the demo's life")?;
    // The demo may have died before the line above: then no signal will come.
    if parent.to_str() != Some(&nix::unistd::getppid().to_string()) {
        bail!("the demo that started this node has gone");
    }
    Ok(())
}

async fn stop_device_future(rx: tokio::sync::oneshot::Receiver<()>) {
    let _ = rx.await;
}

/// The simulated devices the demo site reads, a Modbus device and an IEC 104 controlled
/// station, served in this process until `stop`.
async fn start_device(
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let profile = crate::sim::Profile::parse(Path::new("examples/sim-profile.toml"), PROFILE)?;
    let sim = crate::sim::bind(DEVICE.parse()?, &profile, None)
        .await
        .with_context(|| format!("cannot start the simulated device (is {DEVICE} free?)"))?;
    let profile_104 = crate::sim::iec104::Profile::parse(
        Path::new("examples/sim-iec104-profile.toml"),
        PROFILE_104,
    )?;
    let sim_104 = crate::sim::iec104::bind(DEVICE_104.parse()?, &profile_104, None)
        .await
        .with_context(|| {
            format!("cannot start the simulated 104 device (is {DEVICE_104} free?)")
        })?;
    Ok(tokio::spawn(async move {
        let (stopped, shared) = tokio::sync::watch::channel(false);
        let mut for_104 = shared.clone();
        let modbus = sim.serve(async move {
            let mut shared = shared;
            let _ = shared.wait_for(|s| *s).await;
        });
        let iec104 = sim_104.serve(async move {
            let _ = for_104.wait_for(|s| *s).await;
        });
        let trigger = async move {
            stop.await;
            let _ = stopped.send(true);
        };
        tokio::join!(modbus, iec104, trigger);
    }))
}

/// What the demo tells the user while it runs: leader changes, nodes that died, and their
/// restart (after a pause, so the take-over can be watched first).
#[derive(Default)]
struct Watch {
    leader: Option<(String, u64)>,
    restarts: Vec<(usize, Instant)>,
    /// RTU id → (owner, epoch) last shown.
    owners: std::collections::BTreeMap<String, (String, u64)>,
    /// The point values last shown.
    points: String,
}

const RESTART_AFTER: Duration = Duration::from_secs(5);

impl Watch {
    async fn step(&mut self, dir: &Path, nodes: &mut [DemoNode]) -> anyhow::Result<()> {
        for (i, n) in nodes.iter_mut().enumerate() {
            if self.restarts.iter().any(|(j, _)| *j == i) {
                continue;
            }
            if let Ok(Some(status)) = n.child.try_wait() {
                outln!(
                    "node {} exited ({status}); the demo restarts it in {} s",
                    n.config.name,
                    RESTART_AFTER.as_secs()
                );
                self.restarts.push((i, Instant::now() + RESTART_AFTER));
            }
        }
        let now = Instant::now();
        let due: Vec<usize> = self
            .restarts
            .iter()
            .filter(|(_, t)| *t <= now)
            .map(|(i, _)| *i)
            .collect();
        self.restarts.retain(|(_, t)| *t > now);
        for i in due {
            nodes[i].child = spawn(&nodes[i].path, dir, &nodes[i].config.name)?;
            outln!(
                "node {} restarted; it catches up from the others",
                nodes[i].config.name
            );
        }
        for n in nodes.iter() {
            let Ok(target) = Target::node(&n.config) else {
                continue;
            };
            let Ok(mut client) = target.connect().await else {
                continue;
            };
            let Ok(reply) = client.status(StatusRequest { local_only: true }).await else {
                continue;
            };
            let s = reply.into_inner();
            if let Some(leader) = s.leader {
                let seen = Some((leader.clone(), s.term));
                if self.leader != seen {
                    outln!("leader: {leader} (term {})", s.term);
                    self.leader = seen;
                }
                self.show_site(&mut client).await;
                break;
            }
        }
        Ok(())
    }

    /// Ownership moves and point values, as one live node sees them.
    async fn show_site(
        &mut self,
        client: &mut crate::proto::admin::admin_client::AdminClient<tonic::transport::Channel>,
    ) {
        if let Ok(reply) = client.rtu_list(RtuListRequest { forwarded: false }).await {
            for r in reply.into_inner().rtus {
                let seen = (r.owner.clone(), r.epoch);
                if self.owners.get(&r.rtu) != Some(&seen) && !r.owner.is_empty() {
                    outln!(
                        "RTU {}: polled by {} (lease epoch {})",
                        r.rtu,
                        r.owner,
                        r.epoch
                    );
                    self.owners.insert(r.rtu, seen);
                }
            }
        }
        let Ok(reply) = client.point_list(PointListRequest::default()).await else {
            return;
        };
        let line = reply
            .into_inner()
            .points
            .iter()
            .filter(|p| p.has_value)
            .map(|p| {
                let quality = if p.invalid { " (invalid)" } else { "" };
                format!("{}={}{quality}", p.id, p.value)
            })
            .collect::<Vec<_>>()
            .join("  ");
        if !line.is_empty() && line != self.points {
            outln!("points: {line}");
            self.points = line;
        }
    }
}

fn spawn(config: &Path, dir: &Path, name: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the fepha executable")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?;
    Command::new(&exe)
        .args(["run", "-c"])
        .arg(config)
        .env(PARENT_ENV, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start node {name}"))
}

async fn start_all(dir: &Path, nodes: &mut Vec<DemoNode>) -> anyhow::Result<()> {
    for (i, name) in NODES.iter().enumerate() {
        let n = i + 1;
        let text = format!(
            "name = \"{name}\"\ndata_dir = \"{data}\"\nraft_addr = \"127.0.0.1:7{n}01\"\n\
             admin_addr = \"127.0.0.1:7{n}02\"\nmetrics_addr = \"127.0.0.1:9{n}01\"\nrole = \"voter\"\n\
             forwarder_ip = \"127.0.0.{n}\"\n",
            data = dir.join(name).display()
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, &text)?;
        let config = NodeConfig::parse(&path, &text)?;
        let child = spawn(&path, dir, name)?;
        nodes.push(DemoNode {
            config,
            path,
            child,
        });
    }
    for node in nodes.iter_mut() {
        wait_until_up(node, dir).await?;
    }
    let timeout = Duration::from_secs(15);
    let first = Target::node(&nodes[0].config)?.connect().await?;
    retrying(timeout, || {
        let mut c = first.clone();
        async move { c.init(InitRequest {}).await }
    })
    .await?;
    for node in &nodes[1..] {
        let token = retrying(timeout, || {
            let mut c = first.clone();
            let request = TokenCreateRequest {
                ttl_s: 60,
                forwarded: false,
            };
            async move { c.token_create(request).await }
        })
        .await?
        .into_inner()
        .token;
        let client = Target::node(&node.config)?.connect().await?;
        retrying(timeout, || {
            let mut c = client.clone();
            let request = JoinRequest {
                token: token.clone(),
                ..Default::default()
            };
            async move { c.join(request).await }
        })
        .await
        .with_context(|| format!("node {} could not join", node.config.name))?;
    }
    retrying(timeout, || {
        let mut c = first.clone();
        async move {
            c.config_apply(ConfigApplyRequest {
                text: SITE.to_string(),
                forwarded: false,
                dry_run: false,
            })
            .await
        }
    })
    .await?;
    Ok(())
}

async fn wait_until_up(node: &mut DemoNode, dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = node.child.try_wait()? {
            let log = dir.join(format!("{}.log", node.config.name));
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "node {} exited at start ({status}); its log says:\n{tail}\n\
                 (are the ports 7101-7302 and 9101-9301 on 127.0.0.1 free?)",
                node.config.name
            );
        }
        // The node writes its identity at start, before it listens.
        if let Ok(target) = Target::node(&node.config)
            && target.connect().await.is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node {} did not start within 20 s", node.config.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn print_intro(dir: &Path, nodes: &[DemoNode]) {
    outln!(
        "fepha demo: a three-node site on 127.0.0.1, files in {}\n",
        dir.display()
    );
    let shown = match Target::node(&nodes[0].config) {
        Ok(target) => super::status::status(&target, false).await,
        Err(e) => Err(e),
    };
    if let Err(e) = shown {
        outln!("(status failed: {e:#})");
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| "fepha".into());
    let exe = exe.display();
    let first = nodes[0].path.display();
    outln!("\nTry, from another terminal:");
    outln!("  {exe} -c {first} status");
    outln!("  {exe} -c {first} config show");
    outln!("  {exe} -c {first} rtu list");
    outln!("  {exe} -c {first} point list");
    outln!("  {exe} -c {first} point write sim.breaker-cmd off");
    outln!("  {exe} -c {first} point write bay.breaker-cmd on    # the 104 RTU, 2 s to move");
    outln!("  {exe} -c {first} iec104 connections");
    outln!(
        "IEC 104 (common address 1): the leader serves masters on 127.0.0.N:2404 (N = 1, 2, 3 \
         for fep1..fep3); connect a master to all three."
    );
    for n in nodes {
        let pid = n.child.id().map_or_else(|| "?".into(), |p| p.to_string());
        outln!(
            "  kill -9 {pid}    # kill {} and watch the others take over; metrics at http://{}/metrics",
            n.config.name,
            n.config.metrics_addr
        );
    }
    outln!(
        "Logs: {}/fep*.log. Ctrl-C stops the site and removes its files.",
        dir.display()
    );
}

async fn stop_all(nodes: &mut [DemoNode]) {
    for n in nodes.iter() {
        if let Some(pid) = n.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for n in nodes.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(5), n.child.wait())
            .await
            .is_err()
        {
            let _ = n.child.kill().await;
        }
    }
}
