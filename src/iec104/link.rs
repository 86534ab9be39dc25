//! One IEC 60870-5-104 connection, from either end, as a sans-IO state machine in the manner
//! of stepfunc's dnp3 and rodbus link layers: the controlled station (the forwarder serving
//! SCADA masters) or the controlling station (104 acquisition, polling a device).
//!
//! The link owns no socket, task or clock. The caller:
//!
//! - hands it received bytes with [`Link::on_bytes`] (or decoded APDUs with
//!   [`Link::on_apdu`]),
//! - asks [`Link::next_deadline`] when to call [`Link::on_timer`] next,
//! - sends ASDUs with [`Link::send_asdu`] while [`Link::can_send`],
//! - after every call drains the bytes to write with [`Link::take_output`] and the events
//!   with [`Link::poll_event`].
//!
//! Every call takes `now`; the link never reads a clock itself, so tests drive it with a
//! base [`Instant`] plus durations.
//!
//! As the controlled station ([`Link::new`]), starting data transfer is the owner's
//! decision: a STARTDT act from the master becomes [`LinkEvent::StartRequested`], and only
//! [`Link::confirm_start`] answers it (the forwarder confirms only while its node leads).
//! Unconfirmed, the master's STARTDT simply stays unanswered.
//!
//! As the controlling station ([`Link::controlling`]), [`Link::start`] and [`Link::stop`]
//! send STARTDT and STOPDT act, and a confirmation that does not come within t1 closes the
//! link. Received I frames are acknowledged only as far as [`Link::release`] allows: the
//! owner releases them once the changes they carried are committed, so a device resends to
//! the next owner whatever this one had not made safe (acknowledge after commit). w and t2
//! count from the release, not the receipt.
//!
//! Acknowledgements of sent I frames come out as [`LinkEvent::Acknowledged`] with the
//! number of newly acknowledged frames; frames are acknowledged in send order, so the
//! caller maps them to what it sent by counting.
//!
//! Once closed ([`LinkEvent::Closed`]) the link ignores every further call; output queued
//! before the close can still be drained.

use std::collections::VecDeque;
use std::time::Instant;

use thiserror::Error;

use super::{ApciError, Apdu, EncodeError, IFrame, MAX_APDU_LEN, SeqNo, UFunction, decode_apdu};

use super::{LinkParams, ParamError};

/// The data-transfer state of an open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Connected, data transfer not started (or stopped again).
    Stopped,
    /// STARTDT confirmed: I frames flow both ways.
    Started,
    /// STOPDT act received while sent I frames were unacknowledged: STOPDT con follows
    /// their acknowledgement.
    Stopping,
}

/// What the master did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum ProtocolError {
    #[error("unframeable bytes: {0}")]
    Apci(#[from] ApciError),
    #[error("I frame N(S) = {got}, expected {expected}")]
    BadSendSeq { expected: u16, got: u16 },
    #[error("N(R) = {got} outside the window {ack_base}..={send_seq}")]
    BadRecvSeq {
        got: u16,
        ack_base: u16,
        send_seq: u16,
    },
    #[error("I frame received while data transfer is not started")]
    IFrameBeforeStart,
}

/// Why the link closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum CloseReason {
    /// A sent I frame or TESTFR act went unanswered for t1.
    #[error("t1 expired")]
    T1,
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The owner called [`Link::close`].
    #[error("closed locally")]
    Local,
}

/// What the link reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkEvent {
    /// The master sent STARTDT act; answer it with [`Link::confirm_start`] or not at all.
    StartRequested,
    /// STARTDT con was sent.
    Started,
    /// STOPDT con was sent.
    Stopped,
    /// The ASDU of a received I frame, undecoded.
    Asdu(Vec<u8>),
    /// This many more of the sent I frames were acknowledged, oldest first.
    Acknowledged(u16),
    /// The connection is over; the caller should close the socket after writing any
    /// remaining output.
    Closed(CloseReason),
}

