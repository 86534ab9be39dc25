//! What the stores hold must be there again after the node restarts.

mod common;

use std::error::Error;
use std::io::Cursor;

use common::{log_id, map, membership, open, put, restart};
use openraft::storage::{
    RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::{LogState, Membership, StorageHelper, StoredMembership, Vote};

type TestResult = Result<(), Box<dyn Error>>;

#[tokio::test]
async fn vote_log_and_committed_survive_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let entries = vec![
        membership(1, 1, &[1, 2, 3]),
        put(1, 2, "a", 1),
        put(1, 3, "b", 2),
    ];
    {
        let (mut log, _sm) = open(dir.path())?;
        log.save_vote(&Vote::new(1, 1)).await?;
        log.blocking_append(entries.clone()).await?;
        log.save_committed(Some(log_id(1, 2))).await?;
    }

    let dir = restart(dir.path())?;
    let (mut log, _sm) = open(dir.path())?;
    assert_eq!(log.read_vote().await?, Some(Vote::new(1, 1)));
    assert_eq!(log.read_committed().await?, Some(log_id(1, 2)));
    assert_eq!(log.try_get_log_entries(..).await?, entries);
    assert_eq!(log.try_get_log_entries(2..=3).await?, entries[1..]);
    assert!(log.try_get_log_entries(2..2).await?.is_empty());
    assert_eq!(
        log.get_log_state().await?,
        LogState {
            last_purged_log_id: None,
            last_log_id: Some(log_id(1, 3)),
        }
    );
    Ok(())
}

#[tokio::test]
async fn snapshot_and_purge_survive_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let snapshot_meta = {
        let (mut log, mut sm) = open(dir.path())?;
        let entries = vec![
            membership(1, 1, &[1]),
            put(1, 2, "a", 1),
            put(1, 3, "b", 2),
            put(1, 4, "a", 3),
        ];
        log.blocking_append(entries.clone()).await?;
        sm.apply(entries[..3].to_vec()).await?;
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
        log.purge(log_id(1, 3)).await?;
        log.save_committed(Some(log_id(1, 4))).await?;
        snapshot.meta
    };

    let dir = restart(dir.path())?;
    let (mut log, mut sm) = open(dir.path())?;
    let expected_membership =
        StoredMembership::new(Some(log_id(1, 1)), Membership::new(vec![[1].into()], ()));
    assert_eq!(
        sm.applied_state().await?,
        (Some(log_id(1, 3)), expected_membership.clone())
    );
    assert_eq!(
        sm.view().read(|s| s.map.clone()),
        map(&[("a", 1), ("b", 2)])
    );
    assert_eq!(
        log.get_log_state().await?,
        LogState {
            last_purged_log_id: Some(log_id(1, 3)),
            last_log_id: Some(log_id(1, 4)),
        }
    );
    let current = sm.get_current_snapshot().await?.ok_or("no snapshot")?;
    assert_eq!(current.meta, snapshot_meta);

    // openraft's start-up re-applies the committed entry after the snapshot.
    StorageHelper::new(&mut log, &mut sm)
        .get_initial_state()
        .await?;
    let view = sm.view();
    assert_eq!(view.last_applied(), Some(log_id(1, 4)));
    assert_eq!(view.membership(), expected_membership);
    assert_eq!(view.read(|s| s.map.clone()), map(&[("a", 3), ("b", 2)]));
    Ok(())
}

#[tokio::test]
async fn installed_snapshot_survives_reopen() -> TestResult {
    let leader_dir = tempfile::tempdir()?;
    let (_leader_log, mut leader) = open(leader_dir.path())?;
    leader
        .apply([membership(2, 5, &[1, 2]), put(2, 6, "x", 7)])
        .await?;
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;

    let dir = tempfile::tempdir()?;
    {
        let (_log, mut sm) = open(dir.path())?;
        let mut received = sm.begin_receiving_snapshot().await?;
        *received = *snapshot.snapshot;
        sm.install_snapshot(&snapshot.meta, received).await?;
        assert_eq!(sm.view().last_applied(), Some(log_id(2, 6)));
    }

    let dir = restart(dir.path())?;
    let (_log, mut sm) = open(dir.path())?;
    assert_eq!(
        sm.applied_state().await?,
        (
            snapshot.meta.last_log_id,
            snapshot.meta.last_membership.clone()
        )
    );
    assert_eq!(sm.view().read(|s| s.map.clone()), map(&[("x", 7)]));
    let current = sm.get_current_snapshot().await?.ok_or("no snapshot")?;
    assert_eq!(current.meta, snapshot.meta);
    Ok(())
}

