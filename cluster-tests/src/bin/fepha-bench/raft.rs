//! The Raft group: commit latency and throughput of `config apply`, leader failover, and TLS
//! handshakes on the admin API (see the figures in `main.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fepha::proto::admin::{ConfigApplyRequest, StatusRequest};
use fepha_cluster_tests::{Cluster, admin_client, percentile, site_config};
use nix::sys::signal::Signal;

use crate::Args;

pub fn run(args: &Args) {
    let c = crate::three_voters("raft", &args.raft);

    // Elections in an idle cluster are false ones: every leader was alive.
    let leader = c.wait_for_leader(&[0, 1, 2]);
    let before = highest_term(&c);
    std::thread::sleep(Duration::from_secs(args.idle_seconds));
    let elections = highest_term(&c) - before;
    let now = c.wait_for_leader(&[0, 1, 2]);
    eprintln!(
        "fepha-bench: idle for {} s: {elections} elections, leader {} then {}",
        args.idle_seconds,
        c.name(leader),
        c.name(now)
    );
    println!("raft_elections_idle: {elections} elections");

    for writers in [1, 64] {
        let leader = c.wait_for_leader(&[0, 1, 2]);
        let (latencies, per_s) =
            commit_latency(&c, leader, writers, Duration::from_secs(args.seconds));
        println!(
            "commit_latency_us_p50_w{writers}: {} us",
            percentile(&latencies, 50.0)
        );
        println!(
            "commit_latency_us_p99_w{writers}: {} us",
            percentile(&latencies, 99.0)
        );
        println!("commits_per_s_w{writers}: {per_s:.0} commits/s");
    }

    for (death, suffix) in [(Death::Crash, ""), (Death::Silence, "_silent")] {
        let failovers: Vec<u64> = (0..args.rounds)
            .map(|_| failover_round(&c, death))
            .collect();
        eprintln!("fepha-bench: leader failovers{suffix} (ms): {failovers:?}");
        for p in [50.0, 99.0] {
            println!(
                "leader_failover{suffix}_ms_p{p}: {} ms",
                percentile(&failovers, p)
            );
        }
    }

    let leader = c.wait_for_leader(&[0, 1, 2]);
    let handshakes = handshake_and_status(&c, leader);
    for p in [50.0, 99.0] {
        println!(
            "tls_handshake_status_ms_p{p}: {:.2} ms",
            percentile(&handshakes, p) as f64 / 1000.0
        );
    }
}

/// The highest Raft term the nodes report.
fn highest_term(c: &Cluster) -> u64 {
    c.statuses(&[0, 1, 2])
        .into_iter()
        .filter_map(Result::ok)
        .map(|s| s.term)
        .max()
        .unwrap_or(0)
}

/// How many fresh connections [`handshake_and_status`] times.
const HANDSHAKES: usize = 200;

/// Microseconds, per fresh connection to `node`'s admin API, from dialling to the answer of
/// one `status` call on it.
fn handshake_and_status(c: &Cluster, node: usize) -> Vec<u64> {
    let addr = c.admin_addr(node);
    let creds = c.credentials();
    c.block_on(async {
        let mut took = Vec::with_capacity(HANDSHAKES);
        for _ in 0..HANDSHAKES {
            let t = Instant::now();
            let mut client = admin_client(&creds, &addr).await.expect("dial the leader");
            client
                .status(StatusRequest { local_only: true })
                .await
                .expect("status on a fresh connection");
            took.push(t.elapsed().as_micros() as u64);
        }
        took
    })
}

