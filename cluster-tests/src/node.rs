//! One node: its files and its `fepha run` process.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[derive(Debug)]
pub struct NodeProc {
    pub name: String,
    pub role: String,
    pub raft_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Network namespace every command for this node runs in, if any.
    pub netns: Option<String>,
    /// Environment variables given to `fepha run` from its next start on.
    env: Mutex<Vec<(String, String)>>,
    proc: Mutex<Proc>,
}

#[derive(Debug, Default)]
struct Proc {
    child: Option<Child>,
    stopped: bool,
    /// How the last process ended, for diagnostics.
    last_exit: Option<String>,
}

impl NodeProc {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        role: String,
        raft_addr: SocketAddr,
        admin_addr: SocketAddr,
        metrics_addr: SocketAddr,
        dir: &Path,
        netns: Option<String>,
        raft_toml: &str,
    ) -> NodeProc {
        let data_dir = dir.join(&name);
        let config_path = dir.join(format!("{name}.toml"));
        let log_path = dir.join(format!("{name}.log"));
        // Field connections leave from the node's own IP, so a proxy in front of a device can
        // tell the nodes apart and fail one node's channel alone; its 104 forwarders listen
        // there too, so every node can serve the site's port.
        let ip = raft_addr.ip();
        let text = format!(
            "name = \"{name}\"\ndata_dir = \"{}\"\nraft_addr = \"{raft_addr}\"\n\
             admin_addr = \"{admin_addr}\"\nmetrics_addr = \"{metrics_addr}\"\nrole = \"{role}\"\n\
             field_source_ip = \"{ip}\"\nforwarder_ip = \"{ip}\"\n{raft_toml}",
            data_dir.display(),
        );
        std::fs::write(&config_path, text).expect("write node.toml");
        NodeProc {
            name,
            role,
            raft_addr,
            admin_addr,
            metrics_addr,
            config_path,
            data_dir,
            log_path,
            netns,
            env: Mutex::new(Vec::new()),
            proc: Mutex::new(Proc::default()),
        }
    }

    /// `bin args...`, inside this node's namespace if it has one.
    pub fn command(&self, bin: &Path) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        }
    }

    /// Sets `key=value` in the environment of the node's next `fepha run` (and every one after).
    pub fn set_env(&self, key: &str, value: &str) {
        let mut env = self.env.lock().unwrap_or_else(|e| e.into_inner());
        env.retain(|(k, _)| k != key);
        env.push((key.to_owned(), value.to_owned()));
    }

    fn lock(&self) -> MutexGuard<'_, Proc> {
        self.proc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `fepha run`; output goes to the node's log file, appended across restarts.
    pub(crate) fn spawn(&self, bin: &Path) {
        let mut p = self.lock();
        assert!(
            p.child.is_none(),
            "{} is already running; kill it first",
            self.name
        );
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open node log");
        writeln!(
            log,
            "==== harness: starting {} from {} ====",
            self.name,
            bin.display()
        )
        .expect("write node log");
        let err = log.try_clone().expect("clone log handle");
        let env = self.env.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // `ip netns exec` execs fepha, so this pid is fepha's own.
        let child = self
            .command(bin)
            .envs(env)
            .arg("run")
            .arg("-c")
            .arg(&self.config_path)
            // Plain text: the log is read by people in a CI report, not on a terminal.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        p.child = Some(child);
        p.stopped = false;
    }

    pub fn pid(&self) -> Option<u32> {
        self.lock().child.as_ref().map(Child::id)
    }

    /// True if the process is there (stopped or not); notices a process that died.
    pub fn is_running(&self) -> bool {
        let mut p = self.lock();
        let exited = match p.child.as_mut() {
            None => return false,
            Some(c) => c.try_wait().ok().flatten(),
        };
        match exited {
            None => true,
            Some(status) => {
                p.child = None;
                p.stopped = false;
                p.last_exit = Some(describe_exit(status));
                false
            }
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    pub fn signal(&self, sig: Signal) {
        let mut p = self.lock();
        let child = p
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running; cannot send {sig}", self.name));
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
        kill(pid, sig).unwrap_or_else(|e| panic!("kill({pid}, {sig}) on {}: {e}", self.name));
        match sig {
            Signal::SIGSTOP => p.stopped = true,
            Signal::SIGCONT => p.stopped = false,
            _ => {}
        }
    }

    /// Waits for the process to end, up to `limit`; it stays ours if it does not.
    pub(crate) fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            {
                let mut p = self.lock();
                let child = p.child.as_mut()?;
                if let Ok(Some(status)) = child.try_wait() {
                    p.child = None;
                    p.stopped = false;
                    p.last_exit = Some(describe_exit(status));
                    return Some(status);
                }
            }
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL (after SIGCONT if stopped, so nothing lingers) and reap.
    pub(crate) fn kill_now(&self) {
        let mut p = self.lock();
        let stopped = p.stopped;
        if let Some(child) = p.child.as_mut() {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
            if stopped {
                let _ = kill(pid, Signal::SIGCONT);
            }
            let _ = kill(pid, Signal::SIGKILL);
            if let Ok(status) = child.wait() {
                p.last_exit = Some(describe_exit(status));
            }
        }
        p.child = None;
        p.stopped = false;
    }

    /// For diagnostics: running, stopped, exited how, or never started.
    pub fn describe_process(&self) -> String {
        let running = self.is_running();
        let p = self.lock();
        match (&p.child, running) {
            (Some(c), true) if p.stopped => format!("STOPPED (SIGSTOP), pid {}", c.id()),
            (Some(c), true) => format!("running, pid {}", c.id()),
            _ => match &p.last_exit {
                Some(e) => format!("not running; last process {e}"),
                None => "never started".to_owned(),
            },
        }
    }

    /// The last `lines` lines of the node's log (from at most its last 16 KiB).
    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log_path, lines).unwrap_or_else(|| "(no log file)".to_owned())
    }
}

/// The last `lines` lines of a file (from at most its last 16 KiB); None if it cannot be
/// opened.
pub(crate) fn file_tail(path: &Path, lines: usize) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    Some(all[all.len().saturating_sub(lines)..].join("\n"))
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("ended: {status}"),
    }
}
