//! `fepha iec104 connections`.

use std::fmt::Write as _;

use serde_json::json;

use super::call::{Target, status_error};
use super::output::{out, outln};
use super::table::{self, Column};
use crate::proto::admin::*;

const COLUMNS: [Column; 11] = [
    ("NODE", false),
    ("FORWARDER", false),
    ("GROUP", false),
    ("PEER", false),
    ("STATE", false),
    ("K", true),
    ("W", true),
    ("SENT", true),
    ("RECEIVED", true),
    ("ACKED EVENT", true),
    ("DROPPED", true),
];

pub(super) async fn fetch(target: &Target) -> anyhow::Result<Iec104ConnectionsReply> {
    Ok(target
        .connect()
        .await?
        .iec104_connections(Iec104ConnectionsRequest { local_only: false })
        .await
        .map_err(status_error)?
        .into_inner())
}

pub(super) async fn connections(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let reply = fetch(target).await?;
    if !as_json {
        out!("{}", render(&reply));
        return Ok(());
    }
    let connections: Vec<_> = reply
        .connections
        .iter()
        .map(|c| {
            json!({"node": c.node, "id": c.id, "forwarder": c.forwarder, "group": c.group,
                   "peer": c.peer, "state": c.state, "opened_ms": c.opened_ms,
                   "sent_i_frames": c.sent_i_frames,
                   "received_i_frames": c.received_i_frames,
                   "unacked": c.unacked, "k": c.k, "w": c.w,
                   "acked_event": c.acked_event, "sent_event": c.sent_event,
                   "dropped_events": c.dropped_events})
        })
        .collect();
    let unanswered: Vec<_> = reply
        .unanswered
        .iter()
        .map(|u| json!({"node": u.node, "error": u.error}))
        .collect();
    outln!(
        "{:#}",
        json!({"connections": connections, "answered": reply.answered,
               "unanswered": unanswered})
    );
    Ok(())
}

/// The text of `fepha iec104 connections`: a row per connection, then the members that did
/// not answer.
pub(super) fn render(reply: &Iec104ConnectionsReply) -> String {
    let mut text = String::new();
    if reply.connections.is_empty() {
        let _ = writeln!(
            text,
            "No IEC 104 master is connected to {}.",
            match reply.answered.as_slice() {
                [one] => format!("node {one}"),
                many => format!("any of {}", many.join(", ")),
            }
        );
    } else {
        let rows: Vec<Vec<String>> = reply.connections.iter().map(row).collect();
        text.push_str(&table::render(&COLUMNS, &rows));
    }
    for u in &reply.unanswered {
        let _ = writeln!(
            text,
            "{} did not answer, so its connections are not listed: {}",
            u.node, u.error
        );
    }
    text
}

fn row(c: &Iec104Connection) -> Vec<String> {
    vec![
        c.node.clone(),
        c.forwarder.clone(),
        c.group.clone().unwrap_or_else(|| "-".into()),
        c.peer.clone(),
        c.state.clone(),
        format!("{}/{}", c.unacked, c.k),
        c.w.to_string(),
        c.sent_i_frames.to_string(),
        c.received_i_frames.to_string(),
        c.acked_event.to_string(),
        c.dropped_events.to_string(),
    ]
}
