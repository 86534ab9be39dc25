//! The 104 forwarder group: failover as a master sees it, device-to-master latency,
//! spontaneous ASDU throughput to one master and a general interrogation of 10 000 points (see
//! the figures in `main.rs`).
//!
//! The master is written here on the fepha codec ([`fepha::iec104`]), over a tokio
//! `TcpStream` per node: STARTDT act at once, every I frame acknowledged by an S frame after
//! [`ACK_AFTER`] frames or [`ACK_TIMER`] (well within w = 8 and k = 12), TESTFR answered, and
//! a C_IC_NA_1 when the bench asks. What it receives goes to the bench as [`Event`]s with the
//! instant each APDU was read off the socket.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use fepha::iec104::{
    Apdu, Asdu, Cause, Element, IFrame, QOI_STATION, SeqNo, TypeId, UFunction, decode_apdu,
};
use fepha_cluster_tests::field::{SimDevice, device_addr, metric, owner_not_leader};
use fepha_cluster_tests::sitegen::{self, ForwarderSpec, SiteSpec};
use fepha_cluster_tests::{Cluster, percentile};
use nix::sys::signal::Signal;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_modbus::client::{Writer, tcp};
use tokio_modbus::slave::Slave;

use crate::Args;

const ALL: [usize; 3] = [0, 1, 2];
/// The forwarder's port (on every node's own loopback IP) and common address.
pub const PORT: u16 = 2404;
pub const CA: u16 = 47;
/// The master's S frame after this many unacknowledged I frames (the station's w is 8)...
const ACK_AFTER: u16 = 4;
/// ...or once this much time has passed with any unacknowledged.
const ACK_TIMER: Duration = Duration::from_millis(5);

/// The failover RTU's poll interval; its device ramps a register faster than that, so every
/// poll is an event.
const FAILOVER_POLL_MS: u64 = 20;
const RAMP_EVERY_MS: u64 = 10;
/// The register the bench writes for the latency figures, and its IOA; the ramped one's.
const LATENCY_REGISTER: u16 = 10;
const LATENCY_IOA: u32 = 1002;
const RAMP_IOA: u32 = 1001;
const LATENCY_SAMPLES: usize = 50;
/// The poll intervals of the two latency figures; 10 ms is the least the site check takes.
const SLOW_POLL_MS: u64 = 100;
const FAST_POLL_MS: u64 = 10;

/// The 10 000-point configuration: devices × unit ids × points, as the acquisition group's.
const DEVICES: u8 = 5;
const UNITS: u8 = 10;
const POINTS: u16 = 200;
const GIS: usize = 5;
/// The wider windows of the throughput diagnosis.
const WIDE_K: u16 = 96;
const WIDE_W: u16 = 64;
/// How long the throughput configuration may take to start flowing, then runs before and
/// while it is measured.
const LONG_WAIT: Duration = Duration::from_secs(120);
const WARM_UP: Duration = Duration::from_secs(5);
const WINDOW: Duration = Duration::from_secs(10);
/// How long any one thing the master waits for may take.
const WAIT: Duration = Duration::from_secs(20);

pub fn run(args: &Args) {
    let c = crate::three_voters("iec104", &args.raft);
    let (tx, rx) = channel();
    let mut b = Bench {
        c: &c,
        tx,
        hub: Hub::new(rx),
        masters: BTreeMap::new(),
        next_id: 0,
    };

    let sim = SimDevice::start(&c, device_addr(&c, 0, 5020), &one_rtu_profile());
    c.apply_ok(0, &one_rtu_site(sim.addr, FAILOVER_POLL_MS));
    let mut failovers = Vec::new();
    for k in 0..args.rounds {
        let r = b.failover_round();
        eprintln!(
            "fepha-bench: 104 failover round {k}: first ASDU on {} after {} ms (STARTDT con \
             {} ms, first event polled after the kill {} ms)",
            c.name(r.to),
            r.first_ms,
            r.start_con_ms.map_or("?".into(), |v| v.to_string()),
            r.new_event_ms.map_or("?".into(), |v| v.to_string()),
        );
        failovers.push(r.first_ms);
    }
    println!(
        "iec104_failover_ms_p50: {} ms",
        percentile(&failovers, 50.0)
    );
    println!(
        "iec104_failover_ms_p99: {} ms",
        percentile(&failovers, 99.0)
    );

    for (poll, suffix) in [(SLOW_POLL_MS, ""), (FAST_POLL_MS, "_fast")] {
        c.apply_ok(0, &one_rtu_site(sim.addr, poll));
        let (owner, _) = owner_not_leader(&c);
        let leader = c.wait_for_leader(&ALL);
        eprintln!(
            "fepha-bench: latency at poll_interval_ms = {poll}: owner {}, leader {}",
            c.name(owner),
            c.name(leader)
        );
        let took = b.device_to_master(sim.addr);
        for p in [50.0, 99.0] {
            println!(
                "device_to_master_latency_ms{suffix}_p{p}: {:.1} ms",
                percentile(&took, p) as f64 / 1000.0
            );
        }
    }
    drop(sim);

    b.big_site(crate::load_poll_ms(args.offer));
}

