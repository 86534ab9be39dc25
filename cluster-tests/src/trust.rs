//! What the trust tests need on top of the harness: the trust list and the fingerprints as
//! the CLI prints them, gRPC credentials made of any node's identity, a CLI left running in
//! the background, a plaintext channel, and labelled metrics.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use fepha::admin::client::Credentials;
use fepha::tls::{Identity, PinnedNodes};
use serde::Deserialize;
use tonic::transport::{Channel, Endpoint};

use crate::cluster::{CliOutput, Cluster};

/// `fepha cert list --json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CertList {
    pub trusted: Vec<CertEntry>,
    pub pending: Vec<PendingEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct CertEntry {
    pub fingerprint: String,
    pub name: String,
    pub role: String,
    pub added_at_ms: u64,
    pub added_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct PendingEntry {
    pub fingerprint: String,
    pub name: String,
    pub admin_addr: String,
    pub requested_at_ms: u64,
}

impl CertList {
    pub fn trusted_entry(&self, fingerprint: &str) -> Option<&CertEntry> {
        self.trusted.iter().find(|e| e.fingerprint == fingerprint)
    }

    pub fn pending_entry(&self, fingerprint: &str) -> Option<&PendingEntry> {
        self.pending.iter().find(|e| e.fingerprint == fingerprint)
    }

    /// The trusted fingerprints, sorted.
    pub fn trusted_fingerprints(&self) -> Vec<String> {
        let mut f: Vec<String> = self.trusted.iter().map(|e| e.fingerprint.clone()).collect();
        f.sort();
        f
    }
}

/// The fingerprints in `fepha status --json`: the node's own and each member's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusIds {
    pub node: String,
    pub state: String,
    pub leader: Option<String>,
    pub fingerprint: String,
    pub members: Vec<MemberId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MemberId {
    pub name: String,
    pub fingerprint: String,
    pub voter: bool,
    pub reachable: bool,
}

impl Cluster {
    /// A CLI call that prints JSON, parsed.
    pub fn cli_parse<T: serde::de::DeserializeOwned>(
        &self,
        i: usize,
        args: &[&str],
    ) -> Result<T, String> {
        let what = args.join(" ");
        let out = self.cli_within(i, args, Duration::from_secs(20));
        if !out.success() {
            return Err(format!(
                "`{what}` on {}: exit {:?}: {}",
                self.name(i),
                out.code,
                out.stderr.trim()
            ));
        }
        serde_json::from_str(&out.stdout)
            .map_err(|e| format!("`{what}` on {}: {e}: {}", self.name(i), out.stdout))
    }

    /// `fepha cert list --json` on node `i`.
    pub fn cert_list(&self, i: usize) -> Result<CertList, String> {
        self.cli_parse(i, &["cert", "list", "--json"])
    }

    /// The fingerprints `fepha status --json` on node `i` shows.
    pub fn status_ids(&self, i: usize) -> Result<StatusIds, String> {
        self.cli_parse(i, &["status", "--json"])
    }

    /// Node `i`'s certificate fingerprint, from its key on disk.
    pub fn fingerprint(&self, i: usize) -> String {
        self.identity(i)
            .unwrap_or_else(|e| self.fail(&e))
            .fingerprint
            .to_string()
    }

    /// Presents `identity` (None: no certificate at all) and believes every node of the
    /// cluster whose certificate is on disk.
    pub fn credentials_with(&self, identity: Option<Identity>) -> Credentials {
        let fingerprints = (0..self.len())
            .filter_map(|i| self.identity(i).ok())
            .map(|id| id.fingerprint)
            .collect();
        Credentials {
            identity,
            trust: Arc::new(PinnedNodes(fingerprints)),
        }
    }

    /// Presents node `i`'s own identity, trusted or not.
    pub fn credentials_of(&self, i: usize) -> Credentials {
        self.credentials_with(Some(self.identity(i).unwrap_or_else(|e| self.fail(&e))))
    }

    /// Node `i` asks to join through node `via` without a token (`join --peer --fingerprint`),
    /// and waits in the background for an operator's `cert allow`.
    pub fn join_pending(&self, i: usize, via: usize) -> tokio::task::JoinHandle<CliOutput> {
        let (addr, fingerprint) = (self.admin_addr(via), self.fingerprint(via));
        let args = ["join", "--peer", &addr, "--fingerprint", &fingerprint];
        self.cli_background(i, &args, Duration::from_secs(120))
    }

    /// `fepha -c <node i's node.toml> ARGS...` left running on the cluster's runtime; it is
    /// killed after `limit`, or when the cluster is dropped.
    pub fn cli_background(
        &self,
        i: usize,
        args: &[&str],
        limit: Duration,
    ) -> tokio::task::JoinHandle<CliOutput> {
        let node = self.node(i);
        let mut cmd = tokio::process::Command::from(node.command(self.binary()));
        cmd.arg("-c")
            .arg(&node.config_path)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let bin = self.binary().display().to_string();
        self.runtime().spawn(async move {
            match tokio::time::timeout(limit, cmd.output()).await {
                Ok(Ok(out)) => CliOutput {
                    code: out.status.code(),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                },
                Ok(Err(e)) => panic!("cannot run {bin}: {e}"),
                Err(_) => CliOutput {
                    code: None,
                    stdout: String::new(),
                    stderr: format!("(the harness killed it: no answer within {limit:?})"),
                },
            }
        })
    }

    /// The sum of metric `name` over the series carrying `labels` on node `i`; 0 if there is
    /// none (yet): counters appear at their first increment.
    pub fn metric_value(&self, i: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.metrics(i).unwrap_or_else(|e| self.fail(&e));
        labelled_metric(&text, name, labels).unwrap_or(0.0)
    }
}

/// The sum of the series of `name` that carry `labels` (and any others, such as the `node`
/// label every series has), in Prometheus text: what `sum(name{labels})` gives in PromQL.
/// `None` when no series matches.
pub fn labelled_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some(split) => split,
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        let mut have = BTreeMap::new();
        for pair in label_text.split(',').filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once('=') {
                have.insert(k.trim(), v.trim().trim_matches('"'));
            }
        }
        if !labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
            continue;
        }
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

/// A plaintext HTTP/2 channel (`http://`, no TLS at all) to `addr`, connected now.
pub async fn plaintext_channel(addr: &str) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| fepha::admin::client::source_chain(&e))
}

/// An error with every cause below it: tonic hides a refused certificate under "transport
/// error" or "operation was canceled".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    fepha::admin::client::source_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_labelled_series() {
        let text = "# TYPE x counter\n\
                    fepha_tls_handshakes_total{listener=\"admin\",outcome=\"refused\"} 3\n\
                    fepha_tls_handshakes_total{listener=\"raft\",outcome=\"refused\"} 5\n\
                    fepha_tls_revocation_checks_total 7\n";
        assert_eq!(
            labelled_metric(
                text,
                "fepha_tls_handshakes_total",
                &[("outcome", "refused"), ("listener", "raft")]
            ),
            Some(5.0)
        );
        assert_eq!(
            labelled_metric(text, "fepha_tls_revocation_checks_total", &[]),
            Some(7.0)
        );
        assert_eq!(
            labelled_metric(
                text,
                "fepha_tls_handshakes_total",
                &[("outcome", "refused")]
            ),
            Some(8.0)
        );
        assert_eq!(
            labelled_metric(text, "fepha_tls_handshakes_total", &[("listener", "none")]),
            None
        );
        assert_eq!(labelled_metric(text, "fepha_tls", &[]), None);
    }
}
