//! The node configuration file (node.toml): who this node is and where it listens.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read node config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("node config {path}: key `{key}`: {reason}")]
    BadValue {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

/// What a node does besides voting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A full FEP: acquisition, forwarding and a Raft vote.
    #[default]
    Voter,
    /// A Raft voter that does no field I/O (the third box of a two-box site).
    Witness,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Voter => "voter",
            Role::Witness => "witness",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Raft timers. openraft 0.9 lets a follower campaign only after `election_timeout_max` (the
/// leader's lease) plus a random election timeout without a heartbeat, and the other voters
/// vote only once their own lease has run out. A leader whose process crashed is seen at once
/// (`raft::leader_watch`) and replaced about one `election_timeout_max` after its last
/// heartbeat; a box that dies silently, after the lease and the election timeout.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower needs no snapshot.
    pub keep_entries_after_snapshot: u64,
}

/// The timers' starting points; any timer set in `[raft]` replaces the profile's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RaftProfile {
    /// For a field LAN shared with other traffic and boxes that may be loaded: heartbeats
    /// every 50 ms, a lease of 300 ms.
    #[default]
    Lan,
    /// For a dedicated, quiet link between the boxes: heartbeats every 25 ms, a lease of
    /// 150 ms. About twice as fast a failover; a leader stalled for a quarter of a second
    /// (a loaded box, a slow disk) is replaced where `lan` would have waited.
    Fast,
}

impl RaftProfile {
    /// (heartbeat, election timeout min, max) in ms.
    fn timers(self) -> (u64, u64, u64) {
        match self {
            RaftProfile::Lan => (50, 200, 300),
            RaftProfile::Fast => (25, 100, 150),
        }
    }
}

impl Default for RaftSettings {
    fn default() -> Self {
        RawRaftSettings::default().resolve()
    }
}

/// `[raft]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRaftSettings {
    profile: RaftProfile,
    heartbeat_ms: Option<u64>,
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    snapshot_after_entries: Option<u64>,
    keep_entries_after_snapshot: Option<u64>,
}

