use std::collections::BTreeMap;

use super::plan::{View, next_expiry_ms, plan};
use crate::config::Role;
use crate::ids::NodeId;
use crate::state::ownership::{Ownership, OwnershipCommand, OwnershipRefusal, Reach};

const A: NodeId = 1;
const B: NodeId = 3;
const W: NodeId = 5;
const TTL: u64 = 1000;

struct World {
    o: Ownership,
    rtus: Vec<String>,
    members: BTreeMap<NodeId, Role>,
    heard: BTreeMap<NodeId, u64>,
    /// When the planning node applied each node's last renewal.
    applied: BTreeMap<NodeId, u64>,
    now: u64,
    config_applied_at: u64,
    /// The log index of the last command applied.
    index: u64,
}

impl World {
    /// Two voters and a witness, all with fresh sessions, and `rtus` that both voters reach.
    fn new(rtus: &[&str]) -> World {
        let mut w = World {
            o: Ownership::default(),
            rtus: rtus.iter().map(|r| r.to_string()).collect(),
            members: BTreeMap::from([(A, Role::Voter), (B, Role::Voter), (W, Role::Witness)]),
            heard: BTreeMap::new(),
            applied: BTreeMap::new(),
            now: 10_000,
            config_applied_at: 0,
            index: 0,
        };
        for node in [A, B, W] {
            w.renew(node, 1, Reach::Reachable);
        }
        w
    }

    fn renew(&mut self, node: NodeId, number: u64, reach: Reach) {
        let reach = if node == W {
            Vec::new()
        } else {
            self.rtus.iter().map(|r| (r.clone(), reach)).collect()
        };
        let renew = OwnershipCommand::Renew {
            node,
            number,
            now_ms: self.now,
            reach,
            applied: self.index,
            links: Vec::new(),
            name: String::new(),
        };
        assert_eq!(self.apply(&renew), Ok(()));
        self.heard.insert(node, self.now);
        self.applied.insert(node, self.now);
    }

    fn apply(&mut self, c: &OwnershipCommand) -> Result<(), OwnershipRefusal> {
        self.index += 1;
        self.o.apply(self.index, c)
    }

    fn plan(&self) -> Vec<OwnershipCommand> {
        plan(&self.view())
    }

    fn view(&self) -> View<'_> {
        View {
            ownership: &self.o,
            rtus: &self.rtus,
            members: &self.members,
            heard_ms: &self.heard,
            applied_ms: &self.applied,
            now_ms: self.now,
            wall_ms: self.now,
            config_applied_at_ms: self.config_applied_at,
            ttl_ms: TTL,
            backoff_ms: 500,
            backoff_max_ms: 4000,
        }
    }

    /// Plans and applies; returns the commands.
    fn step(&mut self) -> Vec<OwnershipCommand> {
        let commands = self.plan();
        for c in &commands {
            assert_eq!(self.apply(c), Ok(()), "{c:?}");
        }
        commands
    }

    fn owner(&self, rtu: &str) -> Option<NodeId> {
        self.o.leases.get(rtu).map(|l| l.owner)
    }
}

#[test]
fn rtus_are_spread_over_the_voters_and_never_given_to_a_witness() {
    let mut w = World::new(&["r1", "r2", "r3", "r4"]);
    w.step();
    let owners: Vec<_> = ["r1", "r2", "r3", "r4"]
        .iter()
        .map(|r| w.owner(r))
        .collect();
    assert_eq!(owners, [Some(A), Some(B), Some(A), Some(B)]);
    assert!(w.o.leases.values().all(|l| l.epoch == 1));
    assert!(w.step().is_empty(), "a settled cluster plans nothing");
}

#[test]
fn a_dead_session_frees_its_rtus_at_once_under_a_new_epoch() {
    let mut w = World::new(&["r1", "r2"]);
    w.step();
    assert_eq!(w.owner("r1"), Some(A));
    // A stops renewing; B and the witness go on.
    w.now += TTL + 1;
    w.renew(B, 1, Reach::Reachable);
    w.renew(W, 1, Reach::Reachable);
    let commands = w.step();
    assert!(matches!(
        commands[0],
        OwnershipCommand::Expire { node: A, number: 1 }
    ));
    assert_eq!((w.owner("r1"), w.owner("r2")), (Some(B), Some(B)));
    assert_eq!(w.o.leases["r1"].epoch, 2);
    // The old owner's writes are fenced out.
    assert!(w.o.fence("r1", 1).is_err());
}

