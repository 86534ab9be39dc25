//! What the CLI prints with `--json`, as the tests read it.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Status {
    pub node: String,
    pub node_id: u64,
    pub role: String,
    pub state: String,
    pub leader: Option<String>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub config_version: u64,
    pub version: String,
    pub snapshot_index: u64,
    pub purged_index: u64,
    #[serde(default)]
    pub uptime_ms: u64,
    pub members: Vec<Member>,
    #[serde(default)]
    pub warnings: Vec<Warning>,
}

/// One of `fepha status`'s warnings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Warning {
    pub kind: String,
    pub members: Vec<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    pub name: String,
    pub id: u64,
    pub role: String,
    pub voter: bool,
    pub reachable: bool,
    pub matched_index: Option<u64>,
    pub raft_addr: String,
    pub admin_addr: String,
    // What the member said of itself; None when it did not answer (and in a gRPC local_only
    // answer, for every member but the node answering).
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub term: Option<u64>,
    #[serde(default)]
    pub applied_index: Option<u64>,
    #[serde(default)]
    pub lag: Option<u64>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub config_version: Option<u64>,
    #[serde(default)]
    pub uptime_ms: Option<u64>,
    #[serde(default)]
    pub rtus: Vec<String>,
    #[serde(default)]
    pub error: Option<String>,
}

impl Status {
    pub fn is_leader(&self) -> bool {
        self.state == "leader"
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The kinds of its warnings, in order.
    pub fn warning_kinds(&self) -> Vec<&str> {
        self.warnings.iter().map(|w| w.kind.as_str()).collect()
    }

    /// The membership as a comparable value: what every node must agree on, leaving out
    /// what legitimately differs between views (reachability, replication progress).
    pub fn membership(&self) -> Vec<(String, u64, String, bool, String, String)> {
        let mut m: Vec<_> = self
            .members
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    m.id,
                    m.role.clone(),
                    m.voter,
                    m.raft_addr.clone(),
                    m.admin_addr.clone(),
                )
            })
            .collect();
        m.sort();
        m
    }

    pub fn member_names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.members.iter().map(|m| m.name.clone()).collect();
        names.sort();
        names
    }

    pub fn voter_names(&self) -> Vec<String> {
        let mut names: Vec<_> = self
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.name.clone())
            .collect();
        names.sort();
        names
    }

    /// One line for diagnostics.
    pub fn summary(&self) -> String {
        format!(
            "{} state={} leader={} term={} last_log={} applied={} snapshot={} purged={} config_version={} voters={:?} members={:?}",
            self.node,
            self.state,
            self.leader.as_deref().unwrap_or("-"),
            self.term,
            self.last_log_index,
            self.applied_index,
            self.snapshot_index,
            self.purged_index,
            self.config_version,
            self.voter_names(),
            self.member_names(),
        )
    }
}

impl From<fepha::proto::admin::StatusReply> for Status {
    fn from(s: fepha::proto::admin::StatusReply) -> Status {
        Status {
            node: s.node,
            node_id: s.node_id,
            role: s.role,
            state: s.state,
            leader: s.leader,
            term: s.term,
            last_log_index: s.last_log_index,
            applied_index: s.applied_index,
            config_version: s.config_version,
            version: s.version,
            snapshot_index: s.snapshot_index,
            purged_index: s.purged_index,
            uptime_ms: s.uptime_ms,
            // Made by the CLI from the answer; a gRPC answer has none.
            warnings: Vec::new(),
            members: s
                .members
                .into_iter()
                .map(|m| Member {
                    name: m.name,
                    id: m.id,
                    role: m.role,
                    voter: m.voter,
                    reachable: m.reachable,
                    matched_index: m.matched_index,
                    raft_addr: m.raft_addr,
                    admin_addr: m.admin_addr,
                    state: m.state,
                    term: m.term,
                    applied_index: m.applied_index,
                    lag: m.lag,
                    version: m.version,
                    config_version: m.config_version,
                    uptime_ms: m.uptime_ms,
                    rtus: m.rtus,
                    error: (!m.error.is_empty()).then_some(m.error),
                })
                .collect(),
        }
    }
}

/// `fepha config show --json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConfigShow {
    pub version: u64,
    pub sha256: String,
    pub log_index: u64,
    pub applied_at_ms: u64,
    pub text: String,
}

/// One entry of `fepha config history --json`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct HistoryEntry {
    pub version: u64,
    pub sha256: String,
    pub log_index: u64,
    pub applied_at_ms: u64,
    pub bytes: u64,
}

/// What `config apply` reports: by the CLI's line or by the gRPC reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: u64,
    pub log_index: u64,
    pub sha256: String,
}

impl Applied {
    /// Parses `applied FILE as configuration version V (log index I, sha256 H)`.
    /// Reads the first line of `config apply`'s output; the list of changes follows it.
    pub fn parse_cli(output: &str) -> Option<Applied> {
        let line = output.lines().next()?;
        let rest = line.trim().split(" as configuration version ").nth(1)?;
        let (version, rest) = rest.split_once(" (log index ")?;
        let (log_index, rest) = rest.split_once(", sha256 ")?;
        let sha256 = rest.strip_suffix("); changes:")?;
        Some(Applied {
            version: version.parse().ok()?,
            log_index: log_index.parse().ok()?,
            sha256: sha256.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_apply_line() {
        let a = Applied::parse_cli(
            "applied /tmp/x/site.toml as configuration version 7 (log index 42, sha256 ab12); changes:\n  ~ site x\n",
        );
        assert_eq!(
            a,
            Some(Applied {
                version: 7,
                log_index: 42,
                sha256: "ab12".into()
            })
        );
        assert_eq!(Applied::parse_cli("error: no"), None);
    }
}
