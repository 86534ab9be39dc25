//! The station's log: one JSON line per thing a test may want to prove afterwards (see the
//! module docs of [`super`] for the lines and their fields).
//!
//! A line about a frame is written before the frame is handed to the socket, so every frame
//! a master has seen is already in the file; and the file is opened for append, so several
//! runs (or a restarted sim) can share one log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value as Json;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    #[error("cannot open the log {}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One line, without its `time_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Entry {
    /// A master connected.
    Accepted { conn: u64, peer: SocketAddr },
    /// A connection ended, and why.
    Closed {
        conn: u64,
        peer: SocketAddr,
        reason: String,
    },
    /// A U frame received (STARTDT_ACT, STOPDT_ACT, TESTFR_ACT, TESTFR_CON, ...).
    U { conn: u64, function: &'static str },
    /// STARTDT confirmed: `conn` is now the active connection. `previous` is the other
    /// connection that was still started until now (it gets no more data), if any; `resent`
    /// how many unacknowledged changes go out again first.
    Started {
        conn: u64,
        previous: Option<u64>,
        resent: usize,
    },
    /// STOPDT confirmed.
    Stopped { conn: u64 },
    /// An I frame sent.
    Sent {
        conn: u64,
        ns: u16,
        #[serde(rename = "type")]
        type_name: String,
        cause: u8,
        negative: bool,
        objects: Vec<Object>,
    },
    /// The master acknowledged `frames` more I frames; `changes` are the change numbers they
    /// carried, `queued` the changes still unacknowledged.
    Ack {
        conn: u64,
        frames: u16,
        changes: Vec<u64>,
        queued: usize,
    },
    /// An ASDU received on the active connection, and what the station does with it.
    Received {
        conn: u64,
        #[serde(rename = "type")]
        type_name: String,
        cause: u8,
        ca: u16,
        ioa: Option<u32>,
        value: Json,
        select: Option<bool>,
        answer: &'static str,
    },
    /// A frame received on a connection that is not the active one: `frame` is "I", "S" or
    /// "U"; `detail` the type of an I frame's ASDU or a U frame's function.
    Inactive {
        conn: u64,
        frame: &'static str,
        detail: Option<String>,
    },
    /// A point changed (`source`: "schedule" or "command").
    Change {
        change: u64,
        ioa: u32,
        value: Json,
        source: &'static str,
    },
    /// The queue was full: the oldest unacknowledged change was dropped.
    Dropped {
        change: u64,
        ioa: u32,
        dropped_total: u64,
    },
}

/// One information object of a sent frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Object {
    pub ioa: u32,
    pub value: Json,
    /// The change this object carries, if it is a spontaneous change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<u64>,
    /// Its time tag in Unix ms, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<i64>,
}

#[derive(Serialize)]
struct Line<'a> {
    time_ms: u64,
    #[serde(flatten)]
    entry: &'a Entry,
}

/// The open log file.
#[derive(Debug)]
pub(crate) struct EventLog {
    file: File,
    path: PathBuf,
}

impl EventLog {
    pub(crate) fn open(path: &Path) -> Result<EventLog, LogError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| LogError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(EventLog {
            file,
            path: path.to_owned(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line in one unbuffered `write`, so a reader never sees half a line.
    pub(crate) fn write(&mut self, entry: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&Line {
            time_ms: now_ms(),
            entry,
        })?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.flush()
    }
}

/// The wall clock in Unix ms.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_flat_json() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.jsonl");
        let mut log = EventLog::open(&path).expect("open");
        log.write(&Entry::Sent {
            conn: 2,
            ns: 5,
            type_name: "M_SP_TB_1".into(),
            cause: 3,
            negative: false,
            objects: vec![Object {
                ioa: 100,
                value: Json::Bool(true),
                change: Some(7),
                time_ms: Some(1),
            }],
        })
        .expect("write");
        log.write(&Entry::Stopped { conn: 2 }).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<Json> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "sent");
        assert_eq!(lines[0]["type"], "M_SP_TB_1");
        assert_eq!(lines[0]["objects"][0]["change"], 7);
        assert!(lines[0]["time_ms"].as_u64().is_some_and(|t| t > 0));
        assert_eq!(lines[1]["event"], "stopped");
    }
}