/// Why [`Link::send_asdu`] refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum SendError {
    #[error("data transfer is not started")]
    NotStarted,
    #[error("k unacknowledged I frames are outstanding")]
    WindowFull,
    #[error("the link is closed")]
    Closed,
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Which end of the connection a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The server: answers the master's STARTDT/STOPDT, acknowledges on receipt.
    Controlled,
    /// The client: sends STARTDT/STOPDT, acknowledges what the owner released.
    Controlling,
}

/// The state machine of one connection.
#[derive(Debug)]
pub(crate) struct Link {
    role: Role,
    params: LinkParams,
    state: LinkState,
    closed: Option<CloseReason>,
    /// N(S) of the next I frame to send.
    send_seq: SeqNo,
    /// N(S) of the oldest unacknowledged sent I frame (== `send_seq` when none).
    ack_base: SeqNo,
    /// Send times of the unacknowledged sent I frames, oldest first.
    unacked: VecDeque<Instant>,
    /// N(S) expected in the next received I frame.
    recv_seq: SeqNo,
    /// The N(R) this link may send: every received frame before it was released (at once
    /// for the controlled station, by [`Link::release`] for the controlling one).
    released: SeqNo,
    /// Released I frames not yet acknowledged by us.
    recv_unacked: u16,
    t2_deadline: Option<Instant>,
    /// t1 deadline of our TESTFR act, if one is outstanding.
    test_deadline: Option<Instant>,
    /// Our STARTDT or STOPDT act awaiting its confirmation, and its t1 deadline.
    pending: Option<(UFunction, Instant)>,
    last_received: Instant,
    start_requested: bool,
    rx_buf: Vec<u8>,
    output: Vec<u8>,
    events: VecDeque<LinkEvent>,
    sent_i: u64,
    received_i: u64,
    acked: u64,
}

impl Link {
    /// A freshly connected link of the controlled station, in [`LinkState::Stopped`].
    pub(crate) fn new(params: LinkParams, now: Instant) -> Result<Link, ParamError> {
        Link::with_role(Role::Controlled, params, now)
    }

    fn with_role(role: Role, params: LinkParams, now: Instant) -> Result<Link, ParamError> {
        params.validate()?;
        Ok(Link {
            role,
            params,
            state: LinkState::Stopped,
            closed: None,
            send_seq: SeqNo::ZERO,
            ack_base: SeqNo::ZERO,
            unacked: VecDeque::new(),
            recv_seq: SeqNo::ZERO,
            released: SeqNo::ZERO,
            recv_unacked: 0,
            t2_deadline: None,
            test_deadline: None,
            pending: None,
            last_received: now,
            start_requested: false,
            rx_buf: Vec::with_capacity(2 * MAX_APDU_LEN),
            output: Vec::new(),
            events: VecDeque::new(),
            sent_i: 0,
            received_i: 0,
            acked: 0,
        })
    }

    /// A link whose sequence numbers start at `send` and `recv`, to test the wrap.
    #[cfg(test)]
    fn with_sequence(
        params: LinkParams,
        now: Instant,
        send: SeqNo,
        recv: SeqNo,
    ) -> Result<Link, ParamError> {
        let mut link = Link::new(params, now)?;
        link.send_seq = send;
        link.ack_base = send;
        link.recv_seq = recv;
        link.released = recv;
        Ok(link)
    }

    pub(crate) fn params(&self) -> &LinkParams {
        &self.params
    }

    pub(crate) fn state(&self) -> LinkState {
        self.state
    }

    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// I frames sent so far.
    pub(crate) fn sent_i_frames(&self) -> u64 {
        self.sent_i
    }

    /// I frames received (and accepted) so far.
    pub(crate) fn received_i_frames(&self) -> u64 {
        self.received_i
    }

    /// Sent I frames acknowledged so far; the first `acked_count()` sent frames are done.
    #[cfg(test)]
    pub(crate) fn acked_count(&self) -> u64 {
        self.acked
    }

