//! What was committed is still there after the processes go away.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fepha_cluster_tests::{Cluster, admin_client, apply_rpc, site_config};

#[test]
fn config_survives_a_full_stop_and_start() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let follower = (leader + 1) % 3;
    let text = site_config("before-full-restart", 1);
    let applied = c.apply_ok(follower, &text);
    c.wait_converged(&[0, 1, 2]);

    for i in 0..3 {
        c.terminate(i);
    }
    c.start(&[0, 1, 2]);
    c.wait_for_leader(&[0, 1, 2]);
    c.wait_until(
        "every node shows the config applied before the restart",
        || {
            for i in 0..3 {
                let show = c.config_show(i)?;
                if (show.version, &show.sha256, &show.text)
                    != (applied.version, &applied.sha256, &text)
                {
                    return Err(format!("{} shows {show:?}", c.name(i)));
                }
            }
            Ok(())
        },
    );
    // And the cluster goes on from there.
    let next = c.apply_ok(leader, &site_config("after-full-restart", 2));
    assert_eq!(next.version, applied.version + 1);
}

/// A write the cluster acknowledged as committed.
#[derive(Debug, Clone)]
struct Ack {
    writer: usize,
    version: u64,
    sha256: String,
}

#[test]
fn acknowledged_writes_survive_sigkill_of_every_node_mid_burst() {
    const WRITERS: usize = 6;
    const BEFORE_KILL: usize = 150;
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);

    // Writers spread over all three nodes, so followers forward too. Each keeps writing
    // until a write fails; every acknowledged one is recorded.
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let killed = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (addr, acks, killed) = (c.admin_addr(w % 3), acks.clone(), killed.clone());
            let creds = c.credentials();
            c.runtime().spawn(async move {
                let mut client = admin_client(&creds, &addr)
                    .await
                    .expect("dial before the burst");
                for n in 0.. {
                    let text = site_config(&format!("writer-{w}"), n);
                    let deadline = Instant::now() + Duration::from_secs(2);
                    match apply_rpc(&mut client, &text, deadline).await {
                        Ok(a) => acks.lock().expect("acks").push(Ack {
                            writer: w,
                            version: a.version,
                            sha256: a.sha256,
                        }),
                        // Only the kill may end a writer.
                        Err(e) => return (killed.load(Ordering::SeqCst), e),
                    }
                }
                unreachable!("writers end on the first failed write")
            })
        })
        .collect();

    c.wait_until(&format!("{BEFORE_KILL} writes are acknowledged"), || {
        let n = acks.lock().expect("acks").len();
        if n >= BEFORE_KILL {
            Ok(())
        } else {
            Err(format!("{n} acknowledged"))
        }
    });
    killed.store(true, Ordering::SeqCst);
    c.kill_at_once(&[0, 1, 2]);

    for (w, handle) in writers.into_iter().enumerate() {
        let (after_kill, error) = c.block_on(handle).expect("writer task");
        assert!(after_kill, "writer {w} failed before the kill: {error}");
    }
    let acks = acks.lock().expect("acks").clone();
    let mut by_version: BTreeMap<u64, &Ack> = BTreeMap::new();
    for a in &acks {
        if let Some(other) = by_version.insert(a.version, a) {
            panic!(
                "version {} was acknowledged twice: {other:?} and {a:?}",
                a.version
            );
        }
    }
    assert!((0..WRITERS).all(|w| acks.iter().any(|a| a.writer == w)));

    c.start(&[0, 1, 2]);
    c.wait_for_leader(&[0, 1, 2]);
    c.wait_until(
        &format!(
            "all {} acknowledged writes are in every node's config history",
            acks.len()
        ),
        || {
            let mut histories = Vec::new();
            for i in 0..3 {
                let h: BTreeMap<u64, String> = c
                    .config_history(i)?
                    .into_iter()
                    .map(|e| (e.version, e.sha256))
                    .collect();
                for a in &acks {
                    match h.get(&a.version) {
                        Some(sha) if *sha == a.sha256 => {}
                        Some(sha) => {
                            panic!(
                                "{} has version {} with sha256 {sha}, but {a:?} was acknowledged",
                                c.name(i),
                                a.version
                            )
                        }
                        None => return Err(format!("{} lacks {a:?}", c.name(i))),
                    }
                }
                histories.push(h);
            }
            if histories.iter().all(|h| *h == histories[0]) {
                Ok(())
            } else {
                Err("the nodes' histories differ".to_owned())
            }
        },
    );
}
