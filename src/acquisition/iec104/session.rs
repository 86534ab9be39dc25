//! The owner's started connection to one endpoint of a 104 RTU: connect within t0, STARTDT,
//! interrogate, then take what the device sends until the link fails, the lease goes or the
//! task stops. Received I frames are acknowledged only once the changes they carried are
//! committed (unless `ack_after_commit` is off), and nothing is written to the socket once
//! the lease is not this node's any more: a woken owner closes without a word.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::points::{Commanded, Unmapped};
use super::task::Task;
use crate::acquisition::link;
use crate::acquisition::probe::Endpoint;
use crate::iec104::link::{Link, LinkEvent};
use crate::iec104::{
    Asdu, AsduError, Cause, CounterQualifier, Cp56Time2a, Element, FreezeMode, QOI_STATION,
};
use crate::shutdown::Shutdown;
use crate::state::CommandRefusal;
use crate::state::commands::CommandOp;
use crate::state::ownership::Reach;
use crate::state::points::Value;

/// Why a connection ended that should not have.
#[derive(Debug)]
pub(super) struct Failure {
    /// Data transfer had been started on it.
    pub started: bool,
    /// The `kind` label of `fepha_poll_errors_total`.
    pub kind: &'static str,
    pub why: String,
}

/// Received frames in arrival order, each run with the commit that releases it.
type Awaiting = VecDeque<(u16, Option<oneshot::Receiver<bool>>)>;

/// A command on the device.
struct Inflight {
    id: u64,
    point: String,
    value: Value,
    commanded: Commanded,
    stage: Stage,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The select was sent; its ACTCON is awaited.
    Selecting,
    /// The execute was sent; its ACTCON is awaited.
    Executing,
    /// Confirmed; its ACTTERM is awaited.
    Terminating,
}

/// What the session loop woke for.
enum Wake {
    Read(std::io::Result<usize>),
    Committed(bool),
    Tick,
    Stop,
    /// The state machine is gone: the node is going down.
    Gone,
}

