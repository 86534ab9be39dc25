//! The c104 master test tool itself, against a c104 server: it opens the link, interrogates,
//! sees spontaneous data with its time tag, and sends a select-before-operate command. Later
//! tests trust it when they judge fepha's IEC 104 side.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fepha_cluster_tests::Proxy;
use fepha_cluster_tests::master::{Asdu, C104Server, Dir, Init, LinkState, Master, PointValue};

const LIMIT: Duration = Duration::from_secs(5);
const CA: u16 = 47;

/// A loopback port free right now; c104's server cannot listen on port 0 and say which it
/// got.
fn free_port() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit in i64")
}

#[test]
fn the_master_reads_and_commands_a_c104_server() {
    let server = C104Server::start(free_port()).expect("start the c104 server");
    server
        .add_point(CA, 100, "M_SP_TB_1", Some(true.into()))
        .expect("add a single point");
    server
        .add_point(CA, 200, "M_ME_NC_1", Some(2.5.into()))
        .expect("add a float measurement");
    server
        .add_point(CA, 300, "M_DP_NA_1", Some(2.into()))
        .expect("add a double point");
    server
        .add_command(CA, 5001, "C_SC_NA_1", true, "SUCCESS")
        .expect("add a select-before-operate command");

    let master = Master::start(
        &[(server.addr(), Init::None)],
        CA,
        &[(100, "M_SP_TB_1"), (200, "M_ME_NC_1"), (300, "M_DP_NA_1")],
    )
    .expect("start the c104 master");
    let fail = |e: anyhow::Error| -> ! { panic!("{e:?}\n{}", master.report()) };

    master
        .wait_state(0, LinkState::Open, LIMIT)
        .unwrap_or_else(|e| fail(e));
    master
        .wait_u_frame(LIMIT, "STARTDT was confirmed", |u| {
            u.dir == Dir::Rx && u.function == "STARTDT_CON"
        })
        .unwrap_or_else(|e| fail(e));

    // A general interrogation: ACTCON, every point with its value, ACTTERM.
    let mark = master.mark();
    assert!(
        master.interrogation(0).unwrap_or_else(|e| fail(e)),
        "the GI was not confirmed\n{}",
        master.report()
    );
    let interrogated = |ioa: u32| {
        master
            .wait_rx(LIMIT, &format!("the GI reported IOA {ioa}"), |r| {
                r.seq > mark && r.ioa == ioa && r.cot == Asdu::INTERROGATED
            })
            .unwrap_or_else(|e| fail(e))
    };
    assert_eq!(interrogated(100).value, PointValue::Bool(true));
    assert_eq!(interrogated(200).value, PointValue::Float(2.5));
    let double = interrogated(300);
    assert_eq!(double.value, PointValue::Int(2), "double point ON");
    assert!(double.quality.is_empty() && !double.time_tag && double.time_ms.is_none());
    let term = master
        .wait_asdu(LIMIT, "the GI's ACTTERM came", |a| {
            a.seq > mark && a.dir == Dir::Rx && a.ty == "C_IC_NA_1" && a.cot == Asdu::ACTTERM
        })
        .unwrap_or_else(|e| fail(e));
    assert!(!term.negative);
    let con = master
        .asdus()
        .into_iter()
        .find(|a| a.seq > mark && a.dir == Dir::Rx && a.type_id == 100 && a.cot == Asdu::ACTCON)
        .unwrap_or_else(|| panic!("no ACTCON of the GI\n{}", master.report()));
    assert!(con.seq < term.seq && con.ca == CA && con.ioas == [0]);

    // A spontaneous change, invalid, with the time it was set.
    let mark = master.mark();
    let before = now_ms();
    assert!(
        server
            .set(CA, 100, false, &["Invalid"], Some("SPONTANEOUS"))
            .expect("set the single point"),
        "the server did not send the change"
    );
    let change = master
        .wait_rx(LIMIT, "the spontaneous change of IOA 100 came", |r| {
            r.seq > mark && r.ioa == 100 && r.cot == Asdu::SPONTANEOUS
        })
        .unwrap_or_else(|e| fail(e));
    assert_eq!(change.value, PointValue::Bool(false));
    assert!(change.invalid(), "quality {:?}", change.quality);
    assert!(change.time_tag);
    let at = change.time_ms.expect("M_SP_TB_1 carries a time tag");
    assert!(
        (before - 1000..=now_ms()).contains(&at),
        "time tag {at} is not between {before} and now"
    );

    // Select before operate: two positive ACTCONs (select, then execute); the server's
    // command point sees the execute (c104 hands it only that one).
    let mark = master.mark();
    assert!(
        master
            .command(0, 5001, "C_SC_NA_1", true, true)
            .unwrap_or_else(|e| fail(e)),
        "the command was not confirmed\n{}",
        master.report()
    );
    let cons: Vec<Asdu> = master
        .asdus()
        .into_iter()
        .filter(|a| a.seq > mark && a.dir == Dir::Rx && a.type_id == 45 && a.cot == Asdu::ACTCON)
        .collect();
    assert_eq!(
        cons.iter()
            .map(|a| (a.select, a.negative))
            .collect::<Vec<_>>(),
        [(Some(true), false), (Some(false), false)],
        "{}",
        master.report()
    );
    let cmd = server
        .wait_command(LIMIT, "the server executed the command", |c| c.ioa == 5001)
        .unwrap_or_else(|e| fail(e));
    assert_eq!(cmd.value, PointValue::Bool(true));

    // An IOA the server does not have: the answer is negative (c104's server sends a negative
    // ACTCON, then a positive COT 47; the standard asks for one negative COT 47).
    assert!(
        !master
            .command(0, 5999, "C_SC_NA_1", true, false)
            .unwrap_or_else(|e| fail(e)),
        "a command to an unknown IOA was confirmed\n{}",
        master.report()
    );
    master
        .wait_asdu(LIMIT, "a negative answer for IOA 5999 came", |a| {
            a.dir == Dir::Rx && a.ioas == [5999] && a.negative
        })
        .unwrap_or_else(|e| fail(e));

    assert!(master.clock_sync(0).unwrap_or_else(|e| fail(e)));
    assert!(master.counter_interrogation(0).unwrap_or_else(|e| fail(e)));

    // STOPDT and STARTDT, as the wire shows them: c104's `state` once went on saying OPEN
    // for seconds after its own callback had said OPEN_MUTED.
    assert!(master.mute(0).unwrap_or_else(|e| fail(e)));
    let stopped = master
        .wait_u_frame(LIMIT, "STOPDT was confirmed", |u| {
            u.dir == Dir::Rx && u.function == "STOPDT_CON"
        })
        .unwrap_or_else(|e| fail(e));
    assert!(master.unmute(0).unwrap_or_else(|e| fail(e)));
    master
        .wait_u_frame(LIMIT, "STARTDT was confirmed again", |u| {
            u.dir == Dir::Rx && u.function == "STARTDT_CON" && u.seq > stopped.seq
        })
        .unwrap_or_else(|e| fail(e));
    master
        .wait_state(0, LinkState::Open, LIMIT)
        .unwrap_or_else(|e| fail(e));
    assert_eq!(server.connections().expect("count connections"), (1, 1));
}

