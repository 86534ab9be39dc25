//! An IEC 60870-5-104 master that is not our code: c104 (lib60870-C) run by
//! `py/iec104_master.py` from the venv `scripts/test` builds, and a c104 server
//! (`py/iec104_server.py`) as a simple field device.
//!
//! The test sends requests over the script's stdin; the script answers them and, in between,
//! reports everything the master receives and sends as events: point updates ([`Rx`]), every
//! I frame decoded from its raw bytes ([`Asdu`]), U frames ([`UFrame`]) and connection state
//! changes. A reader thread files the events as they come, so every wait here is a condition
//! on that log with a deadline, and requests may be sent from several threads at once (each
//! request gets its own answer; the script runs each on a thread of its own).
//!
//! Confirmations are judged from the frames, not from c104's own verdict, which sometimes
//! says `True` for a negative ACTCON.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use tempfile::NamedTempFile;

/// How long the interpreter may take to import c104 and start; a cold start on a loaded CI
/// machine takes about a second.
const READY: Duration = Duration::from_secs(30);
/// c104's wait for an ACTCON; the script then waits as long again for the raw frames.
const COMMAND_TIMEOUT_MS: u64 = 3000;
/// How long one request may take: both of those waits and some slack.
const ANSWER: Duration = Duration::from_millis(2 * COMMAND_TIMEOUT_MS + 5000);
/// c104's client thread period; 50 ms is the least the server accepts, so the same here.
const TICK_RATE_MS: u64 = 50;

const MASTER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/iec104_master.py");
const SERVER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/iec104_server.py");

/// How a connection starts (c104's `Init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// STARTDT only: data transfer starts, no interrogation. The script sends STARTDT itself
    /// if c104 leaves the link muted for a second (it sometimes does).
    None,
    /// Connect muted (no STARTDT): a standby link of a redundant master.
    Muted,
    /// STARTDT, then a general interrogation and a clock sync after every (re)connect.
    All,
    /// STARTDT, then a general interrogation after every (re)connect.
    Interrogation,
    /// STARTDT, then a clock sync after every (re)connect.
    ClockSync,
}

impl Init {
    fn c104_name(self) -> &'static str {
        match self {
            Init::None => "NONE",
            Init::Muted => "MUTED",
            Init::All => "ALL",
            Init::Interrogation => "INTERROGATION",
            Init::ClockSync => "CLOCK_SYNC",
        }
    }
}

/// A connection's state as c104 reports it (`c104.ConnectionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LinkState {
    Closed,
    ClosedAwaitOpen,
    ClosedAwaitReconnect,
    /// TCP up and STARTDT confirmed: data flows.
    Open,
    /// TCP up, no STARTDT (or after STOPDT).
    OpenMuted,
    OpenAwaitClosed,
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            LinkState::Closed => "CLOSED",
            LinkState::ClosedAwaitOpen => "CLOSED_AWAIT_OPEN",
            LinkState::ClosedAwaitReconnect => "CLOSED_AWAIT_RECONNECT",
            LinkState::Open => "OPEN",
            LinkState::OpenMuted => "OPEN_MUTED",
            LinkState::OpenAwaitClosed => "OPEN_AWAIT_CLOSED",
        };
        f.write_str(name)
    }
}

/// A point value as received: single points and commands are `Bool`; double point states
/// (0 intermediate, 1 off, 2 on, 3 indeterminate), step positions, scaled values, counters and
/// bitstrings are `Int`; normalized and short floats are `Float`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PointValue {
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl PointValue {
    pub fn as_bool(self) -> Option<bool> {
        match self {
            PointValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_i64(self) -> Option<i64> {
        match self {
            PointValue::Int(i) => Some(i),
            _ => None,
        }
    }

    /// Floats, and integers as floats.
    pub fn as_f64(self) -> Option<f64> {
        match self {
            PointValue::Float(f) => Some(f),
            #[allow(clippy::cast_precision_loss)]
            PointValue::Int(i) => Some(i as f64),
            PointValue::Bool(_) => None,
        }
    }
}

/// One point update the master received (one information object of an ASDU).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Rx {
    /// Receive order, shared with [`Asdu`], [`UFrame`] and [`Event`] (the raw frame and the
    /// point update of one ASDU may come in either order).
    pub seq: u64,
    pub conn: usize,
    /// The common address of the ASDU.
    pub ca: u16,
    pub ioa: u32,
    /// c104's type name, e.g. `M_SP_TB_1`.
    #[serde(rename = "type")]
    pub ty: String,
    pub value: PointValue,
    /// Quality flags set: `Invalid`, `NonTopical`, `Substituted`, `Blocked`, `Overflow`,
    /// `ElapsedTimeInvalid`; for counters `Invalid`, `Carry`, `Adjusted`.
    pub quality: Vec<String>,
    pub cot: u8,
    /// c104's name of the cause, e.g. `SPONTANEOUS`, `INTERROGATED_BY_STATION`.
    pub cot_name: String,
    pub negative: bool,
    pub test: bool,
    /// Whether the type carries a time tag.
    pub time_tag: bool,
    /// The time tag as Unix milliseconds, if the type carries one.
    pub time_ms: Option<i64>,
    /// When the master received it, Unix milliseconds by the master's clock.
    #[serde(default)]
    pub at_ms: i64,
}

impl Rx {
    pub fn invalid(&self) -> bool {
        self.has_quality("Invalid")
    }

    pub fn has_quality(&self, flag: &str) -> bool {
        self.quality.iter().any(|q| q == flag)
    }
}

/// Which way a frame went, seen from the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    Rx,
    Tx,
}

