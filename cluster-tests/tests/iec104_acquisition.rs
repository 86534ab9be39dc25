//! IEC 104 acquisition against devices we did not write: a c104 server (lib60870-C) as a
//! simple field device, and `py/bad_104_device.py`, a controlled station on plain sockets that
//! misbehaves on purpose. Each test runs a real three-node cluster and judges what reaches
//! `point list` on every node and a c104 master upstream (through the 104 forwarder), what
//! the device saw (its commands, its STARTDT acts, its connections), and the nodes' logs.
//!
//! The RTUs run with short timers (t0 2 s, t1 3 s, t2 1 s, t3 5 s); a c104 server that must
//! acknowledge a request it does not answer is started with t2 = 1 s (c104's is 10 s).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fepha_cluster_tests::field::{device_addr, index_named, points, rtus, wait_points};
use fepha_cluster_tests::master::{
    Asdu, C104Server, DeviceEvent, Dir, Init, LinkState, Master, PointValue, RawDevice,
};
use fepha_cluster_tests::{Cluster, Proxy};
use serde_json::Value;

/// The device's common address, and the forwarder's.
const CA: u16 = 5;
const HEALTHY_CA: u16 = 6;
const UP_CA: u16 = 47;
const FWD_PORT: u16 = 2404;
const DEV_PORT: u16 = 2414;
const LIMIT: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------ site

/// A 104 RTU at `endpoint` with short timers (t0 2 s, t1 3 s, t2 1 s, t3 5 s), a GI after
/// STARTDT only, acknowledge after commit; `extra` goes into its [rtu.iec104] table.
fn rtu(id: &str, endpoint: SocketAddr, ca: u16, extra: &str) -> String {
    format!(
        r#"
[[rtu]]
id = "{id}"
protocol = "iec104"
standby = "probe"
poll_interval_ms = 200
  [rtu.iec104]
  common_address = {ca}
  t0_s = 2
  t1_s = 3
  t2_s = 1
  t3_s = 5
  gi_period_s = 0
  ack_after_commit = true
  command_timeout_ms = 2000
  {extra}
  [[rtu.channel]]
  name = "lan"
  endpoints = ["{endpoint}"]
"#
    )
}

fn point(id: &str, rtu: &str, kind: &str, ty: &str, ioa: u32, extra: &str) -> String {
    format!(
        "\n[[point]]\nid = \"{id}\"\nrtu = \"{rtu}\"\nkind = \"{kind}\"\ntype = \"{ty}\"\n\
         ioa = {ioa}\n{extra}\n"
    )
}

/// The forwarder every test has: point → IOA at common address 47.
fn forwarder(map: &[(&str, u32)]) -> String {
    let mut s = format!(
        "\n[[forwarder]]\nname = \"cc\"\nport = {FWD_PORT}\ncommon_address = {UP_CA}\n\
         command_timeout_ms = 4000\n"
    );
    for (p, ioa) in map {
        s.push_str(&format!(
            "  [[forwarder.map]]\n  point = \"{p}\"\n  ioa = {ioa}\n"
        ));
    }
    s
}

fn site(parts: &[String]) -> String {
    let mut s = String::from("[site]\nname = \"iec104 acquisition\"\n");
    for p in parts {
        s.push_str(p);
    }
    s
}

/// The second RTU of the fault tests: a healthy c104 server with one float at IOA 100,
/// `ok.v` upstream at IOA 4001.
fn healthy_rtu(endpoint: SocketAddr) -> Vec<String> {
    vec![
        rtu("ok", endpoint, HEALTHY_CA, ""),
        point("ok.v", "ok", "measured", "M_ME_TF_1", 100, ""),
    ]
}

fn healthy_device(c: &Cluster) -> C104Server {
    let dev =
        C104Server::start(device_addr(c, 1, DEV_PORT)).expect("start the healthy c104 server");
    dev.add_point(HEALTHY_CA, 100, "M_ME_TF_1", Some(1.0.into()))
        .expect("add the healthy point");
    dev
}

/// The healthy RTU's point takes a new value (sent spontaneously) and every node has it.
fn healthy_updates(c: &Cluster, dev: &C104Server, value: f64) {
    c.wait_until(&format!("the healthy device sends ok.v = {value}"), || {
        dev.set(HEALTHY_CA, 100, value, &[], Some("SPONTANEOUS"))
            .map_err(|e| format!("{e:#}"))?
            .then_some(())
            .ok_or("no started connection to the healthy device".to_owned())
    });
    wait_points(c, &[0, 1, 2], &[("ok.v", value)]);
}

// ------------------------------------------------------------------ helpers

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit in i64")
}

fn forwarder_addr(c: &Cluster, i: usize) -> SocketAddr {
    SocketAddr::new(c.ip(i), FWD_PORT)
}

fn check<T>(c: &Cluster, m: &Master, r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => c.fail(&format!("{e:#}\n{}", m.stderr_tail(20))),
    }
}

fn check_dev<T>(c: &Cluster, dev: &RawDevice, r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => c.fail(&format!("{e:#}\n{}", dev.stderr_tail(20))),
    }
}

/// A point as `point list --json` shows it, with its time.
#[derive(Debug, Clone)]
struct Listed {
    value: Option<String>,
    number: Option<f64>,
    time_ms: u64,
}

fn listed(c: &Cluster, i: usize) -> Result<BTreeMap<String, Listed>, String> {
    let out = c.cli(i, &["point", "list", "--json"]);
    if !out.success() {
        return Err(format!("point list: {}", out.stderr.trim()));
    }
    let list: Vec<Value> =
        serde_json::from_str(&out.stdout).map_err(|e| format!("point list --json: {e}"))?;
    Ok(list
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap_or_default().to_owned(),
                Listed {
                    value: p["value"].as_str().map(str::to_owned),
                    number: p["number"].as_f64(),
                    time_ms: p["time_ms"].as_u64().unwrap_or(0),
                },
            )
        })
        .collect())
}

/// Waits until every node has `id` = `number` with the device's time tag `time_ms`.
fn wait_listed(c: &Cluster, id: &str, number: f64, time_ms: i64) {
    c.wait_until(
        &format!("every node has {id} = {number} at {time_ms}"),
        || {
            for i in 0..3 {
                let p = listed(c, i)?
                    .remove(id)
                    .ok_or(format!("{} has no point {id}", c.name(i)))?;
                if p.number != Some(number) || i64::try_from(p.time_ms).ok() != Some(time_ms) {
                    return Err(format!("{} has {id} = {p:?}", c.name(i)));
                }
            }
            Ok(())
        },
    );
}

/// Waits until every node has `id` invalid and not topical.
fn wait_link_down(c: &Cluster, id: &str) {
    c.wait_until(
        &format!("every node has {id} invalid and not topical"),
        || {
            for i in 0..3 {
                let p = points(c, i)?
                    .remove(id)
                    .ok_or(format!("{} has no point {id}", c.name(i)))?;
                if !(p.invalid && p.not_topical) {
                    return Err(format!("{} has {id} = {p:?}", c.name(i)));
                }
            }
            Ok(())
        },
    );
}

/// The RTU's owner, once it has one.
fn owner_of(c: &Cluster, rtu: &str) -> usize {
    let name = c.wait_until(&format!("RTU {rtu} has an owner"), || {
        let view = rtus(c, 0)?.remove(rtu).ok_or(format!("no RTU {rtu}"))?;
        if view.owner.is_empty() {
            Err(format!("RTU {rtu} has no owner: {view:?}"))
        } else {
            Ok(view.owner)
        }
    });
    index_named(c, &name)
}

