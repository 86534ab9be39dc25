//! The fault scheduler: random faults from the seed, each applied and healed after a random
//! time, at most two at once and never two on one node; every action goes to the history.
//! It also watches the nodes: a member that exited without the nemesis killing it is an
//! unclean exit, recorded and restarted.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore};
use serde_json::json;

use crate::faults::{Fault, Kind, NotNow, member_pair, restart};
use crate::history::History;
use crate::world::{DISK_NODE, SLOW_NODE, World};

/// The least time between two member changes: the cluster settles (the new member catches up
/// and the load goes on) before the next one.
pub const MEMBER_GAP: Duration = Duration::from_secs(60);

struct Active {
    fault: Fault,
    heal_at: Instant,
}

pub struct Nemesis<'a> {
    w: &'a World,
    h: &'a History,
    rng: StdRng,
    kinds: Vec<Kind>,
    active: Vec<Active>,
    /// When the last member change was done.
    last_member_change: Option<Instant>,
    /// Members seen down and not yet restarted, each counted once.
    noted: BTreeSet<usize>,
    /// When a member whose restart failed is tried again.
    retry_at: HashMap<usize, Instant>,
    pub unclean_exits: u64,
    pub disk_exits: u64,
    pub applied: u64,
    pub member_changes: u64,
    /// Leaves the cluster refused as stalling it: not now, drawn again later.
    pub member_refusals: u64,
}

