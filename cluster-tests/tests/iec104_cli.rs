//! `fepha iec104 connections`: asked through any node, it lists the 104 master connections
//! of every node, with the node each one is on and its state, and names a node that does not
//! answer instead of leaving its connections out silently.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use fepha_cluster_tests::Cluster;
use serde_json::Value;

const STARTDT_ACT: [u8; 6] = [0x68, 0x04, 0x07, 0x00, 0x00, 0x00];
const STARTDT_CON: [u8; 6] = [0x68, 0x04, 0x0B, 0x00, 0x00, 0x00];

/// A port free on every one of `ips` right now.
fn free_port_on(ips: &[IpAddr]) -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind((ips[0], 0)).expect("bind a free port");
        let port = first.local_addr().expect("a bound address").port();
        if ips[1..]
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!("found no port free on all of {ips:?}");
}

fn site(port: u16) -> String {
    format!(
        "[site]\nname = \"iec104 cli test\"\n\n\
         [[forwarder]]\nname = \"scada\"\nport = {port}\ncommon_address = 47\n"
    )
}

/// A master's TCP connection to node `i`'s forwarder, once it listens.
fn connect(c: &Cluster, i: usize, port: u16) -> TcpStream {
    let addr = SocketAddr::new(c.ip(i), port);
    let stream = c.wait_until(
        &format!("{}'s forwarder accepts on {addr}", c.name(i)),
        || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string()),
    );
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    stream
}

/// `iec104 connections --json` through node `i`.
fn listing(c: &Cluster, i: usize) -> Result<Value, String> {
    let out = c.cli(i, &["iec104", "connections", "--json"]);
    if !out.success() {
        return Err(format!("exit {:?}: {}", out.code, out.stderr.trim()));
    }
    serde_json::from_str(&out.stdout).map_err(|e| format!("not JSON: {e}: {}", out.stdout))
}

/// The connection whose master is at `peer`, from a listing.
fn by_peer<'a>(listing: &'a Value, peer: &SocketAddr) -> Option<&'a Value> {
    listing["connections"]
        .as_array()?
        .iter()
        .find(|c| c["peer"] == peer.to_string())
}

