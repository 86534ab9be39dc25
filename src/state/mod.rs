//! The replicated state machine: the commands proposed to the log and what applying them does.
//!
//! It holds the site configuration document (as text, with a version and a bounded history)
//! and the trust list; openraft itself keeps the membership beside them.

pub mod commands;
pub mod forwarding;
pub mod links;
pub mod ownership;
pub mod points;
pub mod recent;
pub mod recovery;
pub mod trust;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How many past configuration versions are remembered (their digests, not their text).
pub const CONFIG_HISTORY_LEN: usize = 1000;

/// A command in the replicated log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Replace the site configuration. `applied_at_ms` is stamped by the proposing node so that
    /// every node stores the same value.
    ApplyConfig {
        text: String,
        applied_at_ms: u64,
    },
    Trust(trust::TrustCommand),
    Ownership(ownership::OwnershipCommand),
    /// Point changes from RTU owners, each batch fenced by its epoch.
    Points(Vec<points::Batch>),
    Command(commands::CommandOp),
    Forwarding(forwarding::ForwardingOp),
}

/// What applying a command returned.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub enum Response {
    #[default]
    None,
    ConfigApplied {
        version: u64,
        sha256: String,
    },
    Trust(Result<(), trust::TrustRefusal>),
    Ownership(Result<(), ownership::OwnershipRefusal>),
    /// Per batch, how many events it appended.
    Points(Vec<Result<u64, ownership::OwnershipRefusal>>),
    /// The command's id.
    Command(Result<u64, CommandRefusal>),
}

