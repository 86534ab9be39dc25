//! `iec104 connections`: the IEC 104 master connections open on every node. Each node knows
//! only its own; the node the CLI talks to asks every other member for theirs, concurrently.

use std::time::Duration;

use super::Context;
use crate::forwarder::registry::ConnInfo;
use crate::proto::admin::*;

/// A member that does not answer this quickly is reported as not answering.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) async fn connections(
    cx: &Context,
    req: Iec104ConnectionsRequest,
) -> Iec104ConnectionsReply {
    let mut reply = Iec104ConnectionsReply {
        connections: local(cx),
        answered: vec![cx.me.name.clone()],
        unanswered: Vec::new(),
    };
    if req.local_only {
        return reply;
    }
    let others: Vec<(String, String)> = cx
        .cluster
        .members()
        .nodes()
        .filter(|(id, _)| *id != cx.cluster.id())
        .map(|(_, n)| (n.name.clone(), n.admin_addr.clone()))
        .collect();
    let asks = others.into_iter().map(|(name, addr)| async move {
        let answer = ask(cx, &addr).await;
        (name, answer)
    });
    for (name, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok(mut r) => {
                reply.connections.append(&mut r.connections);
                reply.answered.push(name);
            }
            Err(error) => reply.unanswered.push(UnansweredNode { node: name, error }),
        }
    }
    reply.connections.sort_by(|a, b| {
        (&a.node, &a.forwarder, &a.group, a.id).cmp(&(&b.node, &b.forwarder, &b.group, b.id))
    });
    reply.answered.sort();
    reply.unanswered.sort_by(|a, b| a.node.cmp(&b.node));
    reply
}

/// This node's own connections.
fn local(cx: &Context) -> Vec<Iec104Connection> {
    cx.connections
        .list()
        .into_iter()
        .map(|c| record(&cx.me.name, c))
        .collect()
}

fn record(node: &str, c: ConnInfo) -> Iec104Connection {
    Iec104Connection {
        node: node.to_owned(),
        id: c.id,
        forwarder: c.forwarder,
        group: c.group,
        peer: c.peer,
        state: c.state,
        opened_ms: c.opened_ms,
        sent_i_frames: c.sent_i_frames,
        received_i_frames: c.received_i_frames,
        unacked: u32::from(c.unacked),
        k: u32::from(c.k),
        w: u32::from(c.w),
        acked_event: c.acked_event,
        sent_event: c.sent_event,
        dropped_events: c.dropped_events,
    }
}

/// The connections of the member at `addr`, or why it gave none within [`ASK_TIMEOUT`].
async fn ask(cx: &Context, addr: &str) -> Result<Iec104ConnectionsReply, String> {
    let call = async {
        let mut client = cx.peers.get(addr).map_err(|e| e.to_string())?;
        client
            .iec104_connections(Iec104ConnectionsRequest { local_only: true })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| describe(&s))
    };
    match tokio::time::timeout(ASK_TIMEOUT, call).await {
        Ok(answer) => answer,
        Err(_) => Err(format!(
            "no answer within {:.1}s",
            ASK_TIMEOUT.as_secs_f64()
        )),
    }
}

/// A failed call as one line, with the cause a transport failure hides.
pub(super) fn describe(s: &tonic::Status) -> String {
    use std::error::Error;
    let text = super::client::with_causes(s.message().to_owned(), s.source());
    if text.is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{:?}: {text}", s.code())
    }
}
