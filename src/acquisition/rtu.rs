//! One RTU on one node. As its owner (a lease in the applied state and a live lease clock)
//! the node polls it and executes its commands; otherwise it stands by as the RTU's standby
//! mode says. Either way it keeps a link state per channel and endpoint, which goes to the
//! leader with every session renewal.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::batch::Batcher;
use super::link::{LinkError, Session};
use super::probe::{Endpoint, Probes};
use super::reach;
use super::reads::{self, Image, Read};
use super::{Field, decode};
use crate::cluster::Cluster;
use crate::shutdown::Shutdown;
use crate::site::{Point, Rtu, Standby};
use crate::state::CommandRefusal;
use crate::state::commands::CommandOp;
use crate::state::ownership::Reach;
use crate::state::points::{Batch, Change, Quality, Value};

pub(crate) struct RtuTask {
    field: Arc<Field>,
    rtu: Rtu,
    /// Points that are read, and points that are commanded.
    monitored: Vec<Point>,
    commanded: Vec<Point>,
    reads: Vec<Read>,
    batcher: Batcher,
    source: Option<IpAddr>,
    session: Option<(Endpoint, Session)>,
    probes: Probes,
    up: BTreeMap<Endpoint, bool>,
    reach: Option<Reach>,
    /// The last value and quality reported per point, as the owner.
    last: HashMap<String, (Value, Quality)>,
    /// The epoch this node is polling under, if it owns the RTU.
    owned: Option<u64>,
}

impl RtuTask {
    pub(crate) fn new(
        field: Arc<Field>,
        rtu: Rtu,
        points: Vec<Point>,
        batcher: Batcher,
    ) -> RtuTask {
        let (commanded, monitored): (Vec<Point>, Vec<Point>) = points
            .into_iter()
            .partition(|p| p.kind.get_ref().is_command());
        let reads = reads::plan(&monitored.iter().collect::<Vec<_>>());
        let source = field.source_ip;
        RtuTask {
            field,
            rtu,
            monitored,
            commanded,
            reads,
            batcher,
            source,
            session: None,
            probes: Probes::default(),
            up: BTreeMap::new(),
            reach: None,
            last: HashMap::new(),
            owned: None,
        }
    }

    fn id(&self) -> &str {
        self.rtu.id.get_ref()
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(*self.rtu.timeout_ms.get_ref())
    }

