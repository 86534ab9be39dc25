//! A fault campaign against a fepha cluster, in the manner of Jepsen: random crashes,
//! pauses, partitions, clock jumps, membership changes, a full disk, a slow disk and a slow
//! network, against a site under load, and checkers run on the recorded history afterwards.
//!
//! ```text
//! cargo build --release --bin fepha
//! cargo run --release -p fepha-cluster-tests --bin fepha-nemesis -- --duration 30m
//! cargo run --release -p fepha-cluster-tests --bin fepha-nemesis -- --seed 7 --duration 5m \
//!     --variant witness --faults kill,pause,partition --keep
//! ```
//!
//! Needs root (network namespaces, tmpfs, tc; for the slow disk a loop device, ext4 and
//! cgroup v1 blkio), the Python venv of `scripts/test`
//! (`FEPHA_TEST_PYTHON`) and, for the clock fault, Debian's `faketime`. Prints one
//! `name: value unit` line per figure and a summary with the seed and the command that
//! replays it; the history and the evidence go to stderr. Exits 1 if any safety figure is
//! not 0. docs/nemesis.md describes the faults and defines every checker.

mod checkers;
mod clock;
mod faults;
mod history;
mod load;
mod nemesis;
mod slowdisk;
mod tap;
mod world;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use fepha_cluster_tests::Profile;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

use checkers::Figure;
use faults::Kind;
use history::{History, now_ms};
use load::Record;
use world::{Variant, World};

struct Args {
    seed: u64,
    duration: Duration,
    variant: Variant,
    faults: Vec<Kind>,
    keep: bool,
    profile: Profile,
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    Some(Duration::from_secs(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    }))
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        seed: now_ms() % 1_000_000,
        duration: Duration::from_secs(30 * 60),
        variant: Variant::Voters3,
        faults: Kind::ALL.to_vec(),
        keep: false,
        profile: if cfg!(debug_assertions) {
            Profile::Debug
        } else {
            Profile::Release
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seed" => a.seed = value()?.parse().context("--seed takes a number")?,
            "--duration" => {
                let v = value()?;
                a.duration = parse_duration(&v)
                    .with_context(|| format!("--duration {v}: like 90s, 30m or 2h"))?;
            }
            "--variant" => {
                a.variant = match value()?.as_str() {
                    "voters3" => Variant::Voters3,
                    "witness" => Variant::Witness,
                    v => bail!("--variant {v}: voters3 or witness"),
                }
            }
            "--faults" => {
                let v = value()?;
                a.faults = if v == "none" {
                    Vec::new()
                } else {
                    v.split(',')
                        .map(|f| Kind::parse(f).with_context(|| format!("unknown fault {f}")))
                        .collect::<Result<_>>()?
                };
            }
            "--profile" => {
                a.profile = match value()?.as_str() {
                    "debug" => Profile::Debug,
                    "release" => Profile::Release,
                    v => bail!("--profile {v}: debug or release"),
                }
            }
            "--keep" => a.keep = true,
            other => bail!(
                "unknown argument {other}; usage: fepha-nemesis [--seed N] [--duration 30m] \
                 [--variant voters3|witness] [--faults kill,pause,partition,clock,member,disk,netem,slowdisk|none] \
                 [--keep] [--profile debug|release]"
            ),
        }
    }
    Ok(a)
}

/// Set by SIGINT, SIGTERM or SIGHUP: the faults end early, and the campaign heals, settles,
/// checks and cleans up as at the end of its duration.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// On the first signal the campaign winds down by itself; a second one ends the process at
/// once, leaving the namespaces and processes for the next run's harness to remove.
fn catch_signals() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut streams = {
        let _guard = rt.enter();
        [
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ]
    };
    std::thread::spawn(move || {
        rt.block_on(async {
            loop {
                let [int, term, hup] = &mut streams;
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                if INTERRUPTED.swap(true, Ordering::SeqCst) {
                    eprintln!("fepha-nemesis: second signal, exiting at once");
                    std::process::exit(130);
                }
                eprintln!("fepha-nemesis: signal: ending the faults, then settling and checking");
            }
        });
    });
    Ok(())
}

