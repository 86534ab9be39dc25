//! The campaign's history: every action of the nemesis and the load, timestamped on the
//! wall clock of the harness (the clock the devices' and the master's logs use too), kept in
//! memory for the checkers and appended to `history.jsonl` as it happens.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub time_ms: u64,
    /// Who wrote it: `nemesis`, `toggler`, `commands`, `config`, `campaign`.
    pub by: String,
    pub what: String,
    pub detail: Value,
}

#[derive(Clone)]
pub struct History {
    inner: Arc<Mutex<(Vec<Entry>, Option<File>)>>,
}

impl History {
    pub fn create(path: &Path) -> anyhow::Result<History> {
        let file = File::create(path)?;
        Ok(History {
            inner: Arc::new(Mutex::new((Vec::new(), Some(file)))),
        })
    }

    pub fn record(&self, by: &str, what: &str, detail: Value) {
        let e = Entry {
            time_ms: now_ms(),
            by: by.to_owned(),
            what: what.to_owned(),
            detail,
        };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = inner.1.as_mut() {
            let line = json!(e).to_string();
            // The history is the evidence of a run: a write error leaves the file short and
            // the in-memory copy whole, and the summary still prints.
            if writeln!(f, "{line}").is_err() {
                inner.1 = None;
            }
        }
        if by == "nemesis" || by == "campaign" {
            eprintln!("[{}] {by}: {what} {}", e.time_ms, e.detail);
        }
        inner.0.push(e);
    }
}