/// An I frame the master received or sent, decoded from its bytes (COT, CA and IOA sizes as
/// c104 uses them: 2, 2 and 3 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Asdu {
    pub seq: u64,
    pub conn: usize,
    pub dir: Dir,
    /// Send and receive sequence numbers of the APCI.
    pub ns: u16,
    pub nr: u16,
    pub type_id: u8,
    /// c104's name of the type, e.g. `C_IC_NA_1`.
    #[serde(rename = "type")]
    pub ty: String,
    /// Cause of transmission without the P/N and test bits: 6 act, 7 actcon, 10 actterm, 3
    /// spontaneous, 20 interrogated, 44-47 unknown type/cause/CA/IOA.
    pub cot: u8,
    /// The P/N bit.
    pub negative: bool,
    pub test: bool,
    /// The S/E bit of a command (select), as c104 decodes it.
    #[serde(default)]
    pub select: Option<bool>,
    pub ca: u16,
    pub oa: u8,
    pub ioas: Vec<u32>,
    /// The ASDU's bytes (without the APCI) in hex.
    pub hex: String,
    /// When the master received or sent it, Unix milliseconds by the master's clock.
    #[serde(default)]
    pub at_ms: i64,
}

impl Asdu {
    pub const ACT: u8 = 6;
    pub const ACTCON: u8 = 7;
    pub const ACTTERM: u8 = 10;
    pub const SPONTANEOUS: u8 = 3;
    pub const INTERROGATED: u8 = 20;
    pub const UNKNOWN_IOA: u8 = 47;
}

/// A U frame the master received or sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UFrame {
    pub seq: u64,
    pub conn: usize,
    pub dir: Dir,
    /// `STARTDT_ACT`, `STARTDT_CON`, `STOPDT_ACT`, `STOPDT_CON`, `TESTFR_ACT`, `TESTFR_CON`.
    pub function: String,
}

/// Any other event, as the script wrote it: `state` (c104's state change callback), `unmute`
/// (the script sent STARTDT on a link that stayed muted), `new_point` / `new_station` (data
/// for an IOA or CA the master was not configured with; the point is then added and its
/// updates recorded as [`Rx`]), `unexpected` (c104's unexpected message callback, e.g. a time
/// tagged type in an interrogation answer: `INVALID_COT`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: u64,
    pub kind: String,
    pub body: Value,
}

impl Event {
    /// The connection it is about, if any.
    pub fn conn(&self) -> Option<usize> {
        self.body
            .get("conn")
            .and_then(Value::as_u64)
            .and_then(|c| usize::try_from(c).ok())
    }
}

#[derive(Debug, Default)]
struct MasterLog {
    rx: Vec<Rx>,
    asdus: Vec<Asdu>,
    u_frames: Vec<UFrame>,
    events: Vec<Event>,
    last_seq: u64,
}

impl MasterLog {
    fn file(&mut self, line: Value) -> Result<(), String> {
        let seq = line.get("seq").and_then(Value::as_u64).unwrap_or(0);
        self.last_seq = self.last_seq.max(seq);
        let kind = line
            .get("ev")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let bad = |e: serde_json::Error| format!("{kind} event {line}: {e}");
        match kind.as_str() {
            "rx" => self.rx.push(Rx::deserialize(&line).map_err(bad)?),
            "asdu" => self.asdus.push(Asdu::deserialize(&line).map_err(bad)?),
            "u" => self.u_frames.push(UFrame::deserialize(&line).map_err(bad)?),
            _ => self.events.push(Event {
                seq,
                kind,
                body: line,
            }),
        }
        Ok(())
    }
}

/// A running c104 master; dropping it kills the process.
#[derive(Debug)]
pub struct Master {
    proc: PyProc<MasterLog>,
    conns: Vec<SocketAddr>,
    common_address: u16,
}

