//! The IEC 104 link state machine, either station, driven by a script decoded from the input:
//! raw byte chunks, frames from a peer that mostly keeps to the protocol (so that the
//! script gets past STARTDT and the sequence checks), time passing with `on_timer`, and the
//! owner's calls. After every step the harness drains the output and the events and checks
//! them against its own count of the connection:
//!
//! - the output is whole, valid APDUs; I frames only come from an accepted `send_asdu`,
//!   numbered 0, 1, 2, ... in send order; each station sends only its own acts and
//!   confirmations;
//! - every N(R) the link sends is monotone and never acknowledges a frame it did not
//!   receive (controlled station) or the owner did not release (controlling station), and
//!   fewer than w released frames are ever left unacknowledged;
//! - `Acknowledged` counts add up to what the link says is acknowledged, never more than
//!   was sent; `sent_i_frames`, `received_i_frames`, `unacked_count` (<= k),
//!   `unreleased_count` and `can_send` agree with the harness;
//! - after `on_timer(now)` an open link has no I frame older than t1 and its next deadline
//!   is after `now`;
//! - `Closed` comes at most once, and after it nothing: no output, no event, no deadline,
//!   no send.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Input;
use crate::iec104::link::{Link, LinkEvent, LinkState, Role, SendError};
use crate::iec104::{Apdu, IFrame, LinkParams, MAX_ASDU_LEN, SeqNo, UFunction, decode_apdu};

pub fn iec104_link(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(mut harness) = Harness::new(&mut input) else {
        return;
    };
    while let Some(op) = input.u8() {
        if harness.step(op, &mut input).is_none() {
            break;
        }
    }
}

/// What one step did, for the checks that follow it.
#[derive(Default)]
struct Step {
    /// I frames the owner had accepted by `send_asdu` in this step.
    sends: u64,
    /// `confirm_start` returned true.
    confirmed: bool,
    /// `start` or `stop` returned true: the act is in this step's output.
    act: Option<UFunction>,
    /// The step ran the timers at `now`.
    timer: bool,
    /// The owner closed the link.
    closed_locally: bool,
}

struct Harness {
    link: Link,
    role: Role,
    params: LinkParams,
    now: Instant,
    /// `Closed` was seen.
    closed: bool,
    /// I frames the link sent, as seen in its output.
    sent: u64,
    /// Their send times, for those not acknowledged yet.
    unacked: VecDeque<Instant>,
    /// Sum of the `Acknowledged` events.
    acked: u64,
    /// `Asdu` events seen.
    received: u64,
    /// Received frames the link may acknowledge (all received ones for the controlled
    /// station, those given to `release` for the controlling one).
    released: u64,
    /// The highest N(R) the link has sent, counted without the wrap.
    acked_by_us: u64,
}

impl Harness {
    fn new(input: &mut Input<'_>) -> Option<Harness> {
        let role = if input.u8()? & 1 == 0 {
            Role::Controlled
        } else {
            Role::Controlling
        };
        // Small windows and timers, so that short scripts fill the window and expire them.
        let k = 1 + u16::from(input.u8()? % 16);
        let w = 1 + u16::from(input.u8()?) % k;
        let t1_ms = 1 + u64::from(input.u8()?) * 100;
        let t2_ms = u64::from(input.u16()?) % t1_ms;
        let t3_ms = u64::from(input.u16()?);
        let params = LinkParams {
            k,
            w,
            t1: Duration::from_millis(t1_ms),
            t2: Duration::from_millis(t2_ms),
            t3: Duration::from_millis(t3_ms),
        };
        let now = Instant::now();
        let link = match role {
            Role::Controlled => Link::new(params, now),
            Role::Controlling => Link::controlling(params, now),
        };
        let link = link.unwrap_or_else(|e| panic!("valid params {params:?} refused: {e}"));
        Some(Harness {
            link,
            role,
            params,
            now,
            closed: false,
            sent: 0,
            unacked: VecDeque::new(),
            acked: 0,
            received: 0,
            released: 0,
            acked_by_us: 0,
        })
    }

