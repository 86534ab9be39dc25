//! The station every connection shares: the points, the event queue, which connection is
//! active (one redundancy group), the command answers, the log, and the runner that changes
//! points on their schedules and completes delayed commands.
//!
//! Everything here happens under one lock, so the log's lines come in the order things
//! happened. No socket here: a connection hands in what it received and takes out what to
//! send ([`Station::next_frame`]), so the answers are tested without one.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde_json::Value as Json;
use tokio::sync::{Notify, watch};

use super::log::{Entry, EventLog, Object, now_ms};
use super::points::{self, CommandKind, Kind, Point};
use super::profile::{Answer, Change, Command, Profile, Schedule};
use super::queue::EventQueue;
use crate::iec104::{
    Asdu, AsduError, Cause, Cp56Time2a, Element, FreezeMode, InfoObject, QOI_STATION, TypeId,
    mirror_raw,
};

/// The broadcast common address: system commands to it are for every station.
const BROADCAST: u16 = u16::MAX;

/// One I frame waiting to go out on one connection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Control {
    pub payload: Payload,
    /// Not before the change with this number has gone out in this session (an ACTTERM
    /// after the feedback change it reports on).
    pub after: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload {
    Asdu(Asdu),
    /// An ASDU of a type the codec does not know, mirrored back with COT 44.
    Raw {
        bytes: Vec<u8>,
        type_id: u8,
    },
}

/// An I frame to send: the encoded ASDU, what the log says of it, and the changes it
/// carries.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outgoing {
    pub bytes: Vec<u8>,
    pub type_name: String,
    pub cause: u8,
    pub negative: bool,
    pub objects: Vec<Object>,
    pub changes: Vec<u64>,
}

/// A command whose ACTTERM (and feedback) is due later.
#[derive(Debug)]
struct Term {
    due: Instant,
    conn: u64,
    term: Asdu,
    feedback: Option<(u32, Element)>,
}

/// Why a connection must close.
pub(crate) type CloseReason = String;

#[derive(Debug)]
pub(crate) struct Station {
    common_address: u16,
    /// In profile order, which is the order of interrogation replies.
    points: Vec<Point>,
    index: HashMap<u32, usize>,
    commands: BTreeMap<u32, Command>,
    queue: EventQueue,
    /// The connection whose STARTDT was confirmed last, while it is started.
    active: Option<u64>,
    /// What waits to be sent on each open connection; an entry per open connection.
    control: HashMap<u64, VecDeque<Control>>,
    /// Selected (connection, IOA), waiting for their execute.
    selects: HashSet<(u64, u32)>,
    terms: Vec<Term>,
    next_conn: u64,
    log: Option<EventLog>,
    /// Bumped whenever a connection may have something new to send.
    wake: watch::Sender<u64>,
    /// Tells the runner a term was added.
    terms_added: Arc<Notify>,
}

/// The station and the signal that wakes the runner, shared by every task of one sim.
pub(crate) type Shared = Arc<Mutex<Station>>;