impl Master {
    /// One c104 client with one connection per address (each with one station of
    /// `common_address`, holding `points`: IOA and c104 type name, e.g. `M_SP_TB_1`). Returns
    /// once the client runs; the connections open in the background (see
    /// [`Master::wait_state`]). A link the master should run (every `Init` but `Muted`) that
    /// stays `OPEN_MUTED` for a second gets a STARTDT from the script, also after c104
    /// reconnected by itself.
    pub fn start(
        conns: &[(SocketAddr, Init)],
        common_address: u16,
        points: &[(u32, &str)],
    ) -> Result<Master> {
        if conns.is_empty() {
            bail!("a master needs at least one connection");
        }
        let config = json!({
            "conns": conns.iter().map(|(addr, init)| json!({
                "host": addr.ip().to_string(),
                "port": addr.port(),
                "init": init.c104_name(),
            })).collect::<Vec<_>>(),
            "common_address": common_address,
            "points": points.iter().map(|(ioa, ty)| json!([ioa, ty])).collect::<Vec<_>>(),
            "tick_rate_ms": TICK_RATE_MS,
            "command_timeout_ms": COMMAND_TIMEOUT_MS,
        });
        let proc = PyProc::start(
            "c104 master",
            MASTER_SCRIPT,
            &["--config".to_owned(), config.to_string()],
            MasterLog::file,
        )?;
        Ok(Master {
            proc,
            conns: conns.iter().map(|(addr, _)| *addr).collect(),
            common_address,
        })
    }

    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// The server address of connection `conn`.
    pub fn addr(&self, conn: usize) -> SocketAddr {
        self.conns[conn]
    }

    pub fn common_address(&self) -> u16 {
        self.common_address
    }

    /// The connection's state now, as c104 reports it.
    pub fn state(&self, conn: usize) -> Result<LinkState> {
        let answer = self.request(conn, json!({"op": "state"}))?;
        LinkState::deserialize(answer.get("state").unwrap_or(&Value::Null))
            .with_context(|| format!("no connection state in {answer}"))
    }

