//! A cluster of `fepha run` processes and the CLI calls the tests make against them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fepha::admin::client::Credentials;
use fepha::tls::{Identity, PinnedNodes};
use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::binary::{Profile, fepha_binary};
use crate::net::{ADMIN_PORT, LoopbackBlock, METRICS_PORT, Namespaces, RAFT_PORT, addr};
use crate::node::NodeProc;
use crate::status::{Applied, ConfigShow, HistoryEntry, Status};

/// How long a test waits for anything the cluster should do by itself. Generous: CI is a
/// loaded two-core box running debug builds.
pub const WAIT: Duration = Duration::from_secs(20);
/// How long one CLI call may take before it counts as hung.
const CLI_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Options {
    /// The body of node.toml's `[raft]` table (`key = value` lines); empty for the defaults.
    pub raft: String,
    pub profile: Profile,
    /// Put each node in its own network namespace (`Some(node count)`) instead of loopback.
    pub namespaces: Option<usize>,
    /// Loopback only: how many nodes the cluster may grow to.
    pub max_nodes: u8,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            raft: String::new(),
            profile: Profile::Debug,
            namespaces: None,
            max_nodes: 5,
        }
    }
}

#[derive(Debug)]
enum Network {
    Loopback(LoopbackBlock),
    Namespaces(Namespaces),
}

/// What a CLI call did. `code` is None when it was killed for taking too long.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A valid site configuration document that no other call produces.
pub fn site_config(tag: &str, n: u64) -> String {
    format!("# written by the cluster tests\n[site]\nname = \"{tag} {n}\"\n")
}

// Fields drop in order after `Drop::drop` has killed the processes: the namespaces go
// before the directory, the directory last.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<NodeProc>,
    bin: PathBuf,
    raft_toml: String,
    rt: tokio::runtime::Runtime,
    observed: Mutex<BTreeMap<String, (Instant, String)>>,
    files: AtomicUsize,
    network: Network,
    dir: TempDir,
}

impl Cluster {
    /// An empty loopback cluster with default timers.
    pub fn new() -> Cluster {
        Cluster::with(Options::default())
    }