/// Every node's whole log.
fn logs(c: &Cluster) -> Vec<(String, String)> {
    (0..c.len())
        .map(|i| {
            let text = std::fs::read_to_string(&c.node(i).log_path).unwrap_or_default();
            (c.name(i).to_owned(), text)
        })
        .collect()
}

/// The log lines (of any node) that contain every one of `needles`.
fn log_lines(c: &Cluster, needles: &[&str]) -> Vec<String> {
    logs(c)
        .into_iter()
        .flat_map(|(name, text)| {
            text.lines()
                .filter(|l| needles.iter().all(|n| l.contains(n)))
                .map(|l| format!("{name}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn wait_log(c: &Cluster, what: &str, needles: &[&str]) -> String {
    c.wait_until(&format!("a node logs {what}"), || {
        log_lines(c, needles)
            .into_iter()
            .next()
            .ok_or(format!("no log line with {needles:?}"))
    })
}

/// No node panicked, and none logged the healthy RTU's link as failed.
fn no_panics(c: &Cluster) {
    let panics = log_lines(c, &["panicked"]);
    assert!(panics.is_empty(), "a node panicked:\n{}", panics.join("\n"));
}

/// The healthy RTU's link never failed.
fn healthy_never_failed(c: &Cluster) {
    let failed = log_lines(c, &["104 link failed", "rtu=ok"]);
    assert!(
        failed.is_empty(),
        "the healthy RTU's link failed:\n{}",
        failed.join("\n")
    );
    assert_eq!(
        rtu_metric_all(c, "fepha_acquisition_failures_total", "ok"),
        0.0,
        "failures counted for the healthy RTU"
    );
}

/// The faulty RTU's failed links are counted.
fn failures_counted(c: &Cluster) {
    let counted = rtu_metric_all(c, "fepha_acquisition_failures_total", "bay");
    assert!(counted >= 1.0, "no failure counted for bay");
    eprintln!("fepha_acquisition_failures_total{{rtu=\"bay\"}} over the nodes: {counted}");
}

/// A counter summed over the node's series that carry label `rtu`.
fn rtu_metric(c: &Cluster, i: usize, name: &str, rtu: &str) -> f64 {
    let text = c.metrics(i).unwrap_or_default();
    let label = format!("rtu=\"{rtu}\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') && rest.contains(&label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rtu_metric_all(c: &Cluster, name: &str, rtu: &str) -> f64 {
    (0..c.len()).map(|i| rtu_metric(c, i, name, rtu)).sum()
}

/// The SIQ/DIQ byte of `ioa` in a received M_SP_NA_1 / M_DP_NA_1 (one byte per object, SQ=0).
fn indication_byte(a: &Asdu, ioa: u32) -> Option<u8> {
    let bytes: Vec<u8> = (0..a.hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(a.hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    if !(a.type_id == 1 || a.type_id == 3) || bytes.get(1)? & 0x80 != 0 {
        return None;
    }
    bytes.get(6..)?.chunks(4).find_map(|o| {
        let got = u32::from(*o.first()?) | u32::from(*o.get(1)?) << 8 | u32::from(*o.get(2)?) << 16;
        (got == ioa).then(|| o.get(3).copied())?
    })
}

/// The connection numbers of the device's connections from node `i`.
fn conns_from(c: &Cluster, dev: &RawDevice, i: usize) -> Vec<u64> {
    let ip = c.ip(i).to_string();
    dev.events()
        .iter()
        .filter(|e| e.kind == "accepted")
        .filter(|e| {
            e.str("peer")
                .and_then(|p| p.rsplit_once(':'))
                .map(|(h, _)| h)
                == Some(&ip)
        })
        .filter_map(|e| e.conn)
        .collect()
}

fn peer_ip(peer: &str) -> Option<IpAddr> {
    peer.rsplit_once(':')?.0.parse().ok()
}

/// `n` connections (after `mark`) on which the device got a STARTDT act and that then closed,
/// with why each closed.
fn wait_failed_attempts(c: &Cluster, dev: &RawDevice, mark: u64, n: usize) -> Vec<String> {
    c.wait_until(
        &format!("{n} started attempts were closed and retried"),
        || {
            let events = dev.events();
            let started: Vec<u64> = events
                .iter()
                .filter(|e| e.seq > mark && e.is_u_rx("STARTDT_ACT"))
                .filter_map(|e| e.conn)
                .collect();
            let closed: Vec<String> = started
                .iter()
                .filter_map(|conn| {
                    events
                        .iter()
                        .find(|e| e.kind == "closed" && e.conn == Some(*conn))
                        .map(|e| format!("conn {conn}: {}", e.str("why").unwrap_or("")))
                })
                .collect();
            if closed.len() >= n {
                Ok(closed)
            } else {
                Err(format!(
                    "STARTDT on {started:?}, closed: {closed:?}\n{}",
                    dev.report()
                ))
            }
        },
    )
}

// ------------------------------------------------------------------ 1. data

#[test]
fn points_of_a_c104_device_reach_every_node_and_a_master_upstream() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let dev = C104Server::start(device_addr(&c, 0, DEV_PORT)).expect("start the c104 server");
    for (ioa, ty, v) in [
        (102, "M_SP_TB_1", Value::from(true)),
        (101, "M_DP_TB_1", Value::from(2)),
        (201, "M_ME_TF_1", Value::from(12.5)),
        (202, "M_ME_NA_1", Value::from(0.5)),
        (203, "M_ST_TB_1", Value::from(7)),
        (204, "M_BO_NA_1", Value::from(165)),
        (301, "M_IT_NA_1", Value::from(70000)),
    ] {
        dev.add_point(CA, ioa, ty, Some(v))
            .unwrap_or_else(|e| panic!("add {ioa} {ty}: {e:#}"));
    }
    // The same IOA at another common address of the device: a point of its own.
    dev.add_point(7, 102, "M_SP_NA_1", Some(false.into()))
        .expect("add the point at common address 7");
    let parts = vec![
        rtu("bay", dev.addr(), CA, "counter_period_s = 3600"),
        point("bay.trip", "bay", "single", "M_SP_TB_1", 102, ""),
        point("bay.breaker", "bay", "double", "M_DP_TB_1", 101, ""),
        point("bay.current", "bay", "measured", "M_ME_TF_1", 201, ""),
        point(
            "bay.voltage",
            "bay",
            "measured",
            "M_ME_NA_1",
            202,
            "scale = 24.0",
        ),
        point("bay.tap", "bay", "step", "M_ST_TB_1", 203, ""),
        point("bay.alarms", "bay", "bitstring", "M_BO_NA_1", 204, ""),
        point("bay.energy", "bay", "counter", "M_IT_NA_1", 301, ""),
        point(
            "bay.other",
            "bay",
            "single",
            "M_SP_NA_1",
            102,
            "common_address = 7",
        ),
        // The device has no such point: it never reports it.
        point("bay.never", "bay", "single", "M_SP_NA_1", 110, ""),
        forwarder(&[
            ("bay.trip", 1001),
            ("bay.breaker", 1002),
            ("bay.other", 1003),
            ("bay.never", 1010),
            ("bay.current", 2001),
            ("bay.voltage", 2002),
            ("bay.tap", 2003),
            ("bay.alarms", 2004),
            ("bay.energy", 3001),
        ]),
    ];
    c.apply_ok(0, &site(&parts));

    // The GI after STARTDT (and the counter interrogation) populate every point, everywhere.
    wait_points(
        &c,
        &[0, 1, 2],
        &[
            ("bay.trip", 1.0),
            ("bay.breaker", 2.0),
            ("bay.other", 0.0),
            ("bay.current", 12.5),
            ("bay.voltage", 12.0),
            ("bay.tap", 7.0),
            ("bay.alarms", 165.0),
            ("bay.energy", 70000.0),
        ],
    );
    for i in 0..3 {
        let never = listed(&c, i).expect("point list")["bay.never"].clone();
        assert!(
            never.value.is_none(),
            "{} has a value for a point the device never reported: {never:?}",
            c.name(i)
        );
    }

    // Upstream, a station interrogation answers every point; the one never read is invalid.
    let m = Master::start(
        &[(forwarder_addr(&c, leader), Init::None)],
        UP_CA,
        &[
            (1001, "M_SP_NA_1"),
            (1002, "M_DP_NA_1"),
            (1003, "M_SP_NA_1"),
            (1010, "M_SP_NA_1"),
            (2001, "M_ME_NC_1"),
            (2002, "M_ME_NC_1"),
            (2003, "M_ST_NA_1"),
            (2004, "M_BO_NA_1"),
            (3001, "M_IT_NA_1"),
        ],
    )
    .expect("start the c104 master");
    check(&c, &m, m.wait_state(0, LinkState::Open, LIMIT));
    let mark = m.mark();
    assert!(
        check(&c, &m, m.interrogation(0)),
        "GI not confirmed\n{}",
        m.report()
    );
    let gi = |ioa: u32| {
        check(
            &c,
            &m,
            m.wait_rx(LIMIT, &format!("IOA {ioa} in the GI"), |r| {
                r.seq > mark && r.ioa == ioa && r.cot == Asdu::INTERROGATED
            }),
        )
    };
    let expect = [
        (1001, PointValue::Bool(true)),
        (1002, PointValue::Int(2)),
        (1003, PointValue::Bool(false)),
        (2001, PointValue::Float(12.5)),
        (2002, PointValue::Float(12.0)),
        (2003, PointValue::Int(7)),
        (2004, PointValue::Int(165)),
    ];
    for (ioa, want) in expect {
        let r = gi(ioa);
        assert_eq!(r.value, want, "IOA {ioa}: {r:?}\n{}", m.report());
        assert!(r.quality.is_empty(), "IOA {ioa} quality {:?}", r.quality);
    }
    let never = gi(1010);
    assert!(
        never.invalid(),
        "a point the device never reported is not invalid upstream: {never:?}"
    );
    let mark = m.mark();
    assert!(check(&c, &m, m.counter_interrogation(0)));
    let energy = check(
        &c,
        &m,
        m.wait_rx(LIMIT, "the counter upstream", |r| {
            r.seq > mark && r.ioa == 3001
        }),
    );
    assert_eq!(energy.value.as_i64(), Some(70000), "{energy:?}");
    drop(m);

    // A spontaneous change carries the device's time tag (an hour ago, not the time fepha
    // received it) and the quality bits the device set, to every node and upstream.
    let m = Master::start(
        &[(forwarder_addr(&c, leader), Init::None)],
        UP_CA,
        &[(1001, "M_SP_TB_1"), (2001, "M_ME_TF_1")],
    )
    .expect("start the c104 master");
    check(&c, &m, m.wait_state(0, LinkState::Open, LIMIT));
    let mark = m.mark();
    let now = now_ms();
    let tagged = now - 3_600_000 - now % 1000 + 123;
    assert!(
        dev.set_at(
            CA,
            102,
            false,
            &["Blocked", "Substituted"],
            "SPONTANEOUS",
            tagged
        )
        .expect("set the trip"),
        "the c104 server sent nothing: no started connection"
    );
    let tagged2 = tagged + 4567;
    assert!(
        dev.set_at(CA, 201, 99.5, &[], "SPONTANEOUS", tagged2)
            .expect("set the current")
    );
    let trip = check(
        &c,
        &m,
        m.wait_rx(LIMIT, "the trip's spontaneous change upstream", |r| {
            r.seq > mark && r.ioa == 1001 && r.cot == Asdu::SPONTANEOUS
        }),
    );
    assert_eq!(trip.value, PointValue::Bool(false), "{trip:?}");
    assert_eq!(
        trip.time_ms,
        Some(tagged),
        "upstream time tag is not the device's ({} ms off)\n{}",
        trip.time_ms.map_or(0, |t| t - tagged),
        m.report()
    );
    assert!(
        trip.has_quality("Blocked") && trip.has_quality("Substituted") && !trip.invalid(),
        "the device's BL/SB bits did not reach the master: {:?}",
        trip.quality
    );
    wait_listed(&c, "bay.trip", 0.0, tagged);
    wait_listed(&c, "bay.current", 99.5, tagged2);
    let current = check(
        &c,
        &m,
        m.wait_rx(LIMIT, "the current's spontaneous change upstream", |r| {
            r.seq > mark && r.ioa == 2001 && r.cot == Asdu::SPONTANEOUS
        }),
    );
    assert_eq!(current.value, PointValue::Float(99.5), "{current:?}");
    assert_eq!(current.time_ms, Some(tagged2), "{current:?}");
    assert!(current.quality.is_empty(), "{current:?}");
    no_panics(&c);
}

/// A measurement whose value and quality change together (the device sets OV with a new
/// value) is a change like any other: it reaches the master spontaneously, with the bit.
#[test]

fn a_measurement_that_changes_with_its_quality_is_sent_upstream_at_once() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let dev = C104Server::start(device_addr(&c, 0, DEV_PORT)).expect("start the c104 server");
    dev.add_point(CA, 201, "M_ME_TF_1", Some(12.5.into()))
        .expect("add the current");
    let parts = vec![
        rtu("bay", dev.addr(), CA, ""),
        point("bay.current", "bay", "measured", "M_ME_TF_1", 201, ""),
        forwarder(&[("bay.current", 2001)]),
    ];
    c.apply_ok(0, &site(&parts));
    wait_points(&c, &[0, 1, 2], &[("bay.current", 12.5)]);
    let m = Master::start(
        &[(forwarder_addr(&c, leader), Init::None)],
        UP_CA,
        &[(2001, "M_ME_TF_1")],
    )
    .expect("start the c104 master");
    check(&c, &m, m.wait_state(0, LinkState::Open, LIMIT));
    let mark = m.mark();
    let now = now_ms();
    let tagged = now - 60_000 - now % 1000 + 321;
    assert!(
        dev.set_at(CA, 201, 101.5, &["Overflow"], "SPONTANEOUS", tagged)
            .expect("set the current")
    );
    wait_listed(&c, "bay.current", 101.5, tagged);
    let current = check(
        &c,
        &m,
        m.wait_rx(LIMIT, "the current's spontaneous change upstream", |r| {
            r.seq > mark && r.ioa == 2001 && r.cot == Asdu::SPONTANEOUS
        }),
    );
    assert_eq!(current.value, PointValue::Float(101.5), "{current:?}");
    assert_eq!(current.time_ms, Some(tagged), "{current:?}");
    assert!(
        current.has_quality("Overflow"),
        "the device's OV bit did not reach the master: {:?}",
        current.quality
    );
    no_panics(&c);
}

/// Two different reports with the same time tag (a device whose clock was never set stamps
/// every change alike; a contact that bounces within a millisecond) are two changes: each
/// reaches every node and the master. Only a report the log already has (same point, time,
/// value) is one the device sends again.
#[test]

fn changes_with_the_same_time_tag_are_all_taken() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let dev = RawDevice::start(device_addr(&c, 0, DEV_PORT), CA, "good", None)
        .expect("start the raw device");
    check_dev(&c, &dev, dev.set(1, true));
    let parts = vec![
        rtu("bay", dev.addr(), CA, ""),
        point("bay.s", "bay", "single", "M_SP_NA_1", 1, ""),
        forwarder(&[("bay.s", 1001)]),
    ];
    c.apply_ok(0, &site(&parts));
    wait_points(&c, &[0, 1, 2], &[("bay.s", 1.0)]);
    let m = Master::start(
        &[(forwarder_addr(&c, leader), Init::None)],
        UP_CA,
        &[(1001, "M_SP_TB_1")],
    )
    .expect("start the c104 master");
    check(&c, &m, m.wait_state(0, LinkState::Open, LIMIT));
    let mark = m.mark();
    // 2000-01-01 00:00:00.000 UTC: a clock that was never set.
    let unset = 946_684_800_000;
    for value in [false, true, false] {
        assert_eq!(check_dev(&c, &dev, dev.spont(1, value, Some(unset))), 1);
        // One at a time: each is committed (and acknowledged) before the next.
        let want = if value { 1.0 } else { 0.0 };
        c.wait_until(&format!("every node has bay.s = {want}"), || {
            for i in 0..3 {
                let p = points(&c, i)?
                    .remove("bay.s")
                    .ok_or("no bay.s".to_owned())?;
                if p.number != Some(want) {
                    let repeated = rtu_metric_all(&c, "fepha_iec104_repeated_reports_total", "bay");
                    return Err(format!(
                        "{} has {p:?}; fepha_iec104_repeated_reports_total{{rtu=\"bay\"}} = {repeated}",
                        c.name(i)
                    ));
                }
            }
            Ok(())
        });
    }
    let got: Vec<PointValue> = c.wait_until("the master got all three changes", || {
        let got: Vec<PointValue> = m
            .received()
            .into_iter()
            .filter(|r| r.seq > mark && r.ioa == 1001 && r.cot == Asdu::SPONTANEOUS)
            .map(|r| r.value)
            .collect();
        if got.len() >= 3 {
            Ok(got)
        } else {
            Err(format!("{got:?}\n{}", m.report()))
        }
    });
    assert_eq!(
        got,
        [false, true, false].map(PointValue::Bool),
        "{}",
        m.report()
    );
    no_panics(&c);
}

/// A device answers an interrogation before the reports still in its queue: a change it has
/// queued shows in the answer first, then comes with its time tag. Upstream it is one event,
/// with the device's time tag. A change that only an interrogation shows is still an event,
/// stamped when the answer came, once the wait for its report is over.
#[test]
fn a_change_an_interrogation_shows_before_its_report_is_one_event() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let dev = RawDevice::start(device_addr(&c, 0, DEV_PORT), CA, "good", None)
        .expect("start the raw device");
    check_dev(&c, &dev, dev.set(1, false));
    let parts = vec![
        rtu("bay", dev.addr(), CA, "").replace("gi_period_s = 0", "gi_period_s = 1"),
        point("bay.s", "bay", "single", "M_SP_NA_1", 1, ""),
        forwarder(&[("bay.s", 1001)]),
    ];
    c.apply_ok(0, &site(&parts));
    wait_points(&c, &[0, 1, 2], &[("bay.s", 0.0)]);
    let m = Master::start(
        &[(forwarder_addr(&c, leader), Init::None)],
        UP_CA,
        &[(1001, "M_SP_TB_1")],
    )
    .expect("start the c104 master");
    check(&c, &m, m.wait_state(0, LinkState::Open, LIMIT));
    let mark = m.mark();
    let tagged = now_ms() - 500;
    check_dev(&c, &dev, dev.queue(1, true, tagged));
    wait_points(&c, &[0, 1, 2], &[("bay.s", 1.0)]);
    // Then a change the device reports only through its interrogations.
    let before = now_ms();
    check_dev(&c, &dev, dev.set(1, false));
    wait_points(&c, &[0, 1, 2], &[("bay.s", 0.0)]);
    // Events go upstream in log order: once the second is there, so is anything before it.
    let got = c.wait_until("the master got the interrogation's own event", || {
        let got: Vec<(PointValue, Option<i64>)> = m
            .received()
            .into_iter()
            .filter(|r| r.seq > mark && r.ioa == 1001 && r.cot == Asdu::SPONTANEOUS)
            .map(|r| (r.value, r.time_ms))
            .collect();
        match got.last() {
            Some((PointValue::Bool(false), _)) => Ok(got),
            _ => Err(format!("{got:?}\n{}", m.report())),
        }
    });
    assert_eq!(
        got.first(),
        Some(&(PointValue::Bool(true), Some(tagged))),
        "the queued change, with the device's time tag\n{}",
        m.report()
    );
    assert_eq!(
        got.len(),
        2,
        "one event per change: {got:?}\n{}",
        m.report()
    );
    let stamped = got.get(1).and_then(|(_, t)| *t).unwrap_or(0);
    assert!(
        (before..=now_ms()).contains(&stamped),
        "the interrogation's event is stamped when the answer came: {stamped} not in [{before}, now]"
    );
    no_panics(&c);
}

/// With ack_after_commit the owner acknowledges an I frame only once its change is in the
/// log: while the other nodes are frozen (no quorum; the owner's lease, 6 s here, still
/// runs) a spontaneous change is not acknowledged, even after t2 (1 s); once they are back
/// it is committed and acknowledged.
#[test]
fn a_frame_is_acknowledged_only_once_its_change_is_committed() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    let dev = RawDevice::start(device_addr(&c, 0, DEV_PORT), CA, "good", None)
        .expect("start the raw device");
    check_dev(&c, &dev, dev.set(1, true));
    let parts = vec![
        "\n[timers]\nsession_ttl_ms = 6000\n".to_owned(),
        rtu("bay", dev.addr(), CA, ""),
        point("bay.s", "bay", "single", "M_SP_NA_1", 1, ""),
    ];
    c.apply_ok(0, &site(&parts));
    wait_points(&c, &[0, 1, 2], &[("bay.s", 1.0)]);
    let owner = owner_of(&c, "bay");
    let start = check_dev(
        &c,
        &dev,
        dev.wait_event(LIMIT, "a STARTDT", |e| e.is_u_rx("STARTDT_ACT")),
    );
    let conn = start.conn.expect("a u event names its connection");
    // The interrogation's answer (ACTCON, data, ACTTERM) is acknowledged: N(R) = 3.
    let acked = |nr: u64| {
        move |e: &DeviceEvent| e.conn == Some(conn) && e.kind == "s" && e.u64("nr") >= Some(nr)
    };
    check_dev(
        &c,
        &dev,
        dev.wait_event(LIMIT, "the GI answer acknowledged", acked(3)),
    );

    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    for &i in &others {
        c.stop(i);
    }
    let mark = dev.mark();
    let sent = dev.spont(1, false, None);
    let until = Instant::now() + Duration::from_millis(2500);
    let mut early = None;
    while Instant::now() < until && early.is_none() {
        early = dev
            .events()
            .into_iter()
            .find(|e| e.seq > mark && (acked(4)(e) || (e.conn == Some(conn) && e.kind == "i")));
        std::thread::sleep(Duration::from_millis(50));
    }
    for &i in &others {
        c.cont(i);
    }
    assert_eq!(
        check_dev(&c, &dev, sent),
        1,
        "the change went out on no connection"
    );
    if let Some(e) = early {
        c.fail(&format!(
            "the owner acknowledged a frame whose change could not be committed: {}\n{}",
            e.body,
            dev.report()
        ));
    }
    let ack = check_dev(
        &c,
        &dev,
        dev.wait_event(LIMIT, "the change acknowledged once committed", |e| {
            e.seq > mark && (acked(4)(e) || (e.kind == "closed" && e.conn == Some(conn)))
        }),
    );
    assert_eq!(
        ack.kind,
        "s",
        "the connection closed instead: {}",
        dev.report()
    );
    wait_points(&c, &[0, 1, 2], &[("bay.s", 0.0)]);
    no_panics(&c);
}

// ------------------------------------------------------------------ 2. commands

/// A site with one 104 RTU on a c104 server holding `commands` (IOA, type, select before
/// operate required, answer) and a single point at IOA 102, each command point mapped
/// upstream at 5000 + its IOA - 500. Returns the cluster's leader, once the point is there.
fn command_site(
    c: &mut Cluster,
    commands: &[(&str, u32, &str, &str, bool, &str)],
) -> (usize, C104Server) {
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    // It acknowledges within 1 s, well inside the RTU's t1 (3 s), also a command it never
    // answers.
    let dev = C104Server::start_with_t2(device_addr(c, 0, DEV_PORT), Duration::from_secs(1))
        .expect("start the c104 server");
    dev.add_point(CA, 102, "M_SP_TB_1", Some(true.into()))
        .expect("add the trip");
    let mut parts = vec![
        rtu("bay", dev.addr(), CA, ""),
        point("bay.trip", "bay", "single", "M_SP_TB_1", 102, ""),
    ];
    let mut map = vec![("bay.trip".to_owned(), 1001)];
    for (id, ioa, ty, kind, select, answer) in commands {
        dev.add_command(CA, *ioa, ty, *select, answer)
            .unwrap_or_else(|e| panic!("add command {ioa}: {e:#}"));
        parts.push(point(id, "bay", kind, ty, *ioa, ""));
        map.push(((*id).to_owned(), 4500 + ioa));
    }
    let map: Vec<(&str, u32)> = map.iter().map(|(p, i)| (p.as_str(), *i)).collect();
    parts.push(forwarder(&map));
    c.apply_ok(0, &site(&parts));
    wait_points(c, &[0, 1, 2], &[("bay.trip", 1.0)]);
    (leader, dev)
}

/// The master's answers for `ty` after `mark`: (cause, negative, select).
fn answers(m: &Master, mark: u64, ty: &str) -> Vec<(u8, bool, Option<bool>)> {
    m.asdus()
        .into_iter()
        .filter(|a| a.seq > mark && a.dir == Dir::Rx && a.ty == ty)
        .map(|a| (a.cot, a.negative, a.select))
        .collect()
}

/// Commands from an upstream master (select before operate, and a direct setpoint) and from
/// `point write` reach the device once, and its positive confirmation comes back. The c104
/// server, like lib60870 itself, confirms a direct command with ACTCON alone (ACTTERM is
/// optional in 60870-5-101/104); after a select it sends ACTTERM too.
#[test]

fn commands_reach_the_c104_device_and_its_confirmation_comes_back() {
    let mut c = Cluster::new();
    let (leader, dev) = command_site(
        &mut c,
        &[
            (
                "bay.cmd",
                501,
                "C_SC_NA_1",
                "single_command",
                true,
                "SUCCESS",
            ),
            (
                "bay.dcmd",
                502,
                "C_DC_NA_1",
                "double_command",
                false,
                "SUCCESS",
            ),
            ("bay.sp", 503, "C_SE_NC_1", "setpoint", false, "SUCCESS"),
        ],
    );
    let m = Master::start(
        &[(forwarder_addr(&c, leader), Init::None)],
        UP_CA,
        &[(1001, "M_SP_TB_1")],
    )
    .expect("start the c104 master");
    check(&c, &m, m.wait_state(0, LinkState::Open, LIMIT));
    let term = |mark: u64, ty: &str| {
        check(
            &c,
            &m,
            m.wait_asdu(LIMIT, &format!("the ACTTERM of {ty}"), |a| {
                a.seq > mark && a.dir == Dir::Rx && a.ty == ty && a.cot == Asdu::ACTTERM
            }),
        )
    };

    // Select before operate from the master: the device, which wants a select, executes it;
    // the master sees two positive ACTCONs and a positive ACTTERM.
    let mark = m.mark();
    let confirmed = check(&c, &m, m.command(0, 5001, "C_SC_NA_1", true, true));
    let cmd = dev
        .wait_command(LIMIT, "the device executed bay.cmd", |x| x.ioa == 501)
        .unwrap_or_else(|e| c.fail(&format!("{e:#}\n{}", m.report())));
    assert_eq!(cmd.value, PointValue::Bool(true), "{cmd:?}");
    assert!(
        confirmed,
        "the select-before-operate was not confirmed\n{}",
        m.report()
    );
    let t = term(mark, "C_SC_NA_1");
    assert!(!t.negative, "negative ACTTERM\n{}", m.report());
    assert_eq!(
        answers(&m, mark, "C_SC_NA_1"),
        [
            (Asdu::ACTCON, false, Some(true)),
            (Asdu::ACTCON, false, Some(false)),
            (Asdu::ACTTERM, false, Some(false))
        ],
        "{}",
        m.report()
    );

    // A setpoint, direct execute: the device confirms it with a positive ACTCON.
    let mark = m.mark();
    let confirmed = check(&c, &m, m.command(0, 5003, "C_SE_NC_1", 12.5, false));
    let sp = dev
        .wait_command(LIMIT, "the device got the setpoint", |x| x.ioa == 503)
        .unwrap_or_else(|e| c.fail(&format!("{e:#}\n{}", m.report())));
    assert_eq!(sp.value.as_f64(), Some(12.5), "{sp:?}");
    assert!(confirmed, "the setpoint was not confirmed\n{}", m.report());
    let t = term(mark, "C_SE_NC_1");
    assert!(
        !t.negative,
        "the device confirmed the setpoint, the master got a negative ACTTERM\n{}\n{}",
        m.report(),
        log_lines(&c, &["bay.sp"]).join("\n")
    );

    // `point write` on a follower, a direct double command: done once the device confirmed.
    let out = c.cli((leader + 1) % 3, &["point", "write", "bay.dcmd", "on"]);
    let dcmd = dev
        .wait_command(LIMIT, "the device got bay.dcmd", |x| x.ioa == 502)
        .unwrap_or_else(|e| c.fail(&format!("{e:#}")));
    assert_eq!(dcmd.value.as_i64(), Some(2), "double command ON: {dcmd:?}");
    assert!(
        out.success() && out.stdout.contains("done"),
        "point write bay.dcmd on: {out:?}"
    );
    assert_eq!(dev.commands().len(), 3, "{:?}", dev.commands());
    no_panics(&c);
}

/// A device that refuses a command (negative ACTCON) or never answers it: the master gets a
/// negative ACTCON, `point write` fails and says why, and the command reached the device once.
#[test]
fn a_command_the_device_refuses_or_ignores_is_negative_upstream() {
    let mut c = Cluster::new();
    let (leader, dev) = command_site(
        &mut c,
        &[
            (
                "bay.refused",
                504,
                "C_SC_NA_1",
                "single_command",
                false,
                "FAILURE",
            ),
            (
                "bay.ignored",
                505,
                "C_SC_NA_1",
                "single_command",
                false,
                "NONE",
            ),
        ],
    );
    let m = Master::start(
        &[(forwarder_addr(&c, leader), Init::None)],
        UP_CA,
        &[(1001, "M_SP_TB_1")],
    )
    .expect("start the c104 master");
    check(&c, &m, m.wait_state(0, LinkState::Open, LIMIT));
    let count = |ioa: u32| dev.commands().iter().filter(|x| x.ioa == ioa).count();
    for (ioa, id, why) in [
        (504, "bay.refused", "refused"),
        (505, "bay.ignored", "confirm"),
    ] {
        let up = 4500 + ioa;
        let mark = m.mark();
        let confirmed = check(&c, &m, m.command(0, up, "C_SC_NA_1", true, false));
        dev.wait_command(LIMIT, &format!("the device got {id}"), |x| x.ioa == ioa)
            .unwrap_or_else(|e| c.fail(&format!("{e:#}\n{}", m.report())));
        assert!(!confirmed, "{id} was confirmed upstream\n{}", m.report());
        let got = check(
            &c,
            &m,
            m.wait_asdu(LIMIT, &format!("the answer to {id}"), |a| {
                a.seq > mark && a.dir == Dir::Rx && a.ioas == [up] && a.cot != Asdu::ACT
            }),
        );
        assert!(
            got.cot == Asdu::ACTCON && got.negative,
            "{id}: the master's first answer is {got:?}, not a negative ACTCON\n{}",
            m.report()
        );
        assert!(
            !answers(&m, mark, "C_SC_NA_1")
                .iter()
                .any(|(_, neg, _)| !neg),
            "{id}: a positive answer upstream\n{}",
            m.report()
        );
        let out = c.cli(leader, &["point", "write", id, "on"]);
        assert!(!out.success(), "point write {id} succeeded: {out:?}");
        assert!(
            out.stderr.contains(why),
            "point write {id} does not say why ({why}): {out:?}"
        );
        assert_eq!(
            count(ioa),
            2,
            "{id} reached the device {} times, not twice",
            count(ioa)
        );
    }
    // The link is still good: a change still comes.
    assert!(
        dev.set(CA, 102, false, &[], Some("SPONTANEOUS"))
            .expect("set")
    );
    wait_points(&c, &[0, 1, 2], &[("bay.trip", 0.0)]);
    no_panics(&c);
}

// ------------------------------------------------------------------ 3. faults

#[test]
fn a_device_that_drops_the_link_is_invalid_upstream_until_it_is_back() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let addr = device_addr(&c, 0, DEV_PORT);
    let dev = C104Server::start(addr).expect("start the c104 server");
    dev.add_point(CA, 102, "M_SP_TB_1", Some(true.into()))
        .expect("add the trip");
    let ok = healthy_device(&c);
    let mut parts = vec![
        rtu("bay", addr, CA, ""),
        point("bay.trip", "bay", "single", "M_SP_TB_1", 102, ""),
    ];
    parts.extend(healthy_rtu(ok.addr()));
    parts.push(forwarder(&[("bay.trip", 1001), ("ok.v", 4001)]));
    c.apply_ok(0, &site(&parts));
    wait_points(&c, &[0, 1, 2], &[("bay.trip", 1.0), ("ok.v", 1.0)]);
    let m = Master::start(
        &[(forwarder_addr(&c, leader), Init::None)],
        UP_CA,
        &[(1001, "M_SP_TB_1"), (4001, "M_ME_TF_1")],
    )
    .expect("start the c104 master");
    check(&c, &m, m.wait_state(0, LinkState::Open, LIMIT));

    // The device goes away: the trip is invalid and not topical on every node and upstream
    // (spontaneously, and in a GI), while the healthy RTU keeps updating.
    let mark = m.mark();
    drop(dev);
    wait_link_down(&c, "bay.trip");
    let down = check(
        &c,
        &m,
        m.wait_rx(LIMIT, "the trip invalid upstream", |r| {
            r.seq > mark && r.ioa == 1001 && r.cot == Asdu::SPONTANEOUS
        }),
    );
    assert!(
        down.invalid() && down.has_quality("NonTopical"),
        "the lost link reached the master as {down:?}"
    );
    let mark = m.mark();
    assert!(check(&c, &m, m.interrogation(0)));
    let gi = check(
        &c,
        &m,
        m.wait_asdu(LIMIT, "the trip in the GI", |a| {
            a.seq > mark
                && a.dir == Dir::Rx
                && a.cot == Asdu::INTERROGATED
                && indication_byte(a, 1001).is_some()
        }),
    );
    let siq = indication_byte(&gi, 1001).unwrap_or(0);
    assert_eq!(
        siq & 0xC0,
        0xC0,
        "GI: the trip's SIQ is {siq:#04x}, not IV|NT"
    );
    for v in [2.0, 3.0, 4.0] {
        healthy_updates(&c, &ok, v);
    }
    let line = wait_log(&c, "the lost link of bay", &["104 link failed", "bay"]);
    eprintln!("the log says: {line}");
    assert!(
        rtu_metric_all(&c, "fepha_acquisition_failures_total", "bay") >= 1.0,
        "no failure counted for bay"
    );

    // It comes back on the same port with a new value: the owner connects again, the GI
    // after STARTDT brings it, upstream too.
    let dev = C104Server::start(addr).expect("restart the c104 server");
    dev.add_point(CA, 102, "M_SP_TB_1", Some(false.into()))
        .expect("add the trip");
    let mark = m.mark();
    wait_points(&c, &[0, 1, 2], &[("bay.trip", 0.0)]);
    let back = check(
        &c,
        &m,
        m.wait_rx(LIMIT, "the trip valid upstream again", |r| {
            r.seq > mark && r.ioa == 1001 && !r.invalid()
        }),
    );
    assert_eq!(back.value, PointValue::Bool(false), "{back:?}");
    assert!(back.quality.is_empty(), "{back:?}");
    healthy_updates(&c, &ok, 5.0);
    assert_eq!(
        dev.peers().expect("peers").startdt_acts,
        1,
        "the device saw more than one STARTDT after it came back"
    );
    no_panics(&c);
    failures_counted(&c);
    healthy_never_failed(&c);
}

/// The link breaks (a proxy in between resets everything) while the device keeps running,
/// and comes back: the interrogation after STARTDT reports the unchanged value with the time
/// tag of its last change (c104 answers a GI with the time-tagged type), and that must make
/// the point valid again; the link loss was a change of quality, not of the device's report.
#[test]

fn a_link_that_comes_back_makes_unchanged_points_valid_again() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    let dev = C104Server::start(device_addr(&c, 0, DEV_PORT)).expect("start the c104 server");
    dev.add_point(CA, 102, "M_SP_TB_1", Some(true.into()))
        .expect("add the trip");
    let proxy = Proxy::start(device_addr(&c, 2, DEV_PORT), dev.addr());
    let parts = vec![
        rtu("bay", proxy.addr(), CA, ""),
        point("bay.trip", "bay", "single", "M_SP_TB_1", 102, ""),
    ];
    c.apply_ok(0, &site(&parts));
    wait_points(&c, &[0, 1, 2], &[("bay.trip", 1.0)]);
    let now = now_ms();
    let tagged = now - 10_000 - now % 1000 + 42;
    assert!(
        dev.set_at(CA, 102, false, &[], "SPONTANEOUS", tagged)
            .expect("set the trip")
    );
    wait_listed(&c, "bay.trip", 0.0, tagged);

    proxy.deny_all();
    wait_link_down(&c, "bay.trip");
    proxy.allow_all();
    c.wait_until("every node has bay.trip valid again", || {
        for i in 0..3 {
            let p = points(&c, i)?
                .remove("bay.trip")
                .ok_or("no bay.trip".to_owned())?;
            if p.invalid || p.not_topical || p.number != Some(0.0) {
                let repeated = rtu_metric_all(&c, "fepha_iec104_repeated_reports_total", "bay");
                return Err(format!(
                    "{} has {p:?}; fepha_iec104_repeated_reports_total{{rtu=\"bay\"}} = {repeated}; \
                     STARTDT acts at the device: {:?}",
                    c.name(i),
                    dev.peers().map(|p| p.startdt_acts).ok()
                ));
            }
        }
        Ok(())
    });
    no_panics(&c);
}

