//! The operator's view: `fepha status` (text and `--json`) with every member's own state,
//! progress, versions and RTUs, and its warnings when a member is down, when the cluster has
//! no fault tolerance left, and when members run different software or configuration
//! versions; `--watch` in a real terminal (tmux); `config check` with no node at all.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fepha_cluster_tests::{Cluster, Status, site_config};

/// One RTU whose endpoint nobody answers: it still gets an owner.
const SITE: &str = r#"
[site]
name = "operator view"

[[rtu]]
id = "r1"
protocol = "modbus"
  [[rtu.channel]]
  name = "lan"
  endpoints = ["127.0.0.1:1"]
"#;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn others(of: usize, but: usize) -> usize {
    (0..3).find(|&i| i != of && i != but).expect("three nodes")
}

/// `fepha status` (text) on node `i`: the member table's rows by name, split on blanks
/// (without the `*` that marks the node answering), and the warning lines.
fn status_text(c: &Cluster, i: usize) -> (Vec<Vec<String>>, Vec<String>, String) {
    let text = c.cli_ok(i, &["status"]);
    let mut lines = text.lines().skip_while(|l| !l.contains("REACHABLE"));
    let heading: Vec<&str> = lines
        .next()
        .unwrap_or_else(|| c.fail(&format!("no member table in:\n{text}")))
        .split_whitespace()
        .collect();
    assert_eq!(
        heading,
        [
            "NAME",
            "ROLE",
            "STATE",
            "REACHABLE",
            "TERM",
            "APPLIED",
            "LAG",
            "VERSION",
            "CONFIG",
            "UPTIME",
            "RTUS"
        ],
        "{text}"
    );
    let rows = lines
        .by_ref()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .filter(|w| *w != "*")
                .map(str::to_owned)
                .collect()
        })
        .collect();
    let warnings = text
        .lines()
        .filter(|l| l.starts_with("WARNING: "))
        .map(str::to_owned)
        .collect();
    (rows, warnings, text)
}

