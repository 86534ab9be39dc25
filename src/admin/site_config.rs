//! `config apply`, `config show`, `config history`.

use tonic::Status;

use super::route::{now_ms, on_leader, write_error};
use crate::node::Node;
use crate::proto::admin::*;
use crate::state::{Request, Response};

/// The site configuration is one document; anything bigger than this is a mistake.
const MAX_CONFIG_BYTES: usize = 1024 * 1024;

pub async fn apply(node: &Node, req: ConfigApplyRequest) -> Result<ConfigApplyReply, Status> {
    // Checked before routing, so a bad file is refused by whichever node the CLI reached.
    validate(&req.text)?;
    on_leader(
        node,
        req,
        |mut leader, req| async move { leader.config_apply(req).await },
        |req| async move {
            let written = node
                .raft
                .client_write(Request::ApplyConfig {
                    text: req.text,
                    applied_at_ms: now_ms(),
                })
                .await
                .map_err(write_error)?;
            match written.data {
                Response::ConfigApplied { version, sha256 } => Ok(ConfigApplyReply {
                    version,
                    log_index: written.log_id.index,
                    sha256,
                }),
                other => Err(Status::internal(format!(
                    "unexpected state machine reply {other:?}"
                ))),
            }
        },
    )
    .await
}

/// Until the site configuration has a schema, it must at least be well-formed TOML.
fn validate(text: &str) -> Result<(), Status> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(Status::invalid_argument(format!(
            "the configuration is {} bytes; the limit is {MAX_CONFIG_BYTES}",
            text.len()
        )));
    }
    toml::from_str::<toml::Table>(text)
        .map(|_| ())
        .map_err(|e| Status::invalid_argument(format!("the configuration is not valid TOML: {e}")))
}

pub fn show(node: &Node) -> ConfigShowReply {
    node.state.read(|s| match &s.config {
        Some(c) => ConfigShowReply {
            version: c.version,
            text: c.text.clone(),
            sha256: c.sha256.clone(),
            log_index: c.log_index,
            applied_at_ms: c.applied_at_ms,
        },
        None => ConfigShowReply::default(),
    })
}

pub fn history(node: &Node) -> ConfigHistoryReply {
    let entries = node.state.read(|s| {
        s.history
            .iter()
            .map(|h| ConfigHistoryEntry {
                version: h.version,
                sha256: h.sha256.clone(),
                log_index: h.log_index,
                applied_at_ms: h.applied_at_ms,
                bytes: h.bytes,
            })
            .collect()
    });
    ConfigHistoryReply { entries }
}
