//! Mutual TLS and the replicated trust list (issue 3): only trusted nodes and operators get
//! in, refused certificates are refused at the handshake, and trust decisions reach every
//! node. Join tokens are in `tokens.rs`.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use fepha::admin::client::Credentials;
use fepha::proto::admin::admin_client::AdminClient;
use fepha::proto::admin::{EnrolStatusRequest, StatusRequest};
use fepha::proto::raft::RaftPayload;
use fepha::proto::raft::raft_client::RaftClient;
use fepha::tls::{Fingerprint, Identity, PinnedNodes};
use fepha_cluster_tests::{
    CertList, Cluster, StatusIds, WAIT, admin_client, error_chain, plaintext_channel, raw_channel,
    rpc_status, send_bytes, site_config,
};
use tonic::Code;

/// How fast a revoked member must be cut off (the issue says within a second).
const CUT_OFF: Duration = Duration::from_secs(1);

/// A fresh connection with `creds` and one `status` call. Ok(code): the admin service
/// answered (`Code::Ok` for a status); Err: refused below gRPC (the connection or the TLS
/// handshake), with every cause tonic gives.
async fn admin_status(creds: &Credentials, addr: &str) -> Result<Code, String> {
    let mut client = admin_client(creds, addr).await?;
    answered(client.status(StatusRequest { local_only: true }).await)
}

/// A fresh connection with `creds` to a raft port and one Vote whose payload no node accepts:
/// a peer the node lets in gets INVALID_ARGUMENT. Ok and Err as for [`admin_status`].
async fn raft_vote(creds: &Credentials, addr: &str) -> Result<Code, String> {
    let channel = raw_channel(creds, addr).await?;
    let vote = RaftClient::new(channel)
        .vote(RaftPayload {
            json: b"not a vote".to_vec(),
        })
        .await;
    answered(vote)
}

/// A status with no cause below it is the service's own answer; one with a cause is tonic's
/// report of a failed connection.
fn answered<T>(result: Result<T, tonic::Status>) -> Result<Code, String> {
    match result {
        Ok(_) => Ok(Code::Ok),
        Err(s) if std::error::Error::source(&s).is_none() && s.code() != Code::Unknown => {
            Ok(s.code())
        }
        Err(s) => Err(format!("{:?}: {}", s.code(), error_chain(&s))),
    }
}

/// The attempt never reached a service: refused at the connection. Gives what the client saw.
fn assert_refused(what: &str, result: Result<Code, String>) -> String {
    match result {
        Ok(code) => panic!("{what}: was let in (the service answered {code:?})"),
        Err(text) => text,
    }
}

/// How many fresh connections [`refused_at_handshake`] tries on each port.
const ATTEMPTS: usize = 5;

/// [`ATTEMPTS`] fresh connections with `creds` to node `i`'s admin port, and as many to its
/// raft port, each with one call: none may reach a service, and the node must count every
/// one as a refused TLS handshake. Gives what the clients saw.
fn refused_at_handshake(c: &Cluster, i: usize, creds: &Credentials, who: &str) -> Vec<String> {
    let (admin, raft) = (c.admin_addr(i), c.raft_addr(i));
    let before = (
        refused_handshakes(c, i, "admin"),
        refused_handshakes(c, i, "raft"),
    );
    let seen = c.block_on(async {
        let mut seen = Vec::new();
        for _ in 0..ATTEMPTS {
            seen.push(assert_refused(
                &format!("{who}'s status on {admin}"),
                admin_status(creds, &admin).await,
            ));
            seen.push(assert_refused(
                &format!("{who}'s vote on {raft}"),
                raft_vote(creds, &raft).await,
            ));
        }
        seen
    });
    let n = ATTEMPTS as f64;
    c.wait_until(
        &format!(
            "{} counts {ATTEMPTS} refused handshakes on each port",
            c.name(i)
        ),
        || {
            let now = (
                refused_handshakes(c, i, "admin"),
                refused_handshakes(c, i, "raft"),
            );
            if now.0 >= before.0 + n && now.1 >= before.1 + n {
                Ok(())
            } else {
                Err(format!("refused (admin, raft): {before:?} then {now:?}"))
            }
        },
    );
    let told = seen.iter().filter(|t| t.contains("AccessDenied")).count();
    eprintln!(
        "{who} on {}: {told} of {} refused clients saw the access_denied alert",
        c.name(i),
        seen.len()
    );
    seen
}

