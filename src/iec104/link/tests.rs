use std::time::{Duration, Instant};

use super::*;

pub(super) const ASDU: [u8; 3] = [1, 2, 3];

pub(super) fn seq(n: u16) -> SeqNo {
    SeqNo::wrapping(n)
}

pub(super) fn bytes(apdu: &Apdu) -> Vec<u8> {
    let mut out = Vec::new();
    apdu.encode(&mut out).expect("encodes");
    out
}

pub(super) fn u(f: UFunction) -> Vec<u8> {
    bytes(&Apdu::U(f))
}

pub(super) fn s(nr: u16) -> Vec<u8> {
    bytes(&Apdu::S { recv_seq: seq(nr) })
}

pub(super) fn i(ns: u16, nr: u16) -> Vec<u8> {
    bytes(&Apdu::I(IFrame {
        send_seq: seq(ns),
        recv_seq: seq(nr),
        asdu: ASDU.to_vec(),
    }))
}

/// Everything the link wrote, decoded.
pub(super) fn written(link: &mut Link) -> Vec<Apdu> {
    let mut buf = Vec::new();
    link.take_output(&mut buf);
    let mut apdus = Vec::new();
    let mut at = 0;
    while let Some((apdu, len)) = decode_apdu(&buf[at..]).expect("link writes valid APDUs") {
        apdus.push(apdu);
        at += len;
    }
    assert_eq!(at, buf.len());
    apdus
}

pub(super) fn events(link: &mut Link) -> Vec<LinkEvent> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

pub(super) fn closed_with(link: &mut Link) -> Option<CloseReason> {
    events(link).into_iter().find_map(|e| match e {
        LinkEvent::Closed(r) => Some(r),
        _ => None,
    })
}

fn started_with(params: LinkParams, send: u16, recv: u16) -> (Link, Instant) {
    let t0 = Instant::now();
    let mut link = Link::with_sequence(params, t0, seq(send), seq(recv)).expect("valid params");
    link.on_bytes(&u(UFunction::StartDtAct), t0);
    assert!(link.confirm_start(t0));
    assert_eq!(written(&mut link), [Apdu::U(UFunction::StartDtCon)]);
    assert_eq!(
        events(&mut link),
        [LinkEvent::StartRequested, LinkEvent::Started]
    );
    (link, t0)
}

fn started() -> (Link, Instant) {
    started_with(LinkParams::default(), 0, 0)
}

#[test]
fn params_are_validated() {
    assert_eq!(LinkParams::default().validate(), Ok(()));
    let bad_k = LinkParams {
        k: 0,
        ..LinkParams::default()
    };
    assert_eq!(bad_k.validate(), Err(ParamError::K(0)));
    let big_k = LinkParams {
        k: 32768,
        ..LinkParams::default()
    };
    assert!(big_k.validate().is_err());
    let bad_w = LinkParams {
        w: 13,
        ..LinkParams::default()
    };
    assert!(bad_w.validate().is_err());
    // w > 2k/3 is only advice.
    let loose_w = LinkParams {
        w: 12,
        ..LinkParams::default()
    };
    assert_eq!(loose_w.validate(), Ok(()));
    let bad_t2 = LinkParams {
        t2: Duration::from_secs(15),
        ..LinkParams::default()
    };
    assert!(Link::new(bad_t2, Instant::now()).is_err());
}

#[test]
fn start_is_confirmed_only_by_the_owner() {
    let t0 = Instant::now();
    let mut link = Link::new(LinkParams::default(), t0).expect("valid");
    assert!(!link.confirm_start(t0), "nothing requested yet");
    link.on_bytes(&u(UFunction::StartDtAct), t0);
    assert_eq!(events(&mut link), [LinkEvent::StartRequested]);
    // The owner does not confirm: nothing is written, the link stays stopped.
    assert!(written(&mut link).is_empty());
    assert_eq!(link.state(), LinkState::Stopped);
    assert_eq!(
        link.send_asdu(ASDU.to_vec(), t0),
        Err(SendError::NotStarted)
    );
    // Later it does.
    assert!(link.confirm_start(t0));
    assert_eq!(written(&mut link), [Apdu::U(UFunction::StartDtCon)]);
    assert_eq!(events(&mut link), [LinkEvent::Started]);
    assert_eq!(link.state(), LinkState::Started);
    assert!(!link.confirm_start(t0), "already answered");
}

