//! The 104 forwarder against a master we did not write (c104, which is lib60870), with a
//! pymodbus device behind the cluster: interrogation, spontaneous data, commands, negative
//! confirmations, leadership and failover without a lost event.

use std::net::SocketAddr;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use fepha_cluster_tests::field::{device_addr, one_rtu_site, owner_not_leader, wait_points};
use fepha_cluster_tests::master::{Asdu, Dir, Init, LinkState, Master};
use fepha_cluster_tests::{Cluster, PyDevice};

const PORT: u16 = 2404;
const CA: u16 = 47;
const WAIT: Duration = Duration::from_secs(10);

/// The leader-kill test runs with no other cluster of this file beside it. The RTU's owner
/// stops polling when it cannot renew its lease for most of a TTL; on a loaded two-core
/// machine the election after the kill can take that long, and device changes in that
/// pause are never read (the acquisition's limit, not the forwarder's, which this test is
/// about).
static MACHINE: RwLock<()> = RwLock::new(());

/// The harness's one-RTU site with every point mapped, `extra` appended (more points) and
/// `forwarder_extra` in the forwarder's table.
fn site(endpoint: SocketAddr, poll_ms: u64, forwarder_extra: &str, extra: &str) -> String {
    let rtu = one_rtu_site(endpoint, poll_ms, "probe");
    format!(
        r#"{rtu}
{extra}
[[forwarder]]
name = "cc"
port = {PORT}
common_address = {CA}
{forwarder_extra}
  [[forwarder.map]]
  point = "d.alarm"
  ioa = 1001
  [[forwarder.map]]
  point = "d.breaker"
  ioa = 1002
  [[forwarder.map]]
  point = "d.power"
  ioa = 2001
  [[forwarder.map]]
  point = "d.energy"
  ioa = 3001
  [[forwarder.map]]
  point = "d.trip"
  ioa = 5001
  [[forwarder.map]]
  point = "d.limit"
  ioa = 5002
"#
    )
}

fn forwarder_addr(c: &Cluster, i: usize) -> SocketAddr {
    SocketAddr::new(c.ip(i), PORT)
}

