//! One master's connection: bytes to and from the socket through [`Link`], STARTDT only
//! when this node serves and the group is free, the event stream from the last position
//! the group acknowledged, and the master's requests through [`station`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::gate::{self, Gate};
use super::groups::{Claim, Kick};
use super::registry::ConnInfo;
use super::serve::Served;
use super::station::{self, Reaction};
use super::stream::Stream;
use crate::cluster::Cluster;
use crate::iec104::frame_log::FrameLog;
use crate::iec104::link::{Link, LinkEvent, LinkState};
use crate::iec104::{Asdu, AsduError, Cause, mirror_raw};
use crate::shutdown::Shutdown;
use crate::site::ForwardMode;
use crate::state::Request;
use crate::state::forwarding::{ForwardingOp, Holder, group_key};

/// How often leadership and quorum are looked at besides on every applied entry.
const RECHECK: Duration = Duration::from_millis(50);
/// Events read from the state per look.
const EVENTS_PER_READ: usize = 256;
/// Mode `all`: how often a waiting STARTDT asks the log for its group again.
const CLAIM_AGAIN: Duration = Duration::from_millis(500);

pub(crate) async fn run(
    served: Arc<Served>,
    socket: TcpStream,
    peer: SocketAddr,
    stops: [Shutdown; 2],
) {
    let host = &served.host;
    let Some(group) = served.spec.group_of(peer.ip()) else {
        metrics::counter!("fepha_iec104_connections_refused_total").increment(1);
        tracing::warn!(forwarder = %served.name, %peer, "master in no redundancy group; closed");
        return;
    };
    let id = host.registry.next_id();
    let now = Instant::now();
    let Ok(link) = Link::new(served.params, now) else {
        return;
    };
    let (kick_tx, kick_rx) = mpsc::unbounded_channel();
    let (reply_tx, reply_rx) = mpsc::unbounded_channel();
    let mut conn = Conn {
        meters: Meters::new(&served.name, &group),
        key: group_key(&served.name, &group),
        served: served.clone(),
        id,
        group,
        peer,
        link,
        stream: None,
        want_start: false,
        claimed_at: None,
        control: VecDeque::new(),
        kick_tx,
        reply_tx,
        opened_ms: Cluster::now_ms(),
        frames: served
            .spec
            .decode
            .frame_log()
            .zip(served.spec.decode.frame_log()),
    };
    tracing::info!(forwarder = %served.name, %peer, conn = id, group = %conn.group, "master connected");
    metrics::gauge!("fepha_iec104_connections_open").increment(1.0);
    let why = conn.serve(socket, kick_rx, reply_rx, stops).await;
    tracing::info!(forwarder = %served.name, %peer, conn = id, "master connection closed: {why}");
    metrics::gauge!("fepha_iec104_connections_open").decrement(1.0);
    conn.release();
    host.registry.remove(id);
    served
        .selects
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .forget(id);
}

struct Conn {
    served: Arc<Served>,
    id: u64,
    group: String,
    key: String,
    peer: SocketAddr,
    link: Link,
    /// Set while started: where this connection is in the event stream.
    stream: Option<Stream>,
    /// A STARTDT act waits for this node to serve and the group to be free.
    want_start: bool,
    /// Mode `all`: when this connection last asked the log for its group.
    claimed_at: Option<Instant>,
    /// Confirmations and interrogation replies, encoded, waiting for room in the k window;
    /// they go before events.
    control: VecDeque<Vec<u8>>,
    kick_tx: mpsc::UnboundedSender<Kick>,
    reply_tx: mpsc::UnboundedSender<Asdu>,
    opened_ms: u64,
    /// Decode logging of what is received and what is sent, when the forwarder asks for it.
    frames: Option<(FrameLog, FrameLog)>,
    meters: Meters,
}

/// This connection's series, labelled once with its forwarder and group.
struct Meters {
    sent: metrics::Counter,
    received: metrics::Counter,
    event_age: metrics::Histogram,
}

impl Meters {
    fn new(forwarder: &str, group: &str) -> Meters {
        let labels = [
            ("forwarder", forwarder.to_owned()),
            ("group", group.to_owned()),
        ];
        Meters {
            sent: metrics::counter!("fepha_iec104_asdus_sent_total", &labels),
            received: metrics::counter!("fepha_iec104_asdus_received_total", &labels),
            event_age: metrics::histogram!("fepha_iec104_event_age_seconds", &labels),
        }
    }
}