/// A raw device in `mode` as RTU `bay` (one single point, IOA 1, `bay.s` upstream at 1001),
/// the healthy RTU beside it; returns once the healthy point is everywhere.
fn faulty_site(c: &mut Cluster, mode: &str) -> (RawDevice, C104Server) {
    c.bootstrap(&["voter", "voter", "voter"]);
    let dev = RawDevice::start(device_addr(c, 0, DEV_PORT), CA, mode, None)
        .expect("start the raw device");
    check_dev(c, &dev, dev.set(1, true));
    let ok = healthy_device(c);
    let mut parts = vec![
        rtu("bay", dev.addr(), CA, ""),
        point("bay.s", "bay", "single", "M_SP_NA_1", 1, ""),
    ];
    parts.extend(healthy_rtu(ok.addr()));
    parts.push(forwarder(&[("bay.s", 1001), ("ok.v", 4001)]));
    c.apply_ok(0, &site(&parts));
    wait_points(c, &[0, 1, 2], &[("ok.v", 1.0)]);
    (dev, ok)
}

/// The device behaves again: its point reaches every node.
fn recovers(c: &Cluster, dev: &RawDevice) {
    check_dev(c, dev, dev.set(1, false));
    check_dev(c, dev, dev.set_mode("good"));
    wait_points(c, &[0, 1, 2], &[("bay.s", 0.0)]);
}

