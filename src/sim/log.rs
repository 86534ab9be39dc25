//! The request log: one JSON line per request, so a test can prove afterwards which client
//! polled the device when (e.g. that two nodes never polled it inside one lease period).
//!
//! A line is written before the request is answered, so every answer a client has seen is
//! already in the file; and the file is opened for append, so several runs (or a restarted
//! device) can share one log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    #[error("cannot open the request log {}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One request as it appears in the log.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Entry {
    /// When the request arrived, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The client's address (ip:port): on loopback every node is 127.0.0.1, so the port is
    /// what tells them apart.
    pub client: SocketAddr,
    pub unit: u8,
    /// The function code, and its name (e.g. 3, "read_holding_registers").
    pub fc: u8,
    pub function: &'static str,
    /// The first address and the number of addresses the request touched, when it names any.
    pub address: Option<u16>,
    pub count: Option<u16>,
    /// The exception code the device answered with, if it did.
    pub exception: Option<u8>,
}

/// The open log file.
#[derive(Debug)]
pub(crate) struct RequestLog {
    file: File,
    path: PathBuf,
}

impl RequestLog {
    pub(crate) fn open(path: &Path) -> Result<RequestLog, LogError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| LogError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(RequestLog {
            file,
            path: path.to_owned(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line. The file is unbuffered and the line goes out in one `write`, so a
    /// reader never sees half a line from a finished request, and nothing waits in a buffer.
    pub(crate) fn write(&mut self, entry: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.flush()
    }
}