#[test]
fn a_new_leader_counts_a_ttl_from_when_it_applied_the_last_renewal() {
    let mut w = World::new(&["r1"]);
    w.step();
    assert_eq!(w.owner("r1"), Some(A));
    // A new leader has taken no renewal itself; it applied A's last one at `applied`.
    w.heard.clear();
    let applied = w.now;
    w.applied.insert(B, applied + 5 * TTL);
    w.applied.insert(W, applied + 5 * TTL);
    w.now = applied + TTL;
    assert!(
        w.plan().is_empty(),
        "A may still act until a TTL after that"
    );
    w.now = applied + TTL + 1;
    let commands = w.step();
    assert!(
        matches!(commands[0], OwnershipCommand::Expire { node: A, number: 1 }),
        "{commands:?}"
    );
    assert_eq!(w.owner("r1"), Some(B));
}

#[test]
fn a_renewal_taken_or_applied_later_counts_and_a_session_never_seen_is_not_expired() {
    let mut w = World::new(&["r1"]);
    w.step();
    let start = w.now;
    // Taken by this leader later than applied (a renewal it is still committing): the later.
    w.heard.insert(A, start + TTL);
    w.now = start + 2 * TTL;
    w.applied.insert(B, w.now);
    w.applied.insert(W, w.now);
    w.heard.insert(B, w.now);
    w.heard.insert(W, w.now);
    assert!(w.plan().is_empty());
    // Neither taken nor applied here: counted as renewed now.
    w.heard.remove(&A);
    w.applied.remove(&A);
    w.now += 10 * TTL;
    w.applied.insert(B, w.now);
    w.applied.insert(W, w.now);
    assert!(w.plan().is_empty());
}

#[test]
fn an_owner_that_fails_every_channel_hands_over_with_a_growing_back_off() {
    let mut w = World::new(&["r1"]);
    w.step();
    assert_eq!(w.owner("r1"), Some(A));
    w.renew(A, 1, Reach::Unreachable);
    // B's word is older than A's: it may not reach the RTU either any more.
    assert!(w.step().is_empty());
    w.renew(B, 1, Reach::Reachable);
    w.step();
    // Released, but not granted before A has seen the release.
    assert_eq!(w.owner("r1"), None);
    assert!(w.step().is_empty(), "A has not applied the release yet");
    w.renew(A, 1, Reach::Unreachable);
    w.step();
    assert_eq!(w.owner("r1"), Some(B));
    let first = w.o.leases["r1"].clone();
    assert_eq!((first.epoch, first.handovers), (2, 1));
    assert_eq!(first.backoff_until_ms, w.now + 500);
    // B fails too while A is back: not before the back-off, then doubled.
    w.renew(B, 1, Reach::Unreachable);
    w.renew(A, 1, Reach::Reachable);
    assert!(w.step().is_empty(), "within the back-off nothing moves");
    w.now += 500;
    w.step();
    w.renew(B, 1, Reach::Unreachable);
    w.step();
    assert_eq!(w.owner("r1"), Some(A));
    assert_eq!(w.o.leases["r1"].backoff_until_ms, w.now + 1000);
}

#[test]
fn when_nobody_reaches_an_rtu_it_stays_put_and_nothing_flaps() {
    let mut w = World::new(&["r1"]);
    w.step();
    w.renew(A, 1, Reach::Unreachable);
    w.renew(B, 1, Reach::Unreachable);
    for _ in 0..10 {
        w.now += 5000;
        w.renew(A, 1, Reach::Unreachable);
        w.renew(B, 1, Reach::Unreachable);
        w.renew(W, 1, Reach::Reachable);
        assert!(w.step().is_empty());
    }
    assert_eq!((w.owner("r1"), w.o.leases["r1"].epoch), (Some(A), 1));
}

#[test]
fn a_recovered_node_does_not_take_its_rtus_back() {
    let mut w = World::new(&["r1"]);
    w.step();
    w.now += TTL + 1;
    w.renew(B, 1, Reach::Reachable);
    w.renew(W, 1, Reach::Reachable);
    w.step();
    assert_eq!(w.owner("r1"), Some(B));
    // A comes back with a new session and reaches the RTU: B keeps it.
    w.renew(A, 2, Reach::Reachable);
    assert!(w.step().is_empty());
    assert_eq!(w.owner("r1"), Some(B));
}

#[test]
fn rtus_gone_from_the_configuration_are_dropped() {
    let mut w = World::new(&["r1", "r2"]);
    w.step();
    w.rtus = vec!["r2".into()];
    let commands = w.step();
    assert_eq!(
        commands,
        [OwnershipCommand::Drop {
            rtus: vec!["r1".into()]
        }]
    );
    assert!(w.o.leases.contains_key("r2") && !w.o.leases.contains_key("r1"));
}

#[test]
fn first_grants_wait_for_every_voter_to_have_a_session_or_one_ttl() {
    let mut w = World::new(&["r1", "r2"]);
    // B joined a moment ago and has not renewed yet; the configuration is brand new.
    assert_eq!(
        w.apply(&OwnershipCommand::Expire { node: B, number: 1 }),
        Ok(())
    );
    w.heard.remove(&B);
    w.applied.remove(&B);
    w.config_applied_at = w.now;
    assert!(w.plan().is_empty(), "A must not get everything");
    // B renews: the RTUs are spread.
    w.renew(B, 1, Reach::Reachable);
    w.step();
    assert_eq!((w.owner("r1"), w.owner("r2")), (Some(A), Some(B)));
}