#[test]
fn a_device_that_never_answers_or_refuses_startdt_is_retried() {
    let mut c = Cluster::new();
    let (dev, ok) = faulty_site(&mut c, "silent_startdt");
    // STARTDT unanswered: closed after t1 (3 s), tried again.
    let closed = wait_failed_attempts(&c, &dev, 0, 2);
    eprintln!("silent STARTDT: {closed:?}");
    let line = wait_log(&c, "the unanswered STARTDT", &["104 link failed", "t1"]);
    eprintln!("the log says: {line}");
    healthy_updates(&c, &ok, 2.0);
    // Closed at once on STARTDT: tried again.
    let mark = dev.mark();
    check_dev(&c, &dev, dev.set_mode("close_on_startdt"));
    let closed = wait_failed_attempts(&c, &dev, mark, 2);
    eprintln!("refused STARTDT: {closed:?}");
    let line = wait_log(&c, "the refused STARTDT", &["104 link failed", "closed"]);
    eprintln!("the log says: {line}");
    healthy_updates(&c, &ok, 3.0);
    recovers(&c, &dev);
    healthy_updates(&c, &ok, 4.0);
    no_panics(&c);
    failures_counted(&c);
    healthy_never_failed(&c);
}

#[test]
fn a_device_that_sends_a_wrong_send_sequence_number_is_cut_and_retried() {
    let mut c = Cluster::new();
    let (dev, ok) = faulty_site(&mut c, "bad_ns");
    let sent = check_dev(
        &c,
        &dev,
        dev.wait_event(LIMIT, "the device sent a bad N(S)", |e| {
            e.kind == "sent" && e.str("what") == Some("bad_ns")
        }),
    );
    let conn = sent.conn.expect("a sent event names its connection");
    check_dev(
        &c,
        &dev,
        dev.wait_event(LIMIT, "the cluster closed that connection", |e| {
            e.kind == "closed" && e.conn == Some(conn)
        }),
    );
    let line = wait_log(&c, "the bad N(S)", &["104 link failed", "N(S)"]);
    eprintln!("the log says: {line}");
    // Tried again (and cut again, the device still misbehaves).
    wait_failed_attempts(&c, &dev, sent.seq, 1);
    healthy_updates(&c, &ok, 2.0);
    recovers(&c, &dev);
    healthy_updates(&c, &ok, 3.0);
    no_panics(&c);
    failures_counted(&c);
    healthy_never_failed(&c);
}