/// The snapshot's data is a file of its own; every save leaves only the current one.
#[tokio::test]
async fn one_snapshot_file_is_kept_and_a_store_that_kept_its_snapshot_in_sled_still_opens()
-> TestResult {
    let dir = tempfile::tempdir()?;
    let files = |dir: &std::path::Path| -> std::io::Result<usize> {
        Ok(std::fs::read_dir(dir.join("state"))?.count())
    };
    let (meta, data) = {
        let (_log, mut sm) = open(dir.path())?;
        sm.apply([membership(1, 1, &[1]), put(1, 2, "a", 1)])
            .await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        sm.apply([put(1, 3, "b", 2)]).await?;
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
        assert_eq!(files(dir.path())?, 1);
        (snapshot.meta, snapshot.snapshot.into_inner())
    };

    // The layout of a store written before snapshot files: the data in the snapshot tree.
    let dir = restart(dir.path())?;
    {
        let db = sled::open(dir.path())?;
        let tree = db.open_tree("snapshot")?;
        tree.remove("file")?;
        tree.insert("data", data)?;
        db.flush()?;
        std::fs::remove_dir_all(dir.path().join("state"))?;
    }
    let dir = restart(dir.path())?;
    let (_log, mut sm) = open(dir.path())?;
    assert_eq!(
        sm.view().read(|s| s.map.clone()),
        map(&[("a", 1), ("b", 2)])
    );
    let current = sm.get_current_snapshot().await?.ok_or("no snapshot")?;
    assert_eq!(current.meta, meta);

    // The next save moves it to a file and clears the old value.
    sm.apply([put(1, 4, "c", 3)]).await?;
    sm.get_snapshot_builder().await.build_snapshot().await?;
    assert_eq!(files(dir.path())?, 1);
    drop(sm);
    drop(_log);
    let db = sled::open(dir.path())?;
    assert!(db.open_tree("snapshot")?.get("data")?.is_none());
    Ok(())
}

#[tokio::test]
async fn garbage_snapshot_is_refused() -> TestResult {
    let leader_dir = tempfile::tempdir()?;
    let (_leader_log, mut leader) = open(leader_dir.path())?;
    leader.apply([put(1, 1, "x", 1)]).await?;
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;

    let dir = tempfile::tempdir()?;
    let (_log, mut sm) = open(dir.path())?;
    let garbage = Box::new(Cursor::new(b"not a snapshot".to_vec()));
    assert!(sm.install_snapshot(&snapshot.meta, garbage).await.is_err());

    // Well-formed data that is not the state the meta describes is refused too.
    let mut wrong_meta = snapshot.meta.clone();
    wrong_meta.last_log_id = Some(log_id(1, 2));
    assert!(
        sm.install_snapshot(&wrong_meta, snapshot.snapshot)
            .await
            .is_err()
    );

    assert_eq!(sm.view().last_applied(), None);
    assert!(sm.get_current_snapshot().await?.is_none());
    Ok(())
}

#[tokio::test]
async fn corrupt_stored_value_fails_open_naming_its_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let (mut log, _sm) = open(dir.path())?;
        log.save_vote(&Vote::new(1, 1)).await?;
    }
    let dir = restart(dir.path())?;
    {
        let db = sled::open(dir.path())?;
        db.open_tree("meta")?.insert("vote", b"{".to_vec())?;
        db.flush()?;
    }
    let dir = restart(dir.path())?;

    match open(dir.path()) {
        Err(fepha_storage::OpenError::Corrupt(corrupt)) => assert_eq!(corrupt.key, "meta/vote"),
        Err(other) => return Err(format!("expected a corrupt vote, got {other}").into()),
        Ok(_) => return Err("opened a store with a corrupt vote".into()),
    }
    Ok(())
}

/// Entries this large are written by sled to files of their own under `blobs/`, which
/// sled never fsyncs; the store syncs them itself.
#[tokio::test]
async fn large_entries_survive_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Entries are compressed: letters in no pattern, which LZ4 cannot shrink much.
    let mut x: u32 = 1;
    let big: String = (0..300 * 1024)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            char::from(b'a' + (x >> 16) as u8 % 26)
        })
        .collect();
    let entry = put(1, 1, &big, 1);
    {
        let (mut log, _sm) = open(dir.path())?;
        log.blocking_append([entry.clone()]).await?;
        let blobs = std::fs::read_dir(dir.path().join("blobs"))?.count();
        assert!(
            blobs > 0,
            "sled wrote no blob: the blob sync is not exercised"
        );
    }

    let dir = restart(dir.path())?;
    let (mut log, _sm) = open(dir.path())?;
    assert_eq!(log.try_get_log_entries(1..2).await?, vec![entry]);
    Ok(())
}

/// A store written before entries were compact holds them as JSON; they still read.
#[tokio::test]
async fn entries_written_as_json_still_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    let entry = put(1, 1, "before", 1);
    {
        let (mut log, _sm) = open(dir.path())?;
        log.save_vote(&Vote::new(1, 1)).await?;
    }
    let dir = restart(dir.path())?;
    {
        let db = sled::open(dir.path())?;
        db.open_tree("log")?
            .insert(1u64.to_be_bytes(), serde_json::to_vec(&entry)?)?;
        db.flush()?;
    }
    let dir = restart(dir.path())?;
    let (mut log, _sm) = open(dir.path())?;
    assert_eq!(log.try_get_log_entries(1..2).await?, vec![entry]);
    Ok(())
}
