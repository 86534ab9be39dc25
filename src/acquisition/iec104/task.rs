//! One IEC 104 RTU on one node. As its owner the node connects to the endpoints in order,
//! starts data transfer on one and keeps it (see `session`); on failure it tries the next
//! endpoint and channel, and a whole round without a started link marks the RTU's points
//! invalid and not topical and reports it unreachable, so that the leader hands it over as
//! it does a Modbus RTU. A standby only probes (TCP, never STARTDT).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::interrogated::Interrogated;
use super::points::{PointMap, Reading};
use crate::acquisition::Field;
use crate::acquisition::batch::Batcher;
use crate::acquisition::decode;
use crate::acquisition::probe::{Endpoint, Probes};
use crate::acquisition::reach;
use crate::cluster::Cluster;
use crate::iec104::LinkParams;
use crate::shutdown::Shutdown;
use crate::site::{Iec104Rtu, Point, PointKind, Rtu, Standby};
use crate::state::ownership::Reach;
use crate::state::points::{Change, Quality, Value};

/// Reports already in the log, by point, device time tag and value: what a device resends to
/// a new owner (frames the old one had committed but not yet acknowledged) is not an event
/// twice.
const SEEN_KEPT: usize = 100_000;

/// A report as the seen set keeps it: point, time tag, value.
type Seen = (String, u64, u64);

/// A value as a number for the seen set (floats by their bits).
fn value_key(v: &Value) -> u64 {
    match *v {
        Value::Single(b) => u64::from(b),
        Value::Double(d) => u64::from(d),
        Value::Measured(m) => m.to_bits(),
        Value::Counter(c) => c as u64,
        Value::Step { value, transient } => (u64::from(value as u8) << 1) | u64::from(transient),
        Value::Bits(b) => u64::from(b),
    }
}

pub(crate) struct Task {
    pub(super) field: Arc<Field>,
    pub(super) rtu: Rtu,
    pub(super) spec: Iec104Rtu,
    pub(super) params: LinkParams,
    pub(super) map: PointMap,
    /// The monitored points by id (kind and deadband).
    monitored: HashMap<String, Point>,
    pub(super) batcher: Batcher,
    pub(super) source: Option<IpAddr>,
    pub(super) probes: Probes,
    pub(super) up: BTreeMap<Endpoint, bool>,
    reach: Option<Reach>,
    /// The last value, quality and time reported per point, as the owner.
    last: HashMap<String, (Value, Quality, u64)>,
    seen: HashSet<Seen>,
    seen_order: VecDeque<Seen>,
    /// Indication changes an interrogation showed, whose events wait for the device's own.
    pub(super) interrogated: Interrogated,
    owned: Option<u64>,
    /// Where the owner's next round starts: the endpoint that last worked.
    start_at: usize,
    /// Decode logging of what the session sends, when the RTU asks for it.
    pub(super) tx_log: Option<crate::iec104::frame_log::FrameLog>,
}

/// Why the task cannot run this RTU.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    #[error("the RTU has no [rtu.iec104] table")]
    NotIec104,
    #[error("{0}: {1}")]
    BadTime(&'static str, String),
}

impl Task {
    pub(crate) fn new(
        field: Arc<Field>,
        rtu: Rtu,
        points: Vec<Point>,
        batcher: Batcher,
    ) -> Result<Task, SetupError> {
        let spec = rtu.iec104.clone().ok_or(SetupError::NotIec104)?;
        let params = spec
            .link_params()
            .map_err(|(k, why)| SetupError::BadTime(k, why))?;
        let map = PointMap::new(*spec.common_address.get_ref(), &points);
        let monitored = points
            .into_iter()
            .filter(|p| !p.kind.get_ref().is_command())
            .map(|p| (p.id.get_ref().clone(), p))
            .collect();
        let source = field.source_ip;
        Ok(Task {
            field,
            rtu,
            spec,
            params,
            map,
            monitored,
            batcher,
            source,
            probes: Probes::iec104(),
            up: BTreeMap::new(),
            reach: None,
            last: HashMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            interrogated: Interrogated::default(),
            owned: None,
            start_at: 0,
            tx_log: None,
        })
    }

    pub(super) fn id(&self) -> &str {
        self.rtu.id.get_ref()
    }

    fn interval(&self) -> Duration {
        Duration::from_millis((*self.rtu.poll_interval_ms.get_ref()).max(10))
    }