/// A redundant master: the standby link connects muted and stays so (the script must not
/// start it), data flows on the active link only, and the roles can be swapped.
#[test]
fn a_standby_link_stays_muted_until_told() {
    let server = C104Server::start(free_port()).expect("start the c104 server");
    server
        .add_point(CA, 100, "M_SP_NA_1", Some(false.into()))
        .expect("add a single point");
    // c104 refuses two connections to one address: the standby goes through a proxy.
    let proxy = Proxy::start(
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0),
        server.addr(),
    );
    let master = Master::start(
        &[(server.addr(), Init::None), (proxy.addr(), Init::Muted)],
        CA,
        &[(100, "M_SP_NA_1")],
    )
    .expect("start the c104 master");
    let fail = |e: anyhow::Error| -> ! { panic!("{e:?}\n{}", master.report()) };

    master
        .wait_state(0, LinkState::Open, LIMIT)
        .unwrap_or_else(|e| fail(e));
    master
        .wait_state(1, LinkState::OpenMuted, LIMIT)
        .unwrap_or_else(|e| fail(e));
    // Longer than the script's patience with a muted active link.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        master.state(1).unwrap_or_else(|e| fail(e)),
        LinkState::OpenMuted
    );
    assert!(
        // Link 0 may have needed one: c104 sometimes leaves an active link muted.
        !master
            .events()
            .iter()
            .any(|e| e.kind == "unmute" && e.conn() == Some(1)),
        "the script started a link it should leave alone\n{}",
        master.report()
    );

    let mark = master.mark();
    assert!(
        server
            .set(CA, 100, true, &[], Some("SPONTANEOUS"))
            .expect("set")
    );
    let change = master
        .wait_rx(LIMIT, "the change came on the active link", |r| {
            r.seq > mark && r.ioa == 100 && r.value == PointValue::Bool(true)
        })
        .unwrap_or_else(|e| fail(e));
    assert_eq!(change.conn, 0);

    // Swap: STOPDT on 0, STARTDT on 1; the next change comes on 1 only.
    assert!(master.mute(0).unwrap_or_else(|e| fail(e)));
    assert!(master.unmute(1).unwrap_or_else(|e| fail(e)));
    master
        .wait_state(0, LinkState::OpenMuted, LIMIT)
        .unwrap_or_else(|e| fail(e));
    master
        .wait_state(1, LinkState::Open, LIMIT)
        .unwrap_or_else(|e| fail(e));
    let mark = master.mark();
    assert!(
        server
            .set(CA, 100, false, &[], Some("SPONTANEOUS"))
            .expect("set")
    );
    let change = master
        .wait_rx(LIMIT, "the change came on the new active link", |r| {
            r.seq > mark && r.ioa == 100 && r.value == PointValue::Bool(false)
        })
        .unwrap_or_else(|e| fail(e));
    assert_eq!(change.conn, 1);
    assert!(
        !master
            .received()
            .iter()
            .any(|r| r.seq > mark && r.conn == 0),
        "data came on the muted link\n{}",
        master.report()
    );
}