/// Our critical sections do not panic half-way, so a poisoned lock still guards consistent
/// data; keep serving rather than stop the sim.
pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, Station> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Station {
    pub(crate) fn new(profile: &Profile, log: Option<EventLog>) -> Station {
        let index = profile
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| (p.ioa, i))
            .collect();
        Station {
            common_address: profile.common_address,
            points: profile.points.clone(),
            index,
            commands: profile.commands.clone(),
            queue: EventQueue::new(profile.queue),
            active: None,
            control: HashMap::new(),
            selects: HashSet::new(),
            terms: Vec::new(),
            next_conn: 1,
            log,
            wake: watch::channel(0).0,
            terms_added: Arc::new(Notify::new()),
        }
    }

    /// Wakes a connection whenever it may have something new to send.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    fn wake(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Writes a log line; `false` if the log exists and the line could not be written.
    fn log(&mut self, entry: Entry) -> bool {
        let Some(log) = &mut self.log else {
            return true;
        };
        match log.write(&entry) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("cannot write to the log {}: {e}", log.path().display());
                false
            }
        }
    }

    pub(crate) fn is_active(&self, conn: u64) -> bool {
        self.active == Some(conn)
    }

    /// A new connection: its number.
    pub(crate) fn accept(&mut self, peer: SocketAddr) -> u64 {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.control.insert(conn, VecDeque::new());
        self.log(Entry::Accepted { conn, peer });
        conn
    }

    /// A connection ended.
    pub(crate) fn close(&mut self, conn: u64, peer: SocketAddr, reason: &str) {
        if self.active == Some(conn) {
            self.active = None;
        }
        self.control.remove(&conn);
        self.selects.retain(|(c, _)| *c != conn);
        self.log(Entry::Closed {
            conn,
            peer,
            reason: reason.to_owned(),
        });
    }

    /// Logs a received U frame; `false` if the log failed.
    pub(crate) fn received_u(&mut self, conn: u64, function: &'static str) -> bool {
        self.log(Entry::U { conn, function })
    }

    /// Logs a frame received on a connection that is not the active one; `false` if the
    /// log failed.
    pub(crate) fn received_inactive(
        &mut self,
        conn: u64,
        frame: &'static str,
        detail: Option<String>,
    ) -> bool {
        self.log(Entry::Inactive {
            conn,
            frame,
            detail,
        })
    }

    /// STARTDT is to be confirmed on `conn`: it becomes the active connection, the one
    /// active before gets no more data, and every unacknowledged change is due again.
    /// `false` if the log failed (then nothing changed).
    pub(crate) fn start(&mut self, conn: u64) -> bool {
        let previous = self.active.filter(|c| *c != conn);
        let resent = self.queue.len();
        if !self.log(Entry::Started {
            conn,
            previous,
            resent,
        }) {
            return false;
        }
        match previous {
            Some(old) => tracing::info!(
                "connection {conn} started; connection {old} was still started and gets no more data"
            ),
            None => tracing::info!("connection {conn} started"),
        }
        if let Some(old) = previous
            && let Some(queue) = self.control.get_mut(&old)
        {
            queue.clear();
        }
        self.active = Some(conn);
        self.queue.restart();
        self.wake();
        true
    }

    /// STOPDT was confirmed on `conn`.
    pub(crate) fn stopped(&mut self, conn: u64) {
        if self.active == Some(conn) {
            self.active = None;
        }
        self.log(Entry::Stopped { conn });
    }

    /// The master of `conn` acknowledged I frames that carried `changes`.
    pub(crate) fn acknowledged(&mut self, conn: u64, frames: u16, changes: Vec<u64>) {
        if let Some(&through) = changes.iter().max() {
            self.queue.acknowledge(through);
        }
        let queued = self.queue.len();
        self.log(Entry::Ack {
            conn,
            frames,
            changes,
            queued,
        });
    }

    /// The next I frame for `conn`, if it is the active connection and has one: its own
    /// answers first (unless one waits for a change), then the queued changes.
    pub(crate) fn next_frame(&mut self, conn: u64) -> Option<Outgoing> {
        if self.active != Some(conn) {
            return None;
        }
        let first_due = self.queue.first_due();
        let queue = self.control.get_mut(&conn)?;
        let ready = queue
            .front()
            .is_some_and(|c| c.after.is_none_or(|n| first_due.is_none_or(|due| due > n)));
        if ready && let Some(control) = queue.pop_front() {
            return match control.payload {
                Payload::Asdu(asdu) => outgoing(&asdu, &[]),
                Payload::Raw { bytes, type_id } => Some(Outgoing {
                    type_name: format!("unknown type {type_id}"),
                    cause: bytes.get(2).map_or(0, |c| c & 0x3f),
                    negative: true,
                    objects: Vec::new(),
                    changes: Vec::new(),
                    bytes,
                }),
            };
        }
        let batch = self.queue.take_batch();
        let objects: Vec<InfoObject> = batch
            .iter()
            .map(|e| InfoObject {
                ioa: e.ioa,
                element: e.element,
            })
            .collect();
        let changes: Vec<u64> = batch.iter().map(|e| e.change).collect();
        let asdu = Asdu::new(Cause::SPONTANEOUS, self.common_address, objects).ok()?;
        outgoing(&asdu, &changes)
    }

    /// Logs a frame about to be sent; `false` if the log failed (then it must not be sent).
    pub(crate) fn log_sent(&mut self, conn: u64, ns: u16, frame: &Outgoing) -> bool {
        self.log(Entry::Sent {
            conn,
            ns,
            type_name: frame.type_name.clone(),
            cause: frame.cause,
            negative: frame.negative,
            objects: frame.objects.clone(),
        })
    }

    fn push(&mut self, conn: u64, asdu: Asdu) {
        self.push_after(conn, Payload::Asdu(asdu), None);
    }

    fn push_after(&mut self, conn: u64, payload: Payload, after: Option<u64>) {
        if let Some(queue) = self.control.get_mut(&conn) {
            queue.push_back(Control { payload, after });
            self.wake();
        }
    }

    /// Applies a new value to a point and queues the spontaneous change (with a time tag
    /// if the point's type has one). Returns the change number.
    fn change(
        &mut self,
        ioa: u32,
        source: &'static str,
        set: impl FnOnce(&mut Point) -> bool,
    ) -> Option<u64> {
        let &i = self.index.get(&ioa)?;
        let point = self.points.get_mut(i)?;
        if !set(point) {
            return None;
        }
        let time = if point.timed { time_now() } else { None };
        let element = point.element(time);
        let value = points::json_value(&element);
        let (change, dropped) = self.queue.push(ioa, element);
        self.log(Entry::Change {
            change,
            ioa,
            value,
            source,
        });
        if let Some(d) = dropped {
            let dropped_total = self.queue.dropped();
            tracing::warn!(
                "event queue full: change {} (IOA {}) dropped, {dropped_total} so far",
                d.change,
                d.ioa
            );
            self.log(Entry::Dropped {
                change: d.change,
                ioa: d.ioa,
                dropped_total,
            });
        }
        self.wake();
        Some(change)
    }

    /// One schedule step.
    fn scheduled(&mut self, schedule: &Schedule) {
        self.change(schedule.ioa, "schedule", |p| match schedule.change {
            Change::Toggle => p.toggle(),
            Change::Ramp { step, min, max } => p.ramp(step, min, max),
        });
    }

    /// An I frame's ASDU from `conn`, the active connection. `Err` if it is garbage and the
    /// connection must close.
    pub(crate) fn on_asdu(
        &mut self,
        conn: u64,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(), CloseReason> {
        let asdu = match Asdu::decode(bytes) {
            Ok(a) => a,
            Err(AsduError::UnknownType(u)) => {
                self.log(Entry::Received {
                    conn,
                    type_name: format!("unknown type {}", u.type_id),
                    cause: u.header.cause.value(),
                    ca: u.header.common_address,
                    ioa: u.ioa,
                    value: Json::Null,
                    select: None,
                    answer: "unknown_type",
                });
                if let Some(bytes) = mirror_raw(bytes, Cause::UNKNOWN_TYPE, true) {
                    self.push_after(
                        conn,
                        Payload::Raw {
                            bytes,
                            type_id: u.type_id,
                        },
                        None,
                    );
                }
                return Ok(());
            }
            Err(e) => return Err(format!("bad ASDU from the master: {e}")),
        };
        let Some(first) = asdu.objects.first().copied() else {
            return Err("an ASDU without objects".into());
        };
        let answer = self.answer(conn, &asdu, &first, now);
        self.log(Entry::Received {
            conn,
            type_name: asdu.type_id.mnemonic().to_owned(),
            cause: asdu.cause.value(),
            ca: asdu.common_address,
            ioa: Some(first.ioa),
            value: points::json_value(&first.element),
            select: points::select_bit(&first.element),
            answer,
        });
        Ok(())
    }

    /// Queues the answers to one ASDU; returns what the log calls the answer.
    fn answer(&mut self, conn: u64, asdu: &Asdu, first: &InfoObject, now: Instant) -> &'static str {
        let system = matches!(
            asdu.type_id,
            TypeId::CIcNa1 | TypeId::CCiNa1 | TypeId::CCsNa1
        );
        let ours = asdu.common_address == self.common_address
            || (system && asdu.common_address == BROADCAST);
        if !ours {
            self.push(conn, asdu.reply(Cause::UNKNOWN_COMMON_ADDRESS, true));
            return "unknown_ca";
        }
        // Answers carry our own address, also to a broadcast.
        let mine = |a: Asdu| Asdu {
            common_address: self.common_address,
            ..a
        };
        let con = |negative| mine(asdu.reply(Cause::ACTIVATION_CON, negative));
        let term = mine(asdu.reply(Cause::ACTIVATION_TERMINATION, false));
        let cause = asdu.cause;
        if cause != Cause::ACTIVATION && cause != Cause::DEACTIVATION {
            self.push(conn, mine(asdu.reply(Cause::UNKNOWN_CAUSE, true)));
            return "unknown_cause";
        }
        match first.element {
            Element::Interrogation { qoi } => {
                if cause == Cause::DEACTIVATION {
                    self.push(conn, mine(asdu.reply(Cause::DEACTIVATION_CON, false)));
                    return "deactivated";
                }
                let reply = match qoi {
                    QOI_STATION => Some((Cause::INTERROGATED_BY_STATION, false)),
                    // No point is in a group: confirmed, and nothing to report.
                    21..=36 => None,
                    _ => {
                        self.push(conn, con(true));
                        return "negative";
                    }
                };
                self.push(conn, con(false));
                if let Some((cause, counters)) = reply {
                    self.report(conn, cause, counters);
                }
                self.push(conn, term);
                "positive"
            }
            Element::CounterInterrogation(q) => {
                if cause == Cause::DEACTIVATION {
                    self.push(conn, mine(asdu.reply(Cause::DEACTIVATION_CON, false)));
                    return "deactivated";
                }
                if !(1..=5).contains(&q.request) {
                    self.push(conn, con(true));
                    return "negative";
                }
                self.push(conn, con(false));
                // Only a read (not a freeze or reset) reports, and no counter is in a group.
                if q.request == 5 && q.freeze == FreezeMode::Read {
                    self.report(conn, Cause::REQUESTED_BY_GENERAL_COUNTER, true);
                }
                self.push(conn, term);
                "positive"
            }
            Element::ClockSync(_) => {
                if cause == Cause::DEACTIVATION {
                    self.push(conn, mine(asdu.reply(Cause::UNKNOWN_CAUSE, true)));
                    return "unknown_cause";
                }
                self.push(conn, con(false));
                "positive"
            }
            element => match CommandKind::of(asdu.type_id) {
                Some(kind) => self.command(conn, asdu, first.ioa, kind, &element, now),
                None => {
                    // A monitor direction type, or M_EI_NA_1: nothing a master sends.
                    self.push(conn, mine(asdu.reply(Cause::UNKNOWN_TYPE, true)));
                    "unknown_type"
                }
            },
        }
    }

    fn command(
        &mut self,
        conn: u64,
        asdu: &Asdu,
        ioa: u32,
        kind: CommandKind,
        element: &Element,
        now: Instant,
    ) -> &'static str {
        let Some(command) = self.commands.get(&ioa).cloned() else {
            self.push(conn, asdu.reply(Cause::UNKNOWN_IOA, true));
            return "unknown_ioa";
        };
        if command.kind != kind {
            self.push(conn, asdu.reply(Cause::UNKNOWN_TYPE, true));
            return "unknown_type";
        }
        if asdu.cause == Cause::DEACTIVATION {
            self.selects.remove(&(conn, ioa));
            self.push(conn, asdu.reply(Cause::DEACTIVATION_CON, false));
            return "deactivated";
        }
        if points::not_permitted(element) {
            self.push(conn, asdu.reply(Cause::ACTIVATION_CON, true));
            return "not_permitted";
        }
        match command.answer {
            Answer::Silent => return Answer::Silent.name(),
            Answer::Negative => {
                self.selects.remove(&(conn, ioa));
                self.push(conn, asdu.reply(Cause::ACTIVATION_CON, true));
                return Answer::Negative.name();
            }
            Answer::Positive => {}
        }
        self.push(conn, asdu.reply(Cause::ACTIVATION_CON, false));
        if points::select_bit(element) == Some(true) {
            self.selects.insert((conn, ioa));
            return Answer::Positive.name();
        }
        self.selects.remove(&(conn, ioa));
        let feedback = command.feedback_ioa.map(|f| (f, *element));
        let term = asdu.reply(Cause::ACTIVATION_TERMINATION, false);
        if command.term_delay.is_zero() {
            self.finish(conn, term, feedback);
        } else {
            self.terms.push(Term {
                due: now + command.term_delay,
                conn,
                term,
                feedback,
            });
            self.terms_added.notify_one();
        }
        Answer::Positive.name()
    }

    /// An executed command is done: the feedback point takes the commanded value, and the
    /// ACTTERM follows that change.
    fn finish(&mut self, conn: u64, term: Asdu, feedback: Option<(u32, Element)>) {
        let after = feedback.and_then(|(ioa, element)| {
            self.change(ioa, "command", |p| match points::commanded(&element, p) {
                Some(v) => {
                    p.value = v;
                    true
                }
                None => false,
            })
        });
        self.push_after(conn, Payload::Asdu(term), after);
    }

    /// The interrogation reply: every point (`counters`: every counter, else every other
    /// point) without time tag, packed into as few ASDUs as fit.
    fn report(&mut self, conn: u64, cause: Cause, counters: bool) {
        let objects: Vec<InfoObject> = self
            .points
            .iter()
            .filter(|p| (p.kind == Kind::Counter) == counters)
            .map(|p| InfoObject {
                ioa: p.ioa,
                element: p.element(None),
            })
            .collect();
        match Asdu::pack(cause, self.common_address, &objects) {
            Ok(asdus) => {
                for a in asdus {
                    self.push(conn, a);
                }
            }
            Err(e) => tracing::error!("cannot pack the interrogation reply: {e}"),
        }
    }

    /// Completes the delayed commands due at `now`; returns when the next one is due.
    fn run_terms(&mut self, now: Instant) -> Option<Instant> {
        let (due, later): (Vec<Term>, Vec<Term>) = std::mem::take(&mut self.terms)
            .into_iter()
            .partition(|t| t.due <= now);
        self.terms = later;
        for t in due {
            self.finish(t.conn, t.term, t.feedback);
        }
        self.terms.iter().map(|t| t.due).min()
    }
}