    /// Runs the RTU until `stop`; a command it has started is finished first.
    pub(crate) async fn run(mut self, stop: Shutdown) {
        let mut changes = self.field.cluster.raft().metrics();
        let stopped = stop.clone().wait();
        tokio::pin!(stopped);
        loop {
            if stop.is_triggered() {
                break;
            }
            let epoch = self.lease();
            if epoch != self.owned {
                self.switch(epoch);
            }
            let pause = match epoch {
                Some(epoch) => self.owner_round(epoch, &stop).await,
                None => {
                    self.standby_round();
                    self.interval()
                }
            };
            metrics::counter!("fepha_acquisition_rounds_total", "rtu" => self.id().to_owned())
                .increment(1);
            let until = Instant::now() + pause;
            // Woken early by an applied entry only to see whether the lease changed.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    r = changes.changed() => if r.is_err() { return },
                    _ = &mut stopped => return,
                }
                if self.lease() != self.owned {
                    break;
                }
            }
        }
        tracing::info!(rtu = %self.id(), "acquisition task stopped");
    }

    /// The epoch under which this node may do field I/O with the RTU now, if any.
    pub(super) fn lease(&self) -> Option<u64> {
        let me = self.field.cluster.id();
        let epoch = self.field.cluster.read(|s| {
            s.ownership
                .leases
                .get(self.id())
                .filter(|l| l.owner == me)
                .map(|l| l.epoch)
        })?;
        self.field.own.valid().then_some(epoch)
    }

    pub(super) fn may_io(&self, epoch: u64) -> bool {
        self.lease() == Some(epoch)
    }

    fn switch(&mut self, epoch: Option<u64>) {
        tracing::info!(rtu = %self.id(), ?epoch, "ownership changed");
        self.owned = epoch;
        self.last.clear();
        self.seen.clear();
        self.seen_order.clear();
        self.interrogated.clear();
        if epoch.is_none() {
            return;
        }
        // Start from what the cluster has, so that a take-over reports only real changes and
        // a report the device sends again is known.
        let ids: HashSet<&str> = self.monitored.keys().map(String::as_str).collect();
        let rtu = self.id();
        let (last, seen) = self.field.cluster.read(|s| {
            let last: HashMap<String, (Value, Quality, u64)> = ids
                .iter()
                .filter_map(|id| {
                    let p = s.points.points.get(*id)?;
                    Some((id.to_string(), (p.value, p.quality, p.time_ms)))
                })
                .collect();
            // The event queue's reports (all there is in a state from before the reports
            // were kept apart), then the RTU's newest, which `remember` keeps last.
            let mut seen: Vec<Seen> = (s.points.events.iter().rev())
                .filter(|e| ids.contains(e.point.as_str()))
                .take(SEEN_KEPT)
                .map(|e| (e.point.clone(), e.time_ms, value_key(&e.value)))
                .collect();
            seen.reverse();
            seen.extend(
                (s.points.recent.of(rtu))
                    .map(|r| (r.point.clone(), r.time_ms, value_key(&r.value))),
            );
            (last, seen)
        });
        self.last = last;
        for key in seen {
            self.remember(key);
        }
    }

    fn remember(&mut self, key: Seen) {
        if self.seen.insert(key.clone()) {
            self.seen_order.push_back(key);
        }
        while self.seen_order.len() > SEEN_KEPT {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    /// One round as the owner: the endpoints in order from the one that last worked, each
    /// served for as long as it stays up. Returns how long to wait before the next round.
    async fn owner_round(&mut self, epoch: u64, stop: &Shutdown) -> Duration {
        let all = self.endpoints();
        let n = all.len().max(1);
        for i in 0..all.len() {
            let k = (self.start_at + i) % n;
            let Some(at) = all.get(k).copied() else {
                continue;
            };
            if !self.may_io(epoch) || stop.is_triggered() {
                return Duration::ZERO;
            }
            match self.serve(at, epoch, stop).await {
                Ok(()) => {
                    // Stopped, or the lease went: not the link's fault.
                    return Duration::ZERO;
                }
                Err(super::session::Failure { started, kind, why }) => {
                    // No report of them comes on this link any more.
                    self.send_interrogated(epoch, true).await;
                    if self.up.get(&at) != Some(&false) || started {
                        tracing::warn!(rtu = %self.id(), endpoint = %self.endpoint(at), "104 link failed: {why}");
                    }
                    metrics::counter!("fepha_acquisition_failures_total", "rtu" => self.id().to_owned())
                        .increment(1);
                    metrics::counter!("fepha_poll_errors_total", "rtu" => self.id().to_owned(), "kind" => kind)
                        .increment(1);
                    self.up.insert(at, false);
                    if started {
                        // It worked until now: try it first again next time, after the others.
                        self.start_at = k;
                        self.report_reach(Some(Reach::Reachable));
                    }
                }
            }
        }
        if !self.may_io(epoch) {
            return Duration::ZERO;
        }
        self.link_down(epoch).await;
        self.report_reach(Some(Reach::Unreachable));
        self.interval()
    }

    fn standby_round(&mut self) {
        if self.rtu.standby == Standby::Cold {
            self.probes.clear();
            self.up.clear();
            self.report_reach(None);
            return;
        }
        self.probe(None);
        let reach = if self.up.values().any(|u| *u) {
            Some(Reach::Reachable)
        } else if self.up.len() == self.endpoints().len() {
            Some(Reach::Unreachable)
        } else {
            self.reach
        };
        self.report_reach(reach);
    }

    /// Idle connections to every endpoint but `active`.
    pub(super) fn probe(&mut self, active: Option<Endpoint>) {
        if self.rtu.standby == Standby::Cold {
            return;
        }
        let all: Vec<(Endpoint, String)> = self
            .endpoints()
            .into_iter()
            .filter(|at| Some(*at) != active)
            .map(|at| (at, self.endpoint(at)))
            .collect();
        let timeout = Duration::from_millis(*self.rtu.timeout_ms.get_ref());
        self.probes.round(&all, timeout, self.source, &mut self.up);
    }

    pub(super) fn endpoints(&self) -> Vec<Endpoint> {
        reach::endpoints(&self.rtu)
    }

    pub(super) fn endpoint(&self, at: Endpoint) -> String {
        reach::endpoint(&self.rtu, at)
    }

    pub(super) fn report_reach(&mut self, reach: Option<Reach>) {
        self.reach = reach;
        reach::report(&self.field.reports, &self.rtu, reach, &self.up);
    }

    /// The changes the readings make, as the owner reports them. While a connection is
    /// still `resending` (no spontaneous report it sent was new yet), a spontaneous report the
    /// log already has (the same point, device time tag and value) is dropped: that is what a
    /// device sends again to a new owner. An indication the device sent spontaneously is
    /// always an event; a change of quality is an event for anything but a counter; other
    /// values are events as for Modbus.
    pub(super) fn changes(&mut self, readings: Vec<Reading>, resending: &mut bool) -> Vec<Change> {
        let now = Cluster::now_ms();
        let mut changes = Vec::with_capacity(readings.len());
        for r in readings {
            let Some(point) = self.monitored.get(&r.point) else {
                continue;
            };
            let key = r
                .device_time_ms
                .filter(|_| r.spontaneous)
                .map(|t| (r.point.clone(), t, value_key(&r.value)));
            if let Some(key) = &key {
                if *resending && self.seen.contains(key) {
                    metrics::counter!("fepha_iec104_repeated_reports_total", "rtu" => self.id().to_owned())
                        .increment(1);
                    continue;
                }
                *resending = false;
            }
            let last = self.last.get(&r.point).copied();
            let kind = *point.kind.get_ref();
            let indication = kind.is_indication();
            let event = match last {
                _ if indication && r.spontaneous => Some(true),
                Some((_, q, _)) if q != r.quality => Some(kind != PointKind::Counter),
                _ => decode::change(point, last.as_ref().map(|(v, _, _)| v), &r.value),
            };
            let Some(mut event) = event else { continue };
            let time_ms = r.device_time_ms.unwrap_or(now);
            if indication && r.spontaneous {
                self.interrogated.reported(&r.point);
            } else if indication && event && last.is_some_and(|(_, q, _)| q == r.quality) {
                // Its spontaneous report may still be on the way (see `interrogated`).
                self.interrogated
                    .hold(&r.point, Instant::now(), r.value, r.quality, time_ms);
                event = false;
            }
            self.last
                .insert(r.point.clone(), (r.value, r.quality, time_ms));
            if let Some(key) = key
                && event
            {
                self.remember(key);
            }
            changes.push(Change {
                point: r.point,
                value: r.value,
                quality: r.quality,
                time_ms,
                event,
            });
        }
        changes
    }

    /// The held interrogation events that are due (all of them with `all`).
    pub(super) async fn send_interrogated(&mut self, epoch: u64, all: bool) {
        let last = &self.last;
        let due = self
            .interrogated
            .due(Instant::now(), all, |p| last.get(p).map(|(v, _, _)| *v));
        if !due.is_empty() {
            self.batcher.send(self.batch(epoch, due)).await;
        }
    }

    /// No link to the device: every point keeps its value, marked invalid and not topical;
    /// a point the device never reported stays as it is (never read: invalid upstream).
    async fn link_down(&mut self, epoch: u64) {
        let now = Cluster::now_ms();
        let mut changes = Vec::new();
        for (id, point) in &self.monitored {
            let Some((value, quality, _)) = self.last.get(id).copied() else {
                continue;
            };
            if quality == Quality::LINK_DOWN {
                continue;
            }
            self.last
                .insert(id.clone(), (value, Quality::LINK_DOWN, now));
            changes.push(Change {
                point: id.clone(),
                value,
                quality: Quality::LINK_DOWN,
                time_ms: now,
                event: point.kind.get_ref().is_indication(),
            });
        }
        if !changes.is_empty() {
            self.batcher.send(self.batch(epoch, changes)).await;
        }
    }

    pub(super) fn batch(&self, epoch: u64, changes: Vec<Change>) -> crate::state::points::Batch {
        crate::state::points::Batch {
            rtu: self.id().to_owned(),
            epoch,
            node: self.field.cluster.id(),
            changes,
            write: None,
        }
    }
}