fn refused_handshakes(c: &Cluster, i: usize, listener: &str) -> f64 {
    c.metric_value(
        i,
        "fepha_tls_handshakes_total",
        &[("listener", listener), ("outcome", "refused")],
    )
}

/// Every one of `among` shows the same trust list (and pending requests); gives it.
fn wait_same_cert_list(
    c: &Cluster,
    among: &[usize],
    what: &str,
    check: impl Fn(&CertList) -> Result<(), String>,
) -> CertList {
    c.wait_until(what, || {
        let lists: Vec<CertList> = among
            .iter()
            .map(|&i| c.cert_list(i))
            .collect::<Result<_, _>>()?;
        for (k, l) in lists.iter().enumerate() {
            check(l).map_err(|e| format!("{}: {e}", c.name(among[k])))?;
            if *l != lists[0] {
                return Err(format!(
                    "{} and {} list different certificates:\n{l:#?}\n{:#?}",
                    c.name(among[k]),
                    c.name(among[0]),
                    lists[0]
                ));
            }
        }
        Ok(lists[0].clone())
    })
}

#[test]
fn a_cluster_built_with_tokens_lists_the_same_trusted_nodes_everywhere() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let all = [0, 1, 2];

    // Each node made its own key (owner-only) and shows the certificate's fingerprint.
    let mut fingerprints = Vec::new();
    for i in all {
        let on_disk = c.fingerprint(i);
        let key = fepha::node::tls_dir(&c.node(i).data_dir).join(fepha::tls::KEY_FILE);
        let mode = std::fs::metadata(&key)
            .expect("the node's key file")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "{} is readable by others",
            key.display()
        );
        let s = c.status_ids(i).unwrap_or_else(|e| c.fail(&e));
        assert_eq!(
            s.fingerprint, on_disk,
            "{} shows another fingerprint",
            s.node
        );
        fingerprints.push((c.name(i).to_owned(), on_disk));
    }
    let mut want: Vec<String> = fingerprints.iter().map(|(_, f)| f.clone()).collect();
    want.sort();
    want.dedup();
    assert_eq!(
        want.len(),
        3,
        "two nodes share a certificate: {fingerprints:?}"
    );

    let list = wait_same_cert_list(&c, &all, "every node lists the three nodes", |l| {
        if l.trusted_fingerprints() != want {
            return Err(format!("trusted {:?}", l.trusted_fingerprints()));
        }
        Ok(())
    });
    assert!(list.pending.is_empty(), "{list:#?}");
    for (name, fp) in &fingerprints {
        let e = list.trusted_entry(fp).expect("listed above");
        assert_eq!(&e.name, name, "{e:?}");
        assert_eq!(e.role, "node", "{e:?}");
        // The first node started the cluster; the others came in with a token.
        if name == c.name(0) {
            assert_eq!(e.added_by, "init", "{e:?}");
        } else {
            assert!(e.added_by.starts_with("token "), "{e:?}");
        }
    }

    // Every node's status names each member with the fingerprint it joined with.
    for i in all {
        let s = c.status_ids(i).unwrap_or_else(|e| c.fail(&e));
        let mut seen: Vec<(String, String)> = s
            .members
            .iter()
            .map(|m| (m.name.clone(), m.fingerprint.clone()))
            .collect();
        seen.sort();
        let mut expected = fingerprints.clone();
        expected.sort();
        assert_eq!(seen, expected, "{} status: {s:?}", c.name(i));
    }
    // The human-readable listing says the same.
    let text = c.cli_ok(leader, &["cert", "list"]);
    for (name, fp) in &fingerprints {
        assert!(
            text.lines().any(|l| l.contains(name) && l.contains(fp)),
            "{name} {fp} not in:\n{text}"
        );
    }
}