fn check<T>(c: &Cluster, m: &Master, r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => c.fail(&format!("{e:#}\n{}", m.stderr_tail(20))),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[test]
fn a_c104_master_gets_the_image_events_and_commands_through_the_leader() {
    let _shared = MACHINE.read().unwrap_or_else(PoisonError::into_inner);
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let follower = (leader + 1) % 3;
    let device = PyDevice::start(device_addr(&c, 0, 5020));
    device.set("discrete_input", 0, &[1, 0, 1, 0]);
    device.set("holding", 10, &[0x4366, 0x8000]); // 230.5
    device.set("input", 20, &[1, 4464]); // 70000
    c.apply_ok(0, &site(device.addr(), 100, "", ""));
    wait_points(&c, &[0, 1, 2], &[("d.alarm", 1.0), ("d.power", 230.5)]);

    // c104 types its points strictly, and an interrogation answers without time tags while
    // spontaneous data carries them: one master for the interrogations, then another.
    let m = Master::start(
        &[(forwarder_addr(&c, leader), Init::None)],
        CA,
        &[
            (1001, "M_SP_NA_1"),
            (1002, "M_DP_NA_1"),
            (2001, "M_ME_NC_1"),
            (3001, "M_IT_NA_1"),
        ],
    )
    .expect("c104 master");
    check(&c, &m, m.wait_state(0, LinkState::Open, WAIT));

    // General interrogation: ACTCON, every monitored point with its type and value, ACTTERM.
    let mark = m.mark();
    assert!(check(&c, &m, m.interrogation(0)), "GI not confirmed");
    let gi = |ioa: u32| {
        check(
            &c,
            &m,
            m.wait_rx(WAIT, &format!("IOA {ioa} in the GI"), |r| {
                r.seq > mark && r.ioa == ioa && r.cot == Asdu::INTERROGATED
            }),
        )
    };
    let alarm = gi(1001);
    assert_eq!(
        (alarm.ty.as_str(), alarm.value.as_bool()),
        ("M_SP_NA_1", Some(true))
    );
    let breaker = gi(1002);
    assert_eq!(
        (breaker.ty.as_str(), breaker.value.as_i64()),
        ("M_DP_NA_1", Some(2))
    );
    let power = gi(2001);
    assert_eq!(power.ty, "M_ME_NC_1");
    assert_eq!(power.value.as_f64(), Some(230.5));
    assert!(!alarm.invalid() && !power.invalid(), "{}", m.report());
    check(
        &c,
        &m,
        m.wait_asdu(WAIT, "the GI's ACTTERM", |a| {
            a.seq > mark && a.ty == "C_IC_NA_1" && a.cot == Asdu::ACTTERM
        }),
    );
    // Counters answer the counter interrogation only.
    assert!(
        !m.received().iter().any(|r| r.seq > mark && r.ioa == 3001),
        "{}",
        m.report()
    );
    let mark = m.mark();
    assert!(check(&c, &m, m.counter_interrogation(0)));
    let energy = check(
        &c,
        &m,
        m.wait_rx(WAIT, "the counter", |r| r.seq > mark && r.ioa == 3001),
    );
    assert_eq!(energy.value.as_i64(), Some(70000));
    assert!(check(&c, &m, m.clock_sync(0)), "clock sync not confirmed");
    drop(m);

    let m = Master::start(
        &[
            (forwarder_addr(&c, leader), Init::None),
            (forwarder_addr(&c, follower), Init::None),
        ],
        CA,
        &[
            (1001, "M_SP_TB_1"),
            (1002, "M_DP_TB_1"),
            (2001, "M_ME_TF_1"),
        ],
    )
    .expect("c104 master");
    check(&c, &m, m.wait_state(0, LinkState::Open, WAIT));

    // A device change arrives spontaneously, with its time tag.
    let mark = m.mark();
    device.set("discrete_input", 0, &[0]);
    let change = check(
        &c,
        &m,
        m.wait_rx(WAIT, "the spontaneous change", |r| {
            r.seq > mark && r.ioa == 1001 && r.cot == Asdu::SPONTANEOUS
        }),
    );
    assert_eq!(change.ty, "M_SP_TB_1");
    assert_eq!(change.value.as_bool(), Some(false));
    let now = now_ms();
    let tagged = change.time_ms.expect("a time tag");
    assert!(
        (now - tagged).abs() < 10_000,
        "time tag {tagged} vs now {now}"
    );

    // Select before operate switches the coil; ACTCON then ACTTERM.
    // ACTCON comes once the owner has started the command; ACTTERM once the device took it.
    let term = |mark: u64, ty: &'static str| {
        check(
            &c,
            &m,
            m.wait_asdu(WAIT, &format!("the ACTTERM of {ty}"), |a| {
                a.seq > mark && a.ty == ty && a.cot == Asdu::ACTTERM && !a.negative
            }),
        )
    };
    let mark = m.mark();
    assert!(check(&c, &m, m.command(0, 5001, "C_SC_NA_1", true, true)));
    term(mark, "C_SC_NA_1");
    assert_eq!(device.get("coil", 0, 1), [1]);
    let select = m
        .asdus()
        .into_iter()
        .filter(|a| a.seq > mark && a.ty == "C_SC_NA_1" && a.cot == Asdu::ACTCON)
        .map(|a| a.select)
        .collect::<Vec<_>>();
    assert_eq!(select, [Some(true), Some(false)], "{}", m.report());
    // A setpoint, direct execute.
    let mark = m.mark();
    assert!(check(&c, &m, m.command(0, 5002, "C_SE_NC_1", 12.3, false)));
    term(mark, "C_SE_NC_1");
    assert_eq!(device.get("holding", 30, 1), [123]);

    // An unknown IOA gets COT 47.
    let mark = m.mark();
    assert!(!check(&c, &m, m.command(0, 4999, "C_SC_NA_1", true, false)));
    check(
        &c,
        &m,
        m.wait_asdu(WAIT, "COT 47", |a| {
            a.seq > mark && a.cot == Asdu::UNKNOWN_IOA && a.negative && a.ioas == [4999]
        }),
    );

    // The follower never started data transfer, so it executes nothing.
    assert_ne!(
        m.state(1).expect("state"),
        LinkState::Open,
        "{}",
        m.report()
    );
    assert!(!check(
        &c,
        &m,
        m.command(1, 5001, "C_SC_NA_1", false, false)
    ));
    assert_eq!(
        device.get("coil", 0, 1),
        [1],
        "a follower executed a command"
    );
}