#[test]
fn repeated_start_is_confirmed_again() {
    let (mut link, t0) = started();
    link.on_bytes(&u(UFunction::StartDtAct), t0);
    assert_eq!(events(&mut link), [LinkEvent::StartRequested]);
    assert!(link.confirm_start(t0));
    assert_eq!(written(&mut link), [Apdu::U(UFunction::StartDtCon)]);
    assert_eq!(link.state(), LinkState::Started);
}

#[test]
fn stop_without_outstanding_frames_confirms_at_once() {
    let (mut link, t0) = started();
    link.on_bytes(&u(UFunction::StopDtAct), t0);
    assert_eq!(written(&mut link), [Apdu::U(UFunction::StopDtCon)]);
    assert_eq!(events(&mut link), [LinkEvent::Stopped]);
    assert_eq!(link.state(), LinkState::Stopped);
    // STOPDT act while stopped: confirmed too.
    link.on_bytes(&u(UFunction::StopDtAct), t0);
    assert_eq!(written(&mut link), [Apdu::U(UFunction::StopDtCon)]);
}

#[test]
fn stop_waits_for_outstanding_acknowledgements() {
    let (mut link, t0) = started();
    link.send_asdu(ASDU.to_vec(), t0).expect("sent");
    link.send_asdu(ASDU.to_vec(), t0).expect("sent");
    written(&mut link);
    link.on_bytes(&u(UFunction::StopDtAct), t0);
    assert!(written(&mut link).is_empty());
    assert_eq!(link.state(), LinkState::Stopping);
    assert_eq!(
        link.send_asdu(ASDU.to_vec(), t0),
        Err(SendError::NotStarted)
    );
    link.on_bytes(&s(1), t0);
    assert!(written(&mut link).is_empty());
    assert_eq!(events(&mut link), [LinkEvent::Acknowledged(1)]);
    link.on_bytes(&s(2), t0);
    assert_eq!(written(&mut link), [Apdu::U(UFunction::StopDtCon)]);
    assert_eq!(
        events(&mut link),
        [LinkEvent::Acknowledged(1), LinkEvent::Stopped]
    );
    assert_eq!(link.state(), LinkState::Stopped);
    assert_eq!(link.acked_count(), 2);
}

#[test]
fn testfr_act_is_answered_in_any_state() {
    let t0 = Instant::now();
    let mut link = Link::new(LinkParams::default(), t0).expect("valid");
    link.on_bytes(&u(UFunction::TestFrAct), t0);
    assert_eq!(written(&mut link), [Apdu::U(UFunction::TestFrCon)]);
    let (mut link, t0) = started();
    link.on_bytes(&u(UFunction::TestFrAct), t0);
    assert_eq!(written(&mut link), [Apdu::U(UFunction::TestFrCon)]);
}

#[test]
fn i_frame_before_start_closes() {
    let t0 = Instant::now();
    let mut link = Link::new(LinkParams::default(), t0).expect("valid");
    // An S frame before start is fine.
    link.on_bytes(&s(0), t0);
    assert!(!link.is_closed());
    link.on_bytes(&i(0, 0), t0);
    assert_eq!(
        closed_with(&mut link),
        Some(CloseReason::Protocol(ProtocolError::IFrameBeforeStart))
    );
    assert_eq!(link.next_deadline(), None);
    // Nothing more happens.
    link.on_bytes(&u(UFunction::TestFrAct), t0);
    assert!(written(&mut link).is_empty());
    assert!(events(&mut link).is_empty());
}

#[test]
fn wrong_send_sequence_closes() {
    let (mut link, t0) = started();
    link.on_bytes(&i(0, 0), t0);
    link.on_bytes(&i(2, 0), t0);
    let evs = events(&mut link);
    assert_eq!(evs[0], LinkEvent::Asdu(ASDU.to_vec()));
    assert_eq!(
        evs[1],
        LinkEvent::Closed(CloseReason::Protocol(ProtocolError::BadSendSeq {
            expected: 1,
            got: 2
        }))
    );
}

