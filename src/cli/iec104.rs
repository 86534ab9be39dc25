//! `fepha iec104 connections`.

use serde_json::json;

use super::call::{Target, status_error};
use super::output::outln;
use crate::proto::admin::*;

/// The table's columns: heading, and whether it holds numbers (aligned right).
const COLUMNS: [(&str, bool); 11] = [
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

pub(super) async fn connections(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let reply = target
        .connect()
        .await?
        .iec104_connections(Iec104ConnectionsRequest { local_only: false })
        .await
        .map_err(status_error)?
        .into_inner();
    if as_json {
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
        return Ok(());
    }
    if reply.connections.is_empty() {
        outln!(
            "No IEC 104 master is connected to {}.",
            match reply.answered.as_slice() {
                [one] => format!("node {one}"),
                many => format!("any of {}", many.join(", ")),
            }
        );
    } else {
        let rows: Vec<[String; 11]> = reply.connections.iter().map(row).collect();
        print_table(&rows);
    }
    for u in &reply.unanswered {
        outln!(
            "{} did not answer, so its connections are not listed: {}",
            u.node,
            u.error
        );
    }
    Ok(())
}

fn row(c: &Iec104Connection) -> [String; 11] {
    [
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

/// Columns as wide as their widest cell, two spaces apart.
fn print_table(rows: &[[String; 11]]) {
    let mut widths = COLUMNS.map(|(heading, _)| heading.len());
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 11]| {
        let mut text = String::new();
        for (i, ((cell, width), (_, number))) in cells.iter().zip(widths).zip(COLUMNS).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let padded = if number {
                format!("{cell:>width$}")
            } else {
                format!("{cell:<width$}")
            };
            text.push_str(&padded);
        }
        outln!("{}", text.trim_end());
    };
    line(COLUMNS.map(|(heading, _)| heading));
    for r in rows {
        line(r.each_ref().map(String::as_str));
    }
}
