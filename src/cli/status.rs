//! `fepha status` (this node's view of every member, and what the operator should worry
//! about) and `fepha members`.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::call::{Target, status_error};
use super::output::{out, outln};
use super::table::{self, Column};
use super::warnings::warnings;

use crate::proto::admin::*;

pub(super) async fn fetch(target: &Target) -> anyhow::Result<StatusReply> {
    Ok(target
        .connect()
        .await?
        .status(StatusRequest { local_only: false })
        .await
        .map_err(status_error)?
        .into_inner())
}

fn member_json(m: &Member) -> Value {
    json!({
        "name": m.name,
        "id": m.id,
        "role": m.role,
        "voter": m.voter,
        "reachable": m.reachable,
        "matched_index": m.matched_index,
        "raft_addr": m.raft_addr,
        "admin_addr": m.admin_addr,
        "fingerprint": m.fingerprint,
        "state": m.state,
        "term": m.term,
        "applied_index": m.applied_index,
        "lag": m.lag,
        "version": m.version,
        "config_version": m.config_version,
        "uptime_ms": m.uptime_ms,
        "rtus": m.rtus,
        "error": (!m.error.is_empty()).then_some(&m.error),
    })
}

pub(super) fn to_json(s: &StatusReply) -> Value {
    json!({
        "node": s.node,
        "node_id": s.node_id,
        "role": s.role,
        "state": s.state,
        "leader": s.leader,
        "term": s.term,
        "last_log_index": s.last_log_index,
        "applied_index": s.applied_index,
        "config_version": s.config_version,
        "version": s.version,
        "snapshot_index": s.snapshot_index,
        "purged_index": s.purged_index,
        "fingerprint": s.fingerprint,
        "uptime_ms": s.uptime_ms,
        "members": s.members.iter().map(member_json).collect::<Vec<_>>(),
        "warnings": warnings(s),
    })
}

pub(super) async fn status(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let s = fetch(target).await?;
    if as_json {
        outln!("{:#}", to_json(&s));
    } else {
        out!("{}", render(&s));
    }
    Ok(())
}

const COLUMNS: [Column; 12] = [
    ("", false),
    ("NAME", false),
    ("ROLE", false),
    ("STATE", false),
    ("REACHABLE", false),
    ("TERM", true),
    ("APPLIED", true),
    ("LAG", true),
    ("VERSION", false),
    ("CONFIG", true),
    ("UPTIME", true),
    ("RTUS", false),
];

/// The text of `fepha status`: this node, a row per member, then the warnings.
pub(super) fn render(s: &StatusReply) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "node {} (id {}, {}, fepha {}): {}, up {}",
        s.node,
        s.node_id,
        s.role,
        s.version,
        s.state,
        uptime(s.uptime_ms)
    );
    let _ = writeln!(text, "fingerprint {}", s.fingerprint);
    let _ = writeln!(
        text,
        "leader {}  term {}  last log index {}  applied index {}  config version {}",
        s.leader.as_deref().unwrap_or("none"),
        s.term,
        s.last_log_index,
        s.applied_index,
        s.config_version
    );
    if !s.members.is_empty() {
        text.push('\n');
        let rows: Vec<Vec<String>> = s.members.iter().map(|m| row(s, m)).collect();
        text.push_str(&table::render(&COLUMNS, &rows));
    }
    let warnings = warnings(s);
    if !warnings.is_empty() {
        text.push('\n');
    }
    for w in warnings {
        let _ = writeln!(text, "WARNING: {}", w.message);
    }
    text
}

fn row(s: &StatusReply, m: &Member) -> Vec<String> {
    let dash = || "-".to_string();
    let number = |n: Option<u64>| n.map_or_else(dash, |n| n.to_string());
    vec![
        if m.id == s.node_id { "*" } else { "" }.to_string(),
        m.name.clone(),
        m.role.clone(),
        m.state.clone().unwrap_or_else(dash),
        if m.reachable { "yes" } else { "NO" }.to_string(),
        number(m.term),
        number(m.applied_index),
        number(m.lag),
        m.version.clone().unwrap_or_else(dash),
        number(m.config_version),
        m.uptime_ms.map_or_else(dash, uptime),
        rtus(&m.rtus),
    ]
}

/// A few RTUs by name; many as a count (`fepha rtu list` has them all).
fn rtus(names: &[String]) -> String {
    match names.len() {
        0 => "-".into(),
        1..=4 => names.join(","),
        n => format!("{n} RTUs"),
    }
}