#[test]
fn a_node_that_is_not_trusted_is_refused_at_the_handshake_and_cannot_join_alone() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let follower = (leader + 1) % 3;
    let members = [0, 1, 2];
    // A real node with a valid certificate of its own, which no one has trusted.
    let stranger = c.add_node("voter");
    c.start(&[stranger]);
    let strangers = c.credentials_of(stranger);
    let trusted = c.credentials();

    for i in [leader, follower] {
        let (admin, raft) = (c.admin_addr(i), c.raft_addr(i));
        c.block_on(async {
            // The same calls with a trusted identity go through: what follows is about the
            // certificate, not the calls.
            assert_eq!(admin_status(&trusted, &admin).await, Ok(Code::Ok));
            assert_eq!(
                raft_vote(&trusted, &raft).await,
                Ok(Code::InvalidArgument),
                "a trusted node's vote should reach the Raft service"
            );
        });
        refused_at_handshake(&c, i, &strangers, "the untrusted node");
    }

    // It asks to join without a token: the request waits for an operator, and nothing else
    // happens.
    let fp = c.fingerprint(stranger);
    let peer = follower;
    let join = c.join_pending(stranger, peer);
    wait_same_cert_list(
        &c,
        &members,
        "every member shows the request as pending",
        |l| {
            match l.pending_entry(&fp) {
                Some(p) if p.name == c.name(stranger) && p.admin_addr == c.admin_addr(stranger) => {
                }
                Some(p) => return Err(format!("pending with the wrong details: {p:?}")),
                None => return Err(format!("not pending: {l:?}")),
            }
            match l.trusted_entry(&fp) {
                Some(e) => Err(format!("trusted without an allow: {e:?}")),
                None => Ok(()),
            }
        },
    );
    // The joining node keeps asking, and keeps being told to wait.
    let asked = |c: &Cluster| {
        c.metric_value(
            peer,
            "fepha_admin_requests_total",
            &[("method", "enrol_status"), ("code", "ok")],
        )
    };
    let first = asked(&c);
    c.wait_until("the joining node asks again after it is pending", || {
        if asked(&c) >= first + 2.0 {
            Ok(())
        } else {
            Err(format!("enrol_status calls: {first} then {}", asked(&c)))
        }
    });
    assert!(
        !join.is_finished(),
        "`join --peer` ended without an allow: {:?}",
        c.block_on(join)
    );
    let list = c.cert_list(leader).unwrap_or_else(|e| c.fail(&e));
    assert!(list.trusted_entry(&fp).is_none(), "{list:#?}");
    assert!(list.pending_entry(&fp).is_some(), "{list:#?}");
    c.wait_for_members(&members, &members);
    let s = c.status_ids(stranger).unwrap_or_else(|e| c.fail(&e));
    assert_eq!(s.state, "uninitialised", "{s:?}");
    // Pending is not trusted: its certificate is still refused at the handshake.
    refused_at_handshake(&c, leader, &strangers, "the pending node");
    join.abort();
    let applied = c.apply_ok(leader, &site_config("after-stranger", 1));
    let statuses = c.wait_converged(&members);
    assert!(statuses.iter().all(|s| s.config_version == applied.version));
}