    /// Polls [`Master::state`] until it is `want`.
    pub fn wait_state(&self, conn: usize, want: LinkState, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let now = self.state(conn)?;
            if now == want {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(self.timeout(
                    timeout,
                    &format!(
                        "connection {conn} to {} is {want} (it is {now})",
                        self.addr(conn)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends STOPDT and keeps the link muted (also across reconnects). `false` if c104 could
    /// not send it (the link is not open).
    pub fn mute(&self, conn: usize) -> Result<bool> {
        self.sent(conn, "mute")
    }

    /// Sends STARTDT and keeps the link running (the script sends STARTDT again if it stays
    /// muted, also after a reconnect). `false` if c104 could not send it.
    pub fn unmute(&self, conn: usize) -> Result<bool> {
        self.sent(conn, "unmute")
    }

    /// A station interrogation of the master's common address; `true` if a positive ACTCON
    /// came back. The data and the ACTTERM may still be on their way: wait for them in
    /// [`Master::wait_asdu`] / [`Master::wait_rx`].
    pub fn interrogation(&self, conn: usize) -> Result<bool> {
        self.interrogation_with(conn, self.common_address, 20)
    }

    /// An interrogation of any common address (65535: broadcast) with any qualifier (20
    /// station, 21-36 groups 1-16).
    pub fn interrogation_with(&self, conn: usize, ca: u16, qoi: u8) -> Result<bool> {
        self.confirmed(conn, json!({"op": "interrogation", "ca": ca, "qoi": qoi}))
    }

    /// A general counter interrogation (read, no freeze); `true` on a positive ACTCON.
    pub fn counter_interrogation(&self, conn: usize) -> Result<bool> {
        self.confirmed(conn, json!({"op": "counter_interrogation"}))
    }

    /// A clock sync with the master's clock; `true` on a positive ACTCON.
    pub fn clock_sync(&self, conn: usize) -> Result<bool> {
        self.confirmed(conn, json!({"op": "clock_sync"}))
    }

    /// A command of type `ty` (`C_SC_NA_1`, `C_SC_TA_1`, `C_DC_NA_1`, `C_RC_NA_1`, `C_SE_NA_1`,
    /// `C_SE_NB_1`, `C_SE_NC_1`, `C_BO_NA_1` and their time tagged forms) to `ioa`, select
    /// before operate if `select`. `value`: a bool for single commands, 0-3 for double
    /// commands and steps, a number for set points. The IOA need not be known anywhere: the
    /// master adds the point on its side and the server decides.
    ///
    /// `true` if every activation sent (select and execute) got an ACTCON and none was
    /// negative. Every frame is in [`Master::asdus`], the ACTTERM too.
    pub fn command(
        &self,
        conn: usize,
        ioa: u32,
        ty: &str,
        value: impl Into<Value>,
        select: bool,
    ) -> Result<bool> {
        self.confirmed(
            conn,
            json!({"op": "command", "ioa": ioa, "type": ty, "value": value.into(), "select": select}),
        )
    }

    /// Every point update received so far, in receive order.
    pub fn received(&self) -> Vec<Rx> {
        self.proc.log().rx.clone()
    }

    /// Every I frame received or sent so far, in order.
    pub fn asdus(&self) -> Vec<Asdu> {
        self.proc.log().asdus.clone()
    }

    /// Every U frame received or sent so far, in order.
    pub fn u_frames(&self) -> Vec<UFrame> {
        self.proc.log().u_frames.clone()
    }

    /// Every other event so far (see [`Event`]).
    pub fn events(&self) -> Vec<Event> {
        self.proc.log().events.clone()
    }

    /// The highest receive order number so far: filter on `seq > mark` for what comes after
    /// this moment.
    pub fn mark(&self) -> u64 {
        self.proc.log().last_seq
    }

    /// Waits for the first point update (lowest `seq`) that `pred` accepts.
    pub fn wait_rx(&self, timeout: Duration, what: &str, pred: impl Fn(&Rx) -> bool) -> Result<Rx> {
        self.proc
            .wait(timeout, |log| log.rx.iter().find(|r| pred(r)).cloned())
            .map_err(|()| self.timeout(timeout, what))
    }

    /// Waits for the first I frame (lowest `seq`) that `pred` accepts.
    pub fn wait_asdu(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Asdu) -> bool,
    ) -> Result<Asdu> {
        self.proc
            .wait(timeout, |log| log.asdus.iter().find(|a| pred(a)).cloned())
            .map_err(|()| self.timeout(timeout, what))
    }

    /// Waits for the first U frame (lowest `seq`) that `pred` accepts.
    pub fn wait_u_frame(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&UFrame) -> bool,
    ) -> Result<UFrame> {
        self.proc
            .wait(timeout, |log| {
                log.u_frames.iter().find(|u| pred(u)).cloned()
            })
            .map_err(|()| self.timeout(timeout, what))
    }

    /// The last lines c104 and the script wrote to stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        self.proc.stderr_tail(lines)
    }

    /// How the master process ended, if it did (c104 is native code and can crash).
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.proc.exit_status()
    }

    /// A readable summary of the last records, for failure messages.
    pub fn report(&self) -> String {
        let log = self.proc.log();
        let mut out = String::new();
        let _ = writeln!(out, "--- last point updates ({} in all) ---", log.rx.len());
        for r in last(&log.rx, 15) {
            let _ = writeln!(
                out,
                "#{} conn {} ioa {} {} {:?} q{:?} cot {} time {:?}",
                r.seq, r.conn, r.ioa, r.ty, r.value, r.quality, r.cot, r.time_ms
            );
        }
        let _ = writeln!(out, "--- last I frames ({} in all) ---", log.asdus.len());
        for a in last(&log.asdus, 15) {
            let _ = writeln!(
                out,
                "#{} conn {} {:?} {} cot {}{} ca {} ioas {:?}{}",
                a.seq,
                a.conn,
                a.dir,
                a.ty,
                a.cot,
                if a.negative { " negative" } else { "" },
                a.ca,
                a.ioas,
                a.select
                    .map_or("", |s| if s { " select" } else { " execute" }),
            );
        }
        let _ = writeln!(out, "--- last other events ---");
        for e in last(&log.events, 10) {
            let _ = writeln!(out, "#{} {}", e.seq, e.body);
        }
        for u in last(&log.u_frames, 6) {
            let _ = writeln!(out, "#{} conn {} {:?} {}", u.seq, u.conn, u.dir, u.function);
        }
        out
    }

    fn request(&self, conn: usize, mut request: Value) -> Result<Value> {
        if conn >= self.conns.len() {
            bail!("no connection {conn}: the master has {}", self.conns.len());
        }
        request["conn"] = json!(conn);
        self.proc.request(&request)
    }

    fn confirmed(&self, conn: usize, request: Value) -> Result<bool> {
        let answer = self.request(conn, request)?;
        answer
            .get("confirmed")
            .and_then(Value::as_bool)
            .with_context(|| format!("no confirmation verdict in {answer}"))
    }

    fn sent(&self, conn: usize, op: &str) -> Result<bool> {
        let answer = self.request(conn, json!({ "op": op }))?;
        answer
            .get("sent")
            .and_then(Value::as_bool)
            .with_context(|| format!("no sent flag in {answer}"))
    }

    fn timeout(&self, timeout: Duration, what: &str) -> anyhow::Error {
        self.proc.error(&format!(
            "timed out after {:.1}s waiting until {what}\n{}",
            timeout.as_secs_f64(),
            self.report()
        ))
    }
}

fn last<T>(items: &[T], n: usize) -> &[T] {
    &items[items.len().saturating_sub(n)..]
}

/// A command the c104 server received (c104 reports only the execute of a select before
/// operate, not the select).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServerCommand {
    pub seq: u64,
    pub ca: u16,
    pub ioa: u32,
    #[serde(rename = "type")]
    pub ty: String,
    pub value: PointValue,
    pub select: bool,
    pub cot: u8,
}

#[derive(Debug, Default)]
struct ServerLog {
    commands: Vec<ServerCommand>,
}

impl ServerLog {
    fn file(&mut self, line: Value) -> Result<(), String> {
        match line.get("ev").and_then(Value::as_str) {
            Some("command") => {
                let cmd = ServerCommand::deserialize(&line)
                    .map_err(|e| format!("command event {line}: {e}"))?;
                self.commands.push(cmd);
                Ok(())
            }
            _ => Err(format!("unknown event {line}")),
        }
    }
}