/// `42s`, `5m07s`, `3h12m`, `4d06h`.
fn uptime(ms: u64) -> String {
    let s = Duration::from_millis(ms).as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

pub(super) async fn members(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let s = fetch(target).await?;
    if as_json {
        let list: Vec<_> = s.members.iter().map(member_json).collect();
        outln!("{:#}", json!(list));
    } else {
        print_members(&s.members);
    }
    Ok(())
}

fn print_members(members: &[Member]) {
    outln!(
        "{:<12} {:<8} {:<6} {:<10} {:>8}  {:<22} ADMIN",
        "NAME",
        "ROLE",
        "VOTER",
        "REACHABLE",
        "MATCHED",
        "RAFT"
    );
    for m in members {
        let matched = m
            .matched_index
            .map_or_else(|| "-".to_string(), |i| i.to_string());
        outln!(
            "{:<12} {:<8} {:<6} {:<10} {:>8}  {:<22} {}",
            m.name,
            m.role,
            if m.voter { "yes" } else { "no" },
            if m.reachable { "yes" } else { "NO" },
            matched,
            m.raft_addr,
            m.admin_addr
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, up: bool) -> Member {
        Member {
            id,
            name: name.into(),
            role: "voter".into(),
            voter: true,
            reachable: up,
            matched_index: Some(120),
            state: up.then(|| if id == 1 { "leader" } else { "follower" }.to_string()),
            term: up.then_some(3),
            applied_index: up.then_some(120),
            lag: Some(if up { 0 } else { 14 }),
            version: up.then(|| "0.1.0".to_string()),
            config_version: Some(2),
            uptime_ms: up.then_some(3_723_000),
            rtus: if id == 1 {
                vec!["bay-1".into()]
            } else {
                Vec::new()
            },
            error: if up {
                String::new()
            } else {
                "no answer within 300ms".into()
            },
            ..Member::default()
        }
    }

    #[test]
    fn the_text_layout() {
        let s = StatusReply {
            node: "fep1".into(),
            node_id: 1,
            role: "voter".into(),
            state: "leader".into(),
            leader: Some("fep1".into()),
            term: 3,
            last_log_index: 134,
            applied_index: 134,
            config_version: 2,
            version: "0.1.0".into(),
            fingerprint: "ab12".into(),
            uptime_ms: 3_723_000,
            members: vec![
                member(1, "fep1", true),
                member(2, "fep2", true),
                member(3, "fep3", false),
            ],
            ..StatusReply::default()
        };
        let want = "\
node fep1 (id 1, voter, fepha 0.1.0): leader, up 1h02m
fingerprint ab12
leader fep1  term 3  last log index 134  applied index 134  config version 2

   NAME  ROLE   STATE     REACHABLE  TERM  APPLIED  LAG  VERSION  CONFIG  UPTIME  RTUS
*  fep1  voter  leader    yes           3      120    0  0.1.0         2   1h02m  bay-1
   fep2  voter  follower  yes           3      120    0  0.1.0         2   1h02m  -
   fep3  voter  -         NO            -        -   14  -             2       -  -

WARNING: member fep3 is down: it does not answer (no answer within 300ms)
WARNING: no fault tolerance left: 2 of 3 voters are up; losing one more stops the cluster
";
        assert_eq!(render(&s), want);
        let j = to_json(&s);
        assert_eq!(j["members"][2]["reachable"], false);
        assert_eq!(j["members"][2]["applied_index"], Value::Null);
        assert_eq!(j["members"][2]["lag"], 14);
        assert_eq!(j["members"][0]["rtus"], json!(["bay-1"]));
        assert_eq!(j["warnings"][0]["kind"], "member_down");
        assert_eq!(j["warnings"][1]["kind"], "no_fault_tolerance");
    }

    #[test]
    fn uptimes() {
        assert_eq!(uptime(42_900), "42s");
        assert_eq!(uptime(307_000), "5m07s");
        assert_eq!(uptime(3 * 3_600_000 + 12 * 60_000), "3h12m");
        assert_eq!(uptime(4 * 86_400_000 + 6 * 3_600_000), "4d06h");
    }

    #[test]
    fn many_rtus_are_counted() {
        let names: Vec<String> = (0..5).map(|i| format!("r{i}")).collect();
        assert_eq!(rtus(&names[..2]), "r0,r1");
        assert_eq!(rtus(&names), "5 RTUs");
    }
}
