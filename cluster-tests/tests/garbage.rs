//! Whatever arrives on a node's ports, the node stays up and the cluster keeps working.

use fepha::proto::raft::raft_client::RaftClient;
use fepha::proto::raft::{RaftPayload, SnapshotChunk};
use fepha_cluster_tests::{Cluster, raw_channel, raw_unary, send_bytes, site_config};
use rand::RngCore;
use tonic::Code;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Field 1 with wire type 7, which does not exist: no protobuf decoder accepts it.
const BAD_PROTOBUF: &[u8] = &[0x0f, 0xff, 0xff, 0xff];

fn byte_garbage(addr: &str) {
    let mut random = vec![0u8; 64 * 1024];
    rand::rng().fill_bytes(&mut random);
    send_bytes(addr, &random);
    send_bytes(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: fepha\r\nConnection: close\r\n\r\n",
    );
    send_bytes(addr, &PREFACE[..PREFACE.len() - 5]);
    // A valid preface, then frames that are not HTTP/2.
    send_bytes(addr, &[PREFACE, &random[..1024]].concat());
    // A SETTINGS frame claiming a 16 MiB payload that never comes.
    send_bytes(
        addr,
        &[PREFACE, &[0xff, 0xff, 0xff, 0x04, 0x00, 0, 0, 0, 0]].concat(),
    );
}

fn expect_error(what: &str, result: Result<Vec<u8>, tonic::Status>) {
    match result {
        Ok(reply) => panic!("{what} was answered as if valid: {reply:?}"),
        Err(s) => assert_ne!(s.code(), Code::Ok, "{what}"),
    }
}

#[test]
fn garbage_on_the_raft_and_admin_ports_does_not_hurt_a_node() {
    let mut c = Cluster::new();
    let leader = c.bootstrap(&["voter", "voter", "voter"]);
    let follower = (leader + 1) % 3;
    let creds = c.credentials();

    for i in [leader, follower] {
        let (raft, admin) = (c.raft_addr(i), c.admin_addr(i));
        byte_garbage(&raft);
        byte_garbage(&admin);

        c.block_on(async {
            // Well-formed gRPC, undecodable bodies.
            for path in [
                "/fepha.raft.Raft/AppendEntries",
                "/fepha.raft.Raft/Vote",
                "/fepha.raft.Raft/InstallSnapshot",
            ] {
                expect_error(
                    path,
                    raw_unary(&creds, &raft, path, BAD_PROTOBUF.to_vec()).await,
                );
            }
            for path in [
                "/fepha.admin.Admin/ConfigApply",
                "/fepha.admin.Admin/Join",
                "/fepha.admin.Admin/RemoveMember",
            ] {
                expect_error(
                    path,
                    raw_unary(&creds, &admin, path, BAD_PROTOBUF.to_vec()).await,
                );
            }

            // Valid protobuf whose JSON payload is not openraft's.
            let channel = raw_channel(&creds, &raft)
                .await
                .expect("connect to the raft port");
            let mut client = RaftClient::new(channel);
            let garbage = || RaftPayload {
                json: b"garbage".to_vec(),
            };
            let r = client.append_entries(garbage()).await;
            assert_eq!(
                r.expect_err("append_entries(garbage)").code(),
                Code::InvalidArgument
            );
            let r = client.vote(garbage()).await;
            assert_eq!(r.expect_err("vote(garbage)").code(), Code::InvalidArgument);
            let r = client
                .install_snapshot(SnapshotChunk {
                    header_json: b"{\"not\": \"a header\"}".to_vec(),
                    data: vec![0xde, 0xad],
                })
                .await;
            assert_eq!(
                r.expect_err("install_snapshot(garbage)").code(),
                Code::InvalidArgument
            );
        });
    }

    for i in 0..3 {
        assert!(c.is_running(i), "{} died:\n{}", c.name(i), c.report());
        c.status(i)
            .unwrap_or_else(|e| c.fail(&format!("{} no longer answers: {e}", c.name(i))));
    }
    let applied = c.apply_ok(follower, &site_config("after-garbage", 1));
    let statuses = c.wait_converged(&[0, 1, 2]);
    assert!(statuses.iter().all(|s| s.config_version == applied.version));
}