/// A c104 server: a simple field device, not a reference (see PEERS.md). Dropping it kills
/// the process.
#[derive(Debug)]
pub struct C104Server {
    proc: PyProc<ServerLog>,
    addr: SocketAddr,
}

impl C104Server {
    /// Listens on `addr`, which must have a real port (c104 cannot report one it picked).
    pub fn start(addr: SocketAddr) -> Result<C104Server> {
        C104Server::launch(addr, &[])
    }

    /// Like [`C104Server::start`], acknowledging received I frames within `t2` whole seconds
    /// (c104's default is 10 s: a master with a shorter t1 whose request the device does not
    /// answer would time out).
    pub fn start_with_t2(addr: SocketAddr, t2: Duration) -> Result<C104Server> {
        C104Server::launch(
            addr,
            &["--t2-s".to_owned(), t2.as_secs().max(1).to_string()],
        )
    }

    fn launch(addr: SocketAddr, extra: &[String]) -> Result<C104Server> {
        if !addr.ip().is_loopback() || addr.port() == 0 {
            bail!("a test server listens on a loopback address with a real port, not {addr}");
        }
        let mut args = vec!["--listen".to_owned(), addr.to_string()];
        args.extend_from_slice(extra);
        let proc = PyProc::start("c104 server", SERVER_SCRIPT, &args, ServerLog::file)?;
        Ok(C104Server { proc, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a monitoring point (station `ca` is created on first use) with a start value, or
    /// none for c104's default.
    pub fn add_point(&self, ca: u16, ioa: u32, ty: &str, value: Option<Value>) -> Result<()> {
        let mut request = json!({"op": "add", "ca": ca, "ioa": ioa, "type": ty});
        if let Some(v) = value {
            request["value"] = v;
        }
        self.proc.request(&request).map(drop)
    }

    /// Adds a command point that answers `response` (`SUCCESS`, `FAILURE` or `NONE`), with
    /// select before operate required if `select`.
    pub fn add_command(
        &self,
        ca: u16,
        ioa: u32,
        ty: &str,
        select: bool,
        response: &str,
    ) -> Result<()> {
        self.proc
            .request(&json!({"op": "add", "ca": ca, "ioa": ioa, "type": ty,
                "select": select, "response": response}))
            .map(drop)
    }

    /// Sets a point's value (and its time tag to now) and quality flags (c104 names:
    /// `Invalid`, `NonTopical`, ...); with a `cause` (c104's name, e.g. `SPONTANEOUS`) it also
    /// transmits it. `true` if c104 sent it (it buffers nothing when no master is connected).
    pub fn set(
        &self,
        ca: u16,
        ioa: u32,
        value: impl Into<Value>,
        quality: &[&str],
        cause: Option<&str>,
    ) -> Result<bool> {
        let mut request = json!({"op": "set", "ca": ca, "ioa": ioa, "value": value.into(),
            "quality": quality});
        if let Some(c) = cause {
            request["cause"] = json!(c);
        }
        let answer = self.proc.request(&request)?;
        answer
            .get("sent")
            .and_then(Value::as_bool)
            .with_context(|| format!("no sent flag in {answer}"))
    }

    /// Open and active (STARTDT) master connections.
    pub fn connections(&self) -> Result<(u64, u64)> {
        let answer = self.proc.request(&json!({"op": "connections"}))?;
        let count = |key| answer.get(key).and_then(Value::as_u64);
        count("open")
            .zip(count("active"))
            .with_context(|| format!("no connection counts in {answer}"))
    }

    /// The commands received so far.
    pub fn commands(&self) -> Vec<ServerCommand> {
        self.proc.log().commands.clone()
    }

    /// Waits for the first received command `pred` accepts.
    pub fn wait_command(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&ServerCommand) -> bool,
    ) -> Result<ServerCommand> {
        self.proc
            .wait(timeout, |log| {
                log.commands.iter().find(|c| pred(c)).cloned()
            })
            .map_err(|()| {
                self.proc.error(&format!(
                    "timed out after {:.1}s waiting until {what}; commands so far: {:?}",
                    timeout.as_secs_f64(),
                    self.commands()
                ))
            })
    }

    pub fn stderr_tail(&self, lines: usize) -> String {
        self.proc.stderr_tail(lines)
    }

    /// Like [`C104Server::set`], with a time tag of the device's own (Unix ms) instead of now.
    pub fn set_at(
        &self,
        ca: u16,
        ioa: u32,
        value: impl Into<Value>,
        quality: &[&str],
        cause: &str,
        time_ms: i64,
    ) -> Result<bool> {
        let request = json!({"op": "set", "ca": ca, "ioa": ioa, "value": value.into(),
            "quality": quality, "cause": cause, "time_ms": time_ms});
        let answer = self.proc.request(&request)?;
        answer
            .get("sent")
            .and_then(Value::as_bool)
            .with_context(|| format!("no sent flag in {answer}"))
    }

    /// Changes what a command point answers (`SUCCESS`, `FAILURE` or `NONE`).
    pub fn set_response(&self, ca: u16, ioa: u32, response: &str) -> Result<()> {
        self.proc
            .request(&json!({"op": "response", "ca": ca, "ioa": ioa, "response": response}))
            .map(drop)
    }

    /// The STARTDT and STOPDT acts received so far over all connections, and the address of
    /// every connection accepted, in order.
    pub fn peers(&self) -> Result<ServerPeers> {
        let answer = self.proc.request(&json!({"op": "peers"}))?;
        ServerPeers::deserialize(&answer).with_context(|| format!("no peer counts in {answer}"))
    }
}

/// What a c104 server saw of its masters (see [`C104Server::peers`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServerPeers {
    pub startdt_acts: u64,
    pub stopdt_acts: u64,
    /// The IP address of each connection accepted, in order.
    pub connects: Vec<String>,
}

const RAW_DEVICE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/bad_104_device.py");

/// One event of a [`RawDevice`]: `accepted`, `closed`, `u`, `s`, `i` or `sent` (see the
/// script's doc comment); `body` is the whole line.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceEvent {
    pub seq: u64,
    pub kind: String,
    pub conn: Option<u64>,
    pub body: Value,
}