/// `n` general interrogations through a master on the leader of a cluster whose site maps
/// its points (the scale group's): per GI, the milliseconds from C_IC_NA_1 to ACTTERM and
/// the information objects received.
pub fn interrogations(c: &Cluster, n: usize) -> Vec<(f64, usize)> {
    let (tx, rx) = channel();
    let mut b = Bench {
        c,
        tx,
        hub: Hub::new(rx),
        masters: BTreeMap::new(),
        next_id: 0,
    };
    let leader = c.wait_for_leader(&ALL);
    (0..n).map(|_| b.interrogate(leader)).collect()
}

// ---- the master ----

/// What a master connection saw, and when (the instant its bytes were read).
#[derive(Debug)]
struct Event {
    /// The master (one per connection).
    id: u64,
    at: Instant,
    seen: Seen,
}

#[derive(Debug)]
enum Seen {
    StartDtCon,
    /// A spontaneous ASDU: its first object.
    Spontaneous {
        ioa: u32,
        value: Option<f64>,
        time_ms: Option<i64>,
    },
    GiSent,
    GiCon {
        negative: bool,
    },
    /// An ASDU with COT 20 and this many objects.
    Interrogated(usize),
    GiTerm,
    /// An ASDU the bench does not look for, or one that did not decode.
    Other(String),
    Closed(String),
}

enum Command {
    Interrogate,
}

/// Counters of one connection, read by the bench while the events queue up.
#[derive(Debug, Default)]
struct Counters {
    spontaneous_asdus: AtomicU64,
    spontaneous_objects: AtomicU64,
}

struct Master {
    node: usize,
    commands: mpsc::UnboundedSender<Command>,
    counters: Arc<Counters>,
    closed: bool,
}

/// Connects to node `node`'s forwarder and runs the master there until `commands` closes,
/// the node closes the connection or something the master cannot take arrives.
async fn master(
    id: u64,
    addr: SocketAddr,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: Sender<Event>,
    counters: Arc<Counters>,
) {
    let why = match session(id, addr, &mut commands, &events, &counters).await {
        Ok(()) => "closed by the bench".to_owned(),
        Err(e) => format!("{e:#}"),
    };
    let _ = events.send(Event {
        id,
        at: Instant::now(),
        seen: Seen::Closed(why),
    });
}

