//! What `fepha status` warns an operator of, from one node's answer: members that are down,
//! a cluster one failure (or none) away from standing still, and members that disagree on
//! the software or the site configuration they run.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::proto::admin::{Member, StatusReply};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Warning {
    /// Stable, for scripts: member_down, no_quorum, no_fault_tolerance, no_leader,
    /// version_skew, config_skew.
    pub kind: &'static str,
    /// The members it is about (for the quorum warnings: the voters that are down).
    pub members: Vec<String>,
    pub message: String,
}

pub(super) fn warnings(s: &StatusReply) -> Vec<Warning> {
    if matches!(s.state.as_str(), "uninitialised" | "removed") {
        return Vec::new();
    }
    let mut out = Vec::new();
    for m in s.members.iter().filter(|m| !m.reachable) {
        let why = if m.error.is_empty() {
            String::new()
        } else {
            format!(" ({})", m.error)
        };
        out.push(Warning {
            kind: "member_down",
            members: vec![m.name.clone()],
            message: format!("member {} is down: it does not answer{why}", m.name),
        });
    }
    out.extend(quorum(&s.members));
    if s.leader.is_none() {
        out.push(Warning {
            kind: "no_leader",
            members: Vec::new(),
            message: "the cluster has no leader (as this node sees it): nothing can be written"
                .into(),
        });
    }
    let versions = spread(s.members.iter().filter(|m| m.reachable), |m| {
        m.version.clone()
    });
    if versions.len() > 1 {
        out.push(Warning {
            kind: "version_skew",
            members: versions.values().flatten().cloned().collect(),
            message: format!(
                "members run different software versions: {}",
                describe(&versions)
            ),
        });
    }
    let configs = spread(s.members.iter(), |m| m.config_version);
    if configs.len() > 1 {
        let down: Vec<&str> = s
            .members
            .iter()
            .filter(|m| !m.reachable && m.config_version.is_some())
            .map(|m| m.name.as_str())
            .collect();
        let note = if down.is_empty() {
            String::new()
        } else {
            format!(
                " ({} down: as far as the leader replicated to it)",
                down.join(", ")
            )
        };
        out.push(Warning {
            kind: "config_skew",
            members: configs.values().flatten().cloned().collect(),
            message: format!(
                "members have applied different site configuration versions: {}{note}",
                describe(&configs)
            ),
        });
    }
    out
}

/// The quorum warnings: the voters that are up are a bare majority, or fewer.
fn quorum(members: &[Member]) -> Option<Warning> {
    let voters: Vec<&Member> = members.iter().filter(|m| m.voter).collect();
    let n = voters.len();
    if n == 0 {
        return None;
    }
    let up = voters.iter().filter(|m| m.reachable).count();
    let majority = n / 2 + 1;
    let down: Vec<String> = voters
        .iter()
        .filter(|m| !m.reachable)
        .map(|m| m.name.clone())
        .collect();
    if up < majority {
        Some(Warning {
            kind: "no_quorum",
            members: down,
            message: format!(
                "no quorum: {up} of {n} voters are up and {majority} are needed; the cluster \
                 cannot commit anything"
            ),
        })
    } else if up == majority {
        Some(Warning {
            kind: "no_fault_tolerance",
            members: down,
            message: format!(
                "no fault tolerance left: {up} of {n} voters are up; losing one more stops the \
                 cluster"
            ),
        })
    } else {
        None
    }
}

/// Member names by the value `f` gives them (members it gives none are left out).
fn spread<'a, V: Ord>(
    members: impl Iterator<Item = &'a Member>,
    f: impl Fn(&Member) -> Option<V>,
) -> BTreeMap<V, Vec<String>> {
    let mut by: BTreeMap<V, Vec<String>> = BTreeMap::new();
    for m in members {
        if let Some(v) = f(m) {
            by.entry(v).or_default().push(m.name.clone());
        }
    }
    by
}