#[test]
fn receive_sequence_outside_window_closes() {
    let (mut link, t0) = started();
    link.send_asdu(ASDU.to_vec(), t0).expect("sent");
    // N(R) = 1 acknowledges the one frame sent; 2 would acknowledge one never sent.
    link.on_bytes(&s(2), t0);
    assert_eq!(
        closed_with(&mut link),
        Some(CloseReason::Protocol(ProtocolError::BadRecvSeq {
            got: 2,
            ack_base: 0,
            send_seq: 1
        }))
    );

    // Also through an I frame's N(R), and backwards.
    let (mut link, t0) = started();
    link.send_asdu(ASDU.to_vec(), t0).expect("sent");
    link.send_asdu(ASDU.to_vec(), t0).expect("sent");
    link.on_bytes(&s(2), t0);
    assert_eq!(events(&mut link), [LinkEvent::Acknowledged(2)]);
    link.on_bytes(&i(0, 1), t0);
    assert!(matches!(
        closed_with(&mut link),
        Some(CloseReason::Protocol(ProtocolError::BadRecvSeq { .. }))
    ));
}

#[test]
fn w_th_received_frame_is_acknowledged_at_once() {
    let (mut link, t0) = started();
    for n in 0..7 {
        link.on_bytes(&i(n, 0), t0);
    }
    assert!(written(&mut link).is_empty());
    link.on_bytes(&i(7, 0), t0);
    assert_eq!(written(&mut link), [Apdu::S { recv_seq: seq(8) }]);
    assert_eq!(link.received_i_frames(), 8);
    let asdus = events(&mut link)
        .into_iter()
        .filter(|e| matches!(e, LinkEvent::Asdu(_)))
        .count();
    assert_eq!(asdus, 8);
}

#[test]
fn t2_sends_an_s_frame() {
    let (mut link, t0) = started();
    let params = *link.params();
    link.on_bytes(&i(0, 0), t0);
    let t = t0 + Duration::from_secs(1);
    link.on_bytes(&i(1, 0), t);
    // t2 runs from the first unacknowledged frame.
    assert_eq!(link.next_deadline(), Some(t0 + params.t2));
    link.on_timer(t0 + params.t2 - Duration::from_millis(1));
    assert!(written(&mut link).is_empty());
    link.on_timer(t0 + params.t2);
    assert_eq!(written(&mut link), [Apdu::S { recv_seq: seq(2) }]);
    assert!(!link.is_closed());
}

#[test]
fn sent_i_frame_acknowledges_received_ones() {
    let (mut link, t0) = started();
    link.on_bytes(&i(0, 0), t0);
    link.send_asdu(ASDU.to_vec(), t0).expect("sent");
    assert_eq!(
        written(&mut link),
        [Apdu::I(IFrame {
            send_seq: seq(0),
            recv_seq: seq(1),
            asdu: ASDU.to_vec()
        })]
    );
    // No t2 left: only t1 of the sent frame is pending.
    assert_eq!(link.next_deadline(), Some(t0 + link.params().t1));
}

#[test]
fn t1_closes_when_an_i_frame_is_never_acknowledged() {
    let (mut link, t0) = started();
    let t1 = link.params().t1;
    link.send_asdu(ASDU.to_vec(), t0).expect("sent");
    assert_eq!(link.next_deadline(), Some(t0 + t1));
    link.on_timer(t0 + t1 - Duration::from_millis(1));
    assert!(!link.is_closed());
    link.on_timer(t0 + t1);
    assert_eq!(closed_with(&mut link), Some(CloseReason::T1));
}