async fn session(
    id: u64,
    addr: SocketAddr,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    events: &Sender<Event>,
    counters: &Counters,
) -> anyhow::Result<()> {
    let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
        .await
        .with_context(|| format!("connect to {addr}: timed out"))?
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut out = Vec::new();
    Apdu::U(UFunction::StartDtAct).encode(&mut out)?;
    wr.write_all(&out).await?;
    out.clear();

    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 16];
    let mut send_seq = SeqNo::ZERO;
    let mut recv_seq = SeqNo::ZERO;
    let mut unacked: u16 = 0;
    let mut timer = tokio::time::interval(ACK_TIMER);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let emit = |at: Instant, seen: Seen| {
        let _ = events.send(Event { id, at, seen });
    };
    loop {
        tokio::select! {
            read = rd.read(&mut chunk) => {
                let n = read.context("read")?;
                if n == 0 {
                    bail!("the node closed the connection");
                }
                let at = Instant::now();
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                let mut used = 0;
                while let Some((apdu, len)) = decode_apdu(buf.get(used..).unwrap_or_default())
                    .map_err(|e| anyhow::anyhow!("bad APDU from the node: {e:?}"))?
                {
                    used += len;
                    match apdu {
                        Apdu::I(frame) => {
                            recv_seq = recv_seq.next();
                            unacked += 1;
                            on_i_frame(&frame, at, counters, &emit);
                        }
                        Apdu::S { .. } => {}
                        Apdu::U(UFunction::StartDtCon) => emit(at, Seen::StartDtCon),
                        Apdu::U(UFunction::TestFrAct) => {
                            Apdu::U(UFunction::TestFrCon).encode(&mut out)?;
                        }
                        Apdu::U(f) => emit(at, Seen::Other(format!("U frame {f:?}"))),
                    }
                }
                buf.drain(..used);
                if unacked >= ACK_AFTER {
                    Apdu::S { recv_seq }.encode(&mut out)?;
                    unacked = 0;
                }
            }
            _ = timer.tick() => {
                if unacked > 0 {
                    Apdu::S { recv_seq }.encode(&mut out)?;
                    unacked = 0;
                }
            }
            command = commands.recv() => match command {
                Some(Command::Interrogate) => {
                    let asdu = Asdu::single(
                        Cause::ACTIVATION,
                        CA,
                        0,
                        Element::Interrogation { qoi: QOI_STATION },
                    );
                    Apdu::i_frame(send_seq, recv_seq, &asdu)?.encode(&mut out)?;
                    send_seq = send_seq.next();
                    unacked = 0;
                    wr.write_all(&out).await?;
                    out.clear();
                    emit(Instant::now(), Seen::GiSent);
                }
                None => return Ok(()),
            },
        }
        if !out.is_empty() {
            wr.write_all(&out).await.context("write")?;
            out.clear();
        }
    }
}

fn on_i_frame(frame: &IFrame, at: Instant, counters: &Counters, emit: &impl Fn(Instant, Seen)) {
    let asdu = match Asdu::decode(&frame.asdu) {
        Ok(a) => a,
        Err(e) => return emit(at, Seen::Other(format!("undecodable ASDU: {e}"))),
    };
    let seen = if asdu.cause == Cause::SPONTANEOUS {
        counters.spontaneous_asdus.fetch_add(1, Ordering::Relaxed);
        counters
            .spontaneous_objects
            .fetch_add(asdu.objects.len() as u64, Ordering::Relaxed);
        // A burst packs several events into one ASDU: each is seen on its own.
        for object in &asdu.objects {
            let seen = Seen::Spontaneous {
                ioa: object.ioa,
                value: number(&object.element),
                time_ms: object.element.time().map(|t| t.to_unix_ms()),
            };
            emit(at, seen);
        }
        return;
    } else if asdu.type_id == TypeId::CIcNa1 && asdu.cause == Cause::ACTIVATION_CON {
        Seen::GiCon {
            negative: asdu.negative,
        }
    } else if asdu.type_id == TypeId::CIcNa1 && asdu.cause == Cause::ACTIVATION_TERMINATION {
        Seen::GiTerm
    } else if asdu.cause == Cause::INTERROGATED_BY_STATION {
        Seen::Interrogated(asdu.objects.len())
    } else {
        Seen::Other(format!(
            "{:?} cause {} negative {}",
            asdu.type_id,
            asdu.cause.value(),
            asdu.negative
        ))
    };
    emit(at, seen);
}

/// The value of a monitored element as a number, where it has one.
fn number(e: &Element) -> Option<f64> {
    match *e {
        Element::SinglePoint { value, .. } => Some(f64::from(u8::from(value))),
        Element::Float { value, .. } => Some(f64::from(value)),
        Element::Scaled { value, .. } | Element::Normalized { value, .. } => Some(f64::from(value)),
        _ => None,
    }
}

/// The events of every master, and which node each master is connected to.
struct Hub {
    rx: Receiver<Event>,
    node_of: BTreeMap<u64, usize>,
    /// Masters whose connection closed since [`Bench::connect_all`] last looked.
    closed: Vec<u64>,
    /// Masters whose STARTDT was confirmed.
    started: BTreeSet<u64>,
    /// Frames of no interest to the bench, of which the first few are printed.
    others: u64,
}

impl Hub {
    fn new(rx: Receiver<Event>) -> Hub {
        Hub {
            rx,
            node_of: BTreeMap::new(),
            closed: Vec::new(),
            started: BTreeSet::new(),
            others: 0,
        }
    }

