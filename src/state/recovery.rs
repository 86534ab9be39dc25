//! Disaster recovery's changes to the state: what a cluster restored from a snapshot file, or
//! forced down to one node, keeps of the old one, and the audit record that says so.
//!
//! Both keep the site configuration with its history, the operators' certificates, the point
//! image, the events and the masters' acknowledged positions. Both end every lease and
//! session, keeping the epochs, so the next grant of each RTU carries an epoch above any the
//! old owners held and the state machine refuses whatever they might still send.

use serde::{Deserialize, Serialize};

use super::SiteState;
use super::commands::CommandState;
use super::trust::TrustEntry;
use crate::ids::NodeId;
use crate::tls::PeerRole;

/// Audit records kept; the oldest go first.
pub const AUDIT_KEPT: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditKind {
    /// `fepha snapshot restore`: a new cluster from a snapshot file.
    Restore,
    /// `fepha recover --force-single-node`: a survivor made the only member.
    ForceSingleNode,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Restore => "restore",
            AuditKind::ForceSingleNode => "force-single-node",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedMember {
    pub id: NodeId,
    pub name: String,
    pub fingerprint: String,
}

/// One recovery, as every later member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub kind: AuditKind,
    /// Wall clock of the box that ran it, ms since the Unix epoch.
    pub at_ms: u64,
    /// `user@host` that ran the command.
    pub by: String,
    /// The node it made the only member.
    pub node: String,
    pub node_id: NodeId,
    /// The members it removed from the membership (and whose certificates it revoked).
    pub removed: Vec<RemovedMember>,
    /// The last log index the state held before, all of it kept.
    pub last_index_before: u64,
    /// The same, as far as that node knew it to be committed.
    pub committed_before: u64,
    /// What was restored from, or why entries were kept.
    pub detail: String,
}

impl SiteState {
    /// A new cluster from a snapshot: the old nodes are gone, so their certificates, the join
    /// requests and the unused tokens made for them go too; `me` is the only node trusted.
    pub fn restored(&mut self, me: TrustEntry, record: AuditRecord) {
        self.trust
            .entries
            .retain(|_, e| e.role == PeerRole::Operator);
        self.trust.pending.clear();
        self.trust.tokens.clear();
        self.trust.entries.insert(me.fingerprint.clone(), me);
        self.recovered(record);
    }

    /// The survivor of a site alone: the removed members' certificates are revoked, so that a
    /// removed box that comes back with its old data is refused at the TLS handshake and can
    /// never vote or send entries to the recovered cluster.
    pub fn recovered(&mut self, record: AuditRecord) {
        for removed in &record.removed {
            self.trust
                .entries
                .retain(|f, _| f.as_str() != removed.fingerprint);
            self.trust
                .pending
                .retain(|f, _| f.as_str() != removed.fingerprint);
        }
        self.end_every_lease();
        let reason = format!("abandoned by the {}", record.kind.as_str());
        for c in self.commands.commands.values_mut() {
            if !c.state.is_finished() {
                c.state = CommandState::Failed(reason.clone());
            }
        }
        self.commands.forget_pending();
        // Which connection holds a redundancy group: those connections were on old nodes.
        self.forwarding.holders.clear();
        self.forwarding.next.clear();
        self.audit.push(record);
        while self.audit.len() > AUDIT_KEPT {
            self.audit.remove(0);
        }
    }

    fn end_every_lease(&mut self) {
        let o = &mut self.ownership;
        for (rtu, lease) in &o.leases {
            let last = o.epochs.entry(rtu.clone()).or_default();
            *last = (*last).max(lease.epoch);
        }
        o.leases.clear();
        o.sessions.clear();
        o.released.clear();
        o.reach.clear();
        o.links.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ownership::{Lease, OwnershipCommand};
    use crate::state::points::Value;
    use crate::tls::Fingerprint;

    fn entry(n: u8, name: &str, role: PeerRole) -> TrustEntry {
        TrustEntry {
            fingerprint: Fingerprint::of_der(&[n]),
            name: name.into(),
            role,
            added_at_ms: 0,
            added_by: "test".into(),
        }
    }

    fn record(removed: &[(u8, &str)]) -> AuditRecord {
        AuditRecord {
            kind: AuditKind::ForceSingleNode,
            at_ms: 1,
            by: "root@box".into(),
            node: "fep1".into(),
            node_id: 1,
            removed: removed
                .iter()
                .map(|(n, name)| RemovedMember {
                    id: u64::from(*n),
                    name: (*name).into(),
                    fingerprint: Fingerprint::of_der(&[*n]).to_string(),
                })
                .collect(),
            last_index_before: 10,
            committed_before: 9,
            detail: String::new(),
        }
    }

    fn site() -> SiteState {
        let mut s = SiteState::default();
        for e in [
            entry(1, "fep1", PeerRole::Node),
            entry(2, "fep2", PeerRole::Node),
            entry(9, "alice", PeerRole::Operator),
        ] {
            s.trust.entries.insert(e.fingerprint.clone(), e);
        }
        s.ownership.leases.insert(
            "d".into(),
            Lease {
                owner: 2,
                session: 5,
                epoch: 7,
                granted_at_ms: 0,
                handovers: 0,
                backoff_until_ms: 0,
            },
        );
        s.ownership.epochs.insert("d".into(), 7);
        s.commands
            .submit("d.trip", "d", Value::Single(true), "op", 1, false, true);
        s
    }

    #[test]
    fn a_forced_survivor_revokes_the_removed_and_no_old_epoch_can_write() {
        let mut s = site();
        s.recovered(record(&[(2, "fep2")]));
        assert!(s.trust.entries.contains_key(&Fingerprint::of_der(&[1])));
        assert!(!s.trust.entries.contains_key(&Fingerprint::of_der(&[2])));
        assert!(s.ownership.leases.is_empty() && s.ownership.sessions.is_empty());
        assert!(s.ownership.fence("d", 7).is_err());
        assert!(s.commands.pending_for("d").next().is_none());
        assert!(s.commands.commands.values().all(|c| c.state.is_finished()));
        // The next grant must be epoch 8: the state machine checks it.
        let renew = OwnershipCommand::Renew {
            node: 1,
            number: 1,
            now_ms: 1,
            reach: vec![],
            applied: 0,
            links: vec![],
            name: "fep1".into(),
        };
        assert_eq!(s.ownership.apply(11, &renew), Ok(()));
        let grant = |epoch| OwnershipCommand::Grant {
            rtu: "d".into(),
            node: 1,
            epoch,
            now_ms: 1,
            handovers: 0,
            backoff_ms: 0,
        };
        assert!(s.ownership.apply(12, &grant(7)).is_err());
        assert_eq!(s.ownership.apply(12, &grant(8)), Ok(()));
        assert_eq!(s.audit.len(), 1);
    }

    #[test]
    fn a_restore_keeps_only_the_operators_and_the_new_node() {
        let mut s = site();
        s.restored(entry(3, "fep9", PeerRole::Node), record(&[]));
        let names: Vec<&str> = s.trust.entries.values().map(|e| e.name.as_str()).collect();
        assert_eq!(names.len(), 2);
        assert!(
            names.contains(&"alice") && names.contains(&"fep9"),
            "{names:?}"
        );
        for _ in 0..AUDIT_KEPT {
            s.recovered(record(&[]));
        }
        assert_eq!(s.audit.len(), AUDIT_KEPT);
    }
}