/// TLS records that are not a handshake a server can finish.
fn tls_garbage(addr: &str) {
    // A handshake record that claims a ClientHello and holds nothing of the kind.
    send_bytes(
        addr,
        &[
            &[0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c][..],
            &[0xa5; 60],
        ]
        .concat(),
    );
    // A record header claiming 16 KiB that never come.
    send_bytes(addr, &[0x16, 0x03, 0x03, 0x40, 0x00, 0x01]);
    // An alert before any handshake.
    send_bytes(addr, &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
    // Application data before any handshake.
    send_bytes(
        addr,
        &[&[0x17, 0x03, 0x03, 0x00, 0x20][..], &[0u8; 32]].concat(),
    );
    // A record longer than TLS allows.
    send_bytes(addr, &[0x16, 0x03, 0x03, 0xff, 0xff, 0x00]);
}

#[test]
fn plaintext_and_certificateless_clients_are_refused_and_tls_garbage_does_no_harm() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let follower = (leader + 1) % 3;
    let all = [0, 1, 2];
    let no_certificate = c.credentials_with(None);
    let trusted = c.credentials();

    for i in [leader, follower] {
        let (admin, raft) = (c.admin_addr(i), c.raft_addr(i));
        let before = (
            refused_handshakes(&c, i, "admin"),
            refused_handshakes(&c, i, "raft"),
        );
        c.block_on(async {
            // Plaintext HTTP/2: the node expects a TLS ClientHello and gets an HTTP/2 preface.
            let plain_admin = match plaintext_channel(&admin).await {
                Err(e) => e,
                Ok(ch) => match AdminClient::new(ch)
                    .status(StatusRequest { local_only: true })
                    .await
                {
                    Ok(r) => panic!("a plaintext status on {admin} was answered: {r:?}"),
                    Err(s) => format!("{:?}: {}", s.code(), error_chain(&s)),
                },
            };
            eprintln!("plaintext on the admin port: {plain_admin}");
            let plain_raft = match plaintext_channel(&raft).await {
                Err(e) => e,
                Ok(ch) => match RaftClient::new(ch)
                    .vote(RaftPayload {
                        json: b"{}".to_vec(),
                    })
                    .await
                {
                    Ok(r) => panic!("a plaintext vote on {raft} was answered: {r:?}"),
                    Err(s) => format!("{:?}: {}", s.code(), error_chain(&s)),
                },
            };
            eprintln!("plaintext on the raft port: {plain_raft}");

            // TLS without a client certificate: it may ask about a join, nothing more.
            let mut anon = admin_client(&no_certificate, &admin)
                .await
                .unwrap_or_else(|e| panic!("TLS without a certificate to {admin}: {e}"));
            let s = anon
                .status(StatusRequest { local_only: true })
                .await
                .expect_err("status without a certificate");
            assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
            assert!(s.message().contains("needs a trusted certificate"), "{s:?}");
            for (fingerprint, want) in [
                (c.fingerprint(i), "trusted"),
                (Fingerprint::of_der(b"nobody").to_string(), "unknown"),
            ] {
                let reply = anon
                    .enrol_status(EnrolStatusRequest { fingerprint })
                    .await
                    .unwrap_or_else(|s| panic!("enrol_status without a certificate: {s:?}"))
                    .into_inner();
                assert_eq!(reply.status, want, "{reply:?}");
                assert_eq!(reply.nodes.len(), 3, "{reply:?}");
            }
            // The raft port does not even finish the handshake without one.
            assert_refused(
                "a vote without a certificate",
                raft_vote(&no_certificate, &raft).await,
            );

            // A client that does not trust the server's certificate stops at the handshake
            // too (a joining node pins the cluster and talks to no stranger).
            let pinned_elsewhere = Credentials {
                identity: trusted.identity.clone(),
                trust: std::sync::Arc::new(PinnedNodes(
                    [Fingerprint::of_der(b"another cluster")].into(),
                )),
            };
            let e = admin_status(&pinned_elsewhere, &admin)
                .await
                .expect_err("a server the client does not trust");
            assert!(
                e.contains(&format!(
                    "the server's certificate {} is not a trusted fepha node",
                    c.fingerprint(i)
                )),
                "{e}"
            );
        });
        c.wait_until(
            &format!(
                "{} counts the plaintext clients as refused handshakes",
                c.name(i)
            ),
            || {
                let now = (
                    refused_handshakes(&c, i, "admin"),
                    refused_handshakes(&c, i, "raft"),
                );
                if now.0 > before.0 && now.1 > before.1 {
                    Ok(())
                } else {
                    Err(format!("refused (admin, raft): {before:?} then {now:?}"))
                }
            },
        );

        tls_garbage(&admin);
        tls_garbage(&raft);

        // Handshakes that stall halfway hold up no one else.
        let stalled: Vec<TcpStream> = (0..32)
            .map(|k| {
                let addr = if k % 2 == 0 { &admin } else { &raft };
                let addr: SocketAddr = addr.parse().expect("node address");
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    .expect("connect for a stalled handshake");
                s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
                    .expect("half a ClientHello");
                s
            })
            .collect();
        let t = Instant::now();
        c.block_on(async {
            assert_eq!(
                admin_status(&trusted, &admin).await,
                Ok(Code::Ok),
                "status with 32 stalled handshakes open"
            );
            assert_eq!(raft_vote(&trusted, &raft).await, Ok(Code::InvalidArgument));
        });
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "32 stalled handshakes held up a good client for {:?}",
            t.elapsed()
        );
        drop(stalled);
    }

    for i in all {
        assert!(c.is_running(i), "{} died:\n{}", c.name(i), c.report());
    }
    let applied = c.apply_ok(follower, &site_config("after-plaintext", 1));
    let statuses = c.wait_converged(&all);
    assert!(statuses.iter().all(|s| s.config_version == applied.version));
}

