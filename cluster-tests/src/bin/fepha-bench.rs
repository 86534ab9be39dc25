//! Benchmark of a three-node fepha cluster on loopback, with the release binary:
//!
//! ```text
//! cargo build --release --bin fepha && cargo run --release -p fepha-cluster-tests --bin fepha-bench
//! cargo run --release -p fepha-cluster-tests --bin fepha-bench -- --rounds 50 --seconds 10
//! ```
//!
//! Prints one `name: value unit` line per figure:
//! - `commit_latency_us_p50_wN`, `commit_latency_us_p99_wN`, `commits_per_s_wN`: `config apply`
//!   through the leader's admin API by N = 1 and N = 64 concurrent writers, for `--seconds`
//!   (default 5) each.
//! - `leader_failover_ms_p50`, `leader_failover_ms_p99`: per round (`--rounds`, default 20),
//!   SIGKILL the leader while writers hit the other two nodes continuously; the time from
//!   the kill to the first commit of a write sent after it. The killed node is restarted and
//!   caught up before the next round.
//! - `tls_handshake_status_ms_p50`, `tls_handshake_status_ms_p99`: [`HANDSHAKES`] times, a
//!   fresh connection to the leader's admin API (TCP, mutual TLS handshake, HTTP/2) and one
//!   `status` call (`local_only`) on it. Every connection is a full handshake: fepha has no
//!   TLS session resumption.
//!
//! `FEPHA_BIN` overrides the binary (default `<target>/release/fepha`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fepha::proto::admin::{ConfigApplyRequest, StatusRequest};
use fepha_cluster_tests::{Cluster, Options, Profile, admin_client, percentile, site_config};
use nix::sys::signal::Signal;

fn main() {
    let (rounds, seconds) = parse_args();
    let mut c = Cluster::with(Options {
        profile: Profile::Release,
        ..Options::default()
    });
    eprintln!(
        "fepha-bench: {} in {}",
        c.binary().display(),
        c.dir().display()
    );
    c.bootstrap(&["voter", "voter", "voter"]);

    for writers in [1, 64] {
        let leader = c.wait_for_leader(&[0, 1, 2]);
        let (latencies, per_s) = commit_latency(&c, leader, writers, Duration::from_secs(seconds));
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

    let failovers: Vec<u64> = (0..rounds).map(|_| failover_round(&c)).collect();
    println!(
        "leader_failover_ms_p50: {} ms",
        percentile(&failovers, 50.0)
    );
    println!(
        "leader_failover_ms_p99: {} ms",
        percentile(&failovers, 99.0)
    );

    let leader = c.wait_for_leader(&[0, 1, 2]);
    let handshakes = handshake_and_status(&c, leader);
    for p in [50.0, 99.0] {
        println!(
            "tls_handshake_status_ms_p{p}: {:.2} ms",
            percentile(&handshakes, p) as f64 / 1000.0
        );
    }
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

fn parse_args() -> (usize, u64) {
    let (mut rounds, mut seconds) = (20, 5);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{a} needs a number")))
        };
        match a.as_str() {
            "--rounds" => rounds = usize::try_from(value()).unwrap_or(20),
            "--seconds" => seconds = value(),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if rounds < 20 {
        usage("at least 20 rounds, for a meaningful p99");
    }
    (rounds, seconds)
}

fn usage(msg: &str) -> ! {
    eprintln!("fepha-bench: {msg}\nusage: fepha-bench [--rounds N (>= 20)] [--seconds S]");
    std::process::exit(2);
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

/// One SIGKILL of the leader; gives the milliseconds until a write sent after the kill
/// commits, then restarts the node and waits until it has caught up.
fn failover_round(c: &Cluster) -> u64 {
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
                    match tokio::time::timeout(Duration::from_secs(1), call).await {
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
    c.node(leader).signal(Signal::SIGKILL);
    let t0 = Instant::now();
    *killed_at.lock().expect("lock") = Some(t0);
    c.kill(leader);
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
    c.start(&[leader]);
    c.wait_converged(&all);
    committed.duration_since(t0).as_millis() as u64
}
