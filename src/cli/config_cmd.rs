//! `fepha config check|apply|diff|show|history`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::call::{Target, retrying, status_error};
use super::output::{out, outln};

use crate::proto::admin::*;

pub(super) async fn apply(
    target: &Target,
    file: &Path,
    dry_run: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let reply = send(target, file, dry_run, timeout).await?;
    if dry_run {
        outln!(
            "{} is a valid site configuration; applying it would change:",
            file.display()
        );
    } else {
        outln!(
            "applied {} as configuration version {} (log index {}, sha256 {}); changes:",
            file.display(),
            reply.version,
            reply.log_index,
            reply.sha256
        );
    }
    print_changes(&reply.changes);
    Ok(())
}

/// Checks FILE here, with no node: the same check, and the same words, as `config apply`'s.
pub(super) fn check(file: &Path) -> anyhow::Result<()> {
    let text = read(file)?;
    let site = crate::site::check(&text)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| not_done(file, true))?;
    outln!(
        "{} is a valid site configuration: site {:?}, {}",
        file.display(),
        site.site.name.get_ref(),
        crate::site::Counts::of(&site)
    );
    Ok(())
}

fn read(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// The context of a refused file, the same for a check here and on a node.
fn not_done(file: &Path, dry_run: bool) -> String {
    let what = if dry_run { "checked" } else { "applied" };
    format!("{} was not {what}", file.display())
}

/// What FILE would change against the configuration the node has applied.
pub(super) async fn diff(target: &Target, file: &Path) -> anyhow::Result<()> {
    let reply = send(target, file, true, Duration::from_secs(10)).await?;
    print_changes(&reply.changes);
    Ok(())
}

fn print_changes(changes: &[String]) {
    if changes.is_empty() {
        outln!("  nothing");
    }
    for change in changes {
        outln!("  {change}");
    }
}

/// A dry run is checked by whichever node the CLI reached; an apply goes to the leader.
async fn send(
    target: &Target,
    file: &Path,
    dry_run: bool,
    timeout: Duration,
) -> anyhow::Result<ConfigApplyReply> {
    let text = read(file)?;
    // The node would refuse it with the same words; a file far over the limit is not sent.
    crate::site::check_size(&text)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| not_done(file, dry_run))?;
    let client = target.connect().await?;
    let reply = retrying(timeout, || {
        let mut c = client.clone();
        let text = text.clone();
        async move {
            c.config_apply(ConfigApplyRequest {
                text,
                forwarded: false,
                dry_run,
            })
            .await
        }
    })
    .await
    .with_context(|| not_done(file, dry_run))?;
    Ok(reply.into_inner())
}

pub(super) async fn show(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let reply = target
        .connect()
        .await?
        .config_show(ConfigShowRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if as_json {
        let value = json!({
            "version": reply.version,
            "sha256": reply.sha256,
            "log_index": reply.log_index,
            "applied_at_ms": reply.applied_at_ms,
            "text": reply.text,
        });
        outln!("{value:#}");
    } else if reply.version == 0 {
        eprintln!("no site configuration has been applied yet");
    } else {
        eprintln!(
            "# version {} (log index {})",
            reply.version, reply.log_index
        );
        out!("{}", reply.text);
    }
    Ok(())
}

pub(super) async fn history(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let reply = target
        .connect()
        .await?
        .config_history(ConfigHistoryRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if as_json {
        let entries: Vec<_> = reply
            .entries
            .iter()
            .map(|e| {
                json!({
                    "version": e.version,
                    "sha256": e.sha256,
                    "log_index": e.log_index,
                    "applied_at_ms": e.applied_at_ms,
                    "bytes": e.bytes,
                })
            })
            .collect();
        outln!("{:#}", json!(entries));
    } else {
        outln!(
            "{:>8} {:>10} {:>8}  SHA256",
            "VERSION",
            "LOG INDEX",
            "BYTES"
        );
        for e in &reply.entries {
            outln!(
                "{:>8} {:>10} {:>8}  {}",
                e.version,
                e.log_index,
                e.bytes,
                e.sha256
            );
        }
    }
    Ok(())
}