impl Conn {
    async fn serve(
        &mut self,
        socket: TcpStream,
        mut kicks: mpsc::UnboundedReceiver<Kick>,
        mut replies: mpsc::UnboundedReceiver<Asdu>,
        stops: [Shutdown; 2],
    ) -> String {
        let host = self.served.host.clone();
        let (mut rd, mut wr) = socket.into_split();
        let mut changes = host.cluster.raft().metrics();
        let mut tick = tokio::time::interval(RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let [a, b] = stops;
        let stop = async move {
            tokio::select! {
                _ = a.wait() => {}
                _ = b.wait() => {}
            }
        };
        tokio::pin!(stop);
        let mut buf = vec![0u8; 4096];
        let mut out = Vec::new();
        loop {
            let now = Instant::now();
            if let Some(why) = self.on_events(now) {
                self.link.take_output(&mut out);
                let _ = wr.write_all(&out).await;
                return why;
            }
            let gate = gate::check(&host, self.served.spec.mode);
            if let Some(why) = self.steer(gate, now) {
                return why;
            }
            if gate == Gate::Serve {
                self.fill(now);
            }
            self.link.take_output(&mut out);
            if !out.is_empty() {
                if let Some((_, tx)) = &mut self.frames {
                    for line in tx.feed(&out) {
                        tracing::info!(target: "fepha::iec104::frames", forwarder = %self.served.name, peer = %self.peer, "-> {line}");
                    }
                }
                if let Err(e) = wr.write_all(&out).await {
                    return format!("write failed: {e}");
                }
                out.clear();
            }
            self.publish();
            let deadline = self.link.next_deadline();
            let waiting = self.want_start;
            // A connection neither started nor asking to start depends on its socket and its
            // link timers only: a thousand idle ones cost the node no wake-ups.
            let follows = waiting || self.link.state() != LinkState::Stopped;
            tokio::select! {
                read = rd.read(&mut buf) => match read {
                    Ok(0) => return "the master closed it".into(),
                    Ok(n) => {
                        metrics::counter!("fepha_iec104_bytes_received_total").increment(n as u64);
                        let bytes = buf.get(..n).unwrap_or_default();
                        if let Some((rx, _)) = &mut self.frames {
                            for line in rx.feed(bytes) {
                                tracing::info!(target: "fepha::iec104::frames", forwarder = %self.served.name, peer = %self.peer, "<- {line}");
                            }
                        }
                        self.link.on_bytes(bytes, Instant::now());
                    }
                    Err(e) => return format!("read failed: {e}"),
                },
                _ = sleep_until(deadline) => self.link.on_timer(Instant::now()),
                changed = changes.changed(), if follows => if changed.is_err() { return "raft stopped".into() },
                Some(asdu) = replies.recv() => self.queue(&asdu),
                Some(Kick::GroupMoved { to }) = kicks.recv() => {
                    metrics::counter!("fepha_iec104_group_moves_total").increment(1);
                    return format!("group {} moved to connection {to}", self.group);
                }
                _ = self.served.released.notified(), if waiting => {}
                _ = tick.tick(), if follows => {}
                _ = &mut stop => return "the forwarder stopped".into(),
            }
        }
    }

    /// Handles what the link reports; Some(reason) once it has closed.
    fn on_events(&mut self, now: Instant) -> Option<String> {
        while let Some(event) = self.link.poll_event() {
            match event {
                LinkEvent::StartRequested => self.want_start = true,
                LinkEvent::Started => {}
                LinkEvent::Stopped => {
                    self.want_start = false;
                    self.release();
                }
                LinkEvent::Asdu(bytes) => self.on_asdu(&bytes, now),
                LinkEvent::Acknowledged(n) => {
                    if let Some(stream) = self.stream.as_mut()
                        && let Some(at) = stream.acknowledged(n)
                    {
                        self.served.book.record(&self.key, at);
                    }
                }
                LinkEvent::Closed(reason) => {
                    metrics::counter!("fepha_iec104_connections_closed_total").increment(1);
                    return Some(reason.to_string());
                }
            }
        }
        None
    }

    /// Starts data transfer when asked and allowed; closes a started connection on a node
    /// that no longer serves.
    fn steer(&mut self, gate: Gate, now: Instant) -> Option<String> {
        let started = matches!(self.link.state(), LinkState::Started | LinkState::Stopping);
        if started && gate == Gate::Refuse {
            self.link.close();
            metrics::counter!("fepha_iec104_leadership_closes_total").increment(1);
            return Some("this node no longer serves the forwarder".into());
        }
        if started && self.all() && !self.holds_in_log(true) {
            self.link.close();
            metrics::counter!("fepha_iec104_group_moves_total").increment(1);
            return Some(format!("group {} moved to another connection", self.group));
        }
        if !self.want_start || gate != Gate::Serve {
            return None;
        }
        if self.stream.is_none() {
            let granted = if self.all() {
                self.claim_in_log(now)
            } else {
                let mut groups = self
                    .served
                    .groups
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let takeover = self.served.spec.takeover;
                groups.claim(&self.group, self.id, &self.kick_tx, takeover) == Claim::Granted
            };
            if !granted {
                return None;
            }
            self.stream = Some(self.resume());
        }
        self.want_start = false;
        self.link.confirm_start(now);
        None
    }

    fn all(&self) -> bool {
        self.served.spec.mode == ForwardMode::All
    }

    fn holder(&self) -> Holder {
        Holder {
            node: self.served.host.cluster.id(),
            conn: self.id,
        }
    }

    /// Mode `all`: whether the log gives this connection its group (and, with
    /// `undisputed`, nobody waits to take it over).
    fn holds_in_log(&self, undisputed: bool) -> bool {
        let me = self.holder();
        self.served.host.cluster.read(|s| {
            s.forwarding.holders.get(&self.key) == Some(&me)
                && !(undisputed && s.forwarding.next.contains_key(&self.key))
        })
    }

    /// Mode `all`: true once the log gives this connection its group; until then it asks
    /// again now and then (the holder may have gone away meanwhile).
    fn claim_in_log(&mut self, now: Instant) -> bool {
        if self.holds_in_log(false) {
            return true;
        }
        if self.claimed_at.is_some_and(|at| now < at + CLAIM_AGAIN) {
            return false;
        }
        self.claimed_at = Some(now);
        let op = ForwardingOp::Claim {
            key: self.key.clone(),
            holder: self.holder(),
            take: self.served.spec.takeover == crate::site::Takeover::OnStart,
        };
        self.propose(op);
        false
    }

    fn propose(&self, op: ForwardingOp) {
        let host = self.served.host.clone();
        self.served.tasks.spawn(async move {
            if let Err(e) = host.cluster.propose(Request::Forwarding(op)).await {
                tracing::debug!("forwarding claim not written: {e}");
            }
        });
    }

    /// Where a newly started connection goes on from: after the group's acknowledged
    /// position. A group no master ever started begins at the newest event, and records
    /// that, so that what follows is kept for it.
    fn resume(&self) -> Stream {
        let served = &self.served;
        let host = &served.host;
        let from = served
            .book
            .resume_from(&host.cluster, &self.key)
            .unwrap_or_else(|| {
                let head = host.cluster.read(|s| s.points.next_seq.saturating_sub(1));
                served.book.record(&self.key, head);
                head
            });
        tracing::info!(forwarder = %served.name, conn = self.id, group = %self.group, from, "data transfer started");
        Stream::new(from, served.spec.queue)
    }

    /// Sends what fits in the window: confirmations and replies first, then events.
    fn fill(&mut self, now: Instant) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        while self.link.can_send() {
            let Some(bytes) = self.control.pop_front() else {
                break;
            };
            send(&mut self.link, stream, bytes, now, &self.meters.sent);
        }
        if !self.link.can_send() {
            return;
        }
        let host = &self.served.host;
        let image = &self.served.image;
        let (head, oldest) = host.cluster.read(|s| {
            (
                s.points.next_seq.saturating_sub(1),
                s.points.events.front().map(|e| e.seq),
            )
        });
        let lost = stream.bound(head, oldest);
        if lost > 0 {
            metrics::counter!("fepha_iec104_events_dropped_total").increment(lost);
            tracing::warn!(forwarder = %self.served.name, group = %self.group, lost, "events dropped: queue bound passed");
        }
        while self.link.can_send() && stream.cursor() < head {
            let events = host.cluster.read(|s| {
                s.points
                    .events_after(stream.cursor(), EVENTS_PER_READ)
                    .cloned()
                    .collect::<Vec<_>>()
            });
            if events.is_empty() {
                break;
            }
            let room = usize::from(self.link.params().k - self.link.unacked_count());
            let (asdus, through) = image.burst(&events, room);
            let wall_ms = crate::cluster::Cluster::now_ms();
            for (asdu, last) in asdus {
                let objects = asdu.objects.len() as u64;
                stream.take(last);
                if let Some(bytes) = encode(&asdu) {
                    send(&mut self.link, stream, bytes, now, &self.meters.sent);
                    metrics::counter!("fepha_iec104_events_sent_total").increment(objects);
                    // One sample per ASDU, of its newest event: cheap, and what a master waits.
                    if let Some(e) = events.iter().find(|e| e.seq == last) {
                        let age = wall_ms.saturating_sub(e.time_ms) as f64 / 1000.0;
                        self.meters.event_age.record(age);
                    }
                }
            }
            // Events after the last ASDU that this forwarder does not send need no frame.
            stream.take(through);
        }
    }