fn main() {
    match catch_signals().and_then(|()| campaign()) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("fepha-nemesis: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Runs the campaign; true if every safety figure is 0.
fn campaign() -> Result<bool> {
    let args = parse_args()?;
    let faults: Vec<&str> = args.faults.iter().map(|k| k.name()).collect();
    let variant = match args.variant {
        Variant::Voters3 => "voters3",
        Variant::Witness => "witness",
    };
    let replay = format!(
        "fepha-nemesis -- --seed {} --duration {}s --variant {variant} --faults {}",
        args.seed,
        args.duration.as_secs(),
        if faults.is_empty() {
            "none".to_owned()
        } else {
            faults.join(",")
        }
    );
    eprintln!(
        "seed {}: cargo run --release -p fepha-cluster-tests --bin {replay}",
        args.seed
    );
    let mut w = World::build(
        args.variant,
        args.profile,
        args.duration,
        args.faults.contains(&Kind::Clock),
        args.faults.contains(&Kind::SlowDisk),
    )?;
    w.keep = args.keep;
    let h = History::create(&w.c.dir().join("history.jsonl"))?;
    h.record(
        "campaign",
        "start",
        json!({"seed": args.seed, "variant": variant, "faults": faults, "duration_s": args.duration.as_secs()}),
    );
    let rec = Record::default();
    let stop = AtomicBool::new(false);
    let mut nemesis = nemesis::Nemesis::new(
        &w,
        &h,
        StdRng::seed_from_u64(args.seed),
        args.faults.clone(),
    );
    std::thread::scope(|s| {
        s.spawn(|| load::toggler(&w, &rec, &stop));
        s.spawn(|| load::commander(&w, &rec, &stop, args.seed, &h));
        s.spawn(|| load::configs(&w, &rec, &stop, args.seed, &h));
        // Stops the load also when the nemesis panics, or the scope would wait for it forever.
        let _stop = StopOnDrop(&stop);
        nemesis.run(Instant::now() + args.duration);
    });
    h.record("campaign", "load stopped, every fault healed", json!({}));
    settle(&w, &h, &rec, &mut nemesis);
    let mut figures = check(&w, &rec, nemesis.unclean_exits);
    figures.push(Figure {
        name: "netem_missing_tbf_used",
        value: if w.netem_missing.load(Ordering::SeqCst) {
            1.0
        } else {
            0.0
        },
        unit: "",
        safety: false,
        evidence: Vec::new(),
    });
    figures.push(Figure {
        name: "exits_on_full_disk",
        value: nemesis.disk_exits as f64,
        unit: "exits",
        safety: false,
        evidence: Vec::new(),
    });
    figures.push(Figure {
        name: "member_changes",
        value: nemesis.member_changes as f64,
        unit: "changes",
        safety: false,
        evidence: Vec::new(),
    });
    figures.push(Figure {
        name: "member_changes_refused",
        value: nemesis.member_refusals as f64,
        unit: "leaves",
        safety: false,
        evidence: Vec::new(),
    });
    evidence(&w, &rec)?;

    let mut ok = true;
    println!("seed: {}", args.seed);
    println!("variant: {variant}");
    println!("duration_s: {}", args.duration.as_secs());
    println!("faults_applied: {}", nemesis.applied);
    for f in &figures {
        println!("{}: {} {}", f.name, f.value, f.unit);
        for e in &f.evidence {
            eprintln!("    {}: {e}", f.name);
        }
        if f.safety && f.value != 0.0 {
            ok = false;
        }
    }
    println!(
        "summary: {} (seed {}); replay: cargo run --release -p fepha-cluster-tests --bin {replay}",
        if ok {
            "every safety figure is 0"
        } else {
            "SAFETY FIGURES NOT 0"
        },
        args.seed
    );
    if !ok {
        w.keep = true;
    }
    Ok(ok)
}

/// The records the checkers read, as files in the run's directory: the tap's requests, the
/// sequence writes, the commands sent and what the master received.
fn evidence(w: &World, rec: &Record) -> Result<()> {
    fn write<T: serde::Serialize>(w: &World, name: &str, items: &[T]) -> Result<()> {
        let lines: Vec<String> = items.iter().map(|i| json!(i).to_string()).collect();
        std::fs::write(w.c.dir().join(name), lines.join("\n"))?;
        Ok(())
    }
    write(w, "tap.jsonl", &w.tap.requests())?;
    let toggles = rec
        .toggles
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    write(w, "toggles.jsonl", &toggles)?;
    let commands = rec
        .commands
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    write(w, "commands.jsonl", &commands)?;
    let rx: Vec<_> = w
        .master
        .received()
        .iter()
        .map(|r| json!({"seq": r.seq, "conn": r.conn, "ioa": r.ioa, "value": format!("{:?}", r.value), "cot": r.cot, "time_ms": r.time_ms, "at_ms": r.at_ms}))
        .collect();
    write(w, "master-rx.jsonl", &rx)?;
    // A master that stopped receiving says why only here.
    let master = format!(
        "{}\n--- stderr ---\n{}",
        w.master.report(),
        w.master.stderr_tail(200)
    );
    std::fs::write(w.c.dir().join("master.txt"), master)?;
    Ok(())
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// After the faults: every member running and caught up, and the last changes through to
/// the master, or 90 s passed (what is then missing is lost).
fn settle(w: &World, h: &History, rec: &Record, nemesis: &mut nemesis::Nemesis) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // A node may still be on its way out (a full disk stops it slowly).
        nemesis.watch();
        let reqs = w.tap.requests();
        let toggles = rec
            .toggles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let lines = w.sim.lines();
        let missing = checkers::lost_modbus(w, &reqs, &toggles)[0].value
            + checkers::lost_104(w, &lines)[0].value;
        let queued = lines
            .iter()
            .rev()
            .find(|l| l.event == "ack")
            .and_then(|l| l.u64("queued"))
            .unwrap_or(0);
        let converged = converged(w);
        if (missing == 0.0 && queued == 0 && converged) || Instant::now() > deadline {
            h.record(
                "campaign",
                "settled",
                json!({"missing": missing, "device_queue": queued, "converged": converged}),
            );
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn converged(w: &World) -> bool {
    let members = w.members();
    let statuses = w.c.statuses(&members);
    let applied: Vec<(u64, u64)> = statuses
        .iter()
        .filter_map(|s| s.as_ref().ok().map(|s| (s.applied_index, s.config_version)))
        .collect();
    applied.len() == members.len() && applied.windows(2).all(|p| p[0] == p[1])
}

fn check(w: &World, rec: &Record, unclean_exits: u64) -> Vec<Figure> {
    let reqs = w.tap.requests();
    let lines = w.sim.lines();
    let toggles = rec
        .toggles
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut figures = vec![
        checkers::double_owner_modbus(&reqs),
        checkers::double_owner_104(&lines),
    ];
    figures.extend(checkers::commands_twice(&reqs, rec));
    figures.extend(checkers::lost_modbus(w, &reqs, &toggles));
    figures.extend(checkers::lost_104(w, &lines));
    figures.push(checkers::lost_config(w));
    figures.extend(checkers::takeover(&reqs));
    figures.extend(checkers::takeover_104(&lines));
    figures.extend(checkers::upstream_gaps(w, now_ms()));
    figures.extend(checkers::panics(w, unclean_exits));
    let failures = *rec
        .config_failures
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    figures.push(Figure {
        name: "config_applies_failed",
        value: failures as f64,
        unit: "applies",
        safety: false,
        evidence: Vec::new(),
    });
    figures
}