/// Twenty single points on discrete inputs 0..20, IOAs 1101.., for the failover test.
fn many_singles() -> (String, String) {
    let mut points = String::new();
    let mut maps = String::new();
    for i in 0..20 {
        points.push_str(&format!(
            "\n[[point]]\nid = \"d.s{i}\"\nrtu = \"d\"\nkind = \"single\"\n\
             table = \"discrete_input\"\naddress = {}\n",
            32 + i
        ));
        maps.push_str(&format!(
            "  [[forwarder.map]]\n  point = \"d.s{i}\"\n  ioa = {}\n",
            1101 + i
        ));
    }
    (maps, points)
}

#[test]
fn a_master_on_every_node_loses_no_indication_when_the_leader_is_killed() {
    let _alone = MACHINE.write().unwrap_or_else(PoisonError::into_inner);
    const STEPS: u16 = 50;
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    let device = PyDevice::start(device_addr(&c, 0, 5020));
    let (maps, points) = many_singles();
    c.apply_ok(0, &site(device.addr(), 20, &maps, &points));
    // The RTU's owner is not the leader, so that its polls go on while the leader dies.
    let (owner, _) = owner_not_leader(&c);
    let leader = c.wait_for_leader(&[0, 1, 2]);
    assert_ne!(owner, leader);
    let ioas: Vec<(u32, &str)> = (0..20).map(|i| (1101 + i, "M_SP_TB_1")).collect();
    let m = Master::start(
        &[0, 1, 2].map(|i| (forwarder_addr(&c, i), Init::None)),
        CA,
        &ioas,
    )
    .expect("c104 master");
    check(&c, &m, m.wait_state(leader, LinkState::Open, WAIT));
    live(&c, &device, &m);

    // Each step flips all twenty points: 50 steps are 1000 indication changes, each
    // polled (every 20 ms) well before the next step (every 120 ms).
    for step in 1..=STEPS {
        device.set("discrete_input", 32, &[value(step); 20]);
        if step == 15 {
            c.kill(leader);
        }
        std::thread::sleep(Duration::from_millis(120));
    }
    c.wait_until("the master got every change", || {
        group_got_every_change(&[&m], STEPS)
    });
    // The leader's connection carried the first part, another node's the rest.
    let from: std::collections::BTreeSet<usize> = m
        .asdus()
        .iter()
        .filter(|a| a.dir == Dir::Rx && a.cot == Asdu::SPONTANEOUS)
        .map(|a| a.conn)
        .collect();
    assert!(
        from.len() >= 2,
        "every event came over one connection: {from:?}"
    );
}

/// The spontaneous single-point changes of `ioa` in the I frames `masters` received,
/// duplicates (same time tag and value) removed, in time order. Read from the frames as they
/// came off the wire: c104 acknowledges a frame before its point callback runs, and drops
/// pending callbacks when a connection closes, which happens to a group's old connection.
fn distinct_changes(masters: &[&Master], ioa: u32) -> Vec<(Vec<u8>, bool)> {
    let set: std::collections::BTreeSet<(Vec<u8>, bool)> = masters
        .iter()
        .flat_map(|m| m.asdus())
        .filter(|a| a.dir == Dir::Rx && a.cot == Asdu::SPONTANEOUS && a.ty == "M_SP_TB_1")
        .flat_map(|a| singles_with_time(&a.hex))
        .filter(|(i, _, _)| *i == ioa)
        .map(|(_, time, on)| (time, on))
        .collect();
    set.into_iter().collect()
}