    fn note(&mut self, e: &Event) {
        let node = self.node_of.get(&e.id).copied().unwrap_or(usize::MAX);
        match &e.seen {
            Seen::Closed(why) => {
                if why != "closed by the bench" {
                    eprintln!("fepha-bench: master {} (node {node}) closed: {why}", e.id);
                }
                self.closed.push(e.id);
            }
            Seen::Other(what) => {
                self.others += 1;
                if self.others <= 20 {
                    eprintln!("fepha-bench: master {} (node {node}) got {what}", e.id);
                }
            }
            Seen::StartDtCon => {
                self.started.insert(e.id);
            }
            _ => {}
        }
    }

    /// Events until `pick` returns Some (with the event's node) or `limit` passes.
    fn wait<T>(
        &mut self,
        limit: Duration,
        mut pick: impl FnMut(usize, &Event) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = match self.rx.recv_timeout(left) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            };
            self.note(&e);
            let node = self.node_of.get(&e.id).copied().unwrap_or(usize::MAX);
            if let Some(t) = pick(node, &e) {
                return Some(t);
            }
        }
    }

    /// Throws away what has queued up.
    fn drain(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.note(&e);
        }
    }
}

// ---- the bench ----

struct Bench<'a> {
    c: &'a Cluster,
    tx: Sender<Event>,
    hub: Hub,
    /// Master id → master.
    masters: BTreeMap<u64, Master>,
    next_id: u64,
}

struct Failover {
    to: usize,
    first_ms: u64,
    start_con_ms: Option<u64>,
    new_event_ms: Option<u64>,
}

