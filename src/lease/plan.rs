//! The leader's lease decisions, as a function of what it knows: which sessions to expire,
//! which RTUs to grant and to whom. No I/O and no clock of its own, so every rule can be
//! tested alone; the leader's loop feeds it and proposes what it returns.

use std::collections::BTreeMap;

use crate::config::Role;
use crate::ids::NodeId;
use crate::state::ownership::{Lease, Ownership, OwnershipCommand, Reach};

/// What the leader knows when it plans.
pub(crate) struct View<'a> {
    pub ownership: &'a Ownership,
    /// The RTU ids of the applied site configuration.
    pub rtus: &'a [String],
    /// The members and what they may do; witnesses never own RTUs.
    pub members: &'a BTreeMap<NodeId, Role>,
    /// When this leader last took a renewal from each node, on its own monotonic clock.
    pub heard_ms: &'a BTreeMap<NodeId, u64>,
    /// When this node applied (or first saw applied) each session's last renewal, on the
    /// same clock, whether it led then or not. A new leader does not trust an old leader's
    /// clock, only its own: a renewal is applied here after its owner sent it, so a TTL from
    /// then ends after the owner's own deadline (see docs/architecture.md, "A new leader").
    /// The loop plans only once every committed renewal is applied here.
    pub applied_ms: &'a BTreeMap<NodeId, u64>,
    /// This leader's monotonic clock now.
    pub now_ms: u64,
    /// Wall-clock time now, recorded in the grants (and compared with back-offs).
    pub wall_ms: u64,
    /// When the applied site configuration was applied (leader's wall clock).
    pub config_applied_at_ms: u64,
    pub ttl_ms: u64,
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
}

/// When `node`'s session was last renewed, by the later of the leader's two clocks. A session
/// with no time at all counts as renewed now: never expired unseen.
fn renewed_ms(v: &View<'_>, node: NodeId) -> u64 {
    [v.heard_ms.get(&node), v.applied_ms.get(&node)]
        .into_iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or(v.now_ms)
}

/// The moment (on the leader's clock) at which the next session that is live now would
/// expire, so that the loop can plan right then rather than at its next tick.
pub(crate) fn next_expiry_ms(v: &View<'_>) -> Option<u64> {
    v.ownership
        .sessions
        .keys()
        .map(|n| renewed_ms(v, *n) + v.ttl_ms + 1)
        .filter(|at| *at > v.now_ms)
        .min()
}

