//! The link as the controlling station: it starts and stops data transfer itself, and
//! acknowledges received I frames only once the owner has released them.

use std::time::Duration;

use super::tests::{ASDU, closed_with, events, i, seq, u, written};
use super::*;

fn params() -> LinkParams {
    LinkParams {
        w: 2,
        ..LinkParams::default()
    }
}

/// A controlling link that has sent STARTDT act and had it confirmed.
fn started() -> (Link, Instant) {
    let t0 = Instant::now();
    let mut link = Link::controlling(params(), t0).expect("valid params");
    assert!(link.start(t0));
    assert_eq!(written(&mut link), [Apdu::U(UFunction::StartDtAct)]);
    assert_eq!(
        link.state(),
        LinkState::Stopped,
        "not before the confirmation"
    );
    link.on_bytes(&u(UFunction::StartDtCon), t0);
    assert_eq!(events(&mut link), [LinkEvent::Started]);
    assert_eq!(link.state(), LinkState::Started);
    (link, t0)
}

#[test]
fn start_waits_for_the_confirmation_for_t1_then_closes() {
    let t0 = Instant::now();
    let mut link = Link::controlling(params(), t0).expect("valid params");
    assert!(link.start(t0));
    assert!(!link.start(t0), "one act at a time");
    assert_eq!(written(&mut link), [Apdu::U(UFunction::StartDtAct)]);
    let t1 = t0 + params().t1;
    assert_eq!(link.next_deadline(), Some(t1));
    link.on_timer(t1 - Duration::from_millis(1));
    assert_eq!(closed_with(&mut link), None);
    link.on_timer(t1);
    assert_eq!(closed_with(&mut link), Some(CloseReason::T1));
}

#[test]
fn a_controlled_station_cannot_start_or_stop_on_its_own() {
    let t0 = Instant::now();
    let mut link = Link::new(params(), t0).expect("valid params");
    assert!(!link.start(t0));
    assert!(written(&mut link).is_empty());
    // And a controlling station ignores a device's STARTDT act or an unasked confirmation.
    let mut link = Link::controlling(params(), t0).expect("valid params");
    link.on_bytes(&u(UFunction::StartDtAct), t0);
    link.on_bytes(&u(UFunction::StartDtCon), t0);
    assert!(events(&mut link).is_empty());
    assert_eq!(link.state(), LinkState::Stopped);
    assert!(written(&mut link).is_empty());
}

#[test]
fn received_frames_are_acknowledged_only_once_released() {
    let (mut link, t0) = started();
    for n in 0..3 {
        link.on_bytes(&i(n, 0), t0);
    }
    let asdus = events(&mut link)
        .into_iter()
        .filter(|e| matches!(e, LinkEvent::Asdu(_)))
        .count();
    assert_eq!(asdus, 3, "delivered at once");
    assert!(
        written(&mut link).is_empty(),
        "w = 2, but nothing is released"
    );
    assert_eq!(link.unreleased_count(), 3);
    // No t2 either: t2 runs from the release.
    assert_eq!(link.next_deadline(), Some(t0 + params().t3));

    let t = t0 + Duration::from_millis(30);
    link.release(2, t);
    assert_eq!(written(&mut link), [Apdu::S { recv_seq: seq(2) }]);
    link.release(1, t);
    assert!(
        written(&mut link).is_empty(),
        "one released frame is below w"
    );
    assert_eq!(link.next_deadline(), Some(t + params().t2));
    link.on_timer(t + params().t2);
    assert_eq!(written(&mut link), [Apdu::S { recv_seq: seq(3) }]);
    // Releasing more than was received releases what was received.
    link.release(5, t);
    assert!(written(&mut link).is_empty());
    assert_eq!(link.unreleased_count(), 0);
}

#[test]
fn a_sent_i_frame_acknowledges_only_what_was_released() {
    let (mut link, t0) = started();
    link.on_bytes(&i(0, 0), t0);
    link.on_bytes(&i(1, 0), t0);
    link.release(1, t0);
    link.send_asdu(ASDU.to_vec(), t0).expect("sent");
    assert_eq!(
        written(&mut link),
        [Apdu::I(IFrame {
            send_seq: seq(0),
            recv_seq: seq(1),
            asdu: ASDU.to_vec()
        })]
    );
    assert_eq!(link.unreleased_count(), 1);
}

#[test]
fn stop_acknowledges_what_was_released_and_waits_for_the_confirmation() {
    let (mut link, t0) = started();
    link.on_bytes(&i(0, 0), t0);
    link.release(1, t0);
    assert!(link.stop(t0));
    assert_eq!(
        written(&mut link),
        [Apdu::S { recv_seq: seq(1) }, Apdu::U(UFunction::StopDtAct)]
    );
    assert_eq!(
        link.state(),
        LinkState::Started,
        "until the device confirms"
    );
    link.on_bytes(&u(UFunction::StopDtCon), t0);
    assert_eq!(events(&mut link).last(), Some(&LinkEvent::Stopped));
    assert_eq!(link.state(), LinkState::Stopped);
    // It can start again.
    assert!(link.start(t0));
}

#[test]
fn testfr_works_as_for_the_controlled_station() {
    let (mut link, t0) = started();
    link.on_bytes(&u(UFunction::TestFrAct), t0);
    assert_eq!(written(&mut link), [Apdu::U(UFunction::TestFrCon)]);
    let t3 = t0 + params().t3;
    link.on_timer(t3);
    assert_eq!(written(&mut link), [Apdu::U(UFunction::TestFrAct)]);
    link.on_bytes(&u(UFunction::TestFrCon), t3);
    link.on_timer(t3 + params().t1);
    assert_eq!(closed_with(&mut link), None);
}
