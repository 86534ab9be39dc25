//! Hostile clients from outside the cluster: no certificate, floods of idle and garbage
//! connections, oversize requests. The node refuses what it must with a clear answer, frees
//! what a stranger held, and members and operators get through all along.
//!
//! Strangers connect from 127.X.Y.240 and up, in the cluster's own loopback block: an
//! address no node, CLI or device of the cluster uses, as a box on the network would be.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fepha::admin::client::Credentials;
use fepha::proto::admin::admin_client::AdminClient;
use fepha::proto::admin::{ConfigApplyRequest, EnrolRequest, EnrolStatusRequest, StatusRequest};
use fepha::proto::raft::RaftPayload;
use fepha::proto::raft::raft_client::RaftClient;
use fepha_cluster_tests::field::device_addr;
use fepha_cluster_tests::master::{Asdu, Init, LinkState, Master};
use fepha_cluster_tests::{
    Cluster, PyDevice, admin_client, error_chain, raw_channel, site_config, wait_until,
};
use rand::RngCore;
use tonic::Code;
use tonic::transport::Channel;

/// A stranger's address: 127.X.Y.(240 + k) of the cluster's block.
fn stranger(c: &Cluster, k: u8) -> IpAddr {
    let IpAddr::V4(node) = c.ip(0) else {
        panic!("loopback clusters are IPv4");
    };
    let [a, x, y, _] = node.octets();
    IpAddr::V4(Ipv4Addr::new(a, x, y, 240 + k))
}

/// Floods need more descriptors than a shell's default 1024, here and in the nodes (which
/// inherit the limit and raise it themselves too).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    assert!(
        hard >= 8192,
        "this test needs at least 8192 open files, the hard limit is {hard}"
    );
}

/// `n` TCP connections from `from` to `to` that send nothing.
fn idle_connections(c: &Cluster, from: IpAddr, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    c.block_on(async {
        let mut open = Vec::with_capacity(n);
        for k in 0..n {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.bind(SocketAddr::new(from, 0)).expect("bind");
            let tcp = tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
                .await
                .unwrap_or_else(|_| panic!("connection {k} to {to} not made within 5 s"))
                .unwrap_or_else(|e| panic!("connection {k} to {to}: {e}"));
            let tcp = tcp.into_std().expect("a std socket");
            tcp.set_nonblocking(false).expect("blocking");
            open.push(tcp);
        }
        open
    })
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a node address")
}

fn value(c: &Cluster, i: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
    c.metric_value(i, name, labels)
}

/// Waits until node `i`'s `name{labels}` is `want`.
fn wait_metric(c: &Cluster, i: usize, name: &str, labels: &[(&str, &str)], want: f64) {
    c.wait_until(
        &format!("{name}{labels:?} is {want} on {}", c.name(i)),
        || {
            let v = value(c, i, name, labels);
            if v == want {
                Ok(())
            } else {
                Err(format!("it is {v}"))
            }
        },
    );
}

/// A Raft call from a trusted member on a fresh connection: the service must answer (the
/// body is not a vote, so it answers INVALID_ARGUMENT), and soon.
fn member_reaches_raft(c: &Cluster, creds: &Credentials, raft: &str) {
    let t = Instant::now();
    let code = c.block_on(async {
        let channel = raw_channel(creds, raft)
            .await
            .unwrap_or_else(|e| c.fail(&e));
        let reply = RaftClient::new(channel)
            .vote(RaftPayload {
                json: b"not a vote".to_vec(),
            })
            .await;
        reply.map_or_else(|s| s.code(), |_| Code::Ok)
    });
    assert_eq!(code, Code::InvalidArgument, "a member's vote on {raft}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "a member waited {:?} for the raft port",
        t.elapsed()
    );
}