/// Latencies (µs) of every commit by `writers` concurrent writers over `duration`, and
/// commits per second.
fn commit_latency(
    c: &Cluster,
    leader: usize,
    writers: usize,
    duration: Duration,
) -> (Vec<u64>, f64) {
    let addr = c.admin_addr(leader);
    let creds = c.credentials();
    let serial = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + duration;
    let per_writer = c.block_on(futures::future::join_all((0..writers).map(|_| {
        let (addr, serial, errors) = (addr.clone(), serial.clone(), errors.clone());
        let creds = creds.clone();
        async move {
            let mut client = admin_client(&creds, &addr).await.expect("dial the leader");
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let text = site_config("bench", serial.fetch_add(1, Ordering::Relaxed));
                let t = Instant::now();
                let r = client
                    .config_apply(ConfigApplyRequest {
                        text,
                        forwarded: false,
                        dry_run: false,
                    })
                    .await;
                match r {
                    Ok(_) => latencies.push(t.elapsed().as_micros() as u64),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }
    })));
    let elapsed = start.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    if errors > 0 {
        eprintln!("fepha-bench: {errors} failed writes with {writers} writers");
    }
    let all: Vec<u64> = per_writer.into_iter().flatten().collect();
    let per_s = all.len() as f64 / elapsed;
    (all, per_s)
}

/// How long a failover writer waits for one write before it sends the next. A survivor
/// passes a write on to the leader it knows, and a silent leader never answers: the writers
/// must give up on those soon, or the figure is this timeout and not the cluster's failover.
/// A commit normally takes a few ms (`commit_latency_us_*`).
const WRITE_TIMEOUT: Duration = Duration::from_millis(50);

/// How the leader dies in a failover round.
#[derive(Clone, Copy)]
enum Death {
    /// SIGKILL: its kernel resets its connections at once, as a crashed process's.
    Crash,
    /// SIGSTOP: its connections stay open and it says nothing, as a box that lost power or
    /// its link; the others see it only by silence.
    Silence,
}

/// One death of the leader; gives the milliseconds until a write sent after it commits,
/// then restarts (or continues) the node and waits until it has caught up.
fn failover_round(c: &Cluster, death: Death) -> u64 {
    let all = [0, 1, 2];
    let leader = c.wait_for_leader(&all);
    let survivors: Vec<usize> = all.into_iter().filter(|&i| i != leader).collect();

    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let first_commit: Arc<Mutex<Option<Instant>>> = Arc::default();
    let warm = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let serial = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = survivors
        .iter()
        .flat_map(|&i| [i, i])
        .map(|i| {
            let addr = c.admin_addr(i);
            let creds = c.credentials();
            let (killed_at, first_commit, warm, done, serial) = (
                killed_at.clone(),
                first_commit.clone(),
                warm.clone(),
                done.clone(),
                serial.clone(),
            );
            c.runtime().spawn(async move {
                let mut client = admin_client(&creds, &addr).await.expect("dial a survivor");
                while !done.load(Ordering::SeqCst) {
                    let sent = Instant::now();
                    let text = site_config("failover", serial.fetch_add(1, Ordering::Relaxed));
                    let call = client.config_apply(ConfigApplyRequest {
                        text,
                        forwarded: false,
                        dry_run: false,
                    });
                    match tokio::time::timeout(WRITE_TIMEOUT, call).await {
                        Ok(Ok(_)) => {
                            warm.fetch_add(1, Ordering::SeqCst);
                            let kill = *killed_at.lock().expect("lock");
                            if kill.is_some_and(|k| sent > k) {
                                let now = Instant::now();
                                let mut first = first_commit.lock().expect("lock");
                                if first.is_none_or(|f| now < f) {
                                    *first = Some(now);
                                }
                            }
                        }
                        _ => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            })
        })
        .collect();

    c.wait_until(
        "the failover writers commit before the kill",
        || match warm.load(Ordering::SeqCst) {
            0 => Err("no commit yet".to_owned()),
            _ => Ok(()),
        },
    );
    let t0 = Instant::now();
    match death {
        Death::Crash => c.node(leader).signal(Signal::SIGKILL),
        Death::Silence => c.node(leader).signal(Signal::SIGSTOP),
    }
    *killed_at.lock().expect("lock") = Some(t0);
    let committed = c.wait_until("a write commits after the kill", || {
        first_commit
            .lock()
            .expect("lock")
            .ok_or_else(|| "not yet".to_owned())
    });
    done.store(true, Ordering::SeqCst);
    for w in writers {
        c.block_on(w).expect("writer task");
    }
    match death {
        Death::Crash => {
            c.kill(leader);
            c.start(&[leader]);
        }
        Death::Silence => c.node(leader).signal(Signal::SIGCONT),
    }
    c.wait_converged(&all);
    committed.duration_since(t0).as_millis() as u64
}
