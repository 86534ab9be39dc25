//! `fepha sim iec104` as a process: a simulated IEC 104 controlled station with its JSON-lines
//! log (the lines and their fields are documented in `src/sim/iec104/mod.rs`), for the tests
//! that need a 104 station to acquire from or to judge a master by.
//!
//! ```text
//! let sim = Sim104::start(([127, 0, 0, 1], 0).into(), PROFILE);   // port 0: any free port
//! let master = Master::start(&[(sim.addr(), Init::None)], 47, &[(100, "M_SP_TB_1")])?;
//! sim.wait_line(WAIT, "the master started", |l| l.event == "started");
//! ```

use std::fmt::Write as _;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::binary::{Profile as Build, fepha_binary};
use crate::{Cluster, POLL};

/// How long the sim may take to start listening.
const READY: Duration = Duration::from_secs(20);
/// What the sim says on stderr once it listens; its address follows.
const LISTENING: &str = "simulated IEC 104 station on ";

/// A running `fepha sim iec104`; dropping it kills the process.
#[derive(Debug)]
pub struct Sim104 {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    stderr: PathBuf,
    /// The sim's own directory, when it was not given one.
    _dir: Option<TempDir>,
}

/// One line of the sim's log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Its place in the log, from 0: a later line has a higher index.
    pub index: usize,
    /// The `event` field: `accepted`, `sent`, `ack`, `started`, ...
    pub event: String,
    /// The `conn` field, on the lines about a connection.
    pub conn: Option<u64>,
    pub time_ms: u64,
    /// The whole line.
    pub body: Value,
}

impl LogLine {
    /// The change numbers a `sent` line's objects carry, in order.
    pub fn changes(&self) -> Vec<u64> {
        self.objects()
            .iter()
            .filter_map(|o| o.get("change").and_then(Value::as_u64))
            .collect()
    }

    /// A `sent` line's objects.
    pub fn objects(&self) -> Vec<Value> {
        self.body
            .get("objects")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// A string field.
    pub fn str(&self, field: &str) -> Option<&str> {
        self.body.get(field).and_then(Value::as_str)
    }

    /// An unsigned number field.
    pub fn u64(&self, field: &str) -> Option<u64> {
        self.body.get(field).and_then(Value::as_u64)
    }
}

impl Sim104 {
    /// Starts the debug build's sim with `profile` (TOML text) on `listen`; port 0 picks a
    /// free port (see [`Sim104::addr`]). Its files go to a temporary directory of its own.
    pub fn start(listen: SocketAddr, profile: &str) -> Sim104 {
        let dir = tempfile::Builder::new()
            .prefix("fepha-sim104-")
            .tempdir()
            .expect("create the sim's directory");
        let mut sim = Sim104::start_in(
            dir.path(),
            &fepha_binary(Build::Debug),
            "sim104",
            listen,
            profile,
        );
        sim._dir = Some(dir);
        sim
    }

    /// Starts one in a cluster's directory, with the cluster's binary.
    pub fn start_for(c: &Cluster, listen: SocketAddr, profile: &str) -> Sim104 {
        let n = c.dir().read_dir().map_or(0, |d| d.count());
        Sim104::start_in(c.dir(), c.binary(), &format!("sim104-{n}"), listen, profile)
    }