    /// Sent I frames awaiting acknowledgement (counted against k).
    pub(crate) fn unacked_count(&self) -> u16 {
        // At most k <= 32767 entries.
        u16::try_from(self.unacked.len()).unwrap_or(u16::MAX)
    }

    /// Whether [`Link::send_asdu`] would accept an ASDU now.
    pub(crate) fn can_send(&self) -> bool {
        self.closed.is_none()
            && self.state == LinkState::Started
            && self.unacked.len() < usize::from(self.params.k)
    }

    /// Appends the bytes to write to `out`.
    pub(crate) fn take_output(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.output);
    }

    /// The next event, oldest first.
    pub(crate) fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// Closes the link on the owner's behalf.
    pub(crate) fn close(&mut self) {
        self.shut(CloseReason::Local);
    }

    /// Received bytes, in any chunking. The receive buffer never holds more than two
    /// APDUs' worth: input is taken in chunks and decoded as it comes.
    pub(crate) fn on_bytes(&mut self, mut bytes: &[u8], now: Instant) {
        while !bytes.is_empty() && self.closed.is_none() {
            let room = (2 * MAX_APDU_LEN).saturating_sub(self.rx_buf.len());
            let (chunk, rest) = bytes.split_at(room.min(bytes.len()));
            self.rx_buf.extend_from_slice(chunk);
            bytes = rest;
            let mut used = 0;
            while self.closed.is_none() {
                match decode_apdu(self.rx_buf.get(used..).unwrap_or_default()) {
                    Ok(Some((apdu, len))) => {
                        used += len;
                        self.on_apdu(apdu, now);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.shut(ProtocolError::Apci(e).into());
                        break;
                    }
                }
            }
            // After the loop at most one partial APDU (< MAX_APDU_LEN) is left, so the
            // next chunk has room for at least one APDU.
            self.rx_buf.drain(..used.min(self.rx_buf.len()));
        }
        if self.closed.is_some() {
            self.rx_buf.clear();
        }
    }

    /// One received APDU.
    pub(crate) fn on_apdu(&mut self, apdu: Apdu, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        self.last_received = now;
        match apdu {
            Apdu::I(frame) => self.on_i_frame(frame, now),
            Apdu::S { recv_seq } => {
                self.on_ack(recv_seq);
            }
            Apdu::U(function) => self.on_u(function),
        }
    }

    /// Confirms a requested STARTDT: sends STARTDT con and enters [`LinkState::Started`].
    /// Returns `false` (and does nothing) if no STARTDT act is waiting for an answer.
    pub(crate) fn confirm_start(&mut self, _now: Instant) -> bool {
        if self.closed.is_some() || !self.start_requested {
            return false;
        }
        self.start_requested = false;
        self.send_u(UFunction::StartDtCon);
        self.state = LinkState::Started;
        self.events.push_back(LinkEvent::Started);
        true
    }

    fn released_more(&mut self, n: u16, now: Instant) {
        // Both below 32768, so the sum fits.
        self.released = SeqNo::wrapping(self.released.value() + n);
        self.recv_unacked = self.recv_unacked.saturating_add(n);
        if self.recv_unacked >= self.params.w {
            self.send_s();
        } else if self.t2_deadline.is_none() {
            self.t2_deadline = Some(now + self.params.t2);
        }
    }

    /// Sends one ASDU (already encoded) in an I frame.
    pub(crate) fn send_asdu(&mut self, asdu: Vec<u8>, now: Instant) -> Result<(), SendError> {
        if self.closed.is_some() {
            return Err(SendError::Closed);
        }
        if self.state != LinkState::Started {
            return Err(SendError::NotStarted);
        }
        if self.unacked.len() >= usize::from(self.params.k) {
            return Err(SendError::WindowFull);
        }
        let frame = Apdu::I(IFrame {
            send_seq: self.send_seq,
            recv_seq: self.released,
            asdu,
        });
        frame.encode(&mut self.output)?;
        self.send_seq = self.send_seq.next();
        self.unacked.push_back(now);
        self.sent_i += 1;
        // The I frame acknowledges everything released.
        self.recv_unacked = 0;
        self.t2_deadline = None;
        Ok(())
    }

    /// When [`Link::on_timer`] should be called next; `None` when closed.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let t1 = self.unacked.front().map(|sent| *sent + self.params.t1);
        let t3 = match self.test_deadline {
            Some(_) => None,
            None => Some(self.last_received + self.params.t3),
        };
        let pending = self.pending.map(|(_, deadline)| deadline);
        [t1, self.test_deadline, self.t2_deadline, t3, pending]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the timers that are due at `now`.
    pub(crate) fn on_timer(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        let i_expired = self
            .unacked
            .front()
            .is_some_and(|sent| *sent + self.params.t1 <= now);
        let test_expired = self.test_deadline.is_some_and(|d| d <= now);
        let act_expired = self.pending.is_some_and(|(_, d)| d <= now);
        if i_expired || test_expired || act_expired {
            self.shut(CloseReason::T1);
            return;
        }
        if self.t2_deadline.is_some_and(|d| d <= now) {
            self.send_s();
        }
        if self.test_deadline.is_none() && self.last_received + self.params.t3 <= now {
            self.send_u(UFunction::TestFrAct);
            self.test_deadline = Some(now + self.params.t1);
        }
    }

    fn on_i_frame(&mut self, frame: IFrame, now: Instant) {
        if self.state == LinkState::Stopped {
            self.shut(ProtocolError::IFrameBeforeStart.into());
            return;
        }
        if frame.send_seq != self.recv_seq {
            self.shut(
                ProtocolError::BadSendSeq {
                    expected: self.recv_seq.value(),
                    got: frame.send_seq.value(),
                }
                .into(),
            );
            return;
        }
        if !self.on_ack(frame.recv_seq) {
            return;
        }
        self.recv_seq = self.recv_seq.next();
        self.received_i += 1;
        self.events.push_back(LinkEvent::Asdu(frame.asdu));
        if self.role == Role::Controlled {
            self.released_more(1, now);
        }
    }

    /// Checks and applies a received N(R); `false` if it closed the link.
    fn on_ack(&mut self, recv_seq: SeqNo) -> bool {
        let newly = self.ack_base.distance_to(recv_seq);
        if newly > self.ack_base.distance_to(self.send_seq) {
            self.shut(
                ProtocolError::BadRecvSeq {
                    got: recv_seq.value(),
                    ack_base: self.ack_base.value(),
                    send_seq: self.send_seq.value(),
                }
                .into(),
            );
            return false;
        }
        if newly > 0 {
            self.unacked
                .drain(..usize::from(newly).min(self.unacked.len()));
            self.ack_base = recv_seq;
            self.acked += u64::from(newly);
            self.events.push_back(LinkEvent::Acknowledged(newly));
        }
        if self.state == LinkState::Stopping && self.unacked.is_empty() {
            self.finish_stop();
        }
        true
    }

    fn on_u(&mut self, function: UFunction) {
        if self.role == Role::Controlling {
            return self.on_u_controlling(function);
        }
        match function {
            UFunction::StartDtAct => {
                self.start_requested = true;
                self.events.push_back(LinkEvent::StartRequested);
            }
            UFunction::StopDtAct => {
                self.start_requested = false;
                if self.unacked.is_empty() {
                    self.finish_stop();
                } else {
                    self.state = LinkState::Stopping;
                }
            }
            UFunction::TestFrAct => self.send_u(UFunction::TestFrCon),
            UFunction::TestFrCon => self.test_deadline = None,
            // Confirmations of acts a controlled station never sends: ignored.
            UFunction::StartDtCon | UFunction::StopDtCon => {}
        }
    }

    fn on_u_controlling(&mut self, function: UFunction) {
        let pending = self.pending.map(|(f, _)| f);
        match function {
            UFunction::StartDtCon if pending == Some(UFunction::StartDtAct) => {
                self.pending = None;
                self.state = LinkState::Started;
                self.events.push_back(LinkEvent::Started);
            }
            UFunction::StopDtCon if pending == Some(UFunction::StopDtAct) => {
                self.pending = None;
                self.state = LinkState::Stopped;
                self.events.push_back(LinkEvent::Stopped);
            }
            UFunction::TestFrAct => self.send_u(UFunction::TestFrCon),
            UFunction::TestFrCon => self.test_deadline = None,
            // Acts only a master sends, and confirmations of acts not made: ignored.
            UFunction::StartDtAct
            | UFunction::StopDtAct
            | UFunction::StartDtCon
            | UFunction::StopDtCon => {}
        }
    }

    /// Acknowledges what was received, sends STOPDT con, enters Stopped.
    fn finish_stop(&mut self) {
        if self.recv_unacked > 0 {
            self.send_s();
        }
        self.send_u(UFunction::StopDtCon);
        self.state = LinkState::Stopped;
        self.events.push_back(LinkEvent::Stopped);
    }

    fn send_s(&mut self) {
        self.push_frame(&Apdu::S {
            recv_seq: self.released,
        });
        self.recv_unacked = 0;
        self.t2_deadline = None;
    }

    fn send_u(&mut self, function: UFunction) {
        self.push_frame(&Apdu::U(function));
    }

    fn push_frame(&mut self, apdu: &Apdu) {
        // S and U frames always encode.
        if apdu.encode(&mut self.output).is_err() {
            debug_assert!(false, "S/U frame failed to encode");
        }
    }

    fn shut(&mut self, reason: CloseReason) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(reason);
        self.t2_deadline = None;
        self.test_deadline = None;
        self.pending = None;
        self.events.push_back(LinkEvent::Closed(reason));
    }
}

