//! `fepha snapshot save|restore|show` and `fepha audit`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::json;

use super::call::{Target, status_error};
use super::output::outln;
use super::point::format_time;
use crate::cluster::Cluster;
use crate::config::{NodeConfig, Role};
use crate::proto::admin::*;
use crate::raft::backup::{self, Header};
use crate::raft::offline;
use crate::state::recovery::{AuditKind, AuditRecord, RemovedMember};
use crate::state::trust::TrustEntry;
use crate::tls::PeerRole;

/// Asks the node for its applied state and writes it to `file`: all of it, or nothing.
pub(super) async fn save(target: &Target, file: &Path) -> anyhow::Result<()> {
    // The file's place is checked before the node is asked anything.
    let tmp = TempFile::create(file)?;
    let mut stream = target
        .connect()
        .await?
        .snapshot_save(SnapshotSaveRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(status_error)? {
        bytes.extend_from_slice(&chunk.data);
    }
    // What the node sent must restore: checked before it replaces anything.
    let (header, _) = backup::decode(&bytes).context("the node sent a damaged snapshot")?;
    tmp.commit(&bytes)?;
    outln!("saved {} to {}", describe(&header), file.display());
    Ok(())
}

/// Checks `file` and prints what it would restore.
pub(super) fn show(file: &Path) -> anyhow::Result<()> {
    let (header, _) = read(file)?;
    outln!("{}", describe(&header));
    Ok(())
}

fn read(file: &Path) -> anyhow::Result<(Header, backup::Applied)> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    backup::decode(&bytes).with_context(|| format!("{} cannot be restored", file.display()))
}

/// A new cluster of this node alone from `file`, written into the store of a node that is
/// stopped and was never initialised.
pub(super) fn restore(config: &NodeConfig, file: &Path) -> anyhow::Result<()> {
    let (header, applied) = read(file)?;
    if config.role != Role::Voter {
        bail!(
            "node {} is a witness; restore onto a voter, which can own the RTUs",
            config.name
        );
    }
    // Opened first: a running node holds the store's lock, and nothing is made for it.
    let store = offline::open(&crate::node::raft_dir(&config.data_dir))?;
    if !store.is_empty()? {
        return Err(offline::RecoveryError::NotEmpty.into());
    }
    let (id, identity) = crate::node::prepare(config)?;
    let me = crate::node::member_record(config, &identity);
    let now = Cluster::now_ms();
    let trust = TrustEntry {
        fingerprint: identity.fingerprint.clone(),
        name: config.name.clone(),
        role: PeerRole::Node,
        added_at_ms: now,
        added_by: "restore".into(),
    };
    let record = AuditRecord {
        kind: AuditKind::Restore,
        at_ms: now,
        by: user_at_host(),
        node: config.name.clone(),
        node_id: id,
        removed: applied
            .membership
            .membership()
            .nodes()
            .map(|(id, n)| RemovedMember {
                id: *id,
                name: n.name.clone(),
                fingerprint: n.fingerprint.clone(),
            })
            .collect(),
        last_index_before: header.last_index,
        committed_before: header.last_index,
        detail: format!(
            "restored from {} ({})",
            std::path::absolute(file)
                .unwrap_or_else(|_| file.to_owned())
                .display(),
            describe(&header)
        ),
    };
    offline::restore(&store, applied, (id, me), trust, record)?;
    outln!(
        "node {} (id {id}) now holds {}.\n\
         It is the only member; the old nodes' certificates are no longer trusted, the \
         operators' still are.\n\
         Next: start it (`systemctl start fepha` or `fepha run`), then on each new box \
         `fepha join --token TOKEN` with a token from `fepha token create` on this one.\n\
         Operators pin the new node once: fepha --identity DIR cert pin-node {} {} --node-admin {}",
        config.name,
        describe(&header),
        config.name,
        identity.fingerprint,
        config.admin_addr
    );
    Ok(())
}

pub(super) fn describe(h: &Header) -> String {
    let site = if h.site.is_empty() {
        String::new()
    } else {
        format!(" (site {:?})", h.site)
    };
    let cluster = if h.cluster_id.is_empty() {
        "an unnamed cluster".to_owned()
    } else {
        format!("cluster {}", h.cluster_id)
    };
    format!(
        "the state of {cluster}{site} at log index {} (term {}), config v{}, members {}, \
         saved from {} at {} UTC",
        h.last_index,
        h.last_term,
        h.config_version,
        h.members.join(", "),
        h.saved_from,
        format_time(h.saved_at_ms)
    )
}

/// Who runs this command, for the audit record.
pub(super) fn user_at_host() -> String {
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .or_else(|| {
            // No login environment (a service, a bare `ssh box cmd`): the uid, from the kernel.
            let status = std::fs::read_to_string("/proc/self/status").ok()?;
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            Some(format!("uid {}", line.split_whitespace().nth(1)?))
        })
        .unwrap_or_else(|| "unknown user".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown host".into());
    format!("{user}@{host}")
}

/// A file beside the destination that becomes it only when complete and on disk.
struct TempFile {
    tmp: PathBuf,
    dest: PathBuf,
    dir: PathBuf,
    file: Option<File>,
}

impl TempFile {
    fn create(dest: &Path) -> anyhow::Result<TempFile> {
        let Some(name) = dest.file_name() else {
            bail!("{} is not a file name", dest.display());
        };
        if dest.is_dir() {
            bail!("{} is a directory; name a file", dest.display());
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        // The state holds token digests and the whole site: for its owner only.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", dest.display()))?;
        Ok(TempFile {
            tmp,
            dest: dest.to_owned(),
            dir,
            file: Some(file),
        })
    }

    fn commit(mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let Some(mut file) = self.file.take() else {
            bail!("{} was already written", self.dest.display());
        };
        let cannot = || format!("cannot write {}", self.dest.display());
        file.write_all(bytes).with_context(cannot)?;
        file.sync_all().with_context(cannot)?;
        std::fs::rename(&self.tmp, &self.dest).with_context(cannot)?;
        // The rename itself must survive a power cut too.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .with_context(cannot)?;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

pub(super) async fn audit(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let reply = target
        .connect()
        .await?
        .audit_list(AuditListRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if as_json {
        let records: Vec<_> = reply
            .records
            .iter()
            .map(|r| {
                let removed: Vec<_> = r
                    .removed
                    .iter()
                    .map(|m| json!({"id": m.id, "name": m.name, "fingerprint": m.fingerprint}))
                    .collect();
                json!({"kind": r.kind, "at_ms": r.at_ms, "by": r.by, "node": r.node,
                       "node_id": r.node_id, "removed": removed,
                       "last_index_before": r.last_index_before,
                       "committed_before": r.committed_before, "detail": r.detail})
            })
            .collect();
        outln!("{:#}", serde_json::Value::Array(records));
        return Ok(());
    }
    if reply.records.is_empty() {
        outln!("no restore or forced recovery has been recorded");
    }
    for r in &reply.records {
        let removed: Vec<&str> = r.removed.iter().map(|m| m.name.as_str()).collect();
        outln!(
            "{} UTC  {}  by {} on node {} (id {}): removed {}; last index before {} \
             (committed {})",
            format_time(r.at_ms),
            r.kind,
            r.by,
            r.node,
            r.node_id,
            if removed.is_empty() {
                "nobody".to_owned()
            } else {
                removed.join(", ")
            },
            r.last_index_before,
            r.committed_before
        );
        if !r.detail.is_empty() {
            outln!("    {}", r.detail);
        }
    }
    Ok(())
}