/// The objects of an M_SP_TB_1 with SQ=0 (type, VSQ, COT 2, CA 2, then per object IOA 3,
/// SIQ, CP56Time2a): IOA, time as (year, month, day, hour, minute, ms) so that it sorts, and
/// the value. Empty if the frame is not that.
fn singles_with_time(hex: &str) -> Vec<(u32, Vec<u8>, bool)> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    let Some(bytes) = bytes else {
        return Vec::new();
    };
    let Some(objects) = bytes.get(6..) else {
        return Vec::new();
    };
    if bytes.get(1).is_none_or(|vsq| vsq & 0x80 != 0) {
        return Vec::new();
    }
    objects
        .chunks_exact(11)
        .map(|o| {
            let ioa = u32::from(o[0]) | u32::from(o[1]) << 8 | u32::from(o[2]) << 16;
            let t = &o[4..11];
            let time = vec![
                t[6] & 0x7f,
                t[5] & 0x0f,
                t[4] & 0x1f,
                t[3] & 0x1f,
                t[2] & 0x3f,
                t[1],
                t[0],
            ];
            (ioa, time, o[3] & 1 == 1)
        })
        .collect()
}

/// A raw TCP connection to a forwarder, for frames no master library would send.
struct Raw(std::net::TcpStream);

impl Raw {
    /// From `from`'s address, so that it is in a redundancy group of its own.
    fn connect(c: &Cluster, from: SocketAddr, addr: SocketAddr) -> Raw {
        let s = c.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.bind(from).expect("bind");
            socket.connect(addr).await.expect("connect")
        });
        let s = s.into_std().expect("a std socket");
        s.set_nonblocking(false).expect("blocking");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        Raw(s)
    }

    fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        // A peer that has closed may refuse the write; the reads below tell.
        let _ = self.0.write_all(bytes);
    }

    /// Everything read until `done` accepts it or the deadline passes; Err once closed.
    fn read_until(&mut self, done: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>, Vec<u8>> {
        use std::io::Read;
        let deadline = std::time::Instant::now() + WAIT;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while std::time::Instant::now() < deadline {
            match self.0.read(&mut buf) {
                Ok(0) => return Err(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Err(got),
            }
            if done(&got) {
                return Ok(got);
            }
        }
        Ok(got)
    }

    /// STARTDT act, and its con.
    fn start(c: &Cluster, from: SocketAddr, addr: SocketAddr) -> Raw {
        let mut r = Raw::connect(c, from, addr);
        r.send(&STARTDT_ACT);
        let got = r.read_until(|b| b.windows(6).any(|w| w == STARTDT_CON));
        assert!(
            got.as_ref()
                .is_ok_and(|b| b.windows(6).any(|w| w == STARTDT_CON)),
            "no STARTDT con: {got:?}"
        );
        r
    }

    fn closed_by_peer(&mut self) -> bool {
        self.read_until(|_| false).is_err()
    }
}

const STARTDT_ACT: [u8; 6] = [0x68, 0x04, 0x07, 0x00, 0x00, 0x00];
const STARTDT_CON: [u8; 6] = [0x68, 0x04, 0x0B, 0x00, 0x00, 0x00];

/// An I frame with N(S) = N(R) = 0 around `asdu`.
fn i_frame(asdu: &[u8]) -> Vec<u8> {
    let mut f = vec![0x68, (asdu.len() + 4) as u8, 0, 0, 0, 0];
    f.extend_from_slice(asdu);
    f
}

#[test]
fn malformed_frames_close_only_their_connection_or_get_a_negative_answer() {
    let _shared = MACHINE.read().unwrap_or_else(PoisonError::into_inner);
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let device = PyDevice::start(device_addr(&c, 0, 5020));
    // The test's raw connections come from another address than the c104 master, in a
    // group of their own, so that their STARTDTs do not take the master's group.
    let from = device_addr(&c, 9, 0);
    let groups = format!(
        "  [[forwarder.group]]\n  name = \"scada\"\n  masters = [\"127.0.0.1\"]\n\
         [[forwarder.group]]\n  name = \"tests\"\n  masters = [\"{}\"]\n",
        from.ip()
    );
    c.apply_ok(0, &site(device.addr(), 100, &groups, ""));
    wait_points(&c, &[leader], &[("d.alarm", 0.0)]);
    let addr = forwarder_addr(&c, leader);
    let m = Master::start(&[(addr, Init::None)], CA, &[(1001, "M_SP_NA_1")]).expect("c104");
    check(&c, &m, m.wait_state(0, LinkState::Open, WAIT));

    // A bad start byte, an APDU length below 4, an N(R) for frames never sent, an ASDU cut
    // short: each closes its own connection.
    let mut bad_start = Raw::connect(&c, from, addr);
    bad_start.send(&[0x67, 0x04, 0x07, 0x00, 0x00, 0x00]);
    assert!(bad_start.closed_by_peer(), "a bad start byte was accepted");
    let mut bad_length = Raw::connect(&c, from, addr);
    bad_length.send(&[0x68, 0x02, 0x07, 0x00]);
    assert!(bad_length.closed_by_peer(), "a length of 2 was accepted");
    let mut bad_nr = Raw::start(&c, from, addr);
    bad_nr.send(&[0x68, 0x04, 0x01, 0x00, 0x0A, 0x00]); // S frame, N(R) = 5
    assert!(
        bad_nr.closed_by_peer(),
        "an N(R) outside the window was accepted"
    );
    let mut truncated = Raw::start(&c, from, addr);
    truncated.send(&i_frame(&[100, 1, 6])); // C_IC_NA_1 without CA, IOA or QOI
    assert!(truncated.closed_by_peer(), "a truncated ASDU was accepted");
    let mut early = Raw::connect(&c, from, addr);
    early.send(&i_frame(&[100, 1, 6, 0, 47, 0, 0, 0, 0, 20]));
    assert!(
        early.closed_by_peer(),
        "an I frame before STARTDT was accepted"
    );

    // An unknown type gets COT 44 back, P/N set, and the connection stays.
    let mut unknown = Raw::start(&c, from, addr);
    let asdu = [99u8, 1, 6, 0, 47, 0, 1, 0, 0, 0];
    unknown.send(&i_frame(&asdu));
    let want = {
        let mut a = asdu;
        a[2] = 0x40 | 44;
        a
    };
    let got = unknown.read_until(|b| b.windows(want.len()).any(|w| w == want));
    assert!(
        got.as_ref()
            .is_ok_and(|b| b.windows(want.len()).any(|w| w == want)),
        "no COT 44 for type 99: {got:02x?}"
    );
    // The node and the c104 master's connection went on through all of it.
    assert_eq!(
        m.state(0).expect("state"),
        LinkState::Open,
        "{}",
        m.report()
    );
    let mark = m.mark();
    assert!(check(&c, &m, m.interrogation(0)));
    check(
        &c,
        &m,
        m.wait_rx(WAIT, "the GI after the garbage", |r| {
            r.seq > mark && r.ioa == 1001
        }),
    );
    assert!(c.is_running(leader));
}

/// The twenty points' value after `step`: they are all on before the first.
fn value(step: u16) -> u16 {
    (step + 1) % 2
}

/// Turns the twenty points on and waits until the master has seen it: the device is polled
/// and the group started, so every step from here on is an event the group must get.
fn live(c: &Cluster, device: &PyDevice, m: &Master) {
    device.set("discrete_input", 32, &[1; 20]);
    check(
        c,
        m,
        m.wait_asdu(WAIT, "the points on", |a| {
            a.dir == Dir::Rx
                && a.cot == Asdu::SPONTANEOUS
                && singles_with_time(&a.hex)
                    .iter()
                    .any(|(ioa, _, on)| *ioa == 1120 && *on)
        }),
    );
}

/// Flips the twenty points every 100 ms until `stop`, from a thread; returns the steps made.
fn flipping(device: &PyDevice, stop: &std::sync::atomic::AtomicBool) -> u16 {
    let mut step = 0u16;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        step += 1;
        device.set("discrete_input", 32, &[value(step); 20]);
        std::thread::sleep(Duration::from_millis(100));
    }
    step
}