    pub fn with(options: Options) -> Cluster {
        let bin = fepha_binary(options.profile);
        let network = match options.namespaces {
            Some(n) => Network::Namespaces(
                Namespaces::create(n).unwrap_or_else(|e| panic!("network namespaces: {e}")),
            ),
            None => Network::Loopback(LoopbackBlock::reserve(options.max_nodes)),
        };
        let raft_toml = if options.raft.trim().is_empty() {
            String::new()
        } else {
            format!("[raft]\n{}\n", options.raft.trim())
        };
        Cluster {
            nodes: Vec::new(),
            bin,
            raft_toml,
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime"),
            observed: Mutex::new(BTreeMap::new()),
            files: AtomicUsize::new(0),
            network,
            dir: tempfile::Builder::new()
                .prefix("fepha-cluster-")
                .tempdir()
                .expect("temporary directory"),
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn binary(&self) -> &std::path::Path {
        &self.bin
    }

    /// Writes the next node's node.toml (name `fep<N>`); does not start it.
    pub fn add_node(&mut self, role: &str) -> usize {
        let i = self.nodes.len();
        let (ip, netns) = match &self.network {
            Network::Loopback(b) => (b.ip(i), None),
            Network::Namespaces(ns) => {
                assert!(i < ns.count(), "only {} namespaces were made", ns.count());
                (ns.ip(i), Some(ns.namespace(i).to_owned()))
            }
        };
        self.nodes.push(NodeProc::new(
            format!("fep{}", i + 1),
            role.to_owned(),
            addr(ip, RAFT_PORT),
            addr(ip, ADMIN_PORT),
            addr(ip, METRICS_PORT),
            self.dir.path(),
            netns,
            &self.raft_toml,
        ));
        i
    }

    pub fn node(&self, i: usize) -> &NodeProc {
        &self.nodes[i]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn admin_addr(&self, i: usize) -> String {
        self.nodes[i].admin_addr.to_string()
    }

    pub fn raft_addr(&self, i: usize) -> String {
        self.nodes[i].raft_addr.to_string()
    }

    pub fn ip(&self, i: usize) -> IpAddr {
        self.nodes[i].admin_addr.ip()
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    // ---- processes ----

    /// Starts the nodes and waits until each answers `status`.
    pub fn start(&self, ids: &[usize]) {
        for &i in ids {
            self.nodes[i].spawn(&self.bin);
        }
        for &i in ids {
            self.wait_started(i);
        }
    }

    /// Starts node `i` from another binary (an upgraded one) and waits until it answers
    /// `status`. The CLI calls go on using the cluster's binary.
    pub fn start_from(&self, i: usize, bin: &std::path::Path) {
        self.nodes[i].spawn(bin);
        self.wait_started(i);
    }

    fn wait_started(&self, i: usize) {
        self.wait_until(
            &format!("{} answers status after start", self.name(i)),
            || {
                if !self.nodes[i].is_running() {
                    self.fail(&format!("{} exited while starting", self.name(i)));
                }
                self.status(i).map(|_| ())
            },
        );
    }

    /// Starts the nodes without waiting for them: a node may not come up (a full disk), and
    /// the caller decides what that means.
    pub fn spawn(&self, ids: &[usize]) {
        for &i in ids {
            self.nodes[i].spawn(&self.bin);
        }
    }

    /// The namespaces of a cluster made with `namespaces: Some(n)`.
    pub fn namespaces(&self) -> Option<&Namespaces> {
        match &self.network {
            Network::Namespaces(ns) => Some(ns),
            Network::Loopback(_) => None,
        }
    }

    pub fn kill(&self, i: usize) {
        self.nodes[i].kill_now();
    }

    /// SIGKILL to every one of `ids` before reaping any, so none outlives the others.
    pub fn kill_at_once(&self, ids: &[usize]) {
        for &i in ids {
            self.nodes[i].signal(Signal::SIGKILL);
        }
        for &i in ids {
            self.nodes[i].kill_now();
        }
    }

    /// SIGTERM, and the node must exit cleanly (code 0) within [`WAIT`], with every task
    /// stopped by its own hand: a part that had to be aborted held the stop for its whole
    /// patience, which a service manager waiting on the stop would see.
    pub fn terminate(&self, i: usize) {
        self.nodes[i].signal(Signal::SIGTERM);
        match self.nodes[i].wait_exit(WAIT) {
            Some(status) if status.success() => {
                let log = std::fs::read_to_string(&self.nodes[i].log_path).unwrap_or_default();
                let last_run = log.rsplit("==== harness: starting").next().unwrap_or("");
                if let Some(line) = last_run
                    .lines()
                    .find(|l| l.contains("did not stop in time"))
                {
                    self.fail(&format!(
                        "{} stopped only by aborting: {line}",
                        self.name(i)
                    ));
                }
            }
            Some(status) => self.fail(&format!(
                "{} did not exit cleanly on SIGTERM: {status}",
                self.name(i)
            )),
            None => self.fail(&format!(
                "{} still runs {WAIT:?} after SIGTERM",
                self.name(i)
            )),
        }
    }

    pub fn stop(&self, i: usize) {
        self.nodes[i].signal(Signal::SIGSTOP);
    }

    pub fn cont(&self, i: usize) {
        self.nodes[i].signal(Signal::SIGCONT);
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].is_running()
    }

    /// Cuts node `i` off from the others (namespace clusters only).
    pub fn cut(&self, i: usize) {
        let Network::Namespaces(ns) = &self.network else {
            panic!("cut() needs a cluster in network namespaces");
        };
        ns.cut(i).unwrap_or_else(|e| self.fail(&e));
    }

    pub fn heal(&self, i: usize) {
        let Network::Namespaces(ns) = &self.network else {
            panic!("heal() needs a cluster in network namespaces");
        };
        ns.heal(i).unwrap_or_else(|e| self.fail(&e));
    }

    // ---- the CLI ----

    pub async fn cli_async(&self, i: usize, args: &[&str], limit: Duration) -> CliOutput {
        let node = &self.nodes[i];
        let mut std_cmd = node.command(&self.bin);
        std_cmd
            .arg("-c")
            .arg(&node.config_path)
            .args(args)
            .stdin(Stdio::null());
        self.output_within(tokio::process::Command::from(std_cmd), limit)
            .await
    }

    /// Runs `cmd` to its end, or kills it after `limit` (its `code` is then None).
    async fn output_within(&self, mut cmd: tokio::process::Command, limit: Duration) -> CliOutput {
        cmd.kill_on_drop(true);
        match tokio::time::timeout(limit, cmd.output()).await {
            Ok(Ok(out)) => CliOutput {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Ok(Err(e)) => panic!("cannot run {}: {e}", self.bin.display()),
            Err(_) => CliOutput {
                code: None,
                stdout: String::new(),
                stderr: format!("(the harness killed it: no answer within {limit:?})"),
            },
        }
    }

    /// `fepha ARGS...` with nothing added, killed after `limit`.
    pub fn run_bare(&self, args: &[&str], limit: Duration) -> CliOutput {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args).stdin(Stdio::null());
        self.rt.block_on(self.output_within(cmd, limit))
    }

    /// `fepha -c <node i's node.toml> ARGS...`
    pub fn cli(&self, i: usize, args: &[&str]) -> CliOutput {
        self.rt.block_on(self.cli_async(i, args, CLI_LIMIT))
    }

    /// Like [`Cluster::cli`], killed after `limit`.
    pub fn cli_within(&self, i: usize, args: &[&str], limit: Duration) -> CliOutput {
        self.rt.block_on(self.cli_async(i, args, limit))
    }

    /// Like [`Cluster::cli`], and the command must succeed; gives its stdout.
    pub fn cli_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.cli(i, args);
        if !out.success() {
            self.fail(&format!(
                "`fepha {}` on {} failed (exit {:?})\nstdout: {}\nstderr: {}",
                args.join(" "),
                self.name(i),
                out.code,
                out.stdout.trim(),
                out.stderr.trim()
            ));
        }
        out.stdout
    }

    async fn status_async(&self, i: usize) -> Result<Status, String> {
        let out = self
            .cli_async(i, &["status", "--json"], Duration::from_secs(10))
            .await;
        let result = if out.success() {
            serde_json::from_str::<Status>(&out.stdout).map_err(|e| {
                format!(
                    "status --json is not what the tests expect: {e}: {}",
                    out.stdout
                )
            })
        } else {
            Err(format!(
                "status failed (exit {:?}): {}",
                out.code,
                out.stderr.trim()
            ))
        };
        let seen = match &result {
            Ok(s) => s.summary(),
            Err(e) => e.clone(),
        };
        self.observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.name(i).to_owned(), (Instant::now(), seen));
        result
    }

    /// `fepha status --json` on node `i`.
    pub fn status(&self, i: usize) -> Result<Status, String> {
        self.rt.block_on(self.status_async(i))
    }

    /// The statuses of `ids`, asked concurrently.
    pub fn statuses(&self, ids: &[usize]) -> Vec<Result<Status, String>> {
        self.rt.block_on(futures::future::join_all(
            ids.iter().map(|&i| self.status_async(i)),
        ))
    }

    pub fn init(&self, i: usize) {
        self.cli_ok(i, &["init"]);
    }

    /// Node `i` joins with a token made on node `via`.
    pub fn join(&self, i: usize, via: usize) {
        let token = self.cli_ok(via, &["token", "create"]);
        let token = token.trim().to_owned();
        self.cli_ok(i, &["join", "--token", &token, "--timeout", "30s"]);
    }

    /// What the tests' own gRPC clients present and believe: node 0's identity (trusted by
    /// every member), and every node's certificate as it is on disk now.
    pub fn credentials(&self) -> Credentials {
        let identity = self.identity(0).unwrap_or_else(|e| self.fail(&e));
        let fingerprints = (0..self.nodes.len())
            .filter_map(|i| self.identity(i).ok())
            .map(|id| id.fingerprint)
            .collect();
        Credentials {
            identity: Some(identity),
            trust: Arc::new(PinnedNodes(fingerprints)),
        }
    }

    /// Node `i`'s key and certificate, made by the node at its first start.
    pub fn identity(&self, i: usize) -> Result<Identity, String> {
        let dir = fepha::node::tls_dir(&self.nodes[i].data_dir);
        Identity::load(&dir).map_err(|e| format!("{}: {e}", self.name(i)))
    }

    /// `config apply --timeout TIMEOUT` of `text` through node `i`; Err carries the CLI's
    /// stderr. A CLI still running 20 s after its own timeout is killed and counts as failed.
    pub fn apply(&self, i: usize, text: &str, timeout: &str) -> Result<Applied, String> {
        let n = self.files.fetch_add(1, Ordering::SeqCst);
        let file = self.dir.path().join(format!("site-{n}.toml"));
        std::fs::write(&file, text).expect("write site config");
        let file = file.to_string_lossy().into_owned();
        let limit = crate::wait::parse_duration(timeout).expect("a timeout like 2s or 500ms")
            + Duration::from_secs(20);
        let out = self.cli_within(i, &["config", "apply", "--timeout", timeout, &file], limit);
        if !out.success() {
            return Err(format!("exit {:?}: {}", out.code, out.stderr.trim()));
        }
        Applied::parse_cli(&out.stdout)
            .ok_or_else(|| format!("unexpected `config apply` output: {}", out.stdout))
    }

    pub fn apply_ok(&self, i: usize, text: &str) -> Applied {
        self.apply(i, text, "15s").unwrap_or_else(|e| {
            self.fail(&format!(
                "config apply through {} failed: {e}",
                self.name(i)
            ))
        })
    }

    pub fn config_show(&self, i: usize) -> Result<ConfigShow, String> {
        self.cli_json(i, &["config", "show", "--json"])
    }

    pub fn config_history(&self, i: usize) -> Result<Vec<HistoryEntry>, String> {
        self.cli_json(i, &["config", "history", "--json"])
    }

    /// A CLI call that prints JSON, parsed.
    fn cli_json<T: serde::de::DeserializeOwned>(
        &self,
        i: usize,
        args: &[&str],
    ) -> Result<T, String> {
        let what = args.join(" ");
        let out = self.cli(i, args);
        if !out.success() {
            return Err(format!(
                "{what}: exit {:?}: {}",
                out.code,
                out.stderr.trim()
            ));
        }
        serde_json::from_str(&out.stdout).map_err(|e| format!("{what}: {e}"))
    }

    /// The node's Prometheus text (loopback clusters only).
    pub fn metrics(&self, i: usize) -> Result<String, String> {
        let a = self.nodes[i].metrics_addr;
        let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(2))
            .map_err(|e| format!("metrics {a}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {a}\r\n\r\n").map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.read_to_string(&mut text)
            .map_err(|e| format!("metrics {a}: {e}"))?;
        match text.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200") => {
                Ok(body.to_owned())
            }
            _ => Err(format!("metrics {a}: unexpected answer {text:.200}")),
        }
    }

    // ---- waiting ----

    /// Polls `probe` until Ok, up to [`WAIT`]; panics with [`Cluster::report`] on time-out.
    pub fn wait_until<T>(&self, what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
        crate::wait::wait_until(WAIT, what, probe, || self.report())
    }

    /// Every one of `among` names the same leader, which is one of them and says it leads.
    pub fn wait_for_leader(&self, among: &[usize]) -> usize {
        self.wait_until(&format!("{} agree on a leader", self.names(among)), || {
            let statuses = self.statuses(among);
            let mut leader: Option<String> = None;
            for s in statuses {
                let s = s?;
                let l = s.leader.ok_or(format!("{} sees no leader", s.node))?;
                match &leader {
                    Some(other) if *other != l => {
                        return Err(format!("{} sees {l}, another sees {other}", s.node));
                    }
                    _ => leader = Some(l),
                }
            }
            let name = leader.ok_or("no nodes asked")?;
            let i = self
                .index_of(&name)
                .filter(|i| among.contains(i))
                .ok_or(format!("the leader {name} is not one of them"))?;
            let s = self.status(i)?;
            if s.is_leader() {
                Ok(i)
            } else {
                Err(format!("{name} is named leader but says {}", s.state))
            }
        })
    }

    /// Every one of `among` sees exactly `voters` as the members, all voters, and the same
    /// membership as the others.
    pub fn wait_for_members(&self, among: &[usize], voters: &[usize]) -> Vec<Status> {
        let mut want: Vec<String> = voters.iter().map(|&i| self.name(i).to_owned()).collect();
        want.sort();
        self.wait_until(
            &format!(
                "{} all see exactly {want:?} as voting members",
                self.names(among)
            ),
            || {
                let statuses: Vec<Status> =
                    self.statuses(among).into_iter().collect::<Result<_, _>>()?;
                for s in &statuses {
                    if s.member_names() != want || s.voter_names() != want {
                        return Err(format!(
                            "{} sees members {:?}, voters {:?}",
                            s.node,
                            s.member_names(),
                            s.voter_names()
                        ));
                    }
                    if s.membership() != statuses[0].membership() {
                        return Err(format!(
                            "{} and {} disagree on member details",
                            s.node, statuses[0].node
                        ));
                    }
                }
                Ok(statuses)
            },
        )
    }

    /// Every one of `among` has applied the same index and config version, and they agree
    /// on a leader.
    pub fn wait_converged(&self, among: &[usize]) -> Vec<Status> {
        self.wait_until(
            &format!("{} reach the same applied index", self.names(among)),
            || {
                let statuses: Vec<Status> =
                    self.statuses(among).into_iter().collect::<Result<_, _>>()?;
                let first = &statuses[0];
                for s in &statuses {
                    if s.leader.is_none() || s.leader != first.leader {
                        return Err(format!("{} sees leader {:?}", s.node, s.leader));
                    }
                    if (s.applied_index, s.config_version)
                        != (first.applied_index, first.config_version)
                    {
                        return Err(format!(
                            "{} applied {} (config v{}), {} applied {} (config v{})",
                            s.node,
                            s.applied_index,
                            s.config_version,
                            first.node,
                            first.applied_index,
                            first.config_version
                        ));
                    }
                }
                Ok(statuses)
            },
        )
    }

    /// Starts `roles.len()` new nodes and makes them one cluster: `init` on the first,
    /// `join` through it for the others. Gives the leader.
    pub fn bootstrap(&mut self, roles: &[&str]) -> usize {
        let ids: Vec<usize> = roles.iter().map(|r| self.add_node(r)).collect();
        self.start(&ids);
        self.init(ids[0]);
        self.wait_for_leader(&ids[..1]);
        for &i in &ids[1..] {
            self.join(i, ids[0]);
        }
        self.wait_for_members(&ids, &ids);
        self.wait_for_leader(&ids)
    }

    // ---- diagnostics ----

    fn names(&self, ids: &[usize]) -> String {
        let names: Vec<&str> = ids.iter().map(|&i| self.name(i)).collect();
        names.join(", ")
    }

    /// Panics with `msg` and the report.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{}", self.report())
    }

    /// Each node's process, last observed and current status, and log tail.
    pub fn report(&self) -> String {
        let mut out = format!(
            "==== cluster in {} (binary {}) ====\n",
            self.dir.path().display(),
            self.bin.display()
        );
        // A report made inside a task (a panicking poller) cannot block on the runtime.
        let may_block = tokio::runtime::Handle::try_current().is_err();
        for (i, n) in self.nodes.iter().enumerate() {
            let _ = writeln!(
                out,
                "---- {} [{}] admin {} raft {}: {}",
                n.name,
                n.role,
                n.admin_addr,
                n.raft_addr,
                n.describe_process()
            );
            let last = self
                .observed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&n.name)
                .map(|(at, s)| format!("{:.1}s ago: {s}", at.elapsed().as_secs_f64()));
            let _ = writeln!(
                out,
                "last observed status: {}",
                last.as_deref().unwrap_or("none")
            );
            if may_block && n.is_running() && !n.is_stopped() {
                let now = self.rt.block_on(self.cli_async(
                    i,
                    &["status", "--json"],
                    Duration::from_secs(3),
                ));
                let now = match serde_json::from_str::<Status>(&now.stdout) {
                    Ok(s) => s.summary(),
                    Err(_) => format!("exit {:?}: {}", now.code, now.stderr.trim()),
                };
                let _ = writeln!(out, "status now: {now}");
            }
            let _ = writeln!(out, "log tail ({}):", n.log_path.display());
            for line in n.log_tail(30).lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
        out
    }
}

impl Default for Cluster {
    fn default() -> Cluster {
        Cluster::new()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.kill_now();
        }
        // Keep the evidence of a failed test when asked to.
        if std::thread::panicking() && std::env::var_os("FEPHA_TEST_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept {}", self.dir.path().display());
        }
    }
}