    /// Starts `bin sim iec104` with its profile, log and stderr in `dir`, named `name.*`;
    /// returns once it listens.
    pub fn start_in(
        dir: &Path,
        bin: &Path,
        name: &str,
        listen: SocketAddr,
        profile: &str,
    ) -> Sim104 {
        let profile_path = dir.join(format!("{name}.toml"));
        std::fs::write(&profile_path, profile).expect("write the sim's profile");
        let log = dir.join(format!("{name}.jsonl"));
        let stderr = dir.join(format!("{name}.log"));
        let child = Command::new(bin)
            .args([
                "sim",
                "iec104",
                "--listen",
                &listen.to_string(),
                "--profile",
            ])
            .arg(&profile_path)
            .arg("--log")
            .arg(&log)
            // The listening line is at info level; it tells the port.
            .env("FEPHA_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).expect("create the sim's stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} sim iec104: {e}", bin.display()));
        let mut sim = Sim104 {
            child,
            addr: listen,
            log,
            stderr,
            _dir: None,
        };
        let deadline = Instant::now() + READY;
        sim.addr = loop {
            if let Some(addr) = listening(&sim.stderr_text()) {
                break addr;
            }
            if let Ok(Some(status)) = sim.child.try_wait() {
                panic!("the sim exited with {status}:\n{}", sim.stderr_text());
            }
            assert!(
                Instant::now() < deadline,
                "the sim does not say it listens within {READY:?}:\n{}",
                sim.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        sim
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Every line of the log so far, oldest first (a line being written is left out).
    pub fn lines(&self) -> Vec<LogLine> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .enumerate()
            .map(|(index, body)| LogLine {
                index,
                event: body
                    .get("event")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                conn: body.get("conn").and_then(Value::as_u64),
                time_ms: body.get("time_ms").and_then(Value::as_u64).unwrap_or(0),
                body,
            })
            .collect()
    }

    /// The lines of one event kind.
    pub fn events(&self, event: &str) -> Vec<LogLine> {
        self.lines()
            .into_iter()
            .filter(|l| l.event == event)
            .collect()
    }

    /// Polls the log until `probe` gives `Ok`, or panics after `timeout` with `what`, the
    /// probe's last reason and [`Sim104::report`].
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut(&[LogLine]) -> Result<T, String>,
    ) -> T {
        crate::wait_until(timeout, what, || probe(&self.lines()), || self.report())
    }

    /// Waits for the first line `pred` accepts.
    pub fn wait_line(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&LogLine) -> bool,
    ) -> LogLine {
        self.wait_until(timeout, what, |lines| {
            lines
                .iter()
                .find(|l| pred(l))
                .cloned()
                .ok_or_else(|| format!("{} lines, none matches", lines.len()))
        })
    }

    /// Every spontaneous change sent on connection `conn` so far: (change number, its time
    /// tag in Unix ms if it has one), in send order.
    pub fn sent_changes(&self, conn: u64) -> Vec<(u64, Option<i64>)> {
        self.lines()
            .iter()
            .filter(|l| l.event == "sent" && l.conn == Some(conn))
            .flat_map(|l| {
                l.objects().into_iter().filter_map(|o| {
                    let change = o.get("change").and_then(Value::as_u64)?;
                    Some((change, o.get("time_ms").and_then(Value::as_i64)))
                })
            })
            .collect()
    }

    /// The last log lines and stderr, for failure messages.
    pub fn report(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = format!(
            "--- last lines of the sim's log ({} in all) ---\n",
            lines.len()
        );
        for l in &lines[lines.len().saturating_sub(30)..] {
            let _ = writeln!(out, "{l}");
        }
        let stderr = self.stderr_text();
        let tail: Vec<&str> = stderr.lines().collect();
        let _ = writeln!(out, "--- the sim's stderr ---");
        for l in &tail[tail.len().saturating_sub(20)..] {
            let _ = writeln!(out, "{l}");
        }
        out
    }

    /// Sends SIGTERM and waits (up to 10 s) for the sim to exit.
    pub fn terminate(mut self) -> ExitStatus {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let pid = i32::try_from(self.child.id()).expect("a pid fits in i32");
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("send SIGTERM to the sim");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the sim") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the sim did not stop on SIGTERM\n{}",
                self.report()
            );
            std::thread::sleep(POLL / 10);
        }
    }
}

impl Drop for Sim104 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the sim's "listening" line, if it has written it.
fn listening(stderr: &str) -> Option<SocketAddr> {
    let line = stderr.lines().find(|l| l.contains(LISTENING))?;
    let rest = line.split(LISTENING).nth(1)?;
    rest.split([',', ' ']).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address() {
        let line = "2025-01-01T00:00:00Z  INFO fepha::sim::iec104: simulated IEC 104 station on \
                    127.0.0.1:40123, common address 47, 3 points";
        assert_eq!(listening(line), Some(([127, 0, 0, 1], 40123).into()));
        assert_eq!(listening("nothing yet"), None);
    }
}