#[test]
fn a_device_that_sends_an_unknown_type_is_logged_and_its_next_data_taken() {
    let mut c = Cluster::new();
    let (dev, ok) = faulty_site(&mut c, "unknown_type");
    let sent = check_dev(
        &c,
        &dev,
        dev.wait_event(LIMIT, "the device sent type 99", |e| {
            e.kind == "sent" && e.str("what") == Some("unknown_type")
        }),
    );
    let conn = sent.conn.expect("a sent event names its connection");
    // The change sent right after it (the point flipped to false) is taken.
    wait_points(&c, &[0, 1, 2], &[("bay.s", 0.0)]);
    let line = wait_log(&c, "the unknown type", &["rtu=bay", "unknown type id 99"]);
    eprintln!("the log says: {line}");
    assert!(
        rtu_metric_all(&c, "fepha_iec104c_undecodable_asdus_total", "bay")
            + rtu_metric_all(&c, "fepha_iec104c_unknown_objects_total", "bay")
            >= 1.0,
        "the unknown type was not counted"
    );
    // Every frame of that connection is acknowledged (ACTCON, GI data, ACTTERM, type 99,
    // the change: N(R) = 5), unless the cluster cut the link for it.
    let acked = dev.wait_event(LIMIT, "the device's frames were all acknowledged", |e| {
        e.conn == Some(conn) && (e.kind == "closed" || (e.kind == "s" && e.u64("nr") >= Some(5)))
    });
    let acked = check_dev(&c, &dev, acked);
    eprintln!("after the unknown type: {}", acked.body);
    healthy_updates(&c, &ok, 2.0);
    no_panics(&c);
    healthy_never_failed(&c);
}

