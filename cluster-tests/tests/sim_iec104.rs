//! `fepha sim iec104`, the simulated controlled station, judged by a master that is not our
//! code (c104): a general interrogation returns every point, spontaneous toggles come with
//! their time tags, commands get their ACTCON/ACTTERM (or a negative ACTCON), and a change a
//! master did not acknowledge is sent again after the next STARTDT, on a new connection too.
//! The redundancy side (one group: a new STARTDT takes the data from the old connection) is
//! checked with raw socket masters, which acknowledge nothing.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fepha_cluster_tests::master::{Asdu, Dir, Init, LinkState, Master, PointValue};
use fepha_cluster_tests::sim104::{LogLine, Sim104};

const LIMIT: Duration = Duration::from_secs(15);
const CA: u16 = 47;

fn any_port() -> SocketAddr {
    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit in i64")
}

/// A master on a plain socket: it sends what it is told and acknowledges nothing.
struct RawMaster {
    stream: TcpStream,
}

impl RawMaster {
    fn connect(addr: SocketAddr) -> RawMaster {
        let stream = TcpStream::connect(addr).expect("connect to the sim");
        RawMaster { stream }
    }

    fn local_addr(&self) -> String {
        self.stream
            .local_addr()
            .expect("a connected socket has an address")
            .to_string()
    }

    fn startdt(&mut self) {
        self.stream
            .write_all(&[0x68, 0x04, 0x07, 0x00, 0x00, 0x00])
            .expect("send STARTDT act");
    }
}

/// The sim's connection number of the master whose socket is at `peer`.
fn conn_of(sim: &Sim104, peer: &str) -> u64 {
    sim.wait_line(LIMIT, &format!("the sim accepted {peer}"), |l| {
        l.event == "accepted" && l.str("peer") == Some(peer)
    })
    .conn
    .expect("an accepted line names its connection")
}

const PROFILE: &str = r#"
common_address = 47

[[point]]
ioa = 100
type = "M_SP_TB_1"
value = true

[[point]]
ioa = 101
type = "M_DP_TB_1"
value = 1

[[point]]
ioa = 102
type = "M_SP_TB_1"

[[point]]
ioa = 200
type = "M_ME_NC_1"
value = 2.5

[[point]]
ioa = 201
type = "M_ME_NB_1"
value = -7
quality = ["substituted"]

[[point]]
ioa = 202
type = "M_ME_NA_1"
value = 0.5

[[point]]
ioa = 203
type = "M_ME_TF_1"
value = 1.25

[[point]]
ioa = 204
type = "M_ST_TB_1"
value = -3

[[point]]
ioa = 205
type = "M_BO_NA_1"
value = 0xa5

[[point]]
ioa = 300
type = "M_IT_NA_1"
value = 1000

[[schedule]]
kind = "toggle"
ioa = 102
every_ms = 300

[[command]]
ioa = 5001
type = "C_SC_NA_1"
feedback_ioa = 101

[[command]]
ioa = 5002
type = "C_DC_NA_1"
answer = "negative"

[[command]]
ioa = 5003
type = "C_SE_NC_1"
term_delay_ms = 300
feedback_ioa = 203
"#;

