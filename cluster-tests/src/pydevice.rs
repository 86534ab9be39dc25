//! A Modbus TCP field device that is not our code: pymodbus, run by `py/modbus_device.py`
//! from the venv `scripts/test` builds. The test sets and reads its tables over the script's
//! stdin/stdout, while fepha talks Modbus to it.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::NamedTempFile;

/// How long the interpreter may take to import pymodbus and listen; a cold start on a loaded
/// CI machine takes about a second.
const READY: Duration = Duration::from_secs(30);
/// How long one set or get may take; the script answers from memory.
const ANSWER: Duration = Duration::from_secs(10);

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/modbus_device.py");

/// What the device looks like; the default is what most tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLayout {
    /// The unit id it answers; any other gets Modbus exception 4.
    pub unit_id: u8,
    /// Table sizes; a read past the end gets exception 2. Bit tables must be multiples of 16
    /// (pymodbus stores bits in words).
    pub coils: u16,
    pub discrete_inputs: u16,
    pub holding: u16,
    pub input: u16,
}

impl Default for DeviceLayout {
    fn default() -> DeviceLayout {
        DeviceLayout {
            unit_id: 1,
            coils: 64,
            discrete_inputs: 64,
            holding: 128,
            input: 128,
        }
    }
}

/// A running pymodbus device; dropping it kills the process.
#[derive(Debug)]
pub struct PyDevice {
    addr: SocketAddr,
    layout: DeviceLayout,
    io: Mutex<Io>,
    stderr: NamedTempFile,
}

#[derive(Debug)]
struct Io {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Lines from the script's stdout, read on a thread of their own so every wait has a
    /// deadline; the channel closes when the script's stdout does.
    lines: Receiver<String>,
}

impl PyDevice {
    /// A device with the default layout listening on `addr` (port 0: any free port; see
    /// [`PyDevice::addr`]).
    pub fn start(addr: SocketAddr) -> PyDevice {
        PyDevice::start_with(addr, DeviceLayout::default())
    }

