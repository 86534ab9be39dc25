//! `config apply`, `config show`, `config history`.

use tonic::Status;

use super::Context;
use super::route::on_leader;
use crate::cluster::Cluster;
use crate::proto::admin::*;
use crate::site::Site;
use crate::state::{Request, Response};

pub(super) async fn apply(
    cx: &Context,
    req: ConfigApplyRequest,
) -> Result<ConfigApplyReply, Status> {
    // Checked before routing, so a bad file is refused by whichever node the CLI reached.
    let site = validate(&req.text)?;
    if req.dry_run {
        return Ok(ConfigApplyReply {
            changes: changes_from_applied(cx, &site),
            ..Default::default()
        });
    }
    on_leader(
        cx,
        req,
        |mut leader, req| async move { leader.config_apply(req).await },
        |req| async move {
            let changes = changes_from_applied(cx, &site);
            let written = cx
                .cluster
                .propose_here(Request::ApplyConfig {
                    text: req.text,
                    applied_at_ms: Cluster::now_ms(),
                })
                .await?;
            match written.response {
                Response::ConfigApplied { version, sha256 } => Ok(ConfigApplyReply {
                    version,
                    log_index: written.index,
                    sha256,
                    changes,
                }),
                other => Err(Status::internal(format!(
                    "unexpected state machine reply {other:?}"
                ))),
            }
        },
    )
    .await
}

/// The whole file is checked, and every problem listed, before anything is proposed.
fn validate(text: &str) -> Result<Site, Status> {
    crate::site::check(text).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// What `site` changes against the configuration this node has applied.
fn changes_from_applied(cx: &Context, site: &Site) -> Vec<String> {
    let applied = cx.cluster.state().read(|s| s.config.clone());
    let Some(applied) = applied else {
        return vec!["(no configuration was applied before: all of it is new)".into()];
    };
    match crate::site::parse(&applied.text) {
        Ok(before) => crate::site::diff(&before, site)
            .iter()
            .map(ToString::to_string)
            .collect(),
        Err(_) => vec![format!(
            "(the applied version {} is not a valid site configuration: all of this replaces it)",
            applied.version
        )],
    }
}

pub(super) fn show(cx: &Context) -> ConfigShowReply {
    cx.cluster.state().read(|s| match &s.config {
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

pub(super) fn history(cx: &Context) -> ConfigHistoryReply {
    let entries = cx.cluster.state().read(|s| {
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