/// `fepha status` through node `i`'s CLI works, and within a few seconds.
fn status_works_at_once(c: &Cluster, i: usize, during: &str) {
    let t = Instant::now();
    let out = c.cli_within(i, &["status"], Duration::from_secs(20));
    assert!(
        out.success(),
        "`fepha status` failed {during}: {}",
        out.stderr
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "`fepha status` took {:?} {during}",
        t.elapsed()
    );
}

#[test]
fn a_client_without_a_certificate_gets_no_further_than_enrolment_and_oversize_is_refused() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let follower = (leader + 1) % 3;
    let no_certificate = c.credentials_with(None);
    let trusted = c.credentials();
    let (admin, raft) = (c.admin_addr(follower), c.raft_addr(follower));

    // The raft port refuses the handshake: no HTTP/2, no service, counted as such.
    let before = value(
        &c,
        follower,
        "fepha_tls_refused_total",
        &[("side", "server"), ("reason", "no_certificate")],
    );
    let seen = c.block_on(async {
        let channel = match raw_channel(&no_certificate, &raft).await {
            Ok(ch) => ch,
            Err(e) => return e,
        };
        match RaftClient::new(channel)
            .vote(RaftPayload {
                json: b"{}".to_vec(),
            })
            .await
        {
            Ok(r) => panic!("a vote without a certificate on {raft} was answered: {r:?}"),
            Err(s) => {
                assert!(
                    std::error::Error::source(&s).is_some() || s.code() == Code::Unknown,
                    "the raft service itself answered a client without a certificate: {s:?}"
                );
                format!("{:?}: {}", s.code(), error_chain(&s))
            }
        }
    });
    eprintln!("no certificate on the raft port: {seen}");
    c.wait_until("the raft port counts the refusal", || {
        let now = value(
            &c,
            follower,
            "fepha_tls_refused_total",
            &[("side", "server"), ("reason", "no_certificate")],
        );
        if now > before {
            Ok(())
        } else {
            Err(format!("no_certificate refusals {before} then {now}"))
        }
    });

    c.block_on(async {
        // The admin port lets it ask about a join, nothing more.
        let mut anon = admin_client(&no_certificate, &admin)
            .await
            .unwrap_or_else(|e| panic!("TLS without a certificate to {admin}: {e}"));
        let reply = anon
            .enrol_status(EnrolStatusRequest {
                fingerprint: c.fingerprint(leader),
            })
            .await
            .unwrap_or_else(|s| panic!("enrol_status without a certificate: {s:?}"));
        assert_eq!(reply.into_inner().status, "trusted");
        let s = anon
            .status(StatusRequest { local_only: true })
            .await
            .expect_err("status without a certificate");
        assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

        // An enrolment request is a few names: one of 8 KiB is refused, with the limit.
        let s = anon
            .enrol(EnrolRequest {
                token_id: String::new(),
                token_secret: String::new(),
                fingerprint: c.fingerprint(leader),
                name: "x".repeat(8 << 10),
                admin_addr: String::new(),
                forwarded: false,
            })
            .await
            .expect_err("an 8 KiB enrolment");
        // tonic's own answer at the limit.
        assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
        assert!(
            s.message().contains("too large") && s.message().contains("the limit is: 4096 bytes"),
            "{s:?}"
        );

        // Asking much faster than a joining node does is refused until the rate allows.
        let mut fast = client_from(&no_certificate, &admin, stranger(&c, 1)).await;
        let mut refused = Vec::new();
        for _ in 0..30 {
            if let Err(s) = fast
                .enrol_status(EnrolStatusRequest {
                    fingerprint: c.fingerprint(leader),
                })
                .await
            {
                refused.push(s);
            }
        }
        assert!(refused.len() >= 15, "only {} refused", refused.len());
        for s in &refused {
            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
            assert!(s.message().contains("at most 2 a second"), "{s:?}");
        }
        // Members are not held up by it.
        let mut member = admin_client(&trusted, &admin).await.expect("a member");
        member
            .status(StatusRequest { local_only: true })
            .await
            .expect("a member's status while a stranger is throttled");
    });

    // Connections without a certificate are capped per address, and closed when idle.
    let before = value(
        &c,
        follower,
        "fepha_tls_connections_closed_total",
        &[("listener", "admin"), ("reason", "anonymous_per_address")],
    );
    // Those over the cap may be closed before or after tonic calls them connected.
    let held = c.block_on(async {
        let mut held = Vec::new();
        for _ in 0..12 {
            held.push(connect_from(&no_certificate, &admin, stranger(&c, 2)).await);
        }
        held
    });
    c.wait_until(
        "the connections over the cap are closed and counted",
        || {
            let closed = value(
                &c,
                follower,
                "fepha_tls_connections_closed_total",
                &[("listener", "admin"), ("reason", "anonymous_per_address")],
            ) - before;
            let open = value(
                &c,
                follower,
                "fepha_tls_connections_open",
                &[("listener", "admin"), ("client", "none")],
            );
            if closed >= 4.0 && open <= 8.0 {
                Ok(())
            } else {
                Err(format!("{closed} closed, {open} open"))
            }
        },
    );
    wait_until(
        Duration::from_secs(30),
        "the idle connections without a certificate are closed",
        || {
            let open = value(
                &c,
                follower,
                "fepha_tls_connections_open",
                &[("listener", "admin"), ("client", "none")],
            );
            if open == 0.0 {
                Ok(())
            } else {
                Err(format!("{open} still open"))
            }
        },
        || c.report(),
    );
    drop(held);
    assert!(
        value(
            &c,
            follower,
            "fepha_tls_connections_closed_total",
            &[("listener", "admin"), ("reason", "anonymous_idle")],
        ) >= 1.0
    );

    // A configuration over the limit: the CLI says so before sending it, and a client that
    // sends one anyway gets the node's own refusal, or tonic's at the message limit.
    let big = format!("{}\n# {}\n", site_config("big", 1), "x".repeat(33 << 20));
    let e = c
        .apply(follower, &big, "5s")
        .expect_err("a 33 MiB configuration");
    assert!(
        e.contains("bytes; the limit is 33554432 bytes") && e.contains("was not applied"),
        "{e}"
    );
    c.block_on(async {
        let channel = raw_channel(&trusted, &admin).await.expect("a channel");
        let mut raw = AdminClient::new(channel);
        let over_site = format!("{}\n# {}\n", site_config("over", 1), "x".repeat(32 << 20));
        let s = raw
            .config_apply(ConfigApplyRequest {
                text: over_site,
                forwarded: false,
                dry_run: false,
            })
            .await
            .expect_err("a configuration over the site limit");
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains("the limit is 33554432 bytes"), "{s:?}");
        let s = raw
            .config_apply(ConfigApplyRequest {
                text: "#".repeat(40 << 20),
                forwarded: false,
                dry_run: false,
            })
            .await
            .expect_err("a 40 MiB request");
        assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
        assert!(s.message().contains("too large"), "{s:?}");
    });

    for i in 0..3 {
        assert!(c.is_running(i), "{} died:\n{}", c.name(i), c.report());
    }
    let applied = c.apply_ok(follower, &site_config("after-strangers", 1));
    let statuses = c.wait_converged(&[0, 1, 2]);
    assert!(statuses.iter().all(|s| s.config_version == applied.version));
}