    /// One operation of the script and the checks after it; `None` when the input ran out.
    fn step(&mut self, op: u8, input: &mut Input<'_>) -> Option<()> {
        let mut step = Step::default();
        let now = self.now;
        match op % 13 {
            0 => {
                let n = usize::from(input.u8()?);
                let bytes = input.bytes(n)?;
                self.link.on_bytes(bytes, now);
            }
            1 => {
                let frame = self.peer_i_frame(input, 0)?;
                let bytes = encode(&frame);
                // In two chunks, anywhere: the link must reassemble.
                let at = usize::from(input.u8()?) % (bytes.len() + 1);
                let (a, b) = bytes.split_at(at);
                self.link.on_bytes(a, now);
                self.link.on_bytes(b, now);
            }
            2 => {
                let recv_seq = self.peer_recv_seq(input)?;
                self.link.on_bytes(&encode(&Apdu::S { recv_seq }), now);
            }
            3 => {
                let function = UFunction::ALL[usize::from(input.u8()?) % UFunction::ALL.len()];
                self.link.on_bytes(&encode(&Apdu::U(function)), now);
            }
            4 => {
                let ms = u64::from(input.u16()?);
                self.now += Duration::from_millis(ms);
                self.link.on_timer(self.now);
                step.timer = true;
            }
            5 => {
                if let Some(deadline) = self.link.next_deadline() {
                    self.now = self.now.max(deadline);
                }
                self.link.on_timer(self.now);
                step.timer = true;
            }
            6 => {
                step.confirmed = self.link.confirm_start(now);
                assert!(
                    !step.confirmed || (!self.closed && self.role == Role::Controlled),
                    "confirm_start accepted on a closed or controlling link"
                );
            }
            7 => self.send(input, &mut step)?,
            8 => {
                if self.link.start(now) {
                    step.act = Some(UFunction::StartDtAct);
                }
            }
            9 => {
                if self.link.stop(now) {
                    step.act = Some(UFunction::StopDtAct);
                }
            }
            10 => {
                let frames = input.u16()?;
                let unreleased = self.link.unreleased_count();
                self.link.release(frames, now);
                if !self.closed {
                    self.released += u64::from(frames.min(unreleased));
                }
            }
            11 => {
                self.link.close();
                step.closed_locally = true;
            }
            _ => {
                // A burst of frames in one read, to fill w at once.
                let n = input.u8()? % 32;
                let mut bytes = Vec::new();
                for ahead in 0..u64::from(n) {
                    let frame = self.peer_i_frame(input, ahead)?;
                    bytes.extend(encode(&frame));
                }
                self.link.on_bytes(&bytes, now);
            }
        }
        self.check(&step);
        Some(())
    }

    fn send(&mut self, input: &mut Input<'_>, step: &mut Step) -> Option<()> {
        let len = usize::from(input.u8()?);
        let mut asdu = input.bytes(len).unwrap_or_default().to_vec();
        asdu.resize(len, 0);
        let could = self.link.can_send();
        let result = self.link.send_asdu(asdu, self.now);
        match (&result, could) {
            (Ok(()), true) => step.sends += 1,
            (Err(SendError::Encode(_)), true) => {
                assert!(!(1..=MAX_ASDU_LEN).contains(&len), "{len} octets refused");
            }
            (Err(SendError::Closed), false) => assert!(self.closed, "Closed before Closed"),
            (Err(SendError::NotStarted | SendError::WindowFull), false) => {}
            _ => panic!("can_send() was {could} and send_asdu said {result:?}"),
        }
        assert!(
            self.closed == matches!(result, Err(SendError::Closed)),
            "send_asdu said {result:?} with the link closed: {}",
            self.closed
        );
        Some(())
    }

    /// An I frame from the peer, `ahead` frames after the next one the link expects: in
    /// sequence with a valid N(R), unless the input says otherwise.
    fn peer_i_frame(&mut self, input: &mut Input<'_>, ahead: u64) -> Option<Apdu> {
        let choice = input.u8()?;
        let send_seq = if choice == 0xFF {
            SeqNo::wrapping(input.u16()?)
        } else {
            wrapped(self.received + ahead)
        };
        let recv_seq = self.peer_recv_seq(input)?;
        let len = 1 + usize::from(input.u8()? % 16);
        Some(Apdu::I(IFrame {
            send_seq,
            recv_seq,
            asdu: vec![choice; len],
        }))
    }

    /// An N(R) the peer might send: one within the window of unacknowledged sent frames
    /// unless the input asks for any number.
    fn peer_recv_seq(&mut self, input: &mut Input<'_>) -> Option<SeqNo> {
        let choice = input.u8()?;
        if choice == 0xFF {
            return Some(SeqNo::wrapping(input.u16()?));
        }
        let unacked = self.sent - self.acked;
        Some(wrapped(self.acked + u64::from(choice) % (unacked + 1)))
    }

    fn check(&mut self, step: &Step) {
        let was_closed = self.closed;
        // Events first: the N(R)s in the output may acknowledge frames received in this
        // step, and no step both receives and sends I frames.
        while let Some(event) = self.link.poll_event() {
            assert!(!self.closed, "event after Closed: {event:?}");
            self.check_event(&event, step);
        }
        let mut out = Vec::new();
        self.link.take_output(&mut out);
        assert!(
            !was_closed || out.is_empty(),
            "output after Closed: {out:?}"
        );
        self.check_output(&out, step);
        if step.closed_locally {
            assert!(self.closed, "close() did not close");
        }
        self.check_counts();
        if self.closed {
            assert_eq!(self.link.next_deadline(), None, "a deadline after Closed");
            assert!(!self.link.can_send(), "can_send after Closed");
            return;
        }
        if step.timer {
            let deadline = self.link.next_deadline();
            assert!(
                deadline.is_some_and(|d| d > self.now),
                "open after on_timer with deadline {:?} at {:?}",
                deadline.map(|d| d - self.now),
                self.now
            );
            if let Some(oldest) = self.unacked.front() {
                assert!(
                    *oldest + self.params.t1 > self.now,
                    "an I frame unacknowledged for t1 and the link still open"
                );
            }
        }
    }