#[test]
fn a_c104_master_interrogates_sees_changes_and_commands() {
    let sim = Sim104::start(any_port(), PROFILE);
    // c104 drops (as MISMATCHED_TYPE_ID) an interrogation reply of M_SP_NA_1 for a point it
    // knows as M_SP_TB_1, and a spontaneous M_SP_TB_1 for an M_SP_NA_1 point. So the points
    // that only the GI reports are known by their plain types (100, 204), those that change
    // by their time-tagged ones (101, 102, 203), whose GI entries are checked in the frames.
    let master = Master::start(
        &[(sim.addr(), Init::None)],
        CA,
        &[
            (100, "M_SP_NA_1"),
            (101, "M_DP_TB_1"),
            (102, "M_SP_TB_1"),
            (200, "M_ME_NC_1"),
            (201, "M_ME_NB_1"),
            (202, "M_ME_NA_1"),
            (203, "M_ME_TF_1"),
            (204, "M_ST_NA_1"),
            (205, "M_BO_NA_1"),
            (300, "M_IT_NA_1"),
        ],
    )
    .expect("start the c104 master");
    let fail = |e: anyhow::Error| -> ! { panic!("{e:?}\n{}", sim.report()) };
    master
        .wait_state(0, LinkState::Open, LIMIT)
        .unwrap_or_else(|e| fail(e));
    let started = sim.wait_line(LIMIT, "the master started", |l| l.event == "started");
    let conn = started.conn.expect("a started line names its connection");

    // A general interrogation: ACTCON, every point but the counter without time tag, ACTTERM.
    let mark = master.mark();
    assert!(
        master.interrogation(0).unwrap_or_else(|e| fail(e)),
        "the GI was not confirmed\n{}",
        master.report()
    );
    let term = master
        .wait_asdu(LIMIT, "the GI's ACTTERM came", |a| {
            a.seq > mark && a.dir == Dir::Rx && a.ty == "C_IC_NA_1" && a.cot == Asdu::ACTTERM
        })
        .unwrap_or_else(|e| fail(e));
    let interrogated = |ioa: u32| {
        master
            .wait_rx(LIMIT, &format!("the GI reported IOA {ioa}"), |r| {
                r.seq > mark && r.ioa == ioa && r.cot == Asdu::INTERROGATED
            })
            .unwrap_or_else(|e| fail(e))
    };
    for (ioa, want) in [
        (100, PointValue::Bool(true)),
        (200, PointValue::Float(2.5)),
        (201, PointValue::Int(-7)),
        (202, PointValue::Float(0.5)),
        (204, PointValue::Int(-3)),
        (205, PointValue::Int(0xa5)),
    ] {
        let r = interrogated(ioa);
        assert_eq!(r.value, want, "IOA {ioa}: {r:?}");
        assert!(r.time_ms.is_none(), "a GI reply has no time tag: {r:?}");
    }
    assert!(interrogated(201).has_quality("Substituted"));
    let gi_frames: Vec<Asdu> = master
        .asdus()
        .into_iter()
        .filter(|a| a.seq > mark && a.seq < term.seq && a.dir == Dir::Rx && a.cot == 20)
        .collect();
    let mut reported: Vec<(u32, u8)> = gi_frames
        .iter()
        .flat_map(|a| a.ioas.iter().map(|ioa| (*ioa, a.type_id)))
        .collect();
    reported.sort_unstable();
    assert_eq!(
        reported,
        [
            (100, 1),
            (101, 3),
            (102, 1),
            (200, 13),
            (201, 11),
            (202, 9),
            (203, 13),
            (204, 5),
            (205, 7)
        ],
        "every point but the counter, by its type without time tag: {gi_frames:?}"
    );

    // Spontaneous toggles, time tagged with the time the sim logged for the change.
    let before = now_ms();
    let mark = master.mark();
    let first = master
        .wait_rx(LIMIT, "a toggle of IOA 102 came", |r| {
            r.seq > mark && r.ioa == 102 && r.cot == Asdu::SPONTANEOUS
        })
        .unwrap_or_else(|e| fail(e));
    let second = master
        .wait_rx(LIMIT, "a second toggle of IOA 102 came", |r| {
            r.seq > first.seq && r.ioa == 102 && r.cot == Asdu::SPONTANEOUS
        })
        .unwrap_or_else(|e| fail(e));
    assert_ne!(first.value, second.value, "a toggle toggles");
    for r in [&first, &second] {
        assert!(r.time_tag, "{r:?}");
        let at = r.time_ms.expect("M_SP_TB_1 carries a time tag");
        assert!(
            (before - 1000..=now_ms()).contains(&at),
            "time tag {at} is not between {before} and now"
        );
        let logged = sim.wait_until(LIMIT, "the sim logged the change it sent", |_| {
            sim.sent_changes(conn)
                .into_iter()
                .find(|(_, t)| *t == Some(at))
                .ok_or(format!("no sent change with time tag {at}"))
        });
        assert!(logged.0 >= 1);
    }

    // Counter interrogation and clock sync.
    let mark = master.mark();
    assert!(master.counter_interrogation(0).unwrap_or_else(|e| fail(e)));
    let counter = master
        .wait_rx(LIMIT, "the counter came", |r| {
            r.seq > mark && r.ioa == 300 && r.cot == 37
        })
        .unwrap_or_else(|e| fail(e));
    assert_eq!(counter.value, PointValue::Int(1000));
    master
        .wait_asdu(LIMIT, "the counter interrogation's ACTTERM came", |a| {
            a.seq > mark && a.dir == Dir::Rx && a.ty == "C_CI_NA_1" && a.cot == Asdu::ACTTERM
        })
        .unwrap_or_else(|e| fail(e));
    let synced_at = now_ms();
    assert!(master.clock_sync(0).unwrap_or_else(|e| fail(e)));
    let sync = sim.wait_line(LIMIT, "the sim logged the clock sync", |l| {
        l.event == "received" && l.str("type") == Some("C_CS_NA_1")
    });
    assert_eq!(sync.str("answer"), Some("positive"));
    let synced = sync.body["value"]
        .as_i64()
        .expect("a clock sync logs its time");
    assert!((synced - synced_at).abs() < 5000, "{synced} vs {synced_at}");

    // Select before operate: ACTCON (select), ACTCON (execute), the feedback, ACTTERM.
    let mark = master.mark();
    assert!(
        master
            .command(0, 5001, "C_SC_NA_1", true, true)
            .unwrap_or_else(|e| fail(e)),
        "the command was not confirmed\n{}",
        master.report()
    );
    let actterm = master
        .wait_asdu(LIMIT, "the command's ACTTERM came", |a| {
            a.seq > mark && a.dir == Dir::Rx && a.type_id == 45 && a.cot == Asdu::ACTTERM
        })
        .unwrap_or_else(|e| fail(e));
    assert!(!actterm.negative);
    let cons: Vec<(Option<bool>, bool)> = master
        .asdus()
        .into_iter()
        .filter(|a| a.seq > mark && a.dir == Dir::Rx && a.type_id == 45 && a.cot == Asdu::ACTCON)
        .map(|a| (a.select, a.negative))
        .collect();
    assert_eq!(cons, [(Some(true), false), (Some(false), false)]);
    let feedback = master
        .wait_asdu(LIMIT, "the breaker's feedback came", |a| {
            a.seq > mark && a.dir == Dir::Rx && a.ty == "M_DP_TB_1" && a.ioas == [101]
        })
        .unwrap_or_else(|e| fail(e));
    assert!(
        feedback.seq < actterm.seq,
        "the feedback comes before the ACTTERM"
    );
    let breaker = master
        .wait_rx(LIMIT, "the breaker is on", |r| {
            r.seq > mark && r.ioa == 101 && r.cot == Asdu::SPONTANEOUS
        })
        .unwrap_or_else(|e| fail(e));
    assert_eq!(breaker.value, PointValue::Int(2));
    assert!(breaker.time_tag);
    let answers: Vec<(Option<bool>, Option<String>)> = sim
        .events("received")
        .iter()
        .filter(|l| l.u64("ioa") == Some(5001))
        .map(|l| {
            (
                l.body["select"].as_bool(),
                l.str("answer").map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        answers,
        [
            (Some(true), Some("positive".into())),
            (Some(false), Some("positive".into()))
        ]
    );

    // A refused command and one to an IOA the sim does not have: negative answers.
    let mark = master.mark();
    assert!(
        !master
            .command(0, 5002, "C_DC_NA_1", 2, false)
            .unwrap_or_else(|e| fail(e)),
        "a refused command was confirmed"
    );
    master
        .wait_asdu(LIMIT, "a negative ACTCON for IOA 5002 came", |a| {
            a.seq > mark && a.dir == Dir::Rx && a.ioas == [5002] && a.cot == 7 && a.negative
        })
        .unwrap_or_else(|e| fail(e));
    assert!(
        !master
            .command(0, 5999, "C_SC_NA_1", true, false)
            .unwrap_or_else(|e| fail(e)),
        "a command to an unknown IOA was confirmed"
    );
    master
        .wait_asdu(LIMIT, "a negative COT 47 for IOA 5999 came", |a| {
            a.seq > mark
                && a.dir == Dir::Rx
                && a.ioas == [5999]
                && a.cot == Asdu::UNKNOWN_IOA
                && a.negative
        })
        .unwrap_or_else(|e| fail(e));

    // A set point whose ACTTERM comes 300 ms after its ACTCON, after the feedback.
    let mark = master.mark();
    assert!(
        master
            .command(0, 5003, "C_SE_NC_1", 12.5, false)
            .unwrap_or_else(|e| fail(e))
    );
    let term = master
        .wait_asdu(LIMIT, "the set point's ACTTERM came", |a| {
            a.seq > mark && a.dir == Dir::Rx && a.type_id == 50 && a.cot == Asdu::ACTTERM
        })
        .unwrap_or_else(|e| fail(e));
    let con = master
        .asdus()
        .into_iter()
        .find(|a| a.seq > mark && a.dir == Dir::Rx && a.type_id == 50 && a.cot == Asdu::ACTCON)
        .unwrap_or_else(|| panic!("no ACTCON of the set point\n{}", master.report()));
    assert!(
        term.at_ms - con.at_ms >= 250,
        "ACTTERM {} ms after ACTCON",
        term.at_ms - con.at_ms
    );
    let limit = master
        .wait_rx(LIMIT, "the set point's feedback came", |r| {
            r.seq > mark && r.ioa == 203 && r.cot == Asdu::SPONTANEOUS
        })
        .unwrap_or_else(|e| fail(e));
    assert_eq!(limit.value, PointValue::Float(12.5));

    // c104 acknowledges, and the sim logs what each acknowledgement covered.
    let ack = sim.wait_line(LIMIT, "the master acknowledged changes", |l| {
        l.event == "ack"
            && l.conn == Some(conn)
            && l.body["changes"].as_array().is_some_and(|c| !c.is_empty())
    });
    assert!(ack.u64("frames").is_some_and(|n| n >= 1));
    assert!(
        sim.lines()
            .iter()
            .filter(|l| l.event == "sent")
            .all(|l| l.conn == Some(conn)),
        "one connection, every frame on it"
    );
    drop(master);
    assert!(
        sim.terminate().success(),
        "the sim stops cleanly on SIGTERM"
    );
}

const TOGGLING: &str = r#"
common_address = 47

[[point]]
ioa = 100
type = "M_SP_TB_1"

[[schedule]]
kind = "toggle"
ioa = 100
every_ms = 150
"#;

#[test]
fn unacknowledged_changes_go_out_again_after_the_next_startdt() {
    let sim = Sim104::start(any_port(), TOGGLING);

    // A master that starts data transfer, acknowledges nothing and goes away.
    let mut a = RawMaster::connect(sim.addr());
    let a_conn = conn_of(&sim, &a.local_addr());
    a.startdt();
    sim.wait_until(LIMIT, "three changes went to the first master", |_| {
        let n = sim.sent_changes(a_conn).len();
        if n >= 3 {
            Ok(())
        } else {
            Err(format!("{n} so far"))
        }
    });
    drop(a);
    sim.wait_line(LIMIT, "the first connection closed", |l| {
        l.event == "closed" && l.conn == Some(a_conn)
    });
    let unacked = sim.sent_changes(a_conn);
    assert!(
        !sim.events("ack").iter().any(|l| l.conn == Some(a_conn)),
        "the raw master acknowledged nothing"
    );

    // The next master's STARTDT gets them again, oldest first, with their time tags.
    let master = Master::start(&[(sim.addr(), Init::None)], CA, &[(100, "M_SP_TB_1")])
        .expect("start the c104 master");
    let fail = |e: anyhow::Error| -> ! { panic!("{e:?}\n{}", sim.report()) };
    let started = sim.wait_line(LIMIT, "the second master started", |l| {
        l.event == "started" && l.conn != Some(a_conn)
    });
    let b_conn = started.conn.expect("a started line names its connection");
    assert_eq!(started.body["previous"], serde_json::Value::Null);
    assert!(
        started
            .u64("resent")
            .is_some_and(|n| n >= unacked.len() as u64),
        "{started:?} does not resend the {} unacknowledged changes",
        unacked.len()
    );
    let resent = sim.wait_until(LIMIT, "the second master got the old changes", |_| {
        let sent = sim.sent_changes(b_conn);
        if sent.len() >= unacked.len() {
            Ok(sent)
        } else {
            Err(format!("{} sent so far", sent.len()))
        }
    });
    assert_eq!(
        resent[..unacked.len()],
        unacked[..],
        "the unacknowledged changes first, in order, with the same time tags"
    );
    for (change, time) in &unacked {
        let time = time.expect("M_SP_TB_1 changes are time tagged");
        master
            .wait_rx(LIMIT, &format!("change {change} came again"), |r| {
                r.ioa == 100 && r.cot == Asdu::SPONTANEOUS && r.time_ms == Some(time)
            })
            .unwrap_or_else(|e| fail(e));
    }
    let last = unacked.last().map_or(0, |(c, _)| *c);
    sim.wait_line(LIMIT, "the second master acknowledged them", |l| {
        l.event == "ack"
            && l.conn == Some(b_conn)
            && l.body["changes"]
                .as_array()
                .is_some_and(|c| c.iter().any(|n| n.as_u64() == Some(last)))
    });

    // One redundancy group: a STARTDT on a third connection takes the data from the second,
    // which is still started; the frame came on a connection that was not the active one.
    let mut c = RawMaster::connect(sim.addr());
    let c_conn = conn_of(&sim, &c.local_addr());
    c.startdt();
    let took = sim.wait_line(LIMIT, "the third master started", |l| {
        l.event == "started" && l.conn == Some(c_conn)
    });
    assert_eq!(took.u64("previous"), Some(b_conn), "{took:?}");
    let startdt = sim.wait_line(LIMIT, "the STARTDT was logged as inactive", |l| {
        l.event == "inactive" && l.conn == Some(c_conn)
    });
    assert_eq!(startdt.str("frame"), Some("U"));
    assert_eq!(startdt.str("detail"), Some("STARTDT_ACT"));
    sim.wait_until(
        LIMIT,
        "three new changes went to the third master",
        |lines| {
            let n = lines
                .iter()
                .filter(|l| l.index > took.index && l.event == "sent" && l.conn == Some(c_conn))
                .count();
            if n >= 3 {
                Ok(())
            } else {
                Err(format!("{n} so far"))
            }
        },
    );
    let after: Vec<LogLine> = sim
        .lines()
        .into_iter()
        .filter(|l| l.index > took.index && l.event == "sent" && l.conn == Some(b_conn))
        .collect();
    assert!(
        after.is_empty(),
        "the second connection got data after the third started: {after:?}"
    );
    assert_eq!(
        master.state(0).unwrap_or_else(|e| fail(e)),
        LinkState::Open,
        "the old connection stays open"
    );
    drop(c);
    drop(master);
    assert!(sim.terminate().success());
}