/// An admin client with `creds` whose connections come from `from`.
async fn connect_from(
    creds: &Credentials,
    admin: &str,
    from: IpAddr,
) -> Result<AdminClient<Channel>, tonic::transport::Error> {
    let channel = fepha::tls::endpoint(admin, creds.identity.as_ref(), creds.trust.clone())
        .expect("an endpoint")
        .local_address(Some(from))
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    Ok(AdminClient::new(channel))
}

async fn client_from(creds: &Credentials, admin: &str, from: IpAddr) -> AdminClient<Channel> {
    connect_from(creds, admin, from)
        .await
        .unwrap_or_else(|e| panic!("TLS from {from} to {admin}: {e:?}"))
}

#[test]
fn a_thousand_idle_connections_lock_no_member_or_operator_out() {
    raise_fd_limit();
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let all = [0, 1, 2];
    let trusted = c.credentials();
    let from = stranger(&c, 0);
    let fds = |c: &Cluster| value(c, leader, "process_open_fds", &[]);
    let baseline = fds(&c);

    for (n, listener) in ["admin", "raft"].into_iter().enumerate() {
        let port = if listener == "admin" {
            c.admin_addr(leader)
        } else {
            c.raft_addr(leader)
        };
        let closed = |c: &Cluster| {
            value(
                c,
                leader,
                "fepha_tls_connections_closed_total",
                &[("listener", listener), ("reason", "handshakes_per_address")],
            )
        };
        let closed_before = closed(&c);
        let t = Instant::now();
        let flood = idle_connections(&c, from, addr(&port), 1000);
        let opened = t.elapsed();
        eprintln!("1000 idle connections to the {listener} port in {opened:?}");

        // While they are held: the CLI, a member's fresh connection, the leader, a write.
        let during = format!("while 1000 idle connections hold the {listener} port");
        status_works_at_once(&c, leader, &during);
        member_reaches_raft(&c, &trusted, &c.raft_addr(leader));
        // On a loaded two-core box leadership may move for reasons of its own (AppendEntries
        // time out at 50 ms there even without a flood); what the flood must not do is leave
        // the cluster without a leader or unable to commit.
        let now = c.wait_for_leader(&all);
        if now != leader {
            eprintln!(
                "leadership moved from {} to {} {during}",
                c.name(leader),
                c.name(now)
            );
        }
        let applied = c.apply_ok(leader, &site_config("flood", n as u64));
        assert!(
            c.wait_converged(&all)
                .iter()
                .all(|s| s.config_version == applied.version)
        );
        // Those over the per-address cap were closed at once, the rest once their
        // ClientHello was late (2 s), which freed their slots for later ones of the flood:
        // the node holds nothing of them, though they are still open.
        let rounds = 1.0 + (opened.as_secs_f64() / 2.0).ceil();
        let shed = closed(&c) - closed_before;
        assert!(
            shed >= 1000.0 - 64.0 * rounds,
            "only {shed} closed at once (the flood took {opened:?})"
        );
        wait_metric(
            &c,
            leader,
            "fepha_tls_handshakes_in_flight",
            &[("listener", listener)],
            0.0,
        );
        let timed_out = value(
            &c,
            leader,
            "fepha_tls_handshakes_total",
            &[("listener", listener), ("outcome", "timeout")],
        );
        assert!(timed_out >= 1.0, "no handshake timed out on {listener}");
        drop(flood);

        // Nothing is left behind: the descriptors are back where they were.
        c.wait_until(
            &format!("the leader's open files are back after the {listener} flood"),
            || {
                let now = fds(&c);
                if now <= baseline + 20.0 {
                    Ok(())
                } else {
                    Err(format!("{now} open files, {baseline} before the floods"))
                }
            },
        );
    }
    wait_metric(
        &c,
        leader,
        "fepha_tls_connections_open",
        &[("listener", "admin"), ("client", "none")],
        0.0,
    );
    for i in all {
        assert!(c.is_running(i), "{} died:\n{}", c.name(i), c.report());
    }
}