pub(crate) fn plan(v: &View<'_>) -> Vec<OwnershipCommand> {
    let mut commands = Vec::new();
    let o = v.ownership;

    let mut live = Vec::new();
    for (node, session) in &o.sessions {
        let renewed = renewed_ms(v, *node);
        if v.now_ms.saturating_sub(renewed) > v.ttl_ms {
            commands.push(OwnershipCommand::Expire {
                node: *node,
                number: session.number,
            });
        } else if v.members.get(node) == Some(&Role::Voter) {
            live.push(*node);
        }
    }

    let gone: Vec<String> = o
        .leases
        .keys()
        .filter(|rtu| !v.rtus.contains(rtu))
        .cloned()
        .collect();
    if !gone.is_empty() {
        commands.push(OwnershipCommand::Drop { rtus: gone });
    }

    // Load counts what each live node owns, grants of this plan included.
    let mut load: BTreeMap<NodeId, usize> = live.iter().map(|n| (*n, 0)).collect();
    for lease in o.leases.values() {
        if let Some(count) = load.get_mut(&lease.owner) {
            *count += 1;
        }
    }

    // An RTU that has never had an owner waits until every voter has a session (a node that
    // joined a moment ago has not renewed yet), or one TTL after the configuration came:
    // otherwise the first nodes would get everything and, as nothing is taken back, keep it.
    let voters = v.members.values().filter(|r| **r == Role::Voter).count();
    let config_old = v.wall_ms >= v.config_applied_at_ms.saturating_add(v.ttl_ms);
    let every_voter = live.len() >= voters;

    for rtu in v.rtus {
        let reach = o.reach.get(rtu);
        let says = |node: NodeId| reach.and_then(|r| r.get(&node)).copied();
        // ...and until each of them has said whether it reaches the RTU: the first to prove
        // its probes would otherwise get every RTU of a new configuration.
        let all_said = live.iter().all(|n| says(*n).is_some());
        let ready = o.epochs.contains_key(rtu) || config_old || (every_voter && all_said);
        if !ready {
            continue;
        }
        let lease = o.leases.get(rtu).filter(|l| live.contains(&l.owner));
        if let Some(l) = lease {
            // The owner is alive and reaches the RTU (or has not said otherwise): keep it.
            if says(l.owner) != Some(Reach::Unreachable) || v.wall_ms < l.backoff_until_ms {
                continue;
            }
            // The owner failed every channel: take the RTU from it, for a node that reaches
            // it. The grant waits until the owner has seen the release (see below). The other
            // node's word must be newer than the owner's: when the device itself goes down,
            // the others' last word may still be from before.
            let said_at = |n: NodeId| o.sessions.get(&n).map_or(0, |s| s.renewed_index);
            let to = candidate(&load, |n| {
                n != l.owner && says(n) == Some(Reach::Reachable) && said_at(n) > said_at(l.owner)
            });
            if let Some(to) = to {
                commands.push(OwnershipCommand::Release {
                    rtu: rtu.clone(),
                    epoch: l.epoch,
                    to: Some(to),
                    deliberate: false,
                });
            }
            continue;
        }
        // Taken from a live owner: nobody gets it before that owner has seen it go, so two
        // nodes never drive the device at once.
        let released = o.released.get(rtu);
        let expiring = released.is_some_and(|r| !live.contains(&r.from));
        if released.is_some() && !o.release_seen(rtu) && !expiring {
            continue;
        }
        let chosen = released
            .and_then(|r| r.to)
            .filter(|to| live.contains(to))
            .filter(|to| {
                released.is_some_and(|r| r.deliberate) || says(*to) != Some(Reach::Unreachable)
            });
        // Nobody owns it: the least-loaded node that reaches it; failing that, one that has
        // not said it cannot (a cold standby reports nothing).
        // Nobody reaches it: it still gets an owner (a released one goes back to its old
        // owner), which keeps trying and marks its points invalid; without one they would
        // keep their last values as if they were good.
        let fallback = released.map(|r| r.from).filter(|n| live.contains(n));
        let wanted = chosen.or_else(|| {
            candidate(&load, |n| says(n) == Some(Reach::Reachable))
                .or_else(|| candidate(&load, |n| says(n).is_none()))
                .or(fallback)
                .or_else(|| candidate(&load, |_| true))
        });
        let Some(node) = wanted else { continue };
        // Only a hand-over from a live owner that failed counts towards the back-off: taking
        // over from a dead node, or an operator's move, is not flapping.
        let (handovers, backoff_ms) = match released {
            Some(r) if !r.deliberate => {
                let h = handovers(v, &r.lease);
                (h, backoff(v, h))
            }
            _ => (0, 0),
        };
        commands.push(OwnershipCommand::Grant {
            rtu: rtu.clone(),
            node,
            epoch: o.epochs.get(rtu).copied().unwrap_or(0) + 1,
            now_ms: v.wall_ms,
            handovers,
            backoff_ms,
        });
        if let Some(count) = load.get_mut(&node) {
            *count += 1;
        }
    }
    commands
}

/// The least-loaded node that `fits`; the lowest id among equals, so every leader decides
/// the same way.
fn candidate(load: &BTreeMap<NodeId, usize>, fits: impl Fn(NodeId) -> bool) -> Option<NodeId> {
    load.iter()
        .filter(|(n, _)| fits(**n))
        .min_by_key(|(n, count)| (**count, **n))
        .map(|(n, _)| *n)
}

/// Hand-overs in a row. A lease that was held longer than the longest back-off was stable:
/// the count starts again.
fn handovers(v: &View<'_>, previous: &Lease) -> u32 {
    if v.wall_ms.saturating_sub(previous.granted_at_ms) > v.backoff_max_ms {
        1
    } else {
        previous.handovers + 1
    }
}

/// Doubles with each hand-over in a row, capped.
fn backoff(v: &View<'_>, handovers: u32) -> u64 {
    if handovers == 0 {
        return 0;
    }
    let doubled = v.backoff_ms.saturating_mul(1u64 << (handovers - 1).min(32));
    doubled.min(v.backoff_max_ms)
}