impl DeviceEvent {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(Value::as_str)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.body.get(key).and_then(Value::as_u64)
    }

    /// A U frame the device received, by name (`STARTDT_ACT`, ...).
    pub fn is_u_rx(&self, function: &str) -> bool {
        self.kind == "u" && self.str("dir") == Some("rx") && self.str("function") == Some(function)
    }
}

#[derive(Debug, Default)]
struct RawLog {
    events: Vec<DeviceEvent>,
}

impl RawLog {
    fn file(&mut self, line: Value) -> Result<(), String> {
        let kind = line
            .get("ev")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        self.events.push(DeviceEvent {
            seq: line.get("seq").and_then(Value::as_u64).unwrap_or(0),
            conn: line.get("conn").and_then(Value::as_u64),
            kind,
            body: line,
        });
        Ok(())
    }
}

/// `py/bad_104_device.py`: a controlled station on plain sockets that misbehaves on purpose
/// (its `mode`) and records every frame it receives per connection. Dropping it kills it.
#[derive(Debug)]
pub struct RawDevice {
    proc: PyProc<RawLog>,
    addr: SocketAddr,
}

impl RawDevice {
    /// Listens on `addr` (a real port) for common address `ca`, in `mode`; with `test_idle`,
    /// a connection not started that long after it was accepted gets one TESTFR act.
    pub fn start(
        addr: SocketAddr,
        ca: u16,
        mode: &str,
        test_idle: Option<Duration>,
    ) -> Result<RawDevice> {
        if addr.port() == 0 {
            bail!("a raw device listens on a real port, not {addr}");
        }
        let mut args = vec![
            "--listen".to_owned(),
            addr.to_string(),
            "--ca".to_owned(),
            ca.to_string(),
            "--mode".to_owned(),
            mode.to_owned(),
        ];
        if let Some(t) = test_idle {
            args.push("--test-idle-s".to_owned());
            args.push(t.as_secs_f64().to_string());
        }
        let proc = PyProc::start("raw 104 device", RAW_DEVICE_SCRIPT, &args, RawLog::file)?;
        Ok(RawDevice { proc, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the behaviour, also of the connections already open.
    pub fn set_mode(&self, mode: &str) -> Result<()> {
        self.proc
            .request(&json!({"op": "mode", "mode": mode}))
            .map(drop)
    }

    /// Sets a single point (reported by the next interrogation; nothing is sent).
    pub fn set(&self, ioa: u32, value: bool) -> Result<()> {
        self.proc
            .request(&json!({"op": "set", "ioa": ioa, "value": value}))
            .map(drop)
    }

    /// Sets a single point and queues its spontaneous M_SP_TB_1 (time tag `time_ms`), which
    /// goes out right after the next interrogation answer, as from a device whose answers
    /// overtake its queue.
    pub fn queue(&self, ioa: u32, value: bool, time_ms: i64) -> Result<()> {
        self.proc
            .request(&json!({"op": "queue", "ioa": ioa, "value": value, "time_ms": time_ms}))
            .map(drop)
    }

    /// A spontaneous M_SP_TB_1 on every started connection; how many it went out on.
    pub fn spont(&self, ioa: u32, value: bool, time_ms: Option<i64>) -> Result<u64> {
        let answer = self
            .proc
            .request(&json!({"op": "spont", "ioa": ioa, "value": value, "time_ms": time_ms}))?;
        answer
            .get("sent")
            .and_then(Value::as_u64)
            .with_context(|| format!("no sent count in {answer}"))
    }

    /// Closes every open connection; how many there were.
    pub fn close_all(&self) -> Result<u64> {
        let answer = self.proc.request(&json!({"op": "close_all"}))?;
        answer
            .get("closed")
            .and_then(Value::as_u64)
            .with_context(|| format!("no closed count in {answer}"))
    }

    pub fn events(&self) -> Vec<DeviceEvent> {
        self.proc.log().events.clone()
    }

    /// The highest event number so far.
    pub fn mark(&self) -> u64 {
        self.proc.log().events.last().map_or(0, |e| e.seq)
    }

    /// Waits for the first event `pred` accepts.
    pub fn wait_event(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&DeviceEvent) -> bool,
    ) -> Result<DeviceEvent> {
        self.proc
            .wait(timeout, |log| log.events.iter().find(|e| pred(e)).cloned())
            .map_err(|()| {
                self.proc.error(&format!(
                    "timed out after {:.1}s waiting until {what}\n{}",
                    timeout.as_secs_f64(),
                    self.report()
                ))
            })
    }

    /// The peer address (`IP:PORT`) of connection `conn`.
    pub fn peer(&self, conn: u64) -> Option<String> {
        self.proc
            .log()
            .events
            .iter()
            .find(|e| e.kind == "accepted" && e.conn == Some(conn))
            .and_then(|e| e.str("peer").map(str::to_owned))
    }

    /// The connections accepted and not closed: connection number and peer.
    pub fn open(&self) -> Vec<(u64, String)> {
        let log = self.proc.log();
        log.events
            .iter()
            .filter(|e| e.kind == "accepted")
            .filter(|a| {
                !log.events
                    .iter()
                    .any(|e| e.kind == "closed" && e.conn == a.conn)
            })
            .filter_map(|a| Some((a.conn?, a.str("peer")?.to_owned())))
            .collect()
    }

    /// A readable summary of the last events, for failure messages.
    pub fn report(&self) -> String {
        let log = self.proc.log();
        let mut out = format!(
            "--- raw device {}: last events ({} in all) ---\n",
            self.addr,
            log.events.len()
        );
        for e in last(&log.events, 40) {
            let _ = writeln!(out, "{}", e.body);
        }
        out
    }

    pub fn stderr_tail(&self, lines: usize) -> String {
        self.proc.stderr_tail(lines)
    }
}

/// A script speaking JSON lines: requests with an id on stdin; answers with that id and
/// events (lines with an "ev" key) on stdout, which a reader thread files into `L`.
struct PyProc<L> {
    what: &'static str,
    child: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
    shared: Arc<Shared<L>>,
    next_id: AtomicU64,
    stderr: NamedTempFile,
}

impl<L> fmt::Debug for PyProc<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PyProc")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

struct Shared<L> {
    state: Mutex<SharedState<L>>,
    changed: Condvar,
}

struct SharedState<L> {
    log: L,
    /// Who waits for the answer with this id; 0 is the ready line.
    pending: HashMap<u64, Sender<Value>>,
    /// Set when stdout closed: nothing more will come.
    closed: bool,
    /// Lines that were neither an answer anyone waits for nor a good event.
    stray: Vec<String>,
}

impl<L: Default + Send + 'static> PyProc<L> {
    fn start(
        what: &'static str,
        script: &str,
        args: &[String],
        file: fn(&mut L, Value) -> Result<(), String>,
    ) -> Result<PyProc<L>> {
        let python = python()?;
        let stderr = NamedTempFile::new().context("create a temporary file for stderr")?;
        let err = stderr.reopen().context("reopen the stderr file")?;
        let mut child = Command::new(&python)
            .arg(script)
            .args(args)
            // Its stdout is our protocol; Python buffers it when not a terminal.
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            // c104 hands out naive local datetimes; UTC makes them what the wire says.
            .env("TZ", "UTC")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {} {script}", python.display()))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .context("the child's stdout is not piped")?;
        let (ready_tx, ready_rx) = channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(SharedState {
                log: L::default(),
                pending: HashMap::from([(0, ready_tx)]),
                closed: false,
                stray: Vec::new(),
            }),
            changed: Condvar::new(),
        });
        let reader = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("{what} stdout"))
            .spawn(move || read_lines(stdout, &reader, file));
        let proc = PyProc {
            what,
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            shared,
            next_id: AtomicU64::new(1),
            stderr,
        };
        spawned.map_err(|e| proc.error(&format!("cannot spawn its reader thread: {e}")))?;
        let ready = match ready_rx.recv_timeout(READY) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                return Err(proc.error(&format!("no ready line within {READY:?}")));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(proc.error("it closed its stdout before it was ready"));
            }
        };
        if ready.get("ready") != Some(&Value::Bool(true)) {
            return Err(proc.error(&format!("expected a ready line, got {ready}")));
        }
        Ok(proc)
    }

    /// One request, one answer (`ok: true`, or its error becomes the `Err`).
    fn request(&self, request: &Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = request.clone();
        request["id"] = json!(id);
        let (tx, rx) = channel();
        {
            let mut state = self.shared.lock();
            if state.closed {
                drop(state);
                return Err(self.error(&format!("cannot send {request}: its stdout is closed")));
            }
            state.pending.insert(id, tx);
        }
        let written = {
            let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
            match stdin.as_mut() {
                Some(s) => writeln!(s, "{request}").and_then(|()| s.flush()),
                None => Err(std::io::Error::other("its stdin is closed")),
            }
        };
        if let Err(e) = written {
            self.shared.lock().pending.remove(&id);
            return Err(self.error(&format!("cannot send {request}: {e}")));
        }
        let answer = match rx.recv_timeout(ANSWER) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => {
                self.shared.lock().pending.remove(&id);
                return Err(self.error(&format!("no answer to {request} within {ANSWER:?}")));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(self.error(&format!("it closed its stdout before answering {request}")));
            }
        };
        match answer.get("ok") {
            Some(Value::Bool(true)) => Ok(answer),
            _ => Err(anyhow!(
                "{} refused {request}: {}",
                self.what,
                answer
                    .get("error")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("unexpected answer {answer}"), str::to_owned)
            )),
        }
    }

    fn log(&self) -> LogGuard<'_, L> {
        LogGuard(self.shared.lock())
    }

    /// Waits until `probe` finds something in the log; woken by every filed line.
    fn wait<T>(&self, timeout: Duration, probe: impl Fn(&L) -> Option<T>) -> Result<T, ()> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if let Some(found) = probe(&state.log) {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || state.closed {
                return Err(());
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// How the process ended, if it did.
    fn exit_status(&self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.try_wait().ok().flatten()
    }

    fn stderr_tail(&self, lines: usize) -> String {
        crate::node::file_tail(self.stderr.path(), lines).unwrap_or_else(|| "(cannot open)".into())
    }

    /// An error with whether the process still runs, stray output, and its stderr tail.
    fn error(&self, what: &str) -> anyhow::Error {
        let exited = match self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_wait()
        {
            Ok(Some(status)) => format!(" (it exited: {status})"),
            _ => String::new(),
        };
        let mut msg = format!("{}: {what}{exited}", self.what);
        let state = self.shared.lock();
        if !state.stray.is_empty() {
            let _ = write!(msg, "\n--- lines it wrote that fit nowhere ---");
            for line in last(&state.stray, 10) {
                let _ = write!(msg, "\n{line}");
            }
        }
        drop(state);
        let _ = write!(msg, "\n--- its stderr ---\n{}", self.stderr_tail(40));
        anyhow!(msg)
    }
}

impl<L> Shared<L> {
    fn lock(&self) -> MutexGuard<'_, SharedState<L>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The log, locked; the reader thread waits while it is held.
struct LogGuard<'a, L>(MutexGuard<'a, SharedState<L>>);

impl<L> std::ops::Deref for LogGuard<'_, L> {
    type Target = L;

    fn deref(&self) -> &L {
        &self.0.log
    }
}

