//! `fepha demo`, the README's main job, run as a user runs it: whatever ends it (a closed
//! pipe, Ctrl-C, SIGTERM, SIGHUP) stops its three nodes and removes its files, so the next
//! demo starts; a demo killed outright takes its nodes with it.
//!
//! The demo listens on fixed addresses (127.0.0.1:7101.., 127.0.0.1:5020..), so these tests
//! take turns.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use fepha_cluster_tests::{Profile, fepha_binary, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A site of three nodes takes a few seconds to start; a node takes up to 10 s to stop.
const START: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(30);

struct Demo {
    child: Child,
    dir: PathBuf,
    nodes: Vec<Pid>,
    /// Every line the demo printed, as the reader thread saw them.
    lines: Receiver<String>,
}

impl Demo {
    /// Starts a demo and reads its introduction. With `hang_up`, the reader then closes the
    /// pipe, as `| head` does; else it goes on reading.
    fn start(hang_up: bool) -> Demo {
        let mut child = Command::new(fepha_binary(Profile::Debug))
            .arg("demo")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("fepha demo starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let intro_done = line.starts_with("Logs:");
                if tx.send(line).is_err() || (hang_up && intro_done) {
                    return;
                }
            }
        });
        let mut intro = Vec::new();
        let deadline = std::time::Instant::now() + START;
        while !intro
            .last()
            .is_some_and(|l: &String| l.starts_with("Logs:"))
        {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => intro.push(line),
                Err(e) => {
                    let _ = child.kill();
                    panic!("no introduction from the demo ({e}); it printed: {intro:#?}")
                }
            }
        }
        let dir = intro
            .iter()
            .find_map(|l| {
                l.split_once("files in ")
                    .map(|(_, d)| PathBuf::from(d.trim()))
            })
            .unwrap_or_else(|| panic!("the demo names its directory: {intro:#?}"));
        let nodes: Vec<Pid> = intro
            .iter()
            .filter_map(|l| l.trim().strip_prefix("kill -9 "))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .map(Pid::from_raw)
            .collect();
        assert_eq!(nodes.len(), 3, "{intro:#?}");
        assert!(dir.is_dir(), "{}", dir.display());
        assert!(nodes.iter().all(|&p| alive(p)), "{intro:#?}");
        Demo {
            child,
            dir,
            nodes,
            lines,
        }
    }

    fn signal(&self, s: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), s).expect("the demo is ours to signal");
    }

    /// Waits for the demo to end by itself, and gives its exit code.
    fn wait_for_exit(&mut self) -> Option<i32> {
        wait_until(
            STOP,
            "the demo exits",
            || match self.child.try_wait() {
                Ok(Some(status)) => Ok(status.code()),
                Ok(None) => Err("still running".into()),
                Err(e) => Err(e.to_string()),
            },
            || format!("{:?}", self.lines.try_iter().collect::<Vec<_>>()),
        )
    }

    fn wait_for_nodes_gone(&self) {
        wait_until(
            STOP,
            "the demo's nodes have stopped",
            || {
                let alive: Vec<_> = self.nodes.iter().filter(|&&p| alive(p)).collect();
                alive
                    .is_empty()
                    .then_some(())
                    .ok_or(format!("still running: {alive:?}"))
            },
            String::new,
        );
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A failed test must not leave a site holding the next test's ports.
        let _ = self.child.kill();
        let _ = self.child.wait();
        for &p in &self.nodes {
            let _ = kill(p, Signal::SIGKILL);
        }
    }
}

/// Whether `pid` runs. The demo's nodes are not our children, so once their demo has gone
/// nobody may reap them here: a zombie has stopped.
fn alive(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Ends a demo with `end`, and checks it cleaned up after itself.
fn ended_cleanly(hang_up: bool, end: Option<Signal>) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut demo = Demo::start(hang_up);
    if let Some(s) = end {
        demo.signal(s);
    }
    assert_eq!(demo.wait_for_exit(), Some(0));
    // The demo waits for its nodes before it exits.
    assert!(
        demo.nodes.iter().all(|&p| !alive(p)),
        "nodes left running: {:?}",
        demo.nodes
    );
    assert!(!demo.dir.exists(), "{} is left behind", demo.dir.display());
}

#[test]
fn a_closed_pipe_stops_the_demo_and_its_nodes_and_removes_its_files() {
    ended_cleanly(true, None);
}

#[test]
fn sigterm_stops_the_demo_and_its_nodes_and_removes_its_files() {
    ended_cleanly(false, Some(Signal::SIGTERM));
}

#[test]
fn ctrl_c_stops_the_demo_and_its_nodes_and_removes_its_files() {
    ended_cleanly(false, Some(Signal::SIGINT));
}

#[test]
fn a_closed_terminal_stops_the_demo_and_its_nodes_and_removes_its_files() {
    ended_cleanly(false, Some(Signal::SIGHUP));
}

#[test]
fn a_killed_demo_takes_its_nodes_with_it_and_the_next_demo_starts() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut killed = Demo::start(false);
    killed.signal(Signal::SIGKILL);
    assert_eq!(killed.wait_for_exit(), None);
    killed.wait_for_nodes_gone();
    // Nothing could remove the killed demo's files; the next demo does not need them gone.
    let _ = std::fs::remove_dir_all(&killed.dir);

    let mut next = Demo::start(false);
    next.signal(Signal::SIGTERM);
    assert_eq!(next.wait_for_exit(), Some(0));
    assert!(!next.dir.exists(), "{} is left behind", next.dir.display());
}