impl<'a> Nemesis<'a> {
    pub fn new(w: &'a World, h: &'a History, rng: StdRng, kinds: Vec<Kind>) -> Nemesis<'a> {
        Nemesis {
            w,
            h,
            rng,
            kinds,
            active: Vec::new(),
            last_member_change: None,
            noted: BTreeSet::new(),
            retry_at: HashMap::new(),
            unclean_exits: 0,
            disk_exits: 0,
            applied: 0,
            member_changes: 0,
            member_refusals: 0,
        }
    }

    /// Runs faults until `until`, then heals everything.
    pub fn run(&mut self, until: Instant) {
        let mut next = Instant::now() + self.pause(2000, 5000);
        while Instant::now() < until && !crate::INTERRUPTED.load(Ordering::SeqCst) {
            self.watch();
            let now = Instant::now();
            let due: Vec<usize> = (0..self.active.len())
                .filter(|&k| self.active[k].heal_at <= now)
                .collect();
            for k in due.into_iter().rev() {
                let a = self.active.remove(k);
                self.heal(&a.fault);
            }
            if now >= next && !self.kinds.is_empty() {
                // A second fault joins the first only sometimes: mostly one at a time, so
                // the take-over figures mean something, with overlaps in the mix.
                let room =
                    self.active.is_empty() || (self.active.len() < 2 && self.rng.random_bool(0.3));
                if room && let Some(f) = self.choose() {
                    let d = self.heal_after(&f);
                    self.h.record("nemesis", "apply", f.describe(self.w));
                    match f.apply(self.w) {
                        Ok(()) => {
                            self.applied += 1;
                            self.active.push(Active {
                                fault: f,
                                heal_at: Instant::now() + d,
                            });
                        }
                        Err(e) if e.downcast_ref::<NotNow>().is_some() => {
                            self.member_refusals += 1;
                            self.h.record(
                                "nemesis",
                                "not now",
                                json!({"fault": f.describe(self.w), "why": format!("{e:#}")}),
                            );
                        }
                        Err(e) => self.h.record(
                            "nemesis",
                            "apply failed",
                            json!({"fault": f.describe(self.w), "error": format!("{e:#}")}),
                        ),
                    }
                }
                next = Instant::now() + self.pause(1000, 6000);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.heal_all();
    }

    pub fn heal_all(&mut self) {
        while let Some(a) = self.active.pop() {
            self.heal(&a.fault);
        }
        self.watch();
    }

    fn heal(&mut self, f: &Fault) {
        self.h.record("nemesis", "heal", f.describe(self.w));
        if let Err(e) = f.heal(self.w) {
            self.h.record(
                "nemesis",
                "heal failed",
                json!({"fault": f.describe(self.w), "error": format!("{e:#}")}),
            );
        }
        // A member change is over once applied; the next waits for the gap.
        if matches!(f, Fault::Member { .. }) {
            self.member_changes += 1;
            self.last_member_change = Some(Instant::now());
        }
    }

    /// Notes every member that exited without the nemesis killing it, and restarts it
    /// unless a fault keeps it down (its full disk: it is restarted once the disk is freed).
    /// An exit of the disk node that its log puts down to the full disk is counted apart.
    pub fn watch(&mut self) {
        for i in self.w.members() {
            if self.w.c.is_running(i) || self.active.iter().any(|a| a.fault == Fault::Kill(i)) {
                continue;
            }
            if self.noted.insert(i) {
                let full =
                    i == DISK_NODE && last_run_log(self.w, i).contains("No space left on device");
                let what = if full {
                    self.disk_exits += 1;
                    "exit on a full disk"
                } else {
                    self.unclean_exits += 1;
                    "unclean exit"
                };
                self.h.record(
                    "nemesis",
                    what,
                    json!({"node": self.w.c.name(i), "process": self.w.c.node(i).describe_process()}),
                );
            }
            let waiting = self.retry_at.get(&i).is_some_and(|t| *t > Instant::now());
            if waiting || self.active.iter().any(|a| a.fault == Fault::Disk(i)) {
                continue;
            }
            match restart(self.w, i) {
                Ok(()) => {
                    self.noted.remove(&i);
                    self.retry_at.remove(&i);
                }
                Err(e) => {
                    self.h.record(
                        "nemesis",
                        "restart failed",
                        json!({"node": self.w.c.name(i), "error": format!("{e:#}")}),
                    );
                    self.retry_at
                        .insert(i, Instant::now() + Duration::from_secs(2));
                }
            }
        }
    }

    /// Every member runs, answers as leader or follower, and the leader has replicated to
    /// it lately: only then may a member leave. With a voter down, the smaller membership
    /// would need that voter to commit, and the cluster would stall until it is back.
    fn all_healthy(&self) -> bool {
        let members = self.w.members();
        if !self.noted.is_empty() || !members.iter().all(|&i| self.w.c.is_running(i)) {
            return false;
        }
        let statuses = self.w.c.statuses(&members);
        let Some(leader) = statuses.iter().flatten().find(|s| s.is_leader()) else {
            return false;
        };
        let serving = statuses.iter().all(|s| {
            s.as_ref()
                .is_ok_and(|s| s.state == "leader" || s.state == "follower")
        });
        let replicated = leader.members.len() == members.len()
            && leader.members.iter().all(|m| {
                m.reachable
                    && m.matched_index
                        .is_some_and(|x| x + 50 >= leader.last_log_index)
            });
        serving && replicated
    }

    fn pause(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(lo_ms..=hi_ms))
    }

    fn heal_after(&mut self, f: &Fault) -> Duration {
        match f {
            // Past the 1 s lease, so the node wakes without it.
            Fault::Pause(_) => self.pause(1500, 6000),
            Fault::Member { .. } => Duration::ZERO,
            // Long enough for a few hundred slowed writes, and for leases to be at stake.
            Fault::SlowDisk(..) => self.pause(3000, 15_000),
            _ => self.pause(1000, 10_000),
        }
    }

    /// A random fault on a node no other active fault touches; None if that kind cannot be
    /// done now.
    fn choose(&mut self) -> Option<Fault> {
        let kind = self.kinds[self.rng.random_range(0..self.kinds.len())];
        let busy: Vec<usize> = self.active.iter().map(|a| a.fault.node()).collect();
        let free: Vec<usize> = self
            .w
            .members()
            .into_iter()
            .filter(|i| !busy.contains(i) && !self.noted.contains(i) && self.w.c.is_running(*i))
            .collect();
        // Drawn whatever the kind, so the sequence of draws is the same for a seed.
        let pick = self.rng.next_u32() as usize;
        let leader_first = self.rng.random_bool(0.5);
        let amount = self.rng.random_range(0..1000u32);
        if free.is_empty() {
            return None;
        }
        let mut target = free[pick % free.len()];
        if leader_first && let Some(l) = self.leader(free[0]).filter(|l| free.contains(l)) {
            target = l;
        }
        match kind {
            Kind::Kill => Some(Fault::Kill(target)),
            Kind::Pause => Some(Fault::Pause(target)),
            Kind::Partition => Some(match pick % 3 {
                0 => Fault::Isolate(target),
                1 => Fault::CutPeers(target),
                _ => Fault::OneWay(target),
            }),
            Kind::Clock => {
                let s = 30 + i64::from(amount) * 7;
                Some(Fault::Clock(
                    target,
                    if pick.is_multiple_of(2) { s } else { -s },
                ))
            }
            Kind::Disk => free.contains(&DISK_NODE).then_some(Fault::Disk(DISK_NODE)),
            Kind::Netem => Some(Fault::Netem(target, 20 + amount % 180, amount % 4)),
            Kind::SlowDisk => {
                let (bytes_per_s, iops) = crate::slowdisk::limits(amount);
                free.contains(&SLOW_NODE)
                    .then_some(Fault::SlowDisk(SLOW_NODE, bytes_per_s, iops))
            }
            Kind::Member => {
                let due = member_due(self.last_member_change, Instant::now());
                let pair = member_pair(&self.w.members());
                let idle = self.active.is_empty();
                // Asked last: it asks every member for its status.
                let healthy = due && idle && pair.is_some() && self.all_healthy();
                match pair {
                    Some((left, joined)) if healthy => Some(Fault::Member { left, joined }),
                    _ => {
                        // Why a long run has few member rounds, in the history.
                        self.h.record(
                            "nemesis",
                            "member change skipped",
                            json!({"gap_passed": due, "no_other_fault": idle,
                                   "change_half_done": pair.is_none(), "healthy": healthy}),
                        );
                        None
                    }
                }
            }
        }
    }

    /// The leader as `via` (a node no fault touches) sees it.
    fn leader(&self, via: usize) -> Option<usize> {
        let s = self.w.c.status(via).ok()?;
        self.w.c.index_of(&s.leader?)
    }
}

/// Whether a member change may be done at `now`: the first at any time, the next once
/// [`MEMBER_GAP`] has passed since the last.
fn member_due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|t| now.saturating_duration_since(t) >= MEMBER_GAP)
}

/// What node `i` logged since the harness last started it.
fn last_run_log(w: &World, i: usize) -> String {
    let log = std::fs::read_to_string(&w.c.node(i).log_path).unwrap_or_default();
    match log.rfind("==== harness: starting") {
        Some(at) => log[at..].to_owned(),
        None => log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_changes_keep_their_gap() {
        let t = Instant::now();
        assert!(member_due(None, t));
        assert!(!member_due(Some(t), t));
        assert!(!member_due(
            Some(t),
            t + MEMBER_GAP - Duration::from_millis(1)
        ));
        assert!(member_due(Some(t), t + MEMBER_GAP));
        // A clock read before the last change (it cannot go back, but no panic if it did).
        assert!(!member_due(Some(t + Duration::from_secs(1)), t));
    }
}
