//! A node that joins after the log has been compacted catches up from a snapshot.

use std::time::{Duration, Instant};

use fepha_cluster_tests::{Cluster, Options, admin_client, apply_rpc, site_config};
use futures::StreamExt;

#[test]
fn a_late_joiner_catches_up_by_snapshot() {
    const WRITES: u64 = 2000;
    let mut c = Cluster::with(Options {
        raft: "snapshot_after_entries = 500\nkeep_entries_after_snapshot = 50".into(),
        ..Options::default()
    });
    let leader = c.bootstrap(&["voter", "voter", "voter"]);

    let addr = c.admin_addr(leader);
    let creds = c.credentials();
    let failures: Vec<String> = c.block_on(async {
        let client = admin_client(&creds, &addr).await.expect("dial the leader");
        let deadline = Instant::now() + Duration::from_secs(120);
        futures::stream::iter(0..WRITES)
            .map(|n| {
                let mut client = client.clone();
                async move { apply_rpc(&mut client, &site_config("bulk", n), deadline).await }
            })
            .buffer_unordered(32)
            .filter_map(|r| async move { r.err().map(|e| e.to_string()) })
            .collect()
            .await
    });
    assert!(
        failures.is_empty(),
        "{} writes failed, e.g. {}",
        failures.len(),
        failures[0]
    );

    let compacted = c.wait_until("the leader has taken a snapshot and purged its log", || {
        let s = c.status(leader)?;
        if s.snapshot_index > 0 && s.purged_index > 0 {
            Ok(s)
        } else {
            Err(s.summary())
        }
    });
    assert!(
        compacted.config_version >= WRITES,
        "{}",
        compacted.summary()
    );

    // The leader no longer has the first entries, so the newcomer cannot get them one by one.
    let late = c.add_node("voter");
    c.start(&[late]);
    c.join(late, leader);
    let all = [0, 1, 2, late];
    c.wait_for_members(&all, &all);
    let statuses = c.wait_converged(&all);
    let s = &statuses[3];
    assert!(
        s.snapshot_index > 0 && s.purged_index > 0,
        "the late joiner shows no snapshot: {}",
        s.summary()
    );
    assert!(
        s.snapshot_index >= compacted.purged_index,
        "the late joiner's snapshot does not cover what the leader had purged ({}): {}",
        compacted.purged_index,
        s.summary()
    );

    // What it got from the snapshot is the same state, history included.
    assert_eq!(
        c.config_show(late).expect("config show on the late joiner"),
        c.config_show(leader).expect("config show on the leader")
    );
    assert_eq!(
        c.config_history(late).expect("history on the late joiner"),
        c.config_history(leader).expect("history on the leader")
    );
}
