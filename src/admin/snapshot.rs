//! `snapshot save` (the applied state as a snapshot file, in pieces) and `audit`.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::Status;

use super::Context;
use crate::cluster::Cluster;
use crate::proto::admin::*;
use crate::state::recovery;

/// Pieces well under gRPC's default 4 MiB message limit.
const CHUNK: usize = 1024 * 1024;

pub(super) type Chunks = Pin<Box<dyn Stream<Item = Result<SnapshotSaveChunk, Status>> + Send>>;

/// The state as this node has applied it: one log index's state, whichever member answers.
pub(super) async fn save(cx: &Context) -> Result<Chunks, Status> {
    let view = cx.cluster.state().clone();
    let from = (cx.me.name.clone(), cx.cluster.id());
    // Copying and encoding a whole state takes a while: off the async workers.
    let file = tokio::task::spawn_blocking(move || {
        let applied = view.applied();
        crate::raft::backup::encode(&applied, (&from.0, from.1), Cluster::now_ms())
    })
    .await
    .map_err(|e| Status::internal(format!("encoding the snapshot: {e}")))?
    .map_err(|e| Status::failed_precondition(e.to_string()))?;
    tracing::info!(bytes = file.len(), "snapshot saved for the CLI");
    let chunks: Vec<Result<SnapshotSaveChunk, Status>> = file
        .chunks(CHUNK)
        .map(|c| Ok(SnapshotSaveChunk { data: c.to_vec() }))
        .collect();
    Ok(Box::pin(tokio_stream::iter(chunks)))
}

pub(super) fn audit(cx: &Context) -> AuditListReply {
    let records = cx.cluster.state().read(|s| s.audit.clone());
    AuditListReply {
        records: records.into_iter().map(to_proto).collect(),
    }
}

fn to_proto(r: recovery::AuditRecord) -> AuditRecord {
    AuditRecord {
        kind: r.kind.as_str().to_owned(),
        at_ms: r.at_ms,
        by: r.by,
        node: r.node,
        node_id: r.node_id,
        removed: r
            .removed
            .into_iter()
            .map(|m| RemovedMember {
                id: m.id,
                name: m.name,
                fingerprint: m.fingerprint,
            })
            .collect(),
        last_index_before: r.last_index_before,
        committed_before: r.committed_before,
        detail: r.detail,
    }
}