impl RawRaftSettings {
    fn resolve(&self) -> RaftSettings {
        let (heartbeat, min, max) = self.profile.timers();
        RaftSettings {
            heartbeat_ms: self.heartbeat_ms.unwrap_or(heartbeat),
            election_timeout_min_ms: self.election_timeout_min_ms.unwrap_or(min),
            election_timeout_max_ms: self.election_timeout_max_ms.unwrap_or(max),
            snapshot_after_entries: self.snapshot_after_entries.unwrap_or(5000),
            keep_entries_after_snapshot: self.keep_entries_after_snapshot.unwrap_or(1000),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodeConfig {
    name: String,
    data_dir: PathBuf,
    raft_addr: String,
    admin_addr: String,
    metrics_addr: String,
    role: Role,
    #[serde(default)]
    field_source_ip: Option<String>,
    #[serde(default)]
    forwarder_ip: Option<String>,
    #[serde(default)]
    raft: RawRaftSettings,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub raft_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub role: Role,
    /// The local address field connections (Modbus, 104 acquisition) are made from, for a box
    /// with several interfaces; the kernel chooses when unset.
    pub field_source_ip: Option<IpAddr>,
    /// The local address the 104 forwarders listen on (their ports come from the site
    /// configuration); every interface when unset.
    pub forwarder_ip: IpAddr,
    pub raft: RaftSettings,
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        NodeConfig::parse(path, &text)
    }

    /// Parses and validates; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<NodeConfig, ConfigError> {
        let raw: RawNodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let bad = |key: &'static str, reason: String| ConfigError::BadValue {
            path: path.to_owned(),
            key,
            reason,
        };
        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(bad(
                "name",
                format!(
                    "{:?} is not a node name (letters, digits, '-', '_', '.')",
                    raw.name
                ),
            ));
        }
        if raw.data_dir.as_os_str().is_empty() {
            return Err(bad("data_dir", "must not be empty".into()));
        }
        let raft_addr = parse_addr(&raw.raft_addr).map_err(|r| bad("raft_addr", r))?;
        let admin_addr = parse_addr(&raw.admin_addr).map_err(|r| bad("admin_addr", r))?;
        let metrics_addr = parse_addr(&raw.metrics_addr).map_err(|r| bad("metrics_addr", r))?;
        let field_source_ip = raw
            .field_source_ip
            .as_deref()
            .map(|t| {
                t.parse::<IpAddr>()
                    .map_err(|_| bad("field_source_ip", format!("{t:?} is not an IP address")))
            })
            .transpose()?;
        let forwarder_ip = match raw.forwarder_ip.as_deref() {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(t) => t
                .parse::<IpAddr>()
                .map_err(|_| bad("forwarder_ip", format!("{t:?} is not an IP address")))?,
        };
        let raft = raw.raft.resolve();
        let t = &raft;
        if t.heartbeat_ms == 0 {
            return Err(bad("raft.heartbeat_ms", "must be above 0".into()));
        }
        if t.election_timeout_min_ms <= t.heartbeat_ms {
            return Err(bad(
                "raft.election_timeout_min_ms",
                "must be above raft.heartbeat_ms".into(),
            ));
        }
        if t.election_timeout_max_ms <= t.election_timeout_min_ms {
            return Err(bad(
                "raft.election_timeout_max_ms",
                "must be above raft.election_timeout_min_ms".into(),
            ));
        }
        if t.snapshot_after_entries == 0 {
            return Err(bad("raft.snapshot_after_entries", "must be above 0".into()));
        }
        Ok(NodeConfig {
            name: raw.name,
            data_dir: raw.data_dir,
            raft_addr,
            admin_addr,
            metrics_addr,
            role: raw.role,
            field_source_ip,
            forwarder_ip,
            raft,
        })
    }

    /// How long one Raft round trip may take before the peer counts as unreachable.
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.raft.heartbeat_ms.max(50))
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IP:port address"))?;
    // The address is also what the other nodes are told to dial.
    if addr.ip().is_unspecified() {
        return Err(format!(
            "{text:?} cannot be dialled by other nodes; give this box's own address"
        ));
    }
    if addr.port() == 0 {
        return Err(format!("{text:?} needs a port"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "fep1"
data_dir = "/var/lib/fepha"
raft_addr = "127.0.0.1:7101"
admin_addr = "127.0.0.1:7102"
metrics_addr = "127.0.0.1:9101"
role = "voter"
"#;

    fn parse(text: &str) -> Result<NodeConfig, String> {
        NodeConfig::parse(Path::new("node.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_the_documented_example() {
        let cfg = parse(GOOD).expect("valid config");
        assert_eq!(cfg.name, "fep1");
        assert_eq!(cfg.role, Role::Voter);
        assert_eq!(cfg.raft_addr.port(), 7101);
        assert_eq!(cfg.raft.heartbeat_ms, 50);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse(&format!("{GOOD}colour = \"red\"\n")).expect_err("must fail");
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn missing_key_is_named() {
        let text = GOOD.replace("admin_addr = \"127.0.0.1:7102\"\n", "");
        let err = parse(&text).expect_err("must fail");
        assert!(err.contains("admin_addr"), "{err}");
    }

    #[test]
    fn bad_address_is_named() {
        let text = GOOD.replace("127.0.0.1:7101", "localhost-7101");
        let err = parse(&text).expect_err("must fail");
        assert!(
            err.contains("raft_addr") && err.contains("localhost-7101"),
            "{err}"
        );
        let text = GOOD.replace("127.0.0.1:9101", "0.0.0.0:9101");
        let err = parse(&text).expect_err("must fail");
        assert!(err.contains("metrics_addr"), "{err}");
    }

    #[test]
    fn bad_role_and_timers_are_named() {
        let err = parse(&GOOD.replace("\"voter\"", "\"observer\"")).expect_err("must fail");
        assert!(err.contains("role") || err.contains("observer"), "{err}");
        let text = format!("{GOOD}[raft]\nheartbeat_ms = 500\n");
        let err = parse(&text).expect_err("must fail");
        assert!(err.contains("raft.election_timeout_min_ms"), "{err}");
        let err = parse(&format!("{GOOD}[raft]\nprofile = \"quick\"\n")).expect_err("must fail");
        assert!(err.contains("quick") && err.contains("fast"), "{err}");
    }

    #[test]
    fn a_profile_sets_the_timers_and_a_timer_set_alone_wins() {
        let fast = parse(&format!("{GOOD}[raft]\nprofile = \"fast\"\n")).expect("valid");
        let t = &fast.raft;
        assert_eq!(
            (
                t.heartbeat_ms,
                t.election_timeout_min_ms,
                t.election_timeout_max_ms
            ),
            (25, 100, 150)
        );
        let text = format!("{GOOD}[raft]\nprofile = \"fast\"\nelection_timeout_max_ms = 200\n");
        let t = parse(&text).expect("valid").raft;
        assert_eq!((t.heartbeat_ms, t.election_timeout_max_ms), (25, 200));
        let lan = parse(GOOD).expect("valid").raft;
        assert_eq!((lan.heartbeat_ms, lan.election_timeout_max_ms), (50, 300));
    }
}