    fn check_output(&mut self, out: &[u8], step: &Step) {
        let mut rest = out;
        let mut sends = 0;
        let mut act_seen = false;
        while !rest.is_empty() {
            let (apdu, used) = match decode_apdu(rest) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => panic!("the link wrote a partial APDU: {rest:?}"),
                Err(e) => panic!("the link wrote an invalid APDU: {e}: {rest:?}"),
            };
            rest = rest.get(used..).unwrap_or_default();
            match apdu {
                Apdu::I(frame) => {
                    assert_eq!(frame.send_seq, wrapped(self.sent), "N(S) out of order");
                    self.sent += 1;
                    sends += 1;
                    self.unacked.push_back(self.now);
                    self.our_recv_seq(frame.recv_seq);
                }
                Apdu::S { recv_seq } => self.our_recv_seq(recv_seq),
                Apdu::U(function) => {
                    let ours = match self.role {
                        Role::Controlled => {
                            !matches!(function, UFunction::StartDtAct | UFunction::StopDtAct)
                        }
                        Role::Controlling => {
                            !matches!(function, UFunction::StartDtCon | UFunction::StopDtCon)
                        }
                    };
                    assert!(ours, "{:?} station sent {function:?}", self.role);
                    if function == UFunction::StartDtCon {
                        assert!(step.confirmed, "STARTDT con without confirm_start");
                    }
                    if matches!(function, UFunction::StartDtAct | UFunction::StopDtAct) {
                        assert_eq!(step.act, Some(function), "an act not asked for");
                        act_seen = true;
                    }
                }
            }
        }
        assert_eq!(sends, step.sends, "I frames sent vs send_asdu accepted");
        assert_eq!(act_seen, step.act.is_some(), "start/stop said true: no act");
    }

    /// An N(R) the link sent: monotone, and never past what it may acknowledge.
    fn our_recv_seq(&mut self, recv_seq: SeqNo) {
        let more = wrapped(self.acked_by_us).distance_to(recv_seq);
        self.acked_by_us += u64::from(more);
        let may = match self.role {
            Role::Controlled => self.received,
            Role::Controlling => self.released,
        };
        assert!(
            self.acked_by_us <= may,
            "N(R) {} acknowledges {} frames, only {may} may be",
            recv_seq.value(),
            self.acked_by_us
        );
    }

    fn check_event(&mut self, event: &LinkEvent, step: &Step) {
        match event {
            LinkEvent::StartRequested => {
                assert_eq!(self.role, Role::Controlled, "StartRequested");
            }
            LinkEvent::Started => {
                if self.role == Role::Controlled {
                    assert!(step.confirmed, "Started without confirm_start");
                }
            }
            LinkEvent::Stopped => {}
            LinkEvent::Asdu(asdu) => {
                assert!((1..=MAX_ASDU_LEN).contains(&asdu.len()), "{asdu:?}");
                self.received += 1;
                if self.role == Role::Controlled {
                    self.released += 1;
                }
            }
            LinkEvent::Acknowledged(n) => {
                assert!(*n > 0, "Acknowledged(0)");
                self.acked += u64::from(*n);
                assert!(
                    self.acked <= self.sent,
                    "{} acknowledged of {} sent",
                    self.acked,
                    self.sent
                );
                self.unacked.drain(..usize::from(*n));
            }
            LinkEvent::Closed(reason) => {
                assert!(!self.closed, "Closed twice: {reason}");
                self.closed = true;
            }
        }
    }

    fn check_counts(&self) {
        assert_eq!(self.link.sent_i_frames(), self.sent, "sent_i_frames");
        assert_eq!(self.link.received_i_frames(), self.received, "received");
        let unacked = self.sent - self.acked;
        assert_eq!(u64::from(self.link.unacked_count()), unacked, "unacked");
        assert!(unacked <= u64::from(self.params.k), "{unacked} > k");
        if self.closed {
            return;
        }
        assert_eq!(
            u64::from(self.link.unreleased_count()),
            self.received - self.released,
            "unreleased_count"
        );
        let pending_ack = self.released - self.acked_by_us;
        assert!(
            pending_ack < u64::from(self.params.w),
            "{pending_ack} released frames unacknowledged, w = {}",
            self.params.w
        );
        let can_send =
            self.link.state() == LinkState::Started && unacked < u64::from(self.params.k);
        assert_eq!(self.link.can_send(), can_send, "can_send");
    }
}

/// A count of frames as a sequence number.
fn wrapped(count: u64) -> SeqNo {
    // The remainder is below 32768.
    SeqNo::wrapping((count % u64::from(SeqNo::MODULUS)) as u16)
}

fn encode(apdu: &Apdu) -> Vec<u8> {
    let mut out = Vec::new();
    // The harness builds only frames with 1..=16 octet ASDUs, which always encode.
    if let Err(e) = apdu.encode(&mut out) {
        panic!("the harness built an unencodable frame: {e}");
    }
    out
}