/// `0.1.0 on fep1, fep2; 0.2.0 on fep3`
fn describe<V: std::fmt::Display>(by: &BTreeMap<V, Vec<String>>) -> String {
    let parts: Vec<String> = by
        .iter()
        .map(|(v, names)| format!("{v} on {}", names.join(", ")))
        .collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, voter: bool, reachable: bool) -> Member {
        Member {
            name: name.into(),
            role: if voter { "voter" } else { "learner" }.into(),
            voter,
            reachable,
            version: reachable.then(|| "0.1.0".to_string()),
            config_version: Some(2),
            error: if reachable {
                String::new()
            } else {
                "connection refused".into()
            },
            ..Member::default()
        }
    }

    fn reply(members: Vec<Member>) -> StatusReply {
        StatusReply {
            node: "fep1".into(),
            state: "leader".into(),
            leader: Some("fep1".into()),
            members,
            ..StatusReply::default()
        }
    }

    fn kinds(s: &StatusReply) -> Vec<&'static str> {
        warnings(s).iter().map(|w| w.kind).collect()
    }

    #[test]
    fn three_up_is_quiet() {
        let s = reply(vec![
            member("fep1", true, true),
            member("fep2", true, true),
            member("fep3", true, true),
        ]);
        assert_eq!(warnings(&s), Vec::new());
    }

    #[test]
    fn one_of_three_down_leaves_no_fault_tolerance() {
        let s = reply(vec![
            member("fep1", true, true),
            member("fep2", true, true),
            member("fep3", true, false),
        ]);
        let w = warnings(&s);
        assert_eq!(
            w.iter().map(|w| w.kind).collect::<Vec<_>>(),
            ["member_down", "no_fault_tolerance"]
        );
        assert_eq!(
            w[0].message,
            "member fep3 is down: it does not answer (connection refused)"
        );
        assert_eq!(
            w[1].message,
            "no fault tolerance left: 2 of 3 voters are up; losing one more stops the cluster"
        );
        assert_eq!(w[1].members, ["fep3"]);
    }

    #[test]
    fn two_voters_and_a_witness_with_one_down() {
        let mut witness = member("wit", true, true);
        witness.role = "witness".into();
        let s = reply(vec![
            member("fep1", true, true),
            member("fep2", true, false),
            witness,
        ]);
        assert_eq!(kinds(&s), ["member_down", "no_fault_tolerance"]);
    }

    #[test]
    fn a_learner_does_not_count_for_the_quorum() {
        let s = reply(vec![
            member("fep1", true, true),
            member("fep2", true, true),
            member("fep3", true, true),
            member("fep4", false, false),
        ]);
        assert_eq!(kinds(&s), ["member_down"]);
    }

    #[test]
    fn two_of_three_down_is_no_quorum() {
        let mut s = reply(vec![
            member("fep1", true, true),
            member("fep2", true, false),
            member("fep3", true, false),
        ]);
        s.leader = None;
        assert_eq!(
            kinds(&s),
            ["member_down", "member_down", "no_quorum", "no_leader"]
        );
        assert!(
            warnings(&s)[2]
                .message
                .starts_with("no quorum: 1 of 3 voters are up and 2 are needed")
        );
    }

    #[test]
    fn five_with_one_down_still_tolerates_a_failure() {
        let s = reply(vec![
            member("a", true, true),
            member("b", true, true),
            member("c", true, true),
            member("d", true, true),
            member("e", true, false),
        ]);
        assert_eq!(kinds(&s), ["member_down"]);
    }

    #[test]
    fn a_single_voter_has_no_fault_tolerance() {
        let s = reply(vec![member("fep1", true, true)]);
        assert_eq!(kinds(&s), ["no_fault_tolerance"]);
    }

    #[test]
    fn software_versions_that_differ() {
        let mut odd = member("fep3", true, true);
        odd.version = Some("0.2.0".into());
        let s = reply(vec![
            member("fep1", true, true),
            member("fep2", true, true),
            odd,
        ]);
        let w = warnings(&s);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].kind, "version_skew");
        assert_eq!(
            w[0].message,
            "members run different software versions: 0.1.0 on fep1, fep2; 0.2.0 on fep3"
        );
    }

    #[test]
    fn config_versions_that_differ_including_a_member_that_is_down() {
        let mut behind = member("fep3", true, false);
        behind.config_version = Some(1);
        let s = reply(vec![
            member("fep1", true, true),
            member("fep2", true, true),
            behind,
        ]);
        let w = warnings(&s);
        assert_eq!(
            w.iter().map(|w| w.kind).collect::<Vec<_>>(),
            ["member_down", "no_fault_tolerance", "config_skew"]
        );
        assert_eq!(
            w[2].message,
            "members have applied different site configuration versions: 1 on fep3; 2 on fep1, \
             fep2 (fep3 down: as far as the leader replicated to it)"
        );
    }

    #[test]
    fn an_uninitialised_node_warns_of_nothing() {
        let mut s = reply(Vec::new());
        s.state = "uninitialised".into();
        s.leader = None;
        assert_eq!(warnings(&s), Vec::new());
    }
}