/// Turns an ASDU into a frame to send; `None` (and an error logged) if it cannot be encoded.
fn outgoing(asdu: &Asdu, changes: &[u64]) -> Option<Outgoing> {
    let mut bytes = Vec::with_capacity(asdu.encoded_len());
    if let Err(e) = asdu.encode(&mut bytes) {
        tracing::error!("cannot encode {}: {e}", asdu.type_id);
        return None;
    }
    let objects = asdu
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| Object {
            ioa: o.ioa,
            value: points::json_value(&o.element),
            change: changes.get(i).copied(),
            time_ms: o.element.time().map(|t| t.to_unix_ms()),
        })
        .collect();
    Some(Outgoing {
        bytes,
        type_name: asdu.type_id.mnemonic().to_owned(),
        cause: asdu.cause.value(),
        negative: asdu.negative,
        objects,
        changes: changes.to_vec(),
    })
}

/// The wall clock as a time tag; outside 2000..=2099, which CP56Time2a cannot express, the
/// first instant of 2000 marked invalid.
fn time_now() -> Option<Cp56Time2a> {
    const UNIX_MS_AT_2000: i64 = 946_684_800_000;
    let ms = i64::try_from(now_ms()).unwrap_or(i64::MAX);
    Cp56Time2a::from_unix_ms(ms).ok().or_else(|| {
        Cp56Time2a::from_unix_ms(UNIX_MS_AT_2000)
            .ok()
            .map(|t| t.with_invalid(true))
    })
}

