//! A real Prometheus (Debian's `prometheus` package, installed by scripts/test) run as a plain
//! process on loopback, scraping a cluster every second with the project's alerting rules,
//! and a small client for its HTTP API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// The project's own file at `rel` (from the workspace root).
pub fn project_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus in `dir`, listening on `addr`, scraping `targets` as job `fepha`
    /// every second and evaluating `prometheus/alerts.yml` every second. Returns once its API
    /// answers.
    pub fn start(dir: &Path, addr: SocketAddr, targets: &[SocketAddr]) -> Result<Prometheus> {
        std::fs::create_dir_all(dir)?;
        let rules = project_file("prometheus/alerts.yml").canonicalize()?;
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: fepha\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            targets.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start prometheus (scripts/test installs Debian's package)")?;
        let mut p = Prometheus { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!("prometheus exited with {status}: {}", p.log_tail());
            }
            if p.get("/-/ready").is_ok() {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!("prometheus is not ready: {}", p.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The result vector of an instant query.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let body = self.get(&format!("/api/v1/query?query={}", encode(expr)))?;
        let v: Value = serde_json::from_str(&body)?;
        if v["status"] != "success" {
            bail!("query {expr}: {body}");
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Names of the alerts firing now.
    pub fn firing(&self) -> Result<Vec<String>> {
        let v: Value = serde_json::from_str(&self.get("/api/v1/alerts")?)?;
        Ok(v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
            .collect())
    }

    /// Whether every rule group has been evaluated at least once.
    pub fn rules_evaluated(&self) -> Result<bool> {
        let v: Value = serde_json::from_str(&self.get("/api/v1/rules")?)?;
        let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
        Ok(!groups.is_empty()
            && groups.iter().all(|g| {
                g["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            }))
    }

    fn get(&self, path: &str) -> Result<String> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no HTTP answer from prometheus"))?;
        if !head.contains(" 200") {
            bail!("GET {path}: {head}: {body:.300}");
        }
        Ok(body.to_owned())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encoding of a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `promtool check metrics` on a scrape: Ok when it passes with nothing to say.
pub fn promtool_check_metrics(text: &str) -> Result<()> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start promtool (scripts/test installs Debian's prometheus package)")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !said.trim().is_empty() {
        bail!("promtool check metrics: {}: {said}", out.status);
    }
    Ok(())
}