/// Why a command operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandRefusal {
    #[error(transparent)]
    Fenced(#[from] ownership::OwnershipRefusal),
    #[error(transparent)]
    State(#[from] commands::CommandRefusal),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDoc {
    pub version: u64,
    pub text: String,
    pub sha256: String,
    pub log_index: u64,
    pub applied_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub version: u64,
    pub sha256: String,
    pub log_index: u64,
    pub applied_at_ms: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SiteState {
    pub config: Option<ConfigDoc>,
    /// Oldest first, at most [`CONFIG_HISTORY_LEN`] entries.
    pub history: VecDeque<ConfigSummary>,
    // Defaults, so that a snapshot taken before a part existed still loads.
    #[serde(default)]
    pub trust: trust::Trust,
    #[serde(default)]
    pub ownership: ownership::Ownership,
    #[serde(default)]
    pub points: points::Points,
    #[serde(default)]
    pub commands: commands::Commands,
    #[serde(default)]
    pub forwarding: forwarding::Forwarding,
    /// The newest leader time carried by an ownership command, for the link points' times.
    #[serde(default)]
    pub ownership_ms: u64,
    /// Names the cluster across restores and recoveries: made from the founding node's trust
    /// entry when `init` applies it. Empty for a cluster founded before it existed.
    #[serde(default)]
    pub cluster_id: String,
    /// Restores and forced recoveries, oldest first.
    #[serde(default)]
    pub audit: Vec<recovery::AuditRecord>,
}

impl SiteState {
    pub fn config_version(&self) -> u64 {
        self.config.as_ref().map_or(0, |c| c.version)
    }

    /// Events are kept only as far back as some redundancy group may still be sent them:
    /// this bounds the state (and its snapshots) by the site's backlog, not its history.
    fn forget_acknowledged_events(&mut self) {
        if let Some(seq) = self.forwarding.acknowledged_by_all() {
            self.points.forget_events_through(seq);
        }
    }
}

pub fn sha256_hex(text: &str) -> String {
    sha256_hex_bytes(text.as_bytes())
}

pub fn sha256_hex_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl SiteState {
    /// Applies the entry at log `index`. Deterministic: every node applies the same entries in
    /// the same order and reaches the same state.
    pub fn apply(&mut self, index: u64, data: &Request) -> Response {
        match data {
            Request::ApplyConfig {
                text,
                applied_at_ms,
            } => {
                let version = self.config_version() + 1;
                let sha256 = sha256_hex(text);
                self.history.push_back(ConfigSummary {
                    version,
                    sha256: sha256.clone(),
                    log_index: index,
                    applied_at_ms: *applied_at_ms,
                    bytes: text.len() as u64,
                });
                while self.history.len() > CONFIG_HISTORY_LEN {
                    self.history.pop_front();
                }
                // Points that the new configuration no longer has go with it. (It was
                // validated before it was proposed; should it not parse, nothing is dropped.)
                if let Ok(site) = crate::site::parse(text) {
                    let ids: std::collections::BTreeSet<&str> = site
                        .points
                        .iter()
                        .map(|p| p.id.get_ref().as_str())
                        .collect();
                    self.points.retain(|id| ids.contains(id));
                    self.points.recent.configure(
                        site.rtus
                            .iter()
                            .filter_map(|r| {
                                let k = *r.iec104.as_ref()?.k.get_ref();
                                Some((r.id.get_ref().clone(), k))
                            })
                            .collect(),
                    );
                    let groups: std::collections::BTreeSet<String> = site
                        .forwarders
                        .iter()
                        .flat_map(|f| {
                            f.group_names()
                                .into_iter()
                                .map(|g| forwarding::group_key(f.name.get_ref(), &g))
                        })
                        .collect();
                    self.forwarding.configure(groups);
                    self.forget_acknowledged_events();
                }
                self.config = Some(ConfigDoc {
                    version,
                    text: text.clone(),
                    sha256: sha256.clone(),
                    log_index: index,
                    applied_at_ms: *applied_at_ms,
                });
                Response::ConfigApplied { version, sha256 }
            }
            Request::Trust(command) => {
                if let trust::TrustCommand::Add(entry) = command
                    && entry.added_by == "init"
                    && self.cluster_id.is_empty()
                {
                    let seed = format!("{} {}", entry.fingerprint, entry.added_at_ms);
                    self.cluster_id = sha256_hex(&seed)[..16].to_owned();
                }
                Response::Trust(self.trust.apply(command))
            }
            Request::Ownership(command) => {
                let before = self.ownership.epochs_owned();
                let result = self.ownership.apply(index, command);
                // Renewals carry the leader's clock; other commands reuse the last time seen.
                if let ownership::OwnershipCommand::Renew { now_ms, .. } = command {
                    self.ownership_ms = self.ownership_ms.max(*now_ms);
                }
                if result.is_ok() {
                    self.points.sync_links(&self.ownership, self.ownership_ms);
                }
                // A command that was executing under a lease that has just ended will never
                // be finished by that owner: its outcome is unknown, and it must not run again.
                let after = self.ownership.epochs_owned();
                for (rtu, epoch) in &before {
                    if after.get(rtu) != Some(epoch) {
                        self.commands.abandon(rtu);
                    }
                }
                Response::Ownership(result)
            }
            Request::Points(batches) => {
                // Every batch of an entry has its node and write.
                let first_time = batches
                    .first()
                    .is_none_or(|b| self.points.first_time(b.node, b.write));
                if !first_time {
                    // Applied once already, or refused; the fence answers as it did then, as
                    // epochs only grow (or says no where it said yes, and the owner takes
                    // the changes for not written: a repeat, never a loss).
                    metrics::counter!("fepha_point_writes_repeated_total").increment(1);
                    return Response::Points(
                        batches
                            .iter()
                            .map(|b| self.ownership.fence(&b.rtu, b.epoch).map(|()| 0))
                            .collect(),
                    );
                }
                let applied = Response::Points(
                    batches
                        .iter()
                        .map(|batch| {
                            let fenced = self.ownership.fence(&batch.rtu, batch.epoch);
                            if fenced.is_err() {
                                metrics::counter!("fepha_stale_writes_total").increment(1);
                            }
                            fenced.map(|()| {
                                let events = self.points.apply(batch);
                                metrics::counter!("fepha_points_applied_total")
                                    .increment(batch.changes.len() as u64);
                                metrics::counter!("fepha_events_applied_total").increment(events);
                                events
                            })
                        })
                        .collect(),
                );
                // With no master configured, nothing waits for the events just appended.
                self.forget_acknowledged_events();
                applied
            }
            Request::Command(op) => Response::Command(self.apply_command(op)),
            Request::Forwarding(op) => {
                let sessions = &self.ownership.sessions;
                self.forwarding.apply(op, |n| sessions.contains_key(&n));
                self.forget_acknowledged_events();
                Response::None
            }
        }
    }
}

impl SiteState {
    fn apply_command(&mut self, op: &commands::CommandOp) -> Result<u64, CommandRefusal> {
        use commands::CommandOp;
        match op {
            CommandOp::Submit {
                point,
                rtu,
                value,
                origin,
                now_ms,
                select,
            } => {
                let owned = self.ownership.leases.contains_key(rtu);
                Ok(self
                    .commands
                    .submit(point, rtu, *value, origin, *now_ms, *select, owned))
            }
            CommandOp::Confirm { id, epoch } => {
                let rtu = self.command_rtu(*id)?;
                self.ownership.fence(&rtu, *epoch)?;
                self.commands.confirm(*id, *epoch)?;
                Ok(*id)
            }
            CommandOp::Start { id, node, epoch } => {
                let rtu = self.command_rtu(*id)?;
                self.ownership.fence(&rtu, *epoch)?;
                self.commands.start(*id, *node, *epoch)?;
                Ok(*id)
            }
            CommandOp::Finish { id, epoch, outcome } => {
                let rtu = self.command_rtu(*id)?;
                self.ownership.fence(&rtu, *epoch)?;
                self.commands.finish(*id, *epoch, outcome)?;
                Ok(*id)
            }
            CommandOp::Cancel { id, reason } => {
                self.commands.cancel(*id, reason)?;
                Ok(*id)
            }
        }
    }

    fn command_rtu(&self, id: u64) -> Result<String, CommandRefusal> {
        self.commands
            .commands
            .get(&id)
            .map(|c| c.rtu.clone())
            .ok_or(CommandRefusal::State(commands::CommandRefusal::Unknown(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_grow_and_history_is_bounded() {
        let mut s = SiteState::default();
        for i in 1..=(CONFIG_HISTORY_LEN as u64 + 5) {
            let r = s.apply(
                i,
                &Request::ApplyConfig {
                    text: format!("v{i}"),
                    applied_at_ms: i,
                },
            );
            match r {
                Response::ConfigApplied { version, .. } => assert_eq!(version, i),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(s.history.len(), CONFIG_HISTORY_LEN);
        assert_eq!(s.history.front().map(|h| h.version), Some(6));
        let doc = s.config.expect("config applied");
        assert_eq!(doc.text, format!("v{}", CONFIG_HISTORY_LEN + 5));
        assert_eq!(doc.sha256, sha256_hex(&doc.text));
    }

    /// The state with `examples/site.toml` applied at index 1: a 104 forwarder
    /// `control-centre` with groups `main-centre` and `everyone-else`.
    fn example_site() -> SiteState {
        let mut s = SiteState::default();
        let text = include_str!("../../examples/site.toml").to_string();
        s.apply(
            1,
            &Request::ApplyConfig {
                text,
                applied_at_ms: 1,
            },
        );
        s
    }

    /// Node 1's acknowledgement of `control-centre`'s group `group` up to event `seq`.
    fn ack(group: &str, seq: u64) -> Request {
        Request::Forwarding(forwarding::ForwardingOp::Acked {
            node: 1,
            acks: vec![(forwarding::group_key("control-centre", group), seq)],
        })
    }

    #[test]
    fn events_every_configured_group_acknowledged_are_forgotten() {
        let mut s = example_site();
        let change = |i: u64| points::Change {
            point: "feeder-a.breaker".into(),
            value: points::Value::Single(i.is_multiple_of(2)),
            quality: points::Quality::default(),
            time_ms: 1000 + i,
            event: true,
        };
        s.points.apply(&points::Batch {
            rtu: "feeder-a".into(),
            epoch: 1,
            node: 1,
            changes: (1..=10).map(change).collect(),
            write: None,
        });
        let kept = |s: &SiteState| s.points.events.iter().map(|e| e.seq).collect::<Vec<_>>();
        s.apply(2, &ack("main-centre", 6));
        assert_eq!(
            kept(&s).len(),
            10,
            "a group that never started holds them all"
        );
        s.apply(3, &ack("everyone-else", 4));
        assert_eq!(kept(&s), (5..=10).collect::<Vec<_>>());
        s.apply(4, &ack("everyone-else", 10));
        assert_eq!(kept(&s), (7..=10).collect::<Vec<_>>());
        assert_eq!(s.points.next_seq, 11, "numbering goes on");
    }

    #[test]
    fn a_104_rtus_newest_reports_outlive_the_masters_acknowledgements() {
        let mut s = example_site();
        let batch = |rtu: &str, point: &str| points::Batch {
            rtu: rtu.into(),
            epoch: 1,
            node: 1,
            changes: vec![points::Change {
                point: point.into(),
                value: points::Value::Double(2),
                quality: points::Quality::default(),
                time_ms: 5000,
                event: true,
            }],
            write: None,
        };
        s.points.apply(&batch("bay-5", "bay-5.breaker"));
        s.points.apply(&batch("feeder-a", "feeder-a.breaker"));
        for (i, group) in ["main-centre", "everyone-else"].into_iter().enumerate() {
            s.apply(2 + i as u64, &ack(group, 2));
        }
        assert!(s.points.events.is_empty(), "every master has them");
        let kept: Vec<&str> = s
            .points
            .recent
            .of("bay-5")
            .map(|r| r.point.as_str())
            .collect();
        assert_eq!(kept, ["bay-5.breaker"]);
        assert_eq!(
            s.points.recent.of("feeder-a").count(),
            0,
            "Modbus: none kept"
        );
    }
}