    fn on_asdu(&mut self, bytes: &[u8], now: Instant) {
        self.meters.received.increment(1);
        let asdu = match Asdu::decode(bytes) {
            Ok(a) => a,
            Err(AsduError::UnknownType(u)) => {
                tracing::info!(conn = self.id, "unknown type {} from the master", u.type_id);
                // A type this codec cannot decode goes back as it came, with COT 44.
                self.control
                    .extend(mirror_raw(bytes, Cause::UNKNOWN_TYPE, true));
                return;
            }
            Err(e) => {
                // Garbage inside a well-formed APDU: the master is broken, not this
                // request.
                tracing::warn!(conn = self.id, peer = %self.peer, "bad ASDU from the master: {e}");
                metrics::counter!("fepha_iec104_bad_asdus_total").increment(1);
                self.link.close();
                return;
            }
        };
        let served = self.served.clone();
        let mut selects = served
            .selects
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cx = station::Context {
            image: &served.image,
            conn: self.id,
            now,
            now_ms: i64::try_from(Cluster::now_ms()).unwrap_or(i64::MAX),
            select_timeout: Duration::from_millis(served.spec.select_timeout_ms),
            selects: &mut selects,
        };
        let host = &served.host;
        let reaction = station::react(&asdu, cx, || host.cluster.read(|s| s.points.points.clone()));
        drop(selects);
        match reaction {
            Reaction::Send(asdus) => asdus.iter().for_each(|a| self.queue(a)),
            Reaction::Execute(exec) => {
                let origin = format!("104 master {} via {}", self.peer, host.name);
                served.tasks.spawn(super::command::execute(
                    served.clone(),
                    exec,
                    origin,
                    self.reply_tx.clone(),
                ));
            }
        }
    }