fn read_lines<L>(
    stdout: std::process::ChildStdout,
    shared: &Shared<L>,
    file: fn(&mut L, Value) -> Result<(), String>,
) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let mut state = shared.lock();
        match serde_json::from_str::<Value>(&line) {
            Ok(v) if v.get("ev").is_some() => {
                if let Err(e) = file(&mut state.log, v) {
                    state.stray.push(e);
                }
            }
            Ok(v) => {
                let id = if v.get("ready").is_some() {
                    Some(0)
                } else {
                    v.get("id").and_then(Value::as_u64)
                };
                match id.and_then(|id| state.pending.remove(&id)) {
                    Some(waiter) => {
                        let _ = waiter.send(v);
                    }
                    None => state.stray.push(line),
                }
            }
            Err(_) => state.stray.push(line),
        }
        drop(state);
        shared.changed.notify_all();
    }
    let mut state = shared.lock();
    state.closed = true;
    // Dropping the senders wakes every request still waiting.
    state.pending.clear();
    drop(state);
    shared.changed.notify_all();
}

impl<L> Drop for PyProc<L> {
    fn drop(&mut self) {
        // Closing stdin ends the script; kill it anyway in case c104 hangs in stop().
        *self.stdin.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `$FEPHA_TEST_PYTHON` (set by scripts/test), else the venv scripts/test builds; the same
/// rule as the pymodbus device's.
fn python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("FEPHA_TEST_PYTHON") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!(
                "FEPHA_TEST_PYTHON={} is not a file; run scripts/test, which builds the venv",
                p.display()
            );
        }
        return Ok(p);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("cluster-tests sits inside the workspace")?;
    let p = workspace.join("target/test-venv/bin/python");
    if !p.is_file() {
        bail!(
            "no Python venv for the test peers at {}: run scripts/test (it creates the venv with \
             c104) or set FEPHA_TEST_PYTHON",
            p.display()
        );
    }
    Ok(p)
}