#[test]
fn a_revoked_member_is_cut_off_within_a_second_and_the_rest_keep_working() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let revoked = (leader + 1) % 3;
    let stays = (leader + 2) % 3;
    let rest = [leader, stays];
    let creds = c.credentials_of(revoked);
    let fp = c.fingerprint(revoked);

    // Connections the revoked node has open when it is revoked.
    let mut open: Vec<AdminClient<tonic::transport::Channel>> = c.block_on(async {
        let mut open = Vec::new();
        for i in rest {
            let mut client = admin_client(&creds, &c.admin_addr(i))
                .await
                .unwrap_or_else(|e| panic!("{} to {}: {e}", c.name(revoked), c.name(i)));
            rpc_status(&mut client, Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("{} to {}: {e}", c.name(revoked), c.name(i)));
            assert_eq!(
                raft_vote(&creds, &c.raft_addr(i)).await,
                Ok(Code::InvalidArgument)
            );
            open.push(client);
        }
        open
    });

    let cuts = |c: &Cluster, i: usize| c.metric_value(i, "fepha_tls_connections_cut_total", &[]);
    let cuts_before: Vec<f64> = rest.iter().map(|&i| cuts(&c, i)).collect();

    let started = Instant::now();
    let out = c.cli_ok(stays, &["cert", "revoke", c.name(revoked)]);
    let returned = Instant::now();
    assert!(
        out.contains(&format!("{} ({fp}) is no longer trusted", c.name(revoked)))
            && out.contains("removed from the membership"),
        "{out}"
    );

    // Poll until every way in is shut: the open connections, and new ones to both ports.
    let mut last = String::new();
    let cut_after = loop {
        let mut why = c.block_on(async {
            let mut why = Vec::new();
            for client in &mut open {
                if let Ok(s) = rpc_status(client, Duration::from_secs(1)).await {
                    why.push(format!(
                        "open connection to {} still answers: {}",
                        s.node, s.state
                    ));
                }
            }
            for i in rest {
                if let Ok(code) = admin_status(&creds, &c.admin_addr(i)).await {
                    why.push(format!(
                        "a new admin connection to {} is answered: {code:?}",
                        c.name(i)
                    ));
                }
                if let Ok(code) = raft_vote(&creds, &c.raft_addr(i)).await {
                    why.push(format!(
                        "a new raft connection to {} is answered: {code:?}",
                        c.name(i)
                    ));
                }
            }
            why
        });
        // The node closed the connections itself, not only refused the next call on them.
        for (k, &i) in rest.iter().enumerate() {
            if cuts(&c, i) <= cuts_before[k] {
                why.push(format!("{} has cut no connection", c.name(i)));
            }
        }
        if why.is_empty() {
            break returned.elapsed();
        }
        last = why.join("; ");
        if returned.elapsed() > WAIT {
            c.fail(&format!("{} was never cut off: {last}", c.name(revoked)));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "cut off {cut_after:?} after `cert revoke` returned ({:?} after it started); \
         before that: {}",
        returned - started + cut_after,
        if last.is_empty() {
            "(cut at the first look)"
        } else {
            &last
        }
    );
    assert!(
        cut_after < CUT_OFF,
        "{} was cut off only {cut_after:?} after `cert revoke` returned; before that: {last}",
        c.name(revoked)
    );

    // The rest are two, trust each other only, and keep committing.
    c.wait_for_members(&rest, &rest);
    let list = wait_same_cert_list(
        &c,
        &rest,
        "both remaining nodes drop the certificate",
        |l| match l.trusted_entry(&fp) {
            Some(e) => Err(format!("still trusted: {e:?}")),
            None => Ok(()),
        },
    );
    assert_eq!(list.trusted.len(), 2, "{list:#?}");
    let a = c.apply_ok(stays, &site_config("after-revoke", 1));
    let b = c.apply_ok(leader, &site_config("after-revoke", 2));
    assert!(b.version > a.version);
    for i in rest {
        refused_at_handshake(&c, i, &creds, "the revoked node");
    }
    let statuses = c.wait_converged(&rest);
    assert!(statuses.iter().all(|s| s.config_version == b.version));

    // The revoked node, still running, reaches no one.
    c.wait_until(
        &format!("{} sees every other node unreachable", c.name(revoked)),
        || {
            let s = c.status_ids(revoked)?;
            for i in rest {
                if !s.members.iter().any(|m| m.name == c.name(i)) {
                    return Err(format!("{} does not list {}: {s:?}", s.node, c.name(i)));
                }
            }
            match s.members.iter().find(|m| m.name != s.node && m.reachable) {
                Some(m) => Err(format!("{} still reaches {}", s.node, m.name)),
                None => Ok(()),
            }
        },
    );
    assert!(c.is_running(revoked), "{}", c.report());
    // And it does not disturb the others.
    let applied = c.apply_ok(stays, &site_config("after-revoke", 3));
    let statuses = c.wait_converged(&rest);
    assert!(statuses.iter().all(|s| s.config_version == applied.version));
}