impl Bench<'_> {
    /// A new master connected to node `i`; STARTDT act is sent at once.
    fn connect(&mut self, i: usize) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let (commands, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let addr = SocketAddr::new(self.c.ip(i), PORT);
        self.c
            .runtime()
            .spawn(master(id, addr, rx, self.tx.clone(), counters.clone()));
        self.hub.node_of.insert(id, i);
        self.masters.insert(
            id,
            Master {
                node: i,
                commands,
                counters,
                closed: false,
            },
        );
        id
    }

    /// Makes sure every running node has an open master connection.
    fn connect_all(&mut self) {
        for id in std::mem::take(&mut self.hub.closed) {
            if let Some(m) = self.masters.get_mut(&id) {
                m.closed = true;
            }
        }
        self.masters.retain(|_, m| !m.closed);
        for i in ALL {
            if self.c.is_running(i) && !self.masters.values().any(|m| m.node == i) {
                self.connect(i);
            }
        }
    }

    fn disconnect_all(&mut self) {
        self.masters.clear();
        self.hub.drain();
    }

    fn master_on(&self, i: usize) -> Option<(u64, &Master)> {
        self.masters
            .iter()
            .find(|(_, m)| m.node == i && !m.closed)
            .map(|(id, m)| (*id, m))
    }

    /// One SIGKILL of the leader (RTU d's owner is another node, so its polls go on); the
    /// time until the first spontaneous ASDU reaches a master on another node. Then the node
    /// is restarted and caught up.
    fn failover_round(&mut self) -> Failover {
        let c = self.c;
        // Until data flows to a master on a leader that is not RTU d's owner. A restarted
        // node may still cost an election after it is caught up, which closes the masters of
        // the node that stopped leading: then the round looks again.
        let deadline = Instant::now() + WAIT;
        let leader = loop {
            if Instant::now() > deadline {
                c.fail(&format!(
                    "no fresh event reached a master on the leader within {WAIT:?}"
                ));
            }
            let (owner, _) = owner_not_leader(c);
            let leader = c.wait_for_leader(&ALL);
            if owner == leader {
                continue;
            }
            self.connect_all();
            // Data flows through the leader: an event polled from now on arrives there.
            self.hub.drain();
            let since = now_ms();
            let Some((on_leader, _)) = self.master_on(leader) else {
                continue;
            };
            let flowing = self.hub.wait(Duration::from_secs(3), |_, e| {
                matches!(e.seen, Seen::Spontaneous { ioa: RAMP_IOA, time_ms: Some(t), .. }
                    if e.id == on_leader && t >= since as i64)
                .then_some(())
            });
            if flowing.is_some() {
                break leader;
            }
        };
        self.hub.drain();

        c.node(leader).signal(Signal::SIGKILL);
        let t0 = Instant::now();
        let killed_ms = now_ms() as i64;
        c.kill(leader);
        let mut start_con = None;
        let mut new_event = None;
        let first = self.hub.wait(WAIT, |node, e| {
            if node == leader || e.at < t0 {
                return None;
            }
            match e.seen {
                Seen::StartDtCon => {
                    start_con.get_or_insert(e.at);
                    None
                }
                Seen::Spontaneous { time_ms, .. } => {
                    if time_ms.is_some_and(|t| t > killed_ms) {
                        new_event.get_or_insert(e.at);
                    }
                    Some((node, e.at))
                }
                _ => None,
            }
        });
        let Some((to, first_at)) = first else {
            c.fail(&format!(
                "no spontaneous ASDU on another node within {WAIT:?} of killing {}",
                c.name(leader)
            ))
        };
        // What came with or right after it: the first event polled after the kill.
        if new_event.is_none() {
            new_event = self.hub.wait(Duration::from_secs(2), |node, e| {
                matches!(e.seen, Seen::Spontaneous { time_ms: Some(t), .. }
                    if node == to && t > killed_ms)
                .then_some(e.at)
            });
        }
        let ms = |at: Instant| at.duration_since(t0).as_millis() as u64;

        c.start(&[leader]);
        caught_up(c, leader);
        self.connect_all();
        Failover {
            to,
            first_ms: ms(first_at),
            start_con_ms: start_con.map(ms),
            new_event_ms: new_event.map(ms),
        }
    }

    /// Microseconds, per sample, from the device's acknowledgement of a write of a new value
    /// into [`LATENCY_REGISTER`] until a master receives it spontaneously.
    fn device_to_master(&mut self, device: SocketAddr) -> Vec<u64> {
        let c = self.c;
        self.connect_all();
        let connected = c.block_on(async {
            let stream = TcpStream::connect(device).await?;
            stream.set_nodelay(true)?;
            anyhow::Ok(tcp::attach_slave(stream, Slave(1)))
        });
        let mut modbus = match connected {
            Ok(m) => m,
            Err(e) => c.fail(&format!("connect to the device: {e:#}")),
        };
        let mut took = Vec::with_capacity(LATENCY_SAMPLES);
        let base: u16 = rand::rng().random_range(1000..30_000);
        for k in 0..LATENCY_SAMPLES {
            let phase = rand::rng().random_range(0..SLOW_POLL_MS);
            std::thread::sleep(Duration::from_millis(phase));
            let value = base + k as u16;
            self.hub.drain();
            let written = c.block_on(async {
                modbus
                    .write_single_register(LATENCY_REGISTER, value)
                    .await
                    .map_err(anyhow::Error::from)?
                    .map_err(|e| anyhow::anyhow!("the device refused the write: {e:?}"))
            });
            if let Err(e) = written {
                c.fail(&format!("write to the device: {e:#}"));
            }
            let t = Instant::now();
            let seen = self.hub.wait(WAIT, |_, e| {
                matches!(e.seen, Seen::Spontaneous { ioa: LATENCY_IOA, value: Some(v), .. }
                    if v == f64::from(value))
                .then_some(e.at)
            });
            match seen {
                Some(at) => took.push(at.saturating_duration_since(t).as_micros() as u64),
                None => c.fail(&format!("{value} did not reach the master within {WAIT:?}")),
            }
        }
        took
    }

    /// The 10 000-point site: a general interrogation with no device running (every point
    /// unread, sent invalid), then spontaneous throughput with every point changing on every
    /// poll.
    fn big_site(&mut self, poll_ms: u64) {
        let c = self.c;
        let addrs: Vec<SocketAddr> = (1..=DEVICES).map(|k| device_addr(c, k, 5020)).collect();
        let text = big_site(&addrs, poll_ms, None);
        let leader = c.wait_for_leader(&ALL);
        let t = Instant::now();
        if let Err(e) = c.apply(leader, &text, "240s") {
            eprintln!("fepha-bench: the 10 000-point configuration was not applied: {e}");
            return;
        }
        eprintln!(
            "fepha-bench: applied {} KiB (10 000 mapped points) in {} ms",
            text.len() / 1024,
            t.elapsed().as_millis()
        );
        // The forwarder restarts with the new map and closes its masters' connections: they
        // start afresh (see `started_on`).
        self.disconnect_all();
        let leader = c.wait_for_leader(&ALL);
        let t = Instant::now();
        self.started_on(leader);
        eprintln!(
            "fepha-bench: STARTDT confirmed by the leader {} ms after the apply returned",
            t.elapsed().as_millis()
        );

        let mut gis = Vec::new();
        for k in 0..GIS {
            let (ms, objects) = self.interrogate(leader);
            eprintln!("fepha-bench: GI {k}: {ms:.1} ms, {objects} information objects");
            if objects != usize::from(DEVICES) * usize::from(UNITS) * usize::from(POINTS) {
                eprintln!(
                    "fepha-bench: WARNING: GI {k} gave {objects} information objects, not 10 000"
                );
            }
            gis.push((ms * 1000.0) as u64);
        }
        println!(
            "gi_ms_10000_points: {:.1} ms",
            percentile(&gis, 50.0) as f64 / 1000.0
        );

        self.throughput(&addrs, poll_ms);
    }

    /// The master on node `leader` once its STARTDT is confirmed, reconnecting it while the
    /// node closes it (a forwarder restarts on a configuration change, and its new listener
    /// may need a few seconds to bind).
    fn started_on(&mut self, leader: usize) -> (u64, mpsc::UnboundedSender<Command>) {
        let c = self.c;
        let deadline = Instant::now() + WAIT;
        loop {
            self.connect_all();
            let Some((id, commands)) = self
                .master_on(leader)
                .map(|(id, m)| (id, m.commands.clone()))
            else {
                c.fail("no master on the leader")
            };
            if self.hub.started.contains(&id) {
                return (id, commands);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let seen = self.hub.wait(left, |_, e| {
                (e.id == id && matches!(e.seen, Seen::StartDtCon | Seen::Closed(_))).then_some(())
            });
            if seen.is_none() {
                c.fail(&format!(
                    "{} did not confirm STARTDT within {WAIT:?}",
                    c.name(leader)
                ));
            }
            if !self.hub.started.contains(&id) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Milliseconds from sending C_IC_NA_1 to the master on node `leader` until its
    /// ACTTERM, and the information objects with COT 20 in between.
    fn interrogate(&mut self, leader: usize) -> (f64, usize) {
        let c = self.c;
        let (id, commands) = self.started_on(leader);
        if commands.send(Command::Interrogate).is_err() {
            c.fail("the master on the leader has stopped");
        }
        let mut sent = None;
        let mut objects = 0;
        let term = self.hub.wait(WAIT, |_, e| {
            if e.id != id {
                return None;
            }
            match e.seen {
                Seen::GiSent => sent = Some(e.at),
                Seen::GiCon { negative: true } => return Some(Err("a negative ACTCON")),
                Seen::Interrogated(n) => objects += n,
                Seen::GiTerm => return Some(Ok(e.at)),
                Seen::Closed(_) => return Some(Err("the connection closed")),
                _ => {}
            }
            None
        });
        match (sent, term) {
            (Some(sent), Some(Ok(at))) => (
                at.saturating_duration_since(sent).as_secs_f64() * 1000.0,
                objects,
            ),
            (_, Some(Err(why))) => c.fail(&format!("GI: {why}")),
            _ => c.fail(&format!("no ACTTERM of the GI within {WAIT:?}")),
        }
    }

    /// Starts the ramping devices and measures the spontaneous ASDUs the master receives per
    /// second over [`WINDOW`] after [`WARM_UP`]; then, for the diagnosis only (stderr), the
    /// same with the forwarder's k and w raised to [`WIDE_K`] and [`WIDE_W`].
    fn throughput(&mut self, addrs: &[SocketAddr], poll_ms: u64) {
        let c = self.c;
        let profile = crate::ramp_profile(UNITS, POINTS, poll_ms);
        let sims: Vec<SimDevice> = addrs
            .iter()
            .map(|a| SimDevice::start(c, *a, &profile))
            .collect();
        let t = Instant::now();
        let w = self.window(t, poll_ms);
        println!("asdu_per_s: {:.0} ASDU/s", w.asdus_per_s);
        println!("iec104_events_per_s: {:.0} events/s", w.events_per_s);
        println!("iec104_events_dropped_total: {:.0} events", w.dropped_total);

        let leader = c.wait_for_leader(&ALL);
        if let Err(e) = c.apply(
            leader,
            &big_site(addrs, poll_ms, Some((WIDE_K, WIDE_W))),
            "240s",
        ) {
            eprintln!("fepha-bench: the k = {WIDE_K} configuration was not applied: {e}");
        } else {
            self.disconnect_all();
            eprintln!("fepha-bench: the same with k = {WIDE_K}, w = {WIDE_W} (diagnosis only):");
            let t = Instant::now();
            let wide = self.window(t, poll_ms);
            eprintln!(
                "fepha-bench: with k = {WIDE_K}: {:.0} ASDU/s ({:.0} with k = 12)",
                wide.asdus_per_s, w.asdus_per_s
            );
        }
        self.disconnect_all();
        drop(sims);
    }

    /// Connects a master to every node, waits until spontaneous data flows, warms up and
    /// measures; `since` is when the data was set going and `poll_ms` the site's poll interval
    /// (both for the log).
    fn window(&mut self, since: Instant, poll_ms: u64) -> Window {
        let c = self.c;
        let leader = c.wait_for_leader(&ALL);
        self.started_on(leader);
        self.connect_all();
        // One master with a connection to every node: should leadership move, the new
        // leader's connection goes on.
        let counters: Vec<Arc<Counters>> =
            self.masters.values().map(|m| m.counters.clone()).collect();
        let asdus = || -> u64 {
            counters
                .iter()
                .map(|k| k.spontaneous_asdus.load(Ordering::Relaxed))
                .sum()
        };
        let objects = || -> u64 {
            counters
                .iter()
                .map(|k| k.spontaneous_objects.load(Ordering::Relaxed))
                .sum()
        };
        let term = || {
            c.statuses(&ALL)
                .into_iter()
                .filter_map(Result::ok)
                .map(|s| s.term)
                .max()
                .unwrap_or(0)
        };
        // The master's events pile up behind the bench; only its counters are read here.
        let flowing = loop {
            let before = asdus();
            std::thread::sleep(Duration::from_secs(1));
            self.hub.drain();
            if asdus() - before >= 1000 {
                break true;
            }
            if since.elapsed() > LONG_WAIT {
                break false;
            }
        };
        eprintln!(
            "fepha-bench: spontaneous data flows {} ms after it was set going{}; warming up \
             for {WARM_UP:?}",
            since.elapsed().as_millis(),
            if flowing {
                ""
            } else {
                " (slowly: under 1000 ASDU/s)"
            }
        );
        let until = Instant::now() + WARM_UP;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
            self.hub.drain();
        }

        let sum = |name: &str| -> f64 { ALL.iter().filter_map(|&i| metric(c, i, name)).sum() };
        let leader_metric = |name: &str| metric(c, leader, name).unwrap_or(0.0);
        let leader_pid = c.node(leader).pid().unwrap_or(0);
        let dropped_before = leader_metric("fepha_iec104_events_dropped_total");
        let sent_before = leader_metric("fepha_iec104_events_sent_total");
        let changes_before = sum("fepha_point_changes_total");
        let cpu_before = (cpu_ticks(leader_pid), cpu_ticks(std::process::id()));
        let asdus_before = asdus();
        let objects_before = objects();
        let term_before = term();
        let t0 = Instant::now();
        let mut per_second = Vec::new();
        while t0.elapsed() < WINDOW {
            let n = asdus();
            let s = Instant::now();
            while s.elapsed() < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_millis(100));
                self.hub.drain();
            }
            per_second.push(asdus() - n);
        }
        let window = t0.elapsed().as_secs_f64();
        let got = asdus() - asdus_before;
        let objects = objects() - objects_before;
        let cpu_after = (cpu_ticks(leader_pid), cpu_ticks(std::process::id()));
        let term_after = term();
        if term_after != term_before {
            eprintln!(
                "fepha-bench: WARNING: leadership changed during the window (term {term_before} \
                 -> {term_after}); the dropped events are the first leader's"
            );
        }
        let dropped_after = leader_metric("fepha_iec104_events_dropped_total");
        let sent_after = leader_metric("fepha_iec104_events_sent_total");
        let changes_after = sum("fepha_point_changes_total");
        let percent = |a: u64, b: u64| (b - a) as f64 / CLK_TCK / window * 100.0;
        eprintln!(
            "fepha-bench: ASDUs per second {per_second:?}; {:.0} objects/s; owners wrote {:.0} \
             changes/s ({:.0} offered); leader {} sent {:.0} events/s and dropped {:.0} in the \
             window; CPU: leader {:.0}%, bench (master) {:.0}%",
            objects as f64 / window,
            (changes_after - changes_before) / window,
            crate::load_offered(poll_ms),
            c.name(leader),
            (sent_after - sent_before) / window,
            dropped_after - dropped_before,
            percent(cpu_before.0, cpu_after.0),
            percent(cpu_before.1, cpu_after.1),
        );
        Window {
            asdus_per_s: got as f64 / window,
            events_per_s: objects as f64 / window,
            dropped_total: dropped_after,
        }
    }
}