#[test]
fn status_shows_every_member_and_warns_when_one_is_down() {
    let started = Instant::now();
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    c.apply_ok(leader, SITE);
    let asked = (leader + 1) % 3;

    let s: Status = c.wait_until("every member is up, caught up and one owns r1", || {
        let s = c.status(asked)?;
        let owners: Vec<&str> = s
            .members
            .iter()
            .filter(|m| m.rtus == ["r1"])
            .map(|m| m.name.as_str())
            .collect();
        if owners.len() != 1 {
            return Err(format!("owners of r1: {owners:?}: {:?}", s.members));
        }
        for m in &s.members {
            if !m.reachable || m.lag.is_none_or(|l| l > 20) || m.config_version != Some(1) {
                return Err(format!("{m:?}"));
            }
        }
        Ok(s)
    });
    let term = s.term;
    let mut states: Vec<&str> = s
        .members
        .iter()
        .map(|m| m.state.as_deref().unwrap_or("?"))
        .collect();
    states.sort();
    assert_eq!(states, ["follower", "follower", "leader"], "{s:?}");
    let uptime_limit = started.elapsed().as_millis() as u64 + 1000;
    for m in &s.members {
        assert_eq!(m.term, Some(term), "{m:?}");
        assert_eq!(m.version.as_deref(), Some(VERSION), "{m:?}");
        assert!(m.applied_index.is_some_and(|a| a > 0), "{m:?}");
        assert!(
            m.uptime_ms.is_some_and(|u| u > 0 && u < uptime_limit),
            "uptime of {} is not since this test started ({uptime_limit} ms): {m:?}",
            m.name
        );
        assert_eq!(m.error, None, "{m:?}");
    }
    assert_eq!(
        s.member(&s.node)
            .and_then(|m| m.uptime_ms.map(|_| s.uptime_ms > 0)),
        Some(true)
    );
    assert_eq!(s.warnings, Vec::new(), "{s:?}");
    let owner = s
        .members
        .iter()
        .find(|m| !m.rtus.is_empty())
        .map(|m| m.name.clone())
        .expect("checked above");

    let (rows, warnings, text) = status_text(&c, asked);
    assert_eq!(rows.len(), 3, "{text}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], c.name(i), "rows go by name:\n{text}");
        assert_eq!(row[1], "voter", "{text}");
        assert_eq!(row[3], "yes", "{text}");
        assert_eq!(row[4], term.to_string(), "{text}");
        assert_eq!(row[7], VERSION, "{text}");
        assert_eq!(row[8], "1", "{text}");
        let rtus = if row[0] == owner { "r1" } else { "-" };
        assert_eq!(row[10], rtus, "{text}");
    }
    assert_eq!(warnings, Vec::<String>::new(), "{text}");

    // A follower dies: the others see it down, and know that one more failure stops them.
    let victim = others(leader, asked);
    let name = c.name(victim).to_owned();
    c.kill(victim);
    let s = c.wait_until(&format!("{} sees {name} down", c.name(asked)), || {
        let s = c.status(asked)?;
        match s.member(&name) {
            Some(m) if !m.reachable => Ok(s),
            other => Err(format!("{other:?}")),
        }
    });
    let m = s.member(&name).expect("checked above");
    assert_eq!(
        (&m.state, m.term, m.applied_index, &m.version, m.uptime_ms),
        (&None, None, None, &None, None),
        "a member that does not answer has no state of its own: {m:?}"
    );
    assert!(m.error.as_ref().is_some_and(|e| !e.is_empty()), "{m:?}");
    assert!(
        m.lag.is_some(),
        "the leader's replication gives its lag: {m:?}"
    );
    assert_eq!(
        s.warning_kinds(),
        ["member_down", "no_fault_tolerance"],
        "{s:?}"
    );
    assert_eq!(s.warnings[0].members, std::slice::from_ref(&name));
    assert_eq!(
        s.warnings[1].message,
        "no fault tolerance left: 2 of 3 voters are up; losing one more stops the cluster"
    );

    let (rows, warnings, text) = status_text(&c, asked);
    let row = rows
        .iter()
        .find(|r| r[0] == name)
        .unwrap_or_else(|| c.fail(&format!("no row for {name}:\n{text}")));
    assert_eq!(&row[2..5], ["-", "NO", "-"], "{text}");
    assert_eq!(warnings.len(), 2, "{text}");
    assert!(
        warnings[0].starts_with(&format!(
            "WARNING: member {name} is down: it does not answer"
        )),
        "{text}"
    );
    assert_eq!(
        warnings[1],
        "WARNING: no fault tolerance left: 2 of 3 voters are up; losing one more stops the cluster",
        "{text}"
    );
}