#[test]
fn a_device_that_sends_garbage_is_cut_and_retried() {
    let mut c = Cluster::new();
    let (dev, ok) = faulty_site(&mut c, "garbage");
    let sent = check_dev(
        &c,
        &dev,
        dev.wait_event(LIMIT, "the device sent garbage", |e| {
            e.kind == "sent" && e.str("what") == Some("garbage")
        }),
    );
    let conn = sent.conn.expect("a sent event names its connection");
    check_dev(
        &c,
        &dev,
        dev.wait_event(LIMIT, "the cluster closed that connection", |e| {
            e.kind == "closed" && e.conn == Some(conn)
        }),
    );
    let line = wait_log(&c, "the garbage", &["104 link failed", "protocol error"]);
    eprintln!("the log says: {line}");
    wait_failed_attempts(&c, &dev, sent.seq, 1);
    healthy_updates(&c, &ok, 2.0);
    recovers(&c, &dev);
    healthy_updates(&c, &ok, 3.0);
    no_panics(&c);
    failures_counted(&c);
    healthy_never_failed(&c);
}

// ------------------------------------------------------------------ 4. standby probes

#[test]
fn standbys_probe_with_tcp_only_and_the_device_sees_one_startdt() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    let dev = C104Server::start(device_addr(&c, 0, DEV_PORT)).expect("start the c104 server");
    dev.add_point(CA, 102, "M_SP_TB_1", Some(true.into()))
        .expect("add the trip");
    let parts = vec![
        rtu("bay", dev.addr(), CA, ""),
        point("bay.trip", "bay", "single", "M_SP_TB_1", 102, ""),
    ];
    c.apply_ok(0, &site(&parts));
    wait_points(&c, &[0, 1, 2], &[("bay.trip", 1.0)]);
    let owner = owner_of(&c, "bay");

    // Every node has a connection open to the device (the owner's started one, two probes).
    c.wait_until("every node has a connection to the device", || {
        let peers = dev.peers().map_err(|e| format!("{e:#}"))?;
        let (open, active) = dev.connections().map_err(|e| format!("{e:#}"))?;
        let from: Vec<bool> = (0..3)
            .map(|i| peers.connects.contains(&c.ip(i).to_string()))
            .collect();
        if open >= 3 && active == 1 && from.iter().all(|f| *f) {
            Ok(())
        } else {
            Err(format!(
                "open {open}, active {active}, connects {:?}",
                peers.connects
            ))
        }
    });
    // Over several probe rounds (200 ms each) nothing else starts data transfer.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let peers = dev.peers().expect("peers");
        let (open, active) = dev.connections().expect("connections");
        assert_eq!(
            (peers.startdt_acts, active),
            (1, 1),
            "the device got {} STARTDT acts ({open} connections open, {active} started); \
             owner {}",
            peers.startdt_acts,
            c.name(owner)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Moved to another node: one more STARTDT, from the new owner, and still one started.
    let to = (owner + 1) % 3;
    let out = c.cli(0, &["rtu", "move", "bay", "--to", c.name(to)]);
    assert!(out.success(), "rtu move: {out:?}");
    c.wait_until("the new owner started data transfer", || {
        let peers = dev.peers().map_err(|e| format!("{e:#}"))?;
        let (open, active) = dev.connections().map_err(|e| format!("{e:#}"))?;
        if peers.startdt_acts == 2 && active == 1 && open >= 3 {
            Ok(())
        } else {
            Err(format!(
                "{} STARTDT acts, open {open}, active {active}",
                peers.startdt_acts
            ))
        }
    });
    assert_eq!(owner_of(&c, "bay"), to);
    assert!(
        dev.set(CA, 102, false, &[], Some("SPONTANEOUS"))
            .expect("set")
    );
    wait_points(&c, &[0, 1, 2], &[("bay.trip", 0.0)]);
    assert_eq!(dev.peers().expect("peers").startdt_acts, 2);
    no_panics(&c);
}