/// Every step reached the group: each point's changes, over both masters, flip every time
/// and number `steps`.
fn group_got_every_change(masters: &[&Master], steps: u16) -> Result<(), String> {
    for ioa in 1101..1121 {
        // The first poll after the configuration may add the initial value before step 1.
        let changes = distinct_changes(masters, ioa);
        let last = changes.last().map(|c| c.1);
        if changes.windows(2).any(|p| p[0].1 == p[1].1)
            || changes.len() < usize::from(steps)
            || last != Some(value(steps) == 1)
        {
            return Err(format!(
                "IOA {ioa}: {} changes of {steps}: {changes:?}",
                changes.len()
            ));
        }
    }
    Ok(())
}

/// The spans (first to last spontaneous receive) of each of `m`'s data transfers, which
/// begin at a STARTDT con (c104 may report a link's state change after its first data).
fn active_spans(m: &Master) -> Vec<(i64, i64)> {
    let mut started: Vec<u64> = m
        .u_frames()
        .iter()
        .filter(|u| u.dir == Dir::Rx && u.function == "STARTDT_CON")
        .map(|u| u.seq)
        .collect();
    started.push(u64::MAX);
    let frames = m.asdus();
    started
        .windows(2)
        .filter_map(|w| {
            let times: Vec<i64> = frames
                .iter()
                .filter(|a| a.dir == Dir::Rx && a.cot == Asdu::SPONTANEOUS)
                .filter(|a| a.seq > w[0] && a.seq < w[1])
                .map(|a| a.at_ms)
                .collect();
            Some((*times.iter().min()?, *times.iter().max()?))
        })
        .collect()
}