#[test]
fn a_member_stopped_while_a_configuration_is_applied_shows_config_skew() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    c.apply_ok(leader, &site_config("skew", 1));
    c.wait_converged(&[0, 1, 2]);
    let stopped = (leader + 1) % 3;
    let name = c.name(stopped).to_owned();
    c.stop(stopped);
    c.apply_ok(leader, &site_config("skew", 2));

    for asked in [leader, others(leader, stopped)] {
        let s = c.wait_until(
            &format!("{} sees {name} behind on config version 1", c.name(asked)),
            || {
                let s = c.status(asked)?;
                if s.warning_kinds().contains(&"config_skew") {
                    Ok(s)
                } else {
                    Err(format!("{s:?}"))
                }
            },
        );
        for m in &s.members {
            let want = if m.name == name { 1 } else { 2 };
            assert_eq!(m.config_version, Some(want), "{s:?}");
        }
        assert_eq!(
            s.warning_kinds(),
            ["member_down", "no_fault_tolerance", "config_skew"],
            "{s:?}"
        );
        let skew = &s.warnings[2];
        assert!(
            skew.message.starts_with(&format!(
                "members have applied different site configuration versions: 1 on {name}; 2 on "
            )) && skew.message.ends_with(&format!(
                "({name} down: as far as the leader replicated to it)"
            )),
            "{skew:?}"
        );
        let (_, warnings, text) = status_text(&c, asked);
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("WARNING: members have applied different site")),
            "{text}"
        );
    }

    // Woken, it catches up, and the warnings go.
    c.cont(stopped);
    c.wait_until(
        "every member has applied version 2 and nothing is warned of",
        || {
            let s = c.status(leader)?;
            if s.members.iter().all(|m| m.config_version == Some(2)) && s.warnings.is_empty() {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    );
}

#[test]
fn a_member_that_runs_another_version_is_warned_of() {
    const OTHER: &str = "0.0.0-skew-test";
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let upgraded = (leader + 1) % 3;
    let name = c.name(upgraded).to_owned();
    let s = c.status(leader).expect("status");
    assert!(!s.warning_kinds().contains(&"version_skew"), "{s:?}");

    // As in a rolling upgrade: the node stops and comes back with another build's version
    // (the documented test hook stands in for the other build).
    c.terminate(upgraded);
    c.node(upgraded).set_env("FEPHA_TEST_VERSION", OTHER);
    c.start(&[upgraded]);
    let s = c.wait_until(&format!("{name} is back, on {OTHER}"), || {
        let s = c.status(leader)?;
        match s.member(&name) {
            Some(m) if m.reachable && m.version.as_deref() == Some(OTHER) => Ok(s),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(s.warning_kinds(), ["version_skew"], "{s:?}");
    let mut rest: Vec<&str> = (0..3)
        .filter(|&i| i != upgraded)
        .map(|i| c.name(i))
        .collect();
    rest.sort();
    assert_eq!(
        s.warnings[0].message,
        format!(
            "members run different software versions: {OTHER} on {name}; {VERSION} on {}",
            rest.join(", ")
        )
    );
    assert_eq!(c.status(upgraded).expect("status").version, OTHER);
    let (_, warnings, text) = status_text(&c, leader);
    assert_eq!(
        warnings,
        [format!("WARNING: {}", s.warnings[0].message)],
        "{text}"
    );
}

/// A tmux server of the test's own (its socket in the cluster's directory), killed on drop.
struct Tmux {
    socket: PathBuf,
    /// The command's stderr, then `exit N` (or `signal N`) when it ends.
    log: PathBuf,
}

impl Tmux {
    fn start(dir: &Path, session: &str, size: (u16, u16), command: &[&str]) -> Tmux {
        let conf = dir.join("tmux.conf");
        // The pane stays when the command ends, so that what it left can be read.
        std::fs::write(
            &conf,
            "set -g remain-on-exit on\nset -g history-limit 2000\n",
        )
        .expect("write tmux.conf");
        let tmux = Tmux {
            socket: dir.join("tmux.sock"),
            log: dir.join(format!("{session}.log")),
        };
        // A shell in the pane waits for the command and writes down how it ended: tmux's own
        // #{pane_dead_status} stays empty when the pane's end of file beats its SIGCHLD, which
        // happens on a loaded machine. The shell also gets the Ctrl-C, and waits on (bash does
        // not die of it while its child handles it and exits normally).
        let record = format!(
            "\"$@\" 2>>'{0}'; s=$?; if [ $s -gt 128 ]; then echo \"signal $((s - 128))\"; \
             else echo \"exit $s\"; fi >>'{0}'",
            tmux.log.to_str().expect("utf-8 path")
        );
        let (w, h) = (size.0.to_string(), size.1.to_string());
        let mut args = vec!["-f", conf.to_str().expect("utf-8 path")];
        args.extend(["new-session", "-d", "-s", session, "-x", &w, "-y", &h, "--"]);
        args.extend(["bash", "-c", &record, "bash"]);
        args.extend(command);
        tmux.run(&args);
        tmux
    }

    /// How the command ended (`exit 0`, `signal 15`), once the pane is dead. The shell writes
    /// that down before it exits, so a dead pane has its line; a shell that has none died of
    /// the command's own signal (as bash does of the SIGINT that killed its child).
    fn ended(&self) -> Result<String, String> {
        if self.format("#{pane_dead}") != "1" {
            return Err(format!(
                "still running; its stderr so far:\n{}",
                self.stderr()
            ));
        }
        let log = self.stderr();
        let last = log.lines().last().unwrap_or_default();
        if last.starts_with("exit ") || last.starts_with("signal ") {
            Ok(last.to_owned())
        } else {
            Ok(format!(
                "killed with the shell: {}",
                self.format("#{pane_dead_signal}")
            ))
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run tmux ({e}); scripts/test installs it when run as root")
            });
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the pane shows, with whatever history it has above.
    fn pane(&self) -> String {
        self.run(&["capture-pane", "-p", "-S", "-", "-t", "watch"])
    }

    fn format(&self, f: &str) -> String {
        self.run(&["display-message", "-p", "-t", "watch", f])
            .trim()
            .to_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

#[test]
fn status_watch_redraws_one_frame_in_a_terminal() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let watched = leader;
    let bin = c.binary().to_str().expect("utf-8 path").to_owned();
    let config = c
        .node(watched)
        .config_path
        .to_str()
        .expect("utf-8")
        .to_owned();
    let tmux = Tmux::start(
        c.dir(),
        "watch",
        (150, 40),
        &[
            &bin,
            "-c",
            &config,
            "status",
            "--watch",
            "--interval",
            "300ms",
        ],
    );
    let header = "every 0.3s: fepha status";
    let one_frame = |pane: &str| -> Result<(), String> {
        let headers = pane.matches(header).count();
        let tables = pane.matches("REACHABLE").count();
        let history = tmux.format("#{history_size}");
        if headers == 1 && tables <= 1 && history == "0" {
            Ok(())
        } else {
            Err(format!(
                "the pane holds {headers} headers, {tables} tables and {history} lines of history:\n{pane}"
            ))
        }
    };

    // Several redraws later, still one frame on the screen, and nothing scrolled off it.
    let mut clocks = std::collections::BTreeSet::new();
    c.wait_until(
        "the watch shows every member up, over several frames",
        || {
            let pane = tmux.pane();
            one_frame(&pane)?;
            let clock = pane
                .lines()
                .find(|l| l.starts_with(header))
                .ok_or(format!("no header yet:\n{pane}"))?
                .to_owned();
            let ups = (0..3)
                .filter(|&i| {
                    pane.lines()
                        .any(|l| l.contains(&format!(" {} ", c.name(i))) && l.contains(" yes "))
                })
                .count();
            clocks.insert(clock);
            if ups == 3 && clocks.len() >= 3 {
                Ok(())
            } else {
                Err(format!(
                    "{ups} members up, {} clocks seen:\n{pane}",
                    clocks.len()
                ))
            }
        },
    );
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "1",
        "not on the alternate screen"
    );

    let victim = (leader + 1) % 3;
    let name = c.name(victim).to_owned();
    c.kill(victim);
    c.wait_until(&format!("the redrawn frame shows {name} down"), || {
        let pane = tmux.pane();
        one_frame(&pane)?;
        let warned = pane.contains(&format!("WARNING: member {name} is down"))
            && pane.contains("WARNING: no fault tolerance left: 2 of 3 voters are up");
        if warned { Ok(()) } else { Err(pane) }
    });

    // The watched node itself goes: the frame says so, and the watch goes on.
    c.kill(watched);
    c.wait_until("the frame says the node cannot be reached", || {
        let pane = tmux.pane();
        one_frame(&pane).or_else(|e| {
            // The error frame has no table; only the header counts then.
            if pane.matches(header).count() == 1 {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        if pane.contains("cannot reach the node at") && pane.contains("asking again every 0.3s") {
            Ok(())
        } else {
            Err(pane)
        }
    });
    assert_eq!(tmux.format("#{pane_dead}"), "0", "the watch gave up");
    c.start(&[watched]);
    c.wait_until("the watch shows the node again", || {
        let pane = tmux.pane();
        one_frame(&pane)?;
        if pane.contains("REACHABLE") && !pane.contains("cannot reach") {
            Ok(())
        } else {
            Err(pane)
        }
    });

    // Ctrl-C ends it cleanly, with the terminal as it was.
    tmux.run(&["send-keys", "-t", "watch", "C-c"]);
    let ended = c.wait_until("the watch ends on Ctrl-C", || tmux.ended());
    assert_eq!(ended, "exit 0", "the watch's stderr:\n{}", tmux.stderr());
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "0",
        "the alternate screen is still on"
    );
    let pane = tmux.pane();
    assert!(
        !pane.contains(header),
        "the last frame was left on the normal screen:\n{pane}"
    );
}

#[test]
fn config_check_says_what_apply_says_with_no_node() {
    let mut c = Cluster::new();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/site.toml");
    let good = examples.to_str().expect("utf-8 path");
    let missing = c.dir().join("no-node.toml");
    let missing = missing.to_str().expect("utf-8 path");
    let check = |file: &str| {
        c.run_bare(
            &["-c", missing, "config", "check", file],
            Duration::from_secs(20),
        )
    };

    let out = check(good);
    assert!(out.success(), "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        format!(
            "{good} is a valid site configuration: site \"Substation North\", 4 RTU(s) (3 Modbus, \
             1 IEC 104) on 8 channel(s) with 9 endpoint(s), 22 point(s), 1 forwarder(s) mapping \
             23 IOA(s)"
        )
    );

    let text = std::fs::read_to_string(&examples).expect("examples/site.toml");
    // Problems the checks find (every one listed), and one the TOML reader finds.
    let broken = [
        text.replacen("poll_interval_ms = 500", "poll_interval_ms = 0", 1)
            .replacen("id = \"feeder-b\"", "id = \"feeder-a\"", 1)
            .replacen("\"10.20.1.21:502\"", "\"gateway\"", 1),
        text.replacen(
            "protocol = \"modbus\"",
            "protocol = \"modbus\"\ncolour = \"red\"",
            1,
        ),
    ];
    let expected = [
        &[
            // The points of feeder-b, renamed, now name an RTU that is not there.
            "the site configuration has 6 problem(s)",
            "  line 32: rtu[0].poll_interval_ms: ",
            "  line 45: rtu[1].id: duplicate RTU id \"feeder-a\"",
            "  line 72: rtu[2].channel[1].endpoints[0]: \"gateway\" is not host:port",
            "  line 169: point[6].rtu: no RTU is called \"feeder-b\"",
        ][..],
        &[
            "the site configuration has 1 problem(s)",
            "  line 31: (file): unknown field `colour`",
        ],
    ];
    let mut files = Vec::new();
    for (n, (doc, lines)) in broken.iter().zip(expected).enumerate() {
        assert_ne!(*doc, text);
        let file = c.dir().join(format!("broken-{n}.toml"));
        std::fs::write(&file, doc).expect("write a broken file");
        let file = file.to_str().expect("utf-8 path").to_owned();
        let out = check(&file);
        assert!(
            out.code.is_some_and(|code| code != 0),
            "{file} passed: {out:?}"
        );
        assert!(
            out.stderr
                .starts_with(&format!("error: {file} was not checked: ")),
            "{out:?}"
        );
        for line in lines {
            assert!(out.stderr.contains(line), "no {line:?} in:\n{}", out.stderr);
        }
        files.push((file, out));
    }

    // Against a node, the dry run says the same, word for word.
    let i = c.add_node("voter");
    c.start(&[i]);
    c.init(i);
    for (file, checked) in &files {
        let dry = c.cli(i, &["config", "apply", "--dry-run", file]);
        assert!(dry.code.is_some_and(|code| code != 0), "{dry:?}");
        assert_eq!(checked.stderr, dry.stderr);
        assert_eq!(checked.stdout, dry.stdout);
    }
}
