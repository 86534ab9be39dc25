//! Commands from an upstream master (c104) to points of a 104 RTU, through both 104 hops to
//! `fepha sim iec104`: select-before-operate reaches the device as select then execute, the
//! device's confirmation comes back, its negative ACTCON comes back negative, and a device
//! that never answers gives a negative answer in time instead of a hang.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fepha_cluster_tests::Cluster;
use fepha_cluster_tests::field::device_addr;
use fepha_cluster_tests::master::{Asdu, Dir, Init, LinkState, Master};
use fepha_cluster_tests::sim104::Sim104;

const PORT: u16 = 2404;
const CA: u16 = 47;
const WAIT: Duration = Duration::from_secs(20);

const PROFILE: &str = r#"
common_address = 5
[[point]]
ioa = 101
type = "M_DP_TB_1"
value = 1
[[command]]
ioa = 501
type = "C_DC_NA_1"
term_delay_ms = 300
feedback_ioa = 101
[[command]]
ioa = 502
type = "C_SC_NA_1"
answer = "negative"
[[command]]
ioa = 503
type = "C_SC_NA_1"
answer = "silent"
"#;

fn site(device: SocketAddr) -> String {
    format!(
        r#"[site]
name = "104 commands"
[[rtu]]
id = "d"
protocol = "iec104"
poll_interval_ms = 100
  [rtu.iec104]
  common_address = 5
  t0_s = 1
  t1_s = 3
  t2_s = 1
  command_timeout_ms = 1000
  [[rtu.channel]]
  name = "lan"
  endpoints = ["{device}"]
[[point]]
id = "d.breaker"
rtu = "d"
kind = "double"
type = "M_DP_TB_1"
ioa = 101
[[point]]
id = "d.breaker-cmd"
rtu = "d"
kind = "double_command"
type = "C_DC_NA_1"
ioa = 501
[[point]]
id = "d.refused"
rtu = "d"
kind = "single_command"
type = "C_SC_NA_1"
ioa = 502
[[point]]
id = "d.silent"
rtu = "d"
kind = "single_command"
type = "C_SC_NA_1"
ioa = 503
[[forwarder]]
name = "cc"
port = {PORT}
common_address = {CA}
command_timeout_ms = 2000
  [[forwarder.map]]
  point = "d.breaker"
  ioa = 1101
  [[forwarder.map]]
  point = "d.breaker-cmd"
  ioa = 5101
  [[forwarder.map]]
  point = "d.refused"
  ioa = 5102
  [[forwarder.map]]
  point = "d.silent"
  ioa = 5103
"#
    )
}

/// The confirmations the master received for `ioa` after `mark`: (cause, negative).
fn answers(m: &Master, ioa: u32, mark: u64) -> Vec<(u8, bool)> {
    m.asdus()
        .iter()
        .filter(|a| a.seq > mark && a.dir == Dir::Rx && a.ioas.first() == Some(&ioa))
        .filter(|a| a.cot == Asdu::ACTCON || a.cot == Asdu::ACTTERM)
        .map(|a| (a.cot, a.negative))
        .collect()
}

#[test]
fn commands_reach_the_device_as_the_master_sent_them_and_its_answers_come_back() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let sim = Sim104::start_for(&c, device_addr(&c, 0, 0), PROFILE);
    c.apply_ok(0, &site(sim.addr()));
    sim.wait_line(WAIT, "the owner's STARTDT", |l| l.event == "started");
    let m = Master::start(
        &[(SocketAddr::new(c.ip(leader), PORT), Init::All)],
        CA,
        &[(1101, "M_DP_TB_1")],
    )
    .expect("c104 master");
    if let Err(e) = m.wait_state(0, LinkState::Open, WAIT) {
        c.fail(&format!("master link: {e:#}"));
    }

    // Select before operate: the device sees the select, then the execute, and the master
    // gets ACTCON, ACTCON and ACTTERM, after the breaker's feedback.
    let mark = m.mark();
    let ok = m.command(0, 5101, "C_DC_NA_1", 2, true);
    assert!(matches!(ok, Ok(true)), "{ok:?}\n{}", m.report());
    let term = m.wait_asdu(WAIT, "the ACTTERM of the breaker command", |a| {
        a.seq > mark && a.ioas.first() == Some(&5101) && a.cot == Asdu::ACTTERM
    });
    let term = term.unwrap_or_else(|e| c.fail(&format!("{e:#}\n{}", m.report())));
    assert!(!term.negative, "{}", m.report());
    assert_eq!(
        answers(&m, 5101, mark),
        [
            (Asdu::ACTCON, false),
            (Asdu::ACTCON, false),
            (Asdu::ACTTERM, false)
        ],
        "{}",
        m.report()
    );
    let received: Vec<(Option<bool>, String)> = sim
        .events("received")
        .iter()
        .filter(|l| l.u64("ioa") == Some(501))
        .map(|l| {
            (
                l.body.get("select").and_then(|s| s.as_bool()),
                l.u64("cause").map(|c| c.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        received.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [Some(true), Some(false)],
        "the device got {received:?}\n{}",
        sim.report()
    );
    let feedback = m.wait_rx(WAIT, "the breaker's feedback", |r| {
        r.ioa == 1101 && r.cot == Asdu::SPONTANEOUS && r.value.as_i64() == Some(2)
    });
    let feedback = feedback.unwrap_or_else(|e| c.fail(&format!("{e:#}\n{}", m.report())));
    assert!(feedback.seq < term.seq, "feedback after the ACTTERM");

    // The device refuses: a negative ACTCON upstream, and no ACTTERM.
    let mark = m.mark();
    let refused = m.command(0, 5102, "C_SC_NA_1", true, false);
    assert!(matches!(refused, Ok(false)), "{refused:?}");
    m.wait_asdu(WAIT, "the negative ACTCON", |a| {
        a.seq > mark && a.ioas.first() == Some(&5102) && a.cot == Asdu::ACTCON
    })
    .unwrap_or_else(|e| c.fail(&format!("{e:#}\n{}", m.report())));
    assert_eq!(answers(&m, 5102, mark), [(Asdu::ACTCON, true)]);

    // The device never answers: a negative ACTCON within the timeouts, not a hang.
    let mark = m.mark();
    let asked = Instant::now();
    let silent = m.command(0, 5103, "C_SC_NA_1", true, false);
    assert!(matches!(silent, Ok(false)), "{silent:?}");
    m.wait_asdu(WAIT, "the negative ACTCON of the silent command", |a| {
        a.seq > mark && a.ioas.first() == Some(&5103) && a.cot == Asdu::ACTCON && a.negative
    })
    .unwrap_or_else(|e| c.fail(&format!("{e:#}\n{}", m.report())));
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "answered after {:?}",
        asked.elapsed()
    );
    let log = c.cli_ok(0, &["point", "list"]);
    assert!(log.contains("d.breaker"), "{log}");
}