/// c104 reconnects by itself when the server comes back, and the link is started again.
#[test]
fn the_master_reconnects_when_the_server_comes_back() {
    let addr = free_port();
    let server = C104Server::start(addr).expect("start the c104 server");
    let master = Master::start(&[(addr, Init::None)], CA, &[(100, "M_SP_NA_1")])
        .expect("start the c104 master");
    let fail = |e: anyhow::Error| -> ! { panic!("{e:?}\n{}", master.report()) };
    master
        .wait_state(0, LinkState::Open, LIMIT)
        .unwrap_or_else(|e| fail(e));

    drop(server);
    let start = std::time::Instant::now();
    while master.state(0).unwrap_or_else(|e| fail(e)) == LinkState::Open {
        assert!(
            start.elapsed() < LIMIT,
            "the link stayed open without a server\n{}",
            master.report()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let server = C104Server::start(addr).expect("restart the c104 server");
    server
        .add_point(CA, 100, "M_SP_NA_1", Some(true.into()))
        .expect("add a single point");
    master
        .wait_state(0, LinkState::Open, LIMIT)
        .unwrap_or_else(|e| fail(e));
    assert!(master.interrogation(0).unwrap_or_else(|e| fail(e)));
    master
        .wait_rx(LIMIT, "the new server's point came", |r| {
            r.ioa == 100 && r.value == PointValue::Bool(true)
        })
        .unwrap_or_else(|e| fail(e));
}