#[test]
fn first_grants_go_ahead_after_one_ttl_without_a_silent_voter() {
    let mut w = World::new(&["r1"]);
    assert_eq!(
        w.apply(&OwnershipCommand::Expire { node: B, number: 1 }),
        Ok(())
    );
    w.heard.remove(&B);
    w.applied.remove(&B);
    w.config_applied_at = w.now;
    assert!(w.plan().is_empty());
    w.now += TTL;
    w.renew(A, 1, Reach::Reachable);
    w.renew(W, 1, Reach::Reachable);
    w.step();
    assert_eq!(w.owner("r1"), Some(A));
}

#[test]
fn a_released_rtu_goes_at_once_when_its_old_owner_dies() {
    let mut w = World::new(&["r1"]);
    w.step();
    w.renew(A, 1, Reach::Unreachable);
    w.renew(B, 1, Reach::Reachable);
    w.step();
    assert_eq!(w.owner("r1"), None);
    // A never renews again: its session expires and B gets the RTU.
    w.now += TTL + 1;
    w.renew(B, 1, Reach::Reachable);
    w.renew(W, 1, Reach::Reachable);
    w.step();
    assert_eq!(w.owner("r1"), Some(B));
}

#[test]
fn a_deliberate_move_waits_for_the_release_and_does_not_count_as_a_hand_over() {
    let mut w = World::new(&["r1"]);
    w.step();
    assert_eq!(w.owner("r1"), Some(A));
    let release = OwnershipCommand::Release {
        rtu: "r1".into(),
        epoch: 1,
        to: Some(B),
        deliberate: true,
    };
    assert_eq!(w.apply(&release), Ok(()));
    assert!(w.step().is_empty());
    w.renew(A, 1, Reach::Reachable);
    w.step();
    let lease = w.o.leases["r1"].clone();
    assert_eq!((lease.owner, lease.epoch, lease.handovers), (B, 2, 0));
    assert_eq!(lease.backoff_until_ms, w.now);
}

#[test]
fn a_released_rtu_that_nobody_reaches_goes_back_to_its_owner() {
    let mut w = World::new(&["r1"]);
    w.step();
    w.renew(A, 1, Reach::Unreachable);
    w.renew(B, 1, Reach::Reachable);
    w.step();
    assert_eq!(w.owner("r1"), None);
    // B loses the device too before the grant; A has seen the release.
    w.renew(B, 1, Reach::Unreachable);
    w.renew(A, 1, Reach::Unreachable);
    w.step();
    assert_eq!(w.owner("r1"), Some(A));
}

#[test]
fn first_grants_wait_until_every_voter_has_said_whether_it_reaches_the_rtu() {
    let mut w = World::new(&[]);
    w.rtus = vec!["r1".into(), "r2".into()];
    w.config_applied_at = w.now;
    // A has proved its probes; B has not said anything about the new RTUs yet.
    w.renew(A, 1, Reach::Reachable);
    assert!(w.plan().is_empty(), "A must not get every RTU");
    w.renew(B, 1, Reach::Reachable);
    w.step();
    assert_eq!((w.owner("r1"), w.owner("r2")), (Some(A), Some(B)));
}

#[test]
fn taking_over_from_a_dead_owner_starts_no_back_off() {
    let mut w = World::new(&["r1"]);
    w.step();
    let mut sessions = BTreeMap::from([(A, 1), (B, 1)]);
    for _ in 0..5 {
        let owner = w.owner("r1").expect("an owner");
        let other = if owner == A { B } else { A };
        w.now += TTL + 1;
        w.renew(other, sessions[&other], Reach::Reachable);
        w.renew(W, 1, Reach::Reachable);
        w.step();
        // The dead one comes back with a new session.
        let number = sessions[&owner] + 1;
        sessions.insert(owner, number);
        w.renew(owner, number, Reach::Reachable);
        let lease = w.o.leases["r1"].clone();
        assert_eq!((lease.owner, lease.handovers), (other, 0));
        assert_eq!(lease.backoff_until_ms, w.now);
    }
}

#[test]
fn the_next_expiry_is_the_oldest_live_session_plus_one_ttl() {
    let mut w = World::new(&["r1"]);
    w.step();
    let start = w.now;
    w.now += 300;
    w.renew(B, 1, Reach::Reachable);
    w.renew(W, 1, Reach::Reachable);
    w.now += 100;
    assert_eq!(next_expiry_ms(&w.view()), Some(start + TTL + 1), "A's");
    w.now = start + TTL + 1;
    assert!(
        w.plan()
            .iter()
            .any(|c| matches!(c, OwnershipCommand::Expire { node: A, .. })),
        "planned at that moment, A expires"
    );
}