impl Task {
    /// Serves one endpoint. `Ok` when the task stops or the lease goes; `Err` when the link
    /// fails (the next endpoint is tried).
    pub(super) async fn serve(
        &mut self,
        at: Endpoint,
        epoch: u64,
        stop: &Shutdown,
    ) -> Result<(), Failure> {
        let fail = |started, kind, why: String| Failure { started, kind, why };
        let t0 = self.spec.t0().unwrap_or(Duration::from_secs(30));
        self.probes.remove(at);
        let endpoint = self.endpoint(at);
        let stream = link::connect(&endpoint, self.source, t0)
            .await
            .map_err(|e| fail(false, "connect", e.to_string()))?;
        let (mut rd, mut wr) = stream.into_split();
        let now = std::time::Instant::now();
        let mut link = Link::controlling(self.params, now)
            .map_err(|e| fail(false, "config", e.to_string()))?;
        link.start(now);
        let mut started = false;
        // Until the device sends something new, what it sends may be a resend (see changes).
        let mut resending = true;
        let mut awaiting: Awaiting = VecDeque::new();
        let mut inflight: Option<Inflight> = None;
        let mut next_gi: Option<Instant> = None;
        let mut next_ci: Option<Instant> = None;
        let mut next_clock: Option<Instant> = None;
        let mut next_probe = Instant::now();
        let mut changes = self.field.cluster.raft().metrics();
        let stopped = stop.clone().wait();
        tokio::pin!(stopped);
        let mut buf = vec![0u8; 4096];
        let mut out = Vec::new();
        let mut rx_log = self.spec.decode.frame_log();
        self.tx_log = self.spec.decode.frame_log();
        loop {
            if !self.may_io(epoch) {
                return Ok(());
            }
            if stop.is_triggered() && inflight.is_none() {
                // Stopping while still the owner: the device hears it (STOPDT act), and what
                // was not acknowledged it sends again to the next owner.
                if link.stop(std::time::Instant::now()) {
                    let _ = self.flush(&mut link, &mut wr, &mut out).await;
                }
                return Ok(());
            }
            if let Err(e) = self.flush(&mut link, &mut wr, &mut out).await {
                return Err(fail(started, "io", e.to_string()));
            }
            let deadline = [
                link.next_deadline().map(Instant::from_std),
                next_gi,
                next_ci,
                next_clock,
                Some(next_probe),
                inflight.as_ref().map(|c| c.deadline),
                self.interrogated.next_due(),
                self.field
                    .own
                    .update(|c| c.deadline())
                    .map(Instant::from_std),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            let wake = tokio::select! {
                r = rd.read(&mut buf) => Wake::Read(r),
                ok = front(&mut awaiting) => Wake::Committed(ok),
                _ = tokio::time::sleep_until(deadline) => Wake::Tick,
                r = changes.changed() => if r.is_err() { Wake::Gone } else { Wake::Tick },
                _ = &mut stopped, if inflight.is_none() => Wake::Stop,
            };
            let now = std::time::Instant::now();
            // After a pause (SIGSTOP, a stall) the lease may be gone: nothing more is sent.
            if !self.may_io(epoch) {
                return Ok(());
            }
            match wake {
                Wake::Stop => continue,
                Wake::Gone => return Ok(()),
                Wake::Read(Ok(0)) => {
                    return Err(fail(started, "closed", "the device closed".into()));
                }
                Wake::Read(Err(e)) => return Err(fail(started, "io", e.to_string())),
                Wake::Read(Ok(n)) => {
                    let bytes = buf.get(..n).unwrap_or_default();
                    if let Some(log) = &mut rx_log {
                        for line in log.feed(bytes) {
                            tracing::info!(target: "fepha::iec104::frames", rtu = %self.id(), %endpoint, "<- {line}");
                        }
                    }
                    link.on_bytes(bytes, now);
                }
                Wake::Committed(true) => {
                    if let Some((frames, _)) = awaiting.pop_front() {
                        link.release(frames, now);
                    }
                }
                Wake::Committed(false) => {
                    // Refused (the lease went) or never written: not acknowledged, so the
                    // device sends it again to whoever owns the RTU next.
                    return Ok(());
                }
                Wake::Tick => {}
            }
            release_ready(&mut awaiting, &mut link, now);
            if link
                .next_deadline()
                .is_some_and(|d| d <= std::time::Instant::now())
            {
                link.on_timer(now);
            }
            let mut frames = 0u16;
            let mut readings = Vec::new();
            // Answers to our own requests, taken once the data that came before them is
            // committed: a command's feedback reaches the log before its outcome.
            let mut answers = Vec::new();
            while let Some(event) = link.poll_event() {
                match event {
                    LinkEvent::Started => {
                        started = true;
                        self.up.insert(at, true);
                        self.report_reach(Some(Reach::Reachable));
                        tracing::info!(rtu = %self.id(), %endpoint, "104 data transfer started");
                        self.interrogate(&mut link, now);
                        let soon = Instant::now();
                        next_gi = self.spec.gi_period().ok().flatten().map(|p| soon + p);
                        next_ci = self.spec.counter_period().ok().flatten().map(|_| soon);
                        next_clock = self.spec.clock_sync_period().ok().flatten().map(|_| soon);
                    }
                    LinkEvent::Asdu(bytes) => {
                        frames += 1;
                        metrics::counter!("fepha_iec104c_asdus_received_total", "rtu" => self.id().to_owned())
                            .increment(1);
                        match Asdu::decode(&bytes) {
                            Ok(asdu) => {
                                let (r, unmapped) = self.map.read(&asdu);
                                readings.extend(r);
                                self.unmapped(&asdu, unmapped);
                                if is_answer(&asdu) {
                                    answers.push(asdu);
                                }
                            }
                            Err(e) => self.undecodable(&e),
                        }
                    }
                    LinkEvent::Closed(reason) => {
                        metrics::counter!("fepha_iec104c_link_closed_total", "rtu" => self.id().to_owned(), "reason" => reason_label(&reason))
                            .increment(1);
                        if let Some(c) = inflight.take() {
                            self.finish(c, epoch, Err("the link to the device was lost".into()))
                                .await;
                        }
                        return Err(fail(started, reason_label(&reason), reason.to_string()));
                    }
                    LinkEvent::StartRequested | LinkEvent::Stopped | LinkEvent::Acknowledged(_) => {
                    }
                }
            }
            if frames > 0 {
                let changes = self.changes(readings, &mut resending);
                let commit = if changes.is_empty() {
                    None
                } else if !answers.is_empty() {
                    let batch = self.batch(epoch, changes);
                    if !self
                        .batcher
                        .send_committed(batch)
                        .await
                        .await
                        .unwrap_or(false)
                    {
                        return Ok(());
                    }
                    None
                } else if self.spec.ack_after_commit {
                    let batch = self.batch(epoch, changes);
                    Some(self.batcher.send_committed(batch).await)
                } else {
                    self.batcher.send(self.batch(epoch, changes)).await;
                    None
                };
                awaiting.push_back((frames, commit));
                release_ready(&mut awaiting, &mut link, now);
            }
            for asdu in answers {
                if let Err(e) = self
                    .on_asdu(&asdu, epoch, &mut inflight, &mut link, now)
                    .await
                {
                    return Err(fail(started, "protocol", e));
                }
            }
            self.send_interrogated(epoch, false).await;
            let tick = Instant::now();
            if started {
                if next_gi.is_some_and(|t| t <= tick) {
                    self.interrogate(&mut link, now);
                    next_gi = self.spec.gi_period().ok().flatten().map(|p| tick + p);
                }
                if next_ci.is_some_and(|t| t <= tick) {
                    self.counter_interrogate(&mut link, now);
                    next_ci = self.spec.counter_period().ok().flatten().map(|p| tick + p);
                }
                if next_clock.is_some_and(|t| t <= tick) {
                    self.clock_sync(&mut link, now);
                    next_clock = self
                        .spec
                        .clock_sync_period()
                        .ok()
                        .flatten()
                        .map(|p| tick + p);
                }
                if inflight.as_ref().is_some_and(|c| c.deadline <= tick)
                    && let Some(c) = inflight.take()
                {
                    let outcome = match c.stage {
                        // ACTTERM is optional (lib60870 sends none for a direct execute):
                        // the device confirmed it, so it is done.
                        Stage::Terminating => {
                            tracing::info!(rtu = %self.id(), point = %c.point, "confirmed; the device sent no ACTTERM");
                            Ok(())
                        }
                        _ => Err("the device did not confirm in time".into()),
                    };
                    self.finish(c, epoch, outcome).await;
                }
                if inflight.is_none() && !stop.is_triggered() {
                    inflight = self.next_command(epoch, &mut link, now).await;
                }
            }
            if next_probe <= tick {
                self.probe(Some(at));
                next_probe = tick + Duration::from_millis(*self.rtu.poll_interval_ms.get_ref());
            }
        }
    }

    /// Writes what the link has queued, if the lease still allows it.
    async fn flush(
        &mut self,
        link: &mut Link,
        wr: &mut OwnedWriteHalf,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        out.clear();
        link.take_output(out);
        if out.is_empty() {
            return Ok(());
        }
        if self.lease().is_none() {
            return Ok(());
        }
        if let Some(log) = &mut self.tx_log {
            for line in log.feed(out) {
                tracing::info!(target: "fepha::iec104::frames", rtu = %self.rtu.id.get_ref(), "-> {line}");
            }
        }
        wr.write_all(out).await
    }

    fn send(&self, link: &mut Link, asdu: &Asdu, now: std::time::Instant) {
        let mut bytes = Vec::new();
        if let Err(e) = asdu.encode(&mut bytes) {
            tracing::error!(rtu = %self.id(), "cannot encode {asdu:?}: {e}");
            return;
        }
        if let Err(e) = link.send_asdu(bytes, now) {
            tracing::warn!(rtu = %self.id(), "cannot send {}: {e}", asdu.type_id);
        }
    }

    fn originated(&self, mut asdu: Asdu) -> Asdu {
        asdu.originator = self.spec.originator;
        asdu
    }

    /// A station interrogation of every common address the RTU's points use.
    fn interrogate(&self, link: &mut Link, now: std::time::Instant) {
        for ca in self.map.common_addresses() {
            let gi = Asdu::single(
                Cause::ACTIVATION,
                ca,
                0,
                Element::Interrogation { qoi: QOI_STATION },
            );
            self.send(link, &self.originated(gi), now);
        }
    }

    fn counter_interrogate(&self, link: &mut Link, now: std::time::Instant) {
        for ca in self.map.common_addresses() {
            let ci = Asdu::single(
                Cause::ACTIVATION,
                ca,
                0,
                Element::CounterInterrogation(CounterQualifier {
                    request: 5,
                    freeze: FreezeMode::Read,
                }),
            );
            self.send(link, &self.originated(ci), now);
        }
    }

    fn clock_sync(&self, link: &mut Link, now: std::time::Instant) {
        let ms = i64::try_from(crate::cluster::Cluster::now_ms()).unwrap_or(i64::MAX);
        let Ok(time) = Cp56Time2a::from_unix_ms(ms) else {
            tracing::warn!(rtu = %self.id(), "this node's clock cannot be sent as CP56Time2a");
            return;
        };
        for ca in self.map.common_addresses() {
            let cs = Asdu::single(Cause::ACTIVATION, ca, 0, Element::ClockSync(time));
            self.send(link, &self.originated(cs), now);
        }
    }

    /// Confirmations of this node's own requests: a command's, or a negative answer to an
    /// interrogation (logged; the link stays).
    async fn on_asdu(
        &mut self,
        asdu: &Asdu,
        epoch: u64,
        inflight: &mut Option<Inflight>,
        link: &mut Link,
        now: std::time::Instant,
    ) -> Result<(), String> {
        let Some(c) = inflight.as_mut().filter(|c| c.commanded.answered_by(asdu)) else {
            if asdu.negative {
                tracing::warn!(rtu = %self.id(), "the device refused {} (cause {})", asdu.type_id, asdu.cause.value());
            }
            return Ok(());
        };
        let negative = asdu.negative || asdu.cause.value() >= Cause::UNKNOWN_TYPE.value();
        let stage = c.stage;
        match (stage, asdu.cause) {
            (_, _) if negative => {
                let why = format!(
                    "the device refused it ({} cause {})",
                    if stage == Stage::Terminating {
                        "ACTTERM"
                    } else {
                        "ACTCON"
                    },
                    asdu.cause.value()
                );
                if let Some(c) = inflight.take() {
                    self.finish(c, epoch, Err(why)).await;
                }
            }
            (Stage::Selecting, Cause::ACTIVATION_CON) => {
                match c.commanded.asdu(&c.value, false, self.spec.originator) {
                    Ok(execute) => {
                        self.send(link, &execute, now);
                        c.stage = Stage::Executing;
                        c.deadline = Instant::now() + self.spec.command_timeout();
                    }
                    Err(e) => {
                        if let Some(c) = inflight.take() {
                            self.finish(c, epoch, Err(e.to_string())).await;
                        }
                    }
                }
            }
            (Stage::Executing, Cause::ACTIVATION_CON) => {
                c.stage = Stage::Terminating;
                let confirm = CommandOp::Confirm { id: c.id, epoch };
                self.command_write(confirm).await;
            }
            (Stage::Executing | Stage::Terminating, Cause::ACTIVATION_TERMINATION) => {
                if let Some(c) = inflight.take() {
                    if stage == Stage::Executing {
                        // ACTTERM without ACTCON: the device did it all the same.
                        let confirm = CommandOp::Confirm { id: c.id, epoch };
                        self.command_write(confirm).await;
                    }
                    self.finish(c, epoch, Ok(())).await;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Starts the next pending command of this RTU (marked executing in the log before the
    /// device sees it, so it runs at most once) and sends its first ASDU.
    async fn next_command(
        &mut self,
        epoch: u64,
        link: &mut Link,
        now: std::time::Instant,
    ) -> Option<Inflight> {
        let id = self.id().to_owned();
        let next = self.field.cluster.read(|s| {
            s.commands
                .pending_for(&id)
                .next()
                .map(|c| (c.id, c.point.clone(), c.value, c.select))
        });
        let (command, point, value, select) = next?;
        let start = CommandOp::Start {
            id: command,
            node: self.field.cluster.id(),
            epoch,
        };
        match self.command_write(start).await {
            Some(Ok(_)) => {}
            _ => return None,
        }
        let failed = |why: String| (why, command, point.clone(), value);
        let first = match self.map.command(&point) {
            None => Err(failed(format!(
                "{point} is not a command point of this RTU"
            ))),
            Some(c) => c
                .asdu(&value, select, self.spec.originator)
                .map(|a| (a, c.clone()))
                .map_err(|e| failed(e.to_string())),
        };
        match first {
            Ok((asdu, commanded)) => {
                if !self.may_io(epoch) {
                    let outcome = CommandOp::Finish {
                        id: command,
                        epoch,
                        outcome: Err("the lease ran out before the command was sent".into()),
                    };
                    self.command_write(outcome).await;
                    return None;
                }
                self.send(link, &asdu, now);
                tracing::info!(rtu = %id, %point, %value, select, "command sent to the device");
                Some(Inflight {
                    id: command,
                    point,
                    value,
                    commanded,
                    stage: if select {
                        Stage::Selecting
                    } else {
                        Stage::Executing
                    },
                    deadline: Instant::now() + self.spec.command_timeout(),
                })
            }
            Err((why, id, _, _)) => {
                let outcome = CommandOp::Finish {
                    id,
                    epoch,
                    outcome: Err(why),
                };
                self.command_write(outcome).await;
                None
            }
        }
    }

    async fn finish(&mut self, c: Inflight, epoch: u64, outcome: Result<(), String>) {
        tracing::info!(rtu = %self.id(), point = %c.point, value = %c.value, ?outcome, "command executed");
        metrics::counter!("fepha_commands_total", "outcome" => if outcome.is_ok() { "done" } else { "failed" })
            .increment(1);
        let finish = CommandOp::Finish {
            id: c.id,
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

    async fn command_write(&mut self, op: CommandOp) -> Option<Result<u64, CommandRefusal>> {
        match self.field.cluster.command_op(op).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::debug!("command progress not written: {e}");
                None
            }
        }
    }

    fn unmapped(&self, asdu: &Asdu, unmapped: Vec<Unmapped>) {
        let monitoring = asdu.type_id.code() < 45;
        for u in unmapped {
            match u {
                Unmapped::Unknown { type_id, ca, ioa } if monitoring => {
                    metrics::counter!("fepha_iec104c_unknown_objects_total", "rtu" => self.id().to_owned())
                        .increment(1);
                    tracing::debug!(rtu = %self.id(), "no point for {type_id} IOA {ioa} at common address {ca}");
                }
                Unmapped::Unknown { .. } => {}
                Unmapped::BadValue { point } => {
                    tracing::warn!(rtu = %self.id(), %point, "the device sent a value the point cannot hold");
                }
            }
        }
    }

    fn undecodable(&self, e: &AsduError) {
        metrics::counter!("fepha_iec104c_undecodable_asdus_total", "rtu" => self.id().to_owned())
            .increment(1);
        tracing::warn!(rtu = %self.id(), "an ASDU from the device does not decode: {e}");
    }
}

/// Whether the ASDU answers a request of ours (a confirmation, a termination, a refusal).
fn is_answer(asdu: &Asdu) -> bool {
    asdu.cause == Cause::ACTIVATION_CON
        || asdu.cause == Cause::ACTIVATION_TERMINATION
        || asdu.cause.value() >= Cause::UNKNOWN_TYPE.value()
}

/// Waits for the oldest commit; never resolves while there is none to wait for.
async fn front(awaiting: &mut Awaiting) -> bool {
    match awaiting.front_mut() {
        Some((_, Some(rx))) => rx.await.unwrap_or(false),
        _ => std::future::pending().await,
    }
}

/// Releases, oldest first, the frames that wait for no commit.
fn release_ready(awaiting: &mut Awaiting, link: &mut Link, now: std::time::Instant) {
    while let Some((frames, None)) = awaiting.front() {
        link.release(*frames, now);
        awaiting.pop_front();
    }
}

fn reason_label(reason: &crate::iec104::link::CloseReason) -> &'static str {
    use crate::iec104::link::CloseReason;
    match reason {
        CloseReason::T1 => "t1",
        CloseReason::Protocol(_) => "protocol",
        CloseReason::Local => "local",
    }
}