struct Window {
    asdus_per_s: f64,
    /// Information objects in those ASDUs: events, several to an ASDU in a burst.
    events_per_s: f64,
    /// The leader's `fepha_iec104_events_dropped_total` at the end.
    dropped_total: f64,
}

/// User plus system CPU time of `pid` in clock ticks; 0 if it cannot be read.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after "(comm)": state is the first; utime and stime are 12th and 13th.
            let after = &s[s.rfind(')')? + 1..];
            let mut fields = after.split_whitespace().skip(11);
            let utime: u64 = fields.next()?.parse().ok()?;
            let stime: u64 = fields.next()?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0)
}

/// USER_HZ, the unit of /proc/PID/stat's CPU times.
const CLK_TCK: f64 = 100.0;

/// Waits until the restarted node `i` has applied what the leader had applied when it came
/// back, and every node names the same leader. (The cluster's own convergence check wants
/// equal applied indexes, which a device changing every poll never lets happen.)
fn caught_up(c: &Cluster, i: usize) {
    let target = c.wait_until("the others agree on a leader", || {
        let leader = c.wait_for_leader(&ALL);
        Ok(c.status(leader)?.applied_index)
    });
    c.wait_until(&format!("{} catches up", c.name(i)), || {
        let statuses = c
            .statuses(&ALL)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let leaders: Vec<_> = statuses.iter().map(|s| s.leader.clone()).collect();
        if leaders.iter().any(|l| l.is_none() || *l != leaders[0]) {
            return Err(format!("leaders {leaders:?}"));
        }
        let applied = statuses[i].applied_index;
        if applied < target {
            return Err(format!("applied {applied} of {target}"));
        }
        Ok(())
    });
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Register 0 ramps every [`RAMP_EVERY_MS`]; the others change only when written.
fn one_rtu_profile() -> String {
    format!(
        "unit_ids = [1]\nseed = 1\n[holding_registers]\ncount = 16\n\
         [[schedule]]\nkind = \"ramp\"\ntable = \"holding_registers\"\naddress = 0\n\
         every_ms = {RAMP_EVERY_MS}\nmin = 0\nmax = 65535\nstep = 1\n"
    )
}

/// RTU `d` polled every `poll_ms`: the ramped register and the bench's, both mapped.
fn one_rtu_site(endpoint: SocketAddr, poll_ms: u64) -> String {
    format!(
        r#"
[site]
name = "bench: 104 forwarder, one RTU polled every {poll_ms} ms"

[[rtu]]
id = "d"
protocol = "modbus"
poll_interval_ms = {poll_ms}
timeout_ms = 1000
standby = "probe"
  [[rtu.channel]]
  name = "lan"
  endpoints = ["{endpoint}"]

[[point]]
id = "d.v"
rtu = "d"
kind = "measured"
table = "holding"
address = 0
format = "u16"

[[point]]
id = "d.w"
rtu = "d"
kind = "measured"
table = "holding"
address = {LATENCY_REGISTER}
format = "u16"

[[forwarder]]
name = "cc"
port = {PORT}
common_address = {CA}
  [[forwarder.map]]
  point = "d.v"
  ioa = {RAMP_IOA}
  [[forwarder.map]]
  point = "d.w"
  ioa = {LATENCY_IOA}
"#
    )
}

/// One RTU per unit id of every device, [`POINTS`] u16 measured points each, every point
/// mapped, to IOAs 1..=10 000 in order (the generated site of [`sitegen`], with
/// descriptions).
fn big_site(devices: &[SocketAddr], poll_ms: u64, window: Option<(u16, u16)>) -> String {
    sitegen::site(&SiteSpec {
        name: "bench: 104 forwarder, 10 000 points".into(),
        devices: devices.to_vec(),
        units: UNITS,
        points: POINTS,
        poll_interval_ms: poll_ms,
        descriptions: crate::descriptions(),
        forwarder: Some(ForwarderSpec {
            port: PORT,
            common_address: CA,
            window,
        }),
    })
}
