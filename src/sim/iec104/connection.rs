//! One master's connection: bytes from the socket are cut into APDUs here (so that every
//! received frame can be logged), fed to the controlled station's [`Link`], and what the link
//! and the station give back goes out on the socket.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::station::{Shared, lock};
use crate::iec104::link::{Link, LinkEvent};
use crate::iec104::{Apdu, LinkParams, MAX_APDU_LEN, TypeId, UFunction, decode_apdu};

/// Serves one connection until it closes; returns why it did.
pub(crate) async fn run(
    shared: Shared,
    mut socket: TcpStream,
    conn: u64,
    params: LinkParams,
) -> String {
    let Ok(link) = Link::new(params, Instant::now()) else {
        return "the link parameters are invalid".into();
    };
    if let Err(e) = socket.set_nodelay(true) {
        tracing::debug!("connection {conn}: cannot set TCP_NODELAY: {e}");
    }
    let mut wake = lock(&shared).subscribe();
    let mut c = Conn {
        shared,
        conn,
        link,
        frames: VecDeque::new(),
        rx: Vec::with_capacity(2 * MAX_APDU_LEN),
    };
    let (mut rd, mut wr) = socket.split();
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::new();
    loop {
        let closed = c.fill();
        c.link.take_output(&mut out);
        if !out.is_empty() {
            if let Err(e) = wr.write_all(&out).await {
                return format!("write failed: {e}");
            }
            out.clear();
        }
        if let Some(why) = closed {
            return why;
        }
        let deadline = c.link.next_deadline();
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) => return "the master closed it".into(),
                Ok(n) => {
                    if let Some(why) = c.on_bytes(buf.get(..n).unwrap_or_default()) {
                        c.link.take_output(&mut out);
                        let _ = wr.write_all(&out).await;
                        return why;
                    }
                }
                Err(e) => return format!("read failed: {e}"),
            },
            () = sleep_until(deadline) => {
                c.link.on_timer(Instant::now());
                if let Some(why) = c.on_events() {
                    c.link.take_output(&mut out);
                    let _ = wr.write_all(&out).await;
                    return why;
                }
            }
            changed = wake.changed() => {
                if changed.is_err() {
                    return "the station stopped".into();
                }
            }
        }
    }
}

struct Conn {
    shared: Shared,
    conn: u64,
    link: Link,
    /// The change numbers each sent, unacknowledged I frame carried, oldest first.
    frames: VecDeque<Vec<u64>>,
    /// Received bytes not yet a whole APDU (less than one APDU).
    rx: Vec<u8>,
}

impl Conn {
    /// Cuts received bytes into APDUs and handles each in turn; `Some(reason)` once the
    /// connection must close.
    fn on_bytes(&mut self, bytes: &[u8]) -> Option<String> {
        self.rx.extend_from_slice(bytes);
        let mut used = 0;
        let result = loop {
            match decode_apdu(self.rx.get(used..).unwrap_or_default()) {
                Ok(Some((apdu, len))) => {
                    used += len;
                    if let Some(why) = self.on_apdu(apdu) {
                        break Some(why);
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(format!("garbage from the master: {e}")),
            }
        };
        // What is left is the start of one APDU, shorter than MAX_APDU_LEN.
        self.rx.drain(..used.min(self.rx.len()));
        result
    }

    fn on_apdu(&mut self, apdu: Apdu) -> Option<String> {
        let conn = self.conn;
        {
            let mut station = lock(&self.shared);
            let logged = if station.is_active(conn) {
                true
            } else {
                let (frame, detail) = match &apdu {
                    Apdu::I(f) => (
                        "I",
                        Some(
                            f.asdu
                                .first()
                                .and_then(|code| TypeId::from_code(*code))
                                .map_or_else(
                                    || format!("type {}", f.asdu.first().copied().unwrap_or(0)),
                                    |t| t.mnemonic().to_owned(),
                                ),
                        ),
                    ),
                    Apdu::S { .. } => ("S", None),
                    Apdu::U(f) => ("U", Some(u_name(*f).to_owned())),
                };
                station.received_inactive(conn, frame, detail)
            };
            let logged = match &apdu {
                Apdu::U(f) => station.received_u(conn, u_name(*f)) && logged,
                _ => logged,
            };
            if !logged {
                self.link.close();
                return Some("cannot write the log".into());
            }
        }
        self.link.on_apdu(apdu, Instant::now());
        self.on_events()
    }

    /// Handles what the link reports; `Some(reason)` once it has closed.
    fn on_events(&mut self) -> Option<String> {
        let conn = self.conn;
        while let Some(event) = self.link.poll_event() {
            let now = Instant::now();
            let mut station = lock(&self.shared);
            match event {
                LinkEvent::StartRequested => {
                    if !station.start(conn) {
                        self.link.close();
                        return Some("cannot write the log".into());
                    }
                    self.link.confirm_start(now);
                }
                LinkEvent::Started => {}
                LinkEvent::Stopped => station.stopped(conn),
                LinkEvent::Asdu(bytes) => {
                    // A superseded connection's master may still send; it was logged as a
                    // frame on an inactive connection and gets no answer.
                    if station.is_active(conn)
                        && let Err(why) = station.on_asdu(conn, &bytes, now)
                    {
                        self.link.close();
                        return Some(why);
                    }
                }
                LinkEvent::Acknowledged(n) => {
                    let take = usize::from(n).min(self.frames.len());
                    let changes: Vec<u64> = self.frames.drain(..take).flatten().collect();
                    station.acknowledged(conn, n, changes);
                }
                LinkEvent::Closed(reason) => return Some(reason.to_string()),
            }
        }
        None
    }

    /// Sends what the station has for this connection while the window has room; each
    /// frame is logged before it goes to the link. `Some(reason)` if the link closed.
    fn fill(&mut self) -> Option<String> {
        let mut station = lock(&self.shared);
        while self.link.can_send() {
            let Some(frame) = station.next_frame(self.conn) else {
                break;
            };
            // N(S) counts from 0 on a new link, modulo 32768.
            let ns = (self.link.sent_i_frames() % 32_768) as u16;
            if !station.log_sent(self.conn, ns, &frame) {
                self.link.close();
                return Some("cannot write the log".into());
            }
            match self.link.send_asdu(frame.bytes, Instant::now()) {
                Ok(()) => self.frames.push_back(frame.changes),
                Err(e) => tracing::warn!("connection {}: not sent: {e}", self.conn),
            }
        }
        drop(station);
        self.on_events()
    }
}

fn u_name(f: UFunction) -> &'static str {
    match f {
        UFunction::StartDtAct => "STARTDT_ACT",
        UFunction::StartDtCon => "STARTDT_CON",
        UFunction::StopDtAct => "STOPDT_ACT",
        UFunction::StopDtCon => "STOPDT_CON",
        UFunction::TestFrAct => "TESTFR_ACT",
        UFunction::TestFrCon => "TESTFR_CON",
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