/// The standard has the controlled station test its stopped connections with TESTFR; the
/// controlling station answers TESTFR con on every connection (lib60870's server closes a
/// connection whose TESTFR goes unanswered for t1). A probe is such a stopped connection.
#[test]

fn a_standby_probe_answers_the_devices_test_frames() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    let dev = RawDevice::start(
        device_addr(&c, 0, DEV_PORT),
        CA,
        "good",
        Some(Duration::from_secs(1)),
    )
    .expect("start the raw device");
    check_dev(&c, &dev, dev.set(1, true));
    let parts = vec![
        rtu("bay", dev.addr(), CA, ""),
        point("bay.s", "bay", "single", "M_SP_NA_1", 1, ""),
    ];
    c.apply_ok(0, &site(&parts));
    wait_points(&c, &[0, 1, 2], &[("bay.s", 1.0)]);
    let owner = owner_of(&c, "bay");
    let starts: Vec<DeviceEvent> = dev
        .events()
        .into_iter()
        .filter(|e| e.is_u_rx("STARTDT_ACT"))
        .collect();
    assert_eq!(starts.len(), 1, "{}", dev.report());
    let started_from = starts[0]
        .conn
        .and_then(|conn| dev.peer(conn))
        .and_then(|p| peer_ip(&p));
    assert_eq!(started_from, Some(c.ip(owner)), "{}", dev.report());
    for i in (0..3).filter(|i| *i != owner) {
        c.wait_until(
            &format!("{}'s probe answers the device's TESTFR", c.name(i)),
            || {
                let conns = conns_from(&c, &dev, i);
                let events = dev.events();
                let tested: Vec<u64> = conns
                    .iter()
                    .copied()
                    .filter(|conn| {
                        events.iter().any(|e| {
                            e.conn == Some(*conn)
                                && e.kind == "u"
                                && e.str("dir") == Some("tx")
                                && e.str("function") == Some("TESTFR_ACT")
                        })
                    })
                    .collect();
                let answered = tested.iter().any(|conn| {
                    events
                        .iter()
                        .any(|e| e.conn == Some(*conn) && e.is_u_rx("TESTFR_CON"))
                });
                if answered {
                    Ok(())
                } else {
                    Err(format!(
                        "connections {conns:?}, TESTFR sent on {tested:?}, no TESTFR con\n{}",
                        dev.report()
                    ))
                }
            },
        );
    }
    no_panics(&c);
}

