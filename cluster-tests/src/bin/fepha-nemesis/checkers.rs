//! The checkers: each reads the recorded history (the tap's requests, the 104 device's log,
//! what the master received, what the load did, the nodes' logs) and gives one figure with
//! the evidence behind it. docs/nemesis.md defines each one exactly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use fepha_cluster_tests::percentile;
use fepha_cluster_tests::sim104::LogLine;

use crate::load::{Record, Toggle};
use crate::tap::Request;
use crate::world::{SEQ_IOA, SESSION_TTL_MS, SETPOINT_REGISTER, SIM_FORWARDED_IOA, SIM_IOA, World};

/// One checker's result: the figure, whether it is a safety figure (must be 0), and lines
/// of evidence.
pub struct Figure {
    pub name: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub safety: bool,
    pub evidence: Vec<String>,
}

impl Figure {
    fn new(name: &'static str, value: f64, unit: &'static str, safety: bool) -> Figure {
        Figure {
            name,
            value,
            unit,
            safety,
            evidence: Vec::new(),
        }
    }
}

/// A node's requests closer than this are one stretch of ownership: one lease.
const SAME_LEASE_MS: u64 = SESSION_TTL_MS;
/// A read counts as handed over once its node went on polling this long without a break
/// longer than [`SAME_LEASE_MS`]: its lease was renewed after the read, so its batch had a
/// working cluster to commit to.
const HANDED_OVER_MS: u64 = 3 * SESSION_TTL_MS;

/// Modbus: a request from B between two requests of A less than one lease apart. Each
/// such A-request is an incident; incidents less than a lease apart form one window.
pub fn double_owner_modbus(reqs: &[Request]) -> Figure {
    let mut last: HashMap<IpAddr, u64> = HashMap::new();
    let mut incidents: Vec<(u64, IpAddr, IpAddr)> = Vec::new();
    for r in reqs {
        if let Some(&prev) = last.get(&r.src)
            && r.time_ms.saturating_sub(prev) < SAME_LEASE_MS
        {
            for (&other, &t) in &last {
                if other != r.src && t > prev {
                    incidents.push((r.time_ms, r.src, other));
                }
            }
        }
        last.insert(r.src, r.time_ms);
    }
    let mut f = Figure::new("double_owner_windows_modbus", 0.0, "windows", true);
    let mut window_end = 0;
    for (t, a, b) in incidents {
        if t > window_end {
            f.value += 1.0;
            if f.evidence.len() < 10 {
                f.evidence
                    .push(format!("at {t}: {a} polled again after {b} had polled"));
            }
        }
        window_end = t + SAME_LEASE_MS;
    }
    f
}