    /// Polls (or stands by) until `stop`. A command it has started is finished first: the
    /// task only stops between steps, never while it has a command on the device.
    pub(crate) async fn run(mut self, stop: Shutdown) {
        let poll = Duration::from_millis((*self.rtu.poll_interval_ms.get_ref()).max(10));
        let mut changes = self.field.cluster.raft().metrics();
        let mut next_poll = Instant::now();
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
            if let Some(epoch) = epoch {
                self.run_commands(epoch, &stop).await;
            }
            if Instant::now() >= next_poll {
                // A round that overran its interval starts the next one at once, not in a
                // burst of catch-up rounds.
                next_poll = (next_poll + poll).max(Instant::now());
                self.round(epoch).await;
                metrics::counter!("fepha_acquisition_rounds_total", "rtu" => self.id().to_owned())
                    .increment(1);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next_poll) => {}
                r = changes.changed() => if r.is_err() { break },
                _ = &mut stopped => break,
            }
        }
        tracing::info!(rtu = %self.id(), "acquisition task stopped");
    }

    /// See [`lease`].
    fn lease(&self) -> Option<u64> {
        lease(&self.field, self.id())
    }

    fn may_io(&self, epoch: Option<u64>) -> bool {
        match epoch {
            Some(e) => self.lease() == Some(e),
            // A hot standby reads only.
            None => self.rtu.standby == Standby::Hot,
        }
    }

    fn switch(&mut self, epoch: Option<u64>) {
        tracing::info!(rtu = %self.id(), ?epoch, "ownership changed");
        self.owned = epoch;
        self.last.clear();
        if epoch.is_none() {
            if self.rtu.standby != Standby::Hot {
                self.session = None;
            }
            return;
        }
        // Start from what the cluster has, so that a take-over reports only real changes.
        let ids: Vec<String> = self
            .monitored
            .iter()
            .map(|p| p.id.get_ref().clone())
            .collect();
        self.last = self.field.cluster.read(|s| {
            ids.iter()
                .filter_map(|id| {
                    s.points
                        .points
                        .get(id)
                        .map(|p| (id.clone(), (p.value, p.quality)))
                })
                .collect()
        });
    }

    async fn round(&mut self, epoch: Option<u64>) {
        let polls = epoch.is_some() || self.rtu.standby == Standby::Hot;
        let reach = if polls {
            let started = Instant::now();
            let reach = self.poll(epoch).await;
            if epoch.is_some() {
                metrics::histogram!("fepha_poll_duration_seconds", "rtu" => self.id().to_owned())
                    .record(started.elapsed().as_secs_f64());
            }
            reach
        } else {
            self.session = None;
            None
        };
        if self.rtu.standby != Standby::Cold {
            self.probe();
        } else {
            self.probes.clear();
            if epoch.is_none() {
                self.up.clear();
            }
        }
        self.reach = match reach {
            // The owner's word is its poll; a standby's is whether anything answers.
            Some(r) if epoch.is_some() => Some(r),
            _ if self.rtu.standby == Standby::Cold && epoch.is_none() => None,
            _ => {
                if self.up.values().any(|u| *u) {
                    Some(Reach::Reachable)
                } else if self.up.len() == self.endpoints().len() {
                    Some(Reach::Unreachable)
                } else {
                    self.reach
                }
            }
        };
        self.report();
    }

    /// One poll round: the open session first, then every endpoint of every channel in
    /// order; a failed endpoint moves on at once. Returns whether any endpoint answered.
    async fn poll(&mut self, epoch: Option<u64>) -> Option<Reach> {
        let mut order = self.endpoints();
        if let Some((at, _)) = &self.session {
            let at = *at;
            order.retain(|e| *e != at);
            order.insert(0, at);
        }
        for at in order {
            if !self.may_io(epoch) {
                return None;
            }
            match self.read_all(at, epoch).await {
                Ok(image) => {
                    self.up.insert(at, true);
                    if let Some(epoch) = epoch {
                        self.changes(&image, epoch).await;
                    }
                    return Some(Reach::Reachable);
                }
                // The lease ran out between two reads (no request was left on the wire):
                // that says nothing about the link, so nothing goes down or invalid.
                Err(_) if !self.may_io(epoch) => return None,
                Err(e) => {
                    // Said once per endpoint going down, not every round.
                    if self.up.get(&at) != Some(&false) {
                        tracing::warn!(rtu = %self.id(), endpoint = %self.endpoint(at), owner = epoch.is_some(), "poll failed: {e}");
                    }
                    metrics::counter!("fepha_acquisition_failures_total", "rtu" => self.id().to_owned())
                        .increment(1);
                    metrics::counter!("fepha_poll_errors_total", "rtu" => self.id().to_owned(), "kind" => e.kind())
                        .increment(1);
                    self.up.insert(at, false);
                    self.session = None;
                }
            }
        }
        if let Some(epoch) = epoch {
            self.link_down(epoch).await;
        }
        Some(Reach::Unreachable)
    }

    fn endpoints(&self) -> Vec<Endpoint> {
        reach::endpoints(&self.rtu)
    }

    fn endpoint(&self, at: Endpoint) -> String {
        reach::endpoint(&self.rtu, at)
    }

    async fn open(&mut self, at: Endpoint) -> Result<(), LinkError> {
        if self.session.as_ref().is_some_and(|(a, _)| *a == at) {
            return Ok(());
        }
        self.session = None;
        // The standby's idle connection to this endpoint makes way for the real one.
        self.probes.remove(at);
        let endpoint = self.endpoint(at);
        let session =
            Session::open(&endpoint, self.source, self.rtu.unit_id, self.timeout()).await?;
        self.session = Some((at, session));
        Ok(())
    }

    async fn read_all(&mut self, at: Endpoint, epoch: Option<u64>) -> Result<Image, LinkError> {
        self.open(at).await?;
        let mut image = Image::default();
        for read in self.reads.clone() {
            if !self.may_io(epoch) {
                return Err(LinkError::Timeout("lease"));
            }
            let Some((at, mut session)) = self.session.take() else {
                return Err(LinkError::Timeout("session"));
            };
            let answer = match epoch {
                Some(epoch) => {
                    within_lease(
                        &self.field,
                        self.rtu.id.get_ref(),
                        epoch,
                        session.read(read),
                    )
                    .await
                }
                None => session.read(read).await,
            };
            // Any other answer leaves the link in doubt: it is dropped at once, abortively
            // (see `link`), with whatever request the kernel may still hold.
            if matches!(answer, Ok(_) | Err(LinkError::Exception(_))) {
                self.session = Some((at, session));
            }
            match answer {
                Ok(data) => image.insert(read, data),
                // The link works; these addresses do not. Their points go invalid below.
                Err(LinkError::Exception(code)) => {
                    tracing::warn!(rtu = %self.id(), ?read, "the device refused a read: {code}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(image)
    }

    async fn changes(&mut self, image: &Image, epoch: u64) {
        let now = Cluster::now_ms();
        let mut changes = Vec::new();
        for p in &self.monitored {
            let id = p.id.get_ref();
            let last = self.last.get(id).copied();
            let (value, quality) = match decode::decode(p, image) {
                Ok(v) => (v, Quality::GOOD),
                Err(e) => {
                    let Some((v, _)) = last else { continue };
                    tracing::debug!(point = %id, "cannot decode: {e}");
                    (v, Quality::INVALID)
                }
            };
            let event = match last {
                Some((_, q)) if q != quality => Some(p.kind.get_ref().is_indication()),
                _ => decode::change(p, last.as_ref().map(|(v, _)| v), &value),
            };
            let Some(event) = event else { continue };
            self.last.insert(id.clone(), (value, quality));
            changes.push(Change {
                point: id.clone(),
                value,
                quality,
                time_ms: now,
                event,
            });
        }
        self.send(epoch, changes).await;
    }

    /// Every channel failed: the points keep their values, marked invalid and not topical.
    async fn link_down(&mut self, epoch: u64) {
        let now = Cluster::now_ms();
        let mut changes = Vec::new();
        for p in &self.monitored {
            let id = p.id.get_ref();
            let Some((value, quality)) = self.last.get(id).copied() else {
                continue;
            };
            if quality == Quality::LINK_DOWN {
                continue;
            }
            self.last.insert(id.clone(), (value, Quality::LINK_DOWN));
            changes.push(Change {
                point: id.clone(),
                value,
                quality: Quality::LINK_DOWN,
                time_ms: now,
                event: p.kind.get_ref().is_indication(),
            });
        }
        self.send(epoch, changes).await;
    }

    // `&mut self` only because a shared borrow held across an await would need the Modbus
    // context to be Sync, which it is not.
    async fn send(&mut self, epoch: u64, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let batch = Batch {
            rtu: self.id().to_owned(),
            epoch,
            node: self.field.cluster.id(),
            changes,
            write: None,
        };
        self.batcher.send(batch).await;
    }

    /// Connections that send nothing, to every endpoint the session does not use: a standby
    /// learns what it could reach, and the owner what its other channels would give it (for a
    /// `cold` RTU neither: such a device may take one connection only).
    fn probe(&mut self) {
        let active = self.session.as_ref().map(|(at, _)| *at);
        let all: Vec<(Endpoint, String)> = self
            .endpoints()
            .into_iter()
            .filter(|at| Some(*at) != active)
            .map(|at| (at, self.endpoint(at)))
            .collect();
        let timeout = self.timeout();
        self.probes.round(&all, timeout, self.source, &mut self.up);
    }

    fn report(&self) {
        reach::report(&self.field.reports, &self.rtu, self.reach, &self.up);
    }

    /// Starts, executes and finishes this RTU's pending commands, each at most once. Once
    /// `stop` is triggered no new one is started; one already started is finished.
    async fn run_commands(&mut self, epoch: u64, stop: &Shutdown) {
        let id = self.id().to_owned();
        let pending: Vec<(u64, String, Value)> = self.field.cluster.read(|s| {
            s.commands
                .pending_for(&id)
                .map(|c| (c.id, c.point.clone(), c.value))
                .collect()
        });
        for (command, point, value) in pending {
            if stop.is_triggered() {
                return;
            }
            let start = CommandOp::Start {
                id: command,
                node: self.field.cluster.id(),
                epoch,
            };
            match self.command_write(start).await {
                Some(Ok(_)) => {}
                // Cancelled, or started by someone else: not ours to run.
                _ => continue,
            }
            let outcome = self.execute(epoch, &point, &value).await;
            tracing::info!(rtu = %id, %point, %value, ?outcome, "command executed");
            metrics::counter!("fepha_commands_total", "outcome" => if outcome.is_ok() { "done" } else { "failed" })
                .increment(1);
            let finish = CommandOp::Finish {
                id: command,
                epoch,
                outcome,
            };
            // The outcome must reach the log; a failed write is retried a few times.
            for _ in 0..5 {
                if self.command_write(finish.clone()).await.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    async fn execute(&mut self, epoch: u64, point: &str, value: &Value) -> Result<(), String> {
        let p = self
            .commanded
            .iter()
            .find(|p| p.id.get_ref() == point)
            .ok_or_else(|| format!("{point} is not a command point of this RTU"))?;
        let write = super::command::encode(p, value).map_err(|e| e.to_string())?;
        let order: Vec<Endpoint> = match &self.session {
            Some((at, _)) => vec![*at],
            None => self.endpoints(),
        };
        let mut last_error = String::from("the RTU has no endpoint");
        for at in order {
            if !self.may_io(Some(epoch)) {
                return Err("the lease ran out before the command was sent".into());
            }
            if let Err(e) = self.open(at).await {
                last_error = e.to_string();
                continue;
            }
            let Some((at, mut session)) = self.session.take() else {
                continue;
            };
            // Sent once: a write that fails after it may have reached the device is not
            // repeated on another channel. Its link is dropped (abortively, see `link`).
            let answer = within_lease(
                &self.field,
                self.rtu.id.get_ref(),
                epoch,
                session.write(&write),
            )
            .await;
            if answer.is_ok() {
                self.session = Some((at, session));
            }
            return answer.map_err(|e| match e {
                LinkError::Timeout("lease") => "the lease ran out before the device answered; \
                                                whether it executed the command is unknown"
                    .into(),
                e => e.to_string(),
            });
        }
        Err(last_error)
    }

    async fn command_write(&mut self, op: CommandOp) -> Option<Result<u64, CommandRefusal>> {
        match self.field.cluster.command_op(op).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::debug!("command progress not written: {e}");
                None
            }
        }
    }
}

/// The epoch under which this node may do field I/O with `rtu` now, if any: the applied
/// state names it owner, and its own lease clock has not run out.
fn lease(field: &Field, rtu: &str) -> Option<u64> {
    let me = field.cluster.id();
    let epoch = field.cluster.read(|s| {
        s.ownership
            .leases
            .get(rtu)
            .filter(|l| l.owner == me)
            .map(|l| l.epoch)
    })?;
    field.own.valid().then_some(epoch)
}

/// A request as the owner of `rtu` under `epoch`, given up when the lease runs out, or the
/// applied state takes the RTU away, before the answer comes. The caller then drops the
/// link, and with it the request, should the kernel still hold it for retransmission (a
/// partition): nothing of this owner's reaches the device after its lease, when the next
/// owner may already be at it.
async fn within_lease<T>(
    field: &Field,
    rtu: &str,
    epoch: u64,
    request: impl Future<Output = Result<T, LinkError>>,
) -> Result<T, LinkError> {
    tokio::pin!(request);
    // The lease is asked again before every poll of the request, not only before its first:
    // a request can be pending before its bytes are written (a full socket, tokio's
    // cooperative budget), and a node paused there (SIGSTOP, a stalled VM) must not write
    // them once it wakes past its deadline, whichever branch below is polled first.
    let request = std::future::poll_fn(|cx| {
        if lease(field, rtu) != Some(epoch) {
            return std::task::Poll::Ready(Err(LinkError::Timeout("lease")));
        }
        request.as_mut().poll(cx)
    });
    tokio::pin!(request);
    let mut applied = field.cluster.raft().metrics();
    loop {
        if lease(field, rtu) != Some(epoch) {
            return Err(LinkError::Timeout("lease"));
        }
        let Some(deadline) = field.own.update(|c| c.deadline()) else {
            return Err(LinkError::Timeout("lease"));
        };
        tokio::select! {
            answer = &mut request => return answer,
            // A renewal may have moved the deadline on meanwhile: asked again above.
            () = tokio::time::sleep_until(Instant::from_std(deadline)) => {}
            changed = applied.changed() => if changed.is_err() {
                return Err(LinkError::Timeout("lease"));
            },
        }
    }
}