/// A node that stops cleanly while it owns the RTU tells the device (STOPDT act, which the
/// device confirms) before it closes; another node takes the RTU over with one STARTDT.
#[test]
fn a_stopping_owner_sends_stopdt_and_another_node_takes_over() {
    let mut c = Cluster::new();
    c.bootstrap(&["voter", "voter", "voter"]);
    let dev = RawDevice::start(device_addr(&c, 0, DEV_PORT), CA, "good", None)
        .expect("start the raw device");
    check_dev(&c, &dev, dev.set(1, true));
    let parts = vec![
        rtu("bay", dev.addr(), CA, ""),
        point("bay.s", "bay", "single", "M_SP_NA_1", 1, ""),
    ];
    c.apply_ok(0, &site(&parts));
    wait_points(&c, &[0, 1, 2], &[("bay.s", 1.0)]);
    let owner = owner_of(&c, "bay");
    let start = check_dev(
        &c,
        &dev,
        dev.wait_event(LIMIT, "a STARTDT", |e| e.is_u_rx("STARTDT_ACT")),
    );
    let conn = start.conn.expect("a u event names its connection");
    // Changed without a word: the next owner's interrogation reports it.
    check_dev(&c, &dev, dev.set(1, false));
    let mark = dev.mark();
    c.terminate(owner);
    let stop = check_dev(
        &c,
        &dev,
        dev.wait_event(LIMIT, "the stopping owner's STOPDT", |e| {
            e.seq > mark && e.conn == Some(conn) && (e.is_u_rx("STOPDT_ACT") || e.kind == "closed")
        }),
    );
    assert_eq!(
        stop.kind,
        "u",
        "the owner closed without STOPDT act: {}",
        dev.report()
    );
    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let next = c.wait_until("another node owns the RTU", || {
        let view = rtus(&c, others[0])?
            .remove("bay")
            .ok_or("no RTU bay".to_owned())?;
        let i = c
            .index_of(&view.owner)
            .ok_or(format!("owner {:?}", view.owner))?;
        if i == owner {
            Err(format!("{view:?}"))
        } else {
            Ok(i)
        }
    });
    let restart = check_dev(
        &c,
        &dev,
        dev.wait_event(LIMIT, "the new owner's STARTDT", |e| {
            e.seq > mark && e.is_u_rx("STARTDT_ACT")
        }),
    );
    let from = restart
        .conn
        .and_then(|n| dev.peer(n))
        .and_then(|p| peer_ip(&p));
    assert_eq!(from, Some(c.ip(next)), "{}", dev.report());
    wait_points(&c, &others, &[("bay.s", 0.0)]);
    let starts = dev
        .events()
        .iter()
        .filter(|e| e.seq > mark && e.is_u_rx("STARTDT_ACT"))
        .count();
    assert_eq!(starts, 1, "{}", dev.report());
    no_panics(&c);
}