/// IEC 104: a frame that only an owner sends (an I or S frame, a STARTDT act) from a node
/// whose connection is not the started one, while another node's is.
pub fn double_owner_104(lines: &[LogLine]) -> Figure {
    let mut peer: HashMap<u64, IpAddr> = HashMap::new();
    let mut active: Option<u64> = None;
    let mut f = Figure::new("double_owner_windows_104", 0.0, "frames", true);
    for (k, l) in lines.iter().enumerate() {
        match l.event.as_str() {
            "accepted" => {
                if let (Some(c), Some(p)) = (l.conn, l.str("peer"))
                    && let Ok(a) = p.parse::<std::net::SocketAddr>()
                {
                    peer.insert(c, a.ip());
                }
            }
            "started" => active = l.conn,
            "inactive" => {
                // The device logs a STARTDT act before it makes that connection the started
                // one: that is the take-over itself, not a second owner.
                let starts_it = lines[k + 1..]
                    .iter()
                    .take(3)
                    .any(|n| n.event == "started" && n.conn == l.conn);
                let owner_frame = matches!(l.str("frame"), Some("I" | "S"))
                    || (l.str("detail") == Some("STARTDT_ACT") && !starts_it);
                let (Some(c), Some(a)) = (l.conn, active) else {
                    continue;
                };
                let (from, started) = (peer.get(&c), peer.get(&a));
                if owner_frame && from.is_some() && from != started {
                    f.value += 1.0;
                    if f.evidence.len() < 10 {
                        f.evidence.push(format!(
                            "at {}: {:?} frame from {from:?} while {started:?} is started",
                            l.time_ms,
                            l.str("frame")
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    f
}

/// Commands: setpoint values the device was written more than once (each command carries a
/// value no other has).
pub fn commands_twice(reqs: &[Request], rec: &Record) -> Vec<Figure> {
    let mut writes: BTreeMap<u16, u64> = BTreeMap::new();
    for r in reqs
        .iter()
        .filter(|r| r.is_write() && r.address == SETPOINT_REGISTER)
    {
        if let Some(v) = r.values.first() {
            *writes.entry(*v).or_default() += 1;
        }
    }
    let mut twice = Figure::new("commands_executed_twice", 0.0, "commands", true);
    for (v, n) in &writes {
        if *n > 1 {
            twice.value += 1.0;
            twice.evidence.push(format!("value {v} written {n} times"));
        }
    }
    let sent = rec
        .commands
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let confirmed = sent.iter().filter(|s| s.confirmed).count();
    let unconfirmed_ran = sent
        .iter()
        .filter(|s| !s.confirmed && writes.contains_key(&s.value))
        .count();
    let never_sent = writes
        .keys()
        .filter(|v| !sent.iter().any(|s| s.value == **v))
        .count();
    let mut ghost = Figure::new(
        "commands_executed_never_sent",
        never_sent as f64,
        "commands",
        true,
    );
    if never_sent > 0 {
        ghost
            .evidence
            .push(format!("written: {:?}", writes.keys().collect::<Vec<_>>()));
    }
    vec![
        twice,
        ghost,
        Figure::new("commands_sent", sent.len() as f64, "commands", false),
        Figure::new("commands_confirmed", confirmed as f64, "commands", false),
        Figure::new("commands_executed", writes.len() as f64, "commands", false),
        Figure::new(
            "commands_executed_without_positive_confirmation",
            unconfirmed_ran as f64,
            "commands",
            false,
        ),
    ]
}

/// Modbus changes handed over (read by a node that kept its lease afterwards, see
/// [`HANDED_OVER_MS`]) that the master never received.
pub fn lost_modbus(w: &World, reqs: &[Request], toggles: &[Toggle]) -> Vec<Figure> {
    let mut by_src: HashMap<IpAddr, Vec<u64>> = HashMap::new();
    for r in reqs.iter().filter(|r| r.function == 3) {
        by_src.entry(r.src).or_default().push(r.time_ms);
    }
    let kept_polling = |src: IpAddr, from: u64| -> bool {
        let times = &by_src[&src];
        let start = times.partition_point(|&t| t < from);
        let mut prev = from;
        for &t in &times[start..] {
            if t - prev > SAME_LEASE_MS {
                return false;
            }
            if t >= from + HANDED_OVER_MS {
                return true;
            }
            prev = t;
        }
        false
    };
    // The values wrap after 65 535 changes, so a change arrived only if its value did after
    // it was written (the master's clock is the writer's).
    let mut received: HashMap<(u32, i64), Vec<i64>> = HashMap::new();
    for rx in w.master.received() {
        if let Some(v) = rx.value.as_f64() {
            received
                .entry((rx.ioa, v.round() as i64))
                .or_default()
                .push(rx.at_ms);
        }
    }
    // Until when the device surely held each value: until the next write of the register
    // began.
    let mut until: Vec<u64> = vec![u64::MAX; toggles.len()];
    let mut next_of: HashMap<u16, usize> = HashMap::new();
    for (k, t) in toggles.iter().enumerate().rev() {
        if let Some(&n) = next_of.get(&t.point) {
            until[k] = toggles[n].begun_ms;
        }
        next_of.insert(t.point, k);
    }
    let reads: Vec<&Request> = reqs.iter().filter(|r| r.function == 3).collect();
    let (mut handed, mut lost) = (
        0u64,
        Figure::new("lost_changes_modbus", 0.0, "changes", true),
    );
    for (k, t) in toggles.iter().enumerate() {
        let start = reads.partition_point(|r| r.time_ms <= t.at_ms);
        // The answer must have left the device before the next write began: a request
        // passes the tap some time before the device serves it.
        let over = reads[start..]
            .iter()
            .take_while(|r| r.time_ms < until[k])
            .filter(|r| r.answered_ms.is_some_and(|a| a < until[k]))
            .filter(|r| r.address <= t.point && t.point < r.address.saturating_add(r.count))
            .find(|r| kept_polling(r.src, r.time_ms));
        let Some(read) = over else {
            continue;
        };
        handed += 1;
        let ioa = SEQ_IOA + u32::from(t.point);
        let at = i64::try_from(t.at_ms).unwrap_or(i64::MAX);
        let arrived = received
            .get(&(ioa, i64::from(t.value)))
            .is_some_and(|times| times.iter().any(|&r| r >= at));
        if !arrived {
            lost.value += 1.0;
            if lost.evidence.len() < 10 {
                lost.evidence.push(format!(
                    "point {} value {} set at {} (held until {}), read by {} at {}, never \
                     reached the master",
                    t.point, t.value, t.at_ms, until[k], read.src, read.time_ms
                ));
            }
        }
    }
    vec![
        lost,
        Figure::new("modbus_changes", toggles.len() as f64, "changes", false),
        Figure::new(
            "modbus_changes_handed_over",
            handed as f64,
            "changes",
            false,
        ),
    ]
}

/// 104: every change the device had acknowledged (fepha acknowledges after commit) must
/// reach the master, matched by IOA and the device's time tag.
pub fn lost_104(w: &World, lines: &[LogLine]) -> Vec<Figure> {
    let mut tagged: BTreeMap<u64, (u64, i64)> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.event == "sent") {
        for o in l.objects() {
            let (Some(c), Some(ioa), Some(t)) = (
                o.get("change").and_then(|v| v.as_u64()),
                o.get("ioa").and_then(|v| v.as_u64()),
                o.get("time_ms").and_then(|v| v.as_i64()),
            ) else {
                continue;
            };
            tagged.entry(c).or_insert((ioa, t));
        }
    }
    let acked: BTreeSet<u64> = lines
        .iter()
        .filter(|l| l.event == "ack")
        .flat_map(|l| {
            l.body
                .get("changes")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|c| c.as_u64()).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    let made = lines.iter().filter(|l| l.event == "change").count();
    let received: BTreeSet<(u32, i64)> = w
        .master
        .received()
        .iter()
        .filter_map(|rx| Some((rx.ioa, rx.time_ms?)))
        .collect();
    let mut lost = Figure::new("lost_changes_104", 0.0, "changes", true);
    for c in &acked {
        let Some(&(ioa, t)) = tagged.get(c) else {
            continue;
        };
        let up = SIM_FORWARDED_IOA + u32::try_from(ioa).unwrap_or(0) - SIM_IOA;
        if !received.contains(&(up, t)) {
            lost.value += 1.0;
            if lost.evidence.len() < 10 {
                lost.evidence.push(format!(
                    "change {c} (IOA {ioa}, time tag {t}) never reached the master"
                ));
            }
        }
    }
    vec![
        lost,
        Figure::new("iec104_changes", made as f64, "changes", false),
        Figure::new(
            "iec104_changes_acknowledged",
            acked.len() as f64,
            "changes",
            false,
        ),
    ]
}

/// Every version `config apply` reported committed is in every member's history.
pub fn lost_config(w: &World) -> Figure {
    let committed = w.committed();
    let mut f = Figure::new("lost_config_versions", 0.0, "versions", true);
    let mut missing: BTreeSet<u64> = BTreeSet::new();
    for i in w.members() {
        match w.c.config_history(i) {
            Ok(h) => {
                let have: BTreeSet<(u64, &str)> =
                    h.iter().map(|e| (e.version, e.sha256.as_str())).collect();
                for (v, sha) in &committed {
                    if !have.contains(&(*v, sha.as_str())) {
                        missing.insert(*v);
                        f.evidence
                            .push(format!("{} lacks version {v}", w.c.name(i)));
                    }
                }
            }
            Err(e) => f.evidence.push(format!("{}: no history: {e}", w.c.name(i))),
        }
    }
    f.value = missing.len() as f64;
    f
}

/// Modbus take-overs: from the last request of one node to the first of the next.
pub fn takeover(reqs: &[Request]) -> Vec<Figure> {
    let mut gaps = Vec::new();
    for pair in reqs.windows(2) {
        if pair[0].src != pair[1].src {
            gaps.push(pair[1].time_ms - pair[0].time_ms);
        }
    }
    vec![
        Figure::new("rtu_takeovers", gaps.len() as f64, "take-overs", false),
        Figure::new(
            "rtu_takeover_ms_p50",
            percentile(&gaps, 50.0) as f64,
            "ms",
            false,
        ),
        Figure::new(
            "rtu_takeover_ms_p99",
            percentile(&gaps, 99.0) as f64,
            "ms",
            false,
        ),
    ]
}

/// 104 take-overs: from the last data the device exchanged with one node's started
/// connection (a frame sent, an acknowledgement) to the start of another node's.
pub fn takeover_104(lines: &[LogLine]) -> Vec<Figure> {
    let mut peer: HashMap<u64, IpAddr> = HashMap::new();
    let mut active: Option<u64> = None;
    let mut last_data: Option<u64> = None;
    let mut gaps = Vec::new();
    for l in lines {
        match l.event.as_str() {
            "accepted" => {
                if let (Some(c), Some(p)) = (l.conn, l.str("peer"))
                    && let Ok(a) = p.parse::<std::net::SocketAddr>()
                {
                    peer.insert(c, a.ip());
                }
            }
            "sent" | "ack" if l.conn.is_some() && l.conn == active => last_data = Some(l.time_ms),
            "started" => {
                let moved =
                    active.is_some_and(|a| peer.get(&a) != l.conn.and_then(|c| peer.get(&c)));
                if moved && let Some(t) = last_data {
                    gaps.push(l.time_ms.saturating_sub(t));
                }
                active = l.conn;
                last_data = None;
            }
            _ => {}
        }
    }
    vec![
        Figure::new("rtu_takeovers_104", gaps.len() as f64, "take-overs", false),
        Figure::new(
            "rtu_takeover_ms_104_p50",
            percentile(&gaps, 50.0) as f64,
            "ms",
            false,
        ),
        Figure::new(
            "rtu_takeover_ms_104_p99",
            percentile(&gaps, 99.0) as f64,
            "ms",
            false,
        ),
    ]
}

/// Stretches of time, after the master's first started link, with no link started.
pub fn upstream_gaps(w: &World, end_ms: u64) -> Vec<Figure> {
    let mut open: BTreeMap<usize, bool> = BTreeMap::new();
    let mut gaps = Vec::new();
    let mut down_since: Option<u64> = None;
    let mut ever = false;
    for e in w.master.events().iter().filter(|e| e.kind == "state") {
        let (Some(c), Some(s), Some(at)) = (
            e.conn(),
            e.body.get("state").and_then(|v| v.as_str()),
            e.body.get("at_ms").and_then(|v| v.as_u64()),
        ) else {
            continue;
        };
        open.insert(c, s == "OPEN");
        let any = open.values().any(|&o| o);
        match (any, down_since) {
            (true, Some(since)) => {
                gaps.push(at.saturating_sub(since));
                down_since = None;
            }
            (true, None) => ever = true,
            (false, None) if ever => down_since = Some(at),
            _ => {}
        }
    }
    if let Some(since) = down_since {
        gaps.push(end_ms.saturating_sub(since));
    }
    let total: u64 = gaps.iter().sum();
    vec![
        Figure::new("upstream_gaps", gaps.len() as f64, "gaps", false),
        Figure::new(
            "upstream_gap_ms_p50",
            percentile(&gaps, 50.0) as f64,
            "ms",
            false,
        ),
        Figure::new(
            "upstream_gap_ms_p99",
            percentile(&gaps, 99.0) as f64,
            "ms",
            false,
        ),
        Figure::new("upstream_gap_ms_total", total as f64, "ms", false),
    ]
}

/// Panics in any node's log, and exits nobody asked for.
pub fn panics(w: &World, unclean_exits: u64) -> Vec<Figure> {
    let mut f = Figure::new("panics", 0.0, "panics", true);
    for i in 0..w.c.len() {
        let log = std::fs::read_to_string(&w.c.node(i).log_path).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("panicked")) {
            f.value += 1.0;
            f.evidence.push(format!("{}: {line}", w.c.name(i)));
        }
    }
    // The harness's own peer: what it did not receive after it died says nothing of fepha,
    // so the run is void, and says so.
    let mut master = Figure::new("harness_master_exits", 0.0, "exits", true);
    if let Some(status) = w.master.exit_status() {
        master.value = 1.0;
        master.evidence.push(format!(
            "the c104 master exited ({status}); changes after that are not fepha's loss; \
             its stderr is in master.txt"
        ));
    }
    vec![
        f,
        Figure::new("unclean_exits", unclean_exits as f64, "exits", true),
        master,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(time_ms: u64, node: u8) -> Request {
        Request {
            time_ms,
            src: [10, 0, 0, node].into(),
            function: 3,
            address: 0,
            count: 4,
            values: Vec::new(),
            answered_ms: Some(time_ms + 5),
        }
    }

    #[test]
    fn a_hand_over_is_one_owner_after_the_other_and_interleaving_is_two() {
        let clean = [
            req(0, 1),
            req(100, 1),
            req(1500, 2),
            req(1600, 2),
            req(4000, 1),
        ];
        assert_eq!(double_owner_modbus(&clean).value, 0.0);
        let t = takeover(&clean);
        assert_eq!(t[0].value, 2.0);
        assert_eq!(t[2].value, 2400.0);
        // Node 1 polls again 200 ms after its last request, after node 2 had begun: two
        // owners within one lease; the second interleaving 100 ms later is the same window.
        let two = [
            req(0, 1),
            req(100, 2),
            req(200, 1),
            req(250, 2),
            req(300, 1),
        ];
        assert_eq!(double_owner_modbus(&two).value, 1.0);
    }

    fn line(
        index: usize,
        time_ms: u64,
        event: &str,
        conn: u64,
        extra: serde_json::Value,
    ) -> LogLine {
        let mut body = serde_json::json!({"event": event, "conn": conn, "time_ms": time_ms});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        LogLine {
            index,
            event: event.to_owned(),
            conn: Some(conn),
            time_ms,
            body,
        }
    }

    #[test]
    fn a_104_take_over_and_a_stale_owner_frame() {
        use serde_json::json;
        let lines = [
            line(0, 0, "accepted", 1, json!({"peer": "10.0.0.1:4000"})),
            line(
                1,
                10,
                "inactive",
                1,
                json!({"frame": "U", "detail": "STARTDT_ACT"}),
            ),
            line(2, 10, "started", 1, json!({})),
            line(3, 100, "sent", 1, json!({})),
            line(4, 500, "accepted", 2, json!({"peer": "10.0.0.2:4000"})),
            line(
                5,
                1100,
                "inactive",
                2,
                json!({"frame": "U", "detail": "STARTDT_ACT"}),
            ),
            line(6, 1100, "started", 2, json!({})),
            line(7, 1200, "inactive", 1, json!({"frame": "S"})),
            line(
                8,
                1300,
                "inactive",
                1,
                json!({"frame": "U", "detail": "TESTFR_CON"}),
            ),
        ];
        let t = takeover_104(&lines);
        assert_eq!((t[0].value, t[1].value), (1.0, 1000.0));
        // The S frame from the old owner after the new one started is a second owner; the
        // STARTDT acts that started each connection and the TESTFR answer are not.
        assert_eq!(double_owner_104(&lines).value, 1.0);
    }

    #[test]
    fn a_setpoint_written_twice_counts_once_per_value() {
        let write = |t, v| Request {
            function: 6,
            address: SETPOINT_REGISTER,
            count: 1,
            values: vec![v],
            ..req(t, 1)
        };
        let rec = Record::default();
        let figures = commands_twice(&[write(0, 7), write(10, 7), write(20, 8)], &rec);
        assert_eq!(figures[0].value, 1.0);
        // Nothing was sent, so both values are writes no command asked for.
        assert_eq!(figures[1].value, 2.0);
    }
}