#[test]
fn a_pending_request_allowed_on_one_member_lets_the_node_in_everywhere() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let asked = (leader + 1) % 3;
    let allows = (leader + 2) % 3;
    let members = [0, 1, 2];
    let new = c.add_node("voter");
    c.start(&[new]);
    let fp = c.fingerprint(new);

    let join = c.join_pending(new, asked);
    wait_same_cert_list(
        &c,
        &members,
        "every member shows the request as pending",
        |l| {
            let p = l.pending_entry(&fp).ok_or("not pending")?;
            if p.name != c.name(new) || p.admin_addr != c.admin_addr(new) {
                return Err(format!("pending with the wrong details: {p:?}"));
            }
            Ok(())
        },
    );

    let out = c.cli_ok(allows, &["cert", "allow", &fp]);
    assert!(out.contains(&format!("{fp} is trusted")), "{out}");
    let joined = c.block_on(join).expect("the join task");
    assert_eq!(
        joined.code,
        Some(0),
        "`join --peer` after the allow: {joined:?}\n{}",
        c.report()
    );
    assert!(
        joined.stdout.contains(&format!("fepha cert allow {fp}")),
        "no hint for the operator: {joined:?}"
    );
    assert!(joined.stdout.contains("joined the cluster"), "{joined:?}");

    let everyone = [0, 1, 2, new];
    c.wait_for_members(&everyone, &everyone);
    let list = wait_same_cert_list(&c, &everyone, "every node trusts the new node", |l| {
        l.trusted_entry(&fp).ok_or("not trusted")?;
        if !l.pending.is_empty() {
            return Err(format!("still pending: {:?}", l.pending));
        }
        if l.trusted.len() != 4 {
            return Err(format!("{} trusted", l.trusted.len()));
        }
        Ok(())
    });
    let e = list.trusted_entry(&fp).expect("checked above");
    assert_eq!(e.name, c.name(new), "{e:?}");
    assert_eq!(e.role, "node", "{e:?}");
    assert_eq!(
        e.added_by,
        format!("allowed by {}", c.name(allows)),
        "{e:?}"
    );

    let applied = c.apply_ok(new, &site_config("after-allow", 1));
    let statuses = c.wait_converged(&everyone);
    assert!(statuses.iter().all(|s| s.config_version == applied.version));
}

#[test]
fn an_operator_identity_runs_status_until_it_is_revoked() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let issuer = (leader + 1) % 3;
    let target = (leader + 2) % 3;
    let dir = c.dir().join("alice");
    let dir_arg = dir.to_string_lossy().into_owned();

    let out = c.cli_ok(
        issuer,
        &["cert", "issue-operator", "alice", "--out", &dir_arg],
    );
    assert!(out.contains("operator alice is trusted"), "{out}");
    let alice = Identity::load(&dir).unwrap_or_else(|e| panic!("the operator identity: {e}"));
    let mode = std::fs::metadata(dir.join(fepha::tls::KEY_FILE))
        .expect("the operator's key")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the operator's key is readable by others"
    );

    let admin = c.admin_addr(target);
    let status = |c: &Cluster| {
        c.run_bare(
            &[
                "--identity",
                &dir_arg,
                "--admin",
                &admin,
                "status",
                "--json",
            ],
            Duration::from_secs(20),
        )
    };
    // Trusted on every node once the entry has reached it.
    let s: StatusIds = c.wait_until("the operator can run status", || {
        let out = status(&c);
        if !out.success() {
            return Err(format!("exit {:?}: {}", out.code, out.stderr.trim()));
        }
        serde_json::from_str(&out.stdout).map_err(|e| format!("{e}: {}", out.stdout))
    });
    assert_eq!(s.node, c.name(target), "{s:?}");
    assert_eq!(s.members.len(), 3, "{s:?}");
    let list = wait_same_cert_list(&c, &[0, 1, 2], "every node trusts alice", |l| {
        l.trusted_entry(alice.fingerprint.as_str())
            .map(|_| ())
            .ok_or_else(|| "alice is not trusted".to_owned())
    });
    let e = list
        .trusted_entry(alice.fingerprint.as_str())
        .expect("checked above");
    assert_eq!(e.name, "alice");
    assert_eq!(e.role, "operator");
    assert_eq!(e.added_by, format!("issued by {}", c.name(issuer)));
    // An operator speaks to the admin API only, never Raft.
    let operator = c.credentials_with(Some(alice.clone()));
    assert_eq!(
        c.block_on(raft_vote(&operator, &c.raft_addr(target))),
        Ok(Code::PermissionDenied),
        "an operator's vote"
    );

    let out = c.cli_ok(leader, &["cert", "revoke", "alice"]);
    assert!(
        out.contains("alice") && out.contains("is no longer trusted"),
        "{out}"
    );
    assert!(!out.contains("membership"), "{out}");
    let refused = c.wait_until("the revoked operator is refused", || {
        let out = status(&c);
        if out.success() {
            Err("status still works".to_owned())
        } else {
            Ok(out)
        }
    });
    eprintln!("the revoked operator's `status`: {}", refused.stderr.trim());
    assert!(refused.stdout.is_empty(), "{refused:?}");
    // Refused at the handshake, on every node: it reaches neither the admin API nor Raft.
    for i in [0, 1, 2] {
        c.wait_until(&format!("{} refuses alice", c.name(i)), || {
            match c.block_on(admin_status(&operator, &c.admin_addr(i))) {
                Ok(code) => Err(format!("alice's status is answered: {code:?}")),
                Err(e) => Ok(e),
            }
        });
        refused_at_handshake(&c, i, &operator, "the revoked operator");
    }
    let list = c.cert_list(target).unwrap_or_else(|e| c.fail(&e));
    assert!(
        list.trusted_entry(alice.fingerprint.as_str()).is_none(),
        "{list:#?}"
    );
}