#[test]
fn t3_sends_testfr_and_t1_closes_without_con() {
    let (mut link, t0) = started();
    let params = *link.params();
    assert_eq!(link.next_deadline(), Some(t0 + params.t3));
    let t = t0 + params.t3;
    link.on_timer(t);
    assert_eq!(written(&mut link), [Apdu::U(UFunction::TestFrAct)]);
    assert_eq!(link.next_deadline(), Some(t + params.t1));
    link.on_timer(t + params.t1);
    assert_eq!(closed_with(&mut link), Some(CloseReason::T1));
}

#[test]
fn testfr_con_clears_the_pending_test() {
    let t0 = Instant::now();
    let mut link = Link::new(LinkParams::default(), t0).expect("valid");
    let params = *link.params();
    let t = t0 + params.t3;
    link.on_timer(t);
    assert_eq!(written(&mut link), [Apdu::U(UFunction::TestFrAct)]);
    let t_con = t + Duration::from_secs(1);
    link.on_bytes(&u(UFunction::TestFrCon), t_con);
    assert_eq!(link.next_deadline(), Some(t_con + params.t3));
    link.on_timer(t + params.t1);
    assert!(!link.is_closed());
}

#[test]
fn window_full_refuses_send() {
    let params = LinkParams {
        k: 3,
        w: 2,
        ..LinkParams::default()
    };
    let (mut link, t0) = started_with(params, 0, 0);
    for _ in 0..3 {
        assert!(link.can_send());
        link.send_asdu(ASDU.to_vec(), t0).expect("sent");
    }
    assert!(!link.can_send());
    assert_eq!(link.unacked_count(), 3);
    assert_eq!(
        link.send_asdu(ASDU.to_vec(), t0),
        Err(SendError::WindowFull)
    );
    link.on_bytes(&s(1), t0);
    assert!(link.can_send());
    assert_eq!(link.unacked_count(), 2);
    link.send_asdu(ASDU.to_vec(), t0).expect("sent");
    assert_eq!(link.sent_i_frames(), 4);
}

#[test]
fn sequence_numbers_wrap() {
    let (mut link, t0) = started_with(LinkParams::default(), 32766, 32766);
    for _ in 0..3 {
        link.send_asdu(ASDU.to_vec(), t0).expect("sent");
    }
    let sent: Vec<u16> = written(&mut link)
        .into_iter()
        .map(|a| match a {
            Apdu::I(f) => f.send_seq.value(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(sent, [32766, 32767, 0]);
    // Receive across the wrap, acknowledging across it too.
    link.on_bytes(&i(32766, 32767), t0);
    link.on_bytes(&i(32767, 0), t0);
    link.on_bytes(&i(0, 1), t0);
    assert!(!link.is_closed());
    assert_eq!(link.acked_count(), 3);
    assert_eq!(link.unacked_count(), 0);
    link.send_asdu(ASDU.to_vec(), t0).expect("sent");
    assert_eq!(
        written(&mut link),
        [Apdu::I(IFrame {
            send_seq: seq(1),
            recv_seq: seq(1),
            asdu: ASDU.to_vec()
        })]
    );
}

#[test]
fn bytes_in_any_chunking() {
    let (mut link, t0) = started();
    let mut stream = Vec::new();
    for n in 0..20 {
        stream.extend(i(n, 0));
    }
    for b in &stream {
        link.on_bytes(std::slice::from_ref(b), t0);
    }
    assert_eq!(link.received_i_frames(), 20);
    // A large slice at once: more than the internal buffer's two APDUs.
    let (mut link, t0) = started();
    link.on_bytes(&stream, t0);
    assert_eq!(link.received_i_frames(), 20);
    assert!(link.rx_buf.capacity() <= 2 * MAX_APDU_LEN);
}

#[test]
fn garbage_closes_with_protocol_error() {
    let (mut link, t0) = started();
    link.on_bytes(&[0x68, 0x04, 0x07], t0);
    assert!(!link.is_closed());
    link.on_bytes(&[0x00, 0x00, 0x00, 0x42, 0x00], t0);
    let evs = events(&mut link);
    assert_eq!(
        evs,
        [
            LinkEvent::StartRequested,
            LinkEvent::Closed(CloseReason::Protocol(ProtocolError::Apci(
                ApciError::BadStart(0x42)
            )))
        ]
    );
}