    pub fn start_with(addr: SocketAddr, layout: DeviceLayout) -> PyDevice {
        assert!(
            addr.ip().is_loopback(),
            "test devices listen on loopback only, not {addr}"
        );
        let python = python();
        let stderr = NamedTempFile::new().expect("create a temporary file for pymodbus's stderr");
        let err = stderr.reopen().expect("reopen pymodbus's stderr file");
        let mut child = Command::new(&python)
            .arg(SCRIPT)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--device-id")
            .arg(layout.unit_id.to_string())
            .arg("--coils")
            .arg(layout.coils.to_string())
            .arg("--discrete-inputs")
            .arg(layout.discrete_inputs.to_string())
            .arg("--holding")
            .arg(layout.holding.to_string())
            .arg("--input")
            .arg(layout.input.to_string())
            // Its stdout is our protocol; Python buffers it when not a terminal.
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let (tx, lines) = channel();
        std::thread::Builder::new()
            .name("pydevice-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the pydevice reader thread");
        let mut dev = PyDevice {
            addr,
            layout,
            io: Mutex::new(Io {
                child,
                stdin,
                lines,
            }),
            stderr,
        };
        let ready = dev
            .next_answer(READY)
            .unwrap_or_else(|e| dev.fail(&format!("no ready line from {SCRIPT}: {e}")));
        if ready.get("ready") != Some(&Value::Bool(true)) {
            dev.fail(&format!("expected a ready line, got {ready}"));
        }
        let listen = ready.get("listen").and_then(Value::as_str);
        dev.addr = listen
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| dev.fail(&format!("ready line without a listen address: {ready}")));
        dev
    }

    /// Where it listens (the real port when started on port 0).
    /// The last lines pymodbus wrote to stderr (its warnings and tracebacks).
    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(self.stderr.path(), lines)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn layout(&self) -> DeviceLayout {
        self.layout
    }

    /// Sets `values` from `address` in `table` (coil, discrete_input, holding, input); bits
    /// are 0 or 1. Panics if the device refuses.
    pub fn set(&self, table: &str, address: u16, values: &[u16]) {
        self.try_set(table, address, values)
            .unwrap_or_else(|e| self.fail(&format!("set {table} {address} {values:?}: {e}")));
    }

    /// `count` values from `address` in `table`. Panics if the device refuses.
    pub fn get(&self, table: &str, address: u16, count: u16) -> Vec<u16> {
        self.try_get(table, address, count)
            .unwrap_or_else(|e| self.fail(&format!("get {table} {address} {count}: {e}")))
    }

    /// Like [`PyDevice::set`], but a refusal (unknown table, address outside it) is an `Err`.
    pub fn try_set(&self, table: &str, address: u16, values: &[u16]) -> Result<(), String> {
        self.request(&json!({"op": "set", "table": table, "address": address, "values": values}))
            .map(drop)
    }

    /// Like [`PyDevice::get`], but a refusal is an `Err`.
    pub fn try_get(&self, table: &str, address: u16, count: u16) -> Result<Vec<u16>, String> {
        let answer = self
            .request(&json!({"op": "get", "table": table, "address": address, "count": count}))?;
        serde_json::from_value(answer.get("values").cloned().unwrap_or(Value::Null))
            .map_err(|e| format!("answer {answer} has no list of u16 values: {e}"))
    }

    /// One request, one answer; the lock keeps concurrent callers' lines apart.
    fn request(&self, request: &Value) -> Result<Value, String> {
        let mut io = self.lock();
        let stdin = io
            .stdin
            .as_mut()
            .ok_or_else(|| "the device's stdin is closed".to_owned())?;
        writeln!(stdin, "{request}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot write to the device: {e}"))?;
        let answer = read_answer(&io.lines, ANSWER)?;
        drop(io);
        match answer.get("ok") {
            Some(Value::Bool(true)) => Ok(answer),
            _ => Err(answer
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| format!("unexpected answer {answer}"), str::to_owned)),
        }
    }

    fn next_answer(&self, limit: Duration) -> Result<Value, String> {
        read_answer(&self.lock().lines, limit)
    }

    fn lock(&self) -> MutexGuard<'_, Io> {
        self.io.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Panics with what the device wrote to stderr, which is where pymodbus explains itself.
    fn fail(&self, what: &str) -> ! {
        let exited = match self.lock().child.try_wait() {
            Ok(Some(status)) => format!(" (the device exited: {status})"),
            _ => String::new(),
        };
        let mut msg = format!(
            "pydevice on {}: {what}{exited}\n--- its stderr ---\n",
            self.addr
        );
        let _ = write!(msg, "{}", tail(self.stderr.path(), 40));
        panic!("{msg}");
    }
}

impl Drop for PyDevice {
    fn drop(&mut self) {
        let io = self.io.get_mut().unwrap_or_else(|e| e.into_inner());
        io.stdin = None;
        let _ = io.child.kill();
        let _ = io.child.wait();
    }
}

fn read_answer(lines: &Receiver<String>, limit: Duration) -> Result<Value, String> {
    match lines.recv_timeout(limit) {
        Ok(line) => serde_json::from_str(&line).map_err(|e| format!("bad answer {line:?}: {e}")),
        Err(RecvTimeoutError::Timeout) => Err(format!("no answer within {limit:?}")),
        Err(RecvTimeoutError::Disconnected) => Err("the device closed its stdout".to_owned()),
    }
}

/// `$FEPHA_TEST_PYTHON` (set by scripts/test), else the venv scripts/test builds.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FEPHA_TEST_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "FEPHA_TEST_PYTHON={} is not a file; run scripts/test, which builds the venv",
            p.display()
        );
        return p;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cluster-tests sits inside the workspace");
    let p = workspace.join("target/test-venv/bin/python");
    assert!(
        p.is_file(),
        "no Python venv for the test devices at {}: run scripts/test (it creates the venv with \
         pymodbus) or set FEPHA_TEST_PYTHON",
        p.display()
    );
    p
}

fn tail(path: &Path, lines: usize) -> String {
    crate::node::file_tail(path, lines).unwrap_or_else(|| "(cannot open)".to_owned())
}