/// Runs the schedules and the delayed command completions forever; the caller drops this
/// future to stop them.
pub(crate) async fn run(shared: Shared, schedules: Vec<Schedule>) -> Infallible {
    struct Running {
        schedule: Schedule,
        next: Instant,
        left: Option<u64>,
    }
    let start = Instant::now();
    let notify = lock(&shared).terms_added.clone();
    let mut running: Vec<Running> = schedules
        .into_iter()
        .map(|s| Running {
            next: start + s.start_after,
            left: s.count,
            schedule: s,
        })
        .collect();
    let mut next_term: Option<Instant> = None;
    loop {
        let due = running
            .iter()
            .filter(|r| r.left != Some(0))
            .map(|r| r.next)
            .chain(next_term)
            .min();
        let sleep = async {
            match due {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = notify.notified() => {}
        }
        let now = Instant::now();
        let mut station = lock(&shared);
        // Everything due is applied under one lock, in schedule order.
        for r in running
            .iter_mut()
            .filter(|r| r.next <= now && r.left != Some(0))
        {
            station.scheduled(&r.schedule);
            if let Some(left) = &mut r.left {
                *left -= 1;
            }
            r.next += r.schedule.every;
            if r.next <= now {
                // Late (a stalled machine): skip the missed steps rather than burst.
                r.next = now + r.schedule.every;
            }
        }
        next_term = station.run_terms(now);
    }
}

/// The JSON of a point's value, for tests.
#[cfg(test)]
fn value_of(station: &Station, ioa: u32) -> Json {
    station
        .index
        .get(&ioa)
        .and_then(|&i| station.points.get(i))
        .map_or(Json::Null, |p| points::json_value(&p.element(None)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::iec104::{CommandQualifier, CounterQualifier};

    const PROFILE: &str = r#"
common_address = 47
queue = 4

[[point]]
ioa = 100
type = "M_SP_TB_1"
value = true

[[point]]
ioa = 101
type = "M_DP_NA_1"
value = 1

[[point]]
ioa = 200
type = "M_ME_NC_1"
value = 2.5

[[point]]
ioa = 300
type = "M_IT_NA_1"
value = 42

[[command]]
ioa = 5001
type = "C_SC_NA_1"
feedback_ioa = 101

[[command]]
ioa = 5002
type = "C_SC_NA_1"
answer = "negative"

[[command]]
ioa = 5003
type = "C_DC_NA_1"
answer = "silent"

[[command]]
ioa = 5004
type = "C_SC_NA_1"
term_delay_ms = 100
feedback_ioa = 100
"#;

    fn station() -> Station {
        let p = Profile::parse(Path::new("p.toml"), PROFILE).expect("profile");
        Station::new(&p, None)
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 4000))
    }

    /// Everything `conn` may send now, as (type, cause, negative, IOAs, changes).
    /// A frame as the tests compare it.
    type Frame = (String, u8, bool, Vec<u32>, Vec<u64>);

    fn drain(s: &mut Station, conn: u64) -> Vec<Frame> {
        std::iter::from_fn(|| s.next_frame(conn))
            .map(|f| {
                let ioas = f.objects.iter().map(|o| o.ioa).collect();
                (f.type_name, f.cause, f.negative, ioas, f.changes)
            })
            .collect()
    }

    fn encode(asdu: &Asdu) -> Vec<u8> {
        let mut out = Vec::new();
        asdu.encode(&mut out).expect("encodes");
        out
    }

    fn single_command(ioa: u32, on: bool, select: bool) -> Vec<u8> {
        encode(&Asdu::single(
            Cause::ACTIVATION,
            47,
            ioa,
            Element::SingleCommand {
                on,
                qualifier: CommandQualifier {
                    qualifier: 0,
                    select,
                },
                time: None,
            },
        ))
    }

    fn started(s: &mut Station) -> u64 {
        let c = s.accept(peer());
        assert!(s.start(c));
        c
    }

    fn ty(t: &str) -> String {
        t.to_owned()
    }

    #[test]
    fn a_general_interrogation_reports_every_point_without_time() {
        let mut s = station();
        let c = started(&mut s);
        let gi = encode(&Asdu::single(
            Cause::ACTIVATION,
            47,
            0,
            Element::Interrogation { qoi: 20 },
        ));
        s.on_asdu(c, &gi, Instant::now()).expect("answered");
        assert_eq!(
            drain(&mut s, c),
            [
                (ty("C_IC_NA_1"), 7, false, vec![0], vec![]),
                (ty("M_SP_NA_1"), 20, false, vec![100], vec![]),
                (ty("M_DP_NA_1"), 20, false, vec![101], vec![]),
                (ty("M_ME_NC_1"), 20, false, vec![200], vec![]),
                (ty("C_IC_NA_1"), 10, false, vec![0], vec![]),
            ]
        );
        let ci = encode(&Asdu::single(
            Cause::ACTIVATION,
            u16::MAX,
            0,
            Element::CounterInterrogation(CounterQualifier {
                request: 5,
                freeze: FreezeMode::Read,
            }),
        ));
        s.on_asdu(c, &ci, Instant::now()).expect("answered");
        assert_eq!(
            drain(&mut s, c),
            [
                (ty("C_CI_NA_1"), 7, false, vec![0], vec![]),
                (ty("M_IT_NA_1"), 37, false, vec![300], vec![]),
                (ty("C_CI_NA_1"), 10, false, vec![0], vec![]),
            ]
        );
        // Another station's address.
        let other = encode(&Asdu::single(
            Cause::ACTIVATION,
            48,
            0,
            Element::Interrogation { qoi: 20 },
        ));
        s.on_asdu(c, &other, Instant::now()).expect("answered");
        assert_eq!(
            drain(&mut s, c),
            [(ty("C_IC_NA_1"), 46, true, vec![0], vec![])]
        );
    }

    #[test]
    fn commands_answer_as_the_profile_says() {
        let mut s = station();
        let c = started(&mut s);
        let now = Instant::now();
        // Select, then execute: ACTCON; ACTCON, the feedback change, ACTTERM.
        s.on_asdu(c, &single_command(5001, true, true), now)
            .expect("answered");
        assert_eq!(
            drain(&mut s, c),
            [(ty("C_SC_NA_1"), 7, false, vec![5001], vec![])]
        );
        s.on_asdu(c, &single_command(5001, true, false), now)
            .expect("answered");
        assert_eq!(
            drain(&mut s, c),
            [
                (ty("C_SC_NA_1"), 7, false, vec![5001], vec![]),
                (ty("M_DP_NA_1"), 3, false, vec![101], vec![1]),
                (ty("C_SC_NA_1"), 10, false, vec![5001], vec![]),
            ]
        );
        assert_eq!(value_of(&s, 101), json!(2), "the breaker is on");
        s.on_asdu(c, &single_command(5002, true, false), now)
            .expect("answered");
        assert_eq!(
            drain(&mut s, c),
            [(ty("C_SC_NA_1"), 7, true, vec![5002], vec![])]
        );
        let silent = encode(&Asdu::single(
            Cause::ACTIVATION,
            47,
            5003,
            Element::DoubleCommand {
                state: crate::iec104::DoubleCommandState::On,
                qualifier: CommandQualifier::default(),
                time: None,
            },
        ));
        s.on_asdu(c, &silent, now).expect("answered");
        assert!(drain(&mut s, c).is_empty(), "silent");
        s.on_asdu(c, &single_command(5999, true, false), now)
            .expect("answered");
        assert_eq!(
            drain(&mut s, c),
            [(ty("C_SC_NA_1"), 47, true, vec![5999], vec![])]
        );
        // A double command to a single command's IOA.
        let mut wrong = silent.clone();
        wrong[6] = 0x89; // IOA 5001 = 0x1389
        wrong[7] = 0x13;
        s.on_asdu(c, &wrong, now).expect("answered");
        assert_eq!(
            drain(&mut s, c),
            [(ty("C_DC_NA_1"), 44, true, vec![5001], vec![])]
        );
        // A type the codec does not know goes back with COT 44.
        let mut unknown = single_command(5001, true, false);
        unknown[0] = 136;
        s.on_asdu(c, &unknown, now).expect("answered");
        let frame = s.next_frame(c).expect("a mirror");
        assert_eq!((frame.bytes[0], frame.bytes[2]), (136, 0x40 | 44));
        // Garbage closes.
        assert!(s.on_asdu(c, &[45, 1, 6], now).is_err());
    }

    #[test]
    fn a_delayed_termination_follows_its_feedback() {
        let mut s = station();
        let c = started(&mut s);
        let now = Instant::now();
        s.on_asdu(c, &single_command(5004, false, false), now)
            .expect("answered");
        assert_eq!(
            drain(&mut s, c),
            [(ty("C_SC_NA_1"), 7, false, vec![5004], vec![])]
        );
        assert_eq!(s.run_terms(now), Some(now + Duration::from_millis(100)));
        assert!(drain(&mut s, c).is_empty());
        assert_eq!(s.run_terms(now + Duration::from_millis(100)), None);
        assert_eq!(
            drain(&mut s, c),
            [
                (ty("M_SP_TB_1"), 3, false, vec![100], vec![1]),
                (ty("C_SC_NA_1"), 10, false, vec![5004], vec![]),
            ]
        );
    }

    #[test]
    fn one_redundancy_group_resends_what_was_not_acknowledged() {
        let mut s = station();
        let a = s.accept(peer());
        let b = s.accept(peer());
        // Nobody started: changes queue.
        let toggle = Schedule {
            ioa: 100,
            change: Change::Toggle,
            every: Duration::from_secs(1),
            start_after: Duration::from_secs(1),
            count: None,
        };
        s.scheduled(&toggle);
        s.scheduled(&toggle);
        assert!(s.next_frame(a).is_none());
        assert!(s.start(a));
        assert_eq!(
            drain(&mut s, a),
            [(ty("M_SP_TB_1"), 3, false, vec![100, 100], vec![1, 2])]
        );
        s.scheduled(&toggle);
        assert_eq!(
            drain(&mut s, a),
            [(ty("M_SP_TB_1"), 3, false, vec![100], vec![3])]
        );
        s.acknowledged(a, 1, vec![1, 2]);
        // B takes over: A gets nothing more, B gets 3 again, then what is new.
        assert!(s.start(b));
        s.scheduled(&toggle);
        assert!(
            s.next_frame(a).is_none(),
            "the old connection gets no more data"
        );
        assert_eq!(
            drain(&mut s, b),
            [(ty("M_SP_TB_1"), 3, false, vec![100, 100], vec![3, 4])]
        );
        // The same time tag the first time and the second.
        s.close(b, peer(), "gone");
        assert!(s.start(a));
        let again = s.next_frame(a).expect("resent");
        assert_eq!(again.changes, [3, 4]);
        // Overflow drops the oldest.
        for _ in 0..5 {
            s.scheduled(&toggle);
        }
        assert_eq!(s.queue.dropped(), 3);
        assert_eq!(s.queue.len(), 4);
    }
}