/// The controlling station's own calls.
impl Link {
    /// A freshly connected link of the controlling station, in [`LinkState::Stopped`];
    /// [`Link::start`] asks the device to start data transfer.
    pub(crate) fn controlling(params: LinkParams, now: Instant) -> Result<Link, ParamError> {
        Link::with_role(Role::Controlling, params, now)
    }

    /// Received I frames the owner has not released yet (controlling station).
    pub(crate) fn unreleased_count(&self) -> u16 {
        self.released.distance_to(self.recv_seq)
    }

    /// Controlling station: sends STARTDT act. Returns `false` (and does nothing) unless the
    /// link is open, stopped and has no act of its own waiting for a confirmation.
    pub(crate) fn start(&mut self, now: Instant) -> bool {
        self.act(UFunction::StartDtAct, LinkState::Stopped, now)
    }

    /// Controlling station: sends STOPDT act; the device answers once it has had its sent
    /// frames acknowledged. Returns `false` unless data transfer is started and no act of
    /// this link's is waiting.
    pub(crate) fn stop(&mut self, now: Instant) -> bool {
        if self.may_act(LinkState::Started) && self.recv_unacked > 0 {
            self.send_s();
        }
        self.act(UFunction::StopDtAct, LinkState::Started, now)
    }

    fn may_act(&self, from: LinkState) -> bool {
        self.role == Role::Controlling
            && self.closed.is_none()
            && self.state == from
            && self.pending.is_none()
    }

    fn act(&mut self, function: UFunction, from: LinkState, now: Instant) -> bool {
        if !self.may_act(from) {
            return false;
        }
        self.send_u(function);
        self.pending = Some((function, now + self.params.t1));
        true
    }

    /// Controlling station: the oldest `frames` received I frames that were not released yet
    /// are committed and may be acknowledged (at most those received).
    pub(crate) fn release(&mut self, frames: u16, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        let n = frames.min(self.unreleased_count());
        if n > 0 {
            self.released_more(n, now);
        }
    }
}

#[cfg(test)]
mod controlling_tests;
#[cfg(test)]
mod tests;
