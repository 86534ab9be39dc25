//! Offline work on a stopped node's store: everything it holds is read back with the whole
//! log applied, and a state installed in its place is what openraft finds at the next start.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;

use common::{KvState, TestConfig, log_id, map, membership, open, put, restart};
use fepha_storage::{Applied, Offline};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{BasicNode, Membership, StoredMembership, Vote};

type TestResult = Result<(), Box<dyn Error>>;
type Store = Offline<TestConfig, KvState>;

#[tokio::test]
async fn the_whole_log_is_read_back_and_an_installed_state_replaces_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = Store::open(dir.path())?;
        assert!(store.is_empty()?);
    }
    let dir = restart(dir.path())?;
    {
        let (mut log, _sm) = open(dir.path())?;
        log.save_vote(&Vote::new(4, 2)).await?;
        log.blocking_append(vec![
            membership(1, 1, &[1, 2, 3]),
            put(1, 2, "a", 1),
            put(4, 3, "b", 2),
        ])
        .await?;
        log.save_committed(Some(log_id(1, 2))).await?;
    }
    let dir = restart(dir.path())?;
    {
        let store = Store::open(dir.path())?;
        assert!(!store.is_empty()?);
        let contents = store.read()?;
        // Past the commit the node knew of too: a new leader would have committed it.
        assert_eq!(contents.applied.state.map, map(&[("a", 1), ("b", 2)]));
        assert_eq!(contents.applied.last_applied, Some(log_id(4, 3)));
        assert_eq!(contents.uncommitted, 1);
        assert_eq!(contents.vote, Some(Vote::new(4, 2)));
        let voters: Vec<u64> = contents
            .applied
            .membership
            .membership()
            .voter_ids()
            .collect();
        assert_eq!(voters, [1, 2, 3]);

        let alone = Membership::new(
            vec![BTreeSet::from([1])],
            BTreeMap::from([(1, BasicNode::new("a"))]),
        );
        let mut state = contents.applied.state;
        state.map.insert("recovered".into(), 9);
        let applied = Applied {
            last_applied: Some(log_id(5, 4)),
            membership: StoredMembership::new(Some(log_id(5, 4)), alone),
            state,
        };
        store.install(&Vote::new(5, 1), &applied)?;
    }
    let dir = restart(dir.path())?;
    let (mut log, mut sm) = open(dir.path())?;
    assert_eq!(log.read_vote().await?, Some(Vote::new(5, 1)));
    let state = log.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(5, 4)));
    assert_eq!(state.last_log_id, Some(log_id(5, 4)));
    assert!(log.try_get_log_entries(..).await?.is_empty());
    let (applied, membership) = sm.applied_state().await?;
    assert_eq!(applied, Some(log_id(5, 4)));
    assert_eq!(membership.membership().voter_ids().collect::<Vec<_>>(), [1]);
    let snapshot = sm.get_current_snapshot().await?.ok_or("no snapshot")?;
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(5, 4)));
    assert_eq!(sm.view().read(|s| s.map.get("recovered").copied()), Some(9));
    Ok(())
}