const PORT_104: u16 = 2404;
const CA: u16 = 47;

/// One Modbus RTU behind a forwarder in the default group: every master address is let in.
fn site_104(device: SocketAddr) -> String {
    let rtu = fepha_cluster_tests::field::one_rtu_site(device, 100, "probe");
    format!(
        r#"{rtu}
[[forwarder]]
name = "cc"
port = {PORT_104}
common_address = {CA}
  [[forwarder.map]]
  point = "d.alarm"
  ioa = 1001
"#
    )
}

/// Writes random bytes on each connection and keeps it.
fn garbage_connections(c: &Cluster, from: IpAddr, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    use std::io::Write;
    let mut random = vec![0u8; 256];
    let mut open = idle_connections(c, from, to, n);
    for tcp in &mut open {
        rand::rng().fill_bytes(&mut random);
        // 0x68 starts an APCI; anything else is garbage from the first byte.
        random[0] = 0x17;
        let _ = tcp.write_all(&random);
    }
    open
}

/// Whether the node closes `tcp` (reading and dropping what it sends) before `deadline`.
fn closed_by_peer(tcp: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tcp.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
}

#[test]
fn the_104_port_holds_a_flood_and_still_serves_its_master() {
    raise_fd_limit();
    let mut c = Cluster::new();
    let first = c.bootstrap(&["voter", "voter", "voter"]);
    let device = PyDevice::start(device_addr(&c, 0, 5020));
    device.set("discrete_input", 0, &[1]);
    c.apply_ok(first, &site_104(device.addr()));
    let leader = c.wait_for_leader(&[0, 1, 2]);
    // A redundant master, as sites run them: a connection to every node, the leader's
    // started. The flood goes to the leader's port.
    let forwarder = |i: usize| SocketAddr::new(c.ip(i), PORT_104);
    let m = Master::start(
        &[0, 1, 2].map(|i| (forwarder(i), Init::None)),
        CA,
        &[(1001, "M_SP_TB_1")],
    )
    .expect("c104 master");
    m.wait_state(leader, LinkState::Open, Duration::from_secs(20))
        .unwrap_or_else(|e| c.fail(&format!("{e:#}\n{}", m.report())));
    let forwarder = forwarder(leader);

    let from = stranger(&c, 0);
    let t = Instant::now();
    let idle = idle_connections(&c, from, forwarder, 1500);
    let mut garbage = garbage_connections(&c, stranger(&c, 1), forwarder, 300);
    eprintln!("1500 idle and 300 garbage connections in {:?}", t.elapsed());

    // The garbage is closed by the link layer; the idle ones are held as masters would be.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut closed_by_node = 0;
    for tcp in &mut garbage {
        closed_by_node += usize::from(closed_by_peer(tcp, deadline));
    }
    assert_eq!(closed_by_node, 300, "garbage connections left open");

    // The master still gets its data, and the operator the CLI.
    for (k, on) in [(0u16, 0u16), (1, 1)] {
        let mark = m.mark();
        device.set("discrete_input", 0, &[on]);
        let change = m
            .wait_rx(
                Duration::from_secs(20),
                "the change during the flood",
                |r| r.seq > mark && r.ioa == 1001 && r.cot == Asdu::SPONTANEOUS,
            )
            .unwrap_or_else(|e| c.fail(&format!("change {k}: {e:#}\n{}", m.report())));
        assert_eq!(change.value.as_bool(), Some(on == 1));
    }
    status_works_at_once(&c, leader, "while the 104 port is flooded");
    assert!(
        fepha_cluster_tests::field::metric(&c, leader, "fepha_iec104_connections_open")
            .is_some_and(|n| n >= 1500.0),
        "the node did not hold the idle connections"
    );

    drop((idle, garbage));
    c.wait_until("only the master is connected again", || {
        let open = fepha_cluster_tests::field::metric(&c, leader, "fepha_iec104_connections_open");
        if open.is_some_and(|n| n <= 1.0) {
            Ok(())
        } else {
            Err(format!("{open:?} open"))
        }
    });
    let mark = m.mark();
    device.set("discrete_input", 0, &[0]);
    m.wait_rx(Duration::from_secs(20), "the change after the flood", |r| {
        r.seq > mark && r.ioa == 1001 && r.cot == Asdu::SPONTANEOUS
    })
    .unwrap_or_else(|e| c.fail(&format!("{e:#}\n{}", m.report())));
    assert!(c.is_running(leader), "{}", c.report());
}