/// The refusal is a TLS `access_denied` alert, and a refused client must be told so: the CLI
/// says the certificate is not trusted, rather than "connection closed" or "broken pipe".
/// Every attempt counts, since which of these a gRPC client sees depends on timing (hyper may
/// cancel the request before the alert is read); the node's refusal probe, which the CLI uses
/// to explain a dropped connection, must see the alert every time, and only when there is one.
#[test]
fn a_refused_client_is_told_that_its_certificate_is_not_trusted() {
    let mut c = Cluster::new();
    let node = c.bootstrap(&["voter"]);
    let dir = c.dir().join("bob");
    let dir_arg = dir.to_string_lossy().into_owned();
    c.cli_ok(node, &["cert", "issue-operator", "bob", "--out", &dir_arg]);
    let bob = Identity::load(&dir).unwrap_or_else(|e| panic!("the operator identity: {e}"));
    let bob = c.credentials_with(Some(bob));
    assert_eq!(
        c.block_on(admin_status(&bob, &c.admin_addr(node))),
        Ok(Code::Ok)
    );
    c.cli_ok(node, &["cert", "revoke", "bob"]);

    let mut told = 0;
    let mut not_told = std::collections::BTreeMap::<String, usize>::new();
    let admin = c.admin_addr(node);
    let trusted = c.credentials();
    for _ in 0..ATTEMPTS {
        let probe = |creds: &fepha::admin::client::Credentials| {
            c.block_on(fepha::tls::refusal(
                &admin,
                creds.identity.as_ref(),
                creds.trust.clone(),
            ))
        };
        match probe(&bob) {
            Some(reason) if reason.contains("AccessDenied") => told += 1,
            other => *not_told.entry(format!("probe: {other:?}")).or_default() += 1,
        }
        assert_eq!(
            probe(&trusted),
            None,
            "a trusted node's probe found a refusal"
        );
    }
    for _ in 0..ATTEMPTS {
        let out = c.run_bare(&["--identity", &dir_arg, "status"], Duration::from_secs(20));
        assert!(!out.success(), "the revoked operator's status: {out:?}");
        if out.stderr.contains("AccessDenied") && out.stderr.contains("not trusted") {
            told += 1;
        } else {
            *not_told
                .entry(format!("CLI: {}", out.stderr.trim()))
                .or_default() += 1;
        }
    }
    assert!(
        not_told.is_empty(),
        "{told} refused clients were told of the access_denied alert, {} were not; they saw \
         (count: error):\n{}",
        not_told.values().sum::<usize>(),
        not_told
            .iter()
            .map(|(text, n)| format!("{n}: {text}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