fn two_masters(takeover: &str) -> (Cluster, PyDevice, usize) {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    let device = PyDevice::start(device_addr(&c, 0, 5020));
    let (maps, points) = many_singles();
    let extra = format!("takeover = \"{takeover}\"\n{maps}");
    c.apply_ok(0, &site(device.addr(), 20, &extra, &points));
    let leader = c.wait_for_leader(&[0, 1, 2]);
    (c, device, leader)
}

/// A master with the group started and the points live. Events are kept for a group from
/// its first start on.
fn first_master(c: &Cluster, device: &PyDevice, addr: SocketAddr) -> Master {
    let a = Master::start(&[(addr, Init::None)], CA, &singles()).expect("master a");
    check(c, &a, a.wait_state(0, LinkState::Open, WAIT));
    live(c, device, &a);
    a
}

fn singles() -> Vec<(u32, &'static str)> {
    (1101..1121).map(|ioa| (ioa, "M_SP_TB_1")).collect()
}

#[test]
fn two_masters_fighting_over_one_group_never_receive_at_once_nor_lose_an_event() {
    let _shared = MACHINE.read().unwrap_or_else(PoisonError::into_inner);
    let (c, device, leader) = two_masters("on-start");
    let addr = forwarder_addr(&c, leader);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (a, b, steps) = std::thread::scope(|s| {
        let a = first_master(&c, &device, addr);
        let steps = s.spawn(|| flipping(&device, &stop));
        check(
            &c,
            &a,
            a.wait_rx(WAIT, "data at a", |r| r.cot == Asdu::SPONTANEOUS),
        );
        // Both are in the group of 127.0.0.1: each STARTDT takes the group from the other,
        // and c104 reconnects and starts again about once a second.
        let b = Master::start(&[(addr, Init::None)], CA, &singles()).expect("master b");
        check(
            &c,
            &b,
            b.wait_rx(WAIT, "data at b", |r| r.cot == Asdu::SPONTANEOUS),
        );
        // Data from after a started the group again: a frame a had in flight when b took
        // the group may still be read, and numbered, after the mark.
        let mark = a.mark();
        let restarted = c.wait_until("a starts the group again", || {
            a.u_frames()
                .iter()
                .find(|u| u.dir == Dir::Rx && u.function == "STARTDT_CON" && u.seq > mark)
                .map(|u| u.seq)
                .ok_or_else(|| "no STARTDT con at a yet".to_owned())
        });
        check(
            &c,
            &a,
            a.wait_rx(WAIT, "a again", |r| {
                r.seq > restarted && r.cot == Asdu::SPONTANEOUS
            }),
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let steps = steps.join().expect("the flipping thread");
        (a, b, steps)
    });
    c.wait_until("the group got every change", || {
        group_got_every_change(&[&a, &b], steps)
    });
    // Each master stamps a frame when its Python callback runs, which may lag the socket by
    // a few ms; a second started connection would overlap by the time until the next move.
    const LAG_MS: i64 = 50;
    let (sa, sb) = (active_spans(&a), active_spans(&b));
    for (x, y) in sa.iter().flat_map(|x| sb.iter().map(move |y| (x, y))) {
        assert!(
            x.1 < y.0 + LAG_MS || y.1 < x.0 + LAG_MS,
            "a received during {x:?} and b during {y:?}\n{}\n{}",
            a.report(),
            b.report()
        );
    }
    assert!(
        sa.len() + sb.len() >= 3,
        "the group moved less than twice: {sa:?} {sb:?}"
    );
}

#[test]
fn after_stop_keeps_the_first_master_and_the_second_resumes_where_it_left() {
    let _shared = MACHINE.read().unwrap_or_else(PoisonError::into_inner);
    let (c, device, leader) = two_masters("after-stop");
    let addr = forwarder_addr(&c, leader);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (a, b, steps) = std::thread::scope(|s| {
        let a = first_master(&c, &device, addr);
        let steps = s.spawn(|| flipping(&device, &stop));
        check(
            &c,
            &a,
            a.wait_rx(WAIT, "data at a", |r| r.cot == Asdu::SPONTANEOUS),
        );
        let b = Master::start(&[(addr, Init::None)], CA, &singles()).expect("master b");
        // b's STARTDT waits while a holds the group.
        let mark = a.mark();
        check(
            &c,
            &a,
            a.wait_rx(WAIT, "a a second later", |r| {
                r.seq > mark + 40 && r.cot == Asdu::SPONTANEOUS
            }),
        );
        assert!(
            b.received().is_empty(),
            "b received while a held the group\n{}",
            b.report()
        );
        assert_ne!(b.state(0).expect("state"), LinkState::Open);
        // a stops data transfer: b gets the group and what a had not acknowledged.
        assert!(check(&c, &a, a.mute(0)));
        check(
            &c,
            &b,
            b.wait_rx(WAIT, "data at b", |r| r.cot == Asdu::SPONTANEOUS),
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let steps = steps.join().expect("the flipping thread");
        (a, b, steps)
    });
    c.wait_until("the group got every change", || {
        group_got_every_change(&[&a, &b], steps)
    });
}

#[test]
fn in_mode_all_every_node_serves_and_commands_but_a_group_starts_once() {
    let _shared = MACHINE.read().unwrap_or_else(PoisonError::into_inner);
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let (first, second) = ((leader + 1) % 3, (leader + 2) % 3);
    let device = PyDevice::start(device_addr(&c, 0, 5020));
    let (maps, points) = many_singles();
    let extra = format!("mode = \"all\"\n{maps}");
    c.apply_ok(0, &site(device.addr(), 20, &extra, &points));
    // A redundant master: one link started, the other a standby, both to followers.
    let m = Master::start(
        &[
            (forwarder_addr(&c, first), Init::None),
            (forwarder_addr(&c, second), Init::Muted),
        ],
        CA,
        &singles(),
    )
    .expect("c104 master");
    check(&c, &m, m.wait_state(0, LinkState::Open, WAIT));
    live(&c, &device, &m);

    // A follower takes commands in this mode.
    let mark = m.mark();
    if !check(&c, &m, m.command(0, 5001, "C_SC_NA_1", true, false)) {
        c.fail(&format!("the command was refused\n{}", m.report()));
    }
    check(
        &c,
        &m,
        m.wait_asdu(WAIT, "the ACTTERM", |a| {
            a.seq > mark && a.ty == "C_SC_NA_1" && a.cot == Asdu::ACTTERM && !a.negative
        }),
    );
    assert_eq!(device.get("coil", 0, 1), [1]);

    // The master switches links while the points flip: the group moves through the log from
    // one node to the other, and the new link resends what the old one had not acknowledged.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let steps = std::thread::scope(|s| {
        let steps = s.spawn(|| flipping(&device, &stop));
        let mark = m.mark();
        check(
            &c,
            &m,
            m.wait_rx(WAIT, "data on the first link", |r| {
                r.seq > mark + 40 && r.cot == Asdu::SPONTANEOUS
            }),
        );
        // Starting the standby before stopping the first: the first is closed, not both run.
        assert!(check(&c, &m, m.unmute(1)));
        check(&c, &m, m.wait_state(1, LinkState::Open, WAIT));
        let mark = m.mark();
        check(
            &c,
            &m,
            m.wait_rx(WAIT, "data on the second link", |r| {
                r.seq > mark + 40 && r.conn == 1 && r.cot == Asdu::SPONTANEOUS
            }),
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        steps.join().expect("the flipping thread")
    });
    c.wait_until("the group got every change", || {
        group_got_every_change(&[&m], steps)
    });
    // Per link, the spans in which it received data never overlap.
    let frames = m.asdus();
    let span = |conn: usize| {
        let seqs: Vec<u64> = frames
            .iter()
            .filter(|a| a.dir == Dir::Rx && a.cot == Asdu::SPONTANEOUS && a.conn == conn)
            .map(|a| a.seq)
            .collect();
        (seqs.iter().min().copied(), seqs.iter().max().copied())
    };
    let ((_, last0), (first1, _)) = (span(0), span(1));
    assert!(
        last0.zip(first1).is_some_and(|(l, f)| l < f),
        "link 0 received until #{last0:?}, link 1 from #{first1:?}\n{}",
        m.report()
    );
}

#[test]
fn while_a_witness_leads_one_voter_serves_the_masters() {
    let _shared = MACHINE.read().unwrap_or_else(PoisonError::into_inner);
    let mut c = Cluster::new();
    // The node that initialises the cluster leads it first: here, the witness.
    let leader = c.bootstrap(&["witness", "voter", "voter"]);
    if leader != 0 {
        // An election moved leadership already; this test is about a witness leading.
        eprintln!("the witness does not lead (node {leader} does); nothing to check");
        return;
    }
    let device = PyDevice::start(device_addr(&c, 0, 5020));
    c.apply_ok(0, &site(device.addr(), 100, "", ""));
    let m = Master::start(
        &[
            (forwarder_addr(&c, 1), Init::None),
            (forwarder_addr(&c, 2), Init::None),
        ],
        CA,
        &[(1001, "M_SP_TB_1")],
    )
    .expect("c104 master");
    // Exactly one voter confirms STARTDT, and the witness serves nothing.
    let serving = c.wait_until("a voter serves", || {
        let open: Vec<usize> = (0..2)
            .filter(|&i| m.state(i).is_ok_and(|s| s == LinkState::Open))
            .collect();
        match open.as_slice() {
            [one] => Ok(*one),
            other => Err(format!("open links: {other:?}")),
        }
    });
    assert!(
        std::net::TcpStream::connect_timeout(&forwarder_addr(&c, 0), WAIT).is_err(),
        "the witness listens for masters"
    );
    let mark = m.mark();
    device.set("discrete_input", 0, &[1]);
    let rx = check(
        &c,
        &m,
        m.wait_rx(WAIT, "the change from the serving voter", |r| {
            r.seq > mark && r.ioa == 1001 && r.cot == Asdu::SPONTANEOUS
        }),
    );
    assert_eq!(rx.conn, serving);
    eprintln!("while the witness leads, {} serves", c.name(serving + 1));
    assert!(
        c.status(0).is_ok_and(|s| s.state == "leader"),
        "the witness lost the lead during the test"
    );
}