    fn queue(&mut self, asdu: &Asdu) {
        self.control.extend(encode(asdu));
    }

    fn release(&mut self) {
        let asked = self.claimed_at.take().is_some();
        if self.all() {
            // A claim still waiting goes too; the log ignores a release that holds nothing.
            if self.stream.take().is_some() || asked {
                self.propose(ForwardingOp::Release {
                    key: self.key.clone(),
                    holder: self.holder(),
                });
            }
            return;
        }
        if self.stream.take().is_some() {
            self.served
                .groups
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .release(&self.group, self.id);
            self.served.released.notify_waiters();
        }
    }

    fn publish(&self) {
        let state = match self.link.state() {
            LinkState::Stopped if self.want_start => "waiting",
            LinkState::Stopped => "stopped",
            LinkState::Started => "started",
            LinkState::Stopping => "stopping",
        };
        let stream = self.stream.as_ref();
        self.served.host.registry.update(ConnInfo {
            id: self.id,
            forwarder: self.served.name.clone(),
            group: Some(self.group.clone()),
            peer: self.peer.to_string(),
            state: state.into(),
            opened_ms: self.opened_ms,
            sent_i_frames: self.link.sent_i_frames(),
            received_i_frames: self.link.received_i_frames(),
            unacked: self.link.unacked_count(),
            k: self.link.params().k,
            w: self.link.params().w,
            acked_event: stream.map_or(0, Stream::acked),
            sent_event: stream.map_or(0, Stream::cursor),
            dropped_events: stream.map_or(0, Stream::dropped),
        });
    }
}

fn encode(asdu: &Asdu) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(asdu.encoded_len());
    match asdu.encode(&mut bytes) {
        Ok(()) => Some(bytes),
        Err(e) => {
            tracing::error!("cannot encode {:?}: {e}", asdu.type_id);
            None
        }
    }
}

fn send(
    link: &mut Link,
    stream: &mut Stream,
    bytes: Vec<u8>,
    now: Instant,
    sent: &metrics::Counter,
) {
    match link.send_asdu(bytes, now) {
        Ok(()) => {
            stream.sent();
            sent.increment(1);
        }
        Err(e) => tracing::warn!("not sent: {e}"),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