#[test]
fn connections_of_every_node_are_listed_through_any_node() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (follower, asked) = (others[0], others[1]);

    // Before any master connects, the listing says so.
    let empty = c.cli_ok(asked, &["iec104", "connections"]);
    assert!(
        empty.contains("No IEC 104 master is connected"),
        "unexpected empty listing: {empty}"
    );

    let ips: Vec<IpAddr> = (0..3).map(|i| c.ip(i)).collect();
    let port = free_port_on(&ips);
    c.apply_ok(leader, &site(port));

    // The leader serves: STARTDT is confirmed at once.
    let mut to_leader = connect(&c, leader, port);
    to_leader.write_all(&STARTDT_ACT).expect("send STARTDT act");
    let mut con = [0u8; 6];
    to_leader
        .read_exact(&mut con)
        .unwrap_or_else(|e| c.fail(&format!("no STARTDT con from the leader: {e}")));
    assert_eq!(con, STARTDT_CON, "the leader's answer to STARTDT act");

    // A follower does not: its STARTDT waits.
    let mut to_follower = connect(&c, follower, port);
    to_follower
        .write_all(&STARTDT_ACT)
        .expect("send STARTDT act");

    let leader_peer = to_leader.local_addr().expect("the master's address");
    let follower_peer = to_follower.local_addr().expect("the master's address");
    let found = c.wait_until("both connections are listed through the third node", || {
        let l = listing(&c, asked)?;
        let on_leader = by_peer(&l, &leader_peer).ok_or(format!("no {leader_peer}: {l:#}"))?;
        let on_follower =
            by_peer(&l, &follower_peer).ok_or(format!("no {follower_peer}: {l:#}"))?;
        if on_leader["state"] != "started" || on_follower["state"] != "waiting" {
            return Err(format!("states are not started, waiting yet: {l:#}"));
        }
        Ok(l)
    });
    let on_leader = by_peer(&found, &leader_peer).expect("found above");
    assert_eq!(on_leader["node"], c.name(leader), "{found:#}");
    assert_eq!(on_leader["forwarder"], "scada", "{found:#}");
    assert_eq!(on_leader["group"], "default", "{found:#}");
    assert_eq!(on_leader["k"], 12, "{found:#}");
    assert_eq!(on_leader["w"], 8, "{found:#}");
    let on_follower = by_peer(&found, &follower_peer).expect("found above");
    assert_eq!(on_follower["node"], c.name(follower), "{found:#}");
    assert_eq!(
        found["connections"].as_array().map(Vec::len),
        Some(2),
        "exactly the two connections: {found:#}"
    );
    assert!(
        found["unanswered"].as_array().is_some_and(|u| u.is_empty()),
        "{found:#}"
    );
    let mut answered: Vec<String> = found["answered"]
        .as_array()
        .expect("answered is a list")
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    answered.sort();
    let mut names: Vec<String> = (0..3).map(|i| c.name(i).to_owned()).collect();
    names.sort();
    assert_eq!(answered, names, "{found:#}");

    // The table has one line per connection under its heading.
    let table = c.cli_ok(asked, &["iec104", "connections"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines.first().is_some_and(|h| h.starts_with("NODE")
            && h.contains("PEER")
            && h.contains("ACKED EVENT")),
        "{table}"
    );
    let line_of = |peer: &SocketAddr| {
        lines
            .iter()
            .find(|l| l.contains(&peer.to_string()))
            .unwrap_or_else(|| panic!("no line for {peer}:\n{table}"))
    };
    assert!(line_of(&leader_peer).starts_with(c.name(leader)), "{table}");
    assert!(line_of(&leader_peer).contains(" started "), "{table}");
    assert!(line_of(&follower_peer).contains(" waiting "), "{table}");

    // A closed connection leaves the listing.
    drop(to_follower);
    c.wait_until(
        "the follower's closed connection leaves the listing",
        || {
            let l = listing(&c, asked)?;
            match by_peer(&l, &follower_peer) {
                Some(_) => Err(format!("still listed: {l:#}")),
                None if by_peer(&l, &leader_peer).is_some() => Ok(()),
                None => Err(format!("the leader's connection is gone too: {l:#}")),
            }
        },
    );

    // A node that does not answer is named, with why; the others are still listed. Last: the
    // stopped node campaigns when it wakes up, which may cost the leader its leadership (and
    // its master the connection).
    let to_follower = connect(&c, follower, port);
    let follower_peer = to_follower.local_addr().expect("the master's address");
    c.wait_until("the follower's new connection is listed", || {
        let l = listing(&c, asked)?;
        by_peer(&l, &follower_peer)
            .map(|_| ())
            .ok_or(format!("no {follower_peer}: {l:#}"))
    });
    c.stop(follower);
    let partial = listing(&c, asked);
    let partial_table = c.cli(asked, &["iec104", "connections"]);
    c.cont(follower);
    let partial = partial.unwrap_or_else(|e| c.fail(&e));
    let unanswered = partial["unanswered"].as_array().expect("a list");
    assert!(
        unanswered.len() == 1
            && unanswered[0]["node"] == c.name(follower)
            && unanswered[0]["error"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
        "{partial:#}"
    );
    assert!(by_peer(&partial, &leader_peer).is_some(), "{partial:#}");
    assert!(by_peer(&partial, &follower_peer).is_none(), "{partial:#}");
    assert!(
        partial_table.success()
            && partial_table
                .stdout
                .contains(&format!("{} did not answer", c.name(follower))),
        "{partial_table:?}"
    );

    drop(to_follower);
    drop(to_leader);
}
